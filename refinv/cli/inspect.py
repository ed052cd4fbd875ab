"""``refinv inspect MODEL.onnx``: the layer chain of a model and its invertibility diagnostics.

Prints the layers (kind, shapes, activation, parameters), the parameter count,
which explicit-weight methods apply, and the diagnostics of Aberdam et al. (2020), Section 3
(cardinalities of a forward pass on random latents, mutual coherence, Theorem 2
conditions). ``--json OUT`` writes the same as JSON. A model that is not a
plain chain is reported (exit 0) with the reason. ``--prox DATA.npz[:key]``
checks Theorem 1's conditions on an autoencoder at the first ``--prox-limit``
images (:func:`refinv.evaluation.prox.prox_check`; any model, chain or not).
"""

from __future__ import annotations

import argparse

from ..errors import NonFiniteError, UnsupportedGraphError
from . import _args

_PLAIN = ("relu", "leaky_relu", "prelu", "identity", "tanh", "sigmoid", "plu")


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="show a model's layer chain and invertibility diagnostics",
        description="Print the layer chain of an ONNX model, read from its initializers (kind, "
        "shapes, activation, parameters), which explicit-weight methods apply, and the "
        "invertibility diagnostics of Aberdam et al. (2020), Section 3.",
    )
    p.add_argument("model", metavar="MODEL.onnx", help="ONNX model file")
    _args.add_limit(
        p, "latents for the diagnostics (N random draws z ~ N(0, I), or the first N of "
        "--latents)", default=64,
    )  # fmt: skip
    _args.add_alias(p, "--samples", "--limit", dest="limit", type=int)
    p.add_argument(
        "--latents",
        metavar="FILE.npz:KEY",
        help="diagnose on these latents (e.g. a model's training codes) instead of N(0, I)",
    )
    _args.add_seed(p, "random latents")
    p.add_argument("--no-diagnostics", action="store_true", help="skip the diagnostics")
    _args.add_json(p)
    p.add_argument(
        "--prox", metavar="DATA.npz[:key]", default=None,
        help="autoencoders: is the model a Moreau proximal map (Theorem 1) at these images? "
        "Jacobian asymmetry and eigenvalue range at each of the first --prox-limit (key train "
        "by default)",
    )  # fmt: skip
    _args.add_limit(p, "images of --prox", default=10, flag="--prox-limit", dest="prox_n")
    _args.add_alias(p, "--prox-n", "--prox-limit", dest="prox_n", type=int)
    _args.add_layout(p)
    _args.add_image_shape(p)
    p.add_argument(
        "--prox-eps", type=float, default=1e-3, help="finite-difference step (default 1e-3)"
    )
    p.add_argument(
        "--sym-tol", type=float, default=1e-3,
        help="largest ||J - J^T||_F / ||J||_F counted as symmetric (default 1e-3)",
    )  # fmt: skip
    p.add_argument(
        "--eig-tol", type=float, default=1e-3,
        help="slack on the eigenvalue range [0, 1] (default 1e-3)",
    )  # fmt: skip
    p.set_defaults(func=run)


def prox_section(args: argparse.Namespace) -> dict:
    """``--prox``: Theorem 1's conditions at the first ``--prox-limit`` images; prints a table."""
    from ..errors import ConfigError
    from ..evaluation.prox import prox_check
    from ..io import load_images_for, parse_data_spec
    from ..onnx import OnnxModel

    f = OnnxModel(args.model, layout=args.layout, image_shape=args.image_shape)
    if not f.is_autoencoder:
        raise ConfigError(
            f"--prox: expected an autoencoder (output shape == input shape), got input "
            f"{f.sample_shape} and output {f.output_sample_shape}"
        )
    path, key = parse_data_spec(args.prox, "train")
    x = load_images_for(f, path, key)
    res = prox_check(f, x, n=args.prox_n, eps=args.prox_eps, sym_tol=args.sym_tol,
                     eig_tol=args.eig_tol)  # fmt: skip
    res["data"] = f"{path}:{key}"
    print(
        f"Theorem 1 (is the model a Moreau proximal map?) at the first {res['n']} images of "
        f"{res['data']}, eps {res['eps']:g}: symmetric Jacobian (||J - J^T||_F / ||J||_F <= "
        f"{res['sym_tol']:g}) with eigenvalues in [0, 1] (slack {res['eig_tol']:g})"
    )
    print(f"{'point':>5}  {'asymmetry':>9}  {'eig min':>9}  {'eig max':>9}  prox")
    for i, pt in enumerate(res["points"]):
        print(
            f"{i:>5}  {pt['asymmetry']:>9.2e}  {pt['eig_min']:>9.4f}  {pt['eig_max']:>9.4f}  "
            f"{'yes' if pt['prox'] else 'no'}"
        )
    verdict = "yes, at every point" if res["is_prox"] else (
        f"no: {res['fraction_prox']:.0%} of the points pass")  # fmt: skip
    print(
        f"max asymmetry {res['max_asymmetry']:.2e}, eigenvalues in [{res['eig_min']:.4f}, "
        f"{res['eig_max']:.4f}]; a Moreau proximal map there: {verdict} (a check at "
        f"{res['n']} points, not a proof)"
    )
    return res


