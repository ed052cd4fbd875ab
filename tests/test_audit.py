"""``refinv audit`` / ``refinv.audit``: the same numbers as ``refinv evaluate``, resumable,
membership inference and the inpainting control checked against their definitions."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_recovery import onnx_ae, projection

pytest.importorskip("sklearn")
pytest.importorskip("skimage")
pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

import refinv  # noqa: E402
from refinv.audit.membership import roc_summary, tpr_at_fpr  # noqa: E402
from refinv.cli import main  # noqa: E402
from refinv.errors import ConfigError  # noqa: E402
from refinv.evaluation.control import biharmonic_inpaint  # noqa: E402

SHAPE = (1, 6, 7)
FAST = ["--max-iter", "60", "--bootstrap", "50", "--stability-limit", "3", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(0)
    train = rng.random((5, *SHAPE))
    test = rng.random((4, *SHAPE))
    P = projection(train)  # memorizes the training images: they are its fixed points
    onnx.save(onnx_ae([(P, np.zeros(42), False)], SHAPE), d / "ae.onnx")
    onnx.save(onnx_ae([(0.5 * P, np.zeros(42), False)], SHAPE), d / "ae_early.onnx")
    onnx.save(onnx_ae([(np.ones((3, 42)), np.zeros(3), False)], SHAPE), d / "enc.onnx")
    onnx.save(onnx_ae([(np.eye(42), np.zeros(42), False)], SHAPE), d / "identity.onnx")
    np.savez(d / "data.npz", train=train, test=test)
    big = rng.random((30, *SHAPE))
    np.savez(d / "big.npz", train=big[:15], test=big[15:])
    return d


def _strip_times(runs):
    return [{k: v for k, v in r.items() if k not in ("seconds", "onnx_seconds")} for r in runs]


def _audit_args(d, out, *extra):
    return ["audit", str(d / "ae.onnx"), "--train", f"{d / 'data.npz'}:train",
            "--test", f"{d / 'data.npz'}:test", "--mask", "random:0.3,rows:2",
            "--method", "blind,known", "--out", str(out), *FAST, *extra]  # fmt: skip


def test_audit_numbers_equal_evaluate(files, tmp_path, capsys):
    d = files
    ck = ["--checkpoints", str(d / "ae_early.onnx")]
    assert main(_audit_args(d, tmp_path / "a", *ck)) == 0
    out = capsys.readouterr().out
    # 5 training and 4 held-out images: even 5 of 5 vs 0 of 4 (Fisher p = 1/126) cannot pass
    # Holm's strictest level 0.05/8, and the audit says it had no power instead of "safe"
    assert "No extraction detected" in out and "no power" in out and "report.html" in out
    rc = main(
        ["evaluate", str(d / "ae.onnx"), "--train", f"{d / 'data.npz'}:train", "--test",
         f"{d / 'data.npz'}:test", "--mask", "random:0.3,rows:2", "--method", "blind,known",
         "--json", str(tmp_path / "ev.json"), "--max-iter", "60", "--quiet", *ck]
    )  # fmt: skip
    assert rc == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    au = json.loads((tmp_path / "a" / "report.json").read_text())
    assert au["schema"] == "refinv.audit" and au["schema_version"] == 2
    rec = au["recovery"]
    assert len(rec["runs"]) == 2 * 2 * 2 * 2
    assert _strip_times(rec["runs"]) == _strip_times(ev["runs"])
    assert rec["checkpoints"] == ev["checkpoints"]
    assert rec["settings"] == ev["settings"]
    # the projection memorizes: known-mask recovery of every training image, none held out
    known = {(r["mask"], r["split"]): r for r in rec["runs"]
             if r["method"] == "known" and r["checkpoint"] == "ae"}  # fmt: skip
    assert known[("random:0.3", "train")]["accurate_rate"] == 1.0
    assert known[("random:0.3", "test")]["accurate_rate"] == 0.0
    v = au["verdict"]
    assert v["level"] == "not_detected" and v["memorization_detected"] is False
    assert v["n_tests"] == 8 and v["power"]["min_detectable_rate"] is None
    exact_known = next(t for t in v["tests"] if (t["mask"], t["method"], t["criterion"])
                       == ("random:0.3", "known", "exact"))  # fmt: skip
    assert (exact_known["train"]["extracted"], exact_known["test"]["extracted"]) == (5, 0)
    assert exact_known["p_value"] == pytest.approx(1 / 126)
    by_ck = {c["checkpoint"]: c for c in au["membership"]["by_checkpoint"]}
    assert set(by_ck) == {"ae", "ae_early"}
    # provenance: the helper's block, with the sha256 of every input file
    prov = au["provenance"]
    assert set(prov["inputs"]) >= {"model", "train", "test", "checkpoint_1"}
    from refinv.provenance import file_sha256

    assert prov["inputs"]["model"]["sha256"] == file_sha256(d / "ae.onnx")
    assert prov["wall_seconds"] >= 0
    assert not list((tmp_path / "a").rglob(".*.tmp"))  # atomic writes leave no temp file


def test_library_returns_the_written_document(files, tmp_path):
    d = files
    doc = refinv.audit(
        d / "ae.onnx",
        f"{d / 'data.npz'}:train",
        f"{d / 'data.npz'}:test",
        masks=["random:0.3"],
        methods=["known"],
        solver={"max_iter": 60},
        out=tmp_path,
        n_bootstrap=50,
        stability_n=3,
        progress=False,
    )
    written = json.loads((tmp_path / "report.json").read_text())
    assert json.loads(json.dumps(doc)) == written
    # per_image.csv: one row per image; its exposed column is the document's count
    with open(tmp_path / "per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 + 4
    for split in ("train", "test"):
        ex = [r for r in rows if r["split"] == split and r["exposed"] == "yes"]
        assert len(ex) == doc["exposure"][split]["exposed"]
        assert [int(r["index"]) for r in ex] == doc["exposure"][split]["exposed_indices"]
    assert {"mse[known|random:0.3]", "control_psnr[random:0.3]", "score_stability"} <= set(rows[0])


def _comparable(doc):
    doc = json.loads(json.dumps(doc))
    for k in ("provenance", "timing", "created_utc", "files"):
        doc.pop(k, None)
    doc["recovery"].pop("created_utc")
    doc["recovery"]["runs"] = _strip_times(doc["recovery"]["runs"])
    return doc


def test_interrupted_audit_resumes_to_the_same_report(files, tmp_path, monkeypatch):
    """An audit stopped by Ctrl-C keeps its finished units in DIR/store.sqlite; resumed, it
    computes only the others and writes the report an uninterrupted audit writes."""
    import refinv.engine.work as work

    d = files
    kw = dict(masks=["random:0.3", "rows:2"], methods=["blind", "known"],
              solver={"max_iter": 60}, n_bootstrap=50, stability_n=3, progress=False)  # fmt: skip
    args = (d / "ae.onnx", f"{d / 'data.npz'}:train", f"{d / 'data.npz'}:test")
    fresh = refinv.audit(*args, **kw)
    real = work.run_unit
    calls = []

    def counting(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user presses Ctrl-C during the third unit
        return real(*a, **k)

    monkeypatch.setattr(work, "run_unit", counting)
    with pytest.raises(KeyboardInterrupt):
        refinv.audit(*args, out=tmp_path, **kw)
    assert not (tmp_path / "report.json").exists()
    assert _done(tmp_path / "store.sqlite") == 2
    calls.clear()
    monkeypatch.setattr(work, "run_unit", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = refinv.audit(*args, out=tmp_path, resume=True, **kw)
    assert len(calls) == 14 - 2  # 8 recoveries, 4 controls, 2 stability units; 2 were done
    assert (resumed["timing"]["cached_units"], resumed["timing"]["computed_units"]) == (2, 12)
    assert _comparable(resumed) == _comparable(fresh)
    # without resume the store starts afresh: everything is computed again
    calls.clear()
    again = refinv.audit(*args, out=tmp_path, **kw)
    assert len(calls) == 14
    assert _comparable(again) == _comparable(fresh)


def test_cli_resume_flag(files, tmp_path, capsys):
    d = files
    assert main(_audit_args(d, tmp_path)) == 0
    capsys.readouterr()
    assert main(_audit_args(d, tmp_path, "--resume")) == 0
    assert "14 units from the store, 0 computed" in capsys.readouterr().out


def _done(db) -> int:
    import sqlite3

    with sqlite3.connect(db) as con:
        return con.execute("SELECT count(*) FROM tasks WHERE status = 'done'").fetchone()[0]


def test_model_with_no_recovery_is_an_honest_report(files, tmp_path):
    d = files
    doc = refinv.audit(
        d / "identity.onnx", f"{d / 'big.npz'}:train", f"{d / 'big.npz'}:test",
        masks=["random:0.5"], methods=["blind", "known"], solver={"max_iter": 30},
        out=tmp_path, n_bootstrap=100, stability_n=4, progress=False,
    )  # fmt: skip
    assert doc["verdict"]["memorization_detected"] is False
    assert doc["verdict"]["level"] == "not_detected"
    assert doc["exposure"]["train"]["exposed"] == 0 == doc["exposure"]["test"]["exposed"]
    # the power statement: 0 of 15 held-out extracted; at level 0.05/4 the Fisher test needs
    # k of 15 training images, and the rate r with P(Bin(15, r) >= k) = 0.8 is stated
    pw = doc["verdict"]["power"]
    assert pw["level"] == pytest.approx(0.05 / 4) and pw["test_extracted"] == 0
    from scipy.stats import binom, fisher_exact

    k = pw["min_train_extracted"]
    p = [fisher_exact([[j, 15 - j], [0, 15]], alternative="greater")[1] for j in (k - 1, k)]
    assert p[1] <= 0.05 / 4 < p[0]
    assert binom.sf(k - 1, 15, pw["min_detectable_rate"]) == pytest.approx(0.8)
    assert f"{100 * pw['min_detectable_rate']:.0f}% or more" in doc["verdict"]["summary"]
    ms = {s["name"]: s for s in doc["membership"]["scores"]}
    # the identity reconstructs every image exactly: the loss attack is chance, exactly
    assert ms["reconstruction"]["auc"] == 0.5
    assert abs(ms["recovery"]["auc"] - 0.5) < 0.3
    html = (tmp_path / "report.html").read_text()
    assert "No extraction detected" in html and "does not prove" in html


def test_report_html_is_self_contained(files, tmp_path):
    d = files
    assert main(_audit_args(d, tmp_path, "--checkpoints", str(d / "ae_early.onnx"))) == 0
    html = (tmp_path / "report.html").read_text()
    srcs = re.findall(r'<img[^>]*src="([^"]*)"', html)
    assert len(srcs) == 5  # exposure, gallery, roc, control, rate vs loss
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html and "<link" not in html
    for section in ("1. Verdict", "2. Recovery", "3. The most exposed", "4. Membership",
                    "5. Control", "6. Recovery vs train loss", "7. Threat model",
                    "8. Method, assumptions"):  # fmt: skip
        assert section in html
    assert "classical and runs offline" in html


def test_missing_extra_names_it(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn -> ImportError
    assert main(_audit_args(files, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "refinv audit: error:" in err and "scikit-learn" in err and "refinv[audit]" in err
    assert err.count("refinv audit:") == 1  # the prefix once (it was printed twice)
    with pytest.raises(ConfigError, match=r"refinv\[audit\]"):
        refinv.audit(files / "ae.onnx", np.zeros((2, *SHAPE)), np.zeros((2, *SHAPE)))


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--mask", "bogus:1"], "unknown family"),
        (["--method", "blind,magic"], "magic"),
        (["--rho", "-1"], "rho"),
        (["--bootstrap", "0"], "--bootstrap"),
    ],
)
def test_errors_like_evaluate(files, tmp_path, argv, msg, capsys):
    assert main(_audit_args(files, tmp_path, *argv)) == 2
    assert msg in capsys.readouterr().err


def test_input_errors(files, tmp_path, capsys):
    d = files
    base = ["--train", f"{d / 'data.npz'}:train", "--test", f"{d / 'data.npz'}:test",
            "--out", str(tmp_path / "o"), *FAST]  # fmt: skip
    assert main(["audit", str(d / "enc.onnx"), *base]) == 2
    assert "not an autoencoder" in capsys.readouterr().err
    bad = ["audit", str(d / "ae.onnx"), "--train", f"{d / 'data.npz'}:nope", *base[2:]]
    assert main(bad) == 2
    assert "nope" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["audit", str(d / "ae.onnx"), *base[:4], "--out", str(tmp_path / "file")]) == 2
    assert "expected a folder" in capsys.readouterr().err


# ------------------------------------------------------------------ the pieces
def test_roc_summary_is_the_rank_statistic():
    rng = np.random.default_rng(1)
    m, u = rng.normal(1.0, 1.0, 40), rng.normal(0.0, 1.0, 250)
    m[:5] = u[:5]  # ties count one half
    r = roc_summary(m, u, seed=0, n_permutations=999)
    pairs = m[:, None] - u[None, :]
    assert r["auc"] == pytest.approx(np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0))
    lo, hi = r["auc_ci"]
    assert lo <= r["auc"] <= hi
    assert r["min_nonzero_fpr"] == 1 / 250
    # TPR at FPR 1% with 250 held-out images: the best threshold that calls at most 2 of them
    # members; 0.1% needs 1,000 held-out images and is not given as a number
    at1, at01 = r["tpr_at_fpr"]
    best = max(np.mean(m >= th) for th in np.concatenate([m, u]) if np.sum(u >= th) <= 2)
    assert at1["estimable"] and at1["tpr"] == pytest.approx(best)
    assert at1["false_positives"] <= 2 and at1["fpr"] == at1["false_positives"] / 250
    assert not at01["estimable"] and at01["needs_nonmembers"] == 1000 and "tpr" not in at01
    sep = roc_summary(np.array([5.0, 6.0]), np.array([1.0, 2.0, np.nan]), fprs=(0.5,))
    assert sep["auc"] == 1.0 and sep["tpr_at_fpr"][0]["tpr"] == 1.0  # NaN = least member-like
    assert tpr_at_fpr(np.array([0.0, 0.5, 1.0]), np.array([0.2, 0.7, 1.0]), 0.01) == 0.2
    assert tpr_at_fpr(np.array([0.0, 0.01, 1.0]), np.array([0.2, 0.7, 1.0]), 0.01) == 0.7


def test_biharmonic_control_restores_smooth_images_and_keeps_observed_pixels():
    yy, xx = np.mgrid[0:12, 0:10] / 12.0
    ramp = (0.2 + 0.3 * yy + 0.4 * xx)[None, None]  # linear: biharmonic reproduces it
    colour = np.concatenate([ramp, 0.5 * ramp, 1 - ramp], axis=1)
    rng = np.random.default_rng(0)
    h = (rng.random((1, 12, 10)) > 0.5).astype(np.uint8)
    h[0, [0, -1], :] = 1
    h[0, :, [0, -1]] = 1
    for x in (ramp, colour):
        y = x * h[:, None]
        xc = biharmonic_inpaint(y, h)
        # a smooth image comes back to a few 1e-3 (PSNR > 45 dB); the erased copy is far off
        assert np.max(np.abs(xc - x)) < 0.02
        assert (
            10 * np.log10(1 / np.mean((xc - x) ** 2))
            > 45
            > 10 * np.log10(1 / np.mean((y - x) ** 2))
        )
        np.testing.assert_array_equal(xc[:, :, h[0] == 1], x[:, :, h[0] == 1])


def test_import_refinv_stays_light():
    code = (
        "import sys, refinv; heavy = ('matplotlib', 'jinja2', 'sklearn', 'skimage');"
        "assert not [m for m in heavy if m in sys.modules], sys.modules.keys();"
        "import refinv.audit as a; assert callable(refinv.audit) and refinv.audit is a;"
        "assert not [m for m in heavy if m in sys.modules]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_demo_points_to_audit(tmp_path, capsys):
    from pathlib import Path

    models = Path(__file__).resolve().parents[1] / "models"
    if not (models / "onnx" / "faces25_lrelu_6x256.onnx").is_file():
        pytest.skip("shipped demo model not present in models/")
    assert main(["demo", "--quiet", "--max-iter", "2"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("refinv audit"))
    assert "faces25_lrelu_6x256.onnx" in line and "faces25.npz:train" in line
    assert "faces25.npz:test" in line and "--out" in line


def test_audit_killed_on_a_process_pool_resumes_to_the_same_report(tmp_path):
    """refinv audit on 2 worker processes, SIGKILLed after a few units: the store keeps
    whole units only; --resume computes the rest, and report.json equals an uninterrupted
    run's (same shards), except the timings and the provenance."""
    import signal
    import sqlite3
    import time

    from refinv.io import load_images

    root = Path(__file__).resolve().parents[1]
    model = root / "models" / "onnx" / "digits8_lrelu_6x320.onnx"
    src = root / "models" / "data" / "digits8.npz"
    tr, te = (load_images(src, k, sample_shape=(1, 8, 8))[:18] for k in ("train", "test"))
    np.savez(tmp_path / "d.npz", train=tr, test=te)
    args = ["audit", str(model), "--train", f"{tmp_path / 'd.npz'}:train",
            "--test", f"{tmp_path / 'd.npz'}:test", "--masks", "random:0.5,rows:2",
            "--methods", "blind,known", "--max-iter", "40", "--bootstrap", "50",
            "--stability-n", "3", "--shard-size", "3", "--quiet"]  # fmt: skip
    killed = tmp_path / "killed"
    env = dict(os.environ, REFINV_NO_PROGRESS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "refinv", *args, "--out", str(killed),
                             "--workers", "2"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    db, done, deadline = killed / "store.sqlite", 0, time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and done < 4:
        if db.exists():
            try:
                done = _done(db)
            except sqlite3.OperationalError:
                done = 0  # the tables are not there yet
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the audit finished before it could be killed"
    n_done = _done(db)
    total = 2 * 2 * 2 * 6 + 2 * 2 * 6 + 2  # recoveries, controls (6 shards a split), stability
    assert 4 <= n_done < total
    assert not (killed / "report.json").exists()
    assert main([*args, "--out", str(killed), "--workers", "2", "--resume"]) == 0
    resumed = json.loads((killed / "report.json").read_text())
    assert resumed["timing"]["cached_units"] == n_done
    assert resumed["timing"]["computed_units"] == total - n_done
    clean = tmp_path / "clean"
    assert main([*args, "--out", str(clean)]) == 0  # in this process, uninterrupted
    assert _comparable(resumed) == _comparable(json.loads((clean / "report.json").read_text()))
    assert (killed / "per_image.csv").read_bytes() == (clean / "per_image.csv").read_bytes()
