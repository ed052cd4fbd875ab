"""Seconds per PDHG iteration (Wang and Benning, 2023) at the paper's sizes, fixed iteration counts.

* circle: ReLU perceptron 4096 -> 512 (random W), one 64x64 image, eq. (14);
* fc: the shipped encoder 784 -> 100, eq. (14);
* conv: the shipped conv encoder (Conv-Conv-Gemm, code 300), one coordinate-descent sweep
  (15)-(17) = ``inner_iter`` PDHG steps (16) + the hidden updates (17).

    OPENBLAS_NUM_THREADS=1 python docs/experiments/bregman_timing.py [--iters 200] [--batch 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from refinv.onnx import OnnxModel
from refinv.onnx.graph import read_chain
from refinv.operators.activations import ReLU
from refinv.operators.linear import Dense
from refinv.solvers.bregman import (
    BregmanLayer,
    layers_from_chain,
    multilayer_cd,
    perceptron_pdhg,
)

ROOT = Path(__file__).resolve().parents[2] / "models"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--inner-iter", type=int, default=10)
    ap.add_argument("--float32", action="store_true")
    args = ap.parse_args(argv)
    dt = np.float32 if args.float32 else np.float64
    rng = np.random.default_rng(0)
    out = {"setup": vars(args)}

    W = (rng.standard_normal((512, 4096)) / 64).astype(dt)
    y = np.maximum(rng.standard_normal((args.batch, 512)), 0).astype(dt)
    lay = BregmanLayer(Dense(W, in_shape=(1, 64, 64)), None, ReLU())
    r = perceptron_pdhg(y, lay, alpha=1.5e-2, max_iter=args.iters, tol=0.0, tau_x=1e-3)
    out["circle_4096x512_pdhg"] = r.seconds / args.iters

    data = np.load(ROOT / "data" / "digits28.npz")["train"][: args.batch].astype(dt)
    for stem in ("fc_code100", "conv_code300"):
        path = ROOT / "onnx" / f"digits28_bregman_{stem}_encoder.onnx"
        chain = read_chain(path)
        y = np.asarray(OnnxModel(path)(data), dtype=dt)
        layers = layers_from_chain(chain, like=y)
        if len(layers) == 1:
            r = perceptron_pdhg(
                y, layers[0], alpha=5e-3, x_shape=chain.in_shape, max_iter=args.iters, tol=0.0
            )
            out["fc_784x100_pdhg"] = r.seconds / args.iters
        else:
            n = max(1, args.iters // args.inner_iter)
            r = multilayer_cd(
                y,
                layers,
                alpha=9e-3,
                x_shape=chain.in_shape,
                inner_iter=args.inner_iter,
                max_iter=n,
                tol=0.0,
            )
            out["conv_code300_cd_sweep"] = r.seconds / n
            out["conv_code300_per_pdhg_step_incl_hidden"] = r.seconds / (n * args.inner_iter)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
