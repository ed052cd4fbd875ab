"""Memorization sweeps that scale out: models x masks x methods x shards of samples.

A sweep is a TOML config (:mod:`refinv.sweep.config`) turned into a plan of units that the
engine (:mod:`refinv.engine`) runs in-process, on a local process pool or on a Dask
cluster; results go to an SQLite store written in one transaction per task, so a killed
sweep resumes where it stopped (:func:`run_sweep`). :func:`report_from_db` renders the
store as the memorization report of ``refinv evaluate`` (same schema). See docs/sweep.md.
"""

from ..engine.store import Store
from .config import ModelEntry, SweepConfig, load_config, parse_config
from .report import report_from_db
from .run import SweepSummary, Task, make_tasks, run_sweep, run_task

__all__ = [
    "SweepConfig",
    "ModelEntry",
    "load_config",
    "parse_config",
    "Store",
    "Task",
    "make_tasks",
    "run_task",
    "run_sweep",
    "SweepSummary",
    "report_from_db",
]
