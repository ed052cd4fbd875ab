"""``refinv bregman MODEL.onnx CODES.npz --alpha A --noise S --json OUT.json``: invert an
encoder's output back to its input with the lifted Bregman method and total variation.

MODEL.onnx is a feed-forward encoder (dense / Conv / ConvTranspose layers with
proximal activations: ReLU, leaky ReLU / PReLU with slopes in (0, 1], identity).
CODES.npz keys (loaded without pickles):

* ``y`` (required; another key with ``--key``): the codes ``(N, *code_shape)``;
* ``x`` (optional; ``--truth-key``): the ground-truth inputs ``(N, *input_shape)``;
  per-sample PSNR (data range 1) and MSE are then reported.

``--noise S`` is the standard deviation of the Gaussian noise on the codes: it
sets the discrepancy level ``delta = S sqrt(m)`` of ``--method landweber`` and,
with ``--add-noise``, noise of that size is drawn (``--seed``) and added to the
codes first (then projected back onto dom(Psi) for ReLU / clip outputs). One layer is
inverted by the PDHG of eq. (14), several by the coordinate descent (15)-(17).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, ShapeError
from . import _args

if TYPE_CHECKING:
    import numpy as np


def register(sub) -> None:
    p = sub.add_parser(
        "bregman",
        help="invert an encoder's output to its input (lifted Bregman + total variation)",
        description="Invert an encoder's output (codes) back to its input with the lifted "
        "Bregman method and total variation (Wang and Benning, 2023): PDHG for one layer, "
        "coordinate descent for several, or Landweber with the discrepancy principle.",
        epilog="CODES.npz keys: y (codes, required), x (ground-truth inputs, optional).",
    )
    p.add_argument(
        "model", metavar="MODEL.onnx", help="ONNX encoder (a chain of dense/conv layers)"
    )
    _args.add_data(
        p, "codes", metavar="CODES.npz[:key]",
        help="the codes: a .npz file and the array in it (default key y); the ground truth "
        "x, if any, in the same file (--truth-key)",
    )  # fmt: skip
    p.add_argument("--alpha", type=float, default=1.5e-2, help="TV weight (default 1.5e-2)")
    p.add_argument("--noise", type=float, default=0.0, help="noise std on the codes")
    p.add_argument("--add-noise", action="store_true", help="add N(0, noise^2) to the codes")
    _args.add_seed(p, "noise of --add-noise")
    _args.add_method(p, ("pdhg", "landweber"), "pdhg")
    p.add_argument("--tv", choices=("iso", "aniso"), default="iso", help="TV pixel norm")
    p.add_argument(
        "--steps", choices=("paper", "safe"), default="paper",
        help="PDHG steps: the paper's 1.99/||A||^2, 1/(8 alpha) (default) or 'safe' (Condat-Vu)",
    )  # fmt: skip
    p.add_argument("--tau-d", type=float, default=1.0, help="Morozov factor (landweber)")
    p.add_argument("--max-iter", type=int, default=None, help="default 10000 (1 layer) / 1500")
    p.add_argument("--inner-iter", type=int, default=10, help="PDHG steps per CD sweep")
    p.add_argument("--tol", type=float, default=1e-5)
    _args.add_alias(p, "--key", "CODES.npz:key", dest="key")
    p.add_argument("--truth-key", default="x", help="ground-truth array (default x)")
    p.add_argument("--decoder", help="decoder ONNX: also report the decoder's reconstruction")
    _args.add_limit(p, "codes")
    p.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    _args.add_json(p, "write per-sample results (JSON; schema in docs/cli.md)")
    _args.add_out(p, "save the inverted inputs (key x)", metavar="X.npz")
    _args.add_figures(p, "save a comparison figure into this folder (needs matplotlib)")
    p.set_defaults(func=run)


def _psnr(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    import numpy as np

    from ..evaluation.metrics import psnr

    return np.asarray(psnr(np.asarray(x, np.float64), np.asarray(ref, np.float64)))


def run(args) -> int:
    import numpy as np

    from .. import __version__
    from ..io import atomic_save_npz, load_npz
    from ..onnx import OnnxModel
    from ..onnx.graph import read_chain
    from ..operators.activations import Clip, ReLU
    from ..regularizers.tv import tv
    from ..solvers.bregman import default_max_iter, invert_chain, layers_from_chain
    from ._output import write_json

    if not args.alpha > 0:
        raise ConfigError(f"--alpha: expected a positive number, got {args.alpha}")
    if args.noise < 0:
        raise ConfigError(f"--noise: expected a non-negative number, got {args.noise}")
    from ..io import parse_data_spec

    codes, key = parse_data_spec(
        _args.data_spec(args.codes, getattr(args, "key", None), option="--key"), "y"
    )
    args.codes, args.key = str(codes), key
    chain = read_chain(args.model)
    arrays = load_npz(args.codes)
    if args.key not in arrays:
        raise ConfigError(f"{args.codes}: no array {args.key!r}; it has {sorted(arrays)}")
    dt = np.float32 if args.float32 else np.float64
    y = np.asarray(arrays[args.key], dtype=dt)
    m = math.prod(chain.out_shape)
    if y.ndim < 2 or math.prod(y.shape[1:]) != m:
        raise ShapeError(
            f"{args.codes}:{args.key}: expected codes (N, {m}) for the encoder's output "
            f"{chain.out_shape}, got {y.shape}"
        )
    if y.shape[0] == 0:
        raise ShapeError(f"{args.codes}:{args.key}: expected at least one code, got {y.shape}")
    y = y.reshape((y.shape[0], *chain.out_shape))
    x_true = None
    if args.truth_key in arrays:
        x_true = np.asarray(arrays[args.truth_key], dtype=np.float64)
        if x_true.shape[0] != y.shape[0] or math.prod(x_true.shape[1:]) != math.prod(
            chain.in_shape
        ):
            raise ShapeError(
                f"{args.codes}:{args.truth_key}: expected (N={y.shape[0]}, "
                f"{', '.join(map(str, chain.in_shape))}), got {x_true.shape}"
            )
        x_true = x_true.reshape((x_true.shape[0], *chain.in_shape))
    if args.limit:
        y = y[: args.limit]
        x_true = None if x_true is None else x_true[: args.limit]
    layers = layers_from_chain(chain, like=y)  # also refuses non-proximal activations
    if args.add_noise and args.noise > 0:
        rng = np.random.default_rng(args.seed)
        y = y + args.noise * rng.standard_normal(y.shape).astype(dt)
        if isinstance(layers[-1].act, (ReLU, Clip)):  # back into dom(Psi): s is its projection
            y = layers[-1].act(y)
    delta = args.noise * math.sqrt(m) if args.noise > 0 else None
    t0 = time.perf_counter()
    res = invert_chain(
        y,
        chain,
        alpha=args.alpha,
        method=args.method,
        delta=delta,
        tau_d=args.tau_d,
        p=2 if args.tv == "iso" else 1,
        max_iter=args.max_iter,
        tol=args.tol,
        inner_iter=args.inner_iter,
        steps=args.steps,
    )
    seconds = time.perf_counter() - t0
    x = np.asarray(res.x, dtype=np.float64)
    n_it = int(res.iterations.max())
    settings = {
        "method": args.method, "alpha": args.alpha, "tv": args.tv, "p": 2 if args.tv == "iso" else 1,
        "steps": args.steps, "delta": delta, "tau_d": args.tau_d,
        "max_iter": args.max_iter or default_max_iter(args.method, len(layers)),
        "inner_iter": args.inner_iter, "tol": args.tol, "noise": args.noise,
        "add_noise": bool(args.add_noise), "seed": args.seed, "limit": args.limit,
        "float32": bool(args.float32), "key": args.key, "truth_key": args.truth_key,
    }  # fmt: skip
    out = {
        "tool": "refinv",
        "refinv_version": __version__,
        "command": "bregman",
        "model": str(args.model),
        "codes": str(args.codes),
        "n": int(y.shape[0]),
        "layers": len(chain),
        "method": res.method,
        "alpha": args.alpha,
        "noise": args.noise,
        "added_noise": bool(args.add_noise and args.noise > 0),
        "delta": delta,
        "tv": args.tv,
        "steps": args.steps,
        "seconds": seconds,
        "seconds_per_iteration": seconds / max(n_it, 1),
        "settings": settings,
        "solver": res.summary(),
        "per_sample": {
            "norm": np.linalg.norm(x.reshape(len(x), -1), axis=1).tolist(),
            "tv": np.asarray(tv(x)).tolist(),
        },
    }
    rows = [("inversion", x)]
    if args.decoder:
        dec = OnnxModel(args.decoder)
        x_dec = np.asarray(dec(y.reshape((y.shape[0], *dec.sample_shape))), np.float64)
        x_dec = x_dec.reshape(x.shape)
        rows.append(("decoder", x_dec))
    if x_true is not None:
        out["per_sample"]["psnr"] = _psnr(x, x_true).tolist()
        out["mean_psnr"] = float(np.mean(out["per_sample"]["psnr"]))
        if args.decoder:
            out["per_sample"]["psnr_decoder"] = _psnr(rows[1][1], x_true).tolist()
            out["mean_psnr_decoder"] = float(np.mean(out["per_sample"]["psnr_decoder"]))
    files = {"model": args.model, "codes": args.codes, "decoder": args.decoder}
    if args.json:
        write_json(args.json, out, "bregman", args, files)
    if args.out:
        atomic_save_npz(args.out, x=x)
    if args.figures:
        _figure(Path(args.figures), x_true, rows)
    line = f"{res.method}: {y.shape[0]} samples, {n_it} iterations max, {seconds:.2f} s"
    if "mean_psnr" in out:
        line += f", mean PSNR {out['mean_psnr']:.2f} dB"
    if "mean_psnr_decoder" in out:
        line += f" (decoder {out['mean_psnr_decoder']:.2f} dB)"
    print(line)
    return 0


def _figure(folder: Path, x_true, rows, n_show: int = 8) -> Path:
    """``folder/bregman_inversion.png``, rendered in memory on a matplotlib ``Figure`` (no
    pyplot, no backend switch) and written atomically (:func:`refinv.io.atomic_write_bytes`)."""
    import io

    import numpy as np

    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError("--figures needs matplotlib (pip install 'refinv[plot]')") from exc

    from ..io import atomic_write_bytes

    if x_true is not None:
        rows = [("ground truth", x_true), *rows]
    k = min(n_show, rows[0][1].shape[0])
    fig = Figure(figsize=(1.2 * k, 1.3 * len(rows)))
    axes = fig.subplots(len(rows), k, squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for c in range(k):
            img = imgs[c]
            img = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
            ax = axes[r, c]
            ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return atomic_write_bytes(folder / "bregman_inversion.png", buf.getvalue())
