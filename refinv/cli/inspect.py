"""``refinv inspect MODEL.onnx``: the layer chain of a model and its invertibility diagnostics.

Prints the layers (kind, shapes, activation, parameters), the parameter count,
which explicit-weight methods apply, and the diagnostics of seed 002, Section 3
(cardinalities of a forward pass on random latents, mutual coherence, Theorem 2
conditions). ``--json OUT`` writes the same as JSON. A model that is not a
plain chain is reported (exit 0) with the reason.
"""

from __future__ import annotations

import argparse

from ..errors import NonFiniteError, UnsupportedGraphError
from ..io import atomic_write_json

_PLAIN = ("relu", "leaky_relu", "prelu", "identity", "tanh", "sigmoid", "plu")


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="show a model's layer chain and invertibility diagnostics",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--samples", type=int, default=64, help="random latents for the diagnostics")
    p.add_argument(
        "--latents",
        metavar="FILE.npz:KEY",
        help="diagnose on these latents (e.g. a model's training codes) instead of N(0, I)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-diagnostics", action="store_true", help="skip the diagnostics")
    p.add_argument("--json", metavar="OUT.json", help="write the report as JSON")
    p.set_defaults(func=run)


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

    from ..evaluation.diagnostics import diagnose
    from ..onnx.graph import read_chain

    report: dict = {"model": str(args.model)}
    try:
        chain = read_chain(args.model)
    except UnsupportedGraphError as exc:
        report.update(chain=None, error=str(exc), methods={})
        print(f"{args.model}: not a plain layer chain: {exc}")
        print("explicit-weight methods (plugin, gd, lbp, latent-pursuit, oracle): not applicable")
        if args.json:
            atomic_write_json(args.json, report)
        return 0
    methods = applicable_methods(chain)
    report.update(
        in_shape=list(chain.in_shape),
        out_shape=list(chain.out_shape),
        n_params=chain.n_params,
        info=chain.info,
        methods=methods,
    )
    print(
        f"{args.model}: {len(chain)} layers, input {chain.in_shape}, output {chain.out_shape}, "
        f"{chain.n_params} parameters"
    )
    print(f"{'#':>3} {'kind':<15} {'in':<14} {'out':<14} {'activation':<16} {'params':>9}")
    for i, lay in enumerate(chain.layers):
        act = lay.activation.name
        if lay.activation.name == "leaky_relu":
            act += f"({lay.activation.slope:g})"
        params = lay.weight.size + (0 if lay.bias is None else lay.bias.size)
        print(
            f"{i:>3} {lay.kind:<15} {str(lay.in_shape):<14} {str(lay.out_shape):<14} "
            f"{act:<16} {params:>9}"
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
            z, what = z[: args.samples], f"latents from {args.latents}"
        else:
            z, what = rng.standard_normal((args.samples, *chain.in_shape)), "latents z ~ N(0, I)"
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
    if args.json:
        atomic_write_json(args.json, report)
    return 0
