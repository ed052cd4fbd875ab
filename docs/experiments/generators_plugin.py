"""Joshi, Li, Plan and Yılmaz (2021), Section 4: PLUGIn phase portrait (Figure 1) and error vs noise (Figure 2a/b).

Generator G(x) = ReLU(A_3 ReLU(A_2 ReLU(A_1 x))), A_i with i.i.d. N(0, 1/n_i)
entries, x* uniform on the sphere S^{n_0 - 1}. PLUGIn with the paper's fixed
step eta = 3 (``--step``), stopping at ||x^{k+1} - x^k|| < 1e-13 ||x^k|| or
``--max-iter``; started at x^0 = 0.

* phase portrait: n_0 in ``--n0``, n_1 = n_2 = n_3 in ``--width``; per cell
  ``--nets`` independent networks x ``--latents`` latents each; success
  ||x - x*|| <= 1e-5. The paper's line is n_3 = 20 n_0.
* noise: n = (20, 600, 500, 500), y = G(x*) + alpha nu, nu uniform on the
  sphere, alpha uniform in [0, 1]; relative recovery error ||x - x*|| / ||x*||
  and reconstruction error vs alpha, with a least-squares slope (PLUGIn and
  gradient descent with backtracking).

Run (small default)::

    OPENBLAS_NUM_THREADS=1 python docs/experiments/generators_plugin.py
    # paper-like: --n0 2 4 6 8 10 12 14 16 18 --width 21 61 101 141 181 221 261 301 341 381 441
    #             --nets 10 --latents 2 --max-iter 10000 --noise-trials 20

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from refinv.onnx.graph import dense_chain
from refinv.solvers.generators import gradient_descent, plugin


def sphere(rng, n, d):
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def net(rng, widths):
    ws = [
        rng.standard_normal((b, a)) / np.sqrt(b)
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    ]
    return dense_chain(ws, "relu")


def phase(args) -> dict:
    table = {}
    secs, count = 0.0, 0
    for n0 in args.n0:
        row = {}
        for w in args.width:
            rng = np.random.default_rng([args.seed, n0, w])
            ok = []
            for _ in range(args.nets):
                ch = net(rng, [n0, w, w, w])
                x = sphere(rng, args.latents, n0)
                t0 = time.perf_counter()
                r = plugin(ch, ch.forward(x), step=args.step, max_iter=args.max_iter, tol=1e-13)
                secs += time.perf_counter() - t0
                count += args.latents
                ok += list(np.linalg.norm(r.x - x, axis=1) <= 1e-5)
            row[str(w)] = float(np.mean(ok))
        table[str(n0)] = row
        print(json.dumps({"n0": n0, "success": row}), file=sys.stderr, flush=True)
    return {"success_rate": table, "seconds_per_inversion": secs / max(count, 1)}


def noise(args) -> dict:
    rng = np.random.default_rng([args.seed, 99])
    widths = [20, 600, 500, 500]
    ch = net(rng, widths)
    T = args.noise_trials
    x = sphere(rng, T, widths[0])
    alpha = rng.uniform(0, 1, T)
    nu = sphere(rng, T, widths[-1])
    clean = ch.forward(x)
    y = clean + alpha[:, None] * nu
    out = {"widths": widths, "alpha": alpha.tolist()}
    for name in args.noise_methods:
        t0 = time.perf_counter()
        if name == "plugin":
            r = plugin(ch, y, step=args.step, max_iter=args.max_iter, tol=1e-13)
        else:
            r = gradient_descent(ch, y, backtracking=True, max_iter=args.max_iter, tol=1e-13, rng=1)
        sec = time.perf_counter() - t0
        rec = np.linalg.norm(r.x - x, axis=1)
        recon = np.linalg.norm(ch.forward(r.x) - clean, axis=1) / np.linalg.norm(clean, axis=1)
        A = np.stack([alpha, np.ones(T)], axis=1)
        slope, icpt = np.linalg.lstsq(A, rec, rcond=None)[0]
        slope2, icpt2 = np.linalg.lstsq(A, recon, rcond=None)[0]
        corr = float(np.corrcoef(alpha, rec)[0, 1])
        out[name] = {
            "recovery_rel_error": rec.tolist(),
            "slope_recovery_vs_alpha": float(slope),
            "intercept_recovery": float(icpt),
            "corr_recovery_alpha": corr,
            "slope_reconstruction_vs_alpha": float(slope2),
            "intercept_reconstruction": float(icpt2),
            "theory_scale_2^d_sqrt(n0/nd)": float(2**3 * np.sqrt(widths[0] / widths[-1])),
            "seconds_per_inversion": sec / T,
        }
        print(
            json.dumps({name: {k: v for k, v in out[name].items() if k != "recovery_rel_error"}}),
            file=sys.stderr,
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n0", type=int, nargs="+", default=[2, 6, 10, 14, 18])
    ap.add_argument("--width", type=int, nargs="+", default=[21, 61, 121, 221, 441])
    ap.add_argument("--nets", type=int, default=5)
    ap.add_argument("--latents", type=int, default=2)
    ap.add_argument("--step", type=float, default=3.0)
    ap.add_argument("--max-iter", type=int, default=3000)
    ap.add_argument("--noise-trials", type=int, default=20)
    ap.add_argument("--noise-methods", nargs="+", default=["plugin", "gd"])
    ap.add_argument("--skip", choices=["phase", "noise"], action="append", default=[])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = {"step": args.step, "max_iter": args.max_iter, "success": "||x - x*|| <= 1e-5"}
    if "phase" not in args.skip:
        out["phase"] = phase(args)
        out["phase"]["trials_per_cell"] = args.nets * args.latents
    if "noise" not in args.skip:
        out["noise"] = noise(args)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
