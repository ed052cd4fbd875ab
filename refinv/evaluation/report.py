"""The memorization report: how much of its training set can be recovered from an autoencoder.

For each model checkpoint x mask x method, degrade the training images AND
held-out images with the same masks, recover them, and compare: per-sample
MSE/PSNR, the accurate (MSE < 1e-7) and approximate (MSE < 5e-4) recovery
rates and the mean PSNR, train and held-out side by side (the held-out rate
must be near 0 for the train rate to measure memorization).

Reproducibility: for a given ``seed`` the masks of a split are drawn from
``numpy.random.default_rng(seed)`` (image ``i`` of the training set and image
``i`` of the held-out set get the same mask, so the two columns differ only by
memorization); the blind solver's Bernoulli initial mask uses
``default_rng([seed, 1])`` and noise ``default_rng([seed, 2])``.

The control (``control=True``; by default wherever scikit-image is importable): the
same degraded images, masks and splits filled in WITHOUT the model by biharmonic
inpainting (:mod:`refinv.evaluation.control`), so that every rate has a model-free
rate beside it: an approximate rate that the control matches on training images
says nothing about memorization.

JSON schema (``SCHEMA_VERSION = 3``, stable; documented in docs/cli.md; version 2
added ``control``, version 3 the per-sample ``stop_reason`` and the solver settings
``tol = "auto"``, ``patience`` and ``search_patience``)::

    {
      "schema_version": 3, "tool": "refinv", "refinv_version": str,
      "command": str, "created_utc": str,
      "thresholds": {"accurate_mse": 1e-7, "approximate_mse": 5e-4,
                     "psnr_data_range": 1.0, "psnr_cap_db": 200.0},
      "settings": {"seed": int, "noise_std": float, "masks": [str],
                   "methods": [str], "solver": {method: {option: value}}},
      # solver: every option each method ran with, defaults included
      # (:func:`effective_options`)
      "checkpoints": [{"label", "model", "sha256", "train_loss", "test_loss",
                       "layout": {"layout", "layout_source", "onnx_sample_shape",
                                  "sample_shape", "image_shape", "batch_axis_restored"}|null}],
      "runs": [{
          "checkpoint": str, "train_loss": float|null, "method": str,
          "mask": str, "split": "train"|"test", "n": int,
          "accurate_rate": float, "approximate_rate": float,
          "mean_psnr": float, "median_psnr": float, "converged_rate": float,
          "n_diverged": int, "seconds": float, "onnx_seconds": float|null,
          "erased_fraction": float, "mask_error": float|null,
          "mse": [float], "psnr": [float], "iterations": [int],
          "converged": [bool], "diverged": [bool], "residual": [float|null],
          "stop_reason": [str]   # per sample: converged, stalled, diverged, max_iter,
                                 # callback (absent where the store kept none: sweep)
      }],
      "control": null | {"method": str, "runs": [{
          "mask": str, "split": "train"|"test", "n": int,
          "accurate_rate": float, "approximate_rate": float,
          "mean_psnr": float, "median_psnr": float, "seconds": float,
          "mse": [float|null], "psnr": [float]
      }]}   # one run per (mask, split), joined to ``runs`` on (mask, split)
    }

Rates are fractions in [0, 1]; each PSNR is clamped to [0, 200] dB (200 for
exact recoveries, 0 for estimates worse than MSE 1, e.g. diverged samples);
a sample whose MSE is NaN/Inf is reported as ``null`` in ``mse``, so the JSON
stays standard. A diverged sample never counts as recovered.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import progress_label
from ..errors import ConfigError, DivergenceWarning
from ..operators.masks import MaskSpec, parse_mask, pixel_shape
from ..provenance import utc_now
from .figures import _img as _img  # the audit's figures use it
from .figures import figure_examples as figure_examples
from .figures import figure_rate_vs_loss as figure_rate_vs_loss
from .figures import png_bytes as png_bytes
from .figures import require_figure_dependencies as require_figure_dependencies
from .metrics import ACCURATE_MSE, APPROXIMATE_MSE, PSNR_CAP_DB
from .runs import (
    METHODS,
    degrade,
    effective_options,
    method_options,
    recovery_metrics,
    run_entry,
    run_method,
    warn_diverged,
)
from .runs import sample_lists as sample_lists

# METHODS, degrade, run_method, method_options, effective_options, recovery_metrics,
# run_entry, sample_lists and warn_diverged are importable from here too (documented in
# refinv.evaluation.runs), and the figures (refinv.evaluation.figures)
__all__ = [
    "SCHEMA_VERSION",
    "memorization_report",
    "new_document",
    "checkpoint_entry",
    "layout_entry",
    "evaluate_split",
    "report_plan",
    "report_from_store",
    "control_from_store",
    "format_table",
    "format_loss_table",
]

log = logging.getLogger("refinv.evaluation.report")

SCHEMA_VERSION = 3


def _run_entry(
    *,
    label: str,
    train_loss: float | None,
    method: str,
    mask_text: str,
    split: str,
    x: np.ndarray,
    mask: np.ndarray,
    res: Any,
    seconds: float,
    onnx_seconds: float | None,
) -> dict:
    met = recovery_metrics(x, np.asarray(res.x))
    n = int(x.shape[0])
    mask_error = None
    if method == "blind":
        h = np.asarray(res.state.h)
        h = h.reshape(n, *pixel_shape(x.shape[1:]))
        mask_error = float(np.mean(h != mask.reshape(h.shape)))
    return run_entry(
        checkpoint=label,
        train_loss=train_loss,
        method=method,
        mask=mask_text,
        split=split,
        mse=met["mse"],
        psnr=met["psnr"],
        iterations=res.iterations,
        converged=res.converged,
        diverged=res.diverged,
        residual=res.residual,
        stop_reason=res.stop_reason,
        erased_fraction=float(1.0 - np.mean(mask)) if n else 0.0,
        mask_error=mask_error,
        seconds=seconds,
        onnx_seconds=onnx_seconds,
    )


def _train_loss(f: Any, x: np.ndarray) -> float:
    out = np.asarray(f(x), dtype=np.float64)
    return float(np.mean((out - x.astype(np.float64)) ** 2))


def new_document(
    *,
    command: str,
    seed: int,
    noise_std: float,
    masks: Sequence[MaskSpec],
    methods: Sequence[str],
    solver: dict,
) -> dict:
    """An empty report document (schema version, thresholds, settings; no runs yet)."""
    from .. import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "refinv",
        "refinv_version": __version__,
        "command": command,
        "created_utc": utc_now(),
        "thresholds": {
            "accurate_mse": ACCURATE_MSE,
            "approximate_mse": APPROXIMATE_MSE,
            "psnr_data_range": 1.0,
            "psnr_cap_db": PSNR_CAP_DB,
        },
        "settings": {
            "seed": int(seed),
            "noise_std": float(noise_std),
            "masks": [s.text for s in masks],
            "methods": list(methods),
            "solver": {
                m: _jsonable(effective_options(m, solver, noisy=float(noise_std) > 0))
                for m in methods
            },
        },
        "checkpoints": [],
        "runs": [],
        "control": None,
    }


def checkpoint_entry(label: str, f: Any, train: np.ndarray, test: np.ndarray | None) -> dict:
    """``{"label", "model", "sha256", "train_loss", "test_loss", "layout"}``, losses measured on
    the data; ``layout`` is :meth:`refinv.onnx.OnnxModel.layout_info` (``None`` for a plain
    callable)."""
    return {
        "label": str(label),
        "model": str(getattr(f, "label", label)),
        "sha256": getattr(f, "sha256", None),
        "train_loss": _train_loss(f, train),
        "test_loss": _train_loss(f, test) if test is not None else None,
        "layout": layout_entry(f),
    }


def layout_entry(f: Any) -> dict | None:
    """The model's layout record for the JSON (``OnnxModel.layout_info()``), or ``None``."""
    info = getattr(f, "layout_info", None)
    return info() if callable(info) else None


