"""``refinv invert MODEL.onnx DATA.npz --method ...``: recover generator latents from outputs.

DATA.npz keys (loaded without pickles):

* ``y`` (required): observations, ``(N, *output_shape)`` or ``(N, n)``;
* ``z`` (optional): ground-truth latents ``(N, *input_shape)``: per-sample latent
  and image errors/SNRs are then reported;
* ``mask`` (optional): 0/1 observation mask (1 = observed), the shape of ``y``,
  of one sample, or per pixel; ``--mask SPEC`` (e.g. ``random:0.45``) draws one
  instead (and overrides it).

Methods: ``plugin`` (Joshi et al., 2021, eq. 5), ``gd`` (gradient descent, eq. 4),
``lbp`` (layered basis pursuit, Algorithm 1 of Aberdam et al., 2020), ``latent-pursuit``
(Algorithm 3), ``oracle`` (Algorithm 4; needs ``z`` for the true supports).
``--json OUT.json`` writes per-sample results: latent and image errors and SNRs
(with ``z``), measurement error, iterations, converged flag, time.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from ..errors import ConfigError, ShapeError
from . import _args

METHODS = ("plugin", "gd", "lbp", "latent-pursuit", "oracle")

if TYPE_CHECKING:
    import numpy as np


def register(sub) -> None:
    p = sub.add_parser(
        "invert",
        help="invert a dense generator from its weights (PLUGIn, GD, layered pursuits, oracle)",
        description="Recover the latent codes z of a dense generator from its outputs y = G(z), "
        "using the weights read from the ONNX file: PLUGIn, gradient descent, layered basis "
        "pursuit, Latent-Pursuit or the layer-wise oracle.",
        epilog="DATA.npz keys: y (observations, required), z (true latents, optional), "
        "mask (0/1, optional). Which method for which model: plugin's theory (Joshi et al., "
        "2021) is for expansive layers with Gaussian-like weights; the shipped PLUGIn decoder "
        "models/onnx/digits28_plugin_20-500-500-784_decoder.onnx has its observations in "
        "models/data/digits28_plugin_invert.npz (--step norm, the default: 3 of 8 codes "
        "recovered in 5000 iterations; gaussian and leaky steps diverge on this trained "
        "decoder). On trained decoders gd --backtracking --momentum 0.9 is the robust choice "
        "(8 of 8 on the same file in 300 iterations). The gen_fc decoder's observations: "
        "models/data/digits28_gen_fc_invert.npz.",
    )
    p.add_argument(
        "model", metavar="MODEL.onnx", help="ONNX generator (a plain chain of dense layers)"
    )
    _args.add_data(p, metavar="DATA.npz", help="observations: a .npz with y [, z, mask]")
    _args.add_method(p, METHODS, None, required=True)
    _args.add_mask(
        p, None,
        help="observation mask drawn per sample, e.g. random:0.45 (erased fraction); "
        "overrides DATA.npz's mask",
    )  # fmt: skip
    _args.add_seed(p, "random masks and restarts")
    _args.add_layout(
        p, "the generator OUTPUT's layout, which says where the channel axis is for the "
        "per-pixel masks: NCHW (N, C, H, W) or NHWC (N, H, W, C), e.g. a Keras export "
        "(default: from the declared output shape, as a model input's layout; an ambiguous "
        "one is an error that asks for this option)",
    )  # fmt: skip
    _args.add_limit(p, "samples")
    p.add_argument("--max-iter", type=int, default=5000)
    p.add_argument("--tol", type=float, default=None, help="stopping tolerance (method default)")
    p.add_argument(
        "--step", default=None,
        help="plugin: gaussian (eta = 2^d, the paper's, for Gaussian weights) | leaky | norm "
        "(1 / prod ||A_i||_2, the default) | NUMBER; gd: NUMBER",
    )  # fmt: skip
    p.add_argument("--restarts", type=int, default=0, help="plugin/gd: extra random starts")
    p.add_argument("--momentum", type=float, default=0.0, help="gd: heavy-ball momentum")
    p.add_argument("--backtracking", action="store_true", help="gd: Armijo backtracking")
    p.add_argument("--lam", type=float, default=None, help="lbp/latent-pursuit: l1 weight")
    p.add_argument("--rho", type=float, default=1e-2, help="latent-pursuit: ADMM rho")
    p.add_argument("--gamma", type=float, default=0.0, help="latent-pursuit: MAP weight (eq. 10)")
    p.add_argument("--no-debias", action="store_true", help="lbp/latent-pursuit: skip debiasing")
    p.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    _args.add_json(p, "write per-sample results (JSON; schema in docs/cli.md)")
    _args.add_out(p, "save the estimated latents (key z_hat)", metavar="OUT.npz")
    _args.add_alias(p, "--save", "--out", dest="out")
    p.set_defaults(func=run)


def _snr_db(est: np.ndarray, ref: np.ndarray) -> np.ndarray:
    import numpy as np

    num = np.linalg.norm(ref.reshape(len(ref), -1), axis=1)
    den = np.linalg.norm((est - ref).reshape(len(ref), -1), axis=1)
    with np.errstate(divide="ignore"):
        return 20 * np.log10(num / np.maximum(den, 1e-300))


#: channel counts the declared-shape rule recognizes (the same rule as a model input's layout,
#: refinv.onnx detect_layout: grey and RGB)
_CHANNELS = (1, 3)


def output_layout(shape: tuple[int, ...], given: str | None, label: str) -> str | None:
    """The layout of a generator's output sample ``shape`` (graph coordinates): ``--layout``
    when given, else from the declared shape as a model input's layout is decided:
    ``(C, H, W)`` with C 1 or 3 and neither H nor W is ``"NCHW"``; ``(H, W, C)`` the same
    way ``"NHWC"`` (a Keras / tf2onnx export); an ambiguous 3-D shape is an error that asks
    for ``--layout``; other ranks have no channel axis (``None``)."""
    if given == "flat":
        return None
    if len(shape) != 3:
        if given in ("NCHW", "NHWC"):
            raise ConfigError(
                f"--layout {given}: the generator's output {tuple(shape)} has no channel axis "
                "(expected a 3-D sample)"
            )
        return None
    if given in ("NCHW", "NHWC"):
        return given
    a, b, c = shape
    if a in _CHANNELS and b not in _CHANNELS and c not in _CHANNELS:
        return "NCHW"
    if c in _CHANNELS and a not in _CHANNELS and b not in _CHANNELS:
        return "NHWC"
    raise ConfigError(
        f"{label}: cannot tell the layout of the generator's output (N, {a}, {b}, {c}): "
        f"channels-first ({a} channels of {b}x{c}) and channels-last ({c} channels of "
        f"{a}x{b}) both fit; pass --layout NCHW or --layout NHWC"
    )


def _mask_for(args, arrays, y: np.ndarray, layout: str | None = None) -> np.ndarray | None:
    """The observation mask as a 0/1 array of ``y``'s shape (or None). Masks are per pixel,
    shared by a pixel's channels, whatever the output layout: a channels-last output
    ``(N, H, W, C)`` gets the mask of ``(N, C, H, W)`` moved to its axes."""
    import numpy as np

    if layout == "NHWC":  # work channels-first, move the channel axis back at the end
        m = _mask_for(args, arrays, np.moveaxis(y, -1, 1), "NCHW")
        if m is None:
            return None
        return np.ascontiguousarray(np.moveaxis(m, 1, -1))
    return _mask_cf(args, arrays, y)


def _mask_cf(args, arrays, y: np.ndarray) -> np.ndarray | None:
    import numpy as np

    from ..operators.masks import expand_mask, parse_mask, pixel_shape

    n, shape = y.shape[0], tuple(y.shape[1:])
    pshape = pixel_shape(shape)
    if args.mask:
        m = parse_mask(args.mask).draw(pshape, n, rng=args.seed)
    elif "mask" in arrays:
        m = np.asarray(arrays["mask"])
        if m.ndim == len(shape) + 1 and tuple(m.shape[1:]) == shape:
            m = m[:n]  # one value per observed entry, per sample
        elif tuple(m.shape) == shape:
            m = np.broadcast_to(m, y.shape)
        else:  # per pixel: (H, W) or (N, H, W)
            if m.ndim == len(pshape) + 1:
                m = m[:n]
            m = expand_mask(m, shape, n, like=y)
        if not np.all((m == 0) | (m == 1)):
            raise ConfigError(f"{args.data}:mask: expected only 0 (erased) and 1 (observed)")
        return np.ascontiguousarray(np.broadcast_to(m, y.shape), dtype=y.dtype)
    else:
        return None
    full = expand_mask(m, shape, n, like=y)
    return np.ascontiguousarray(np.broadcast_to(full, y.shape), dtype=y.dtype)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import __version__
    from ..io import atomic_save_npz, load_npz
    from ..onnx.graph import read_chain
    from ..solvers.generators import gradient_descent, plugin
    from ..solvers.layered import latent_pursuit, layered_basis_pursuit, oracle
    from ._output import effective_kwargs, write_json

    chain = read_chain(args.model)
    arrays = load_npz(args.data)
    if "y" not in arrays:
        raise ConfigError(
            f"{args.data}: expected an array 'y' (observations); it has {sorted(arrays)}"
        )
    dt = np.float32 if args.float32 else np.float64
    y = np.asarray(arrays["y"], dtype=dt)
    if y.ndim < 1 or y.shape[0] == 0:
        raise ShapeError(f"{args.data}:y: expected at least one observation, got {y.shape}")
    n = y.shape[0] if args.limit is None else min(args.limit, y.shape[0])
    y = y[:n]
    nd = int(np.prod(chain.out_shape))
    if y.ndim < 2 or int(np.prod(y.shape[1:])) != nd:
        raise ShapeError(
            f"{args.data}:y: expected (N, {', '.join(map(str, chain.out_shape))}), got {y.shape}"
        )
    y = y.reshape(n, *chain.out_shape)
    z = None
    if "z" in arrays:
        z = np.asarray(arrays["z"], dtype=dt)[:n]
        if int(np.prod(z.shape[1:])) != int(np.prod(chain.in_shape)) or z.shape[0] != n:
            raise ShapeError(f"{args.data}:z: expected (N, {chain.in_shape}), got {z.shape}")
        z = z.reshape(n, *chain.in_shape)
    layout = output_layout(tuple(chain.out_shape), args.layout, str(args.model))
    mask = _mask_for(args, arrays, y, layout)
    kw = {"max_iter": args.max_iter}
    if args.tol is not None:
        kw["tol"] = args.tol
    m = args.method
    if m == "plugin":
        step = args.step or "norm"
        try:
            step = float(step)
        except ValueError:
            pass
        fn = plugin
        call = dict(step=step, mask=mask, restarts=args.restarts, rng=args.seed, **kw)
    elif m == "gd":
        fn = gradient_descent
        call = dict(step=None if args.step is None else float(args.step), mask=mask,
                    restarts=args.restarts, rng=args.seed, momentum=args.momentum,
                    backtracking=args.backtracking, **kw)  # fmt: skip
    elif m == "lbp":
        fn = layered_basis_pursuit
        call = dict(lam=1e-5 if args.lam is None else args.lam, mask=mask,
                    debias_result=not args.no_debias, **kw)  # fmt: skip
    elif m == "latent-pursuit":
        fn = latent_pursuit
        call = dict(lam=0.0 if args.lam is None else args.lam, rho=args.rho, gamma=args.gamma,
                    mask=mask, debias_result=not args.no_debias, **kw)  # fmt: skip
    else:
        if z is None:
            raise ConfigError("--method oracle needs the true latents: an array 'z' in DATA.npz")
        fn, call = oracle, dict(z_true=z, mask=mask)
    settings = {"method": m, "seed": args.seed, "limit": args.limit, "float32": args.float32,
                **effective_kwargs(fn, call, skip=("mask", "x0", "z_true", "hidden", "rng"))}  # fmt: skip
    t0 = time.perf_counter()
    res = fn(chain, y, **call)
    seconds = time.perf_counter() - t0
    zh = np.asarray(res.x)
    g = np.asarray(chain.forward(zh))
    resid = (g - y) if mask is None else (g - y) * mask
    meas = np.linalg.norm(resid.reshape(n, -1), axis=1)
    out = {
        "tool": "refinv",
        "refinv_version": __version__,
        "command": "invert",
        "model": str(args.model),
        "data": str(args.data),
        "method": m,
        "mask": args.mask or ("file" if mask is not None else None),
        "output_layout": layout,
        "observed_fraction": None if mask is None else float(mask.mean()),
        "n": n,
        "seconds": seconds,
        "seconds_per_inversion": seconds / max(n, 1),
        "settings": settings,
        "solver": res.summary(),
        "measurement_error": meas.tolist(),
    }
    print(
        f"{m}: {n} samples in {seconds:.2f} s ({seconds / max(n, 1):.3g} s each); "
        f"converged {int(res.converged.sum())}/{n}; median iterations {np.median(res.iterations):.0f}"
    )
    if z is not None:
        lat_err = np.linalg.norm((zh - z).reshape(n, -1), axis=1) / np.maximum(
            np.linalg.norm(z.reshape(n, -1), axis=1), 1e-300
        )
        gt = np.asarray(chain.forward(z))
        img_err = np.linalg.norm((g - gt).reshape(n, -1), axis=1) / np.maximum(
            np.linalg.norm(gt.reshape(n, -1), axis=1), 1e-300
        )
        out.update(
            latent_rel_error=lat_err.tolist(),
            image_rel_error=img_err.tolist(),
            latent_snr_db=_snr_db(zh, z).tolist(),
            image_snr_db=_snr_db(g, gt).tolist(),
        )
        print(
            f"latent SNR median {np.median(out['latent_snr_db']):.1f} dB, image SNR median "
            f"{np.median(out['image_snr_db']):.1f} dB; latent SNR > 60 dB: "
            f"{np.mean(np.asarray(out['latent_snr_db']) > 60):.0%}"
        )
    else:
        print(f"measurement error median {np.median(meas):.3g}")
    if args.json:
        write_json(args.json, out, "invert", args, {"model": args.model, "data": args.data})
    if args.out:
        atomic_save_npz(args.out, z_hat=zh)
    return 0
