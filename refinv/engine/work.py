"""The worker side: run one unit of a plan and return its per-image results.

:func:`run_unit` is a pure function of its :class:`~refinv.engine.plan.Unit` (and of the
in-memory objects its ``obj:`` paths name): it opens the model and the images itself
(cached per worker process), so any executor gives the same numbers. It uses the
evaluation's pieces (:mod:`refinv.evaluation.runs`):

* one batch (``chunk`` None): the masks and noise are drawn for the first ``n`` images of
  the split (:func:`~refinv.evaluation.runs.degrade`), a Bernoulli or file initial mask of
  the blind solver likewise, and the unit's shard ``[start, stop)`` is sliced out and solved
  in one batch, as ``refinv sweep`` has always done; for the whole split this is
  :func:`~refinv.evaluation.report.evaluate_split`'s computation;
* in chunks (``chunk`` set, whole split): :func:`~refinv.evaluation.chunked.evaluate_split_chunked`,
  ``chunk`` images at a time, the three random streams continuing from chunk to chunk.

The result: the per-sample lists the store keeps (``mse, psnr, iterations, converged,
diverged, residual, erased_fraction, mask_error``), ``seconds`` and ``onnx_seconds``, and
``arrays``: the exact pixel counts (``observed``, ``mismatched`` per image, ``pixels`` per
image), for the first ``keep`` images ``x``, ``y``, ``x_hat``, ``h_true``, ``h_est``, and
with ``estimates`` every image's ``x_hat_all`` (and ``h_est_all``, uint8, of blind).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Any

import numpy as np

from ..errors import ConfigError, DivergenceWarning
from .plan import OBJECT_PREFIX, Unit

__all__ = ["run_unit", "open_model", "model_file", "images_file", "clear_caches"]

_MODELS: dict[tuple, Any] = {}
_DATA: dict[tuple, np.ndarray] = {}


def clear_caches() -> None:
    """Forget the models and images opened by this process."""
    _MODELS.clear()
    _DATA.clear()


def _object(name: str, objects: dict | None) -> Any:
    if objects is None or name not in objects:
        raise ConfigError(
            f"{name}: an in-memory model or image array; such a plan runs in the process that "
            "holds them (one worker, no scheduler): give files to run it elsewhere"
        )
    return objects[name]


def open_model(unit: Unit, objects: dict | None = None) -> Any:
    """The unit's model: its in-memory object, or its ONNX file (:func:`model_file`)."""
    if unit.model_path.startswith(OBJECT_PREFIX):
        return _object(unit.model_path, objects)
    return model_file(unit.model_path, unit.threads, unit.provider, unit.batch_size,
                      unit.layout, unit.image_shape)  # fmt: skip


def model_file(
    path: str,
    threads: int | None = 1,
    provider: str = "cpu",
    batch_size: int | None = None,
    layout: str | None = None,
    image_shape: tuple[int, ...] | None = None,
) -> Any:
    """An ONNX model opened with these runtime options (cached, at most 4 per process)."""
    key = (path, threads, provider, batch_size, layout, image_shape)
    if key not in _MODELS:
        from ..onnx import OnnxModel

        if len(_MODELS) >= 4:  # bounded memory; units of one model tend to run together
            _MODELS.clear()
        _MODELS[key] = OnnxModel(
            path, provider=provider, batch_size=batch_size, intra_op_threads=threads,
            layout=layout, image_shape=image_shape,
        )  # fmt: skip
    return _MODELS[key]


def images_file(path: str, key: str, f: Any, n: int, layout: str | None = None) -> np.ndarray:
    """The first ``n`` images of ``path:key`` as the model ``f`` takes them (cached);
    ``layout``: the file's image layout (:func:`refinv.io.load_images`)."""
    k = (path, key, tuple(f.sample_shape), n, np.dtype(f.dtype).str, layout)
    if k not in _DATA:
        from ..io import load_images_for

        if len(_DATA) > 4:
            _DATA.clear()
        _DATA[k] = load_images_for(f, path, key, layout=layout)[:n]
    return _DATA[k]


