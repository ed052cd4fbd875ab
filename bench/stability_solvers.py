"""Dense vs matrix-free (ARPACK) local-stability radii on shipped autoencoders: agreement and
CPU time (what `refinv stability --method auto` chooses by). Prints JSON.

    OPENBLAS_NUM_THREADS=1 python bench/stability_solvers.py [--n 20] [--rho 0.2,0.5,2]

For each model: the first N training images, masks random:0.5 drawn as `refinv evaluate`
draws them (seed 0), and for each rho the radii by both eigensolvers (ARPACK at tol 1e-3,
the audit's, and 1e-6, the default), with the CPU seconds of each (time.process_time) and
the agreement: median / max relative difference and how many verdicts (radius < 1) agree.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from refinv import OnnxModel
from refinv.evaluation.report import degrade
from refinv.evaluation.stability import pnp_admm_stability
from refinv.io import load_images
from refinv.operators.masks import parse_mask

ROOT = Path(__file__).resolve().parents[1] / "models"
MODELS = {
    "faces25_lrelu_6x256": ("onnx/faces25_lrelu_6x256.onnx", "data/faces25.npz"),
    "digits8_lrelu_6x320": ("onnx/digits8_lrelu_6x320.onnx", "data/digits8.npz"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--rho", default="0.2,0.5,2")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    rhos = [float(r) for r in args.rho.split(",")]
    out = []
    for name in args.models.split(","):
        model, data = MODELS[name]
        f = OnnxModel(ROOT / model)
        x = load_images(ROOT / data, "train", sample_shape=f.sample_shape)
        _, masks = degrade(x, parse_mask("random:0.5"), seed=0)
        x, masks = x[: args.n], masks[: args.n]
        for rho in rhos:
            row = {"model": name, "values": int(np.prod(x.shape[1:])), "n": len(x), "rho": rho}
            radii = {}
            for label, kw in (("dense", {"method": "dense", "max_dim": 4096}),
                              ("arnoldi_tol1e-3", {"method": "arnoldi", "tol": 1e-3}),
                              ("arnoldi_tol1e-6", {"method": "arnoldi", "tol": 1e-6})):  # fmt: skip
                c0 = time.process_time()
                radii[label] = pnp_admm_stability(f, x, masks, rho=rho, **kw)
                row[f"cpu_s_{label}"] = round(time.process_time() - c0, 3)
            d = radii["dense"]
            for label in ("arnoldi_tol1e-3", "arnoldi_tol1e-6"):
                rel = np.abs(radii[label] - d) / d
                row[f"median_rel_diff_{label}"] = float(np.median(rel))
                row[f"max_rel_diff_{label}"] = float(rel.max())
                row[f"verdicts_equal_{label}"] = int(np.sum((radii[label] < 1) == (d < 1)))
            row["below_1_dense"] = int(np.sum(d < 1))
            out.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps({"bench": "stability_solvers", "rows": out}))


if __name__ == "__main__":
    main()
