"""Discrete total variation (Wang and Benning, 2023, Section 4.1): value, dual projection, prox.

``TV(x) = sum_{pixels} |(grad x)_{i,j}|_p`` with the forward differences of
:class:`refinv.operators.linear.Gradient2d` (zero at the last row/column),
over the last two axes of each sample; other sample axes (channels) are
summed, each channel separately. ``p = 2`` (isotropic, the paper's choice)
or ``p = 1`` (anisotropic).

The prox ``argmin_u 1/2 ||u - v||^2 + lam TV(u)`` is computed by the fast
gradient projection (FGP, Beck & Teboulle 2009) on Chambolle's dual:
``u = v + lam div p`` with ``p`` maximizing over ``|p_{i,j}|_{p*} <= 1``, step
``1 / (8 lam)`` (``||grad||^2 <= 8``), for an explicit number of iterations.
"""

from __future__ import annotations

from typing import Any

from ..backend import namespace
from ..errors import ConfigError
from ..operators.linear import Gradient2d

__all__ = ["TotalVariation", "tv", "project_dual_ball"]


def _check_p(p: int) -> int:
    if p not in (1, 2):
        raise ConfigError(f"TV norm p: expected 1 (anisotropic) or 2 (isotropic), got {p!r}")
    return p


def project_dual_ball(z: Any, p: int = 2) -> Any:
    """Project ``z`` (shape ``(..., 2)``) pixelwise onto the unit ball of the dual norm.

    ``p = 2``: ``z / max(1, |z|_2)`` per pixel (the prox of ``(||.||_{2,1})^*``, eq. 14b);
    ``p = 1``: clip every component to ``[-1, 1]``.
    """
    xp = namespace(z)
    one = xp.asarray(1.0, dtype=z.dtype, device=_device(z))
    if _check_p(p) == 1:
        return xp.clip(z, -one, one)
    nrm = xp.sqrt(z[..., 0] * z[..., 0] + z[..., 1] * z[..., 1])
    return z / xp.expand_dims(xp.maximum(nrm, one), axis=-1)


def _device(x: Any):
    from array_api_compat import device

    return device(x)


def tv(x: Any, p: int = 2) -> Any:
    """Total variation per sample of a batch ``(batch, ..., H, W)``: shape ``(batch,)``."""
    return TotalVariation(tuple(x.shape[1:]), p=p).value(x)


class TotalVariation:
    """``TV`` on samples of shape ``sample_shape`` (last two axes are the image).

    Parameters
    ----------
    sample_shape : tuple
        Shape of one sample, e.g. ``(1, 28, 28)`` or ``(64, 64)``.
    p : {2, 1}
        Pixelwise norm of the gradient: 2 isotropic (default), 1 anisotropic.
    """

    def __init__(self, sample_shape, *, p: int = 2):
        self.p = _check_p(p)
        self.grad = Gradient2d(tuple(sample_shape))
        self.sample_shape = self.grad.in_shape

    def value(self, x: Any) -> Any:
        """``||grad x||_{p,1}`` per sample, shape ``(batch,)``."""
        xp = namespace(x)
        g = self.grad.forward(x)
        if self.p == 2:
            pix = xp.sqrt(g[..., 0] * g[..., 0] + g[..., 1] * g[..., 1])
        else:
            pix = xp.abs(g[..., 0]) + xp.abs(g[..., 1])
        return xp.sum(xp.reshape(pix, (x.shape[0], -1)), axis=1)

    __call__ = value

    def project(self, z: Any) -> Any:
        """Projection onto the dual unit ball (prox of the conjugate)."""
        return project_dual_ball(z, self.p)

    def prox(self, v: Any, lam: float, *, n_iter: int = 100, p0: Any = None) -> Any:
        """``argmin_u 1/2||u - v||^2 + lam TV(u)`` by ``n_iter`` FGP dual iterations.

        ``lam`` is a float (same for all samples). ``p0`` warm-starts the dual
        variable (shape ``(batch, *sample_shape, 2)``). Returns ``u``.
        """
        return self.prox_dual(v, lam, n_iter=n_iter, p0=p0)[0]

    def prox_dual(self, v: Any, lam: float, *, n_iter: int = 100, p0: Any = None):
        """As :meth:`prox`, returning ``(u, p)`` with the final dual variable ``p``."""
        xp = namespace(v, p0)
        if n_iter < 1:
            raise ConfigError(f"n_iter: expected a positive integer, got {n_iter}")
        if lam < 0:
            raise ConfigError(f"lam: expected a non-negative number, got {lam}")
        if lam == 0:
            return v, xp.zeros((*v.shape, 2), dtype=v.dtype, device=_device(v))
        G = self.grad
        if p0 is None:
            p0 = xp.zeros((*v.shape, 2), dtype=v.dtype, device=_device(v))
        step = 1.0 / (8.0 * lam)
        p_old = p0
        r = p0
        t = 1.0
        for _ in range(n_iter):
            # projected gradient ascent on the dual: p = P(r + step grad(v + lam div r))
            p_new = self.project(r + step * G.forward(v + lam * G.div(r)))
            t_new = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
            r = p_new + ((t - 1.0) / t_new) * (p_new - p_old)  # FGP momentum
            p_old, t = p_new, t_new
        return v + lam * G.div(p_old), p_old
