"""The SQLite results store of every batch of recoveries (stdlib ``sqlite3``, WAL mode).

``refinv evaluate --db``, ``refinv sweep``, ``refinv report`` and ``refinv audit`` keep their
units' results here, keyed by each unit's content (:func:`refinv.engine.plan.unit_key`):
a unit already in the store is not computed again (resume).

Tables (full description in docs/sweep.md):

``meta(key, value)``
    ``schema_version``, ``settings`` (JSON: seed, noise_std, shard_size,
    solver), ``fingerprint`` (hash of the settings), ``masks``/``methods``
    (JSON lists, the order of the report), ``created_utc``; ``layout:LABEL`` (JSON: the
    input layout record of checkpoint LABEL, ``OnnxModel.layout_info()``; absent in stores
    written before layouts, whose reports then give ``layout: null``).
``checkpoints(label, position, model, sha256, train_loss, test_loss)``
    One row per model of the config.
``tasks``
    One row per task: ``task_id, checkpoint, sha256, mask, method, split,
    start, stop, status, error, seconds, onnx_seconds, refinv_version,
    finished_utc``; ``status`` is ``done`` or ``failed`` (with the error text).
``results``
    One row per sample x task: ``task_id, checkpoint, model_sha256, mask,
    method, split, sample, mse, psnr, iterations, converged, diverged,
    residual, erased_fraction, mask_error, seed, noise_std, solver,
    refinv_version``; ``UNIQUE(checkpoint, mask, method, split, sample)``.
``arrays``
    Named arrays of a done task (``task_id, name, data``: a ``.npy`` file, read without
    pickles): the exact pixel counts of its masks (``observed``, ``mismatched``,
    ``pixels``) and the images that figures draw (``x``, ``y``, ``x_hat``, ``h_true``,
    ``h_est`` of the first ones). A store written before this table has none: it is added
    when the store is next opened for writing, and its reports fall back to per-sample
    means.

Crash safety: a task's result rows, its arrays and its ``tasks`` row (status ``done``)
are written in ONE transaction, so a task is either complete or absent; WAL
journaling means a killed process never leaves a corrupt database, and the
next run simply recomputes the missing tasks.

Opening checks: a file that is not SQLite, an SQLite file with other tables
(another program's database), settings that are not the JSON refinv wrote,
or a store SQLite's ``PRAGMA quick_check`` finds damaged (a disk or copy
error, not a killed run) is refused with a :class:`~refinv.errors.ConfigError`
before anything is written. The complete tasks of a damaged store are kept
by :meth:`Store.salvage` (``refinv sweep CONFIG --db NEW.sqlite --salvage
DAMAGED.sqlite``): it copies every task whose row and sample rows are all
readable into a new store; the next sweep computes the rest.

A store SQLite finds intact can still hold rows refinv did not write (a deleted sample row,
a text or blob where a number goes, rows of no completed task). Every open checks, in one
pass over the results table (0.7 s for 200,000 rows on the shared 2-core machine), that
each done task has exactly its sample rows ``start .. stop - 1`` with well-typed cells:
a store opened for reading (``refinv report``) with such tasks is refused with a
:class:`~refinv.errors.ConfigError` naming them; a store opened to resume a sweep drops
them (a warning) and the sweep recomputes them.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..provenance import utc_now

__all__ = ["Store", "STORE_SCHEMA_VERSION"]

log = logging.getLogger(__name__)

STORE_SCHEMA_VERSION = 1
#: meta key prefix of a checkpoint's layout record (``OnnxModel.layout_info()``), JSON
LAYOUT_KEY = "layout:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    label TEXT PRIMARY KEY, position INTEGER NOT NULL, model TEXT NOT NULL,
    sha256 TEXT NOT NULL, train_loss REAL, test_loss REAL
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, checkpoint TEXT NOT NULL, sha256 TEXT NOT NULL,
    mask TEXT NOT NULL, method TEXT NOT NULL, split TEXT NOT NULL,
    start INTEGER NOT NULL, stop INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')), error TEXT,
    seconds REAL, onnx_seconds REAL, refinv_version TEXT, finished_utc TEXT
);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT NOT NULL REFERENCES tasks(task_id),
    checkpoint TEXT NOT NULL, model_sha256 TEXT NOT NULL, mask TEXT NOT NULL,
    method TEXT NOT NULL, split TEXT NOT NULL, sample INTEGER NOT NULL,
    mse REAL, psnr REAL NOT NULL, iterations INTEGER NOT NULL, converged INTEGER NOT NULL,
    diverged INTEGER NOT NULL, residual REAL, erased_fraction REAL NOT NULL, mask_error REAL,
    seed INTEGER NOT NULL, noise_std REAL NOT NULL, solver TEXT NOT NULL,
    refinv_version TEXT NOT NULL,
    PRIMARY KEY (task_id, sample),
    UNIQUE (checkpoint, mask, method, split, sample)
);
CREATE TABLE IF NOT EXISTS arrays (
    task_id TEXT NOT NULL REFERENCES tasks(task_id), name TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (task_id, name)
);
"""


