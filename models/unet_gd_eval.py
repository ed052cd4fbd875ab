"""Rows of the table "U-Nets trained by gradient descent alone" (models/README.md).

For each ONNX model: the row of models/conv_table.py (parameters, train and held-out MSE,
Jacobian rank at 3 training images, radius of the linearized known-mask PnP-ADMM at every
training image, and `refinv evaluate`'s blind / known-mask / AE-iterations accurate and
approximate rates on the training and held-out images, random:0.5 masks of seed 0), plus
the model-free control: scikit-image's biharmonic inpainting
(refinv.evaluation.control.biharmonic_inpaint) of the SAME degraded images with the true
mask, scored with the same thresholds (accurate MSE < 1e-7, approximate MSE < 5e-4).

    OPENBLAS_NUM_THREADS=1 python models/unet_gd_eval.py RUN/final.onnx [RUN/mse1e-4.onnx ...] \\
        --data models/data/colour16.npz --json models/logs/unet_gd/eval.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from conv_table import row

from refinv.evaluation.control import biharmonic_inpaint
from refinv.evaluation.report import degrade
from refinv.io import load_images
from refinv.operators.masks import parse_mask

ACCURATE, APPROXIMATE = 1e-7, 5e-4


def control(data: Path, sample_shape, masks: str, seed: int = 0) -> dict:
    """Accurate / approximate rates of biharmonic inpainting, train and held-out, with the
    masks and degraded images of `refinv evaluate` (refinv.evaluation.report.degrade)."""
    out = {}
    for split in ("train", "test"):
        x = load_images(data, split, sample_shape=sample_shape)
        y, mask = degrade(x, parse_mask(masks), seed=seed)
        xr = biharmonic_inpaint(y, mask)
        err = np.mean((xr - x.astype(np.float64)) ** 2, axis=tuple(range(1, x.ndim)))
        out[split] = [float(np.mean(err < ACCURATE)), float(np.mean(err < APPROXIMATE))]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--masks", default="random:0.5")
    ap.add_argument("--radius-images", type=int, default=None, help="default: all")
    ap.add_argument("--json", type=Path, default=None, help="append the JSON lines here")
    a = ap.parse_args(argv)
    for p in a.models:
        r = row(p, a.data, a.masks, 3, a.radius_images)
        with np.load(a.data, allow_pickle=False) as z:
            shape = tuple(z["train"].shape[1:])
        r["control_biharmonic"] = control(a.data, shape, a.masks)
        print(json.dumps(r), flush=True)
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            with open(a.json, "a") as fh:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
