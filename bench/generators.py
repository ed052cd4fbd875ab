"""Part 4 of the benchmarks: generator inversion, time to a latent error of 1e-6.

The random-generator setting of Joshi et al. (2021): ``G(z) = ReLU(A_3 ReLU(A_2 ReLU(A_1 z)))``
with ``n = (20, 600, 500, 500)`` and i.i.d. ``N(0, 1/n_i)`` weights (``n_i`` the
layer's output size), no biases, float64, a batch of latents
``z* ~ N(0, I)`` (seed 0), noiseless ``y = G(z*)``.

* PLUGIn (:func:`refinv.solvers.generators.plugin`) with the theoretical
  step ``2^d = 8`` (the library default, ``step="gaussian"``) and with the
  paper's experimental ``eta = 3``, and gradient descent
  (:func:`refinv.solvers.generators.gradient_descent`, library defaults):
  an untimed run with a callback finds the first iteration ``k`` at which
  EVERY sample's relative latent error ``||z_k - z*|| / ||z*||`` is
  ``<= 1e-6``; the seconds per iteration are timed on runs of ``--niter``
  iterations (``tol=0``, interleaved), and time to target = ``k`` x that.
* Latent-Pursuit (:func:`refinv.solvers.layered.latent_pursuit`) is a
  multi-stage method (one solve per layer): its whole run with the library
  defaults is timed and its final latent error reported.

Usage::

    python bench/generators.py [--batch 10] [--repeats 5] [--markdown]
"""

from __future__ import annotations

from functools import partial

import common  # before numpy: pins the BLAS threads (env vars read at load)
import numpy as np

from refinv.onnx import dense_chain
from refinv.solvers.generators import gradient_descent, plugin
from refinv.solvers.layered import latent_pursuit

SIZES = (20, 600, 500, 500)
TARGET = 1e-6


def setting(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    Ws = [
        rng.standard_normal((m, k)) / np.sqrt(m) for k, m in zip(SIZES[:-1], SIZES[1:], strict=True)
    ]
    chain = dense_chain(Ws, "relu")
    z = rng.standard_normal((batch, SIZES[0]))
    h = z
    for W in Ws:
        h = np.maximum(h @ W.T, 0.0)
    return chain, z, h


def rel_err(x, z):
    return np.linalg.norm(x - z, axis=1) / np.linalg.norm(z, axis=1)


def iterations_to_target(solver, chain, y, z, max_iter: int) -> tuple[int | None, float]:
    hit: list[int] = []

    def cb(k, state, res):
        if state.x.shape[0] == z.shape[0] and np.all(rel_err(np.asarray(state.x), z) <= TARGET):
            hit.append(k)
            return True
        return None

    r = solver(chain, y, max_iter=max_iter, tol=0.0, callback=cb, progress=False)
    return (hit[0] if hit else None), float(np.max(rel_err(np.asarray(r.x), z)))


def main(argv=None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--batch", type=int, default=10, help="latents inverted at once")
    ap.add_argument("--max-iter", type=int, default=10_000, help="iteration cap")
    ap.add_argument("--niter", type=int, default=300, help="iterations per timed run")
    args = common.parse(ap, argv)
    chain, z, y = setting(args.batch)
    methods = {
        "plugin (eta = 2^d = 8)": plugin,
        "plugin (eta = 3)": partial(plugin, step=3.0),
        "gradient_descent": gradient_descent,
    }
    found = {m: iterations_to_target(fn, chain, y, z, args.max_iter) for m, fn in methods.items()}
    fns = {}
    for m, fn in methods.items():
        fns[m] = lambda fn=fn: fn(chain, y, max_iter=args.niter, tol=0.0, progress=False)
    lp_err: list[float] = []

    def run_lp():
        r = latent_pursuit(chain, y, progress=False)
        lp_err.append(float(np.max(rel_err(np.asarray(r.x), z))))

    fns["latent_pursuit"] = run_lp
    t = common.interleaved(fns, repeats=args.repeats)
    rows = []
    for m in (*methods, "latent_pursuit"):
        if m == "latent_pursuit":
            rows.append(
                {"method": m, "iterations": None, "max_rel_error": lp_err[-1], "seconds": t[m]}
            )
        else:
            k, err = found[m]
            per_it = t[m]["median"] / args.niter
            rows.append(
                {
                    "method": m,
                    "iterations": k,
                    "reached": k is not None,
                    "max_rel_error_at_cap_or_hit": err,
                    "seconds_per_iteration": {
                        q: t[m][q] / args.niter for q in ("median", "min", "max")
                    },
                    "seconds": None if k is None else k * per_it,
                }
            )
    doc = common.record(
        "generators",
        args,
        setting={"sizes": SIZES, "batch": args.batch, "target_rel_latent_error": TARGET},
        rows=rows,
    )

    def render(doc: dict) -> str:
        lines = [
            "## Generator inversion: time to a latent error of 1e-6 (part 4)",
            "",
            f"Command: `python bench/generators.py --batch {args.batch} --repeats "
            f"{args.repeats} --markdown` ({doc['date']}). Random ReLU generator of Joshi et al. (2021), "
            f"n = {SIZES}, N(0, 1/n_i) weights, {args.batch} latents, noiseless, float64, one "
            "thread, library defaults. PLUGIn / gradient descent: iterations until every "
            f"sample's relative latent error <= 1e-6 (cap {args.max_iter}) x the median seconds "
            f"per iteration (timed on {args.niter}-iteration runs). Latent-Pursuit: its full "
            "default run timed (median [min, max]).",
            "",
            "| method | iterations to 1e-6 | ms / iteration | seconds to 1e-6 (batch) "
            "| max relative latent error (at hit or cap) |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            if r["method"] == "latent_pursuit":
                lines.append(
                    f"| {r['method']} | (multi-stage) | - | {common.fmt(r['seconds'])} "
                    f"| {r['max_rel_error']:.2g} |"
                )
            else:
                it = r["iterations"] if r["reached"] else f"not reached in {args.max_iter}"
                sec = "n/a" if r["seconds"] is None else f"{r['seconds']:.3g}"
                lines.append(
                    f"| {r['method']} | {it} | {common.fmt(r['seconds_per_iteration'], 1e3)} "
                    f"| {sec} | {r['max_rel_error_at_cap_or_hit']:.2g} |"
                )
        return "\n".join(lines)

    common.publish(doc, "generators", render, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
