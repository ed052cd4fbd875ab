"""Batched FISTA (Beck & Teboulle 2009) and the (non-negative) Lasso on it.

``fista`` minimizes ``f(x) + g(x)`` per sample, ``f`` smooth with a per-sample
step ``1/L``, ``g`` through its prox. ``lasso`` solves, per sample ``b``::

    min_x 1/2 || m_b * (t_b - W x) ||^2 + lam ||x||_1     [s.t. x >= 0]

with one shared matrix ``W`` and a per-sample row mask ``m_b`` (the support
of the next layer in layered basis pursuit, or the observed pixels): samples
with different supports share one batched iteration, no per-sample loop.
The per-sample Lipschitz constant ``||W^T diag(m_b) W||_2`` comes from a
batched power iteration (:func:`power_lmax`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..backend import device_of as _device
from ..backend import from_numpy, namespace, to_numpy
from ._loop import SolverResult, relative_change, run_loop

__all__ = ["fista", "lasso", "power_lmax", "FistaState"]

log = logging.getLogger("refinv.solvers")


# Power iteration for step sizes: stop when the Rayleigh quotient of every sample changes by
# less than POWER_TOL (relative) in one step, then multiply by POWER_MARGIN. For a PSD operator
# the quotient increases monotonically to lambda_max, so the estimate is from below. Measured
# (tests/test_power_iteration.py, random masked Gaussian operators and clustered or decaying
# spectra, 20 <= m, n <= 400): remaining relative error at most 8.7e-5 (Gaussian), 1.2e-4
# (decaying), 2.1e-3 (singular values clustered in [0.5, 1]). The previous fixed 40 steps left
# up to 4.0e-2 (so 1.02 x the estimate was 0.960-1.020 of lambda_max). The margin 1.02 is ten
# times the worst measured error: a step 1 / L is never above its bound 1 / lambda_max.
POWER_TOL = 1e-6
POWER_MARGIN = 1.02
POWER_MAX_ITER = 2000


def power_lmax(
    apply: Callable[[Any], Any],
    like: Any,
    n: int,
    *,
    iters: int = POWER_MAX_ITER,
    tol: float = POWER_TOL,
    margin: float = POWER_MARGIN,
    seed: int = 0,
):
    """Per-sample upper estimate of the largest eigenvalue of a batched PSD operator.

    ``apply: (b, n) -> (b, n)``; ``like`` is a ``(b, ...)`` array giving batch,
    namespace and dtype. Power iteration from a seeded random start until the
    Rayleigh quotient of every sample changes by less than ``tol`` (relative)
    in one step, or ``iters`` steps (a warning is logged then). Returns ``(b,)``:
    the Rayleigh quotients times ``margin`` (power iteration approaches
    ``lambda_max`` from below; ``margin`` covers the measured remaining error,
    see ``POWER_MARGIN``), so ``1 / L`` is a step at most ``1 / lambda_max``.
    """
    xp = namespace(like)
    b = like.shape[0]
    dt = like.dtype
    v = from_numpy(np.random.default_rng(seed).standard_normal((b, n)), like=like, dtype=dt)
    tiny = xp.asarray(float(xp.finfo(dt).smallest_normal), dtype=dt)
    # float32 cannot resolve a relative change below ~1e-6: test against its epsilon too
    tol = max(float(tol), 8.0 * float(xp.finfo(dt).eps))
    lam_old = None
    lam = xp.zeros((b,), dtype=dt)
    for k in range(max(int(iters), 1)):
        w = v / xp.maximum(xp.linalg.vector_norm(v, axis=1, keepdims=True), tiny)
        v = apply(w)
        lam = xp.sum(w * v, axis=1)
        if lam_old is not None and k >= 2:
            change = np.asarray(to_numpy(xp.abs(lam - lam_old)), dtype=np.float64)
            scale = np.asarray(to_numpy(xp.abs(lam)), dtype=np.float64)
            if np.all(change <= tol * np.maximum(scale, np.finfo(np.float64).tiny)):
                break
        lam_old = lam
    else:
        log.warning(
            "power iteration: the largest eigenvalue did not converge to %.1e in %d steps; "
            "step sizes may be too large",
            tol,
            iters,
        )
    return margin * lam


class FistaState(NamedTuple):
    x: Any  # (b, n) current iterate x^k
    v: Any  # (b, n) extrapolated point
    t: Any  # (b,) momentum parameter t^k
    step: Any  # (b,) step 1/L per sample
    target: Any  # (b, m) per-sample data
    mask: Any  # (b, m) per-sample row weights, or None


def fista(
    grad: Callable[[Any, Any, Any], Any],
    prox: Callable[[Any, Any], Any],
    x0: Any,
    *,
    step: Any,
    target: Any,
    mask: Any = None,
    max_iter: int = 1000,
    tol: float = 1e-10,
    method: str = "fista",
    info: dict | None = None,
    progress: bool | None = None,
    check_every: int = 1,
) -> SolverResult:
    """FISTA: ``u = prox(v - step grad(v), step)``, ``t' = (1 + sqrt(1 + 4 t^2))/2``,
    ``v = u + (t - 1)/t' (u - x)``.

    ``grad(v, target, mask) -> (b, n)``; ``prox(u, step) -> (b, n)`` with
    ``step`` of shape ``(b, 1)``. Stops on ``||x^{k+1} - x^k|| / ||x^k|| < tol``.
    """
    xp = namespace(x0)
    b = x0.shape[0]

    def step_fn(s: FistaState):
        g = grad(s.v, s.target, s.mask)
        st = s.step[:, None]
        u = prox(s.v - st * g, st)
        t_new = (1.0 + xp.sqrt(1.0 + 4.0 * s.t * s.t)) / 2.0
        v = u + ((s.t - 1.0) / t_new)[:, None] * (u - s.x)
        return s._replace(x=u, v=v, t=t_new), relative_change(xp, u, s.x)

    state = FistaState(
        x=x0,
        v=x0,
        t=xp.ones((b,), dtype=x0.dtype, device=_device(x0)),
        step=step,
        target=target,
        mask=mask,
    )
    return run_loop(
        step_fn,
        state,
        max_iter=max_iter,
        tol=tol,
        method=method,
        info=info,
        progress=progress,
        check_every=check_every,
    )


def soft_threshold(xp, u, tau, nonneg: bool):
    if nonneg:
        return xp.maximum(u - tau, xp.zeros_like(u))
    return xp.sign(u) * xp.maximum(xp.abs(u) - tau, xp.zeros_like(u))


def lasso(
    W: Any,
    t: Any,
    *,
    lam: float,
    mask: Any = None,
    nonneg: bool = False,
    x0: Any = None,
    max_iter: int = 2000,
    tol: float = 1e-10,
    progress: bool | None = None,
    Wt: Any = None,
) -> SolverResult:
    """Batched (non-negative) Lasso ``min 1/2 ||m (t - W x)||^2 + lam ||x||_1`` by FISTA.

    ``W``: ``(m, n)`` shared; ``t``: ``(b, m)``; ``mask``: ``(b, m)`` 0/1 rows or None.
    ``Wt`` may pass a contiguous ``W^T`` (faster matmuls with NumPy/OpenBLAS).
    """
    xp = namespace(W, t)
    b = t.shape[0]
    n = W.shape[1]
    if Wt is None:
        Wt = xp.matrix_transpose(W)
    if x0 is None:
        x0 = xp.zeros((b, n), dtype=t.dtype, device=_device(t))

    def grad(v, tt, mm):
        r = v @ Wt - tt
        if mm is not None:
            r = r * mm
        return r @ W

    def normal_op(v, mm=mask):
        r = v @ Wt
        if mm is not None:
            r = r * mm
        return r @ W

    L = power_lmax(normal_op, t, n)
    step = 1.0 / xp.maximum(L, xp.asarray(1e-30, dtype=t.dtype))

    def prox(u, st):
        return soft_threshold(xp, u, lam * st, nonneg)

    return fista(
        grad,
        prox,
        x0,
        step=step,
        target=t,
        mask=mask,
        max_iter=max_iter,
        tol=tol,
        method="lasso_fista",
        info={"lam": float(lam), "nonneg": bool(nonneg)},
        progress=progress,
    )
