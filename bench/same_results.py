"""Same results before and after a change: save every output of fixed recoveries, compare bits.

Runs blind (Bernoulli initial mask, seed 0), known-mask and AE-iterations recovery with the
library defaults (per-sample stopping on) on 10 faces25 training images (MLP, 100 outer
iterations) and 2 colour32 images (U-Net: 4-D samples, eq. 20 sums over channels; 3 outer
iterations), ``random:0.5`` masks (seed 0), and saves ``x``, ``iterations``, ``residual``
and every state field. Run it once per checkout and compare::

    PYTHONPATH=OLD_CHECKOUT python bench/same_results.py save /tmp/old.npz
    python bench/same_results.py save /tmp/new.npz
    python bench/same_results.py compare /tmp/old.npz /tmp/new.npz

Prints JSON (which checkout ran; for ``compare``: the arrays that differ, if any).
"""

from __future__ import annotations

import json
import sys
import warnings

import common  # noqa: F401  (pins BLAS threads through the environment)
import numpy as np
from common import MODELS

CASES = (("faces25_lrelu_6x256", "faces25", 10, 100), ("colour32_unet_lrelu_c12", "colour32", 2, 3))


def save(path: str) -> dict:
    import refinv
    from refinv.io import load_images
    from refinv.onnx import OnnxModel
    from refinv.operators.masks import draw_masks, erase
    from refinv.solvers.recovery import ae_iterations, blind_recovery, known_mask_recovery

    out = {}
    for name, data, n, t in CASES:
        f = OnnxModel(MODELS / "onnx" / f"{name}.onnx", intra_op_threads=1)
        x = load_images(MODELS / "data" / f"{data}.npz", "train", sample_shape=f.sample_shape)
        x = x[:n]
        m = draw_masks("random:0.5", f.sample_shape, n, seed=0)
        y = erase(x, m)
        runs = {
            "blind": lambda f=f, y=y, t=t: blind_recovery(
                f, y, max_iter=t, mask_init="bernoulli", rng=0, progress=False
            ),
            "known": lambda f=f, y=y, m=m, t=t: known_mask_recovery(
                f, y, m, max_iter=t, progress=False
            ),
            "ae": lambda f=f, y=y, t=t: ae_iterations(f, y, max_iter=10 * t, progress=False),
        }
        for meth, run in runs.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = run()
            out[f"{name}/{meth}/x"] = np.asarray(r.x)
            out[f"{name}/{meth}/iterations"] = r.iterations
            out[f"{name}/{meth}/residual"] = r.residual
            for k, v in zip(r.state._fields, r.state, strict=True):
                if v is not None:
                    out[f"{name}/{meth}/state_{k}"] = np.asarray(v)
    np.savez(path, **out)
    return {"refinv": refinv.__file__, "arrays": len(out), "saved": path}


def compare(a_path: str, b_path: str) -> dict:
    a, b = np.load(a_path), np.load(b_path)
    differ = sorted(set(a.files) ^ set(b.files))
    for k in sorted(set(a.files) & set(b.files)):
        same = a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        if not (same and a[k].tobytes() == b[k].tobytes()):
            differ.append(k)
    return {"compared": len(a.files), "differ": differ, "bitwise_identical": not differ}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "save":
        print(json.dumps(save(sys.argv[2])))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        print(json.dumps(compare(sys.argv[2], sys.argv[3])))
    else:
        raise SystemExit(__doc__)
