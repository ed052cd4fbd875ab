"""Sweeps on Dask: kill and resume on a LocalCluster, files sent as bytes, workers checked first.

Tiny sweeps on the shipped digits8 LeakyReLU autoencoder (few images, few iterations):
these check the bookkeeping and the bitwise equality of results whatever the executor,
not recovery quality.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _sweeps import done_tasks as _done
from _sweeps import run_sweep_checked

from refinv.engine import dask as engine_dask
from refinv.engine import work as engine_work
from refinv.errors import ConfigError, RefinvError
from refinv.sweep import Store, load_config, make_tasks, run_task

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "onnx" / "digits8_lrelu_6x320.onnx"
DATA = ROOT / "models" / "data" / "digits8.npz"

pytestmark = pytest.mark.skipif(
    not (MODEL.is_file() and DATA.is_file()),
    reason="needs the shipped models/ (digits8 autoencoder and data)",
)

ROW_KEYS = (
    "task_id checkpoint model_sha256 mask method split sample mse psnr iterations converged "
    "diverged residual erased_fraction mask_error"
).split()


def _config(tmp: Path, *, model=MODEL, data=DATA, masks=("random:0.5",), n=12, shard=3,
            methods=("blind", "known"), max_iter=15, mask_init="bernoulli") -> Path:  # fmt: skip
    p = tmp / "sweep.toml"
    p.write_text(
        f"""
seed = 5
shard_size = {shard}
masks = {list(masks)!r}
methods = {list(methods)!r}

[solver]
max_iter = {max_iter}
mask_init = "{mask_init}"

[datasets.d8]
train = "{data}:train"
test = "{data}:test"
n = {n}

[[models]]
path = "{model}"
label = "d8"
"""
    )
    return p


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test ships files into its own cache folder (REFINV_SWEEP_CACHE, inherited by the
    LocalCluster workers it starts), never the user's shared one that other runs use."""
    folder = tmp_path / "shipped-cache"
    monkeypatch.setenv(engine_dask.CACHE_ENV, str(folder))
    engine_dask._SHIPPED.clear()
    yield folder
    engine_dask._SHIPPED.clear()


def _rows(db: Path) -> list[tuple]:
    with Store(db, readonly=True) as s:
        return [tuple(r[k] for k in ROW_KEYS) for r in s.results()]


def _file_mask(tmp: Path) -> str:
    rng = np.random.default_rng(11)
    np.savez(tmp / "m.npz", other=np.ones((8, 8), np.uint8), keep=(rng.random((8, 8)) < 0.6))
    return f"file:{tmp / 'm.npz'}:keep"


# ------------------------------------------------------------------ without a cluster
def test_shipped_files_give_the_same_results_as_the_parents_paths(tmp_path, own_cache):
    """A worker that has none of the sweep's files, only their bytes: the same numbers."""
    src = tmp_path / "src"
    src.mkdir()
    model, data = shutil.copy(MODEL, src), shutil.copy(DATA, src)
    mask = _file_mask(src)
    cfg = _config(tmp_path, model=model, data=data, masks=(mask, "center:3"), n=4, shard=2)
    tasks = make_tasks(load_config(cfg))
    files = engine_dask.unit_files(tasks)
    assert files == sorted([str(Path(model).resolve()), str(Path(data).resolve()),
                            str((src / "m.npz").resolve())])  # fmt: skip
    blobs = {p: (hashlib.sha256(Path(p).read_bytes()).hexdigest(), Path(p).read_bytes())
             for p in files}  # fmt: skip
    picked = [t for t in tasks if t.split == "test" and t.start == 2 and t.method == "blind"]
    assert len(picked) == 2 and picked[0].mask == mask  # file mask and centre, shard [2:4]
    ref = [run_task(t) for t in picked]
    shutil.rmtree(src)  # the "worker" cannot see the parent's files any more
    engine_work._MODELS.clear()  # nor has it opened them before
    engine_work._DATA.clear()
    for t in picked:
        with pytest.raises(RefinvError):
            run_task(t)
    got = [engine_dask.run_shipped(t, blobs) for t in picked]
    for a, b in zip(ref, got, strict=True):
        for k in ("mse", "psnr", "iterations", "converged", "residual", "mask_error"):
            assert a[k] == b[k], k
    local = engine_dask._relocate(picked[0], {p: f"/w/{i}.x" for i, p in enumerate(files)})
    assert local.model_path.startswith("/w/") and local.data_path.startswith("/w/")
    if picked[0].mask.startswith("file:"):
        assert local.mask.startswith("file:/w/") and local.mask.endswith(":keep")
    # bytes that do not match their hash are refused
    bad = {p: (sha, data + b"x" if p.endswith(".onnx") else data) for p, (sha, data) in
           blobs.items()}  # fmt: skip
    engine_dask._SHIPPED.clear()
    cache = Path(engine_dask._materialize(*blobs[files[0]], files[0])).parent
    assert cache == own_cache
    shutil.rmtree(cache)  # this test's own folder: no other run uses it
    engine_dask._SHIPPED.clear()
    with pytest.raises(ConfigError, match="do not match their SHA-256"):
        engine_dask.run_shipped(picked[0], bad)


