"""Per-sample image metrics: MSE and PSNR (array API).

Conventions (stated once, used everywhere in refinv):

* ``mse(x, ref)`` is the mean over all non-batch axes (pixels and channels)
  of ``(x - ref)^2``, one value per sample, computed in the inputs' float
  dtype (float64 recommended for MSEs near 1e-14).
* ``psnr(x, ref, data_range=1.0) = 10 log10(data_range^2 / mse)`` in dB,
  per sample. The default ``data_range`` is **1.0**: refinv's images live in
  ``[0, 1]`` (the paper's thresholds assume it: MSE 1e-7 = 70 dB, MSE 5e-4 =
  33.01 dB). Pass ``data_range=255.0`` for 8-bit images. An exact recovery
  (MSE = 0) has PSNR ``+inf``; the memorization report caps each PSNR at
  ``PSNR_CAP_DB`` so that means and JSON stay finite.
"""

from __future__ import annotations

from typing import Any

from ..backend import namespace
from ..errors import ConfigError, ShapeError

__all__ = [
    "mse",
    "psnr",
    "psnr_from_mse",
    "ACCURATE_MSE",
    "APPROXIMATE_MSE",
    "PSNR_CAP_DB",
]

ACCURATE_MSE = 1e-7
"""Accurate recovery: MSE below this (PSNR > 70 dB for data range 1)."""

APPROXIMATE_MSE = 5e-4
"""Approximate recovery: MSE below this (PSNR > 33.01 dB for data range 1)."""

PSNR_CAP_DB = 200.0
"""PSNR reported for exact recoveries (MSE <= 1e-20 with data range 1)."""


def _pair(x: Any, ref: Any) -> Any:
    xp = namespace(x, ref)
    if tuple(x.shape) != tuple(ref.shape):
        raise ShapeError(
            f"x and ref: expected the same shape, got {tuple(x.shape)} and {tuple(ref.shape)}"
        )
    if x.ndim < 1:
        raise ShapeError("x: expected a batch (batch, ...), got a scalar")
    return xp


def mse(x: Any, ref: Any) -> Any:
    """Per-sample mean squared error, shape ``(batch,)``, in ``x``'s namespace."""
    xp = _pair(x, ref)
    d = xp.reshape(x - ref, (x.shape[0], -1))
    return xp.mean(d * d, axis=1)


def psnr_from_mse(m: Any, data_range: float = 1.0) -> Any:
    """``10 log10(data_range^2 / m)``; ``+inf`` where ``m == 0``."""
    if not data_range > 0:
        raise ConfigError(f"data_range: expected a positive number, got {data_range}")
    xp = namespace(m)
    zero = m == 0
    safe = xp.where(zero, xp.ones_like(m), m)  # no log10(0) warning; NaN stays NaN
    val = 10.0 * (2.0 * xp.log10(xp.asarray(data_range, dtype=m.dtype)) - xp.log10(safe))
    return xp.where(zero, xp.full_like(m, float("inf")), val)


def psnr(x: Any, ref: Any, data_range: float = 1.0) -> Any:
    """Per-sample PSNR in dB (``data_range`` = 1.0 by default: images in [0, 1])."""
    return psnr_from_mse(mse(x, ref), data_range)