def layout_section(args: argparse.Namespace) -> dict:
    """The model's input layout (:meth:`refinv.onnx.OnnxModel.layout_info`), printed; a model
    that does not load or whose layout is ambiguous gets ``layout: null`` and ``error``."""
    from ..errors import RefinvError
    from ..onnx import OnnxModel

    try:
        f = OnnxModel(args.model, layout=args.layout, image_shape=args.image_shape)
    except RefinvError as exc:
        print(f"{args.model}: input layout: unknown ({exc})")
        return {"layout": None, "error": str(exc)}
    info = f.layout_info()
    shapes = ""
    if f.sample_shape != f.onnx_sample_shape:
        shapes = (
            f"; refinv's arrays (N, {', '.join(map(str, f.sample_shape))}), the graph's "
            f"(N, {', '.join(map(str, f.onnx_sample_shape))})"
        )
    restored = ", batch axis restored from (batch * D, 1)" if f.batch_axis_restored else ""
    print(f"{args.model}: input layout {f.layout} ({f.layout_source}){shapes}{restored}")
    return info


def applicable_methods(chain) -> dict[str, str]:
    """Which explicit-weight methods apply to ``chain`` ("yes" or the reason why not)."""
    out = {}
    dense = chain.is_dense
    reason = "needs dense layers only" if not dense else ""
    out["plugin"] = "yes" if dense else reason
    out["gd"] = out["plugin"]
    hidden_ok = all(lay.activation.name in _PLAIN for lay in chain.layers[:-1])
    lw = "yes" if dense and hidden_ok else reason or "unsupported hidden activation"
    for m in ("lbp", "latent-pursuit", "oracle"):
        out[m] = lw
    if lw == "yes" and not any(lay.activation.name == "relu" for lay in chain.layers[:-1]):
        for m in ("lbp", "latent-pursuit", "oracle"):
            out[m] = "yes (no ReLU hidden layer: layers are inverted exactly, no supports)"
    return out


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import __version__
    from ..evaluation.diagnostics import diagnose, parameter_ties
    from ..onnx.graph import read_chain

    report: dict = {
        "tool": "refinv",
        "refinv_version": __version__,
        "command": "inspect",
        "model": str(args.model),
        "settings": {
            "samples": args.limit, "seed": args.seed, "latents": args.latents,
            "diagnostics": not args.no_diagnostics, "prox": args.prox,
            "prox_n": args.prox_n, "prox_eps": args.prox_eps, "sym_tol": args.sym_tol,
            "eig_tol": args.eig_tol,
        },
    }  # fmt: skip
    report["layout"] = layout_section(args)
    try:
        chain = read_chain(args.model, layout=getattr(args, "layout", None))
    except UnsupportedGraphError as exc:
        report.update(chain=None, error=str(exc), methods={})
        print(f"{args.model}: not a plain layer chain: {exc}")
        print("explicit-weight methods (plugin, gd, lbp, latent-pursuit, oracle): not applicable")
        if args.prox:
            report["prox"] = prox_section(args)
        if args.json:
            _write(args, report)
        return 0
    methods = applicable_methods(chain)
    tied = parameter_ties(chain)
    report.update(
        in_shape=list(chain.in_shape),
        out_shape=list(chain.out_shape),
        n_params=tied["n_params"],
        n_params_per_layer_sum=tied["n_params_per_layer_sum"],
        ties=tied["ties"],
        info=chain.info,
        methods=methods,
    )
    extra = ""
    if tied["ties"]:
        extra = f" ({tied['n_params_per_layer_sum']} counted per layer; tied weights below)"
    print(
        f"{args.model}: {len(chain)} layers, input {chain.in_shape}, output {chain.out_shape}, "
        f"{tied['n_params']} unique parameters{extra}"
    )
    ties_of: dict[int, list[str]] = {}
    for t in tied["ties"]:
        mark = "^T" if t["relation"] == "transpose" else ""
        ties_of.setdefault(t["layer"], []).append(
            f"{t['param']} = layer {t['tied_to_layer']} {t['tied_to_param']}{mark}"
        )
    print(f"{'#':>3} {'kind':<15} {'in':<14} {'out':<14} {'activation':<16} {'params':>9}  tied")
    for i, lay in enumerate(chain.layers):
        act = lay.activation.name
        if lay.activation.name == "leaky_relu":
            act += f"({lay.activation.slope:g})"
        params = lay.weight.size + (0 if lay.bias is None else lay.bias.size)
        print(
            f"{i:>3} {lay.kind:<15} {str(lay.in_shape):<14} {str(lay.out_shape):<14} "
            f"{act:<16} {params:>9}  {', '.join(ties_of.get(i, [])) or '-'}"
        )
    print("explicit-weight methods: " + ", ".join(f"{k}: {v}" for k, v in methods.items()))
    if not args.no_diagnostics:
        bad = [
            f"{i} ({lay.kind})"
            for i, lay in enumerate(chain.layers)
            if not np.all(np.isfinite(np.asarray(lay.weight)))
            or (lay.bias is not None and not np.all(np.isfinite(np.asarray(lay.bias))))
        ]
        if bad:
            raise NonFiniteError(
                f"{args.model}: expected finite weights for the diagnostics, layer(s) "
                f"{', '.join(bad)} hold NaN/Inf (a diverged training?); --no-diagnostics "
                "shows the layers alone"
            )
        rng = np.random.default_rng(args.seed)
        if args.latents:
            from ..io import load_images

            z = load_images(args.latents, sample_shape=chain.in_shape, dtype=np.float64)
            z, what = z[: args.limit], f"latents from {args.latents}"
        else:
            z, what = rng.standard_normal((args.limit, *chain.in_shape)), "latents z ~ N(0, I)"
        diag = diagnose(chain, z, rng=rng)
        diag["latents"] = what
        report["diagnostics"] = diag
        print(f"diagnostics on {diag['samples']} {what}:")
        for d in diag["layers"]:
            extra = f"{d['kind']} (coherence not computed)"
            if "coherence" in d:
                extra = f"coherence {d['coherence']:.3f}, ||W||_2 {d['spectral_norm']:.3g}"
            if d.get("mu_s_lower_estimate") is not None:
                extra += f", mu_s >= {d['mu_s_lower_estimate']:.3f}"
            if "corollary1_holds" in d:
                extra += f", Corollary 1 (s < 1/(3 mu_s)) holds for {d['corollary1_holds']:.0%}"
            print(f"  layer {d['index']}: {extra}")
        for t in diag["theorem2"]:
            conds = ", ".join(
                f"{k} {v:.0%}"
                for k, v in t.items()
                if k not in ("layer", "s_mean", "s_min", "s_max", "holds")
            )
            print(
                f"  hidden {t['layer']}: s = {t['s_mean']:.1f} [{t['s_min']}, {t['s_max']}]; "
                f"Theorem 2: {conds}; all: {t['holds']:.0%}"
            )
    if args.prox:
        report["prox"] = prox_section(args)
    if args.json:
        _write(args, report)
    return 0


def _write(args: argparse.Namespace, report: dict) -> None:
    from ..io import parse_data_spec
    from ._output import write_json

    files = {"model": args.model}
    if args.latents:
        files["latents"] = parse_data_spec(args.latents)[0]
    if args.prox:
        files["prox_data"] = parse_data_spec(args.prox, "train")[0]
    write_json(args.json, report, "inspect", args, files)
