"""Per-sample stopping that knows the floating-point floor, and gives up on stalled samples.

:class:`FloorRule` is the stopping rule of the recovery solvers (``tol="auto"``,
:mod:`refinv.solvers.recovery`); :func:`~refinv.solvers.run_loop` calls its
:meth:`FloorRule.update` at every check with the still-running samples. It
looks at two per-sample sequences the step function reports
(:class:`~refinv.solvers.Check`):

* the relative change of the iterate over the last step,
  ``delta_t = ||x^t - x^{t-1}|| / ||x^{t-1}||``;
* a data misfit, ``mu_t = ||r(x^t)|| / ||x^t||`` (the residual of the data
  fit the solver minimizes; :mod:`refinv.solvers.recovery` says which), and
  whether a discrete part of the state (the blind solver's mask) moved.

With ``eps`` the machine epsilon of the iterate's dtype (1.19e-7 for
float32, 2.22e-16 for float64), ``tau = c * eps`` (``c = 1024`` by
default: 1.22e-4 in float32, 2.27e-13 in float64) is the *floor bound*:
the float32 floors measured on the shipped autoencoders, the level at which
``delta_t`` stops decreasing once the iterate has converged, are 5 to 150
``eps`` (``docs/theory/recovery.md``). ``s`` is the number of steps between
two checks (1 for the PnP-ADMM solvers, where a step is an outer iteration;
``check_every`` for the AE iterations, where ``delta_t`` is the change of the
last call only), so rates are per step. A sample stops at check ``t``:

**converged** (contraction estimate) when ``delta_t <= tau`` and

    ``e_t = delta_t * r_t / (1 - r_t) <= tau``,
    ``r_t = max(delta_t / delta_{t-1}, delta_{t-1} / delta_{t-2}) ** (1/s) < 1``;

``e_t`` bounds ``||x^t - x^*|| / ||x^t||`` for an iteration that contracts
with factor ``r_t`` per step towards its limit ``x^*`` (the a posteriori
bound of the contraction mapping theorem, ``||x^t - x^*|| <= r/(1-r)
||x^t - x^{t-1}||``); the rate is the worse of the last two measured, and
an exact fixed point (``delta_t = 0``) stops at once;

**converged** (at the floor) when, over the last ``W = patience`` checks,
the changes stopped decreasing, ``g_delta >= log(rho)`` (``g`` the
least-squares slope of ``log delta`` against the step number, ``rho = 0.99``),
at a floor no higher than the bound: ``median(delta) <= tau``;

**stalled** (a failure: it will not converge to a fit of the data) when,
over the last ``W`` checks, the misfit stopped decreasing,
``g_mu >= log(rho)``, far above the floor (``mu_t > tau``), the discrete
state did not move, and either the iterate stopped progressing too
(``g_delta >= log(rho)``: it wanders, oscillates or creeps) or its limit
cannot fit the data better: ``e_t' <= mu_t / 2`` with
``e_t' = delta_t * q / (1 - q)``, ``q = exp(g_delta)`` the window's rate
(the misfit is 1-Lipschitz in ``x``, so the limit's misfit is at least
``mu_t - e_t' >= mu_t / 2``).

Divergence (NaN/Inf, ``max |x| > blowup``) is the loop's own test and comes
first. ``patience=None`` disables both window tests (only the contraction
estimate stops a sample). A fixed threshold (``tol`` a number) replaces the
contraction and floor tests by ``delta_t < tol``; the stall test stays.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FloorRule", "FLOOR_C", "PROGRESS_RATE", "DEFAULT_PATIENCE"]

#: the floor bound in units of the dtype's machine epsilon
FLOOR_C = 1024.0
#: a sequence "progresses" when it decreases faster than this factor per step
PROGRESS_RATE = 0.99
#: checks without progress before a sample counts as stalled (or at its floor)
DEFAULT_PATIENCE = 20

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
        self.tol = None if tol is None else float(tol)
        self.W = int(patience or 0)
        self.W2 = int(search_patience or 0) if self.W else 0
        self.every = int(every)
        self.log_rate = math.log(rate)  # per check
        self.L = max(self.W, self.W2, 3)
        self.ld = np.zeros((n, self.L))  # log delta, ring buffer per sample
        self.lm = np.zeros((n, self.L))  # log misfit
        self.mv = np.zeros((n, self.L), dtype=bool)  # the discrete state moved
        self.count = np.zeros(n, dtype=np.int64)  # checks seen per sample
        self.estimate = np.full(n, np.inf)  # last e_t (the contraction estimate)
        self._slope = {w: self._weights(w) for w in (self.W, self.W2) if w}

    def _weights(self, w: int) -> np.ndarray:
        """Least-squares slope weights over ``w`` checks (oldest first), per check."""
        t = np.arange(w, dtype=np.float64) - (w - 1) / 2.0
        return t / np.dot(t, t)

    def _window(self, idx: np.ndarray, c: np.ndarray, w: int):
        """The last ``w`` checks of the samples ``idx`` (``c`` their previous counts), oldest
        first: ``(log delta, log misfit, moved)`` arrays of shape ``(len(idx), w)``."""
        cols = (c[:, None] - (w - 1) + np.arange(w)) % self.L
        rows = idx[:, None]
        return self.ld[rows, cols], self.lm[rows, cols], self.mv[rows, cols]

    def _stalled(self, wd, wm, d, scale, w):
        """No progress of the misfit over the window, far above the floor, and the iterate
        wanders or its limit keeps the misfit (the module docstring's test)."""
        g_d = wd @ self._slope[w]
        g_m = wm @ self._slope[w]
        mu = np.exp(wm[:, -1])
        q = np.exp(g_d / self.every)  # the window's rate per step
        far = np.where(q < 1.0, d * q / (1.0 - q), np.inf) * scale
        flat_d = g_d >= self.log_rate
        return (g_m >= self.log_rate) & (mu > self.tau) & (flat_d | (far <= mu / 2.0)), flat_d

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
        sc = np.ones_like(d) if scale is None else np.asarray(scale, dtype=np.float64)
        c = self.count[idx]
        pos = c % self.L
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            self.ld[idx, pos] = np.log(np.maximum(d, _TINY))
            if misfit is not None:
                self.lm[idx, pos] = np.log(np.maximum(np.asarray(misfit, np.float64), _TINY))
            self.mv[idx, pos] = False if moving is None else np.asarray(moving, bool)
            self.count[idx] = c + 1
            # the contraction estimate: the worse of the last two rates, per step
            d1 = np.exp(self.ld[idx, (c - 1) % self.L])
            d2 = np.exp(self.ld[idx, (c - 2) % self.L])
            r = np.maximum(d / d1, d1 / d2) ** (1.0 / self.every)
            est = np.where((c >= 2) & (r < 1.0), d * r / (1.0 - r), np.inf)
            est = np.where(d == 0, 0.0, est)
            self.estimate[idx] = est
            if self.tol is None:
                conv = (d == 0) | ((c >= 2) & (d <= self.tau) & (est <= self.tau))
            else:
                conv = d < self.tol
            stall = np.zeros(d.shape, dtype=bool)
            if self.W:
                rows = np.flatnonzero(c + 1 >= self.W)
                if rows.size:
                    wd, wm, mv = self._window(idx[rows], c[rows], self.W)
                    stuck, flat_d = self._stalled(wd, wm, d[rows], sc[rows], self.W)
                    if self.tol is None:  # at the floor: the changes stopped decreasing
                        conv[rows] |= flat_d & (np.median(wd, axis=1) <= math.log(self.tau))
                    if misfit is not None:
                        searching = mv.any(axis=1)
                        stall[rows] = stuck & ~searching
                        if self.W2:  # a search without progress, after search_patience
                            long = rows[searching & (c[rows] + 1 >= self.W2)]
                            if long.size:
                                wd2, wm2, _ = self._window(idx[long], c[long], self.W2)
                                stall[long] = self._stalled(wd2, wm2, d[long], sc[long], self.W2)[0]
        stall &= ~conv
        return conv, stall