def evaluate_split(
    f: Any,
    x: np.ndarray,
    spec: MaskSpec,
    method: str,
    *,
    label: str = "model",
    train_loss: float | None = None,
    split: str = "train",
    seed: int = 0,
    noise_std: float = 0.0,
    solver: dict | None = None,
    progress: bool | None = None,
) -> tuple[dict, Any, np.ndarray, np.ndarray]:
    """Degrade ``x`` with ``spec``, recover with ``method``, measure.

    Returns ``(run_entry, solver_result, y, mask)``; ``run_entry`` is one
    element of the report's ``runs`` list.
    """
    y, mask = degrade(x, spec, seed=seed, noise_std=noise_std)
    stats = getattr(f, "stats", None)
    ort0 = stats.seconds if stats is not None else None
    t0 = time.perf_counter()
    with warnings.catch_warnings(), progress_label(f"{label} {spec.text} {split}"):
        warnings.simplefilter("ignore", DivergenceWarning)
        res = run_method(
            method,
            f,
            y,
            mask,
            options=method_options(method, dict(solver or {})),
            seed=seed,
            noisy=noise_std > 0,
            progress=progress,
        )
    sec = time.perf_counter() - t0
    ort = (stats.seconds - ort0) if stats is not None else None
    entry = _run_entry(
        label=str(label),
        train_loss=train_loss,
        method=method,
        mask_text=spec.text,
        split=split,
        x=x,
        mask=mask,
        res=res,
        seconds=sec,
        onnx_seconds=ort,
    )
    warn_diverged(entry, solver)
    return entry, res, y, mask


