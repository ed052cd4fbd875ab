"""Sweeps: resume after SIGKILL, process pool == Dask LocalCluster, config errors up front.

Tiny sweeps on the shipped digits8 LeakyReLU autoencoder (a few images a
shard, few iterations): these tests check the bookkeeping (exactly-once
rows, identical numbers whatever the executor), not recovery quality.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _sweeps import report_checked, run_sweep_checked

from refinv.errors import ConfigError
from refinv.evaluation.report import format_table
from refinv.sweep import Store, load_config, make_tasks, report_from_db

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "onnx" / "digits8_lrelu_6x320.onnx"
DATA = ROOT / "models" / "data" / "digits8.npz"
FACES = ROOT / "models" / "data" / "faces25.npz"

pytestmark = pytest.mark.skipif(
    not (MODEL.is_file() and DATA.is_file() and FACES.is_file()),
    reason="needs the shipped models/ (digits8 autoencoder, digits8 and faces25 data)",
)

ROW_KEYS = (
    "task_id checkpoint model_sha256 mask method split sample mse psnr iterations converged "
    "diverged residual erased_fraction mask_error"
).split()


def _config(
    tmp: Path,
    *,
    n: int = 10,
    shard: int = 5,
    max_iter: int = 20,
    masks=("random:0.5", "center:4"),
    methods=("blind", "known", "ae-iterations"),
    data: Path = DATA,
    extra: str = "",
    name: str = "sweep.toml",
) -> Path:
    text = f"""
seed = 3
shard_size = {shard}
masks = {list(masks)!r}
methods = {list(methods)!r}
{extra}
[solver]
max_iter = {max_iter}
mask_init = "bernoulli"

[datasets.d8]
train = "{data}:train"
test = "{data}:test"
n = {n}

