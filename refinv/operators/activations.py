"""Activations that are proximal maps, and their lifted Bregman losses (Wang and Benning, 2023).

An activation ``s`` enters the lifted Bregman framework when it is the
proximal map of a proper, convex, lower semi-continuous ``Psi``:
``s(z) = argmin_y 1/2 ||y - z||^2 + Psi(y)``. With
``Phi = 1/2 ||.||^2 + Psi`` the Bregman loss is (Wang and Benning, 2023, eq. 4)::

    B_Psi(x, z) = Phi(x) + Phi^*(z) - <x, z>,
    grad_z B_Psi(x, z) = s(z) - x                              (eq. 5)
    B_Psi(x, z) >= 1/2 ||s(z) - x||^2,   B_Psi(s(z), z) = 0.

``Phi^*`` is C^1 with gradient ``s`` (because ``grad Phi^* = (I + dPsi)^{-1}``).

Implemented (componentwise, any sample shape):

============  ===============================  ==================================
activation    Psi(x)                           Phi^*(z)
============  ===============================  ==================================
identity      0                                1/2 z^2
relu          indicator of x >= 0              1/2 max(z, 0)^2
leaky_relu a  0 (x >= 0), (1/a - 1) x^2 / 2    1/2 max(z, 0)^2 + a/2 min(z, 0)^2
clip [lo,hi]  indicator of lo <= x <= hi       z c - c^2 / 2, c = clip(z, lo, hi)
============  ===============================  ==================================

Leaky ReLU needs ``0 < a <= 1`` (``a = 1`` is the identity); a negative slope
is not monotone and a slope above 1 is expansive, so neither is a proximal
map. ``tanh`` and the logistic sigmoid *are* proximal maps (monotone and
1-Lipschitz on the real line) but their ``Psi`` has no closed-form scaled
prox, which the multi-layer step (17) needs; they are refused as not yet
supported. Anything else (GELU, SiLU, ...) is not monotone and is refused.
"""

from __future__ import annotations

import math
from typing import Any

from ..backend import namespace
from ..errors import ConfigError, UnsupportedGraphError

__all__ = [
    "ProxActivation",
    "Identity",
    "ReLU",
    "LeakyReLU",
    "Clip",
    "activation_from_graph",
    "SUPPORTED",
]

SUPPORTED = ("identity", "relu", "leaky_relu", "prelu", "clip")


def _sum_per_sample(xp: Any, v: Any) -> Any:
    return xp.sum(xp.reshape(v, (v.shape[0], -1)), axis=1)


def _scalar(xp: Any, value: float, like: Any) -> Any:
    return xp.asarray(value, dtype=like.dtype, device=_device(like))


def _device(x: Any):
    from array_api_compat import device

    return device(x)