def _images(unit: Unit, f: Any, objects: dict | None) -> np.ndarray:
    """The first ``n`` images of the unit's split as the model takes them."""
    if unit.data_path.startswith(OBJECT_PREFIX):
        return np.asarray(_object(unit.data_path, objects))[: unit.n]
    return images_file(unit.data_path, unit.data_key, f, unit.n, unit.data_layout)


def _image_source(unit: Unit, f: Any, objects: dict | None) -> Any:
    """The split read chunk by chunk: the in-memory array or ``NpzImages``, or the file."""
    if unit.data_path.startswith(OBJECT_PREFIX):
        return _object(unit.data_path, objects)
    from ..evaluation.chunked import NpzImages
    from ..io import flat_rows_ok

    dtype = np.float64 if f.dtype == np.float64 else np.float32
    return NpzImages(
        unit.data_path, unit.data_key, sample_shape=f.sample_shape, dtype=dtype,
        rows_ok=flat_rows_ok(f), layout=unit.data_layout,
    )  # fmt: skip


@contextlib.contextmanager
def _quiet(quiet: bool):
    """Divergence warnings off (the parent warns once per unit); with ``quiet`` the solvers'
    log too (their divergences are recorded per image in the store)."""
    solver_log = logging.getLogger("refinv.solvers")
    level = solver_log.level
    if quiet:
        solver_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)
            yield
    finally:
        solver_log.setLevel(level)


def run_unit(
    unit: Unit, objects: dict | None = None, *, progress: bool | None = False, quiet: bool = True
) -> dict:
    """Run one unit; per-image lists, ``seconds``, ``onnx_seconds`` and ``arrays`` (module
    docstring). ``progress``: the solver's progress bar (in-process runs only)."""
    f = open_model(unit, objects)
    stats = getattr(f, "stats", None)
    ort0 = stats.seconds if stats is not None else None
    with _quiet(quiet):
        if unit.kind == "control" and unit.solver.get("float32"):
            out = _run_control(unit, _images(unit, f, objects))
        elif unit.kind == "control":
            out = _run_control_split(unit, _image_source(unit, f, objects), progress)
        elif unit.kind == "stability":
            out = _run_stability(unit, f, _images(unit, f, objects))
        elif unit.chunk is not None:
            out = _run_chunked(unit, f, _image_source(unit, f, objects), progress)
        else:
            out = _run_batch(unit, f, _images(unit, f, objects), progress)
    out["onnx_seconds"] = (stats.seconds - ort0) if stats is not None else None
    return out


def _blind_init(unit: Unit, opts: dict, y_all: np.ndarray, nb: int, pshape: tuple) -> None:
    """A Bernoulli or file initial mask of the blind solver, drawn for the whole split (as
    the masks are) and sliced to the shard, in ``opts["mask_init"]``."""
    from ..operators.masks import parse_mask
    from ..solvers.recovery import initial_mask

    init = str(opts.get("mask_init", ""))
    sl = slice(unit.start, unit.stop)
    if init.startswith("bernoulli"):
        h0 = initial_mask(opts["mask_init"], y_all, rng=np.random.default_rng([unit.seed, 1]))
        opts["mask_init"] = np.asarray(h0)[sl].reshape(nb, *pshape)
    elif init.lower().startswith("file:"):  # one initial mask per image of the whole split
        opts["mask_init"] = np.asarray(parse_mask(init).draw(pshape, len(y_all)))[sl]


