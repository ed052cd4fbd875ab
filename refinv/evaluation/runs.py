"""One run of a recovery method: degrade images with a mask, recover them, measure.

The pieces every batch of recoveries is made of (``refinv evaluate``, ``audit``, ``sweep``):
:func:`degrade` draws the masks and noise of a split from the run's seed,
:func:`run_method` runs one method with :func:`method_options`, :func:`recovery_metrics`
measures each image, :func:`run_entry` is the report's record of the run. The seeds are
described in :mod:`refinv.evaluation.report`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import ConfigError, DivergenceWarning
from ..operators.masks import MaskSpec, erase, parse_mask, pixel_shape
from .metrics import ACCURATE_MSE, APPROXIMATE_MSE, PSNR_CAP_DB, psnr_from_mse

__all__ = [
    "METHODS",
    "recovery_metrics",
    "run_method",
    "method_options",
    "effective_options",
    "run_entry",
    "sample_lists",
    "degrade",
    "warn_diverged",
    "warn_unit_diverged",
]

METHODS = ("blind", "known", "ae-iterations")


def recovery_metrics(x_true: np.ndarray, x_hat: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample ``mse`` (float64) and ``psnr`` clamped to ``[0, PSNR_CAP_DB]`` dB.

    The floor: any estimate clipped to the data range [0, 1] has MSE <= 1, i.e.
    PSNR >= 0 dB, so 0 dB already means "nothing recovered"; diverged samples
    (MSE NaN or astronomically large) get 0 dB instead of dragging the mean PSNR
    to minus infinity. Their ``mse`` stays NaN (``null`` in JSON) or its true value.
    """
    xt = np.asarray(x_true, dtype=np.float64)
    xh = np.asarray(x_hat, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        d = (xh - xt).reshape(xt.shape[0], -1)
        m = np.mean(d * d, axis=1)
    m = np.where(np.isfinite(m), m, np.nan)
    p = np.asarray(psnr_from_mse(m, 1.0))
    p = np.where(np.isnan(p), 0.0, np.clip(p, 0.0, PSNR_CAP_DB))
    return {"mse": m, "psnr": p}


def run_method(
    method: str,
    f: Any,
    y: np.ndarray,
    mask: np.ndarray,
    *,
    options: dict | None = None,
    seed: int = 0,
    noisy: bool = False,
    progress: bool | None = None,
):
    """Run one recovery ``method`` (``blind``, ``known``, ``ae-iterations``) on ``y``.

    ``mask`` is the true mask (used only by ``known``); ``options`` are the
    solver's keyword options (``mask_init`` may be ``"file:PATH.npz[:KEY]"``: a 0/1 array
    ``(H, W)`` or ``(N, H, W)`` read as a mask spec). Returns the
    :class:`~refinv.solvers.SolverResult`.
    """
    from ..solvers.recovery import ae_iterations, blind_recovery, known_mask_recovery

    opts = dict(options or {})
    if method == "blind":
        opts.setdefault("rng", np.random.default_rng([seed, 1]))
        init = opts.get("mask_init")
        if isinstance(init, str) and init.lower().startswith("file:"):  # file:PATH.npz[:KEY]
            n = int(y.shape[0])
            opts["mask_init"] = parse_mask(init).draw(pixel_shape(tuple(y.shape[1:])), n)
        return blind_recovery(f, y, progress=progress, **opts)
    if method == "known":
        opts.setdefault("reinsert", not noisy)
        return known_mask_recovery(f, y, mask, progress=progress, **opts)
    if method == "ae-iterations":
        return ae_iterations(f, y, progress=progress, **opts)
    raise ConfigError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")


def method_options(method: str, solver: dict) -> dict:
    """Keep only the options a method accepts (blind: all; known: no mask_init/tau; ae: few)."""
    allowed = {
        "blind": {
            "max_iter",
            "tol",
            "rho",
            "inner_iter",
            "mask_init",
            "tau",
            "clip",
            "blowup",
            "search_patience",
        },  # fmt: skip
        "known": {"max_iter", "tol", "rho", "inner_iter", "clip", "blowup", "reinsert"},
        "ae-iterations": {"max_iter", "tol", "clip", "blowup"},
    }[method] | {"patience"}  # every method stops by the same rule
    out = {k: v for k, v in solver.items() if k in allowed and v is not None}
    if method == "ae-iterations" and ("max_iter" in out or solver.get("inner_iter") is not None):
        # equal cost: the baseline gets as many calls of f as blind's outer x inner (each
        # defaulting to the solvers' DEFAULTS, also when only inner_iter is given)
        from ..solvers.recovery import DEFAULTS

        outer = int(out.get("max_iter") or DEFAULTS["max_iter"])
        out["max_iter"] = outer * int(solver.get("inner_iter") or DEFAULTS["inner_iter"])
    return out


# solver keywords that are not settings of a run (callbacks, seeds derived from the run's
# seed, output switches): left out of the effective options
_NOT_SETTINGS = frozenset({"rng", "callback", "record_history", "progress"})


def effective_options(method: str, solver: dict | None = None, *, noisy: bool = False) -> dict:
    """Every option ``method`` runs with: the solver's own defaults (read from its signature,
    so they cannot drift from it) overlaid with :func:`method_options` of ``solver``, and
    ``reinsert`` as :func:`run_method` sets it (off when ``noisy``). ``clip`` ``None`` is
    reported as ``False`` (no clipping). This is ``settings.solver[method]`` of the report.
    """
    import inspect

    from ..solvers.recovery import ae_iterations, blind_recovery, known_mask_recovery

    fn = {"blind": blind_recovery, "known": known_mask_recovery, "ae-iterations": ae_iterations}
    if method not in fn:
        raise ConfigError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    given = method_options(method, dict(solver or {}))
    if method == "known":
        given.setdefault("reinsert", not noisy)
    out = {}
    for name, p in inspect.signature(fn[method]).parameters.items():
        if p.kind is p.KEYWORD_ONLY and name not in _NOT_SETTINGS:
            out[name] = given.get(name, p.default)
    if out.get("clip") is None:
        out["clip"] = False
    return out


def rate_fields(mse: np.ndarray, psnr: np.ndarray) -> dict:
    """``n``, the accurate and approximate rates (a NaN MSE counts as not recovered) and the
    mean and median PSNR of per-image arrays: the fields every run of a report
    (recoveries and the model-free control) shares."""
    n = int(mse.shape[0])
    finite = np.where(np.isnan(mse), np.inf, mse)
    return {
        "n": n,
        "accurate_rate": float(np.mean(finite < ACCURATE_MSE)) if n else 0.0,
        "approximate_rate": float(np.mean(finite < APPROXIMATE_MSE)) if n else 0.0,
        "mean_psnr": float(np.mean(psnr)) if n else 0.0,
        "median_psnr": float(np.median(psnr)) if n else 0.0,
    }


def run_entry(
    *,
    checkpoint: str,
    train_loss: float | None,
    method: str,
    mask: str,
    split: str,
    mse: Any,
    psnr: Any,
    iterations: Any,
    converged: Any,
    diverged: Any,
    residual: Any,
    erased_fraction: float,
    mask_error: float | None,
    seconds: float,
    onnx_seconds: float | None,
    stop_reason: Any = None,
) -> dict:
    """One element of the report's ``runs`` from per-sample values (schema in docs/cli.md).

    ``mse`` may hold NaN (diverged samples; written as ``null``), ``residual``
    non-finite values (``null``). Rates count a NaN MSE as not recovered.
    ``stop_reason`` (the solver's per-sample reasons) is written when given.
    """
    m = np.asarray(mse, dtype=np.float64)
    p = np.asarray(psnr, dtype=np.float64)
    n = int(m.shape[0])
    return {
        "checkpoint": checkpoint,
        "train_loss": train_loss,
        "method": method,
        "mask": mask,
        "split": split,
        **rate_fields(m, p),
        "converged_rate": float(np.mean(np.asarray(converged, dtype=bool))) if n else 0.0,
        "n_diverged": int(np.sum(np.asarray(diverged, dtype=bool))),
        "seconds": float(seconds),
        "onnx_seconds": onnx_seconds,
        "erased_fraction": float(erased_fraction),
        "mask_error": mask_error,
        **sample_lists(m, p, iterations, converged, diverged, residual),
        **({} if stop_reason is None else {"stop_reason": [str(v) for v in stop_reason]}),
    }


def sample_lists(mse, psnr, iterations, converged, diverged, residual) -> dict:
    """Per-sample values as JSON lists: NaN MSE and non-finite residuals become ``None``."""
    return {
        "mse": [None if np.isnan(v) else float(v) for v in np.asarray(mse, dtype=np.float64)],
        "psnr": [float(v) for v in psnr],
        "iterations": [int(v) for v in iterations],
        "converged": [bool(v) for v in converged],
        "diverged": [bool(v) for v in diverged],
        "residual": [float(v) if v is not None and np.isfinite(v) else None for v in residual],
    }


def degrade(
    x: np.ndarray, spec: MaskSpec, *, seed: int = 0, noise_std: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(y, mask)``: masks drawn from ``default_rng(seed)``, noise from ``default_rng([seed, 2])``."""
    n = int(x.shape[0])
    mask = spec.draw(pixel_shape(tuple(x.shape[1:])), n, np.random.default_rng(seed))
    y = erase(x, mask, noise_std=noise_std, rng=np.random.default_rng([seed, 2]))
    return y, mask


def warn_diverged(entry: dict, solver: dict | None, stacklevel: int = 3) -> None:
    """One DivergenceWarning per run that had diverged samples, saying which run (the
    solver's own warning is silenced by the callers)."""
    if entry["n_diverged"]:
        blowup = (solver or {}).get("blowup") or 1e6
        warnings.warn(
            f"checkpoint {entry['checkpoint']}, mask {entry['mask']}, method {entry['method']}, "
            f"split {entry['split']}: {entry['n_diverged']} of {entry['n']} samples diverged "
            f"(NaN/Inf or |x| > {blowup:g}) and were stopped (MSE null in the report); the "
            "others continued",
            DivergenceWarning,
            stacklevel=stacklevel,
        )


def warn_unit_diverged(unit: Any, out: dict, solver: dict | None, stacklevel: int = 3) -> None:
    """:func:`warn_diverged` for one unit of work of the engine (a run, or a shard of one:
    its image range is named) with its per-image ``diverged`` list ``out``."""
    if unit.kind != "recovery" or not any(out.get("diverged", ())):
        return
    shard = unit.start > 0 or unit.stop < unit.n
    entry = {"checkpoint": unit.checkpoint, "mask": unit.mask, "method": unit.method,
             "split": f"{unit.split} [{unit.start}:{unit.stop}]" if shard else unit.split,
             "n": len(out["diverged"]),
             "n_diverged": int(sum(bool(v) for v in out["diverged"]))}  # fmt: skip
    warn_diverged(entry, solver, stacklevel=stacklevel + 1)
