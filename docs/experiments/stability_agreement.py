"""How often does the stability verdict (radius < 1) predict the actual recovery outcome? (JSON)

On one autoencoder and its training images, per mask x rho: the spectral radius of the
linearized known-mask PnP-ADMM at each image (refinv.evaluation.stability, dense
eigensolver) next to the outcome of known-mask and blind recovery
run exactly as `refinv evaluate` runs them (same masks, same seed, default solver settings
apart from rho). An image counts as recovered when its MSE is below 1e-7 (accurate
recovery); the verdict predicted it correctly when (radius < 1) == recovered.

    OPENBLAS_NUM_THREADS=1 nice -n 10 python docs/experiments/stability_agreement.py \\
        [--model models/onnx/faces25_lrelu_6x256.onnx] [--data models/data/faces25.npz:train] \\
        [--masks random:0.5,center:9] [--rho 0.5,1,2] [--n 100]

The defaults took 117 s of CPU (one thread) and print the table of docs/theory/recovery.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from refinv import OnnxModel
from refinv.evaluation.metrics import ACCURATE_MSE
from refinv.evaluation.report import evaluate_split
from refinv.evaluation.stability import pnp_admm_stability
from refinv.io import load_images_for, parse_data_spec
from refinv.operators.masks import parse_mask

ROOT = Path(__file__).resolve().parents[2]


def _outcome(radius: np.ndarray, mse: list, method: str) -> dict:
    m = np.array([np.inf if v is None else v for v in mse])
    ok = m < ACCURATE_MSE
    stable = radius < 1
    wrong = np.flatnonzero(stable != ok)
    return {
        "recovered": int(ok.sum()),
        "predicted_correctly": int((stable == ok).sum()),
        "radius_above_1_but_recovered": int((~stable & ok).sum()),
        "radius_below_1_but_not_recovered": int((stable & ~ok).sum()),
        "mispredicted": [
            {"image": int(i), "radius": round(float(radius[i]), 4), "mse": float(m[i])}
            for i in wrong
        ],
        "method": method,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/onnx/faces25_lrelu_6x256.onnx"))
    ap.add_argument("--data", default=str(ROOT / "models/data/faces25.npz") + ":train")
    ap.add_argument("--masks", default="random:0.5,center:9")
    ap.add_argument("--rho", default="0.5,1,2")
    ap.add_argument("--n", type=int, default=100, help="first N training images")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    f = OnnxModel(args.model, intra_op_threads=1)
    path, key = parse_data_spec(args.data, "train")
    x = load_images_for(f, path, key)[: args.n]
    rows = []
    for mtext in args.masks.split(","):
        spec = parse_mask(mtext)
        for rho in [float(r) for r in args.rho.split(",")]:
            row: dict = {"mask": spec.text, "rho": rho, "n": len(x)}
            for method in ("known", "blind"):
                entry, _, _, mask = evaluate_split(
                    f, x, spec, method, split=key, seed=args.seed,
                    solver={"rho": rho}, progress=False,
                )  # fmt: skip
                if method == "known":  # the masks are the same for both methods
                    radius = pnp_admm_stability(f, x, mask, rho=rho)
                    row["median_radius"] = round(float(np.median(radius)), 4)
                    row["radius_below_1"] = int((radius < 1).sum())
                row[method] = _outcome(radius, entry["mse"], method)
            rows.append(row)
    doc = {
        "model": str(Path(args.model).name),
        "data": f"{Path(path).name}:{key}",
        "seed": args.seed,
        "accurate_mse": ACCURATE_MSE,
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