def memorization_report(
    models: Any,
    train: np.ndarray,
    test: np.ndarray | None = None,
    *,
    masks: Sequence[str | MaskSpec] = ("random:0.5",),
    methods: Sequence[str] = ("blind",),
    seed: int = 0,
    noise_std: float = 0.0,
    solver: dict | None = None,
    progress: bool | None = None,
    figures_dir: str | Path | None = None,
    command: str = "evaluate",
    n_figure: int = 6,
    chunk: int | None = None,
    files: dict | None = None,
    argv: Sequence[str] | None = None,
    control: bool | None = None,
    db: str | Path | None = None,
) -> dict:
    """Sweep checkpoints x masks x methods on the training and held-out images.

    The report's steps: the plan (one unit per checkpoint x mask x split x method,
    :func:`report_plan`), its run into a store (:func:`refinv.engine.execute.execute`,
    in this process), the document from the store (:func:`report_from_store`), and the
    figures (:func:`refinv.evaluation.figures.report_figures`).

    Parameters
    ----------
    models : model, or list of ``(label, model)`` pairs
        Autoencoders (``OnnxModel`` or callables); several = the checkpoints
        of one training run (their train loss is measured here on ``train``).
    train, test : numpy arrays ``(N, *sample_shape)`` in [0, 1]
        Training images and held-out images (``test`` may be None).
    masks : mask specs (see :func:`refinv.operators.masks.parse_mask`).
    methods : subset of ``("blind", "known", "ae-iterations")``.
    seed : masks, Bernoulli init and noise seed (see the module docstring).
    noise_std : Gaussian noise added to the degraded images (known-mask
        re-insertion is turned off when > 0).
    solver : dict of solver options (``max_iter``, ``tol``, ``rho``,
        ``inner_iter``, ``mask_init``, ``tau``, ``clip``, ``blowup``); each method
        takes the ones it understands. ``ae-iterations`` runs
        ``max_iter * inner_iter`` iterations (equal number of calls of ``f``).
    progress : show the solvers' progress bars (None: when stderr is a TTY).
    figures_dir : if given, write PNG figures there (needs matplotlib).
    chunk : solve (and measure the losses on) ``chunk`` images at a time
        (:func:`~refinv.evaluation.chunked.evaluate_split_chunked`): memory stays flat
        in the number of images; the same per-image results (per-sample stopping makes
        the chunks independent; the masks, noise and Bernoulli initial masks continue
        one stream). ``train``/``test`` may then also be
        :class:`~refinv.evaluation.chunked.NpzImages` (read chunk by chunk). None: one
        batch per split.
    files : ``role -> path`` of the input files for the ``provenance`` block (default: the
        models' own paths, ``model`` and ``checkpoint_1`` ..., where they have one).
    argv : the command line for the ``provenance`` block (default ``sys.argv``).
    control : add the model-free control (:func:`~refinv.evaluation.control.control_run`:
        biharmonic inpainting of the same degraded images with the true masks, per mask
        and split) as ``doc["control"]``, beside every rate in :func:`format_table` and
        in the figures. None (default): on where scikit-image is importable; True
        without it: ConfigError; False: off (``doc["control"]`` is None).
    db : a results database (:class:`~refinv.engine.store.Store`) to keep the runs in and
        resume from: runs it already holds (same model, images and settings) are not
        computed again. None: a temporary one. A plain callable (no ``sha256``) is known by
        its label only.

    Returns
    -------
    dict
        The JSON-ready report (schema in the module docstring), with the same
        ``schema``, ``schema_version`` and ``provenance`` block as ``refinv evaluate --json``.
    """
    from ..engine.execute import execute

    started = time.time()
    models = _model_pairs(models)
    specs = _checked(masks, methods)
    solver = dict(solver or {})
    splits, chunk = _splits(train, test, chunk)
    keep = n_figure if figures_dir is not None else 0
    from .control import resolve_control

    plan = report_plan(models, splits, specs, list(methods), seed=seed, noise_std=noise_std,
                       solver=solver, chunk=chunk, keep=keep,
                       control=resolve_control(control))  # fmt: skip
    base = new_document(command=command, seed=seed, noise_std=noise_std, masks=specs,
                        methods=list(methods), solver=solver)  # fmt: skip
    with _store(db) as store:
        _init_store(store, base, seed, noise_std, solver)
        for label, f in models:  # the losses measured on these images, every time
            store.add_checkpoint(_checkpoint(str(label), f, splits, chunk), refresh=True)
        execute(plan.units, store, objects=plan.objects, progress=progress, quiet=False,
                on_error="raise", on_done=_warn_unit(solver), replace=True)  # fmt: skip
        doc = report_from_store(store, base, [g for g in plan.groups if g[2] in METHODS])
        doc["control"] = control_from_store(store, plan)
        if figures_dir is not None:
            _figures(doc, store, plan, figures_dir)
    from ..provenance import provenance

    if files is None:
        files = {
            ("model" if i == 0 else f"checkpoint_{i}"): _model_file(f)
            for i, (_, f) in enumerate(models)
        }
    doc = {"schema": "refinv.report", **doc}
    doc["provenance"] = provenance(files, argv=argv, started=started)
    return doc


