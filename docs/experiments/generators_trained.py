"""Aberdam, Simon and Elad (2020), Section 6.2 / Figure 3: inverting the shipped trained generator.

Generator: ``models/onnx/digits28_gen_fc_20-128-392-784_decoder.onnx``
(20-128-392-784, ReLU hidden layers with folded batch norm, piecewise linear
output unit), latents ``models/latents/..._codes.npz`` (``z_train``). The
targets are ``y = G(z)`` evaluated in float64 from the extracted chain (exactly
attainable). Clean, and with 45% of the pixels missing (random per image,
known mask). Methods: Latent-Pursuit (rho = 1e-2, lam = 0, with debiasing),
layered basis pursuit, gradient descent (momentum 0.9 with Armijo
backtracking, start N(0, I)), PLUGIn (eta = 1 / prod ||A_i||_2) and the
oracle. Reports median latent / image SNR, the fraction with latent SNR > 60 dB,
and seconds per inversion (batch wall time / samples).

Run (small default)::

    OPENBLAS_NUM_THREADS=1 python docs/experiments/generators_trained.py
    # all 100 codes, paper iteration counts: --samples 100 --max-iter 10000

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from refinv.onnx.graph import read_chain
from refinv.operators.masks import parse_mask
from refinv.solvers.generators import gradient_descent, plugin
from refinv.solvers.layered import latent_pursuit, layered_basis_pursuit, oracle

ROOT = Path(__file__).resolve().parents[2]


def snr(est, ref):
    est, ref = est.reshape(len(ref), -1), ref.reshape(len(ref), -1)
    d = np.maximum(np.linalg.norm(est - ref, axis=1), 1e-300)
    return 20 * np.log10(np.linalg.norm(ref, axis=1) / d)


def run(name, chain, y, z, mask, args):
    if name == "latent-pursuit":
        return latent_pursuit(chain, y, mask=mask, rho=1e-2, max_iter=args.max_iter)
    if name == "lbp":
        return layered_basis_pursuit(chain, y, mask=mask, max_iter=args.max_iter)
    if name == "gd":
        return gradient_descent(
            chain,
            y,
            mask=mask,
            backtracking=True,
            momentum=0.9,
            max_iter=args.max_iter,
            tol=1e-12,
            rng=args.seed,
        )
    if name == "plugin":
        return plugin(chain, y, mask=mask, step="norm", max_iter=args.max_iter, tol=1e-13)
    if name == "oracle":
        return oracle(chain, y, z_true=z, mask=mask)
    raise ValueError(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", default=str(ROOT / "models/onnx/digits28_gen_fc_20-128-392-784_decoder.onnx")
    )
    ap.add_argument(
        "--codes", default=str(ROOT / "models/latents/digits28_gen_fc_20-128-392-784_codes.npz")
    )
    ap.add_argument("--key", default="z_train")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--max-iter", type=int, default=5000)
    ap.add_argument("--missing", type=float, default=0.45)
    ap.add_argument(
        "--methods", nargs="+", default=["oracle", "latent-pursuit", "lbp", "gd", "plugin"]
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    chain = read_chain(args.model)
    z = np.load(args.codes)[args.key][: args.samples].astype(np.float64)
    y = chain.forward(z)
    n = len(z)
    pix = parse_mask(f"random:{args.missing}").draw(chain.out_shape[-2:], n, rng=args.seed)
    masks = {"clean": None, f"missing{args.missing:g}": pix[:, None].astype(np.float64)}
    out = {"model": args.model, "samples": n, "max_iter": args.max_iter, "results": {}}
    for setting, mask in masks.items():
        yy = y if mask is None else y * mask
        res_s = {}
        for name in args.methods:
            t0 = time.perf_counter()
            r = run(name, chain, yy, z, mask, args)
            sec = time.perf_counter() - t0
            zh = np.asarray(r.x)
            s_lat, s_img = snr(zh, z), snr(chain.forward(zh), y)
            res_s[name] = {
                "latent_snr_median_db": float(np.median(s_lat)),
                "latent_snr_q10_db": float(np.quantile(s_lat, 0.1)),
                "image_snr_median_db": float(np.median(s_img)),
                "image_snr_q10_db": float(np.quantile(s_img, 0.1)),
                "latent_snr_gt60": float(np.mean(s_lat > 60)),
                "seconds_per_inversion": sec / n,
            }
            print(json.dumps({setting: {name: res_s[name]}}), file=sys.stderr, flush=True)
        out["results"][setting] = res_s
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
