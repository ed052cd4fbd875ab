"""Inputs for the ``refinv invert`` and ``refinv bregman`` examples of docs/cli.md (no torch).

    python models/make_cli_examples.py

* ``data/digits28_gen_fc_invert.npz``: ``z`` = the first 8 held-out latent codes of
  ``latents/digits28_gen_fc_20-128-392-784_codes.npz`` (``z_test``) and ``y`` = the
  decoder ``onnx/digits28_gen_fc_20-128-392-784_decoder.onnx`` applied to them (its
  ONNX forward pass through onnxruntime, float32), shape (8, 1, 28, 28): what
  ``refinv invert`` reads (``y`` observations, ``z`` true latents).
* ``data/digits28_plugin_invert.npz``: the same for the PLUGIn decoder
  ``onnx/digits28_plugin_20-500-500-784_decoder.onnx`` (the ``refinv invert --method plugin``
  example): ``z`` its first 8 held-out codes
  (``latents/digits28_plugin_20-500-500-784_codes.npz``), ``y`` the decoder's output.
* ``data/digits28_bregman_fc_codes.npz``: ``x`` = the first 8 held-out images of
  ``data/digits28.npz`` and ``y`` = the encoder
  ``onnx/digits28_bregman_fc_code100_encoder.onnx`` applied to them, shape (8, 100):
  what ``refinv bregman`` reads (``y`` codes, ``x`` ground truth).

Both are registered in MANIFEST.json (``_common.update_manifest``: sha256, size).
"""

from __future__ import annotations

import numpy as np
from _common import DATA, HERE, ort_run, update_manifest

N = 8


def _save(path, **arrays):
    np.savez(path, **arrays)  # uncompressed, no pickles (object arrays are refused on load)


def main() -> None:
    entries = {}
    for name, arch in (("gen_fc", "gen_fc_20-128-392-784"), ("plugin", "plugin_20-500-500-784")):
        dec = HERE / "onnx" / f"digits28_{arch}_decoder.onnx"
        with np.load(HERE / "latents" / f"digits28_{arch}_codes.npz", allow_pickle=False) as z:
            codes = np.ascontiguousarray(z["z_test"][:N], dtype=np.float32)
        y = ort_run(dec, codes, in_name="z").astype(np.float32)
        out = DATA / f"digits28_{name}_invert.npz"
        _save(out, y=y, z=codes)
        entries[f"data/digits28_{name}_invert.npz"] = {
            "kind": "cli-example",
            "keys": ["y", "z"],
            "shapes": {"y": list(y.shape), "z": list(codes.shape)},
            "dtype": "float32",
            "source": f"z: first {N} rows of latents/digits28_{arch}_codes.npz "
            f"(z_test, held-out codes); y: onnx/digits28_{arch}_decoder.onnx(z) "
            "through onnxruntime (CPUExecutionProvider, float32)",
            "used_by": f"docs/cli.md, refinv invert example ({name})",
            "script": "models/make_cli_examples.py",
            "format": "np.savez (uncompressed, no pickles); load with allow_pickle=False",
        }
    enc = HERE / "onnx" / "digits28_bregman_fc_code100_encoder.onnx"
    with np.load(DATA / "digits28.npz", allow_pickle=False) as d:
        x = np.ascontiguousarray(d["test"][:N], dtype=np.float32)
    codes = ort_run(enc, x).astype(np.float32)
    out = DATA / "digits28_bregman_fc_codes.npz"
    _save(out, y=codes, x=x)
    entries["data/digits28_bregman_fc_codes.npz"] = {
        "kind": "cli-example",
        "keys": ["y", "x"],
        "shapes": {"y": list(codes.shape), "x": list(x.shape)},
        "dtype": "float32",
        "source": f"x: first {N} held-out images of data/digits28.npz (test); y: "
        "onnx/digits28_bregman_fc_code100_encoder.onnx(x) through onnxruntime "
        "(CPUExecutionProvider, float32)",
        "used_by": "docs/cli.md, refinv bregman example",
        "script": "models/make_cli_examples.py",
        "format": "np.savez (uncompressed, no pickles); load with allow_pickle=False",
    }
    update_manifest(entries)
    for k in entries:
        print("wrote", k)


if __name__ == "__main__":
    main()