# ------------------------------------------------------------------ the plan
def _model_pairs(models: Any) -> list[tuple[str, Any]]:
    if not isinstance(models, (list, tuple)):
        models = [(getattr(models, "label", "model"), models)]
    labels = [str(label) for label, _ in models]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"models: expected distinct labels, got {labels}")
    return list(models)


def _checked(masks: Sequence[str | MaskSpec], methods: Sequence[str]) -> list[MaskSpec]:
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"method: expected one of {', '.join(METHODS)}, got {m!r}")
    return [ms if isinstance(ms, MaskSpec) else parse_mask(ms) for ms in masks]


def _splits(train: Any, test: Any, chunk: int | None) -> tuple[dict[str, Any], int | None]:
    """``{"train": images, "test": images}`` (arrays or :class:`NpzImages`) and the chunk
    size: ``chunk``, or the default one when the images are read from a file in chunks."""
    from .chunked import DEFAULT_CHUNK, NpzImages

    def images(a):
        return a if isinstance(a, NpzImages) else np.asarray(a)

    splits = {"train": images(train)}
    if test is not None:
        splits["test"] = images(test)
    if chunk is None and any(isinstance(x, NpzImages) for x in splits.values()):
        chunk = DEFAULT_CHUNK
    if chunk is not None and (int(chunk) != chunk or chunk < 1):
        raise ConfigError(f"chunk: expected a positive integer, got {chunk}")
    return splits, None if chunk is None else int(chunk)


