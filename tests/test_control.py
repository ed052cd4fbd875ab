"""The model-free control beside every rate: one implementation (refinv.evaluation.control)
shared by ``memorization_report`` / ``refinv evaluate`` and the audit."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from test_recovery import np_linear, onnx_ae, projection

import refinv.evaluation.control as control_mod
from refinv.cli import main
from refinv.errors import ConfigError
from refinv.evaluation.chunked import NpzImages
from refinv.evaluation.control import biharmonic_inpaint, control_run
from refinv.evaluation.metrics import APPROXIMATE_MSE
from refinv.evaluation.report import (
    degrade,
    figure_examples,
    format_table,
    memorization_report,
    recovery_metrics,
)
from refinv.operators.masks import parse_mask

pytest.importorskip("skimage")


def _smooth(n, shape=(1, 10, 12), seed=0):
    """Smooth images (low-order polynomials): the inpainter recovers them approximately."""
    rng = np.random.default_rng(seed)
    i, j = np.mgrid[0 : shape[1], 0 : shape[2]] / max(shape[1:])
    out = np.empty((n, *shape))
    for k in range(n):
        a = rng.uniform(-0.3, 0.3, 4)
        for c in range(shape[0]):
            out[k, c] = 0.5 + a[0] * i + a[1] * j + a[2] * i * j + 0.1 * c * a[3]
    return np.clip(out, 0.0, 1.0)


@pytest.mark.parametrize("mask", ["random:0.5", "center:4", "rows:2"])
def test_control_inpaints_the_reports_degraded_images(mask):
    """The control's per-image PSNR is biharmonic inpainting of exactly the images and masks
    that ``degrade`` (the report's runs) produces for that seed; another seed differs."""
    x = np.random.default_rng(1).random((6, 3, 8, 9))
    spec = parse_mask(mask)
    entry, first = control_run(x, spec, split="test", seed=4, n_keep=2)
    y, m = degrade(x, spec, seed=4)
    want = recovery_metrics(x, biharmonic_inpaint(y, m))
    np.testing.assert_allclose(entry["psnr"], want["psnr"], rtol=0, atol=1e-9)
    assert entry["mask"] == mask and entry["split"] == "test" and entry["n"] == 6
    assert entry["approximate_rate"] == float(np.mean(want["mse"] < APPROXIMATE_MSE))
    np.testing.assert_allclose(first, biharmonic_inpaint(y, m)[:2], atol=1e-6)
    if spec.random:
        other, _ = control_run(x, spec, seed=5)
        assert other["psnr"] != entry["psnr"]


def test_control_observed_pixels_are_kept():
    """Biharmonic inpainting only fills the hole: observed pixels come back unchanged."""
    x = np.random.default_rng(2).random((3, 3, 7, 7))
    spec = parse_mask("random:0.6")
    y, m = degrade(x, spec, seed=0)
    out = biharmonic_inpaint(y, m)
    obs = np.broadcast_to(m[:, None], x.shape)
    np.testing.assert_allclose(out[obs], x[obs], atol=1e-12)
    assert np.abs(out[~obs] - x[~obs]).max() > 1e-3  # random images are not recovered


def test_control_chunked_equals_whole(tmp_path):
    x = np.random.default_rng(3).random((7, 1, 6, 6)).astype(np.float32)
    spec = parse_mask("random:0.4")
    whole, _ = control_run(x, spec, seed=2)
    np.savez(tmp_path / "d.npz", train=x)
    for chunk in (1, 3):
        imgs = NpzImages(tmp_path / "d.npz", "train", sample_shape=(1, 6, 6))
        part, _ = control_run(imgs, spec, seed=2, chunk=chunk)
        assert part["psnr"] == whole["psnr"]


def test_report_puts_the_control_beside_every_rate(tmp_path):
    """A linear map that memorized 4 random training images: exact recovery of training
    images only, far above the control (random images cannot be inpainted); smooth held-out
    images: the control recovers them approximately, the model does not (not in its span)."""
    rng = np.random.default_rng(0)
    train = rng.random((4, 1, 10, 12))
    test = _smooth(4)
    f = np_linear(projection(train), (1, 10, 12))
    doc = memorization_report(
        f, train, test, masks=["random:0.5", "center:4"], methods=["known"],
        solver={"max_iter": 300}, control=True, figures_dir=tmp_path,
    )  # fmt: skip
    ctl = {(c["mask"], c["split"]): c for c in doc["control"]["runs"]}
    assert set(ctl) == {(m, s) for m in ("random:0.5", "center:4") for s in ("train", "test")}
    assert doc["control"]["method"] == control_mod.CONTROL_METHOD
    for r in doc["runs"]:
        c = ctl[(r["mask"], r["split"])]
        assert c["n"] == r["n"]
        if r["split"] == "train":
            assert r["accurate_rate"] == 1.0 and c["approximate_rate"] == 0.0
    assert ctl[("random:0.5", "test")]["approximate_rate"] == 1.0
    table = format_table(doc)
    assert "ctl" in table.splitlines()[1] and "biharmonic" in table
    row = next(line for line in table.splitlines() if line.startswith("random:0.5"))
    cells = row.split("|")[2].split()  # held-out: acc ctl approx ctl PSNR ctl iters
    assert cells[3] == "100.0%" and float(cells[5]) == pytest.approx(
        ctl[("random:0.5", "test")]["mean_psnr"], abs=0.05
    )
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 4
    # the examples gained a "control (no model)" row: taller than without it
    d = dict(x=train[:2], y=train[:2], xhat=train[:2], h_true=np.ones((2, 10, 12)))
    a = figure_examples(tmp_path / "a.png", **d)
    b = figure_examples(tmp_path / "b.png", **d, x_control=train[:2], mse_control=[0.1, 0.2])
    assert _png_height(b) > _png_height(a)


def _png_height(path) -> int:
    return int.from_bytes(path.read_bytes()[20:24], "big")


def test_control_off_and_missing_scikit_image(monkeypatch):
    rng = np.random.default_rng(0)
    train, test = rng.random((3, 1, 5, 5)), rng.random((3, 1, 5, 5))
    f = np_linear(projection(train), (1, 5, 5))
    kw = dict(masks=["rows:2"], methods=["ae-iterations"], solver={"max_iter": 5})
    off = memorization_report(f, train, test, control=False, **kw)
    assert off["control"] is None and "ctl" not in format_table(off)
    monkeypatch.setattr(control_mod, "control_available", lambda: False)
    assert memorization_report(f, train, test, **kw)["control"] is None  # default: off
    with pytest.raises(ConfigError, match=r"refinv\[audit\].*--no-control"):
        memorization_report(f, train, test, control=True, **kw)


def test_evaluate_cli_control(tmp_path, capsys):
    from refinv.schemas import validate

    rng = np.random.default_rng(0)
    train = rng.random((4, 1, 6, 7))
    onnx.save(onnx_ae([(projection(train), np.zeros(42), False)], (1, 6, 7)), tmp_path / "a.onnx")
    np.savez(tmp_path / "d.npz", train=train.astype(np.float32), test=_smooth(3, (1, 6, 7)))
    base = ["evaluate", str(tmp_path / "a.onnx"), "--train", f"{tmp_path / 'd.npz'}:train",
            "--test", f"{tmp_path / 'd.npz'}:test", "--methods", "known", "--max-iter", "50",
            "--quiet"]  # fmt: skip
    assert main([*base, "--json", str(tmp_path / "on.json")]) == 0
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "on.json").read_text())
    validate(doc)  # the control block (schema version 2 on; 3: stop_reason)
    assert doc["schema_version"] == 3 and len(doc["control"]["runs"]) == 2
    assert "ctl" in out and "biharmonic" in out
    assert main([*base, "--no-control", "--json", str(tmp_path / "off.json")]) == 0
    out = capsys.readouterr().out
    off = json.loads((tmp_path / "off.json").read_text())
    validate(off)
    assert off["control"] is None
    assert "ctl" not in out
