"""Local stability of known-mask PnP-ADMM at the shipped MLPs' training images (JSON).

For each model and each rho: the spectral radius of the linearized ADMM step at
the first N training images (refinv.evaluation.stability), next to the
accurate-recovery rates `refinv evaluate` measures. Radius < 1: the image
attracts the iteration; > 1: it repels it (docs/theory/recovery.md).

    OPENBLAS_NUM_THREADS=1 python docs/experiments/recovery_stability.py [--n 20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from refinv import OnnxModel
from refinv.evaluation.stability import pnp_admm_stability
from refinv.operators.masks import draw_masks

ROOT = Path(__file__).resolve().parents[2]
MODELS = [
    ("faces25_lrelu_6x256", "faces25"),
    ("faces25_prelu_6x160", "faces25"),
    ("digits8_lrelu_6x320", "digits8"),
    ("digits8_prelu_6x224", "digits8"),
    ("digits8_lrelu_9x192", "digits8"),
    ("digits28_lrelu_6x256", "digits28"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="training images per model")
    ap.add_argument("--rho", default="0.05,0.2,0.5,2,10", help="comma-separated rho values")
    ap.add_argument("--mask", default="random:0.5")
    ap.add_argument("--models", default=None, help="comma-separated subset of the model names")
    args = ap.parse_args()
    rhos = [float(r) for r in args.rho.split(",")]
    out = {"mask": args.mask, "n": args.n, "seed": 0, "models": []}
    chosen = None if args.models is None else set(args.models.split(","))
    for model, data in MODELS:
        if chosen is not None and model not in chosen:
            continue
        f = OnnxModel(ROOT / "models" / "onnx" / f"{model}.onnx")
        x = np.load(ROOT / "models" / "data" / f"{data}.npz")["train"][: args.n]
        h = draw_masks(args.mask, f.sample_shape, len(x), seed=0)
        row = {"model": model, "rho": {}}
        for rho in rhos:
            r = pnp_admm_stability(f, x, h, rho=rho)
            row["rho"][str(rho)] = {
                "median_radius": round(float(np.median(r)), 4),
                "fraction_below_1": float(np.mean(r < 1)),
            }
        out["models"].append(row)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
