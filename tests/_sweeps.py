"""Helpers of the sweep tests that watch a sweep running in another process."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def done_tasks(db: Path) -> int:
    """Tasks stored as done in the sweep database ``db`` so far: read-only, so that polling
    never creates the file or takes a write lock; 0 while it does not exist or has no tables."""
    try:
        con = sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM tasks WHERE status = 'done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def diverged_rows(db: Path) -> int:
    """Samples stored as diverged in the sweep database ``db`` (0 while it does not exist)."""
    try:
        con = sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM results WHERE diverged").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def run_sweep_checked(config, db, **kwargs):
    """``refinv.sweep.run_sweep``, its DivergenceWarnings asserted instead of leaked: the
    shipped digits8 model diverges on most samples, so a sweep warns once per task with
    diverged samples, and the counts the warnings give must be the diverged rows this call
    added to the store. Other warnings pass through."""
    import re
    import warnings

    from refinv.errors import DivergenceWarning
    from refinv.sweep import run_sweep

    before = diverged_rows(db)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always", DivergenceWarning)
        summary = run_sweep(config, db, **kwargs)
    warned = 0
    for w in rec:
        if issubclass(w.category, DivergenceWarning):
            m = re.search(r": (\d+) of \d+ samples diverged", str(w.message))
            assert m, str(w.message)
            warned += int(m.group(1))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    assert warned == diverged_rows(db) - before, (warned, before, diverged_rows(db))
    return summary


def report_checked(*args, **kwargs) -> dict:
    """``memorization_report`` whose DivergenceWarnings are asserted, not leaked: one per run
    with diverged samples, counting exactly the run's ``n_diverged``."""
    import re
    import warnings

    from refinv.errors import DivergenceWarning
    from refinv.evaluation.report import memorization_report

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always", DivergenceWarning)
        doc = memorization_report(*args, **kwargs)
    warned = [
        int(re.search(r": (\d+) of \d+ samples diverged", str(w.message)).group(1))
        for w in rec
        if issubclass(w.category, DivergenceWarning)
    ]
    assert warned == [r["n_diverged"] for r in doc["runs"] if r["n_diverged"]], warned
    return doc
