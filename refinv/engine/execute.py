"""Run a plan's units into a store: in this process, on a process pool, or on Dask.

:func:`execute` skips the units the store already holds (resume), runs the others on the
chosen executor and writes each result in one transaction as it arrives (only this process
writes the store; the workers only compute). A unit that raises is recorded with its error
and the others go on (``on_error="record"``), or stops the run (``"raise"``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as cf_as_completed
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from . import work
from .plan import OBJECT_PREFIX, Unit
from .store import Store

__all__ = ["execute", "Summary", "iter_local"]

log = logging.getLogger("refinv.engine")


@dataclass
class Summary:
    """What :func:`execute` did: ``total`` units, ``skipped`` (already in the store),
    ``done`` and ``failed`` now, in ``seconds``."""

    total: int
    skipped: int
    done: int
    failed: int
    seconds: float
    db: str

    def __str__(self) -> str:
        return (
            f"{self.total} tasks: {self.skipped} already in {self.db}, {self.done} computed, "
            f"{self.failed} failed ({self.seconds:.1f}s)"
        )


def _watch_parent(parent: int) -> None:
    """Pool-worker initializer: exit when the parent process is gone (e.g. SIGKILLed).

    Without it, orphaned workers would go on computing units whose results nobody will
    store.
    """
    import signal

    # Ctrl-C reaches the whole process group: the parent handles it (stops the run, says
    # how to resume) and ends the workers; a worker's own KeyboardInterrupt traceback is noise
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="refinv-watch-parent", daemon=True).start()


def iter_local(
    units: list[Unit],
    workers: int,
    *,
    objects: dict | None = None,
    progress: bool | None = False,
    quiet: bool = True,
    raise_errors: bool = False,
) -> Iterator[tuple[Unit, dict | None, str]]:
    """``(unit, result or None, error text)`` as units finish: in this process (``workers``
    1, in plan order) or on a pool of ``workers`` spawned processes."""
    if workers <= 1:
        for u in units:
            try:
                yield u, work.run_unit(u, objects, progress=progress, quiet=quiet), ""
            except Exception:
                if raise_errors:
                    raise
                yield u, None, traceback.format_exc(limit=3)
        return
    import multiprocessing as mp

    ex = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=_watch_parent,
        initargs=(os.getpid(),),
    )
    try:
        futs = {ex.submit(work.run_unit, u): u for u in units}
        for fut in cf_as_completed(futs):
            u = futs[fut]
            try:
                yield u, fut.result(), ""
            except Exception as exc:
                if raise_errors:
                    raise
                yield u, None, f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:  # Ctrl-C: end the running units too (their results are lost)
        for p in list((getattr(ex, "_processes", None) or {}).values()):
            p.terminate()
        raise
    finally:  # on an interruption, drop the queued units instead of waiting for them
        ex.shutdown(wait=True, cancel_futures=True)


def _required(u: Unit) -> dict[str, int | None]:
    """The arrays a done unit must hold, with their length (None: a scalar)."""
    n = u.stop - u.start
    if u.kind == "stability":
        return {"radius": n}
    need: dict[str, int | None] = {"observed": n, "pixels": None}
    if u.method == "blind":
        need["mismatched"] = n
    if u.keep:
        need["x"] = min(u.keep, n)
    if u.estimates:
        need["x_hat_all"] = n
        if u.method == "blind":
            need["h_est_all"] = n
    return need


def _holds(store: Store, u: Unit, names: set[str]) -> bool:
    """Whether the store holds the unit's arrays, readable, numeric, of the unit's length:
    other contents (an array of another unit, text, a blob that is no array) are computed
    again, never trusted."""
    need = _required(u)
    if not set(need) <= names:
        return False
    try:
        got = store.arrays(u.task_id, tuple(need))
    except ConfigError:
        return False
    for k, n in need.items():
        a = got.get(k)
        if a is None or a.dtype.kind not in "biuf":
            return False
        if n is None and a.ndim != 0:
            return False
        if n is not None and (a.ndim < 1 or (k != "x" and a.shape[0] != n) or len(a) < n):
            return False
    return True


def _todo(units: list[Unit], store: Store) -> list[Unit]:
    """The units the store lacks: not done, or done without (readable, well-shaped) arrays
    they need; a store written before the arrays table is trusted for its sample rows."""
    done = store.done_tasks()
    names = store.array_names()
    todo = []
    for u in units:
        has = names.get(u.task_id, set())
        if u.task_id not in done:
            todo.append(u)
        elif (has or u.keep or u.estimates or u.kind == "stability") and not _holds(store, u, has):
            todo.append(u)
    return todo


def execute(
    units: list[Unit],
    store: Store,
    *,
    objects: dict | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    send_files: bool = False,
    bar: bool | None = False,
    desc: str = "units",
    progress: bool | None = False,
    quiet: bool = True,
    on_error: str = "record",
    on_done: Callable[[Unit, dict], Any] | None = None,
    replace: bool = False,
) -> Summary:
    """Run the ``units`` the ``store`` lacks and write their results into it.

    ``workers``: processes (1: this one); ``scheduler``: ``"local"`` (a Dask LocalCluster
    of ``workers``) or a Dask scheduler's address (:mod:`refinv.engine.dask`); in-memory
    objects (``objects``) run in this process only. ``bar``: a bar over the units;
    ``progress``: the solver's bars (this process only). ``on_done(unit, result)`` is
    called after each unit is stored; ``replace``: a unit replaces the units of other
    settings stored for its images (:meth:`~refinv.engine.store.Store.write_task`).
    """
    from .. import __version__
    from .._progress import Progress

    if int(workers) < 1:
        raise ConfigError(f"workers: expected >= 1, got {workers}")
    if send_files and not scheduler:
        raise ConfigError("--send-files: expected --scheduler too (local workers share this disk)")
    t0 = time.perf_counter()
    todo = _todo(units, store)
    skipped = len(units) - len(todo)
    in_memory = any(p.startswith(OBJECT_PREFIX) for u in todo for p in (u.model_path, u.data_path))
    if in_memory and (scheduler or workers > 1):
        raise ConfigError(
            "--workers/--scheduler: in-memory models or images run in this process only; "
            "give model and data files to run on several workers"
        )
    log.info("%s: %d units, %d already done, %d to run", desc, len(units), skipped, len(todo))
    if scheduler:
        from .dask import iter_dask

        it = iter_dask(todo, scheduler, workers, send_files)
    else:
        it = iter_local(todo, int(workers), objects=objects, progress=progress, quiet=quiet,
                        raise_errors=on_error == "raise")  # fmt: skip
    counts = {"done": 0, "failed": 0}
    pbar = Progress(len(todo), desc=f"{desc} ({skipped} done before)", enabled=bar, leave=True)
    try:
        for unit, out, err in it:
            _store(store, unit, out, err, __version__, on_error, on_done, counts, replace)
            pbar.update(counts["done"] + counts["failed"],
                        note=f"{unit.checkpoint} {unit.mask} {unit.method} {unit.split}")  # fmt: skip
    finally:
        pbar.close()
    return Summary(len(units), skipped, counts["done"], counts["failed"],
                   time.perf_counter() - t0, str(store.path))  # fmt: skip


def _store(store, unit, out, err, version, on_error, on_done, counts, replace) -> None:
    if out is not None:
        store.write_task(unit, out, version, replace=replace)
        counts["done"] += 1
        if on_done is not None:
            on_done(unit, out)
        return
    if on_error == "raise":
        raise ConfigError(f"unit {unit.checkpoint} / {unit.mask} / {unit.method} / {unit.split} "
                          f"[{unit.start}:{unit.stop}] failed: {err}")  # fmt: skip
    store.write_failure(unit, err, version)
    counts["failed"] += 1
    log.warning(
        "task %s / %s / %s / %s [%d:%d] failed: %s",
        unit.checkpoint, unit.mask, unit.method, unit.split, unit.start, unit.stop,
        err.strip().splitlines()[-1] if err else "",
    )  # fmt: skip
