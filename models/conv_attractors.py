"""Attractor fraction of the conv autoencoders (manifest fields), without torch.

For each ``colour16_convae`` entry of MANIFEST.json: the Jacobian of the ONNX model at every
training image by central differences through onnxruntime
(refinv.evaluation.stability.model_jacobian, eps 1e-3), its spectral radius, and the
fraction of images where it is < 1. Writes ``attractor_fraction``,
``jacobian_spectral_radius`` and ``attractor_method`` into the manifest.

    OPENBLAS_NUM_THREADS=1 python models/conv_attractors.py [NAME_PART ...]

NAME_PART (default ``colour16_convae``): the entries whose path contains one of them, e.g.
``colour16_unet`` for the gradient-trained U-Net.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from refinv import OnnxModel
from refinv.evaluation.stability import model_jacobian

HERE = Path(__file__).resolve().parent


def main(argv=None) -> None:
    parts = (sys.argv[1:] if argv is None else argv) or ["colour16_convae"]
    man_path = HERE / "MANIFEST.json"
    man = json.loads(man_path.read_text())
    for rel, rec in man["files"].items():
        if rec.get("kind") != "autoencoder" or not any(p in rel for p in parts):
            continue
        f = OnnxModel(HERE / rel, intra_op_threads=1)
        with np.load(HERE / rec["dataset"], allow_pickle=False) as z:
            x = z["train"][: rec["n_train"]]
        radii = [float(np.abs(np.linalg.eigvals(J)).max()) for J in model_jacobian(f, x)]
        rec["jacobian_spectral_radius"] = [round(r, 6) for r in radii]
        rec["attractor_fraction"] = float(np.mean(np.asarray(radii) < 1.0))
        rec["attractor_method"] = (
            "largest |eigenvalue| of the central-difference Jacobian through onnxruntime "
            "(refinv.evaluation.stability.model_jacobian, eps 1e-3), models/conv_attractors.py"
        )
        print(rel, rec["attractor_fraction"], round(float(np.median(radii)), 3), flush=True)
    tmp = man_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(man, indent=1) + "\n")
    tmp.replace(man_path)


if __name__ == "__main__":
    main()