class ProxActivation:
    """Base class: ``s = prox_Psi`` with ``psi``, ``conj`` (= Phi^*), ``bregman``.

    Subclasses implement ``__call__`` (``s``), ``psi_elem`` (``Psi`` per entry,
    ``inf`` outside its domain), ``conj_elem`` (``Phi^*`` per entry) and
    ``prox(v, c)`` (the proximal map of ``c * Psi``, ``c > 0``, used by eq. 17).
    Per-sample functions sum over all axes but the first (the batch).
    """

    name = "activation"

    def __call__(self, z: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def prox(self, v: Any, c: float) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def psi_elem(self, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def conj_elem(self, z: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def psi(self, x: Any) -> Any:
        """``Psi(x)`` per sample, shape ``(batch,)`` (``inf`` outside the domain)."""
        xp = namespace(x)
        return _sum_per_sample(xp, self.psi_elem(x))

    def conj(self, z: Any) -> Any:
        """``(1/2||.||^2 + Psi)^*(z)`` per sample, shape ``(batch,)``."""
        xp = namespace(z)
        return _sum_per_sample(xp, self.conj_elem(z))

    def bregman(self, x: Any, z: Any) -> Any:
        """``B_Psi(x, z)`` of eq. (4) per sample, shape ``(batch,)``."""
        xp = namespace(x, z)
        e = 0.5 * x * x + self.psi_elem(x) + self.conj_elem(z) - x * z  # eq. (4)
        return _sum_per_sample(xp, e)

    def bregman_grad(self, x: Any, z: Any) -> Any:
        """``grad_z B_Psi(x, z) = s(z) - x`` (eq. 5)."""
        namespace(x, z)
        return self(z) - x

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(ProxActivation):
    """``s(z) = z``; ``Psi = 0``."""

    name = "identity"

    def __call__(self, z: Any) -> Any:
        return z

    def prox(self, v: Any, c: float) -> Any:
        return v

    def psi_elem(self, x: Any) -> Any:
        return 0.0 * x

    def conj_elem(self, z: Any) -> Any:
        return 0.5 * z * z


class ReLU(ProxActivation):
    """``s(z) = max(z, 0)``; ``Psi`` = indicator of the non-negative orthant."""

    name = "relu"

    def __call__(self, z: Any) -> Any:
        xp = namespace(z)
        return xp.maximum(z, _scalar(xp, 0.0, z))

    def prox(self, v: Any, c: float) -> Any:
        return self(v)

    def psi_elem(self, x: Any) -> Any:
        xp = namespace(x)
        return xp.where(x >= 0, _scalar(xp, 0.0, x), _scalar(xp, math.inf, x))

    def conj_elem(self, z: Any) -> Any:
        p = self(z)
        return 0.5 * p * p


class LeakyReLU(ProxActivation):
    """``s(z) = z`` for ``z >= 0``, ``a z`` otherwise, ``0 < a <= 1``.

    ``Psi(x) = (1/a - 1) x^2 / 2`` for ``x < 0`` and ``0`` otherwise. ``a`` is a
    float or an array broadcastable to the batch (PReLU: one slope per channel,
    shape ``(C, 1, 1)``).
    """

    name = "leaky_relu"

    def __init__(self, slope: Any):
        self.slope = slope
        try:
            import numpy as np

            a = np.asarray(slope, dtype=np.float64)
        except (TypeError, ValueError) as exc:  # pragma: no cover - defensive
            raise ConfigError(f"leaky ReLU slope: expected numbers, got {slope!r}") from exc
        if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0) or np.any(a > 1):
            raise UnsupportedGraphError(
                f"leaky ReLU with slope {slope!r} is not a proximal map of a convex function: "
                "expected 0 < slope <= 1 (a negative slope is not monotone, a slope > 1 is "
                "expansive); use slope 0 for ReLU"
            )
        self._slope_np = a

    def _a(self, like: Any) -> Any:
        xp = namespace(like)
        if self._slope_np.ndim == 0:
            return float(self._slope_np)
        return xp.asarray(self._slope_np, dtype=like.dtype, device=_device(like))

    def __call__(self, z: Any) -> Any:
        xp = namespace(z)
        return xp.where(z >= 0, z, self._a(z) * z)

    def prox(self, v: Any, c: float) -> Any:
        # argmin 1/2 (y - v)^2 + c (1/a - 1) y^2 / 2 for y < 0
        xp = namespace(v)
        a = self._a(v)
        return xp.where(v >= 0, v, v / (1.0 + c * (1.0 / a - 1.0)))

    def psi_elem(self, x: Any) -> Any:
        xp = namespace(x)
        a = self._a(x)
        neg = xp.minimum(x, _scalar(xp, 0.0, x))
        return 0.5 * (1.0 / a - 1.0) * neg * neg

    def conj_elem(self, z: Any) -> Any:
        xp = namespace(z)
        zero = _scalar(xp, 0.0, z)
        pos = xp.maximum(z, zero)
        neg = xp.minimum(z, zero)
        return 0.5 * pos * pos + 0.5 * self._a(z) * neg * neg

    def __repr__(self) -> str:
        return f"LeakyReLU(slope={self.slope!r})"


class Clip(ProxActivation):
    """``s(z) = clip(z, lo, hi)``; ``Psi`` = indicator of ``[lo, hi]`` (``lo < hi``)."""

    name = "clip"

    def __init__(self, lo: float, hi: float):
        if not (math.isfinite(lo) or lo == -math.inf) or not (math.isfinite(hi) or hi == math.inf):
            raise ConfigError(f"clip bounds: expected numbers, got [{lo}, {hi}]")
        if not lo < hi:
            raise ConfigError(f"clip bounds: expected lo < hi, got [{lo}, {hi}]")
        self.lo = float(lo)
        self.hi = float(hi)

    def __call__(self, z: Any) -> Any:
        xp = namespace(z)
        return xp.minimum(xp.maximum(z, _scalar(xp, self.lo, z)), _scalar(xp, self.hi, z))

    def prox(self, v: Any, c: float) -> Any:
        return self(v)

    def psi_elem(self, x: Any) -> Any:
        xp = namespace(x)
        inside = (x >= self.lo) & (x <= self.hi)
        return xp.where(inside, _scalar(xp, 0.0, x), _scalar(xp, math.inf, x))

    def conj_elem(self, z: Any) -> Any:
        c = self(z)
        return z * c - 0.5 * c * c

    def __repr__(self) -> str:
        return f"Clip({self.lo!r}, {self.hi!r})"


def activation_from_graph(act: Any) -> ProxActivation:
    """The proximal activation of a :class:`refinv.onnx.chain.Activation`.

    Refuses (:class:`~refinv.errors.UnsupportedGraphError`) what is not a
    proximal map of a convex function, and ``tanh``/``sigmoid`` (proximal, but
    not implemented).
    """
    name = getattr(act, "name", act)
    slope = getattr(act, "slope", None)
    if name in (None, "identity", "linear", "none"):
        return Identity()
    if name == "relu":
        return ReLU()
    if name in ("leaky_relu", "prelu"):
        import numpy as np

        if slope is None:
            raise UnsupportedGraphError(f"{name}: expected a slope, got None")
        a = np.asarray(slope, dtype=np.float64)
        if a.size and np.all(a == 0):
            return ReLU()
        if a.ndim > 0 and a.size == 1:
            slope = float(a.reshape(-1)[0])
        return LeakyReLU(slope)
    if name == "clip":
        lo, hi = (-math.inf, math.inf) if slope is None else slope
        return Clip(float(lo), float(hi))
    if name in ("tanh", "sigmoid"):
        raise UnsupportedGraphError(
            f"activation {name!r} is a proximal map of a convex function but is not "
            f"implemented in refinv's Bregman solvers (no closed-form scaled prox for step 17); "
            f"supported: {', '.join(SUPPORTED)}"
        )
    raise UnsupportedGraphError(
        f"activation {name!r} is not a proximal map of a convex function (a proximal map on "
        f"the real line is non-decreasing and 1-Lipschitz); the lifted Bregman inversion "
        f"supports: {', '.join(SUPPORTED)}"
    )
