"""Metrics and the memorization report: values, schema, train/held-out contrast, tables, figures."""

from __future__ import annotations

import json
import math

import array_api_strict as xps
import numpy as np
import pytest
from test_recovery import np_linear, projection

from refinv.errors import ConfigError, ShapeError
from refinv.evaluation.metrics import ACCURATE_MSE, mse, psnr, psnr_from_mse
from refinv.evaluation.report import (
    SCHEMA_VERSION,
    figure_rate_vs_loss,
    format_loss_table,
    format_table,
    memorization_report,
    recovery_metrics,
)


def test_mse_psnr_values():
    ref = np.zeros((2, 1, 2, 2))
    x = ref.copy()
    x[0] += 0.1
    x[1, 0, 0, 0] = 0.5
    np.testing.assert_allclose(mse(x, ref), [0.01, 0.0625])
    np.testing.assert_allclose(psnr(x, ref), [20.0, -10 * math.log10(0.0625)])
    np.testing.assert_allclose(psnr(x * 255, ref, data_range=255.0), psnr(x, ref))
    assert np.isinf(psnr(ref, ref)).all()
    with np.errstate(all="raise"):  # no log10(0) warning
        psnr(ref, ref)
    assert np.isnan(psnr_from_mse(np.array([np.nan])))[0]
    with pytest.raises(ShapeError):
        mse(x, ref[:1])
    with pytest.raises(ConfigError):
        psnr(x, ref, data_range=0.0)
    xs, rs = xps.asarray(x), xps.asarray(ref)
    out = psnr(xs, rs)
    assert type(out) is type(xs) and out.shape == (2,)
    assert float(mse(xs, rs)[0]) == pytest.approx(0.01)
    # thresholds: MSE 1e-7 is 70 dB
    assert float(psnr_from_mse(np.array([ACCURATE_MSE]))[0]) == pytest.approx(70.0)


def test_recovery_metrics_clamps():
    x = np.zeros((4, 1, 2, 2))
    xh = x.copy()
    xh[1] = 1e-3
    xh[2] = 1e3
    xh[3] = np.nan
    met = recovery_metrics(x, xh)
    assert met["psnr"][0] == 200.0 and met["psnr"][1] == pytest.approx(60.0)
    assert met["psnr"][2] == 0.0 and met["psnr"][3] == 0.0
    assert np.isnan(met["mse"][3])


@pytest.fixture(scope="module")
def memorizer():
    """A linear 'autoencoder' that memorized its 4 training images (projection onto their
    span) and 4 held-out images it has never seen."""
    rng = np.random.default_rng(0)
    train = rng.random((4, 1, 6, 6))
    test = rng.random((4, 1, 6, 6))
    return np_linear(projection(train), (1, 6, 6)), train, test


def test_report_schema_and_contrast(memorizer, tmp_path):
    f, train, test = memorizer
    half = np_linear(0.5 * projection(train), (1, 6, 6))  # a worse checkpoint
    doc = memorization_report(
        [("final", f), ("early", half)],
        train,
        test,
        masks=["random:0.3", "center:2"],
        methods=["known", "ae-iterations", "blind"],
        solver={"max_iter": 400, "tol": 1e-12},
        progress=False,
    )
    assert doc["schema_version"] == SCHEMA_VERSION
    assert set(doc) >= {"thresholds", "settings", "checkpoints", "runs", "created_utc"}
    assert [c["label"] for c in doc["checkpoints"]] == ["final", "early"]
    assert doc["checkpoints"][0]["train_loss"] < 1e-25 < doc["checkpoints"][1]["train_loss"]
    assert len(doc["runs"]) == 2 * 2 * 3 * 2
    keys = {"accurate_rate", "approximate_rate", "mean_psnr", "n", "seconds", "mse", "psnr",
            "iterations", "converged", "diverged", "checkpoint", "method", "mask", "split"}  # fmt: skip
    for r in doc["runs"]:
        assert keys <= set(r)
        assert len(r["mse"]) == len(r["psnr"]) == len(r["iterations"]) == r["n"] == 4
        assert 0 <= r["accurate_rate"] <= r["approximate_rate"] <= 1

    def run(ck, mask, method, split):
        (r,) = [
            r
            for r in doc["runs"]
            if (r["checkpoint"], r["mask"], r["method"], r["split"]) == (ck, mask, method, split)
        ]
        return r

    # the memorization contrast: known-mask recovers the training images, not the held-out
    assert run("final", "random:0.3", "known", "train")["accurate_rate"] == 1.0
    assert run("final", "random:0.3", "known", "test")["accurate_rate"] == 0.0
    assert run("final", "random:0.3", "known", "train")["mean_psnr"] > 150
    assert run("final", "random:0.3", "blind", "train")["mask_error"] is not None
    # the JSON is standard (no NaN/Infinity)
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text)["runs"][0]["mask"] == "random:0.3"
    table = format_table(doc)
    assert "held-out" in table and "final" in table and "center:2" in table
    lt = format_loss_table(doc)
    assert lt.index("early") < lt.index("final")  # sorted by decreasing train loss
    pytest.importorskip("matplotlib")
    p = figure_rate_vs_loss(doc, tmp_path / "fig3.png")
    assert p.stat().st_size > 1000