def _task_key(task: Any) -> tuple:
    """The columns a task's row and its sample rows start with, in table order."""
    return (task.task_id, task.checkpoint, task.sha256, task.mask, task.method, task.split)


_RESULT_COLS = (
    "task_id checkpoint model_sha256 mask method split sample mse psnr iterations converged "
    "diverged residual erased_fraction mask_error seed noise_std solver refinv_version"
).split()


_TABLES = {
    "meta": ["key", "value"],
    "checkpoints": ["label", "position", "model", "sha256", "train_loss", "test_loss"],
    "tasks": (
        "task_id checkpoint sha256 mask method split start stop status error seconds "
        "onnx_seconds refinv_version finished_utc"
    ).split(),
    "results": _RESULT_COLS,
    "arrays": ["task_id", "name", "data"],
}
#: tables a store written before ``arrays`` existed lacks (added when opened for writing)
_OPTIONAL = {"arrays"}


def _recover_hint(path: Path) -> str:
    return (
        f"its complete tasks can be kept: `refinv sweep CONFIG.toml --db NEW.sqlite --salvage "
        f"{path}` copies every readable complete task into NEW.sqlite and computes the rest "
        f"(or delete {path} and rerun the sweep to recompute everything)"
    )


def _create(path: Path) -> None:
    """Create a missing database file with the mode of a plain ``open()`` (``0o666 &
    ~umask``; SQLite's own is 0644 & ~umask), which its -wal and -shm files then copy."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        pass
    except OSError:
        pass  # unwritable folder and the like: sqlite3.connect says so below


class Store:
    """An open results database, written by a sweep's parent process (its workers only compute).

    Two sweeps of the same config on one store are safe (every read-then-write is one
    transaction; a task computed by both is written twice with the same numbers).
    """

    def __init__(self, path: str | Path, *, readonly: bool = False, check: bool = True):
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise ConfigError(f"{self.path}: no such results database")
        if self.path.is_dir():
            raise ConfigError(f"{self.path}: expected a results database file, got a directory")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _create(self.path)
        try:
            uri = self.path.resolve().as_uri() + "?mode=ro" if readonly else str(self.path)
            self.conn = sqlite3.connect(uri, uri=readonly, isolation_level=None, timeout=30.0)
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path}: cannot open the results database ({exc})") from exc
        try:
            self._open(readonly, check)
        except BaseException:
            self.conn.close()
            raise

    def _open(self, readonly: bool, check: bool) -> None:
        try:
            tables = self._tables()
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from exc
        theirs = sorted(t for t in tables if t not in _TABLES)
        if theirs or (tables and not set(_TABLES) - _OPTIONAL <= set(tables)):
            raise ConfigError(
                f"{self.path}: not a refinv sweep database: expected the tables "
                f"{sorted(_TABLES)}, it has {sorted(tables)} (another program's database? "
                "use another --db)"
            )
        for name, cols in tables.items():
            if cols != list(_TABLES[name]):
                raise ConfigError(
                    f"{self.path}: not a refinv sweep database: table {name!r} has the columns "
                    f"{cols}, expected {list(_TABLES[name])}"
                )
        if check:
            try:
                problems = [r[0] for r in self.conn.execute("PRAGMA quick_check(5)")]
            except sqlite3.DatabaseError as exc:
                raise self._damaged(exc) from exc
            if problems != ["ok"]:
                raise self._damaged(" / ".join(p.replace("\n", " ") for p in problems)[:300])
        try:
            if not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(_SCHEMA)
            self.meta()  # settings, masks, methods: the JSON refinv wrote
            if check:
                self._check_rows(readonly)
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from exc

    def _check_rows(self, readonly: bool) -> None:
        """Refuse (reading) or recompute (resuming) what a valid SQLite file can still get
        wrong: a done task whose sample rows are missing, outside its range or of the wrong
        type, result rows of no done task, checkpoint rows of the wrong type."""
        bad_ck = _bad_checkpoints(self.conn)
        if bad_ck:
            raise ConfigError(
                f"{self.path}: not a refinv sweep database: checkpoint rows of the wrong types "
                f"({'; '.join(bad_ck[:3])}); " + _recover_hint(self.path)
            )
        if readonly:
            bad, orphans = _bad_tasks(self.conn), _orphan_rows(self.conn)
            if bad or orphans:
                raise ConfigError(
                    f"{self.path}: {_describe_bad(bad, orphans)}; its report would leave "
                    "samples out or mix in values refinv did not write. `refinv sweep CONFIG "
                    f"--db {self.path}` recomputes those tasks (or "
                    + _recover_hint(self.path)
                    + ")"
                )
            return
        with self._tx():  # checked and dropped in one transaction: concurrent sweeps
            bad, orphans = _bad_tasks(self.conn), _orphan_rows(self.conn)
            if bad or orphans:
                log.warning("%s: %s; they are recomputed", self.path, _describe_bad(bad, orphans))
                self.conn.executemany(
                    "DELETE FROM results WHERE task_id = ?", [(t[0],) for t in bad]
                )
                self.conn.executemany("DELETE FROM tasks WHERE task_id = ?", [(t[0],) for t in bad])
                self.conn.executemany(
                    "DELETE FROM arrays WHERE task_id = ?", [(t[0],) for t in bad]
                )
                if orphans:
                    self.conn.execute(f"DELETE FROM results WHERE {_ORPHAN}")

    def _tables(self) -> dict[str, list[str]]:
        names = [
            r[0]
            for r in self.conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            n: [r[1] for r in self.conn.execute(f"PRAGMA table_info({json.dumps(n)})")]
            for n in names
        }

    def _damaged(self, what: Any) -> ConfigError:
        return ConfigError(
            f"{self.path}: the results database is damaged (SQLite: {what}); "
            + _recover_hint(self.path)
        )

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------ salvage
    @classmethod
    def salvage(cls, damaged: str | Path, new: str | Path) -> tuple[int, int]:
        """Copy the complete, readable tasks of a ``damaged`` store into a ``new`` one.

        Reads every table of ``damaged`` by rowid ranges, skipping the rows
        SQLite cannot read; copies ``meta`` and ``checkpoints``, and each
        ``done`` task whose ``tasks`` row and every sample row (``start`` to
        ``stop - 1``) were read, in one transaction per task. Failed tasks and
        tasks with a missing row are left out: the next sweep on ``new``
        recomputes them. Returns ``(kept, dropped)`` task counts.
        """
        damaged, new = Path(damaged), Path(new)
        if not damaged.is_file():
            raise ConfigError(f"--salvage {damaged}: no such file")
        if new.exists():
            raise ConfigError(f"{new}: expected a new file to salvage {damaged} into, it exists")
        try:
            con = sqlite3.connect(damaged.resolve().as_uri() + "?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise ConfigError(f"{damaged}: cannot open ({exc})") from exc
        try:
            names = {
                r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
            }
            if not set(_TABLES) - _OPTIONAL <= names:
                raise ConfigError(
                    f"{damaged}: not a refinv sweep database (tables {sorted(names)}); "
                    "nothing to salvage"
                )
            data = {t: _readable_rows(con, t, _TABLES[t]) for t in _TABLES if t in names}
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{damaged}: cannot be read at all ({exc}); rerun the sweep") from exc
        finally:
            con.close()
        meta = {k: v for k, v in data["meta"]}
        if "settings" not in meta or "fingerprint" not in meta:
            raise ConfigError(f"{damaged}: its settings cannot be read; rerun the sweep")
        by_task: dict[str, list[tuple]] = {}
        for r in data["results"]:
            by_task.setdefault(r[0], []).append(r)
        arrays: dict[str, list[tuple]] = {}
        for r in data.get("arrays", []):
            arrays.setdefault(r[0], []).append(r)
        kept = dropped = 0
        with cls(new) as out:
            with out._tx():
                out.conn.executemany("INSERT INTO meta VALUES (?, ?)", data["meta"])
                out.conn.executemany(
                    "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?)",
                    data["checkpoints"],
                )
            out.meta()  # the copied settings are refinv's JSON
            for t in data["tasks"]:
                rows = sorted(by_task.get(t[0], []), key=lambda r: r[6])
                start, stop = t[6], t[7]
                ok = (
                    t[8] == "done"
                    and isinstance(start, int)
                    and isinstance(stop, int)
                    and [r[6] for r in rows]
                    == ([] if t[4] in ROWLESS_METHODS else list(range(start, stop)))
                    and all(tuple(r[:6]) == tuple(t[:6]) for r in rows)
                )
                if ok:
                    try:
                        with out._tx():
                            out.conn.execute(
                                f"INSERT INTO tasks VALUES ({', '.join('?' * len(t))})", t
                            )
                            out.conn.executemany(
                                f"INSERT INTO results VALUES ({', '.join('?' * len(_RESULT_COLS))})",
                                rows,
                            )
                            out.conn.executemany(
                                "INSERT INTO arrays VALUES (?, ?, ?)", arrays.get(t[0], [])
                            )
                    except sqlite3.DatabaseError:
                        ok = False
                kept += ok
                dropped += not ok
        log.info("salvage %s -> %s: %d tasks kept, %d left out", damaged, new, kept, dropped)
        return kept, dropped

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ meta
    def meta(self) -> dict[str, Any]:
        out = {}
        for k, v in self.conn.execute("SELECT key, value FROM meta"):
            try:
                out[k] = json.loads(v)
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"{self.path}: not a refinv sweep database: meta {k!r} is not JSON "
                    f"({exc}): {str(v)[:80]!r}"
                ) from exc
        kinds = {"schema_version": int, "settings": dict, "fingerprint": str, "masks": list,
                 "methods": list, "created_utc": str}  # fmt: skip
        for k, kind in kinds.items():
            if k in out and not isinstance(out[k], kind):
                raise ConfigError(
                    f"{self.path}: not a refinv sweep database: meta {k!r} should be a JSON "
                    f"{kind.__name__}, got {out[k]!r:.80}"
                )
        for k in ("masks", "methods"):
            if not all(isinstance(m, str) for m in out.get(k, [])):
                raise ConfigError(f"{self.path}: meta {k!r}: expected a list of names")
        v = out.get("schema_version", STORE_SCHEMA_VERSION)
        if v != STORE_SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path}: store schema version {v}, this refinv reads version "
                f"{STORE_SCHEMA_VERSION}"
            )
        return out

    def init_sweep(
        self, settings: dict, fingerprint: str, masks: list[str], methods: list[str]
    ) -> None:
        """Record the sweep's settings, or refuse a config whose settings differ from the DB's."""
        with self._tx():  # read and write in one transaction: concurrent sweeps
            meta = self.meta()
            if "fingerprint" in meta and meta["fingerprint"] != fingerprint:
                raise ConfigError(
                    f"{self.path}: holds results computed with other settings "
                    f"{json.dumps(meta.get('settings'), sort_keys=True)}; this config has "
                    f"{json.dumps(settings, sort_keys=True)}. Use another --db for a new sweep."
                )
            old_masks = meta.get("masks", [])
            old_methods = meta.get("methods", [])
            rows = {
                "schema_version": STORE_SCHEMA_VERSION,
                "settings": settings,
                "fingerprint": fingerprint,
                "masks": old_masks + [m for m in masks if m not in old_masks],
                "methods": old_methods + [m for m in methods if m not in old_methods],
                "created_utc": meta.get("created_utc", utc_now()),
            }
            for k, v in rows.items():
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, json.dumps(v))
                )

    def _tx(self):
        return _Transaction(self.conn)

    # ------------------------------------------------------------ checkpoints
    def checkpoint(self, label: str) -> dict | None:
        row = self.conn.execute(
            "SELECT label, model, sha256, train_loss, test_loss FROM checkpoints WHERE label = ?",
            (label,),
        ).fetchone()
        if row is None:
            return None
        return dict(zip(("label", "model", "sha256", "train_loss", "test_loss"), row, strict=True))

    def add_checkpoint(
        self, entry: dict, *, refresh: bool = False, other_model: bool = False
    ) -> None:
        """Record a checkpoint (``label, model, sha256, train_loss, test_loss, layout``).

        One already recorded under the label is kept as it is; with ``refresh`` its values
        are replaced by ``entry``'s (losses measured again on the current images). A model
        of another SHA-256 under the same label is refused, unless ``other_model`` (then it
        replaces the recorded one, like ``refresh``)."""
        with self._tx():  # check and insert in one transaction: concurrent sweeps on one store
            old = self.checkpoint(entry["label"])
            if old is not None:
                same = (old["sha256"] or "") == (entry["sha256"] or "")
                if not same and not other_model:
                    raise ConfigError(
                        f"{self.path}: checkpoint {entry['label']!r} was computed with a model "
                        f"of sha256 {(old['sha256'] or '')[:12]}..., the config's has "
                        f"{(entry['sha256'] or '')[:12]}...; give it another label or use "
                        "another --db"
                    )
                if same and not refresh:
                    return
            pos = self.conn.execute(
                "SELECT coalesce((SELECT position FROM checkpoints WHERE label = ?), "
                "(SELECT count(*) FROM checkpoints))", (entry["label"],)
            ).fetchone()[0]  # fmt: skip
            self.conn.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?)",
                (
                    entry["label"],
                    pos,
                    entry["model"],
                    entry["sha256"] or "",  # "": a model without a file (a plain callable)
                    entry["train_loss"],
                    entry["test_loss"],
                ),
            )
            self.conn.execute("DELETE FROM meta WHERE key = ?", (LAYOUT_KEY + entry["label"],))
            if entry.get("layout") is not None:  # the model's layout record, in meta (no
                # column: stores written before layouts existed read unchanged)
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (LAYOUT_KEY + entry["label"], json.dumps(entry["layout"])),
                )

    def checkpoints(self) -> list[dict]:
        rows = self.conn.execute(
            "SELECT label, model, sha256, train_loss, test_loss FROM checkpoints ORDER BY position"
        ).fetchall()
        keys = ("label", "model", "sha256", "train_loss", "test_loss")
        meta = self.meta()
        out = []
        for r in rows:
            ck = dict(zip(keys, r, strict=True))
            ck["sha256"] = ck["sha256"] or None
            layout = meta.get(LAYOUT_KEY + ck["label"])
            ck["layout"] = layout if isinstance(layout, dict) else None
            out.append(ck)
        return out

    # ------------------------------------------------------------ tasks
    def done_tasks(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT task_id FROM tasks WHERE status='done'")}

    def task_counts(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT status, count(*) FROM tasks GROUP BY status"))

    def failures(self) -> list[tuple]:
        return self.conn.execute(
            "SELECT checkpoint, mask, method, split, start, stop, error FROM tasks "
            "WHERE status='failed' ORDER BY checkpoint, mask, method, split, start"
        ).fetchall()

    def write_task(self, task: Any, out: dict, version: str, *, replace: bool = False) -> None:
        """Write a completed task: all its sample rows, its arrays and its ``tasks`` row, in
        one transaction. ``replace``: first remove every other task with rows of the same
        samples (computed with other settings) instead of failing on them."""
        from .plan import json_default

        solver = json.dumps(task.solver, sort_keys=True, default=json_default)
        rows = []
        key = _task_key(task)
        # a unit with per-image rows (recovery, control); a stability unit has arrays only
        for j, i in enumerate(range(task.start, task.stop) if "mse" in out else ()):
            rows.append(
                (
                    *key,
                    i,
                    out["mse"][j],
                    out["psnr"][j],
                    out["iterations"][j],
                    int(out["converged"][j]),
                    int(out["diverged"][j]),
                    out["residual"][j],
                    out["erased_fraction"][j],
                    out["mask_error"][j],
                    task.seed,
                    task.noise_std,
                    solver,
                    version,
                )
            )
        blobs = [(task.task_id, k, _npy(v)) for k, v in (out.get("arrays") or {}).items()]
        with self._tx():
            # a retried failed task: replace its row (a failed task never has sample rows);
            # a task computed again (for arrays it lacked): replace its rows and arrays
            self.conn.execute("DELETE FROM results WHERE task_id = ?", (task.task_id,))
            self.conn.execute("DELETE FROM arrays WHERE task_id = ?", (task.task_id,))
            if replace and rows:
                self._remove_overlapping(task)
            self.conn.executemany(
                f"INSERT INTO results ({', '.join(_RESULT_COLS)}) "
                f"VALUES ({', '.join('?' * len(_RESULT_COLS))})",
                rows,
            )
            self.conn.executemany("INSERT INTO arrays VALUES (?, ?, ?)", blobs)
            self._task_row(task, "done", None, out["seconds"], out["onnx_seconds"], version)

    def _remove_overlapping(self, task: Any) -> None:
        """Delete (whole) the other tasks with rows of ``task``'s samples."""
        others = [r[0] for r in self.conn.execute(
            "SELECT DISTINCT task_id FROM results WHERE checkpoint = ? AND mask = ? AND "
            "method = ? AND split = ? AND sample >= ? AND sample < ? AND task_id != ?",
            (task.checkpoint, task.mask, task.method, task.split, task.start, task.stop,
             task.task_id),
        )]  # fmt: skip
        for t in others:
            for table in ("results", "arrays", "tasks"):
                self.conn.execute(f"DELETE FROM {table} WHERE task_id = ?", (t,))

    def write_failure(self, task: Any, error: str, version: str) -> None:
        with self._tx():
            self._task_row(task, "failed", error, None, None, version)

    def _task_row(self, task, status, error, seconds, onnx_seconds, version) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *_task_key(task),
                task.start,
                task.stop,
                status,
                error,
                seconds,
                onnx_seconds,
                version,
                utc_now(),
            ),
        )

    # ------------------------------------------------------------ arrays
    def arrays(self, task_id: str, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The named arrays of a done task (``names``: only these); ``{}`` if none."""
        if "arrays" not in self._tables():
            return {}
        rows = self.conn.execute(
            "SELECT name, data FROM arrays WHERE task_id = ? ORDER BY name", (task_id,)
        ).fetchall()
        return {k: _from_npy(v, self.path) for k, v in rows if names is None or k in names}

    def array_names(self) -> dict[str, set[str]]:
        """``task_id -> names`` of the arrays every task has."""
        if "arrays" not in self._tables():
            return {}
        out: dict[str, set[str]] = {}
        for t, k in self.conn.execute("SELECT task_id, name FROM arrays"):
            out.setdefault(t, set()).add(k)
        return out

    def group_counts(self, task_ids: set[str] | None = None) -> dict[tuple, dict]:
        """``(checkpoint, mask, method, split) -> {"n", "pixels", "observed", "mismatched"}``:
        the exact pixel counts of each run, summed over its done tasks (of ``task_ids``; a run
        with a task without counts is left out)."""
        if "arrays" not in self._tables():
            return {}
        tasks = {r[0]: r for r in self._done_rows(task_ids)}
        per_task: dict[str, dict] = {}
        cur = self.conn.execute(
            "SELECT task_id, name, data FROM arrays "
            "WHERE name IN ('observed', 'mismatched', 'pixels')"
        )
        for tid, name, data in cur:
            if tid in tasks:
                per_task.setdefault(tid, {})[name] = _from_npy(data, self.path)
        out: dict[tuple, dict] = {}
        for tid, c, m, me, s, a, b, _, _ in tasks.values():
            g = out.setdefault((c, m, me, s), {"n": 0, "pixels": None, "observed": 0,
                                               "mismatched": 0, "ok": True})  # fmt: skip
            d = per_task.get(tid, {})
            if "observed" not in d or "pixels" not in d:
                g["ok"] = False
                continue
            g["ok"] &= g["pixels"] in (None, int(d["pixels"]))
            g["pixels"] = int(d["pixels"])
            g["n"] += b - a
            g["observed"] += int(np.sum(d["observed"]))
            g["mismatched"] += int(np.sum(d["mismatched"])) if "mismatched" in d else 0
        return {k: g for k, g in out.items() if g.pop("ok")}

    def run_array(self, name: str, task_ids: set[str] | None = None) -> dict[tuple, Any]:
        """``(checkpoint, mask, method, split) -> array``: a per-image array ``name`` of each
        run, its done tasks' arrays (of ``task_ids``) in sample order; a run with a task
        without it is left out."""
        if "arrays" not in self._tables():
            return {}
        tasks = {r[0]: r for r in self._done_rows(task_ids)}
        got = {
            tid: _from_npy(data, self.path)
            for tid, data in self.conn.execute(
                "SELECT task_id, data FROM arrays WHERE name = ?", (name,)
            )  # fmt: skip
            if tid in tasks
        }
        parts: dict[tuple, list] = {}
        for tid, c, m, me, s, a, b, _, _ in tasks.values():
            parts.setdefault((c, m, me, s), []).append((a, b, got.get(tid)))
        out = {}
        for key, ps in parts.items():
            ps.sort(key=lambda p: p[0])
            if all(p[2] is not None and len(p[2]) == p[1] - p[0] for p in ps):
                out[key] = np.concatenate([p[2] for p in ps]) if ps else np.zeros(0)
        return out

    def _done_rows(self, task_ids: set[str] | None = None) -> list[tuple]:
        """``(task_id, checkpoint, mask, method, split, start, stop, seconds, onnx_seconds)``
        of the done tasks (of ``task_ids``), in rowid order."""
        rows = self.conn.execute(
            "SELECT task_id, checkpoint, mask, method, split, start, stop, seconds, "
            "onnx_seconds FROM tasks WHERE status = 'done' ORDER BY rowid"
        ).fetchall()
        return [r for r in rows if task_ids is None or r[0] in task_ids]

    # ------------------------------------------------------------ reading
    def results(self) -> list[dict]:
        """All sample rows, ordered by (checkpoint, mask, method, split, sample)."""
        cur = self.conn.execute(
            f"SELECT {', '.join(_RESULT_COLS)} FROM results "
            "ORDER BY checkpoint, mask, method, split, sample"
        )
        return [dict(zip(_RESULT_COLS, r, strict=True)) for r in cur]

    def task_seconds(self, task_ids: set[str] | None = None) -> dict[tuple, tuple]:
        """``(checkpoint, mask, method, split) -> (seconds, onnx_seconds)`` summed over the
        done tasks (of ``task_ids``; ``onnx_seconds`` None when no task has it)."""
        out: dict[tuple, tuple[float, float | None]] = {}
        for _, c, m, me, s, _, _, sec, ort in self._done_rows(task_ids):
            s0, o0 = out.get((c, m, me, s), (0.0, None))
            out[(c, m, me, s)] = (s0 + float(sec or 0.0),
                                  o0 if ort is None else (o0 or 0.0) + ort)  # fmt: skip
        return out


def _npy(a: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def _from_npy(data: bytes, path: Path) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:  # never a pickle; a damaged blob says so
        raise ConfigError(f"{path}: an array of the store cannot be read ({exc})") from exc


# a result row whose cells are not what write_task writes (SQLite keeps any type in any
# column): numbers where numbers go (NULL only where a value may be missing), 0/1 flags
_BAD_CELL = """(r.task_id IS NOT NULL AND (
    typeof(r.sample) != 'integer' OR r.sample < t.start OR r.sample >= t.stop
    OR typeof(r.mse) NOT IN ('real', 'integer', 'null')
    OR typeof(r.psnr) NOT IN ('real', 'integer')
    OR typeof(r.iterations) != 'integer'
    OR typeof(r.converged) != 'integer' OR r.converged NOT IN (0, 1)
    OR typeof(r.diverged) != 'integer' OR r.diverged NOT IN (0, 1)
    OR typeof(r.residual) NOT IN ('real', 'integer', 'null')
    OR typeof(r.erased_fraction) NOT IN ('real', 'integer')
    OR typeof(r.mask_error) NOT IN ('real', 'integer', 'null')
    OR r.checkpoint IS NOT t.checkpoint OR r.mask IS NOT t.mask
    OR r.method IS NOT t.method OR r.split IS NOT t.split
))"""
_ORPHAN = "task_id NOT IN (SELECT task_id FROM tasks WHERE status = 'done')"
#: methods of the units whose results are arrays only, no sample rows (the audit's local
#: stability)
ROWLESS_METHODS = ("stability",)
# the sample rows a done task has
_ROWS = ("CASE WHEN t.method IN (" + ", ".join(f"'{m}'" for m in ROWLESS_METHODS)
         + ") THEN 0 ELSE t.stop - t.start END")  # fmt: skip


def _bad_tasks(con: sqlite3.Connection) -> list[tuple]:
    """``(task_id, checkpoint, mask, method, split, start, stop, rows, bad_rows)`` of each
    done task whose sample rows are not exactly ``start .. stop - 1`` (none for a unit of
    :data:`ROWLESS_METHODS`) with well-typed cells (one pass over the results table, by its
    primary key)."""
    return con.execute(
        f"""SELECT t.task_id, t.checkpoint, t.mask, t.method, t.split, t.start, t.stop,
                   count(r.task_id), coalesce(sum({_BAD_CELL}), 0)
            FROM tasks AS t LEFT JOIN results AS r ON r.task_id = t.task_id
            WHERE t.status = 'done'
            GROUP BY t.task_id
            HAVING typeof(t.start) != 'integer' OR typeof(t.stop) != 'integer'
                OR count(r.task_id) != ({_ROWS}) OR coalesce(sum({_BAD_CELL}), 0) > 0"""
    ).fetchall()


def _orphan_rows(con: sqlite3.Connection) -> int:
    """The number of result rows that belong to no done task."""
    return con.execute(f"SELECT count(*) FROM results WHERE {_ORPHAN}").fetchone()[0]


def _bad_checkpoints(con: sqlite3.Connection) -> list[str]:
    rows = con.execute(
        """SELECT label, typeof(position), typeof(model), typeof(sha256), typeof(train_loss),
                  typeof(test_loss) FROM checkpoints
           WHERE typeof(label) != 'text' OR typeof(position) != 'integer'
              OR typeof(model) != 'text' OR typeof(sha256) != 'text'
              OR typeof(train_loss) NOT IN ('real', 'integer', 'null')
              OR typeof(test_loss) NOT IN ('real', 'integer', 'null')"""
    ).fetchall()
    cols = ("position", "model", "sha256", "train_loss", "test_loss")
    return [f"{str(r[0])[:40]!r}: " + ", ".join(f"{c} {t}" for c, t in zip(cols, r[1:], strict=True))
            for r in rows]  # fmt: skip


def _describe_bad(bad: list[tuple], orphans: int) -> str:
    """One sentence on the damaged tasks (the first three named) and orphan rows."""
    parts = []
    if bad:
        first = "; ".join(
            f"{c} / {m} / {me} / {s} [{a}:{b}]: {n} sample rows"
            + (f", {k} with values of the wrong type or range" if k else "")
            for _, c, m, me, s, a, b, n, k in bad[:3]
        )
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        parts.append(
            f"{len(bad)} done task(s) whose sample rows are missing or damaged ({first}{more})"
        )
    if orphans:
        parts.append(f"{orphans} result row(s) of no completed task")
    return " and ".join(parts)


def _readable_rows(con: sqlite3.Connection, table: str, cols: list[str]) -> list[tuple]:
    """The rows of ``table`` SQLite can read, by rowid ranges (bisected around damage), in
    rowid order."""
    sel = f"SELECT {', '.join(cols)} FROM {table} WHERE rowid BETWEEN ? AND ? ORDER BY rowid"
    try:
        top = con.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        return _rows_without_top(con, sel, table)
    return _bisect(con, sel, 1, int(top))[0] if top else []


def _bisect(con: sqlite3.Connection, sel: str, lo: int, hi: int) -> tuple[list[tuple], bool]:
    """The readable rows of the rowid range ``[lo, hi]`` and whether any statement failed."""
    out: list[tuple] = []
    failed = False
    stack = [(lo, hi)]
    while stack:
        lo, hi = stack.pop()
        try:
            rows = con.execute(sel, (lo, hi)).fetchall()
        except sqlite3.DatabaseError:
            failed = True
            if lo < hi:
                mid = (lo + hi) // 2
                stack += [(mid + 1, hi), (lo, mid)]  # lo half first: rows stay in rowid order
            continue
        out.extend(rows)
    return out, failed


_CHUNK = 4096  # rowids per range when the table's largest rowid cannot be read


def _rows_without_top(con: sqlite3.Connection, sel: str, table: str) -> list[tuple]:
    """:func:`_readable_rows` when ``max(rowid)`` is unreadable: chunk after chunk from rowid
    1, jumping to the next rowid SQLite can find, until the table ends or two chunks in a
    row give nothing but failures (bounded work: no bisection of an unknown range)."""
    nxt = f"SELECT min(rowid) FROM {table} WHERE rowid > ?"
    out: list[tuple] = []
    lo, barren = 1, 0
    while barren < 2:
        hi = lo + _CHUNK - 1
        rows, failed = _bisect(con, sel, lo, hi)
        out.extend(rows)
        barren = barren + 1 if failed and not rows else 0
        try:
            r = con.execute(nxt, (hi,)).fetchone()[0]
        except sqlite3.DatabaseError:
            r = hi + 1
        if r is None:
            break
        lo = int(r)
    return out


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
        return False
