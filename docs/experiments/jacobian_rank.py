"""Numerical rank of the autoencoder's Jacobian at its training images (JSON).

For each shipped autoencoder: the Jacobian ``J = Df(x)`` at the first N training images
(central differences, refinv.evaluation.stability.model_jacobian), its singular values,
the numerical rank (singular values above ``1e-3`` times the largest), the largest and
the median singular value, and the ADMM stability radius (rho 0.5, random:0.5 masks of
seed 0) next to it. docs/theory/recovery.md reads the result: the models whose training
images are recovered have a Jacobian of low rank (a memorizer's output hardly depends on
most input directions); the 8x8 digits MLPs (n = 64 < 100 training images) and the U-Nets
(near-identity maps) have a full-rank one.

    OPENBLAS_NUM_THREADS=1 python docs/experiments/jacobian_rank.py [--n 3] [--n-unet 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from refinv import OnnxModel
from refinv.evaluation.stability import model_jacobian, pnp_admm_stability
from refinv.operators.masks import draw_masks

ROOT = Path(__file__).resolve().parents[2]
MODELS = [
    ("faces25_lrelu_6x256", "faces25"),
    ("faces25_prelu_6x160", "faces25"),
    ("digits28_lrelu_6x256", "digits28"),
    ("digits8_lrelu_6x320", "digits8"),
    ("digits8_prelu_6x224", "digits8"),
    ("digits8_lrelu_9x192", "digits8"),
    ("colour32_unet_lrelu_c12", "colour32"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3, help="training images per MLP")
    ap.add_argument("--n-unet", type=int, default=1, help="training images for the U-Net")
    ap.add_argument("--rel", type=float, default=1e-3, help="rank threshold / largest sv")
    args = ap.parse_args()
    out = {"rank_threshold": args.rel, "models": []}
    for model, data in MODELS:
        f = OnnxModel(ROOT / "models" / "onnx" / f"{model}.onnx", intra_op_threads=1)
        train = np.load(ROOT / "models" / "data" / f"{data}.npz")["train"]
        x = train[: args.n_unet if "unet" in model else args.n]
        h = draw_masks("random:0.5", f.sample_shape, len(x), seed=0)
        J = model_jacobian(f, x)
        sv = [np.linalg.svd(Jb, compute_uv=False) for Jb in J]
        out["models"].append(
            {
                "model": model,
                "n_values": int(J.shape[1]),
                "n_train": int(len(train)),
                "rank": [int((s > args.rel * s[0]).sum()) for s in sv],
                "largest_sv": [round(float(s[0]), 3) for s in sv],
                "median_sv": [round(float(np.median(s)), 4) for s in sv],
                "admm_radius": [round(float(r), 4) for r in pnp_admm_stability(f, x, h)],
            }
        )
        print(json.dumps(out["models"][-1]), flush=True)


if __name__ == "__main__":
    main()
