"""`import refinv` and `refinv --help` stay light: no onnx (its import pulls ml_dtypes, ~1.5 s of
CPU) and never torch; onnx is imported only when a model is loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("onnx", "torch", "ml_dtypes", "matplotlib")


def _modules_after(code: str) -> list[str]:
    probe = (
        code
        + "\nimport json, sys\n"
        + f"print('MODS ' + json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("MODS ")][-1]
    return json.loads(line[5:])


def test_import_refinv_does_not_import_onnx_or_torch():
    assert _modules_after("import refinv") == []


def test_cli_help_does_not_import_onnx_or_torch():
    code = (
        "import contextlib, io, refinv.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as buf:\n"
        "    try:\n"
        "        refinv.cli.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'evaluate' in buf.getvalue()\n"
    )
    assert _modules_after(code) == []


def test_loading_a_model_imports_onnx_and_keeps_its_checks():
    code = (
        "import refinv.onnx.loading as L, refinv.onnx.model as M\n"
        "f = M.OnnxModel('models/onnx/digits8_lrelu_6x320.onnx')\n"
        "import onnx\n"
        "assert L.MAX_OPSET == onnx.defs.onnx_opset_version()\n"
        "assert L.FLOAT_TYPES[onnx.TensorProto.FLOAT] == f.dtype\n"
        "assert L.FLOAT_TYPES[onnx.TensorProto.DOUBLE].name == 'float64'\n"
        "assert L.FLOAT_TYPES[onnx.TensorProto.FLOAT16].name == 'float16'\n"
    )
    assert "onnx" in _modules_after(code)


def test_max_opset_readable_before_onnx_is_imported():
    code = (
        "from refinv.onnx.loading import MAX_OPSET\n"
        "import onnx\n"
        "assert MAX_OPSET == onnx.defs.onnx_opset_version()\n"
    )
    assert "onnx" in _modules_after(code)