def _run_batch(unit: Unit, f: Any, x_all: np.ndarray, progress: bool | None) -> dict:
    """The shard ``[start, stop)`` in one batch; masks drawn for the whole split and sliced."""
    from .._progress import progress_label
    from ..evaluation.runs import degrade, method_options, run_method
    from ..operators.masks import parse_mask, pixel_shape

    spec = parse_mask(unit.mask)
    y_all, mask_all = degrade(x_all, spec, seed=unit.seed, noise_std=unit.noise_std)
    sl = slice(unit.start, unit.stop)
    x, y, mask = x_all[sl], np.ascontiguousarray(y_all[sl]), np.asarray(mask_all[sl])
    opts = method_options(unit.method, dict(unit.solver))
    pshape = pixel_shape(tuple(x.shape[1:]))
    if unit.method == "blind":
        _blind_init(unit, opts, y_all, len(x), pshape)
    t0 = time.perf_counter()
    with progress_label(f"{unit.checkpoint} {unit.mask} {unit.split}"):
        res = run_method(
            unit.method, f, y, mask, options=opts, seed=unit.seed,
            noisy=unit.noise_std > 0, progress=progress,
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    cols = _Columns(unit.method, pshape)
    cols.add(x, y, mask, res, keep=unit.keep, estimates=unit.estimates)
    return cols.result(seconds)


def _run_chunked(unit: Unit, f: Any, source: Any, progress: bool | None) -> dict:
    """The whole split ``chunk`` images at a time (:func:`evaluate_split_chunked`)."""
    from ..evaluation.chunked import evaluate_split_chunked
    from ..operators.masks import parse_mask

    if unit.start != 0:
        raise ConfigError(f"unit {unit.task_id}: a chunked unit covers its whole split")
    cols: _Columns | None = None

    def collect(start, x, y, mask, res, met):
        nonlocal cols
        if cols is None:
            from ..operators.masks import pixel_shape

            cols = _Columns(unit.method, pixel_shape(tuple(x.shape[1:])))
        cols.add(x, y, mask, res, keep=unit.keep, estimates=unit.estimates, metrics=met)

    entry = evaluate_split_chunked(
        f, source, parse_mask(unit.mask), unit.method, chunk=unit.chunk,
        label=unit.checkpoint, split=unit.split, seed=unit.seed, noise_std=unit.noise_std,
        solver=unit.solver, progress=progress, on_chunk=collect,
    )  # fmt: skip
    if cols is None:  # no images
        cols = _Columns(unit.method, ())
    return cols.result(entry["seconds"])


def _run_control(unit: Unit, x_all: np.ndarray) -> dict:
    """The generic-inpainting control (no model) on the shard: biharmonic inpainting of the
    degraded images with the true masks (:mod:`refinv.evaluation.control`)."""
    from ..evaluation.control import biharmonic_inpaint
    from ..evaluation.runs import degrade
    from ..operators.masks import parse_mask, pixel_shape

    y_all, mask_all = degrade(x_all, parse_mask(unit.mask), seed=unit.seed,
                              noise_std=unit.noise_std)  # fmt: skip
    sl = slice(unit.start, unit.stop)
    x, y, mask = x_all[sl], np.asarray(y_all[sl]), np.asarray(mask_all[sl])
    t0 = time.perf_counter()
    xc = biharmonic_inpaint(y, mask).astype(np.float32)
    nb = len(x)
    res = _Done(xc, np.zeros(nb, np.int64), np.ones(nb, bool), np.zeros(nb, bool), [None] * nb)
    cols = _Columns("control", pixel_shape(tuple(x.shape[1:])))
    cols.add(x, y, mask, res, keep=unit.keep, estimates=unit.estimates)
    return cols.result(time.perf_counter() - t0)


def _run_control_split(unit: Unit, source: Any, progress: bool | None) -> dict:
    """The control of ``refinv evaluate``: a whole split (``chunk`` images at a time),
    :func:`~refinv.evaluation.control.control_run`, its inpaintings in float64."""
    from ..evaluation.control import control_run
    from ..operators.masks import parse_mask, pixel_shape

    if unit.start != 0:
        raise ConfigError(f"unit {unit.task_id}: this control unit covers its whole split")
    cols: _Columns | None = None

    def collect(x, y, mask, xc, met):
        nonlocal cols
        if cols is None:
            cols = _Columns("control", pixel_shape(tuple(x.shape[1:])))
        nb = len(x)
        done = _Done(xc, np.zeros(nb, np.int64), np.ones(nb, bool), np.zeros(nb, bool), [None] * nb)
        cols.add(x, y, mask, done, keep=unit.keep, metrics=met)

    entry, first = control_run(
        source, parse_mask(unit.mask), split=unit.split, seed=unit.seed,
        noise_std=unit.noise_std, chunk=unit.chunk, n_keep=unit.keep, progress=progress,
        on_chunk=collect,
    )  # fmt: skip
    out = (cols or _Columns("control", ())).result(entry["seconds"])
    if first is not None:  # the figures' row: as control_run keeps them (the images' dtype)
        out["arrays"]["x_hat"] = first
    return out


def _run_stability(unit: Unit, f: Any, x_all: np.ndarray) -> dict:
    """The local-stability radius at each image of the shard (known-mask PnP-ADMM,
    :func:`~refinv.evaluation.stability.pnp_admm_stability`, noise-free masks): the array
    ``radius``. ``solver`` holds ``rho``, ``method`` and ``tol``."""
    from ..evaluation.runs import degrade
    from ..evaluation.stability import pnp_admm_stability
    from ..operators.masks import parse_mask

    _, mask = degrade(x_all, parse_mask(unit.mask), seed=unit.seed, noise_std=0.0)
    sl = slice(unit.start, unit.stop)
    t0 = time.perf_counter()
    radius = pnp_admm_stability(
        f, x_all[sl], mask[sl], rho=unit.solver["rho"], method=unit.solver["method"],
        tol=unit.solver["tol"],
    )  # fmt: skip
    return {"seconds": time.perf_counter() - t0, "arrays": {"radius": np.asarray(radius)}}


class _Done:
    """A solver result's fields for a unit without a solver (the control)."""

    def __init__(self, x, iterations, converged, diverged, residual) -> None:
        self.x, self.iterations, self.converged = x, iterations, converged
        self.diverged, self.residual = diverged, residual


class _Columns:
    """The per-image columns of a unit, gathered batch by batch."""

    def __init__(self, method: str, pshape: tuple) -> None:
        self.method, self.pshape = method, pshape
        self.lists: dict[str, list] = {}
        self.arrays: dict[str, list] = {}
        self.kept = 0

    def add(
        self, x, y, mask, res, *, keep: int, estimates: bool = False, metrics: dict | None = None
    ) -> None:
        from ..evaluation.runs import recovery_metrics, sample_lists

        nb = int(x.shape[0])
        met = metrics if metrics is not None else recovery_metrics(x, np.asarray(res.x))
        mflat = np.asarray(mask).reshape(nb, -1)
        part = sample_lists(
            met["mse"], met["psnr"], res.iterations, res.converged, res.diverged, res.residual
        )
        part["erased_fraction"] = [float(v) for v in 1.0 - np.mean(mflat, axis=1)]
        counts = {"observed": np.count_nonzero(mflat, axis=1)}
        part["mask_error"] = [None] * nb
        h = None
        if self.method == "blind":
            h = np.asarray(res.state.h).reshape(nb, *self.pshape)
            wrong = h.reshape(nb, -1) != mflat
            part["mask_error"] = [float(v) for v in np.mean(wrong, axis=1)]
            counts["mismatched"] = np.count_nonzero(wrong, axis=1)
        for k, v in part.items():
            self.lists.setdefault(k, []).extend(v)
        for k, v in counts.items():
            self.arrays.setdefault(k, []).append(v.astype(np.int64))
        reasons = getattr(res, "stop_reason", None)
        if reasons is not None and all(r is not None for r in reasons):
            from ..solvers._loop import StopReason  # kept as codes: StopReason.ALL's index

            codes = np.array([StopReason.ALL.index(r) for r in reasons], dtype=np.uint8)
            self.arrays.setdefault("stop_reason", []).append(codes)
        self.pixels = int(mflat.shape[1])
        if estimates:
            self.arrays.setdefault("x_hat_all", []).append(np.array(np.asarray(res.x)))
            if h is not None:
                self.arrays.setdefault("h_est_all", []).append(h.astype(np.uint8))
        take = min(keep - self.kept, nb)
        if take > 0:
            kept = {"x": x, "y": np.asarray(y), "x_hat": np.asarray(res.x), "h_true": mask}
            if h is not None:
                kept["h_est"] = h
            for k, v in kept.items():
                self.arrays.setdefault(k, []).append(np.array(np.asarray(v)[:take]))
            self.kept += take

    def result(self, seconds: float) -> dict:
        arrays = {k: np.concatenate(v) for k, v in self.arrays.items()}
        if self.lists:
            arrays["pixels"] = np.array(self.pixels, dtype=np.int64)
        return {**self.lists, "seconds": float(seconds), "arrays": arrays}
