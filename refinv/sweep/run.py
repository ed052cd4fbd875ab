"""Split a sweep into tasks and run them: in-process, on a process pool, or on Dask.

A task is one model x mask x method x shard of samples (a shard lives in one
split, train or held-out). :func:`run_task` is a pure function of its
:class:`Task` (it opens the model and the data itself, cached per worker
process), so any executor gives the same numbers; only the parent process
writes to the SQLite store (:class:`~refinv.sweep.store.Store`).

Reproducibility, as in ``refinv evaluate``: the masks of a split are drawn
for the WHOLE split from ``default_rng(seed)`` (noise from
``default_rng([seed, 2])``, a Bernoulli initial mask from
``default_rng([seed, 1])``) and then sliced, so image ``i`` gets the same
mask whatever the shard size. onnxruntime runs with ``runtime.threads``
intra-op threads (1 by default: one task per core, bitwise reproducible).

On Dask, a task carries the PATHS of its model and data (and of a ``file:``
mask); before any task is submitted, every worker checks that it can import
this refinv version and sees each file with the SHA-256 the parent measured
(:func:`_worker_check`), so a worker that lacks a file stops the sweep with a
:class:`~refinv.errors.ConfigError` naming it. With ``send_files=True`` the
parent reads each file once, scatters its bytes to every worker (broadcast)
and each worker writes them once to a local cache folder named by their
SHA-256 (:func:`_run_shipped`): then the workers need refinv, not the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as cf_as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DivergenceWarning
from ..provenance import file_sha256
from .config import SweepConfig, load_config
from .store import Store

__all__ = ["Task", "make_tasks", "run_task", "run_sweep", "SweepSummary"]

log = logging.getLogger("refinv.sweep")


@dataclass(frozen=True)
class Task:
    """Everything a worker needs (plain data: picklable, sent to Dask/process workers)."""

    task_id: str
    checkpoint: str
    model_path: str
    sha256: str
    data_path: str
    data_key: str
    n: int
    split: str
    mask: str
    method: str
    start: int
    stop: int
    seed: int
    noise_std: float
    solver: dict
    threads: int | None
    provider: str
    batch_size: int | None
    layout: str | None = None
    image_shape: tuple[int, ...] | None = None


def _task_id(d: dict) -> str:
    keys = ("sha256", "checkpoint", "data_path", "data_key", "split", "mask", "method")
    ident = {k: d[k] for k in keys}
    ident.update(
        start=d["start"], stop=d["stop"], seed=d["seed"], noise=d["noise_std"], solver=d["solver"]
    )
    if d.get("image_shape") is not None:  # (absent otherwise: earlier task ids stay valid)
        ident["image_shape"] = list(d["image_shape"])
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def make_tasks(cfg: SweepConfig) -> list[Task]:
    """All tasks of the sweep, in report order (model, mask, split, method, shard)."""
    tasks = []
    for m in cfg.models:
        ds = cfg.datasets[m.dataset]
        for spec in cfg.masks:
            for split in ds.splits:
                path, key = ds.split(split)
                n = m.sizes[split]
                for method in cfg.methods:
                    for start in range(0, n, cfg.shard_size):
                        d = dict(
                            checkpoint=m.label,
                            model_path=m.path,
                            sha256=m.sha256,
                            data_path=path,
                            data_key=key,
                            n=n,
                            split=split,
                            mask=spec.text,
                            method=method,
                            start=start,
                            stop=min(start + cfg.shard_size, n),
                            seed=cfg.seed,
                            noise_std=cfg.noise_std,
                            solver=dict(cfg.solver),
                            threads=cfg.threads,
                            provider=cfg.provider,
                            batch_size=cfg.batch_size,
                            layout=m.layout,
                            image_shape=m.image_shape,
                        )
                        tasks.append(Task(task_id=_task_id(d), **d))
    return tasks


# ------------------------------------------------------------------ worker side
_MODELS: dict[tuple, Any] = {}
_DATA: dict[tuple, np.ndarray] = {}


def _model(
    path: str,
    threads: int | None,
    provider: str,
    batch_size: int | None,
    layout: str | None = None,
    image_shape: tuple[int, ...] | None = None,
):
    key = (path, threads, provider, batch_size, layout, image_shape)
    if key not in _MODELS:
        from ..onnx import OnnxModel

        if len(_MODELS) >= 4:  # bounded memory; tasks of one model tend to run together
            _MODELS.clear()
        _MODELS[key] = OnnxModel(
            path,
            provider=provider,
            batch_size=batch_size,
            intra_op_threads=threads,
            layout=layout,
            image_shape=image_shape,
        )
    return _MODELS[key]


def _images(path: str, key: str, f: Any, n: int) -> np.ndarray:
    """The first ``n`` images of ``path:key`` as the model ``f`` takes them (cached)."""
    k = (path, key, tuple(f.sample_shape), n, np.dtype(f.dtype).str)
    if k not in _DATA:
        from ..io import load_images_for

        if len(_DATA) > 4:
            _DATA.clear()
        _DATA[k] = load_images_for(f, path, key)[:n]
    return _DATA[k]


def run_task(task: Task) -> dict:
    """Run one task; per-sample lists ``mse, psnr, iterations, converged, diverged, residual,
    erased_fraction, mask_error`` plus ``seconds`` and ``onnx_seconds``.

    Uses the evaluation engine: :func:`~refinv.evaluation.runs.degrade`,
    :func:`~refinv.evaluation.runs.run_method`,
    :func:`~refinv.evaluation.runs.recovery_metrics`.
    """
    from ..evaluation.runs import (
        degrade,
        method_options,
        recovery_metrics,
        run_method,
        sample_lists,
    )
    from ..operators.masks import parse_mask, pixel_shape
    from ..solvers.recovery import initial_mask

    f = _model(
        task.model_path, task.threads, task.provider, task.batch_size, task.layout,
        task.image_shape,
    )  # fmt: skip
    x_all = _images(task.data_path, task.data_key, f, task.n)
    spec = parse_mask(task.mask)
    y_all, mask_all = degrade(x_all, spec, seed=task.seed, noise_std=task.noise_std)
    sl = slice(task.start, task.stop)
    x, y, mask = x_all[sl], np.ascontiguousarray(y_all[sl]), np.asarray(mask_all[sl])
    opts = method_options(task.method, dict(task.solver))
    if task.method == "blind" and str(opts.get("mask_init", "")).startswith("bernoulli"):
        # draw the Bernoulli initial masks for the whole split, as refinv evaluate does
        h0 = initial_mask(opts["mask_init"], y_all, rng=np.random.default_rng([task.seed, 1]))
        opts["mask_init"] = np.asarray(h0)[sl].reshape(len(x), *pixel_shape(x.shape[1:]))
    elif task.method == "blind" and str(opts.get("mask_init", "")).lower().startswith("file:"):
        # a file of (N, H, W) initial masks is for the whole split: this shard's rows
        h0 = parse_mask(opts["mask_init"]).draw(pixel_shape(x.shape[1:]), len(x_all))
        opts["mask_init"] = np.asarray(h0)[sl]
    ort0 = f.stats.seconds
    t0 = time.perf_counter()
    solver_log = logging.getLogger("refinv.solvers")
    level = solver_log.level
    solver_log.setLevel(logging.ERROR)  # divergences are recorded per sample in the store
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)
            res = run_method(
                task.method,
                f,
                y,
                mask,
                options=opts,
                seed=task.seed,
                noisy=task.noise_std > 0,
                progress=False,
            )
    finally:
        solver_log.setLevel(level)
    seconds = time.perf_counter() - t0
    met = recovery_metrics(x, np.asarray(res.x))
    nb = len(x)
    pshape = pixel_shape(tuple(x.shape[1:]))
    mflat = mask.reshape(nb, -1)
    mask_error = [None] * nb
    if task.method == "blind":
        h = np.asarray(res.state.h).reshape(nb, *pshape).reshape(nb, -1)
        mask_error = [float(v) for v in np.mean(h != mflat, axis=1)]
    return {
        **sample_lists(
            met["mse"], met["psnr"], res.iterations, res.converged, res.diverged, res.residual
        ),
        "erased_fraction": [float(v) for v in 1.0 - np.mean(mflat, axis=1)],
        "mask_error": mask_error,
        "seconds": seconds,
        "onnx_seconds": f.stats.seconds - ort0,
    }


# ------------------------------------------------------------------ parent side
@dataclass
class SweepSummary:
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


def _checkpoint_entries(cfg: SweepConfig, store: Store) -> None:
    """Train/held-out loss of each checkpoint (measured once, in the parent)."""
    from ..evaluation.report import checkpoint_entry

    for m in cfg.models:
        if store.checkpoint(m.label) is not None:
            store.add_checkpoint({"label": m.label, "sha256": m.sha256})  # sha check only
            continue
        ds = cfg.datasets[m.dataset]
        f = _model(m.path, cfg.threads, cfg.provider, cfg.batch_size, m.layout, m.image_shape)
        xs = {s: _images(*ds.split(s), f, m.sizes[s]) for s in ds.splits}
        ck = checkpoint_entry(m.label, f, xs["train"], xs.get("test"))
        ck["model"] = Path(m.path).name
        if ck.get("layout") and m.layout_source:  # as decided at validation, not "given"
            ck["layout"]["layout_source"] = m.layout_source
        store.add_checkpoint(ck)


def _watch_parent(parent: int) -> None:
    """Pool-worker initializer: exit when the sweep process is gone (e.g. SIGKILLed).

    Without it, orphaned workers would go on computing tasks whose results
    nobody will store.
    """

    import signal

    # Ctrl-C reaches the whole process group: the parent handles it (stops the sweep, says
    # how to resume) and ends the workers; a worker's own KeyboardInterrupt traceback is noise
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="refinv-sweep-watch-parent", daemon=True).start()


def _iter_local(tasks: list[Task], workers: int) -> Iterator[tuple[Task, dict | None, str]]:
    if workers <= 1:
        for t in tasks:
            try:
                yield t, run_task(t), ""
            except Exception:
                yield t, None, traceback.format_exc(limit=3)
        return
    import multiprocessing as mp

    ex = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=_watch_parent,
        initargs=(os.getpid(),),
    )
    try:
        futs = {ex.submit(run_task, t): t for t in tasks}
        for fut in cf_as_completed(futs):
            t = futs[fut]
            try:
                yield t, fut.result(), ""
            except Exception as exc:
                yield t, None, f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:  # Ctrl-C: end the running tasks too (their results are lost)
        for p in list((getattr(ex, "_processes", None) or {}).values()):
            p.terminate()
        raise
    finally:  # on an interruption, drop the queued tasks instead of waiting for them
        ex.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------ files on Dask workers
def _mask_file(mask_text: str) -> str | None:
    """The npz path of a ``file:`` mask spec (``file:PATH`` or ``file:PATH:KEY``), else None."""
    if not mask_text.lower().startswith("file:"):
        return None
    from ..operators.masks import parse_mask

    return str(parse_mask(mask_text).params[0])


def _task_files(tasks: list[Task]) -> list[str]:
    """Every file the tasks read: models, data, ``file:`` masks and initial masks (sorted)."""
    files: set[str] = set()
    masks: set[str] = set()
    for t in tasks:
        files.update((t.model_path, t.data_path))
        masks.add(t.mask)
        init = t.solver.get("mask_init")
        if isinstance(init, str):
            masks.add(init)
    files.update(p for m in masks if (p := _mask_file(m)) is not None)
    return sorted(files)


def _worker_check(files: dict[str, str], version: str) -> dict:
    """Run on each Dask worker: the problems that would make its results differ or fail.

    ``files`` maps a path to the SHA-256 the parent measured; returns
    ``{"pid", "problems": [...]}`` (empty list: the worker is fit for the sweep).
    """
    from .. import __version__

    problems = []
    if __version__ != version:
        problems.append(f"refinv {__version__} is installed, the sweep runs refinv {version}")
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


def _relocate(task: Task, local: dict[str, str]) -> Task:
    """The task with each path of ``local`` (parent path -> worker path) replaced."""

    def mask(text: Any) -> Any:
        if not (isinstance(text, str) and text.lower().startswith("file:")):
            return text
        rest = text[len("file:") :]  # PATH or PATH:KEY; matched as text (PATH may not exist here)
        for p in sorted(local, key=len, reverse=True):
            if rest == p or rest.startswith(p + ":"):
                return "file:" + local[p] + rest[len(p) :]  # keeps a ':KEY' tail
        return text

    solver = dict(task.solver)
    if "mask_init" in solver:
        solver["mask_init"] = mask(solver["mask_init"])
    return dataclasses.replace(
        task,
        model_path=local.get(task.model_path, task.model_path),
        data_path=local.get(task.data_path, task.data_path),
        mask=mask(task.mask),
        solver=solver,
    )


def _run_shipped(task: Task, blobs: dict[str, tuple[str, bytes]]) -> dict:
    """:func:`run_task` on a worker that got the task's files as bytes (``path -> (sha, bytes)``).

    The result is the same as :func:`run_task` on the parent's paths: the
    worker reads the same bytes from its local copies.
    """
    local = {p: _materialize(sha, data, p) for p, (sha, data) in blobs.items()}
    return run_task(_relocate(task, local))


_CONNECT_TIMEOUT_S = 30
_WORKER_WAIT_S = 120


def _iter_dask(
    tasks: list[Task], scheduler: str, workers: int, send_files: bool = False
) -> Iterator[tuple[Task, dict | None, str]]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise ConfigError(
            "--scheduler needs dask.distributed (pip install 'dask[distributed]' or "
            "pip install -e '.[dask]')"
        ) from exc
    from .. import __version__

    if not tasks:  # nothing to run: no cluster to start or connect to
        return
    cluster = None
    dlog = logging.getLogger("distributed")
    dlevel = dlog.level
    if scheduler == "local":
        dlog.setLevel(logging.ERROR)  # our LocalCluster: its start/stop chatter is noise
        cluster = LocalCluster(
            n_workers=max(workers, 1),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=_CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"--scheduler {scheduler}: expected the address of a running Dask scheduler "
                f"(tcp://HOST:8786) or 'local'; could not connect ({type(exc).__name__}: {exc})"
            ) from exc
    try:
        try:
            client.wait_for_workers(1, timeout=_WORKER_WAIT_S)
        except TimeoutError as exc:
            raise ConfigError(
                f"--scheduler {scheduler}: no Dask worker joined within {_WORKER_WAIT_S}s"
            ) from exc
        paths = _task_files(tasks)
        shas = {p: file_sha256(p) for p in paths}
        try:
            checks = client.run(
                _worker_check, {} if send_files else shas, __version__, on_error="return"
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
                "Dask workers unfit for this sweep: every worker needs this refinv and the "
                f"sweep's files at the same paths{hint}: " + " | ".join(bad)
            )
        log.info("dask: %d workers checked (%s)", len(checks), ", ".join(sorted(checks)))
        if send_files:
            blobs = {}
            for p in paths:
                data = Path(p).read_bytes()
                fut = client.scatter(data, broadcast=True, hash=False)
                blobs[p] = (shas[p], fut)
            futs = []
            for t in tasks:
                need = {t.model_path, t.data_path} | {
                    q
                    for m in (t.mask, t.solver.get("mask_init"))
                    if isinstance(m, str) and (q := _mask_file(m)) is not None
                }
                mine = {p: blobs[p] for p in need}
                futs.append(
                    client.submit(_run_shipped, t, mine, key=f"refinv-task-{t.task_id}", pure=False)
                )
        else:
            futs = [
                client.submit(run_task, t, key=f"refinv-task-{t.task_id}", pure=False)
                for t in tasks
            ]
        by_key = {fut.key: t for fut, t in zip(futs, tasks, strict=True)}
        for fut in as_completed(futs):
            t = by_key[fut.key]
            try:
                yield t, fut.result(), ""
            except Exception as exc:
                yield t, None, f"{type(exc).__name__}: {exc}"
            fut.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        dlog.setLevel(dlevel)


def run_sweep(
    config: str | Path | SweepConfig,
    db: str | Path | None = None,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool | None = None,
    send_files: bool = False,
) -> SweepSummary:
    """Run (or resume) a sweep; results go to the SQLite ``db``.

    Parameters
    ----------
    config : path to a TOML config, or a :class:`~refinv.sweep.config.SweepConfig`.
    db : results database (default: the config's path with suffix ``.sqlite``).
    workers : local worker processes (1: in this process), or the number of
        workers of the ``LocalCluster`` with ``scheduler="local"``.
    scheduler : None (local), ``"local"`` (start a Dask ``LocalCluster``) or the
        address of a running Dask scheduler (every worker is checked first: this
        refinv version and the sweep's files at the same paths with the same SHA-256).
    progress : progress bar on stderr (None: when stderr is a TTY).
    send_files : with ``scheduler``: send the model, data and mask files to the
        workers as bytes (read once here, scattered to every worker, cached there
        by SHA-256) instead of relying on the workers seeing the same paths.

    Completed tasks already in ``db`` are skipped; failed ones are retried. A
    task that raises is recorded with its error and the sweep goes on.
    """
    from .. import __version__
    from .._progress import Progress

    cfg = config if isinstance(config, SweepConfig) else load_config(config)
    if db is None:
        if not cfg.source:
            raise ConfigError("db: expected a path for the results database")
        db = Path(cfg.source).with_suffix(".sqlite")
    if int(workers) < 1:
        raise ConfigError(f"workers: expected >= 1, got {workers}")
    if send_files and not scheduler:
        raise ConfigError("--send-files: expected --scheduler too (local workers share this disk)")
    t0 = time.perf_counter()
    with Store(db) as store:
        store.init_sweep(
            cfg.settings(), cfg.fingerprint(), [m.text for m in cfg.masks], cfg.methods
        )
        _checkpoint_entries(cfg, store)
        tasks = make_tasks(cfg)
        done_ids = store.done_tasks()
        todo = [t for t in tasks if t.task_id not in done_ids]
        skipped = len(tasks) - len(todo)
        log.info("sweep: %d tasks, %d already done, %d to run", len(tasks), skipped, len(todo))
        bar = Progress(
            len(todo), desc=f"sweep ({skipped} done before)", enabled=progress, leave=True
        )
        n_done = n_failed = 0
        it = (
            _iter_dask(todo, scheduler, workers, send_files)
            if scheduler
            else _iter_local(todo, int(workers))
        )  # fmt: skip
        try:
            for task, out, err in it:
                if out is not None:
                    store.write_task(task, out, __version__)
                    n_done += 1
                    n_div = int(sum(bool(v) for v in out["diverged"]))
                    if n_div:  # the worker's solver warning is silenced: one message, here
                        blowup = task.solver.get("blowup") or 1e6
                        warnings.warn(
                            f"checkpoint {task.checkpoint}, mask {task.mask}, method "
                            f"{task.method}, split {task.split} [{task.start}:{task.stop}]: "
                            f"{n_div} of {len(out['diverged'])} samples diverged (NaN/Inf or "
                            f"|x| > {blowup:g}) and were stopped (MSE null in the database); "
                            "the others continued",
                            DivergenceWarning,
                            stacklevel=2,
                        )
                else:
                    store.write_failure(task, err, __version__)
                    n_failed += 1
                    log.warning(
                        "task %s / %s / %s / %s [%d:%d] failed: %s",
                        task.checkpoint, task.mask, task.method, task.split,
                        task.start, task.stop, err.strip().splitlines()[-1] if err else "",
                    )  # fmt: skip
                bar.update(
                    n_done + n_failed,
                    note=f"{task.checkpoint} {task.mask} {task.method} {task.split}",
                )
        finally:
            bar.close()
    return SweepSummary(
        total=len(tasks),
        skipped=skipped,
        done=n_done,
        failed=n_failed,
        seconds=time.perf_counter() - t0,
        db=str(db),
    )
