"""The generic-inpainting control: fill the erased pixels without the model.

scikit-image's biharmonic inpainting (``skimage.restoration.inpaint_biharmonic``)
sees the same degraded image and the TRUE mask, and knows nothing of the
training set: its PSNR is what a generic prior recovers. Recovery through the
model far above it on training images, and near it on held-out images, is
memorization. The paper this follows (Abitbul & Dar) used a diffusion inpainter
for this role; this control is classical and runs offline, so it is a weaker
baseline than a modern generative inpainter.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = [
    "CONTROL_METHOD",
    "biharmonic_inpaint",
    "control_available",
    "resolve_control",
    "control_run",
    "control_index",
]

CONTROL_METHOD = "biharmonic inpainting (scikit-image inpaint_biharmonic), true mask, no model"


def biharmonic_inpaint(x_degraded: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Inpaint each image of ``x_degraded`` ``(N, *sample_shape)`` where the per-pixel
    ``mask`` (``(N, H, W)`` for ``(N, C, H, W)`` images, else the sample's shape; 1 =
    observed) is 0. Returns float64 images clipped to [0, 1]."""
    from skimage.restoration import inpaint_biharmonic

    x = np.asarray(x_degraded, dtype=np.float64)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        hole = np.asarray(mask[i]).reshape(x.shape[2:] if x.ndim == 4 else x.shape[1:]) == 0
        if not hole.any():
            out[i] = x[i]
            continue
        if hole.all():
            out[i] = 0.5  # nothing observed: the middle of the data range
            continue
        if x.ndim == 4:
            img = np.moveaxis(x[i], 0, -1)
            res = inpaint_biharmonic(img, hole, channel_axis=-1)
            out[i] = np.moveaxis(res, -1, 0)
        else:
            out[i] = inpaint_biharmonic(x[i], hole)
    return np.clip(out, 0.0, 1.0)


def control_available() -> bool:
    """scikit-image's inpainting can be imported (the ``audit`` extra installs it)."""
    try:
        from skimage.restoration import inpaint_biharmonic  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_control(control: bool | None) -> bool:
    """``None``: on where scikit-image is importable; ``True`` without it: a ConfigError
    that names the extra; ``False``: off."""
    if control is None:
        return control_available()
    if control and not control_available():
        from ..errors import ConfigError

        raise ConfigError(
            "the model-free inpainting control needs scikit-image (pip install 'refinv[audit]'); "
            "turn it off with --no-control (library: control=False)"
        )
    return bool(control)


def control_run(
    images: Any,
    spec: Any,
    *,
    split: str = "train",
    seed: int = 0,
    noise_std: float = 0.0,
    chunk: int | None = None,
    n_keep: int = 0,
    progress: bool | None = None,
    on_chunk: Any = None,
) -> tuple[dict, np.ndarray | None]:
    """The control of one split and mask: the SAME degraded images and masks as the
    memorization report's runs of that split and mask, inpainted without the model.

    ``images``: an array ``(N, *sample_shape)`` or a
    :class:`~refinv.evaluation.chunked.NpzImages`; ``spec`` a
    :class:`~refinv.operators.masks.MaskSpec`. The masks come from
    ``default_rng(seed)`` and the noise from ``default_rng([seed, 2])``, one draw per
    image in order, as in :func:`~refinv.evaluation.report.degrade` and
    :func:`~refinv.evaluation.chunked.evaluate_split_chunked` (``chunk`` images at a
    time; None: one batch). Returns ``(entry, first)``: ``entry`` is one element of the
    report's ``control.runs`` (``mask``, ``split``, ``n``, ``accurate_rate``,
    ``approximate_rate``, ``mean_psnr``, ``median_psnr``, ``seconds``, ``mse``,
    ``psnr``; thresholds of the report), ``first`` the inpainted first ``n_keep``
    images (None if ``n_keep`` is 0), for the figures. ``on_chunk(x, y, mask, xc, metrics)``
    is called after each chunk (the engine's control units keep their per-image rows).
    """
    from .._progress import Progress
    from ..operators.masks import erase, pixel_shape
    from .chunked import _chunks
    from .runs import recovery_metrics

    n_total = len(images) if hasattr(images, "chunks") else int(np.asarray(images).shape[0])
    size = int(chunk) if chunk is not None else max(n_total, 1)
    rng_mask = np.random.default_rng(seed)
    rng_noise = np.random.default_rng([seed, 2])
    mse, psnr, keep = [], [], []
    seconds, done = 0.0, 0
    bar = Progress(n_total, desc=f"control {spec.text} {split}", enabled=progress)
    try:
        for _, x in _chunks(images, size):
            m = int(x.shape[0])
            mask = spec.draw(pixel_shape(tuple(x.shape[1:])), m, rng_mask)
            y = erase(x, mask, noise_std=noise_std, rng=rng_noise)
            t0 = time.perf_counter()
            xc = biharmonic_inpaint(np.asarray(y), np.asarray(mask))
            seconds += time.perf_counter() - t0
            met = recovery_metrics(x, xc)
            if on_chunk is not None:
                on_chunk(x, y, mask, xc, met)
            mse.append(met["mse"])
            psnr.append(met["psnr"])
            need = min(n_keep - sum(len(k) for k in keep), m)
            if need > 0:
                keep.append(xc[:need].astype(np.asarray(x).dtype))
            done += m
            bar.update(done)
    finally:
        bar.close()
    mse_a = np.concatenate(mse) if mse else np.zeros(0)
    psnr_a = np.concatenate(psnr) if psnr else np.zeros(0)
    entry = control_entry(spec.text, split, mse_a, psnr_a, seconds)
    return entry, (np.concatenate(keep) if keep else None)


def control_entry(
    mask: str, split: str, mse_a: np.ndarray, psnr_a: np.ndarray, seconds: float
) -> dict:
    """One element of a report's ``control.runs`` from per-image MSE (NaN: none) and PSNR
    arrays: the rates at the report's thresholds, PSNR summaries and the per-image lists
    (``control_run`` and the report computed from a store both build it here)."""
    from .runs import rate_fields

    return {
        "mask": mask,
        "split": split,
        **rate_fields(mse_a, psnr_a),
        "seconds": float(seconds),
        "mse": [None if np.isnan(v) else float(v) for v in mse_a],
        "psnr": [float(v) for v in psnr_a],
    }


def control_index(doc: dict) -> dict[tuple[str, str], dict]:
    """``{(mask, split): control run}`` of a report (empty when the control was off)."""
    ctrl = doc.get("control") or {}
    return {(c["mask"], c["split"]): c for c in ctrl.get("runs", [])}