[[models]]
path = "{MODEL}"
label = "d8"
"""
    p = tmp / name
    p.write_text(text)
    return p


def _rows(db: Path) -> list[tuple]:
    with Store(db, readonly=True) as s:
        return [tuple(r[k] for k in ROW_KEYS) for r in s.results()]


def _table(db: Path) -> str:
    """The report table without its timing column (wall times differ between runs)."""
    text = format_table(report_from_db(db))
    return "\n".join(re.sub(r"\|\s*[0-9.]+s$", "|", ln) for ln in text.splitlines())


def test_killed_sweep_resumes_to_the_same_table(tmp_path):
    cfg = _config(tmp_path, n=30, shard=3, max_iter=40, masks=("random:0.5",))
    total = len(make_tasks(load_config(cfg)))  # 1 mask x 2 splits x 3 methods x 10 shards = 60
    assert total == 60
    killed_db = tmp_path / "killed.sqlite"
    env = dict(os.environ, REFINV_NO_PROGRESS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "refinv.sweep", str(cfg), "--db", str(killed_db), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    done = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if killed_db.exists():
            try:
                con = sqlite3.connect(killed_db, timeout=1)
                done = con.execute("SELECT count(*) FROM tasks WHERE status='done'").fetchone()[0]
                con.close()
            except sqlite3.OperationalError:
                done = 0  # schema not created yet
            if done >= 3:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    rc = proc.wait()
    assert rc == -signal.SIGKILL, "the sweep finished before it could be killed"
    con = sqlite3.connect(killed_db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_done = con.execute("SELECT count(*) FROM tasks WHERE status='done'").fetchone()[0]
    n_rows = con.execute("SELECT count(*) FROM results").fetchone()[0]
    con.close()
    assert 3 <= n_done < total
    assert n_rows == 3 * n_done  # whole tasks only: 3 samples a shard, never a partial task

    summary = run_sweep_checked(cfg, killed_db, progress=False)  # resume
    assert summary.skipped == n_done and summary.done == total - n_done and summary.failed == 0
    again = run_sweep_checked(cfg, killed_db, progress=False)  # nothing left to do
    assert again.skipped == total and again.done == 0

    clean_db = tmp_path / "clean.sqlite"
    run_sweep_checked(cfg, clean_db, progress=False)
    resumed, clean = _rows(killed_db), _rows(clean_db)
    assert len(resumed) == len({r[:7] for r in resumed}) == 2 * 30 * 3  # no duplicate rows
    assert resumed == clean
    assert _table(killed_db) == _table(clean_db)


def test_process_pool_and_dask_local_cluster_agree(tmp_path):
    pytest.importorskip("dask.distributed", reason="dask[distributed] is not installed")
    cfg = _config(tmp_path)
    dbs = {k: tmp_path / f"{k}.sqlite" for k in ("inproc", "pool", "dask")}
    run_sweep_checked(cfg, dbs["inproc"], progress=False)
    run_sweep_checked(cfg, dbs["pool"], workers=2, progress=False)
    s = run_sweep_checked(cfg, dbs["dask"], workers=2, scheduler="local", progress=False)
    assert s.done == s.total == 2 * 2 * 3 * 2 and s.failed == 0
    ref = _rows(dbs["inproc"])
    assert len(ref) == 2 * 2 * 3 * 10
    assert _rows(dbs["pool"]) == ref
    assert _rows(dbs["dask"]) == ref
    assert _table(dbs["pool"]) == _table(dbs["inproc"]) == _table(dbs["dask"])


def test_report_matches_refinv_evaluate(tmp_path):
    """Sharded sweep == one-batch memorization_report (same schema, same per-sample numbers).

    Masks and Bernoulli initial masks are drawn for the whole split and sliced per shard
    (uneven shards 4, 4, 2 here), so each image sees exactly what evaluate gives it.
    """
    from refinv.io import load_images

    cfg = _config(tmp_path, masks=("random:0.5",), methods=("blind", "known"), shard=4)
    db = tmp_path / "r.sqlite"
    run_sweep_checked(cfg, db, progress=False)
    doc = report_from_db(db)
    f = load_model()
    train = load_images(DATA, "train", sample_shape=f.sample_shape)[:10]
    test = load_images(DATA, "test", sample_shape=f.sample_shape)[:10]
    ref = report_checked(
        [("d8", f)],
        train,
        test,
        masks=["random:0.5"],
        methods=["blind", "known"],
        seed=3,
        solver={"max_iter": 20, "mask_init": "bernoulli"},
        progress=False,
        control=False,
    )
    # the library's report also carries "schema" and "provenance" (refinv report adds them
    # when it writes the JSON, below)
    assert set(doc) | {"schema", "provenance"} == set(ref)
    assert doc["schema_version"] == 3 and doc["command"] == "sweep"
    assert doc["control"] is None  # a sweep database holds no control runs
    assert doc["checkpoints"][0]["sha256"] == f.sha256
    assert doc["checkpoints"][0]["train_loss"] == ref["checkpoints"][0]["train_loss"]
    # the model's layout record survives the store (meta "layout:LABEL")
    assert doc["checkpoints"][0]["layout"] == ref["checkpoints"][0]["layout"]
    assert doc["checkpoints"][0]["layout"]["layout"] == "NCHW"
    assert len(doc["runs"]) == len(ref["runs"]) == 4
    for run, want in zip(doc["runs"], ref["runs"], strict=True):
        assert set(run) == set(want)
        for k in run:
            if k not in ("seconds", "onnx_seconds"):
                assert run[k] == want[k], k
    # the CLI renders the table and writes the same JSON
    from refinv.cli import report as cli_report

    p = argparse.ArgumentParser()
    cli_report.register(p.add_subparsers())
    args = p.parse_args(["report", str(db), "--json", str(tmp_path / "r.json")])
    assert args.func(args) == 0
    import json

    assert json.loads((tmp_path / "r.json").read_text())["runs"] == doc["runs"]


def test_a_store_without_layout_records_reports_layout_null(tmp_path):
    """Stores written before layouts existed have no meta "layout:LABEL": they still read,
    and their report says layout null (it does not invent one)."""
    import sqlite3

    cfg = _config(tmp_path, masks=("random:0.5",), methods=("blind",), shard=10)
    db = tmp_path / "old.sqlite"
    run_sweep_checked(cfg, db, progress=False)
    with sqlite3.connect(db) as conn:
        assert conn.execute("DELETE FROM meta WHERE key LIKE 'layout:%'").rowcount == 1
    doc = report_from_db(db)
    assert doc["checkpoints"][0]["layout"] is None
    assert len(doc["runs"]) == 2


def load_model():
    from refinv.onnx import OnnxModel

    return OnnxModel(MODEL, intra_op_threads=1)


def test_failing_task_is_recorded_and_retried(tmp_path, monkeypatch):
    import refinv.engine.work as work

    cfg = _config(tmp_path, masks=("center:4",))
    real = work.run_unit

    def flaky(task, *a, **kw):
        if task.method == "known":
            raise RuntimeError("boom")
        return real(task, *a, **kw)

    monkeypatch.setattr(work, "run_unit", flaky)
    db = tmp_path / "f.sqlite"
    s = run_sweep_checked(cfg, db, progress=False)
    assert (s.total, s.done, s.failed) == (12, 8, 4)
    with Store(db, readonly=True) as st:
        fails = st.failures()
    assert len(fails) == 4 and all("boom" in f[-1] and f[2] == "known" for f in fails)
    monkeypatch.setattr(work, "run_unit", real)
    s2 = run_sweep_checked(cfg, db, progress=False)
    assert (s2.skipped, s2.done, s2.failed) == (8, 4, 0)
    with Store(db, readonly=True) as st:
        assert st.failures() == [] and len(st.results()) == 12 * 5


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(masks=("random:0.5", "spiral:3")), "unknown family"),
        (dict(methods=("blind", "magic")), "methods"),
        (dict(data=Path("/nonexistent/data.npz")), "no such file"),
        (dict(data=FACES), "does not fit the model"),
        (dict(extra="colour = 1"), "unknown key"),
        (dict(masks=("center:40",)), "does not fit"),
    ],
)
def test_bad_config_fails_before_any_work(tmp_path, kw, match):
    cfg = _config(tmp_path, **kw)
    db = tmp_path / "never.sqlite"
    with pytest.raises(ConfigError, match=match):
        run_sweep_checked(cfg, db, progress=False)
    assert not db.exists()


def test_missing_model_and_changed_settings(tmp_path):
    cfg = _config(tmp_path, masks=("center:4",), methods=("known",))
    text = cfg.read_text().replace(str(MODEL), "missing.onnx")
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ConfigError, match="models\\[0\\].path: no such file"):
        load_config(tmp_path / "bad.toml")
    db = tmp_path / "s.sqlite"
    run_sweep_checked(cfg, db, progress=False)
    other = _config(tmp_path, masks=("center:4",), methods=("known",), max_iter=21, name="o.toml")
    with pytest.raises(ConfigError, match="other settings"):
        run_sweep_checked(other, db, progress=False)


def test_shipped_example_config_is_valid():
    """docs/sweep.md's example config loads and validates (paths, masks, models, data)."""
    cfg = load_config(ROOT / "docs" / "examples" / "sweep_faces.toml")
    assert [m.label for m in cfg.models][-1] == "faces25_lrelu_6x256"
    assert len(cfg.models) == 4 and cfg.methods == ["blind", "known", "ae-iterations"]
    assert len(make_tasks(cfg)) == 96


