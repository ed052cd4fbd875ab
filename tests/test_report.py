"""Metrics and the memorization report: values, schema, train/held-out contrast, tables, figures."""

from __future__ import annotations

import json
import math

import array_api_strict as xps
import numpy as np
import pytest
from _doubles import CountingModel
from test_recovery import np_linear, projection

import refinv.evaluation.runs as runs_mod
from refinv.errors import ConfigError, ShapeError
from refinv.evaluation.metrics import ACCURATE_MSE, APPROXIMATE_MSE, mse, psnr, psnr_from_mse
from refinv.evaluation.report import (
    SCHEMA_VERSION,
    evaluate_split,
    figure_rate_vs_loss,
    format_loss_table,
    format_table,
    memorization_report,
    new_document,
    recovery_metrics,
    run_entry,
)
from refinv.operators.masks import draw_masks, parse_mask


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
    with np.errstate(over="raise"):  # an overflowing MSE (inf) is reported like a NaN one
        huge = recovery_metrics(x[:1], np.full((1, 1, 2, 2), 1e200))
    assert np.isnan(huge["mse"][0]) and huge["psnr"][0] == 0.0


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
    for r in doc["runs"]:  # the blind solver's mask error, a fraction; none for the others
        assert (r["mask_error"] is None) == (r["method"] != "blind")
        if r["method"] == "blind":
            assert 0.0 <= r["mask_error"] <= 1.0
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


def test_same_masks_for_train_and_test_and_reproducible(memorizer, monkeypatch):
    """Image i of the training set and image i of the held-out set are degraded with the SAME
    mask (the masks themselves, not just their erased fraction), drawn from default_rng(seed)."""
    f, train, test = memorizer
    seen = []
    real = runs_mod.degrade  # the engine's units degrade each split once (refinv.engine.work)

    def spy(x, spec, **kw):
        y, mask = real(x, spec, **kw)
        seen.append(np.array(mask, copy=True))
        return y, mask

    monkeypatch.setattr(runs_mod, "degrade", spy)
    kw = dict(masks=["random:0.5"], methods=["blind"], solver={"max_iter": 3}, progress=False)
    a = memorization_report(f, train, test, seed=3, **kw)
    assert [r["split"] for r in a["runs"]] == ["train", "test"] and len(seen) == 2
    m_train, m_test = seen
    assert m_train.shape == m_test.shape == (4, 6, 6)
    np.testing.assert_array_equal(m_train, m_test)
    assert not np.array_equal(m_train[0], m_train[1])  # one draw per image, not one mask
    np.testing.assert_array_equal(m_train, draw_masks("random:0.5", (1, 6, 6), 4, 3))
    b = memorization_report(f, train, test, seed=3, **kw)
    assert [r["mse"] for r in a["runs"]] == [r["mse"] for r in b["runs"]]
    np.testing.assert_array_equal(seen[2], m_train)  # reproducible


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


# ------------------------------------------------------------------ the report's semantics
def test_published_thresholds():
    """The paper's thresholds: accurate MSE < 1e-7 (70 dB), approximate MSE < 5e-4 (33.01 dB);
    the report's document states the same numbers."""
    assert ACCURATE_MSE == 1e-7 and APPROXIMATE_MSE == 5e-4
    assert float(psnr_from_mse(np.array([APPROXIMATE_MSE]))[0]) == pytest.approx(33.0103, abs=1e-4)
    doc = new_document(command="t", seed=0, noise_std=0.0, masks=[], methods=[], solver={})
    assert doc["thresholds"]["accurate_mse"] == 1e-7
    assert doc["thresholds"]["approximate_mse"] == 5e-4


def _entry(mse_values, psnr_values=None):
    n = len(mse_values)
    return run_entry(
        checkpoint="c", train_loss=None, method="known", mask="m", split="train",
        mse=mse_values, psnr=np.zeros(n) if psnr_values is None else psnr_values,
        iterations=[1] * n, converged=[True] * n, diverged=[False] * n, residual=[0.0] * n,
        erased_fraction=0.5, mask_error=None, seconds=0.0, onnx_seconds=None,
    )  # fmt: skip


