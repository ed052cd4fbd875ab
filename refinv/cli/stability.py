"""``refinv stability``: are this autoencoder's training images attracting fixed points of recovery?

    refinv stability MODEL.onnx DATA.npz[:train] [--mask random:0.5] [--seed 0] \\
        [--rho 0.2,0.5,2] [--limit 20] [--json OUT.json]

First, at each of the first N images, whether the image is a fixed point of the model at
all: ``MSE(f(x), x) < --fixed-tol`` (default 1e-7, the accurate-recovery threshold; a held-out image usually is
not). An image that is not is reported as "not a fixed point (||f(x) - x|| = ...)" and gets
no radius: no recovery can return it exactly. Then, for each rho, the spectral radius of
the linearized known-mask PnP-ADMM at each fixed point (:mod:`refinv.evaluation.stability`):
< 1, the image is an attracting fixed point of the linearized iteration (an iterate close
enough converges to it); > 1, a repelling one, and recovery from a nearby start is unlikely
(not impossible: an iteration that lands on it exactly stays there). The eigensolver: dense
(whole Jacobian, once per image for every rho) up to 256 values per image, matrix-free
ARPACK above (the faster where they agree; measured in refinv.evaluation.stability). A
progress bar counts the (image, rho) pairs in a terminal. How often the verdict matched the
actual outcomes: docs/theory/recovery.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .._constants import MASK_GRAMMAR
from .._constants import STABILITY_METHODS as METHODS
from ..errors import ConfigError
from . import _args
from ._args import add_runtime_args
from .recover import load_split, open_model

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "stability",
        help="local stability of recovery at the training images (spectral radius per rho)",
        description="First checks that each of the first N images of DATA.npz[:key] is a "
        "fixed point of the model (MSE(f(x), x) < --fixed-tol, 1e-7 by default; an image that is not is reported as "
        "'not a fixed point' and gets no radius). Then, for each --rho, the spectral radius "
        "of the linearized known-mask PnP-ADMM at each fixed point, with masks drawn as "
        "`refinv evaluate` draws them. A local verdict: radius < 1, the image attracts the "
        "linearized iteration; > 1, it is a repelling fixed point and recovery from a nearby "
        "start is unlikely. Table on stdout, per-image radii with --json (schema in "
        f"docs/cli.md). Mask grammar: {MASK_GRAMMAR}.",
    )
    p.add_argument("model", metavar="MODEL.onnx", help="the autoencoder (ONNX)")
    _args.add_data(p, what="training images")
    _args.add_mask(p, "random:0.5")
    _args.add_seed(p, "masks")
    p.add_argument(
        "--rho", default="0.2,0.5,2", help="comma-separated ADMM penalties (default 0.2,0.5,2)"
    )
    _args.add_limit(p, default=20)
    _args.add_alias(p, "--n", "--limit", dest="limit", type=int)
    p.add_argument("--eps", type=float, default=1e-3, help="finite-difference step")
    _args.add_method(
        p, METHODS, "auto",
        help="eigensolver: dense: whole Jacobian + all eigenvalues (images up to --max-dim "
        "values); arnoldi: matrix-free ARPACK, any size; auto (default): dense up to 256 "
        "values, arnoldi above (the faster where they agree)",
    )  # fmt: skip
    p.add_argument(
        "--fixed-tol", type=float, default=1e-7, metavar="MSE",
        help="an image is a fixed point when MSE(f(x), x) is below this (default 1e-7, the "
        "accurate-recovery threshold); a model fitted less tightly (e.g. to 2e-5) needs a "
        "larger one for a radius at its training images",
    )  # fmt: skip
    p.add_argument(
        "--max-dim", type=int, default=2048,
        help="largest image (values) for the dense method (default 2048)",
    )  # fmt: skip
    _args.add_json(p)
    add_runtime_args(p)
    p.set_defaults(func=run)


def _rhos(text: str) -> list[float]:
    try:
        rhos = [float(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise ConfigError(f"--rho: expected comma-separated numbers, got {text!r}") from exc
    if not rhos or any(not r > 0 for r in rhos):
        raise ConfigError(f"--rho: expected positive numbers, got {text!r}")
    return rhos


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import __version__
    from ..evaluation.report import degrade
    from ..evaluation.stability import resolve_method, stability_radii
    from ..io import parse_data_spec
    from ..operators.masks import parse_mask
    from ._args import progress_flag
    from ._output import write_json

    spec = parse_mask(args.mask)
    rhos = _rhos(args.rho)
    if args.limit < 1:
        raise ConfigError(f"--limit: expected >= 1, got {args.limit}")
    f = open_model(args.model, args, data=args.data)
    x, key = load_split(args.data, f, layout=args.data_layout)
    _, masks = degrade(x, spec, seed=args.seed)  # the whole split's masks, as refinv evaluate
    n = min(args.limit, len(x))
    x, masks = x[:n], masks[:n]
    method = resolve_method(args.method, int(np.prod(x.shape[1:])), args.max_dim)
    t0 = time.perf_counter()
    # is each image a fixed point at all? (the radius is about the fixed point x = f(x))
    d = (np.asarray(f(x), np.float64) - x.astype(np.float64)).reshape(n, -1)
    bad = np.flatnonzero(~np.isfinite(d).all(axis=1))
    if bad.size:  # NaN/Inf weights (a diverged training?): no fixed point, no Jacobian
        from ..errors import NonFiniteError

        raise NonFiniteError(
            f"{args.model}: the model's outputs at {bad.size} of {n} images (e.g. image "
            f"{int(bad[0])}) are NaN/Inf; expected finite outputs (refinv inspect lists the "
            "layers that hold NaN/Inf)"
        )
    residual, mse = np.linalg.norm(d, axis=1), np.mean(d**2, axis=1)
    if not args.fixed_tol > 0:
        raise ConfigError(f"--fixed-tol: expected a positive MSE, got {args.fixed_tol}")
    fixed = mse < args.fixed_tol
    radii = np.full((len(rhos), n), np.nan)
    if fixed.any():
        radii[:, fixed] = stability_radii(
            f, x[fixed], masks[fixed], rhos, eps=args.eps, max_dim=args.max_dim, method=method,
            progress=progress_flag(args),
        )  # fmt: skip
    rows = []
    for rho, r in zip(rhos, radii, strict=True):
        rf = r[fixed]
        rows.append(
            {
                "rho": rho,
                "median_radius": float(np.median(rf)) if rf.size else None,
                "min_radius": float(np.min(rf)) if rf.size else None,
                "max_radius": float(np.max(rf)) if rf.size else None,
                "fraction_below_1": float(np.mean(rf < 1)) if rf.size else None,
                "radius": [float(v) if ok else None for v, ok in zip(r, fixed, strict=True)],
            }
        )
    doc = {
        "schema_version": 2,
        "tool": "refinv",
        "refinv_version": __version__,
        "command": "stability",
        "model": str(args.model),
        "sha256": getattr(f, "sha256", None),
        "layout": f.layout_info(),
        "data": f"{parse_data_spec(args.data)[0]}:{key}",
        "mask": spec.text,
        "seed": args.seed,
        "n": n,
        "eps": args.eps,
        "method": method,
        "seconds": time.perf_counter() - t0,
        "settings": {
            "rho": rhos,
            "eps": args.eps,
            "method": method,
            "max_dim": args.max_dim,
            "mask": spec.text,
            "seed": args.seed,
            "n": n,
            "fixed_tol": args.fixed_tol,
        },  # fmt: skip
        "fixed_point": {
            "definition": f"MSE(f(x), x) < {args.fixed_tol:g}",
            "n_fixed": int(fixed.sum()),
            "is_fixed": [bool(v) for v in fixed],
            "residual": [float(v) for v in residual],
        },
        "results": rows,
    }
    if args.json:
        data_path = parse_data_spec(args.data)[0]
        write_json(args.json, doc, "stability", args, {"model": args.model, "data": data_path})
    print(_report(doc, Path(args.model).name, n, method, residual, fixed, args.fixed_tol))
    return 0


def _report(doc: dict, model: str, n: int, method: str, residual, fixed, tol: float) -> str:
    """The text of ``refinv stability``: the fixed-point check, then the radius table."""
    import numpy as np

    lines = [
        f"model: {model}  data: {doc['data']}  mask: {doc['mask']} (seed {doc['seed']}), "
        f"first {n} images, {method} eigensolver"
    ]
    k = int(fixed.sum())
    if k < n:
        bad = residual[~fixed]
        which = np.flatnonzero(~fixed)
        idx = ", ".join(map(str, which[:10])) + (", ..." if len(which) > 10 else "")
        norm = f"{bad[0]:.3g}" if len(bad) == 1 else f"{bad.min():.3g} to {bad.max():.3g}"
        lines.append(
            f"{n - k} of {n} images: not a fixed point (||f(x) - x|| = {norm}; MSE(f(x), x) "
            f">= {tol:g}; images {idx}): the model does not return them, so no recovery "
            "returns them exactly, and a radius says nothing about them (none computed; "
            "--fixed-tol sets the threshold)"
        )
    if k == 0:
        return "\n".join(lines)
    lines.append(f"{k} of {n} images are fixed points (MSE(f(x), x) < {tol:g}); their radii:")
    lines.append(f"{'rho':>8}  {'median radius':>13}  {'min':>7}  {'max':>7}  {'radius < 1':>10}")
    for row in doc["results"]:
        lines.append(
            f"{row['rho']:>8g}  {row['median_radius']:>13.3f}  {row['min_radius']:>7.3f}  "
            f"{row['max_radius']:>7.3f}  {row['fraction_below_1']:>10.0%}"
        )
    lines.append(
        "radius < 1: the image is an attracting fixed point of the linearized known-mask ADMM\n"
        "  (an iterate close enough to it converges to it);\n"
        "radius > 1: the image is a repelling fixed point of the linearized iteration; recovery\n"
        "  from a nearby start is unlikely (a local criterion, not a proof of failure; computed\n"
        "  for the known-mask ADMM, blind recovery adds a mask step; measured agreement with\n"
        "  actual outcomes in docs/theory/recovery.md)."
    )
    return "\n".join(lines)
