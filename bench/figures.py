"""CPU and wall time of the report's 18 example grids (``figure_examples``) in a fresh process.

18 grids of 6 faces25 training images (original / degraded / recovered / mask
rows, MSE captions), as ``refinv evaluate --figures`` writes for 3 masks x 3
methods x 2 splits; the time includes importing refinv.evaluation.report and
what the figures import (matplotlib). Run it on another checkout with
``PYTHONPATH=CHECKOUT python bench/figures.py``.
"""

from __future__ import annotations

import json
import tempfile
import time

c0, t0 = time.process_time(), time.perf_counter()
import numpy as np  # noqa: E402

from refinv.evaluation.report import figure_examples  # noqa: E402

MODELS = __import__("pathlib").Path(__file__).resolve().parents[1] / "models"

x = np.load(MODELS / "data" / "faces25.npz")["train"][:6]
h = (np.random.default_rng(0).random((6, 1, 25, 25)) < 0.5).astype(np.float32)
with tempfile.TemporaryDirectory() as t:
    for i in range(18):
        figure_examples(
            f"{t}/{i}.png", x=x, y=x * h, xhat=x, h_true=h, h_est=h if i % 3 == 0 else None,
            mse=[1e-9, 2e-5, None, 1, 1, 1], checkpoint="faces25_lrelu", mask="random:0.5",
            method="blind", split="train",
        )  # fmt: skip
print(json.dumps({"benchmark": "figures", "n_figures": 18,
                  "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0}))  # fmt: skip