def test_rates_on_mses_straddling_both_thresholds():
    """Strict inequalities at exactly 1e-7 and 5e-4, values between the published thresholds
    and ten times them, and non-finite MSEs (never recovered)."""
    m = [
        0.0,
        np.nextafter(1e-7, 0.0),  # accurate
        1e-7,  # not accurate (strict), approximate
        np.nextafter(1e-7, 1.0),
        5e-7,  # accurate only with a 1e-6 threshold
        np.nextafter(5e-4, 0.0),  # approximate
        5e-4,  # not approximate (strict)
        1e-3,  # approximate only with a 5e-3 threshold
        np.nan,  # diverged: never recovered
        np.inf,
    ]
    r = _entry(m)
    assert r["n"] == 10
    assert r["accurate_rate"] == 2 / 10
    assert r["approximate_rate"] == 6 / 10
    assert r["mse"][8] is None  # standard JSON


def test_nan_mse_is_never_recovered():
    r = _entry([np.nan, np.nan, 0.0, 1.0])
    assert r["accurate_rate"] == r["approximate_rate"] == 0.25
    assert _entry([np.nan])["accurate_rate"] == 0.0


def test_diverging_model_recovers_nothing(memorizer):
    """A model whose output is NaN: every sample diverges and none counts as recovered."""
    _, train, _ = memorizer

    def nan_model(a):
        return a * np.nan

    nan_model.sample_shape = nan_model.output_sample_shape = (1, 6, 6)
    from refinv.errors import DivergenceWarning

    for method in ("known", "ae-iterations", "blind"):
        with pytest.warns(DivergenceWarning, match="4 of 4 samples diverged"):
            entry, *_ = evaluate_split(
                nan_model, train, parse_mask("random:0.5"), method, solver={"max_iter": 3}
            )
        assert entry["n_diverged"] == 4
        assert entry["accurate_rate"] == entry["approximate_rate"] == 0.0
        assert entry["mse"] == [None] * 4 and entry["mean_psnr"] == 0.0


def _identity(a):
    return a


_identity.sample_shape = _identity.output_sample_shape = (1, 4, 4)


def test_mask_error_is_the_error_not_the_agreement():
    """With f = identity the blind solver keeps x = y, so eq. 20 marks every pixel observed
    ((y - x)^2 = 0 <= y^2): the estimated mask is all ones and its error is exactly the erased
    fraction (4 of 16 pixels for random:0.25), its agreement would be 0.75."""
    x = np.random.default_rng(0).uniform(0.1, 1.0, (3, 1, 4, 4))
    entry, res, _, mask = evaluate_split(
        _identity, x, parse_mask("random:0.25"), "blind", solver={"max_iter": 2}
    )
    np.testing.assert_array_equal(np.asarray(res.state.h), 1.0)
    assert int((~mask).sum()) == 3 * 4
    assert entry["mask_error"] == 0.25 and entry["erased_fraction"] == 0.25
    ones, *_ = evaluate_split(_identity, x, parse_mask("ones"), "blind", solver={"max_iter": 2})
    assert ones["mask_error"] == 0.0


def test_known_mask_reinsertion_only_without_noise(memorizer):
    """Re-inserting the observed pixels (eq. 31) is right only for noiseless data: the
    report turns it off when noise_std > 0."""
    f, train, _ = memorizer
    spec = parse_mask("random:0.3")
    _, clean, *_ = evaluate_split(f, train, spec, "known", solver={"max_iter": 2})
    _, noisy, *_ = evaluate_split(f, train, spec, "known", noise_std=0.01, solver={"max_iter": 2})
    assert clean.info["reinsert"] is True and noisy.info["reinsert"] is False


@pytest.mark.parametrize(
    "solver, calls",
    [({"max_iter": 7, "inner_iter": 3}, 21), ({"max_iter": 7}, 70), ({"inner_iter": 3}, 300)],
)
def test_ae_iterations_in_the_report_cost_as_much_as_blind(memorizer, solver, calls):
    """The baseline gets max_iter x inner_iter calls of f, the blind solver's number (defaults
    100 and 10), counted by a wrapper: one call of f per iteration, tol = 0 (no early stop)."""
    f, train, _ = memorizer
    for method in ("ae-iterations", "blind"):
        g = CountingModel(f, (1, 6, 6))
        doc = memorization_report(
            g, train, masks=["random:0.5"], methods=[method], solver={**solver, "tol": 0.0},
            progress=False,
        )  # fmt: skip
        assert g.calls == 1 + calls  # + the train-loss evaluation of the checkpoint entry
        if method == "ae-iterations":
            assert doc["runs"][0]["iterations"] == [calls] * 4


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
