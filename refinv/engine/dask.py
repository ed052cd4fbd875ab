"""Run units on Dask distributed: a LocalCluster, or the workers of a running scheduler.

A unit carries the PATHS of its model and images (and of a ``file:`` mask); before any
unit is submitted, every worker checks that it can import this refinv version and sees each
file with the SHA-256 the parent measured (:func:`worker_check`), so a worker that lacks a
file stops the run with a :class:`~refinv.errors.ConfigError` naming it. With
``send_files=True`` the parent reads each file once, scatters its bytes to every worker
(broadcast) and each worker writes them once to a local cache folder named by their SHA-256
(:func:`run_shipped`): then the workers need refinv, not the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..provenance import file_sha256
from . import work
from .plan import Unit

__all__ = ["iter_dask", "unit_files", "worker_check", "run_shipped"]

log = logging.getLogger("refinv.engine")

_CONNECT_TIMEOUT_S = 30
_WORKER_WAIT_S = 120


def _mask_file(mask_text: str) -> str | None:
    """The npz path of a ``file:`` mask spec (``file:PATH`` or ``file:PATH:KEY``), else None."""
    if not mask_text.lower().startswith("file:"):
        return None
    from ..operators.masks import parse_mask

    return str(parse_mask(mask_text).params[0])


def _unit_masks(u: Unit) -> set[str]:
    return {q for m in (u.mask, u.solver.get("mask_init"))
            if isinstance(m, str) and (q := _mask_file(m)) is not None}  # fmt: skip


def unit_files(units: list[Unit]) -> list[str]:
    """Every file the units read: models, data, ``file:`` masks and initial masks (sorted)."""
    files: set[str] = set()
    for u in units:
        files.update((u.model_path, u.data_path), _unit_masks(u))
    return sorted(files)


def worker_check(files: dict[str, str], version: str) -> dict:
    """Run on each Dask worker: the problems that would make its results differ or fail.

    ``files`` maps a path to the SHA-256 the parent measured; returns
    ``{"pid", "problems": [...]}`` (empty list: the worker is fit for the run).
    """
    from .. import __version__

    problems = []
    if __version__ != version:
        problems.append(f"refinv {__version__} is installed, the run uses refinv {version}")
    for path, sha in files.items():
        if not os.path.isfile(path):
            problems.append(f"no file {path}")
        elif file_sha256(path) != sha:
            problems.append(f"{path} has other content (SHA-256 differs from the parent's copy)")
    return {"pid": os.getpid(), "problems": problems}


_SHIPPED: dict[str, str] = {}  # sha256 -> local path, per worker process

#: environment variable naming the folder of the shipped files on a worker
CACHE_ENV = "REFINV_SWEEP_CACHE"


def _cache_folder() -> Path:
    """The worker's folder of shipped files: ``$REFINV_SWEEP_CACHE``, else
    ``$TMPDIR/refinv-sweep-files-UID`` (one per user). Created private (0700); refused unless
    it is a real folder (not a link) owned by this user, since another user could otherwise
    have made it and swap the files in it."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    raw = os.environ.get(CACHE_ENV)
    folder = Path(raw) if raw else Path(tempfile.gettempdir()) / f"refinv-sweep-files-{uid}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
    except OSError as exc:
        raise ConfigError(
            f"{folder}: cannot make the folder of shipped sweep files ({exc})"
        ) from exc
    is_dir = stat.S_ISDIR(st.st_mode)
    if not is_dir or (uid is not None and st.st_uid != uid):
        got = f"a folder of uid {st.st_uid}" if is_dir else "a link or a file"
        raise ConfigError(
            f"{folder}: expected a folder of this user (uid {uid}) for the shipped sweep "
            f"files, got {got}; set {CACHE_ENV} to a folder of your own"
        )
    return folder


def _materialize(sha: str, data: bytes, name: str) -> str:
    """Write the shipped bytes once per worker machine to a cache file named by their hash.

    Content-addressed, without deletion races: a file is only ever replaced atomically by
    the same bytes (concurrent workers, concurrent sweeps) and refinv never deletes one, so
    a path handed out stays valid; one removed from outside (a tmp cleaner) is written again
    at the next task."""
    if sha in _SHIPPED and os.path.isfile(_SHIPPED[sha]):
        return _SHIPPED[sha]
    from ..io import atomic_write_bytes

    local = _cache_folder() / f"{sha[:24]}-{Path(name).name}"
    if not (local.is_file() and file_sha256(local) == sha):
        if hashlib.sha256(data).hexdigest() != sha:
            raise ConfigError(f"{name}: the bytes the worker received do not match their SHA-256")
        atomic_write_bytes(local, data)  # concurrent workers: each replaces it with the same bytes
    _SHIPPED[sha] = str(local)
    return str(local)