def test_worker_check_names_each_problem(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    from refinv import __version__

    assert engine_dask.worker_check({str(p): good}, __version__)["problems"] == []
    probs = engine_dask.worker_check(
        {str(p): "0" * 64, str(tmp_path / "gone.onnx"): good}, "0.0.0-other"
    )["problems"]
    assert len(probs) == 3
    assert "0.0.0-other" in probs[0] and "other content" in probs[1] and "no file" in probs[2]


def test_file_mask_key_survives_the_config(tmp_path):
    mask = _file_mask(tmp_path)
    cfg = load_config(_config(tmp_path, masks=(mask,)))
    assert cfg.masks[0].text.endswith(":keep")
    keep = np.load(tmp_path / "m.npz")["keep"]
    assert np.array_equal(np.asarray(cfg.masks[0].array, bool), keep)


def test_send_files_needs_a_scheduler(tmp_path):
    with pytest.raises(ConfigError, match="--send-files"):
        run_sweep_checked(_config(tmp_path), tmp_path / "x.sqlite", send_files=True, progress=False)


# ------------------------------------------------------------------ on a LocalCluster
def test_dask_sweep_killed_resumes_to_the_uninterrupted_store(tmp_path):
    """SIGKILL the sweep process mid-way: its Dask workers exit, the rerun computes only the
    missing tasks, and the store equals an uninterrupted run's, bit for bit."""
    pytest.importorskip("dask.distributed", reason="dask[distributed] is not installed")
    import psutil  # a dependency of distributed

    cfg = _config(tmp_path, n=18, shard=3, max_iter=30)
    total = len(make_tasks(load_config(cfg)))  # 2 splits x 2 methods x 6 shards
    assert total == 24
    db = tmp_path / "killed.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "refinv.sweep", str(cfg), "--db", str(db), "--quiet",
         "--scheduler", "local", "--workers", "2"],
        env=dict(os.environ, REFINV_NO_PROGRESS="1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    workers: list[psutil.Process] = []
    while time.monotonic() < deadline and proc.poll() is None and _done(db) < 2:
        workers = psutil.Process(proc.pid).children(recursive=True) or workers
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the sweep finished before it could be killed"
    assert workers, "no worker process seen"
    gone, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, f"Dask worker processes outlived the killed sweep: {alive}"
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_done = con.execute("SELECT count(*) FROM tasks WHERE status='done'").fetchone()[0]
    assert con.execute("SELECT count(*) FROM results").fetchone()[0] == 3 * n_done
    con.close()
    assert 2 <= n_done < total

    s = run_sweep_checked(cfg, db, workers=2, scheduler="local", progress=False)
    assert (s.skipped, s.done, s.failed) == (n_done, total - n_done, 0)
    clean = tmp_path / "clean.sqlite"
    run_sweep_checked(cfg, clean, progress=False)  # uninterrupted, in-process
    assert _rows(db) == _rows(clean) and len(_rows(db)) == 2 * 2 * 18


def test_dask_send_files_and_the_worker_check(tmp_path, monkeypatch, own_cache):
    """--send-files on a LocalCluster (file: mask with a key included) == in-process; a worker
    whose file differs from the parent's stops the sweep before any task runs."""
    pytest.importorskip("dask.distributed", reason="dask[distributed] is not installed")
    cfg = _config(tmp_path, masks=(_file_mask(tmp_path),), n=6, shard=3, methods=("blind",))
    ref, shipped = tmp_path / "ref.sqlite", tmp_path / "shipped.sqlite"
    run_sweep_checked(cfg, ref, progress=False)
    s = run_sweep_checked(
        cfg, shipped, workers=1, scheduler="local", send_files=True, progress=False
    )
    assert (s.done, s.failed) == (4, 0)
    assert _rows(shipped) == _rows(ref)
    # the worker process wrote its copies into this test's folder (model, data, mask)
    assert len([p for p in own_cache.iterdir() if not p.name.startswith(".")]) == 3

    real = engine_dask.file_sha256  # the parent believes the model has other content
    monkeypatch.setattr(
        engine_dask, "file_sha256", lambda p: "0" * 64 if str(p).endswith(".onnx") else real(p)
    )
    db = tmp_path / "refused.sqlite"
    with pytest.raises(ConfigError, match=r"--send-files.*other content"):
        run_sweep_checked(cfg, db, workers=1, scheduler="local", progress=False)
    with Store(db, readonly=True) as st:
        assert st.task_counts() == {}


def test_unreachable_scheduler_is_a_config_error(tmp_path, monkeypatch):
    pytest.importorskip("dask.distributed", reason="dask[distributed] is not installed")
    monkeypatch.setattr(engine_dask, "_CONNECT_TIMEOUT_S", 2)
    with pytest.raises(ConfigError, match="tcp://127.0.0.1:9: expected the address"):
        run_sweep_checked(_config(tmp_path), tmp_path / "x.sqlite", scheduler="tcp://127.0.0.1:9",
                  progress=False)  # fmt: skip


# ------------------------------------------------------------------ the shipped-files cache
def test_cache_folder_is_private_and_content_addressed(tmp_path, own_cache, monkeypatch):
    """The folder is made 0700; a file is named by its SHA-256 and rewritten (same bytes) if
    something outside removed it; the default folder is per user."""
    data = b"model bytes"
    sha = hashlib.sha256(data).hexdigest()
    p = Path(engine_dask._materialize(sha, data, "/somewhere/m.onnx"))
    assert p.parent == own_cache and p.name == f"{sha[:24]}-m.onnx"
    assert p.read_bytes() == data and (own_cache.stat().st_mode & 0o777) == 0o700
    p.unlink()  # a tmp cleaner
    assert Path(engine_dask._materialize(sha, data, "m.onnx")).read_bytes() == data
    monkeypatch.delenv(engine_dask.CACHE_ENV)
    monkeypatch.setattr(engine_dask.tempfile, "gettempdir", lambda: str(tmp_path))
    assert engine_dask._cache_folder() == tmp_path / f"refinv-sweep-files-{os.getuid()}"


def test_cache_folder_that_is_a_link_or_anothers_is_refused(tmp_path, monkeypatch):
    """A link planted where the cache folder goes (another user could make one in a shared
    /tmp and swap the files behind it) is refused with the way out."""
    real = tmp_path / "elsewhere"
    real.mkdir()
    link = tmp_path / "cache"
    link.symlink_to(real)
    monkeypatch.setenv(engine_dask.CACHE_ENV, str(link))
    with pytest.raises(ConfigError, match="got a link or a file; set REFINV_SWEEP_CACHE"):
        engine_dask._cache_folder()
    monkeypatch.setenv(engine_dask.CACHE_ENV, str(real))
    monkeypatch.setattr(engine_dask.os, "getuid", lambda: os.stat(real).st_uid + 1)
    with pytest.raises(ConfigError, match="got a folder of uid"):
        engine_dask._cache_folder()