def _store_task(task_id="t1", start=0, stop=3):
    from refinv.sweep.run import Task

    return Task(
        task_id=task_id, checkpoint="c", model_path="m.onnx", sha256="ab" * 32,
        data_path="d.npz", data_key="train", n=3, split="train", mask="random:0.5",
        method="blind", start=start, stop=stop, seed=0, noise_std=0.0, solver={"max_iter": 1},
        threads=None, provider="cpu", batch_size=None,
    )  # fmt: skip


def _store_out(n, psnr=1.0):
    return {
        "mse": [0.1] * n, "psnr": [psnr] * n, "iterations": [1] * n, "converged": [True] * n,
        "diverged": [False] * n, "residual": [0.0] * n, "erased_fraction": [0.5] * n,
        "mask_error": [0.0] * n, "seconds": 0.1, "onnx_seconds": None,
    }  # fmt: skip


def test_store_failing_write_leaves_no_task_done(tmp_path):
    """A task's result rows and its 'done' row are one transaction: when a result row cannot
    be written (here a NULL psnr, NOT NULL in the schema) the whole write is rolled back, so
    the task is absent (recomputed by the next run), never 'done' with missing rows."""
    with Store(tmp_path / "r.db") as st:
        out = _store_out(3)
        out["psnr"][2] = None
        with pytest.raises(sqlite3.IntegrityError):
            st.write_task(_store_task(), out, "0")
        assert st.done_tasks() == set() and st.task_counts() == {} and st.results() == []
        st.write_task(_store_task(), _store_out(3), "0")  # the store is still usable
        assert st.done_tasks() == {"t1"} and len(st.results()) == 3
        # a failing retry of another task over the same samples keeps the first one intact
        with pytest.raises(sqlite3.IntegrityError):
            st.write_task(_store_task("t2"), _store_out(3), "0")  # UNIQUE(checkpoint, ..., sample)
        assert st.done_tasks() == {"t1"} and [r["task_id"] for r in st.results()] == ["t1"] * 3


def test_initial_masks_from_a_file_are_sliced_per_shard(tmp_path):
    """solver.mask_init = "file:PATH.npz:KEY" with one initial mask per image of the split:
    each shard (4, 4, 2) takes its rows, so the sweep equals one-batch refinv evaluate."""
    import numpy as np

    from refinv.io import load_images

    h0 = (np.random.default_rng(7).random((10, 8, 8)) < 0.7).astype(np.uint8)
    np.savez(tmp_path / "h0.npz", init=h0, unused=h0[:1])
    spec = f"file:{tmp_path / 'h0.npz'}:init"
    cfg = _config(tmp_path, masks=("random:0.5",), methods=("blind",), shard=4)
    cfg.write_text(cfg.read_text().replace('mask_init = "bernoulli"', f'mask_init = "{spec}"'))
    db = tmp_path / "f.sqlite"
    summary = run_sweep_checked(cfg, db, progress=False)
    assert summary.failed == 0
    doc = report_from_db(db)
    f = load_model()
    train = load_images(DATA, "train", sample_shape=f.sample_shape)[:10]
    test = load_images(DATA, "test", sample_shape=f.sample_shape)[:10]
    ref = report_checked(
        [("d8", f)], train, test, masks=["random:0.5"], methods=["blind"], seed=3,
        solver={"max_iter": 20, "mask_init": spec}, progress=False,
    )  # fmt: skip
    assert [r["mse"] for r in doc["runs"]] == [r["mse"] for r in ref["runs"]]
    ones = report_checked(
        [("d8", f)], train, test, masks=["random:0.5"], methods=["blind"], seed=3,
        solver={"max_iter": 20, "mask_init": "ones"}, progress=False,
    )  # fmt: skip
    assert [r["mse"] for r in ones["runs"]] != [r["mse"] for r in ref["runs"]]
