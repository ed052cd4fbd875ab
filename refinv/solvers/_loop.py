"""The one solver loop shared by every refinv solver.

A solver is a *step function* ``step(state) -> (state, residual)`` that reads
like its paper's algorithm box, plus an initial *state*: a ``NamedTuple``
whose array fields all carry the batch on axis 0 (``None`` fields are
allowed and passed through). ``residual`` is one non-negative number per
sample (an array of shape ``(batch,)`` in the state's namespace), or a
:class:`Check` that adds a data misfit and a "still moving" flag per sample;
the loop stops a sample when its residual drops below ``tol`` (converged) or,
given a ``rule`` (:class:`~refinv.solvers._stopping.FloorRule`), when the rule
says it converged or stalled, when it stops being finite or its iterate blows
up (diverged), or at ``max_iter``.

Per-sample stopping is real: a stopped sample leaves the batch, so later
iterations cost only what is still running, and each sample's result is the
state at its own last iteration. Results therefore do not depend on which
other samples share the batch (up to the floating-point behaviour of the
network's kernels at different batch sizes).

Device syncs: the residual is brought to the host once every
``check_every`` iterations (one small ``(batch,)`` copy); nothing else
leaves the device inside the loop.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .._progress import Progress
from ..backend import device_of, from_numpy, namespace, to_numpy
from ..errors import ConfigError, DivergenceWarning

__all__ = ["SolverResult", "run_loop", "take_batch", "StopReason", "Check"]

log = logging.getLogger("refinv.solvers")


class StopReason:
    """Why a sample stopped (``SolverResult.stop_reason``)."""

    CONVERGED = "converged"
    STALLED = "stalled"
    MAX_ITER = "max_iter"
    DIVERGED = "diverged"
    CALLBACK = "callback"
    #: every reason, in a fixed order (a stored reason is its index here)
    ALL = ("converged", "stalled", "max_iter", "diverged", "callback")


class Check(NamedTuple):
    """What a step reports at a check, per sample (arrays of shape ``(batch,)``).

    ``change``: the stopping quantity (the relative change of the iterate);
    ``misfit``: a relative data misfit ``||r(x)|| / ||y||`` whose stagnation far
    above the floating-point floor means the sample will not converge to a fit
    of the data (``None``: not measured); ``moving``: True where a discrete part
    of the state changed at this step (the blind solver's mask), so the sample is
    still searching; ``scale``: ``||x|| / ||y||``, which converts a distance
    relative to ``x`` into the misfit's units.
    """

    change: Any
    misfit: Any = None
    moving: Any = None
    scale: Any = None


@dataclass
class SolverResult:
    """What every refinv solver returns.

    Attributes
    ----------
    x : array, shape (batch, ...)
        The estimate, in the namespace/device/dtype of the inputs.
    state : NamedTuple
        The final state of every sample (auxiliary variables such as the
        estimated mask ``h`` or the ADMM variables ``z``, ``u``).
    iterations : numpy.ndarray of int, shape (batch,)
        Iterations each sample ran.
    converged : numpy.ndarray of bool, shape (batch,)
        Whether the sample's residual fell below ``tol``.
    diverged : numpy.ndarray of bool, shape (batch,)
        Whether the sample was stopped for NaN/Inf or blow-up.
    residual : numpy.ndarray of float, shape (batch,)
        The last residual of each sample (the stopping quantity).
    stop_reason : list of str
        Per sample: ``"converged"``, ``"stalled"`` (a stopping rule gave up on it:
        no progress towards a fit of the data), ``"max_iter"``, ``"diverged"`` or
        ``"callback"``.
    history : numpy.ndarray or None, shape (n_checks, batch)
        Residual of each sample at each check (NaN once a sample stopped), if recorded.
    seconds : float
        Wall time of the loop.
    method : str
        Name of the solver.
    info : dict
        Solver settings and extra diagnostics (plain Python values).
    """

    x: Any
    state: Any
    iterations: np.ndarray
    converged: np.ndarray
    diverged: np.ndarray
    residual: np.ndarray
    stop_reason: list[str]
    history: np.ndarray | None = None
    seconds: float = 0.0
    method: str = ""
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.iterations.shape[0])

    def summary(self) -> dict:
        """A JSON-ready per-solver summary (no arrays of the estimate)."""
        return {
            "method": self.method,
            "n": self.n,
            "seconds": self.seconds,
            "iterations": self.iterations.tolist(),
            "converged": self.converged.tolist(),
            "diverged": self.diverged.tolist(),
            "residual": [float(r) for r in self.residual],
            "stop_reason": list(self.stop_reason),
            "info": self.info,
        }


def _batched_fields(state: NamedTuple, n: int) -> list[bool]:
    flags = []
    for name, v in zip(state._fields, state, strict=True):
        if v is None:
            flags.append(False)
            continue
        if not hasattr(v, "shape") or len(v.shape) == 0 or v.shape[0] != n:
            raise ConfigError(
                f"solver state field {name!r}: expected an array with the batch ({n}) on "
                f"axis 0, got {getattr(v, 'shape', type(v).__name__)}"
            )
        flags.append(True)
    return flags


def take_batch(state: NamedTuple, idx: np.ndarray) -> NamedTuple:
    """The samples ``idx`` (host integer array) of every batched field of ``state``."""
    out = []
    for v in state:
        if v is None:
            out.append(None)
            continue
        xp = namespace(v)
        out.append(xp.take(v, from_numpy(idx.astype(np.int64), like=v), axis=0))
    return type(state)(*out)


def _concat_states(parts: list[NamedTuple], order: np.ndarray) -> NamedTuple:
    """Concatenate finished parts and put samples back in their original order."""
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    first = parts[0]
    out = []
    for i, v in enumerate(first):
        if v is None:
            out.append(None)
            continue
        xp = namespace(v)
        cat = xp.concat([p[i] for p in parts], axis=0) if len(parts) > 1 else v
        out.append(xp.take(cat, from_numpy(inv, like=v), axis=0))
    return type(first)(*out)


def _per_sample_maxabs(x: Any) -> Any:
    if type(x) is np.ndarray:  # NumPy fast path (the same reduction, no namespace lookup)
        return np.abs(x.reshape(x.shape[0], -1)).max(axis=1)
    xp = namespace(x)
    flat = xp.reshape(x, (x.shape[0], -1))
    return xp.max(xp.abs(flat), axis=1)


def run_loop(
    step: Callable[[NamedTuple], tuple[NamedTuple, Any]],
    state: NamedTuple,
    *,
    max_iter: int,
    tol: float,
    primary: str = "x",
    check_every: int = 1,
    callback: Callable[[int, NamedTuple, Any], bool | None] | None = None,
    record_history: bool = False,
    blowup: float = 1e6,
    method: str = "",
    info: dict | None = None,
    progress: bool | None = None,
    warn_divergence: bool = True,
    rule: Any = None,
) -> SolverResult:
    """Run ``step`` on a batched ``state`` with per-sample stopping.

    Parameters
    ----------
    step : callable
        ``step(state) -> (state, residual)``; ``residual`` has shape ``(batch,)``.
    state : NamedTuple
        Initial state; array fields carry the batch on axis 0.
    max_iter : int
        Maximum number of steps per sample.
    tol : float
        A sample stops (converged) when its residual is ``< tol``. ``tol=0``
        disables early stopping (fixed iteration count).
    primary : str
        The state field returned as ``result.x`` and watched for blow-up.
    check_every : int
        Bring residuals to the host every ``check_every`` steps (a device sync).
    callback : callable, optional
        ``callback(k, state, residual)`` after each check, with the still-active
        samples; returning ``True`` stops every sample (reason ``"callback"``).
    record_history : bool
        Keep the residual of every sample at every check.
    blowup : float
        A sample whose ``max |x|`` exceeds this is stopped as diverged.
    progress : bool or None
        Show a progress bar on stderr (``None``: only when stderr is a TTY).
    rule : FloorRule, optional
        A per-sample stopping rule (:class:`~refinv.solvers._stopping.FloorRule`)
        that replaces the ``tol`` test: at each check ``rule.update(active,
        change, misfit, moving, scale)`` (the step's :class:`Check`, on the host)
        returns which samples converged and which stalled (reason ``"stalled"``).
    """
    if max_iter < 1:
        raise ConfigError(f"max_iter: expected a positive integer, got {max_iter}")
    if tol < 0:
        raise ConfigError(f"tol: expected a non-negative number, got {tol}")
    if check_every < 1:
        raise ConfigError(f"check_every: expected a positive integer, got {check_every}")
    if primary not in state._fields:
        raise ConfigError(f"primary: {primary!r} is not a field of the state {state._fields}")
    n = int(getattr(state, primary).shape[0])
    _batched_fields(state, n)

    t0 = time.perf_counter()
    iterations = np.zeros(n, dtype=np.int64)
    converged = np.zeros(n, dtype=bool)
    diverged = np.zeros(n, dtype=bool)
    residual = np.full(n, np.nan)
    reason = [StopReason.MAX_ITER] * n
    history: list[np.ndarray] = []
    active = np.arange(n)
    parts: list[NamedTuple] = []
    order_parts: list[np.ndarray] = []
    cur = state
    bar = Progress(total=max_iter, desc=method or "solve", enabled=progress)

    def finish(mask: np.ndarray, why: str | None, k: int) -> None:
        nonlocal cur, active
        if not mask.any():
            return
        done_idx = np.flatnonzero(mask)
        keep_idx = np.flatnonzero(~mask)
        parts.append(take_batch(cur, done_idx) if keep_idx.size else cur)
        order_parts.append(active[done_idx])
        iterations[active[done_idx]] = k  # the samples ran k steps (set once, when they stop)
        if why is not None:
            for i in active[done_idx]:
                reason[i] = why
        cur = take_batch(cur, keep_idx) if keep_idx.size else cur
        active = active[keep_idx]

    k = 0
    try:
        for k in range(1, max_iter + 1):
            cur, res = step(cur)
            if k % check_every and k != max_iter:
                continue
            chk = res if isinstance(res, Check) else None
            if chk is not None:
                res = chk.change
            res_h = np.asarray(to_numpy(res), dtype=np.float64).reshape(-1)
            xmax = np.asarray(to_numpy(_per_sample_maxabs(getattr(cur, primary))), np.float64)
            residual[active] = res_h
            if record_history:
                row = np.full(n, np.nan)
                row[active] = res_h
                history.append(row)
            div = ~np.isfinite(res_h) | ~np.isfinite(xmax) | (xmax > blowup)
            if rule is None:
                conv = (res_h < tol) & ~div
                stall = None
            else:
                mis = mov = scl = None
                if chk is not None and chk.misfit is not None:
                    mis = np.asarray(to_numpy(chk.misfit), dtype=np.float64).reshape(-1)
                if chk is not None and chk.moving is not None:
                    mov = np.asarray(to_numpy(chk.moving), dtype=bool).reshape(-1)
                if chk is not None and chk.scale is not None:
                    scl = np.asarray(to_numpy(chk.scale), dtype=np.float64).reshape(-1)
                conv, stall = rule.update(active, res_h, mis, mov, scl)
                conv = conv & ~div
                stall = stall & ~div & ~conv
            diverged[active[div]] = True
            converged[active[conv]] = True
            stop_cb = False
            if callback is not None:
                stop_cb = bool(callback(k, cur, res))
            done = div | conv
            stops = [(div, StopReason.DIVERGED), (conv & ~div, StopReason.CONVERGED)]
            if stall is not None:
                done = done | stall
                stops.append((stall, StopReason.STALLED))
            # order matters: diverged first, then converged, then stalled, then the rest
            for sel, why in stops:
                if sel.any():
                    for i in active[sel]:
                        reason[i] = why
            if stop_cb:
                rest = ~done
                for i in active[rest]:
                    reason[i] = StopReason.CALLBACK
                finish(np.ones(active.size, dtype=bool), None, k)
                break
            finish(done, None, k)
            bar.update(k)
            if active.size == 0:
                break
        if active.size:
            finish(np.ones(active.size, dtype=bool), None, k)
    finally:
        bar.close()

    order = np.concatenate(order_parts) if order_parts else np.arange(n)
    final = _concat_states(parts, order)
    seconds = time.perf_counter() - t0
    if diverged.any() and warn_divergence:
        msg = (
            f"{method or 'solver'}: {int(diverged.sum())} of {n} samples diverged "
            f"(NaN/Inf or |x| > {blowup:g}) and were stopped; the others continued"
        )
        # one message, no log line too; attributed to the user's line that called refinv
        warnings.warn(msg, DivergenceWarning, stacklevel=_outside_refinv())
    log.debug(
        "%s: %d samples, %d iterations max, %.3f s", method, n, int(iterations.max()), seconds
    )
    return SolverResult(
        x=getattr(final, primary),
        state=final,
        iterations=iterations,
        converged=converged,
        diverged=diverged,
        residual=residual,
        stop_reason=reason,
        history=np.stack(history) if record_history and history else None,
        seconds=seconds,
        method=method,
        info=dict(info or {}),
    )


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _outside_refinv() -> int:
    """The ``stacklevel`` that attributes a warning raised by the caller of this function to
    the first frame outside the refinv package (the user's call), whatever the depth of the
    solver that warns."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


_EPS: dict = {}  # NumPy dtype -> its eps as a 0-d array (relative_change's fast path)


def relative_change(xp: Any, new: Any, old: Any, eps: float | None = None) -> Any:
    """Per-sample ``||new - old|| / max(||old||, eps)`` over all non-batch axes."""
    b = new.shape[0]
    if type(new) is np.ndarray and type(old) is np.ndarray:
        # NumPy fast path, bitwise the array-API path below (numpy's vector_norm of a real
        # array is sqrt(add.reduce(x * x)) along the axis; tested): no namespace lookups
        d = (new - old).reshape(b, -1)
        o = old.reshape(b, -1)
        e = _EPS.get(new.dtype) if eps is None else None
        if e is None:
            e = np.asarray(np.finfo(new.dtype).eps if eps is None else eps, dtype=new.dtype)
            if eps is None:
                _EPS[new.dtype] = e
        num = np.sqrt(np.add.reduce(d * d, axis=1))
        den = np.sqrt(np.add.reduce(o * o, axis=1))
        return num / np.maximum(den, e)
    d = xp.reshape(new - old, (b, -1))
    o = xp.reshape(old, (b, -1))
    if eps is None:
        eps = float(xp.finfo(new.dtype).eps)
    num = xp.linalg.vector_norm(d, axis=1)
    den = xp.linalg.vector_norm(o, axis=1)
    return num / xp.maximum(den, xp.asarray(eps, dtype=new.dtype, device=device_of(new)))
