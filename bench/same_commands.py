"""Same per-image results from every command before and after a change, compared bit for bit.

Runs, with refinv imported from a given checkout, the commands whose results the engine
(plan, executor, store) computes, on the shipped faces autoencoder and data:

* ``evaluate``: ``refinv evaluate`` (3 masks x 3 methods x 2 splits, default solver
  settings, the CLI's chunked path), ``--json``;
* ``library``: :func:`refinv.evaluation.report.memorization_report` on the same arrays (the
  one-batch path), as JSON;
* ``sweep``: ``refinv sweep docs/examples/sweep_faces.toml`` (4 checkpoints x 2 masks x 3
  methods x 2 splits, shards of 50) then ``refinv report --json``;
* ``audit``: ``refinv audit`` on the faces model (``report.json`` and ``per_image.csv``),
  when the checkout has the command.

Then compares two such folders: every per-image list of every run (``mse``, ``psnr``,
``iterations``, ``converged``, ``diverged``, ``residual``) and every other field, except
the ones that are times or describe the run itself (``created_utc``, ``provenance``,
``seconds``, ``onnx_seconds``, ``timing``, ``settings.database``). JSON numbers are
written with Python's shortest round-trip repr, so equal parsed floats are equal bits.

    python bench/same_commands.py run OUT_BASE --checkout /path/to/base/checkout
    python bench/same_commands.py run OUT_NEW
    python bench/same_commands.py compare OUT_BASE OUT_NEW

An editable install of refinv is found before ``PYTHONPATH``: ``--checkout`` puts the
checkout first on ``sys.path`` and removes the editable finder from ``sys.meta_path`` in
each command's process. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "onnx" / "faces25_lrelu_6x256.onnx"
DATA = ROOT / "models" / "data" / "faces25.npz"
MASKS = "random:0.5,center:9,rows:2"
METHODS = "blind,known,ae-iterations"

_PRELUDE = (
    "import sys\n"
    "root = {root!r}\n"
    "if root:\n"
    "    sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
    "    sys.path.insert(0, root)\n"
    "import refinv\n"
    "print('refinv from', refinv.__file__, file=sys.stderr)\n"
)
_CLI = "from refinv.cli import main\nsys.exit(main({argv!r}))\n"
_LIBRARY = """
import json, numpy as np
from refinv.io import load_images
from refinv.onnx import OnnxModel
from refinv.evaluation.report import memorization_report
f = OnnxModel({model!r})
tr, te = (load_images({data!r}, k, sample_shape=f.sample_shape) for k in ("train", "test"))
doc = memorization_report([("faces25_lrelu_6x256", f)], tr, te, masks={masks!r},
                          methods={methods!r}, progress=False)
open({out!r}, "w").write(json.dumps(doc, indent=1))
"""


def _python(code: str, checkout: str | None, log: Path) -> float:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", REFINV_NO_PROGRESS="1")
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        subprocess.run([sys.executable, "-c", _PRELUDE.format(root=checkout or "") + code],
                       check=True, env=env, cwd=ROOT, stdout=fh, stderr=fh)  # fmt: skip
    return time.perf_counter() - t0


def run(out: Path, checkout: str | None, commands: list[str], workers: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    data = f"{DATA}"
    seconds = {}
    if "evaluate" in commands:
        argv = ["evaluate", str(MODEL), "--train", f"{data}:train", "--test", f"{data}:test",
                "--masks", MASKS, "--methods", METHODS, "--json", str(out / "evaluate.json"),
                "--quiet"]  # fmt: skip
        seconds["evaluate"] = _python(_CLI.format(argv=argv), checkout, log)
    if "library" in commands:
        code = _LIBRARY.format(model=str(MODEL), data=data, masks=MASKS.split(","),
                               methods=METHODS.split(","), out=str(out / "library.json"))  # fmt: skip
        seconds["library"] = _python(code, checkout, log)
    if "sweep" in commands:
        db = out / "sweep.sqlite"
        cfg = str(ROOT / "docs" / "examples" / "sweep_faces.toml")
        argv = ["sweep", cfg, "--db", str(db), "--workers", str(workers), "--quiet"]
        seconds["sweep"] = _python(_CLI.format(argv=argv), checkout, log)
        argv = ["report", str(db), "--json", str(out / "report.json")]
        seconds["report"] = _python(_CLI.format(argv=argv), checkout, log)
    if "audit" in commands:
        argv = ["audit", str(MODEL), "--train", f"{data}:train", "--test", f"{data}:test",
                "--out", str(out / "audit"), "--quiet"]  # fmt: skip
        seconds["audit"] = _python(_CLI.format(argv=argv), checkout, log)
    return {"out": str(out), "checkout": checkout or "this one", "seconds": seconds}


# ------------------------------------------------------------------ comparing
_VOLATILE = {"created_utc", "provenance", "seconds", "onnx_seconds", "timing", "database"}
PER_IMAGE = ("mse", "psnr", "iterations", "converged", "diverged", "residual")


def _diff(a, b, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in _VOLATILE:
                continue
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'new' if k in b else 'base'}")
            else:
                _diff(a[k], b[k], f"{path}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _diff(x, y, f"{path}[{i}]", out)
    elif a != b or type(a) is not type(b):
        out.append(f"{path}: {a!r} != {b!r}")


def _runs(doc: dict) -> list[dict]:
    return doc.get("runs") or doc.get("recovery", {}).get("runs", [])


def compare_docs(a: dict, b: dict) -> dict:
    """Per-image lists and every other field of two documents (volatile fields left out)."""
    ra, rb = _runs(a), _runs(b)
    per_image = {"runs": len(ra), "values": 0, "differ": []}
    for x, y in zip(ra, rb, strict=False):
        for k in PER_IMAGE:
            per_image["values"] += len(x.get(k, []))
            if x.get(k) != y.get(k):
                per_image["differ"].append(f"{x['checkpoint']}/{x['mask']}/{x['method']}/"
                                           f"{x['split']}: {k}")  # fmt: skip
    if len(ra) != len(rb):
        per_image["differ"].append(f"{len(ra)} runs != {len(rb)} runs")
    fields: list[str] = []
    _diff(a, b, "", fields)
    return {"per_image": per_image, "per_image_identical": not per_image["differ"],
            "fields_differ": fields[:40], "n_fields_differ": len(fields)}  # fmt: skip


def compare(base: Path, new: Path) -> dict:
    out = {}
    for name in ("evaluate.json", "library.json", "report.json", "audit/report.json"):
        if (base / name).is_file() and (new / name).is_file():
            out[name] = compare_docs(json.loads((base / name).read_text()),
                                     json.loads((new / name).read_text()))  # fmt: skip
    csv = "audit/per_image.csv"
    if (base / csv).is_file() and (new / csv).is_file():
        out[csv] = {"identical": (base / csv).read_bytes() == (new / csv).read_bytes()}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--checkout", default=None, help="import refinv from this checkout")
    r.add_argument("--commands", default="evaluate,library,sweep,audit")
    r.add_argument("--workers", type=int, default=1, help="sweep workers")
    c = sub.add_parser("compare")
    c.add_argument("base", type=Path)
    c.add_argument("new", type=Path)
    a = ap.parse_args()
    if a.cmd == "run":
        res = run(a.out, a.checkout, a.commands.split(","), a.workers)
    else:
        res = compare(a.base, a.new)
    print(json.dumps(res, indent=1))