def test_same_masks_for_train_and_test_and_reproducible(memorizer):
    f, train, test = memorizer
    kw = dict(masks=["random:0.5"], methods=["blind"], solver={"max_iter": 3}, progress=False)
    a = memorization_report(f, train, test, seed=3, **kw)
    b = memorization_report(f, train, test, seed=3, **kw)
    assert [r["mse"] for r in a["runs"]] == [r["mse"] for r in b["runs"]]
    assert a["runs"][0]["erased_fraction"] == a["runs"][1]["erased_fraction"] == pytest.approx(0.5)


def test_report_errors(memorizer):
    f, train, test = memorizer
    with pytest.raises(ConfigError):
        memorization_report(f, train, test, methods=["magic"])
    with pytest.raises(ConfigError):
        memorization_report(f, train, test, masks=["nope:1"])


def test_figures(memorizer, tmp_path):
    pytest.importorskip("matplotlib")
    f, train, test = memorizer
    memorization_report(
        f, train, test, masks=["center:2"], methods=["blind"], solver={"max_iter": 3},
        progress=False, figures_dir=tmp_path,
    )  # fmt: skip
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(pngs) == 2 and all(n.endswith(("train.png", "test.png")) for n in pngs)
    assert not list(tmp_path.glob(".*tmp"))


def test_divergence_warning_names_its_run_once(caplog):
    """A run with diverged samples gives ONE DivergenceWarning that says which checkpoint,
    mask, method and split it belongs to (the solver's own context-free warning is
    silenced), and no log line besides; a run without divergence gives none."""
    from refinv.errors import DivergenceWarning

    def explode(x):  # samples whose first pixel is > 0.5 blow up, the others contract
        big = x[:, :1, :1, :1] > 0.5
        return np.where(big, 3.0 * x, 0.5 * x)

    train = np.full((4, 1, 2, 2), 0.1)
    train[[1, 3], 0, 0, 0] = 0.9
    test = np.full((3, 1, 2, 2), 0.1)
    with caplog.at_level("DEBUG"), pytest.warns(DivergenceWarning) as rec:
        doc = memorization_report(
            [("explode", explode)], train, test, masks=["ones"], methods=["ae-iterations"],
            solver={"max_iter": 10}, progress=False,
        )  # fmt: skip
    msgs = [str(w.message) for w in rec if w.category is DivergenceWarning]
    assert msgs == [
        "checkpoint explode, mask ones, method ae-iterations, split train: 2 of 4 samples "
        "diverged (NaN/Inf or |x| > 1e+06) and were stopped (MSE null in the report); the "
        "others continued"
    ]
    assert not [r for r in caplog.records if "diverged" in r.getMessage()]
    assert [r["n_diverged"] for r in doc["runs"]] == [2, 0]
