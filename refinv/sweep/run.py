"""Run (or resume) a sweep: its config as a plan, run by the engine into the SQLite store.

A task is one :class:`~refinv.engine.plan.Unit`: one model x mask x method x shard of
samples (a shard lives in one split, train or held-out). The engine runs it in-process, on
a process pool or on Dask (:func:`refinv.engine.execute.execute`); only this process writes
the store. :func:`run_task` is :func:`refinv.engine.work.run_unit`: a pure function of its
task, so any executor gives the same numbers.

Reproducibility, as in ``refinv evaluate``: the masks of a split are drawn
for the WHOLE split from ``default_rng(seed)`` (noise from
``default_rng([seed, 2])``, a Bernoulli initial mask from
``default_rng([seed, 1])``) and then sliced, so image ``i`` gets the same
mask whatever the shard size. onnxruntime runs with ``runtime.threads``
intra-op threads (1 by default: one task per core, bitwise reproducible).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from ..engine import work
from ..engine.execute import Summary, execute
from ..engine.plan import Unit, recovery_units
from ..engine.store import Store
from ..errors import ConfigError, DivergenceWarning
from .config import SweepConfig, load_config

__all__ = ["Task", "make_tasks", "run_task", "run_sweep", "SweepSummary"]

log = logging.getLogger("refinv.sweep")

#: a sweep's task is a unit of the engine
Task = Unit
#: what :func:`run_sweep` returns
SweepSummary = Summary


def make_tasks(cfg: SweepConfig) -> list[Task]:
    """All tasks of the sweep, in report order (model, mask, split, method, shard)."""
    tasks = []
    for m in cfg.models:
        ds = cfg.datasets[m.dataset]
        splits = {s: (*ds.split(s), m.sizes[s], "") for s in ds.splits}
        ck = {"label": m.label, "path": m.path, "sha256": m.sha256, "layout": m.layout,
              "image_shape": m.image_shape}  # fmt: skip
        tasks += recovery_units(
            [ck], splits, [s.text for s in cfg.masks], cfg.methods, seed=cfg.seed,
            noise_std=cfg.noise_std, solver=cfg.solver, shard_size=cfg.shard_size,
            runtime={"threads": cfg.threads, "provider": cfg.provider,
                     "batch_size": cfg.batch_size},
        )  # fmt: skip
    return tasks


def run_task(task: Task) -> dict:
    """Run one task (:func:`refinv.engine.work.run_unit`): per-sample lists ``mse, psnr,
    iterations, converged, diverged, residual, erased_fraction, mask_error``, ``seconds``,
    ``onnx_seconds`` and the exact pixel counts in ``arrays``."""
    return work.run_unit(task)


def _checkpoint_entries(cfg: SweepConfig, store: Store) -> None:
    """Train/held-out loss of each checkpoint (measured once, in the parent)."""
    from ..evaluation.report import checkpoint_entry

    for m in cfg.models:
        if store.checkpoint(m.label) is not None:
            store.add_checkpoint({"label": m.label, "sha256": m.sha256})  # sha check only
            continue
        ds = cfg.datasets[m.dataset]
        f = work.model_file(m.path, cfg.threads, cfg.provider, cfg.batch_size, m.layout,
                            m.image_shape)  # fmt: skip
        xs = {s: work.images_file(*ds.split(s), f, m.sizes[s]) for s in ds.splits}
        ck = checkpoint_entry(m.label, f, xs["train"], xs.get("test"))
        ck["model"] = Path(m.path).name
        if ck.get("layout") and m.layout_source:  # as decided at validation, not "given"
            ck["layout"]["layout_source"] = m.layout_source
        store.add_checkpoint(ck)


def _warn_diverged(task: Task, out: dict) -> None:
    """One DivergenceWarning per task with diverged samples (the worker's is silenced)."""
    n_div = int(sum(bool(v) for v in out["diverged"]))
    if n_div:
        blowup = task.solver.get("blowup") or 1e6
        warnings.warn(
            f"checkpoint {task.checkpoint}, mask {task.mask}, method {task.method}, split "
            f"{task.split} [{task.start}:{task.stop}]: {n_div} of {len(out['diverged'])} "
            f"samples diverged (NaN/Inf or |x| > {blowup:g}) and were stopped (MSE null in "
            "the database); the others continued",
            DivergenceWarning,
            stacklevel=5,  # the caller of run_sweep
        )


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
    cfg = config if isinstance(config, SweepConfig) else load_config(config)
    if db is None:
        if not cfg.source:
            raise ConfigError("db: expected a path for the results database")
        db = Path(cfg.source).with_suffix(".sqlite")
    if int(workers) < 1:
        raise ConfigError(f"workers: expected >= 1, got {workers}")
    if send_files and not scheduler:
        raise ConfigError("--send-files: expected --scheduler too (local workers share this disk)")
    with Store(db) as store:
        store.init_sweep(
            cfg.settings(), cfg.fingerprint(), [m.text for m in cfg.masks], cfg.methods
        )
        _checkpoint_entries(cfg, store)
        return execute(
            make_tasks(cfg), store, workers=workers, scheduler=scheduler, send_files=send_files,
            bar=progress, desc="sweep", on_done=_warn_diverged,
        )  # fmt: skip
