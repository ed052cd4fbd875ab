"""Store salvage and opening checks, row by row: which rows a bisection around unreadable rows
keeps (every readable one, in rowid order), a sample row whose key columns disagree with its
task (the task is dropped), a file holding only some of refinv's tables (refused)."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
from test_sweep import _config, pytestmark  # noqa: F401

from refinv.engine.store import _readable_rows
from refinv.errors import ConfigError
from refinv.sweep import Store, run_sweep


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A finished small sweep: 1 mask x 2 splits x 2 methods x 2 shards = 8 tasks."""
    d = tmp_path_factory.mktemp("salvage")
    cfg = _config(d, n=4, shard=2, max_iter=3, masks=("random:0.5",), methods=("known", "blind"))
    db = d / "clean.sqlite"
    s = run_sweep(cfg, db, progress=False)
    assert s.done == s.total == 8
    return db


class _Damaged:
    """A connection to the table ``t`` on which a statement that touches a ``bad`` rowid
    fails, as a damaged page makes SQLite fail the whole statement: a rowid range holding
    one, a seek to the next rowid that passes one; ``top_lost``: max(rowid) fails too.
    ``bad``: rowids, and ``(first, last)`` ranges (``last`` may be ``inf``: nothing from
    ``first`` on can be read). Counts the statements."""

    def __init__(self, con: sqlite3.Connection, bad, top_lost: bool = False):
        self.con, self.top_lost, self.calls = con, top_lost, 0
        self.bad = [r if isinstance(r, tuple) else (r, r) for r in bad]
        rows = [r for (r,) in con.execute("SELECT rowid FROM t")]
        self.good = [r for r in rows if not self._hit(r, r)]

    def _hit(self, lo, hi) -> bool:
        return any(a <= hi and lo <= b for a, b in self.bad)

    def execute(self, sql: str, params=()):
        self.calls += 1
        if len(params) == 2:  # WHERE rowid BETWEEN lo AND hi
            lo, hi = params
        elif len(params) == 1:  # the next rowid after params[0]: the seek passes lo..hi
            lo = params[0] + 1
            hi = next((r for r in self.good if r >= lo), float("inf"))
        elif self.top_lost:  # SELECT max(rowid)
            raise sqlite3.DatabaseError("database disk image is malformed")
        else:
            lo, hi = 1, 0
        if self._hit(lo, hi):
            raise sqlite3.DatabaseError("database disk image is malformed")
        return self.con.execute(sql, params)


def _numbers(n: int) -> sqlite3.Connection:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (v INTEGER)")
    con.executemany("INSERT INTO t VALUES (?)", [(10 * i,) for i in range(1, n + 1)])
    return con


@pytest.mark.parametrize(
    "n, bad",
    [(100, {37, 38, 70}), (100, {1}), (100, {100}), (7, {2, 4, 6}), (64, {32, 33}), (5, set())],
)
def test_bisection_keeps_every_readable_row_in_rowid_order(n, bad):
    got = _readable_rows(_Damaged(_numbers(n), bad), "t", ["rowid", "v"])
    assert got == [(r, 10 * r) for r in range(1, n + 1) if r not in bad]


def test_bisection_of_a_table_that_cannot_be_read_at_all():
    assert _readable_rows(_Damaged(_numbers(6), set(range(1, 7))), "t", ["v"]) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "n, bad, want",
    [
        (20, [(1, float("inf"))], []),  # a damaged root page: nothing readable at all
        (10_000, {5, 6000}, None),
        (3, set(), None),
        (5000, [(4000, 4199)], None),
        (5000, [(4500, float("inf"))], list(range(1, 4500))),  # the right edge lost
    ],
)
def test_bisection_without_max_rowid_is_bounded(n, bad, want):
    """A damaged page can make max(rowid) unreadable too: the readable rows are still found
    (in chunks until the table ends), and a table of which nothing can be read costs a
    bounded number of statements (not a bisection of 2^40 rowids, which never ends)."""
    con = _Damaged(_numbers(n), bad, top_lost=True)
    got = _readable_rows(con, "t", ["rowid"])
    assert got == [(r,) for r in (want if want is not None else con.good)]
    assert con.calls < 40_000


_ODD = {  # SQL on (task_id, sample) of one sample row
    "key": "UPDATE results SET model_sha256 = '" + "f" * 64 + "' WHERE task_id = ? AND sample = ?",
    "failed": "UPDATE tasks SET status = 'failed', error = 'boom' WHERE task_id = ?1 AND ?2 >= 0",
    "missing": "DELETE FROM results WHERE task_id = ? AND sample = ?",
}


@pytest.mark.parametrize("odd", sorted(_ODD))
def test_a_task_that_is_not_whole_and_done_is_dropped(store, tmp_path, odd):
    """One task of 8 is not salvageable: a sample row whose model_sha256 (key column 3)
    differs from its task's sha256 (key), a task marked failed (its rows still there), a
    task missing one sample row. That task is left out (the next sweep recomputes it), the 7
    others are kept whole."""
    src = tmp_path / "odd.sqlite"
    shutil.copy(store, src)
    con = sqlite3.connect(src)
    task, sample = con.execute(
        "SELECT task_id, sample FROM results ORDER BY task_id, sample LIMIT 1 OFFSET 5"
    ).fetchone()
    con.execute(_ODD[odd], (task, sample))
    con.commit()
    con.close()
    new = tmp_path / "new.sqlite"
    assert Store.salvage(src, new) == (7, 1)
    con = sqlite3.connect(new)
    try:
        tasks = {r[0] for r in con.execute("SELECT task_id FROM tasks")}
        assert task not in tasks and len(tasks) == 7
        assert (
            con.execute("SELECT count(*) FROM results WHERE task_id = ?", (task,)).fetchone()[0]
            == 0
        )
        assert con.execute("SELECT count(*) FROM results").fetchone()[0] == 7 * 2
    finally:
        con.close()


@pytest.mark.parametrize(
    "drop", [("results",), ("tasks", "results"), ("checkpoints", "tasks", "results")]
)
def test_a_file_with_only_some_of_refinvs_tables_is_refused(store, tmp_path, drop):
    """The tables refinv wrote, minus some: neither opened (nor completed by CREATE TABLE) nor
    salvaged; the file is left as it was."""
    db = tmp_path / "part.sqlite"
    shutil.copy(store, db)
    con = sqlite3.connect(db)
    for t in drop:
        con.execute(f"DROP TABLE {t}")
    con.commit()
    con.execute("VACUUM")
    con.close()
    before = db.read_bytes()
    for readonly in (False, True):
        with pytest.raises(ConfigError, match="not a refinv sweep database"):
            Store(db, readonly=readonly)
    with pytest.raises(ConfigError, match="not a refinv sweep database"):
        Store.salvage(db, tmp_path / "out.sqlite")
    assert db.read_bytes() == before
    assert not (tmp_path / "out.sqlite").exists()
