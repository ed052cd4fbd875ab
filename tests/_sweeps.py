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
