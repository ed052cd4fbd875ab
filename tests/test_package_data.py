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


def test_zoo_model_without_checkout_says_where_the_zoo_is(monkeypatch, tmp_path, capsys):
    """`refinv demo --model colour16...` from a wheel: the error says the zoo lives in the
    repository and names the --models-dir / checkout route."""
    fake = tmp_path / "site-packages" / "refinv" / "__init__.py"
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(refinv, "__file__", str(fake))
    assert main(["demo", "--model", "colour16_convae_lrelu_c4"]) == 2
    err = capsys.readouterr().err
    assert "--model 'colour16_convae_lrelu_c4': not in" in err
    assert "the model zoo lives in the refinv repository's models/" in err
    assert "--models-dir CHECKOUT/models" in err


def test_demo_files_are_the_packaged_copies():
    model, data = refinv.demo_files()
    assert model == PKG / "onnx" / "faces25_lrelu_6x256.onnx" and model.is_file()
    assert data == PKG / "data" / "faces25.npz" and data.is_file()


def test_demo_reads_a_manifest_dataset_with_a_comment(capsys):
    """The tied model's dataset field is "data/digits8.npz (flattened to (N, 64))": the
    path is its first word (it was read whole: a false 'dataset is missing')."""
    if not (ROOT / "models" / "MANIFEST.json").is_file():
        pytest.skip("no checkout models/")
    assert demo_mod.manifest_dataset("data/digits8.npz (flattened to (N, 64))") == (
        "data/digits8.npz"
    )
    model, data = demo_mod._find(ROOT / "models", "tied_digits8_lrelu_k128")
    assert data == ROOT / "models" / "data" / "digits8.npz"
    rc = main(["demo", "--model", "tied_digits8_lrelu_k128", "--max-iter", "2", "-q"])
    assert rc == 0 and "tied_digits8_lrelu_k128" in capsys.readouterr().out
