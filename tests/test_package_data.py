"""The demo's model and data set ship inside the package (refinv/_data), identical to models/,
and refinv demo uses them when there is no checkout (tested for a real wheel in .ci/run)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import refinv
from refinv.cli import demo as demo_mod
from refinv.cli import main

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "refinv" / "_data"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_packaged_copies_match_models_and_manifest():
    packaged = json.loads((PKG / "MANIFEST.json").read_text())["files"]
    assert sorted(packaged) == ["data/faces25.npz", "onnx/faces25_lrelu_6x256.onnx"]
    assert demo_mod.DEMO_MODELS[0] in packaged  # the demo's first choice is packaged
    models = ROOT / "models"
    zoo = json.loads((models / "MANIFEST.json").read_text())["files"]
    for rel, rec in packaged.items():
        assert _sha(PKG / rel) == rec["sha256"] == zoo[rel]["sha256"]  # rerun package_demo.py
        assert _sha(models / rel) == rec["sha256"]


def test_package_data_declared_in_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    for pattern in ("_data/MANIFEST.json", "_data/onnx/*.onnx", "_data/data/*.npz"):
        assert f'"{pattern}"' in text


def test_demo_without_checkout_uses_the_packaged_copy(monkeypatch, tmp_path, capsys):
    fake = tmp_path / "site-packages" / "refinv" / "__init__.py"  # no models/ next to it
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(refinv, "__file__", str(fake))
    assert demo_mod.default_models_dir() == PKG
    monkeypatch.chdir(tmp_path)
    rc = main(["demo", "--max-iter", "2", "--inner-iter", "2", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert str(PKG / "onnx" / "faces25_lrelu_6x256.onnx") in out


def test_checkout_models_preferred_when_present():
    if not (ROOT / "models" / "MANIFEST.json").is_file():
        pytest.skip("no checkout models/")
    assert demo_mod.default_models_dir() == ROOT / "models"
