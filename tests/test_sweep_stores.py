"""Sweep stores that are not what refinv wrote (issue 19): foreign SQLite files, settings that
are not JSON, damaged pages; and (slow) kills with worker processes, concurrent sweeps."""

from __future__ import annotations

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
from test_sweep import MODEL, _config, _rows, _table, pytestmark  # noqa: F401

from refinv.cli import main
from refinv.errors import ConfigError
from refinv.sweep import Store, load_config, make_tasks, report_from_db


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A finished small sweep: (config, store) -- 2 masks x 2 splits x 3 methods x 5 shards."""
    d = tmp_path_factory.mktemp("stores")
    cfg = _config(d, n=10, shard=2, max_iter=5)
    db = d / "clean.sqlite"
    s = run_sweep_checked(cfg, db, progress=False)
    assert s.done == s.total == 60
    return cfg, db


def _tables(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return sorted(
            r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type='table'")
        )
    finally:
        con.close()


def _both_refuse(cfg: Path, db: Path, match: str, capsys) -> None:
    """`refinv sweep` and `refinv report` (and the API) refuse db, exit 2, db unchanged."""
    before = db.read_bytes()
    with pytest.raises(ConfigError, match=match):
        report_from_db(db)
    with pytest.raises(ConfigError, match=match):
        run_sweep_checked(cfg, db, progress=False)
    capsys.readouterr()
    for argv in (["report", str(db)], ["sweep", str(cfg), "--db", str(db), "--quiet"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"refinv {argv[0]}: error: ") and "Traceback" not in err
    assert db.read_bytes() == before


def test_another_programs_sqlite_file_is_refused_and_left_alone(clean, tmp_path, capsys):
    cfg, _ = clean
    db = tmp_path / "people.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE people (name TEXT)")
    con.execute("INSERT INTO people VALUES ('ada')")
    con.commit()
    con.close()
    _both_refuse(cfg, db, "not a refinv sweep database.*'people'", capsys)
    assert _tables(db) == ["people"]  # no refinv tables added to someone else's database


def test_same_table_names_other_columns_refused(clean, tmp_path, capsys):
    cfg, _ = clean
    db = tmp_path / "lookalike.sqlite"
    con = sqlite3.connect(db)
    for t in ("meta", "checkpoints", "tasks", "results"):
        con.execute(f"CREATE TABLE {t} (k TEXT, v TEXT)")
    con.commit()
    con.close()
    _both_refuse(cfg, db, "table '\\w+' has the columns \\['k', 'v'\\]", capsys)


@pytest.mark.parametrize(
    "value, match",
    [("{not json", "meta 'settings' is not JSON"), ("[1, 2]", "'settings' should be a JSON dict")],
)
def test_settings_that_are_not_refinvs_json_are_refused(clean, tmp_path, capsys, value, match):
    cfg, src = clean
    db = tmp_path / "s.sqlite"
    shutil.copy(src, db)
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = ? WHERE key = 'settings'", (value,))
    con.commit()
    con.close()
    _both_refuse(cfg, db, match, capsys)


def _damage(src: Path, dst: Path) -> None:
    """dst = src with 1 KB of random bytes in the middle of its per-image rows (a disk or
    copy error; the middle of the file can be a page of the arrays table, whose damage the
    next run repairs by computing the task's arrays again)."""
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    con = sqlite3.connect(src)
    try:  # the middle page of the results table, where SQLite's dbstat can say
        pages = [r[0] for r in con.execute("SELECT pageno FROM dbstat WHERE name = 'results'")]
        size = con.execute("PRAGMA page_size").fetchone()[0]
        if pages:
            mid = (sorted(pages)[len(pages) // 2] - 1) * size + size // 2
    except sqlite3.DatabaseError:
        pass
    finally:
        con.close()
    data[mid : mid + 1024] = np.random.default_rng(0).bytes(1024)
    dst.write_bytes(bytes(data))
    con = sqlite3.connect(dst)
    try:
        assert con.execute("PRAGMA quick_check").fetchone()[0] != "ok"
    except sqlite3.DatabaseError:
        pass  # "database disk image is malformed": damaged too
    finally:
        con.close()


def test_damaged_store_is_refused_and_its_complete_tasks_salvaged(clean, tmp_path, capsys):
    cfg, src = clean
    bad = tmp_path / "bad.sqlite"
    _damage(src, bad)
    _both_refuse(cfg, bad, "damaged .*--salvage .*bad.sqlite", capsys)
    new = tmp_path / "new.sqlite"
    rc = main(["sweep", str(cfg), "--db", str(new), "--salvage", str(bad), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    kept = int(out.split("salvaged ")[1].split()[0])
    assert 0 < kept < 60 and f"{60 - kept} computed" in out
    assert _rows(new) == _rows(src)  # the intact tasks kept, the lost ones recomputed
    assert _table(new) == _table(src)
    with pytest.raises(ConfigError, match="expected a new file"):
        Store.salvage(bad, new)
    with pytest.raises(ConfigError, match="not a refinv sweep database"):
        people = tmp_path / "p.sqlite"
        sqlite3.connect(people).execute("CREATE TABLE people (name TEXT)").connection.commit()
        Store.salvage(people, tmp_path / "p2.sqlite")


def test_salvage_of_an_intact_store_keeps_every_task(clean, tmp_path):
    _, src = clean
    assert Store.salvage(src, tmp_path / "copy.sqlite") == (60, 0)
    assert _rows(tmp_path / "copy.sqlite") == _rows(src)


# ------------------------------------------------------------------ slow: kills, concurrency
def _sweep_proc(cfg: Path, db: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "refinv.sweep", str(cfg), "--db", str(db), "--quiet", *extra],
        env=dict(os.environ, REFINV_NO_PROGRESS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_kill_9_with_two_workers_resumes_to_an_uninterrupted_store(tmp_path):
    cfg = _config(tmp_path, n=30, shard=3, max_iter=40, masks=("random:0.5",))
    total = len(make_tasks(load_config(cfg)))
    db = tmp_path / "killed.sqlite"
    for kill_after in (2, 20):  # two kills, the second after the resume made progress
        proc = _sweep_proc(cfg, db, "--workers", "2")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and _done(db) < kill_after:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the sweep finished before it could be killed"
        proc.stderr.close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_done = con.execute("SELECT count(*) FROM tasks WHERE status='done'").fetchone()[0]
    assert con.execute("SELECT count(*) FROM results").fetchone()[0] == 3 * n_done
    con.close()
    s = run_sweep_checked(cfg, db, workers=2, progress=False)
    assert s.skipped == n_done and s.done == total - n_done and s.failed == 0
    clean = tmp_path / "clean.sqlite"
    run_sweep_checked(cfg, clean, progress=False)
    assert _rows(db) == _rows(clean) and len(_rows(db)) == 2 * 30 * 3
    assert _table(db) == _table(clean)


@pytest.mark.slow
def test_two_concurrent_sweeps_on_one_store(tmp_path):
    cfg = _config(tmp_path, n=12, shard=2, max_iter=10)
    db = tmp_path / "shared.sqlite"
    procs = [_sweep_proc(cfg, db), _sweep_proc(cfg, db, "--workers", "2")]
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=900)
        errs.append(err.decode())
        assert p.returncode == 0, err.decode()
    clean = tmp_path / "clean.sqlite"
    run_sweep_checked(cfg, clean, progress=False)
    rows = _rows(db)
    assert len(rows) == len({r[:7] for r in rows}) == 2 * 2 * 3 * 12  # none lost or doubled
    assert rows == _rows(clean)
    assert _table(db) == _table(clean)
    again = run_sweep_checked(cfg, db, progress=False)
    assert again.done == 0 and again.skipped == again.total
