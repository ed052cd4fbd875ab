"""Per-sample stopping that knows the floating-point floor, and gives up on stalled samples.

:class:`FloorRule` is the stopping rule of the recovery solvers (``tol="auto"``,
:mod:`refinv.solvers.recovery`); :func:`~refinv.solvers.run_loop` calls its
:meth:`FloorRule.update` at every check with the samples still running, which it
identifies by their index in the original batch (stopped samples leave the batch).
Per sample it reads what the step reports (:class:`~refinv.solvers.Check`):

* ``delta_t = ||x^t - x^{t-1}|| / ||x^{t-1}||``, the relative change of the iterate over
  the last step;
* ``mu_t = ||r(x^t)|| / ||y||``, a data misfit (the residual of the fit the solver
  minimizes; :mod:`refinv.solvers.recovery` says which), ``s_t = ||x^t|| / ||y||``, and
  whether a discrete part of the state (the blind solver's mask) moved.

``eps`` is the machine epsilon of the iterate's dtype (1.19e-7 in float32, 2.22e-16 in
float64). ``tau = 1024 eps`` (1.22e-4 in float32, 2.27e-13 in float64) is the *floor
bound*: above the level at which ``delta_t`` stops decreasing once the iteration has
converged (its rounding floor, measured at 4 to 27 eps, 90th percentile at most 42 eps,
on the shipped autoencoders: docs/theory/recovery.md). ``s`` is the number of steps
between two checks (1 for the PnP-ADMM solvers, whose step is an outer iteration;
``check_every`` for the AE iterations, where ``delta_t`` is the change of the last call
only). ``W`` is ``patience`` and ``g(v)`` the least-squares slope of ``log v`` over the
last ``W`` checks (per check); ``rho = 0.99``. A sample stops at check ``t``:

**converged** (a fixed point to rounding) when ``delta_t <= 16 eps``, from the first
check;

**converged** (the contraction estimate) when ``delta_t <= tau_c`` and

    ``e_t = delta_t r_t / (1 - r_t) <= tau_c``,
    ``r_t = max(delta_t / delta_{t-1}, delta_{t-1} / delta_{t-2}) ** (1/s) < 1``,

``tau_c = 64 eps``: for an iteration that contracts with factor ``r`` per step towards
its limit ``x*``, ``||x^t - x*|| <= r / (1 - r) ||x^t - x^{t-1}||`` (the a posteriori
bound of the contraction mapping theorem), so ``e_t`` estimates the remaining relative
error with the worse of the last two measured rates; the target sits well below ``tau``
because a measured rate can be too optimistic when the iteration is about to slow down;

**converged** (at the floor) when ``g(delta) >= log rho`` (the changes no longer
decrease), at least half of the window's changes are ``<= tau``, and the misfit no longer
decreases either (``g(mu) >= log rho``): the iterate sits at the rounding floor of its
iteration;

**stalled** (a failure) when ``g(mu) >= log rho`` (the misfit no longer decreases),
``mu_t > tau`` (far above the floor), the discrete state did not move in the window,
and either ``g(delta) >= log rho`` (the iterate wanders, oscillates or creeps: no
progress at all) or, with ``tol="auto"``, ``e'_t s_t <= 0.1 mu_t`` where
``e'_t = delta_t q / (1 - q)`` with the window's rate ``q = exp(g(delta) / s)``: the
misfit is 1-Lipschitz in ``x`` (relative to ``||y||``), so the limit's misfit is at
least ``mu_t - e'_t s_t >= 0.9 mu_t``; the iteration converges to a point that does
not fit the data.

Divergence (NaN/Inf, ``max |x| > blowup``) is the loop's own test and comes first.
``patience=None`` (or 0) disables the window tests (only the fixed-point and contraction
tests stop a sample). A fixed threshold (``tol`` a number) replaces the three
convergence tests by ``delta_t < tol`` and keeps the "no progress at all" stall test.
``search_patience`` (off by default) also stops a sample whose discrete state keeps
moving when the misfit has made no progress over that many checks.
"""

