"""The refinv part of every snippet of docs/models_from_any_trainer.md runs on the committed
exporter fixture that the same export made (tests/fixtures/exporters): each python block
after a ``% fixture: FILE as NAME`` line, with NAME read as that fixture."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "models_from_any_trainer.md"
FIX = ROOT / "tests" / "fixtures" / "exporters"
SNIPPETS = re.findall(
    r"^% fixture: (\S+) as (\S+)\n\n```python\n(.*?)^```", PAGE.read_text(), flags=re.S | re.M
)


def test_every_exporter_has_a_tested_snippet():
    exporters = {f.split("_")[0] for f, _, _ in SNIPPETS}
    assert exporters >= {"torch13", "dynamo", "tf2onnx", "skl2onnx", "jax2onnx"}
    text = PAGE.read_text()
    assert "models_from_any_trainer" in (ROOT / "docs" / "index.md").read_text()
    assert "tests/" not in text and ".onnx.data" in text


@pytest.mark.parametrize(("fixture", "name", "code"), SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_snippet_runs_on_its_fixture(fixture, name, code, tmp_path, monkeypatch):
    shutil.copy(FIX / fixture, tmp_path / name)
    for data in FIX.glob(fixture + ".data"):  # external data: the name the export wrote inside
        shutil.copy(data, tmp_path / data.name)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"{PAGE.name}:{fixture}", "exec"), {})
    printed = out.getvalue()
    # the comments after print(...) say what it prints: check the ones that name shapes/kinds
    for line in code.splitlines():
        m = re.match(r"\s*print\((.*)\)\s*#\s*(\([^()]*\))", line)
        if m:
            assert m.group(2) in printed, (line, printed)
