"""Why a training image is (or is not) recoverable: local stability of PnP-ADMM.

A memorized training image ``x*`` is a fixed point of the known-mask PnP-ADMM
of :mod:`refinv.solvers.recovery` (``f(x*) = x*``, ``y = h x*``: then
``v = z = x*``, ``u = 0`` solve eqs. (12), (16), (14)). Whether the iteration
*converges* to it from a degraded start is decided, locally, by the spectral
radius of its linearization there. With ``J = Df(x*)`` and
``D = diag(rho / (h + rho))`` (eq. 17 differentiated in ``w = z - u``), one
inner iteration maps the perturbation ``(dz, du)`` to::

    dv  = D (dz - du)                      # eq. (12) / (17)
    dz' = J (dv + du)                      # eq. (16)
    du' = du + dv - dz'                    # eq. (14)

a linear map ``M`` of size ``2n x 2n``. Radius < 1: ``x*`` attracts the
iteration (the error shrinks like radius^k); radius > 1: it repels it and
the image is not recovered, whatever the number of iterations. This is a
property of the autoencoder at its training images, measured here by
central finite differences of the black-box model (``2 n`` evaluations per
image, batched), so it needs small images (``n <= max_dim``).

Measured on the shipped models (``docs/experiments/recovery_stability.py``;
random:0.5 masks, rho = 0.5, first 20 training images): faces25_lrelu_6x256
median radius 0.75, all 20 below 1 (blind recovery 87%); digits8_lrelu_6x320
median 1.23, none below 1 (recovery 0%). Table in docs/theory/recovery.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import from_numpy, namespace, to_numpy
from ..errors import ConfigError, ShapeError
from ..operators.masks import expand_mask

__all__ = ["model_jacobian", "pnp_admm_iteration_matrix", "pnp_admm_stability"]


def model_jacobian(f: Any, x: Any, *, eps: float = 1e-3) -> np.ndarray:
    """Jacobians ``J[b] = Df(x[b])`` (``(batch, n, n)``, float64, host) by central differences.

    ``f`` is called on ``2 n`` perturbed copies of each sample (one batch per
    sample; the ONNX layer chunks it). For piecewise-linear networks the
    result is exact unless a perturbation crosses an activation kink; for
    float32 models the error is about ``1e-7 / eps``.
    """
    namespace(x)  # validates the array type
    if x.ndim < 2:
        raise ShapeError(f"x: expected a batch (batch, *sample_shape), got shape {x.shape}")
    if not eps > 0:
        raise ConfigError(f"eps: expected a positive step, got {eps}")
    xs = to_numpy(x)
    shape = xs.shape[1:]
    n = int(np.prod(shape))
    E = np.eye(n, dtype=xs.dtype) * xs.dtype.type(eps)
    out = np.empty((xs.shape[0], n, n))
    for b in range(xs.shape[0]):
        xb = xs[b].reshape(1, n)
        P = np.concatenate([xb + E, xb - E]).reshape(2 * n, *shape)
        fp = to_numpy(f(from_numpy(P, like=x))).reshape(2 * n, n).astype(np.float64)
        out[b] = ((fp[:n] - fp[n:]) / (2.0 * eps)).T  # column j = df/dx_j
    return out


def pnp_admm_iteration_matrix(J: np.ndarray, h: np.ndarray, rho: float) -> np.ndarray:
    """The ``2n x 2n`` linearization ``M`` of one inner PnP-ADMM step (module docstring).

    ``J``: ``(n, n)`` Jacobian of the autoencoder at the fixed point; ``h``:
    ``(n,)`` 0/1 mask (1 = observed); state ordering ``(dz, du)``.
    """
    n = J.shape[0]
    if J.shape != (n, n) or np.shape(h) != (n,):
        raise ShapeError(f"expected J (n, n) and h (n,), got {J.shape} and {np.shape(h)}")
    if not rho > 0:
        raise ConfigError(f"rho: expected a positive number, got {rho}")
    d = rho / (np.asarray(h, dtype=np.float64) + rho)
    A_v = np.hstack([np.diag(d), -np.diag(d)])  # dv = D (dz - du)
    S_u = np.hstack([np.zeros((n, n)), np.eye(n)])  # picks du
    A_z = J @ (A_v + S_u)  # dz' = J (dv + du)
    A_u = S_u + A_v - A_z  # du' = du + dv - dz'
    return np.vstack([A_z, A_u])


def pnp_admm_stability(
    f: Any,
    x: Any,
    mask: Any,
    *,
    rho: float = 0.5,
    eps: float = 1e-3,
    max_dim: int = 2048,
) -> np.ndarray:
    """Spectral radius of the linearized known-mask PnP-ADMM at each training image.

    Parameters
    ----------
    f : the autoencoder (:class:`~refinv.onnx.OnnxModel` or any callable on batches).
    x : ``(batch, *sample_shape)`` training images (fixed points, ``f(x) ~ x``).
    mask : 0/1 masks, ``(batch, *sample_shape)`` or per pixel ``(batch, H, W)``
        as in :func:`~refinv.solvers.recovery.known_mask_recovery`.
    rho : the ADMM parameter of the recovery run.
    eps : finite-difference step.
    max_dim : refuse images with more pixels than this (the eigenproblem is
        ``2n x 2n``).

    Returns
    -------
    numpy.ndarray
        ``(batch,)`` radii; < 1 means the image attracts the iteration
        (recoverable once the iterate is close), > 1 that it repels it.
    """
    n = int(np.prod(x.shape[1:]))
    if n > max_dim:
        raise ConfigError(
            f"pnp_admm_stability: images of {n} values need a {2 * n}x{2 * n} eigenproblem "
            f"each; expected at most max_dim={max_dim} (raise it knowingly)"
        )
    xs = to_numpy(x)
    h = expand_mask(mask, tuple(xs.shape[1:]), xs.shape[0], like=xs)
    h = np.broadcast_to(to_numpy(h), xs.shape).reshape(xs.shape[0], n)
    J = model_jacobian(f, x, eps=eps)
    radii = [
        np.abs(np.linalg.eigvals(pnp_admm_iteration_matrix(J[b], h[b], rho))).max()
        for b in range(len(J))
    ]
    return np.asarray(radii)
