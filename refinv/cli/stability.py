"""``refinv stability``: are this autoencoder's training images attracting fixed points of recovery?

    refinv stability MODEL.onnx DATA.npz[:train] [--mask random:0.5] [--seed 0] \\
        [--rho 0.2,0.5,2] [--n 20] [--json OUT.json]

For each rho, the spectral radius of the linearized known-mask PnP-ADMM at
each of the first N training images (:mod:`refinv.evaluation.stability`).
A LOCAL verdict on the fixed point: < 1, the image is an attracting fixed
point of the linearized iteration (an iterate close enough converges to it);
> 1, a repelling one, and recovery from a nearby start is unlikely (not
impossible: an iteration that lands on it exactly stays there). Cheap: 2n
model evaluations and one n x n eigenproblem per image for small images,
matrix-free Arnoldi (a few hundred evaluations) above --max-dim, so it tells
an auditor in seconds which rho to try and whether a 0% recovery rate may
mean "not measurable by this method" rather than "not memorized". How often
the verdict matched the actual outcomes: docs/theory/recovery.md.
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
        description="For each --rho, the spectral radius of the linearized known-mask "
        "PnP-ADMM at each of the first N images of DATA.npz[:key] (training images, "
        "f(x) ~ x), with masks drawn as `refinv evaluate` draws them. A local verdict on the "
        "fixed point: radius < 1, the image attracts the linearized iteration; > 1, it is a "
        "repelling fixed point and recovery from a nearby start is unlikely. Table on stdout, per-image radii with --json (schema in docs/cli.md). "
        f"Mask grammar: {MASK_GRAMMAR}.",
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
        "values); arnoldi: matrix-free ARPACK, any size; auto (default): dense up to --max-dim",
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
    from ..evaluation.stability import pnp_admm_stability, resolve_method
    from ..io import parse_data_spec
    from ..operators.masks import parse_mask
    from ._output import write_json

    spec = parse_mask(args.mask)
    rhos = _rhos(args.rho)
    if args.limit < 1:
        raise ConfigError(f"--limit: expected >= 1, got {args.limit}")
    f = open_model(args.model, args, data=args.data)
    x, key = load_split(args.data, f)
    _, masks = degrade(x, spec, seed=args.seed)  # the whole split's masks, as refinv evaluate
    n = min(args.limit, len(x))
    x, masks = x[:n], masks[:n]
    method = resolve_method(args.method, int(np.prod(x.shape[1:])), args.max_dim)
    t0 = time.perf_counter()
    rows = []
    for rho in rhos:
        r = pnp_admm_stability(
            f, x, masks, rho=rho, eps=args.eps, max_dim=args.max_dim, method=method
        )
        rows.append(
            {
                "rho": rho,
                "median_radius": float(np.median(r)),
                "min_radius": float(np.min(r)),
                "max_radius": float(np.max(r)),
                "fraction_below_1": float(np.mean(r < 1)),
                "radius": [float(v) for v in r],
            }
        )
    doc = {
        "schema_version": 1,
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
        },  # fmt: skip
        "results": rows,
    }
    if args.json:
        data_path = parse_data_spec(args.data)[0]
        write_json(args.json, doc, "stability", args, {"model": args.model, "data": data_path})
    print(f"model: {Path(args.model).name}  data: {doc['data']}  mask: {spec.text} (seed "
          f"{args.seed}), first {n} images, {method} eigensolver")  # fmt: skip
    print(f"{'rho':>8}  {'median radius':>13}  {'min':>7}  {'max':>7}  {'radius < 1':>10}")
    for row in rows:
        print(
            f"{row['rho']:>8g}  {row['median_radius']:>13.3f}  {row['min_radius']:>7.3f}  "
            f"{row['max_radius']:>7.3f}  {row['fraction_below_1']:>10.0%}"
        )
    print(
        "radius < 1: the image is an attracting fixed point of the linearized known-mask ADMM\n"
        "  (an iterate close enough to it converges to it);\n"
        "radius > 1: the image is a repelling fixed point of the linearized iteration; recovery\n"
        "  from a nearby start is unlikely (a local criterion, not a proof of failure; computed\n"
        "  for the known-mask ADMM, blind recovery adds a mask step; measured agreement with\n"
        "  actual outcomes in docs/theory/recovery.md)."
    )
    return 0