def _relocate(unit: Unit, local: dict[str, str]) -> Unit:
    """The unit with each path of ``local`` (parent path -> worker path) replaced."""

    def mask(text: Any) -> Any:
        if not (isinstance(text, str) and text.lower().startswith("file:")):
            return text
        rest = text[len("file:") :]  # PATH or PATH:KEY; matched as text (PATH may not exist here)
        for p in sorted(local, key=len, reverse=True):
            if rest == p or rest.startswith(p + ":"):
                return "file:" + local[p] + rest[len(p) :]  # keeps a ':KEY' tail
        return text

    solver = dict(unit.solver)
    if "mask_init" in solver:
        solver["mask_init"] = mask(solver["mask_init"])
    return dataclasses.replace(
        unit,
        model_path=local.get(unit.model_path, unit.model_path),
        data_path=local.get(unit.data_path, unit.data_path),
        mask=mask(unit.mask),
        solver=solver,
    )


def run_shipped(unit: Unit, blobs: dict[str, tuple[str, bytes]]) -> dict:
    """:func:`~refinv.engine.work.run_unit` on a worker that got the unit's files as bytes
    (``path -> (sha, bytes)``): the same result as on the parent's paths, the worker reading
    the same bytes from its local copies."""
    local = {p: _materialize(sha, data, p) for p, (sha, data) in blobs.items()}
    return work.run_unit(_relocate(unit, local))


def _connect(scheduler: str, workers: int) -> tuple[Any, Any]:
    """``(client, cluster or None)``: a LocalCluster of ``workers``, or the scheduler's."""
    from dask.distributed import Client, LocalCluster

    if scheduler == "local":
        cluster = LocalCluster(
            n_workers=max(workers, 1), threads_per_worker=1, processes=True,
            dashboard_address=None, silence_logs=logging.ERROR,
        )  # fmt: skip
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout=_CONNECT_TIMEOUT_S), None
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"--scheduler {scheduler}: expected the address of a running Dask scheduler "
            f"(tcp://HOST:8786) or 'local'; could not connect ({type(exc).__name__}: {exc})"
        ) from exc


def _check_workers(client: Any, scheduler: str, shas: dict, send_files: bool) -> None:
    """Every worker runs this refinv and (without ``send_files``) sees the files."""
    from .. import __version__

    try:
        client.wait_for_workers(1, timeout=_WORKER_WAIT_S)
    except TimeoutError as exc:
        raise ConfigError(
            f"--scheduler {scheduler}: no Dask worker joined within {_WORKER_WAIT_S}s"
        ) from exc
    try:
        checks = client.run(
            worker_check, {} if send_files else shas, __version__, on_error="return"
        )
    except Exception as exc:  # the workers cannot even unpickle refinv's function
        raise ConfigError(
            f"--scheduler {scheduler}: the Dask workers cannot run refinv (installed "
            f"there?): {type(exc).__name__}: {exc}"
        ) from exc
    bad = []
    for addr, chk in sorted(checks.items()):
        if isinstance(chk, BaseException):
            bad.append(f"{addr}: cannot run refinv ({type(chk).__name__}: {chk})")
        elif chk["problems"]:
            bad.append(f"{addr}: " + "; ".join(chk["problems"]))
    if bad:
        hint = "" if send_files else " (or run with --send-files to ship the files as bytes)"
        raise ConfigError(
            "Dask workers unfit for this run: every worker needs this refinv and the "
            f"run's files at the same paths{hint}: " + " | ".join(bad)
        )
    log.info("dask: %d workers checked (%s)", len(checks), ", ".join(sorted(checks)))


def _submit(client: Any, units: list[Unit], shas: dict, send_files: bool) -> list:
    if not send_files:
        return [client.submit(work.run_unit, u, key=f"refinv-task-{u.task_id}", pure=False)
                for u in units]  # fmt: skip
    blobs = {}
    for p, sha in shas.items():
        fut = client.scatter(Path(p).read_bytes(), broadcast=True, hash=False)
        blobs[p] = (sha, fut)
    futs = []
    for u in units:
        mine = {p: blobs[p] for p in {u.model_path, u.data_path} | _unit_masks(u)}
        futs.append(client.submit(run_shipped, u, mine, key=f"refinv-task-{u.task_id}",
                                  pure=False))  # fmt: skip
    return futs


def iter_dask(
    units: list[Unit], scheduler: str, workers: int, send_files: bool = False
) -> Iterator[tuple[Unit, dict | None, str]]:
    """``(unit, result or None, error text)`` as the units finish on Dask."""
    try:
        from dask.distributed import as_completed
    except ImportError as exc:
        raise ConfigError(
            "--scheduler needs dask.distributed (pip install 'dask[distributed]' or "
            "pip install -e '.[dask]')"
        ) from exc
    if not units:  # nothing to run: no cluster to start or connect to
        return
    dlog = logging.getLogger("distributed")
    dlevel = dlog.level
    if scheduler == "local":
        dlog.setLevel(logging.ERROR)  # our LocalCluster: its start/stop chatter is noise
    client, cluster = _connect(scheduler, workers)
    try:
        shas = {p: file_sha256(p) for p in unit_files(units)}
        _check_workers(client, scheduler, shas, send_files)
        futs = _submit(client, units, shas, send_files)
        by_key = {fut.key: u for fut, u in zip(futs, units, strict=True)}
        for fut in as_completed(futs):
            u = by_key[fut.key]
            try:
                yield u, fut.result(), ""
            except Exception as exc:
                yield u, None, f"{type(exc).__name__}: {exc}"
            fut.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        dlog.setLevel(dlevel)
