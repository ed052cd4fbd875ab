"""Stores that SQLite finds intact but whose rows are not what refinv wrote (quick_check
passes): deleted sample rows, cells of the wrong type, rows of no task. `refinv report`
refuses them (exit 2, a message naming the tasks); `refinv sweep` recomputes those tasks,
after which the store equals an undamaged one."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from test_sweep import _config, _rows, _table, pytestmark  # noqa: F401

from refinv.cli import main
from refinv.errors import ConfigError
from refinv.sweep import Store, report_from_db, run_sweep


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A finished small sweep: 1 mask x 2 splits x 2 methods x 2 shards = 8 tasks."""
    d = tmp_path_factory.mktemp("checked")
    cfg = _config(d, n=4, shard=2, max_iter=3, masks=("random:0.5",), methods=("blind", "known"))
    db = d / "clean.sqlite"
    s = run_sweep(cfg, db, progress=False)
    assert s.done == s.total == 8
    return cfg, db


def _edit(src: Path, dst: Path, *sql: str) -> None:
    shutil.copy(src, dst)
    con = sqlite3.connect(dst)
    for q in sql:
        con.execute(q)
    con.commit()
    assert con.execute("PRAGMA quick_check").fetchone()[0] == "ok"  # SQLite sees no damage
    con.close()


_ONE = "(SELECT task_id FROM tasks WHERE method = 'known' AND split = 'train' AND start = 2)"
DAMAGE = {
    "deleted rows": [f"DELETE FROM results WHERE task_id = {_ONE} AND sample = 3"],
    "psnr text": [f"UPDATE results SET psnr = 'high' WHERE task_id = {_ONE} AND sample = 2"],
    "mse blob": [f"UPDATE results SET mse = x'00ff' WHERE task_id = {_ONE} AND sample = 3"],
    "flag 7": [f"UPDATE results SET converged = 7 WHERE task_id = {_ONE}"],
    "sample moved": [f"UPDATE results SET sample = 9 WHERE task_id = {_ONE} AND sample = 3"],
    "task row gone": [f"DELETE FROM tasks WHERE task_id = {_ONE}"],  # its rows: of no task
}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_report_refuses_and_sweep_recomputes_a_logically_damaged_store(
    clean, tmp_path, how, capsys
):
    cfg, src = clean
    db = tmp_path / "d.sqlite"
    _edit(src, db, *DAMAGE[how])
    what = "result row" if how == "task row gone" else "known / train \\[2:4\\]"
    with pytest.raises(ConfigError, match=f"{what}.*refinv sweep CONFIG --db"):
        report_from_db(db)
    assert main(["report", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refinv report: error: ") and "Traceback" not in err
    rc = main(["sweep", str(cfg), "--db", str(db), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "7 already in" in out and "1 computed" in out, out
    assert _rows(db) == _rows(src)  # the task is recomputed to the same numbers
    assert _table(db) == _table(src)


def test_damaged_checkpoint_rows_are_refused(clean, tmp_path):
    cfg, src = clean
    db = tmp_path / "c.sqlite"
    _edit(src, db, "UPDATE checkpoints SET train_loss = 'low'")
    for run in (lambda: report_from_db(db), lambda: run_sweep(cfg, db, progress=False)):
        with pytest.raises(
            ConfigError, match="checkpoint rows of the wrong types.*train_loss text"
        ):
            run()


def test_an_intact_store_passes_the_checks(clean):
    _, src = clean
    with Store(src, readonly=True) as st:
        assert len(st.done_tasks()) == 8
    assert len(report_from_db(src)["runs"]) == 4