from __future__ import annotations

import math

import numpy as np

from .._constants import RECOVERY_DEFAULTS

__all__ = [
    "FloorRule",
    "FLOOR_C",
    "FIXED_C",
    "CONTRACT_C",
    "PROGRESS_RATE",
    "DEFAULT_PATIENCE",
    "LIMIT_FRACTION",
]

#: the floor bound in units of the dtype's machine epsilon
FLOOR_C = 1024.0
#: a change this small (in eps) is a fixed point to rounding: converged at once
FIXED_C = 16.0
#: the contraction estimate's target (in eps): remaining relative error at most this
CONTRACT_C = 64.0
#: a sequence "progresses" when it decreases faster than this factor per check
PROGRESS_RATE = 0.99
#: checks without progress before a sample counts as stalled (or at its floor)
DEFAULT_PATIENCE = RECOVERY_DEFAULTS["patience"]
#: a converging sample is stalled when its remaining distance is below this fraction of its
#: misfit: the limit keeps at least (1 - LIMIT_FRACTION) of the misfit
LIMIT_FRACTION = 0.1

_TINY = 1e-300


class FloorRule:
    """The per-sample stopping rule of the module docstring, for ``n`` samples.

    Parameters
    ----------
    n : int
        Samples in the batch (their original indices ``0..n-1``; the loop
        passes the indices of the samples still running).
    eps : float
        The machine epsilon of the iterate's dtype (``xp.finfo(dtype).eps``).
    patience : int or None
        ``W``: checks over which the trends are measured. ``None`` or 0: no
        window tests (no floor detection, no stall detection).
    every : int
        Steps between two checks (``s``).
    tol : float or None
        A fixed threshold ``delta_t < tol`` instead of the contraction and floor
        tests (``None``: those tests).
    c : float
        The floor bound ``tau = c * eps``.
    rate : float
        ``rho``: a sequence progresses when it shrinks faster than ``rho`` per step.
    """

    def __init__(
        self,
        n: int,
        eps: float,
        *,
        patience: int | None = DEFAULT_PATIENCE,
        every: int = 1,
        tol: float | None = None,
        c: float = FLOOR_C,
        rate: float = PROGRESS_RATE,
        search_patience: int | None = None,
    ) -> None:
        self.eps = float(eps)
        self.tau = float(c) * self.eps
        self.tau0 = FIXED_C * self.eps
        self.tau_c = CONTRACT_C * self.eps
        self.log_tau = math.log(self.tau)
        self.tol = None if tol is None else float(tol)
        self.W = int(patience or 0)
        self.W2 = int(search_patience or 0) if self.W else 0
        self.every = int(every)
        self.log_rate = math.log(rate)  # per check
        self.L = max(self.W, self.W2, 1)
        self.buf = np.zeros((n, self.L, 2))  # (log delta, log misfit), ring buffer per sample
        self.d1 = np.full(n, np.nan)  # delta at the previous check
        self.d2 = np.full(n, np.nan)  # ... and at the one before
        self.moved = np.full(n, -(2**62), dtype=np.int64)  # last check the state moved
        self.count = np.zeros(n, dtype=np.int64)  # checks seen per sample
        self.estimate = np.full(n, np.inf)  # last e_t (the contraction estimate)
        self._slope = {w: self._weights(w) for w in (self.W, self.W2) if w}

    def _weights(self, w: int) -> np.ndarray:
        """Least-squares slope weights over ``w`` checks (oldest first), per check, for
        both columns of the buffer at once: shape ``(w, 1)``."""
        t = np.arange(w, dtype=np.float64) - (w - 1) / 2.0
        return (t / np.dot(t, t))[:, None]

    def _window(self, idx: np.ndarray, c: np.ndarray, w: int) -> np.ndarray:
        """The last ``w`` checks of the samples ``idx`` (``c`` their counts before this
        check), oldest first: shape ``(len(idx), w, 2)``."""
        cols = (c[:, None] - (w - 1) + np.arange(w)) % self.L
        return self.buf[idx[:, None], cols]

    def _stalled(self, win, d, scale, w):
        """``(stalled, changes flat, misfit flat)``: no progress of the misfit over the window,
        far above the floor, and the iterate wanders or its limit keeps the misfit (module
        docstring)."""
        g = (win * self._slope[w]).sum(axis=1)  # slopes of log delta and log misfit
        g_d, g_m = g[:, 0], g[:, 1]
        mu = np.exp(win[:, -1, 1])
        flat_d = g_d >= self.log_rate
        flat_m = g_m >= self.log_rate
        stuck = flat_d
        if self.tol is None:  # the limit keeps the misfit: e' sigma <= 0.1 mu
            q = np.exp(g_d / self.every)  # the window's rate per step
            with np.errstate(divide="ignore", invalid="ignore"):
                far = np.where(q < 1.0, d * q / (1.0 - q), np.inf) * scale
            stuck = flat_d | (far <= LIMIT_FRACTION * mu)
        return flat_m & (mu > self.tau) & stuck, flat_d, flat_m

    def update(
        self,
        idx: np.ndarray,
        change: np.ndarray,
        misfit: np.ndarray | None = None,
        moving: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Record one check of the samples ``idx``; return ``(converged, stalled)`` masks.

        ``change``, ``misfit``, ``moving``, ``scale``: :class:`~refinv.solvers.Check`'s
        fields for these samples (host arrays; ``scale`` None: 1)."""
        d = np.asarray(change, dtype=np.float64)
        c = self.count[idx]
        self.count[idx] = c + 1
        pos = c % self.L
        self.buf[idx, pos, 0] = np.log(np.maximum(d, _TINY))
        if misfit is not None:
            self.buf[idx, pos, 1] = np.log(np.maximum(np.asarray(misfit, np.float64), _TINY))
        if moving is not None:
            mv = np.asarray(moving, bool)
            self.moved[idx[mv]] = c[mv]
        # the contraction estimate: the worse of the last two rates, per step
        d1, d2 = self.d1[idx], self.d2[idx]
        self.d2[idx], self.d1[idx] = d1, d
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            r = np.maximum(d / d1, d1 / d2) ** (1.0 / self.every)  # NaN until 3 checks
            est = np.where(r < 1.0, d * r / (1.0 - r), np.inf)
        est[d == 0] = 0.0
        self.estimate[idx] = est
        if self.tol is None:  # a fixed point to rounding, or the contraction estimate
            conv = (d <= self.tau0) | ((d <= self.tau_c) & (est <= self.tau_c))
        else:
            conv = d < self.tol
        stall = np.zeros(d.shape, dtype=bool)
        if self.W:
            rows = np.flatnonzero(c + 1 >= self.W)
            if rows.size:
                ii, cc = idx[rows], c[rows]
                win = self._window(ii, cc, self.W)
                sc = self._scale(scale, rows)
                stuck, flat_d, flat_m = self._stalled(win, d[rows], sc, self.W)
                if self.tol is None:  # at the floor: flat, at least half the window <= tau,
                    # and the misfit (if measured) no longer decreasing either
                    low = (win[:, :, 0] <= self.log_tau).sum(axis=1) * 2 >= self.W
                    conv[rows] |= flat_d & low & (flat_m if misfit is not None else True)
                if misfit is not None:
                    searching = cc - self.moved[ii] < self.W
                    stall[rows] = stuck & ~searching
                    if self.W2:  # a search without progress, after search_patience
                        sel = searching & (cc + 1 >= self.W2)
                        if sel.any():
                            long = rows[sel]
                            win2 = self._window(idx[long], c[long], self.W2)
                            sc2 = self._scale(scale, long)
                            stall[long] = self._stalled(win2, d[long], sc2, self.W2)[0]
        stall &= ~conv
        return conv, stall

    @staticmethod
    def _scale(scale: np.ndarray | None, rows: np.ndarray) -> np.ndarray | float:
        return 1.0 if scale is None else np.asarray(scale, dtype=np.float64)[rows]
