"""Copy the demo's model and data set into the package (``refinv/_data/``), so that a wheel
installed without a checkout can run ``refinv demo``.

    python models/package_demo.py

``refinv/_data/`` mirrors the layout of ``models/`` for these two files (``onnx/``, ``data/``)
and gets a ``MANIFEST.json`` with their records copied from ``models/MANIFEST.json``
(sha256 included). tests/test_package_data.py checks that the copies match. The full model
zoo stays in ``models/`` (about 40 MiB: too large for a wheel).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_DATA = HERE.parent / "refinv" / "_data"
DEMO_FILES = ("onnx/faces25_lrelu_6x256.onnx", "data/faces25.npz")


def main() -> None:
    files = json.loads((HERE / "MANIFEST.json").read_text())["files"]
    out = {}
    for rel in DEMO_FILES:
        dst = PACKAGE_DATA / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HERE / rel, dst)
        out[rel] = files[rel]
    man = {
        "about": "The demo's model and data set, copied from models/ of the refinv repository "
        "by models/package_demo.py; records as in models/MANIFEST.json (paths relative to "
        "this folder).",
        "files": out,
    }
    (PACKAGE_DATA / "MANIFEST.json").write_text(json.dumps(man, indent=1) + "\n")
    print(f"wrote {len(out)} files and MANIFEST.json to {PACKAGE_DATA}")


if __name__ == "__main__":
    main()