def _content_sha(x: Any) -> str:
    """The SHA-256 of an image array (dtype, shape, bytes), or of an ``NpzImages``' file."""
    import hashlib

    from .chunked import NpzImages

    if isinstance(x, NpzImages):  # the file's content and the array's name in it
        from ..provenance import file_sha256

        return f"{file_sha256(x.path)}:{x.key}" + (":NHWC" if getattr(x, "_nhwc", False) else "")
    a = np.ascontiguousarray(x)
    return hashlib.sha256(str((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()


def report_plan(
    models: list[tuple[str, Any]],
    splits: dict[str, Any],
    specs: list[MaskSpec],
    methods: list[str],
    *,
    seed: int,
    noise_std: float,
    solver: dict,
    chunk: int | None = None,
    keep: int = 0,
    control: bool = False,
) -> Any:
    """The plan of a memorization report on in-memory models and images: one unit per
    checkpoint x mask x split x method (the whole split), in report order; with
    ``control``, one unit of the model-free control per mask and split
    (:func:`~refinv.evaluation.control.control_run`)."""
    from ..engine.plan import CONTROL, CONTROL_CHECKPOINT, OBJECT_PREFIX, Plan, recovery_units

    plan = Plan(units=[])
    split_refs = {}
    for split, x in splits.items():
        ref = f"{OBJECT_PREFIX}{split}"
        plan.objects[ref] = x
        split_refs[split] = (ref, split, len(x), _content_sha(x))
    for i, (label, f) in enumerate(models):
        ref = f"{OBJECT_PREFIX}model{i}"
        plan.objects[ref] = f
        ck = {"label": str(label), "path": ref, "sha256": getattr(f, "sha256", None) or ""}
        plan.units += recovery_units(
            [ck], split_refs, [s.text for s in specs], methods, seed=seed, noise_std=noise_std,
            solver=solver, chunk=chunk, keep=keep,
        )  # fmt: skip
    if control:  # no model: the images are read as the first model takes them
        ck = {"label": CONTROL_CHECKPOINT, "path": f"{OBJECT_PREFIX}model0", "sha256": ""}
        plan.units += recovery_units(
            [ck], split_refs, [s.text for s in specs], [CONTROL], seed=seed,
            noise_std=noise_std, solver={}, chunk=chunk, keep=keep, kind="control",
        )  # fmt: skip
    return plan


# ------------------------------------------------------------------ the run
def _store(db: str | Path | None) -> Any:
    """The store of a report: ``db``, or a temporary one (removed on exit)."""
    import contextlib
    import tempfile

    from ..engine.store import Store

    @contextlib.contextmanager
    def opened():
        if db is not None:
            with Store(db) as st:
                yield st
            return
        with tempfile.TemporaryDirectory(prefix="refinv-report-") as tmp:
            with Store(Path(tmp) / "report.sqlite") as st:
                yield st

    return opened()


def _init_store(store: Any, base: dict, seed: int, noise_std: float, solver: dict) -> None:
    import hashlib
    import json

    from ..engine.plan import json_default

    settings = {"seed": int(seed), "noise_std": float(noise_std),
                "solver": dict(sorted(solver.items()))}  # fmt: skip
    text = json.dumps(settings, sort_keys=True, default=json_default)
    store.init_sweep(
        json.loads(text), hashlib.sha256(text.encode()).hexdigest()[:16],
        base["settings"]["masks"], base["settings"]["methods"],
    )  # fmt: skip


def _checkpoint(label: str, f: Any, splits: dict, chunk: int | None) -> dict:
    """The checkpoint entry (losses measured ``chunk`` images at a time when chunked)."""
    if chunk is None:
        return checkpoint_entry(label, f, splits["train"], splits.get("test"))
    from .chunked import mean_loss

    losses = {split: mean_loss(f, x, chunk) for split, x in splits.items()}
    return {
        "label": str(label),
        "model": str(getattr(f, "label", label)),
        "sha256": getattr(f, "sha256", None),
        "train_loss": losses["train"],
        "test_loss": losses.get("test"),
        "layout": layout_entry(f),
    }


def _warn_unit(solver: dict):
    """One DivergenceWarning per run with diverged samples (:func:`warn_diverged`)."""
    from .runs import warn_unit_diverged

    def warn(unit: Any, out: dict) -> None:
        warn_unit_diverged(unit, out, solver, stacklevel=6)  # the caller of memorization_report

    return warn


def _figures(doc: dict, store: Any, plan: Any, out: str | Path) -> None:
    """The figures (:func:`~refinv.evaluation.figures.report_figures`) from the images each
    run's first unit (and the control's) kept in the store."""
    from .figures import report_figures

    first = {(u.checkpoint, u.mask, u.method, u.split): u.task_id
             for u in reversed(plan.units)}  # fmt: skip
    report_figures(doc, store, out, first)


def control_from_store(store: Any, plan: Any = None) -> dict | None:
    """``doc["control"]``: one run of the model-free control per mask and split, as
    :func:`~refinv.evaluation.control.control_run` returns it, from the control units of
    ``plan`` (in its order) or, without a plan, every control run the store holds (masks in
    the store's order, train first); None when there is none."""
    from ..engine.plan import CONTROL, CONTROL_CHECKPOINT
    from .control import CONTROL_METHOD

    ids = None
    if plan is not None:
        units = [u for u in plan.units if u.kind == "control"]
        ids = {u.task_id for u in units}
        order = list(dict.fromkeys((u.mask, u.split) for u in units))
    rows: dict[tuple, list[dict]] = {}
    for r in store.results():
        if (r["checkpoint"], r["method"]) == (CONTROL_CHECKPOINT, CONTROL) and (
            ids is None or r["task_id"] in ids
        ):
            rows.setdefault((r["mask"], r["split"]), []).append(r)
    if plan is None:
        pos = {m: i for i, m in enumerate(store.meta().get("masks", []))}
        order = sorted(rows, key=lambda k: (pos.get(k[0], 1 << 30), k[0], k[1] != "train"))
    if not order or not rows:
        return None
    seconds = store.task_seconds(ids)
    runs = []
    for mask, split in order:
        rs = sorted(rows.get((mask, split), []), key=lambda r: r["sample"])
        sec = seconds.get((CONTROL_CHECKPOINT, mask, CONTROL, split), (0.0, None))[0]
        runs.append(_control_entry(mask, split, rs, sec))
    return {"method": CONTROL_METHOD, "runs": runs}


def _control_entry(mask: str, split: str, rs: list[dict], seconds: float) -> dict:
    """One control run from its stored rows (``control_run``'s entry, built by the same
    function)."""
    from .control import control_entry

    mse_a = np.array([np.nan if r["mse"] is None else r["mse"] for r in rs], dtype=np.float64)
    psnr_a = np.array([r["psnr"] for r in rs], dtype=np.float64)
    return control_entry(mask, split, mse_a, psnr_a, seconds)


def _model_file(f: Any) -> str | None:
    """The file a model was loaded from (an :class:`~refinv.onnx.OnnxModel` opened from a
    path is labelled with it), or None (bytes, a proto, a plain callable)."""
    label = getattr(f, "label", None)
    return label if isinstance(label, str) and Path(label).is_file() else None


# ------------------------------------------------------------------ the document
def report_from_store(
    store: Any, doc: dict, groups: list[tuple] | None = None, task_ids: set | None = None
) -> dict:
    """``doc`` (a :func:`new_document`) with the checkpoints and the runs of ``store``.

    One run per ``(checkpoint, mask, method, split)`` of ``groups``, in their order, and
    their checkpoints (default: every run the store holds, ordered by checkpoint, mask,
    split (train first) and method as the store lists them); its per-image numbers are the
    stored rows, its ``erased_fraction`` and ``mask_error`` the exact pixel counts
    (per-image means in a store without them). ``task_ids``: only these tasks' rows.
    """
    rows: dict[tuple, list[dict]] = {}
    for r in store.results():
        if task_ids is None or r["task_id"] in task_ids:
            rows.setdefault((r["checkpoint"], r["mask"], r["method"], r["split"]), []).append(r)
    checkpoints = store.checkpoints()
    if groups is not None:  # the runs of a plan, in its order
        keys = [g for g in groups if g in rows]
        labels = list(dict.fromkeys(g[0] for g in groups))
        by_label = {c["label"]: c for c in checkpoints}
        checkpoints = [by_label[c] for c in labels if c in by_label]
    else:  # every recovery run of the store (not its control's, nor other unit kinds')
        keys = sorted(
            (k for k in rows if k[2] in METHODS), key=_run_order(store.meta(), checkpoints)
        )
    doc["checkpoints"] = checkpoints
    loss = {c["label"]: c["train_loss"] for c in checkpoints}
    seconds = store.task_seconds(task_ids)
    counts = store.group_counts(task_ids)
    reasons = store.run_array("stop_reason", task_ids)  # per-image codes (StopReason.ALL)
    for key in keys:
        sec, ort = seconds.get(key, (0.0, None))
        entry = _entry(key, loss.get(key[0]), rows[key], counts.get(key), sec, ort)
        codes = reasons.get(key)
        if codes is not None and len(codes) == entry["n"]:
            from ..solvers._loop import StopReason

            entry["stop_reason"] = [StopReason.ALL[int(c)] for c in codes]
        doc["runs"].append(entry)
    return doc


def _run_order(meta: dict, checkpoints: list[dict]):
    """Checkpoint (store order), mask, split (train first), method: ``refinv evaluate``'s."""
    pos = {k: {v: i for i, v in enumerate(vals)} for k, vals in (
        ("ck", [c["label"] for c in checkpoints]), ("mask", meta.get("masks", [])),
        ("method", meta.get("methods", [])))}  # fmt: skip

    def order(k: tuple) -> tuple:
        c, m, me, s = k
        return (pos["ck"].get(c, 1 << 30), c, pos["mask"].get(m, 1 << 30), m, s != "train",
                pos["method"].get(me, 1 << 30), me)  # fmt: skip

    return order


def _entry(key: tuple, train_loss, rs: list[dict], counts: dict | None, sec, ort) -> dict:
    """One ``runs`` element from the stored rows of a run."""
    checkpoint, mask, method, split = key
    rs = sorted(rs, key=lambda r: r["sample"])
    me = [r["mask_error"] for r in rs]
    if counts is not None and counts["n"] == len(rs) and rs:
        total = counts["pixels"] * len(rs)
        erased = 1.0 - counts["observed"] / total
        mask_error = counts["mismatched"] / total if me[0] is not None else None
    else:  # a store written before the counts: per-image means
        erased = float(np.mean([r["erased_fraction"] for r in rs])) if rs else 0.0
        mask_error = None if (not rs or me[0] is None) else float(np.mean(me))
    return run_entry(
        checkpoint=checkpoint, train_loss=train_loss, method=method, mask=mask, split=split,
        mse=[np.nan if r["mse"] is None else r["mse"] for r in rs],
        psnr=[r["psnr"] for r in rs], iterations=[r["iterations"] for r in rs],
        converged=[r["converged"] for r in rs], diverged=[r["diverged"] for r in rs],
        residual=[r["residual"] for r in rs], erased_fraction=erased, mask_error=mask_error,
        seconds=sec, onnx_seconds=ort,
    )  # fmt: skip


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (tuple, list)):
            out[k] = [float(t) for t in v]
        else:
            out[k] = str(type(v).__name__)
    return out


# ------------------------------------------------------------------ tables
def _pct(v: float) -> str:
    return f"{100.0 * v:5.1f}%"


_SPLIT_TITLES = {"train": "train (memorized?)", "test": "held-out (never trained on)"}


def _control_index(doc: dict) -> dict[tuple[str, str], dict]:
    from .control import control_index

    return control_index(doc)


def format_table(doc: dict) -> str:
    """The memorization table: one row per (checkpoint, mask, method); train | held-out columns.

    With the control (``doc["control"]``), each rate and the mean PSNR is followed by the
    model-free control's value for the same mask and split (column ``ctl``)."""
    rows: dict[tuple, dict[str, dict]] = {}
    splits: list[str] = []
    for r in doc["runs"]:
        rows.setdefault((r["checkpoint"], r["mask"], r["method"]), {})[r["split"]] = r
        if r["split"] not in splits:
            splits.append(r["split"])
    splits.sort(key=lambda s: (s != "train", s != "test"))
    several = len({k[0] for k in rows}) > 1
    head = (["checkpoint"] if several else []) + ["mask", "method"]
    keys = {k: (k if several else k[1:]) for k in rows}
    widths = [max([len(h)] + [len(str(kp[i])) for kp in keys.values()]) for i, h in enumerate(head)]
    ctl = _control_index(doc)
    cols = (
        ["acc", "ctl", "approx", "ctl", "PSNR", "ctl", "iters"]
        if ctl
        else ["acc", "approx", "PSNR", "iters"]
    )
    block = " ".join(f"{c:>7}" for c in cols)
    title = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    top = " | ".join(f"{_SPLIT_TITLES.get(s, s):^{len(block)}}" for s in splits)
    lines = [
        f"{'':{len(title)}}  | {top} | time",
        f"{title}  | " + " | ".join([block] * len(splits)) + " |",
    ]
    lines.append("-" * (len(lines[-1]) + 7))
    for key, sp in rows.items():
        left = "  ".join(str(v).ljust(w) for v, w in zip(keys[key], widths, strict=True))
        parts = []
        secs = 0.0
        for split in splits:
            r = sp.get(split)
            if r is None:
                parts.append(" ".join(f"{'-':>7}" for _ in cols))
                continue
            secs += r["seconds"]
            it = float(np.mean(r["iterations"])) if r["iterations"] else 0.0
            c = ctl.get((key[1], split)) if ctl else None
            if not ctl:
                cells = [_pct(r["accurate_rate"]), _pct(r["approximate_rate"])]
                cells += [_psnr_cell(r), f"{it:.1f}"]
            else:
                cells = [_pct(r["accurate_rate"]), _pct(c["accurate_rate"]) if c else "-"]
                cells += [_pct(r["approximate_rate"]), _pct(c["approximate_rate"]) if c else "-"]
                cells += [_psnr_cell(r), f"{c['mean_psnr']:.1f}" if c else "-"]
                cells += [f"{it:.1f}"]
            parts.append(" ".join(f"{v:>7}" for v in cells))
        lines.append(f"{left}  | " + " | ".join(parts) + f" | {secs:5.1f}s")
    th = doc["thresholds"]
    lines.append(
        f"acc: MSE < {th['accurate_mse']:g}; approx: MSE < {th['approximate_mse']:g}; "
        f"PSNR: mean dB (data range 1, capped at {th['psnr_cap_db']:g}); "
        "iters: mean iterations per image (outer for blind/known, f calls for ae-iterations)"
    )
    if ctl:
        lines.append(
            f"ctl: the model-free control, {doc['control']['method']}, on the same degraded "
            "images (same masks, same split); a train rate near its ctl is not memorization"
        )
    return "\n".join(lines)


def format_loss_table(doc: dict) -> str:
    """Recovery rate vs train loss (the paper's Figure 3 as a table), train split only."""
    by: dict[tuple, list] = {}
    for r in doc["runs"]:
        if r["split"] == "train":
            by.setdefault((r["mask"], r["method"]), []).append(r)
    wm = max([4] + [len(k[0]) for k in by])
    wc = max([10] + [len(r["checkpoint"]) for rs in by.values() for r in rs])
    lines = [
        f"{'mask':<{wm}}  {'method':<14} {'checkpoint':<{wc}} {'train loss':>10} {'acc':>7} "
        f"{'approx':>7} {'PSNR':>7}"
    ]
    for (mask, method), rs in by.items():
        for r in sorted(rs, key=lambda r: -(r["train_loss"] or 0.0)):
            loss = "-" if r["train_loss"] is None else f"{r['train_loss']:.2e}"
            lines.append(
                f"{mask:<{wm}}  {method:<14} {r['checkpoint']:<{wc}} {loss:>10} "
                f"{_pct(r['accurate_rate']):>7} {_pct(r['approximate_rate']):>7} "
                f"{_psnr_cell(r):>7}"
            )
    return "\n".join(lines)


def _psnr_cell(r: dict) -> str:
    """The table's mean PSNR of a run; ``n/a`` when every sample diverged (no estimate)."""
    if r["n"] and r.get("n_diverged", 0) >= r["n"]:
        return "n/a"
    return f"{r['mean_psnr']:.1f}"
