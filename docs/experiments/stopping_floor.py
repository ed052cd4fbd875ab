"""The floating-point floor of the recovery iterations: where the relative change stops falling.

For each model, blind and known-mask recovery of the training images (``random:0.5``
masks of seed 0, as ``refinv evaluate`` draws them) run the full budget (``tol=0``,
100 outer x 10 inner iterations) with the relative change of every outer iteration
recorded. On every image recovered accurately (final MSE < 1e-7) the floor is the median
relative change over the last 20 outer iterations. Prints
JSON lines (one per model): the floors' median, 90th and 99th percentile and maximum,
also in units of the data's machine epsilon. docs/theory/recovery.md ("Stopping")
quotes them; the floor bound of ``tol="auto"`` (1024 eps) must sit above them.

    OPENBLAS_NUM_THREADS=1 python docs/experiments/stopping_floor.py [MODEL ...]
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

from refinv.evaluation.report import degrade
from refinv.io import load_images
from refinv.onnx import OnnxModel
from refinv.operators.masks import parse_mask
from refinv.solvers.recovery import blind_recovery, known_mask_recovery

MODELS = Path(__file__).resolve().parents[2] / "models"
DEFAULT = (
    "faces25_lrelu_6x256",
    "faces25_prelu_6x160",
    "digits28_lrelu_6x256",
    "digits28_lrelu_20L128",
    "colour16_convae_lrelu_c4",
)


def floors(name: str) -> dict:
    man = json.loads((MODELS / "MANIFEST.json").read_text())["files"][f"onnx/{name}.onnx"]
    f = OnnxModel(MODELS / "onnx" / f"{name}.onnx", intra_op_threads=1)
    x = load_images(MODELS / man["dataset"].split()[0], "train", sample_shape=f.sample_shape)
    y, mask = degrade(x, parse_mask("random:0.5"), seed=0)
    out = []
    for solve in (
        lambda: blind_recovery(f, y, tol=0.0, rng=np.random.default_rng([0, 1]),
                               record_history=True, blowup=float("inf")),
        lambda: known_mask_recovery(f, y, mask, tol=0.0, record_history=True,
                                    blowup=float("inf")),
    ):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = solve()
        mse = np.mean((np.asarray(res.x, np.float64) - x).reshape(len(x), -1) ** 2, axis=1)
        last = res.history[-20:]  # (20, n): the relative change of the last 20 iterations
        ok = mse < 1e-7
        for i in np.flatnonzero(ok):
            out.append(float(np.median(last[:, i])))
    eps = float(np.finfo(np.float32).eps)
    v = np.asarray(out)
    if not v.size:
        return {"model": name, "n": 0}
    q = {"median": np.median(v), "p90": np.percentile(v, 90), "p99": np.percentile(v, 99),
         "max": v.max()}  # fmt: skip
    return {"model": name, "n": int(v.size), **{k: float(s) for k, s in q.items()},
            **{f"{k}_eps": float(s / eps) for k, s in q.items()}}  # fmt: skip


if __name__ == "__main__":
    for name in sys.argv[1:] or DEFAULT:
        print(json.dumps(floors(name)), flush=True)
