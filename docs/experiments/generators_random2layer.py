"""Aberdam, Simon and Elad (2020), Section 6.1 / Figure 2: random generators tanh(W_2 ReLU(W_1 z)).

n = 625, n_0 = 100, n_1 in {150, 300, 500, 700, 1000}, Gaussian weights. For
each n_1 one generator and ``--trials`` latents z ~ N(0, I); success = latent
SNR > 60 dB. Methods: layered basis pursuit (Algorithm 1, lam = 1e-5, least
squares refit on each Lasso support (``--no-refit`` to switch off), with
debiasing), Latent-Pursuit (Algorithm 3, lam = 0, rho = 1e-2, gamma = 0,
with debiasing), gradient descent (random start, Armijo backtracking), and
the oracle. Seconds per inversion = batch wall time / trials (all trials of
one method run as one batch).

Run (small default)::

    OPENBLAS_NUM_THREADS=1 python docs/experiments/generators_random2layer.py
    # paper size: --trials 32 --max-iter 10000 --gd-iter 10000

Prints one JSON document.

Expected limits (checked by linear programming on the same instances): the
image layer alone (625 equations, n_1 unknowns) determines x_1 by signed l1 up
to n_1 ~ 700, as the only non-negative solution up to n_1 ~ 800, by
non-negative l1 up to n_1 ~ 900; at n_1 = 1000 none holds, so both layer-wise
methods fail there while gradient descent succeeds, as the paper's "third
segment" says.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from refinv.onnx.graph import dense_chain
from refinv.solvers.generators import gradient_descent
from refinv.solvers.layered import latent_pursuit, layered_basis_pursuit, oracle


def snr_db(est, ref):
    return 20 * np.log10(
        np.linalg.norm(ref, axis=1) / np.maximum(np.linalg.norm(est - ref, axis=1), 1e-300)
    )


def run_method(name, chain, y, z, args):
    if name == "oracle":
        return oracle(chain, y, z_true=z)
    if name == "lbp":
        return layered_basis_pursuit(
            chain, y, lam=args.lam, max_iter=args.max_iter, refit=not args.no_refit
        )
    if name == "latent-pursuit":
        return latent_pursuit(chain, y, max_iter=args.max_iter)
    if name == "gd":
        return gradient_descent(chain, y, backtracking=True, max_iter=args.gd_iter, rng=args.seed)
    raise ValueError(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=625)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n1", type=int, nargs="+", default=[150, 300, 500, 700, 1000])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--max-iter", type=int, default=5000)
    ap.add_argument("--gd-iter", type=int, default=3000)
    ap.add_argument("--methods", nargs="+", default=["oracle", "lbp", "latent-pursuit", "gd"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lam", type=float, default=1e-5, help="layered basis pursuit lambda")
    ap.add_argument(
        "--no-refit",
        action="store_true",
        help="layered basis pursuit without the least-squares refit on each Lasso support",
    )
    args = ap.parse_args()
    out = {
        "n": args.n,
        "n0": args.n0,
        "trials": args.trials,
        "max_iter": args.max_iter,
        "gd_iter": args.gd_iter,
        "lbp_lam": args.lam,
        "lbp_refit": not args.no_refit,
        "success": "latent SNR > 60 dB",
        "rows": [],
    }
    for n1 in args.n1:
        rng = np.random.default_rng([args.seed, n1])
        W1 = rng.standard_normal((n1, args.n0)) / np.sqrt(n1)
        W2 = rng.standard_normal((args.n, n1)) / np.sqrt(args.n)
        chain = dense_chain([W1, W2], ["relu", "tanh"])
        z = rng.standard_normal((args.trials, args.n0))
        y, hidden = chain.forward(z, return_hidden=True)
        s1 = (hidden[0] > 0).sum(axis=1)
        row = {
            "n1": n1,
            "s1_mean": float(s1.mean()),
            "s1_min": int(s1.min()),
            "s1_max": int(s1.max()),
        }
        for name in args.methods:
            t0 = time.perf_counter()
            res = run_method(name, chain, y, z, args)
            sec = time.perf_counter() - t0
            snr = snr_db(np.asarray(res.x), z)
            row[name] = {
                "success_rate": float(np.mean(snr > 60)),
                "snr_median_db": float(np.median(snr)),
                "snr_min_db": float(np.min(snr)),
                "seconds_per_inversion": sec / args.trials,
                "iterations_median": float(np.median(res.iterations)),
            }
        out["rows"].append(row)
        print(json.dumps(row), flush=True, file=__import__("sys").stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
