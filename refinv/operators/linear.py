"""Linear operators with adjoints, batched and written against the array API.

Every operator maps a batch ``(batch, *in_shape)`` to ``(batch, *out_shape)``
with ``forward`` and back with ``adjoint`` (the transpose), so that
``<A u, v> = <u, A^T v>`` per sample. Weights live in the namespace/device of
the arrays given to the constructor (:func:`from_layer` takes the NumPy
weights of a :class:`refinv.onnx.chain.Layer` and a ``like`` array).

* :class:`Dense` - ``x -> W x`` on the flattened sample (ONNX Gemm/MatMul).
* :class:`Conv2d` - ONNX ``Conv`` (weight ``(M, C/group, kH, kW)``, strides,
  pads ``(top, left, bottom, right)``, dilations, group), cross-correlation.
* :class:`ConvTranspose2d` - ONNX ``ConvTranspose`` (weight
  ``(C, M/group, kH, kW)``): exactly the adjoint of the ``Conv2d`` with the
  same weight, taking ``output_padding`` into account.
* :class:`NearestUpsample2d` - ONNX ``Resize`` (mode nearest) by integer factors: each
  pixel repeated ``fH x fW`` times (PyTorch's ``nn.Upsample(mode="nearest")``); the
  adjoint sums each ``fH x fW`` block.
* :class:`Gradient2d` - forward differences over the last two axes, zero at
  the last row/column (Wang and Benning, 2023, Section 4.1); ``div = -grad^T``.
* :func:`operator_norm` - ``||A||_2`` by power iteration on ``A^T A``.

Convolutions are computed by gathering the kernel taps with strided slices
(im2col by slicing) and one ``matmul`` per call; the adjoint zero-stuffs the
output by the stride and correlates with the flipped kernel, so no scatter
is needed.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ..backend import as_generator, from_numpy, namespace
from ..errors import ConfigError, ShapeError, UnsupportedGraphError

log = logging.getLogger("refinv.operators")

__all__ = [
    "LinearOperator",
    "Dense",
    "Conv2d",
    "ConvTranspose2d",
    "NearestUpsample2d",
    "Gradient2d",
    "operator_norm",
    "from_layer",
]


def _device(x: Any):
    from array_api_compat import device

    return device(x)


def _check_in(x: Any, shape: tuple[int, ...], name: str) -> None:
    if tuple(x.shape[1:]) != tuple(shape):
        raise ShapeError(
            f"{name}: expected shape (batch, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
        )


class LinearOperator:
    """``forward`` / ``adjoint`` on batches; ``in_shape`` / ``out_shape`` are sample shapes."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def forward(self, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def adjoint(self, y: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    @property
    def T(self) -> _Adjoint:
        return _Adjoint(self)


class _Adjoint(LinearOperator):
    def __init__(self, op: LinearOperator):
        self.op = op
        self.in_shape = op.out_shape
        self.out_shape = op.in_shape

    def forward(self, x: Any) -> Any:
        return self.op.adjoint(x)

    def adjoint(self, y: Any) -> Any:
        return self.op.forward(y)


class Dense(LinearOperator):
    """``x -> W x`` on flattened samples; ``W`` of shape ``(out, in)``.

    ``in_shape``/``out_shape`` default to ``(in,)``/``(out,)``; give sample shapes
    to act on images (e.g. ``in_shape=(1, 28, 28)``).
    """

    def __init__(self, W: Any, *, in_shape=None, out_shape=None):
        if len(W.shape) != 2:
            raise ShapeError(f"Dense: expected a 2-D weight (out, in), got shape {tuple(W.shape)}")
        self.W = W
        m, n = W.shape
        self.in_shape = tuple(in_shape) if in_shape is not None else (n,)
        self.out_shape = tuple(out_shape) if out_shape is not None else (m,)
        if math.prod(self.in_shape) != n or math.prod(self.out_shape) != m:
            raise ShapeError(
                f"Dense: weight {tuple(W.shape)} does not match in_shape {self.in_shape} "
                f"and out_shape {self.out_shape}"
            )

    def forward(self, x: Any) -> Any:
        xp = namespace(x, self.W)
        _check_in(x, self.in_shape, "Dense.forward")
        flat = xp.reshape(x, (x.shape[0], -1))
        return xp.reshape(flat @ xp.matrix_transpose(self.W), (x.shape[0], *self.out_shape))

    def adjoint(self, y: Any) -> Any:
        xp = namespace(y, self.W)
        _check_in(y, self.out_shape, "Dense.adjoint")
        flat = xp.reshape(y, (y.shape[0], -1))
        return xp.reshape(flat @ self.W, (y.shape[0], *self.in_shape))


def _pad_hw(xp: Any, x: Any, top: int, bottom: int, left: int, right: int) -> Any:
    """Zero-pad the last two axes of a 4-D array (by concatenation: portable)."""
    n, c, h, w = x.shape
    dt, dev = x.dtype, _device(x)
    if top or bottom:
        parts = []
        if top:
            parts.append(xp.zeros((n, c, top, w), dtype=dt, device=dev))
        parts.append(x)
        if bottom:
            parts.append(xp.zeros((n, c, bottom, w), dtype=dt, device=dev))
        x = xp.concat(parts, axis=2)
        h = h + top + bottom
    if left or right:
        parts = []
        if left:
            parts.append(xp.zeros((n, c, h, left), dtype=dt, device=dev))
        parts.append(x)
        if right:
            parts.append(xp.zeros((n, c, h, right), dtype=dt, device=dev))
        x = xp.concat(parts, axis=3)
    return x


def _crop_or_pad(xp: Any, x: Any, h0: int, h1: int, w0: int, w1: int) -> Any:
    """Rows ``h0:h1`` and columns ``w0:w1`` of the last two axes, zero-padding out of range."""
    h, w = x.shape[2], x.shape[3]
    x = _pad_hw(xp, x, max(0, -h0), max(0, h1 - h), max(0, -w0), max(0, w1 - w))
    h0s, w0s = max(0, h0), max(0, w0)
    return x[:, :, h0s : h0s + (h1 - h0), w0s : w0s + (w1 - w0)]


def _correlate(xp: Any, z: Any, wg: Any, stride, dil, out_hw) -> Any:
    """``out[n, g*Mg + m, p, q] = sum_{c,i,j} wg[g, m, c, i, j] *
    z[n, g*Cg + c, p*sh + i*dh, q*sw + j*dw]`` (grouped cross-correlation).

    ``z`` is already padded; ``wg`` has shape ``(group, Mg, Cg, kh, kw)``.
    """
    n, ctot = z.shape[0], z.shape[1]
    g = wg.shape[0]
    cg = ctot // g
    kh, kw = wg.shape[3], wg.shape[4]
    sh, sw = stride
    dh, dw = dil
    ho, wo = out_hw
    taps = []
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            taps.append(z[:, :, r0 : r0 + sh * (ho - 1) + 1 : sh, c0 : c0 + sw * (wo - 1) + 1 : sw])
    cols = xp.stack(taps, axis=2)  # (n, ctot, kh*kw, ho, wo)
    cols = xp.reshape(cols, (n, g, cg * kh * kw, ho * wo))
    w2 = xp.reshape(wg, (1, g, wg.shape[1], cg * kh * kw))  # c-major, then taps (i, j)
    out = w2 @ cols  # (n, g, Mg, ho*wo)
    return xp.reshape(out, (n, g * wg.shape[1], ho, wo))


def _as_pair(v, default: int, name: str) -> tuple[int, int]:
    if v is None or len(v) == 0:
        return (default, default)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise UnsupportedGraphError(f"{name}: expected 2 values for a 2-D convolution, got {v}")
    return v


class Conv2d(LinearOperator):
    """ONNX ``Conv`` (no bias) as a linear operator on ``(batch, C, H, W)``.

    Parameters
    ----------
    weight : array, shape (M, C/group, kH, kW)
    in_shape : (C, H, W)
    strides, dilations : pairs (default 1); pads : ``(top, left, bottom, right)``
        (ONNX order, default 0); group : int.
    """

    def __init__(self, weight: Any, in_shape, *, strides=None, pads=None, dilations=None, group=1):
        if len(weight.shape) != 4:
            raise UnsupportedGraphError(
                f"Conv2d: expected a 4-D weight (M, C/group, kH, kW), got {tuple(weight.shape)}"
            )
        in_shape = tuple(int(a) for a in in_shape)
        if len(in_shape) != 3 or min(in_shape) < 1:
            raise ShapeError(
                f"Conv2d: expected in_shape (C, H, W) of positive sizes, got {in_shape}"
            )
        self.weight = weight
        self.group = int(group)
        self.strides = _as_pair(strides, 1, "strides")
        self.dilations = _as_pair(dilations, 1, "dilations")
        pads = tuple(int(p) for p in pads) if pads else (0, 0, 0, 0)
        if len(pads) != 4:
            raise UnsupportedGraphError(f"pads: expected 4 values (t, l, b, r), got {pads}")
        self.pads = pads
        m, cg, kh, kw = (int(a) for a in weight.shape)
        c, h, w = in_shape
        if c != cg * self.group or m % self.group:
            raise ShapeError(
                f"Conv2d: weight {tuple(weight.shape)} with group {self.group} does not match "
                f"{c} input channels"
            )
        self.in_shape = in_shape
        hp = h + pads[0] + pads[2]
        wp = w + pads[1] + pads[3]
        ho = (hp - self.dilations[0] * (kh - 1) - 1) // self.strides[0] + 1
        wo = (wp - self.dilations[1] * (kw - 1) - 1) // self.strides[1] + 1
        if ho < 1 or wo < 1:
            raise ShapeError(f"Conv2d: kernel larger than the padded input {in_shape}")
        self.out_shape = (m, ho, wo)
        self._padded = (hp, wp)
        xp = namespace(weight)
        g = self.group
        # forward weight, grouped: (g, Mg, Cg*kh*kw) with taps (i, j) fastest
        self._wf = xp.reshape(weight, (g, m // g, cg, kh, kw))
        # adjoint weight: transpose channels, flip the kernel
        wt = xp.permute_dims(self._wf, (0, 2, 1, 3, 4))  # (g, Cg, Mg, kh, kw)
        self._wa = xp.flip(wt, axis=(3, 4))

    def forward(self, x: Any) -> Any:
        xp = namespace(x, self.weight)
        _check_in(x, self.in_shape, "Conv2d.forward")
        t, lft, b, r = self.pads
        z = _pad_hw(xp, x, t, b, lft, r)
        return _correlate(xp, z, self._wf, self.strides, self.dilations, self.out_shape[1:])

    def adjoint(self, y: Any) -> Any:
        xp = namespace(y, self.weight)
        _check_in(y, self.out_shape, "Conv2d.adjoint")
        n, m, ho, wo = y.shape
        sh, sw = self.strides
        dh, dw = self.dilations
        kh, kw = self._wf.shape[3], self._wf.shape[4]
        # zero-stuff by the stride: (ho - 1) * sh + 1 rows
        if sh > 1:
            zer = xp.zeros((n, m, ho, wo, sh - 1), dtype=y.dtype, device=_device(y))
            y = xp.concat([xp.reshape(y, (n, m, ho, wo, 1)), zer], axis=4)  # (n,m,ho,wo,sh)
            y = xp.permute_dims(y, (0, 1, 2, 4, 3))
            y = xp.reshape(y, (n, m, ho * sh, wo))[:, :, : (ho - 1) * sh + 1, :]
        if sw > 1:
            hh = y.shape[2]
            zer = xp.zeros((n, m, hh, wo, sw - 1), dtype=y.dtype, device=_device(y))
            y = xp.concat([xp.reshape(y, (n, m, hh, wo, 1)), zer], axis=4)
            y = xp.reshape(y, (n, m, hh, wo * sw))[:, :, :, : (wo - 1) * sw + 1]
        hp, wp = self._padded
        eh, ew = dh * (kh - 1), dw * (kw - 1)
        # full correlation with the flipped kernel over the padded input grid
        z = _pad_hw(xp, y, eh, hp - y.shape[2], ew, wp - y.shape[3])
        xpad = _correlate(xp, z, self._wa, (1, 1), self.dilations, (hp, wp))
        t, lft = self.pads[0], self.pads[1]
        c, h, w = self.in_shape
        return xpad[:, :, t : t + h, lft : lft + w]


class ConvTranspose2d(LinearOperator):
    """ONNX ``ConvTranspose`` (no bias): the adjoint of :class:`Conv2d` with the same weight.

    Parameters
    ----------
    weight : array, shape (C, M/group, kH, kW) (ONNX layout)
    in_shape : (C, H, W)
    strides, pads, dilations, group, output_padding : as in ONNX.
    """

    def __init__(
        self,
        weight: Any,
        in_shape,
        *,
        strides=None,
        pads=None,
        dilations=None,
        group=1,
        output_padding=None,
    ):
        if len(weight.shape) != 4:
            raise UnsupportedGraphError(
                f"ConvTranspose2d: expected a 4-D weight, got {tuple(weight.shape)}"
            )
        in_shape = tuple(int(a) for a in in_shape)
        if len(in_shape) != 3:
            raise ShapeError(f"ConvTranspose2d: expected in_shape (C, H, W), got {in_shape}")
        c, h, w = in_shape
        cw, mg, kh, kw = (int(a) for a in weight.shape)
        group = int(group)
        if cw != c:
            raise ShapeError(
                f"ConvTranspose2d: weight {tuple(weight.shape)} does not match {c} input channels"
            )
        s = _as_pair(strides, 1, "strides")
        d = _as_pair(dilations, 1, "dilations")
        op = _as_pair(output_padding, 0, "output_padding")
        pads = tuple(int(p) for p in pads) if pads else (0, 0, 0, 0)
        if op[0] >= max(s[0], d[0]) or op[1] >= max(s[1], d[1]):
            raise UnsupportedGraphError(
                f"output_padding {op}: expected values smaller than the stride or dilation"
            )
        ho = s[0] * (h - 1) + op[0] + d[0] * (kh - 1) + 1 - pads[0] - pads[2]
        wo = s[1] * (w - 1) + op[1] + d[1] * (kw - 1) + 1 - pads[1] - pads[3]
        if ho < 1 or wo < 1:
            raise ShapeError(
                f"ConvTranspose2d: pads {pads} remove more than the transposed conv of "
                f"{in_shape} produces (output {ho}x{wo}); expected a positive output size"
            )
        self._conv = Conv2d(
            weight, (mg * group, ho, wo), strides=s, pads=pads, dilations=d, group=group
        )
        if self._conv.out_shape != in_shape:
            raise UnsupportedGraphError(
                f"ConvTranspose2d: cannot represent output_padding {op} with strides {s}, "
                f"pads {pads} (adjoint conv gives {self._conv.out_shape}, expected {in_shape})"
            )
        self.weight = weight
        self.strides, self.pads, self.dilations, self.group = s, pads, d, group
        self.output_padding = op
        self.in_shape = in_shape
        self.out_shape = (mg * group, ho, wo)

    def forward(self, x: Any) -> Any:
        return self._conv.adjoint(x)

    def adjoint(self, y: Any) -> Any:
        return self._conv.forward(y)


class NearestUpsample2d(LinearOperator):
    """Nearest-neighbour upsampling of the last two axes by integer ``factors``.

    ``(batch, C, H, W) -> (batch, C, fH*H, fW*W)`` with ``out[..., i, j] =
    x[..., i // fH, j // fW]``: ONNX ``Resize`` in mode nearest whenever its coordinate
    mode reads pixel ``o // f`` (asymmetric/floor, as PyTorch exports
    ``nn.Upsample(mode="nearest")``; half_pixel with rounding). The adjoint sums every
    ``fH x fW`` block, so ``A^T A = fH fW I`` and ``||A||_2 = sqrt(fH fW)``.
    """

    def __init__(self, in_shape, factors):
        in_shape = tuple(int(a) for a in in_shape)
        if len(in_shape) != 3 or min(in_shape) < 1:
            raise ShapeError(
                f"NearestUpsample2d: expected in_shape (C, H, W) of positive sizes, got {in_shape}"
            )
        factors = tuple(int(f) for f in factors)
        if len(factors) != 2 or min(factors) < 1:
            raise ShapeError(
                f"NearestUpsample2d: expected two positive integer factors, got {factors}"
            )
        self.factors = factors
        self.in_shape = in_shape
        c, h, w = in_shape
        self.out_shape = (c, h * factors[0], w * factors[1])

    def forward(self, x: Any) -> Any:
        xp = namespace(x)
        _check_in(x, self.in_shape, "NearestUpsample2d.forward")
        n, (c, h, w), (fh, fw) = x.shape[0], self.in_shape, self.factors
        z = xp.broadcast_to(xp.reshape(x, (n, c, h, 1, w, 1)), (n, c, h, fh, w, fw))
        return xp.reshape(z, (n, *self.out_shape))

    def adjoint(self, y: Any) -> Any:
        xp = namespace(y)
        _check_in(y, self.out_shape, "NearestUpsample2d.adjoint")
        n, (c, h, w), (fh, fw) = y.shape[0], self.in_shape, self.factors
        z = xp.reshape(y, (n, c, h, fh, w, fw))
        return xp.sum(xp.sum(z, axis=5), axis=3)


class Gradient2d(LinearOperator):
    """Forward differences over the last two axes, zero at the last row/column.

    Maps ``(batch, *shape)`` to ``(batch, *shape, 2)`` (component 0: along rows
    ``x[i+1, j] - x[i, j]``, component 1: along columns). ``div = -grad^T``.
    """

    def __init__(self, in_shape):
        in_shape = tuple(int(a) for a in in_shape)
        if len(in_shape) < 2:
            raise ShapeError(f"Gradient2d: expected a sample shape with >= 2 axes, got {in_shape}")
        self.in_shape = in_shape
        self.out_shape = (*in_shape, 2)

    def forward(self, x: Any) -> Any:
        xp = namespace(x)
        _check_in(x, self.in_shape, "Gradient2d.forward")
        dt, dev = x.dtype, _device(x)
        zr = xp.zeros((*x.shape[:-2], 1, x.shape[-1]), dtype=dt, device=dev)
        zc = xp.zeros((*x.shape[:-1], 1), dtype=dt, device=dev)
        d0 = xp.concat([x[..., 1:, :] - x[..., :-1, :], zr], axis=-2)
        d1 = xp.concat([x[..., :, 1:] - x[..., :, :-1], zc], axis=-1)
        return xp.stack([d0, d1], axis=-1)

    def adjoint(self, p: Any) -> Any:
        return -self.div(p)

    def div(self, p: Any) -> Any:
        """``div p = -grad^T p`` (backward differences with the matching boundary)."""
        xp = namespace(p)
        _check_in(p, self.out_shape, "Gradient2d.div")
        p0, p1 = p[..., 0], p[..., 1]
        return _bdiff(xp, p0, -2) + _bdiff(xp, p1, -1)


def _bdiff(xp: Any, p: Any, axis: int) -> Any:
    n = p.shape[axis]
    if n == 1:
        return 0.0 * p

    def sl(a, b):
        idx = [slice(None)] * p.ndim
        idx[axis] = slice(a, b)
        return p[tuple(idx)]

    parts = [sl(0, 1)]
    if n > 2:
        parts.append(sl(1, n - 1) - sl(0, n - 2))
    parts.append(-sl(n - 2, n - 1))
    return xp.concat(parts, axis=axis)


def operator_norm(
    op: LinearOperator,
    *,
    like: Any = None,
    dtype: Any = None,
    max_iter: int = 2000,
    tol: float = 1e-7,
    rng: int | np.random.Generator | None = 0,
) -> float:
    """``||A||_2`` by power iteration on ``A^T A`` from a seeded random start.

    ``like`` fixes the namespace/device/dtype of the iterate (default: the
    operator's weight, or NumPy float64). Stops when the estimate changes by
    less than ``tol`` relatively (at least 8 float eps of the dtype), or after
    ``max_iter`` iterations (then a warning is logged). Returns a Python float:
    a lower bound that converges to the norm from below; measured on random
    dense operators with clustered spectra its relative error is below 1.1e-3
    at ``tol = 1e-7`` (tests/test_power_iteration.py), inside the 0.5% between
    the paper's PDHG step ``1.99 / ||A||^2`` and its bound ``2 / ||A||^2``.
    """
    if max_iter < 1:
        raise ConfigError(f"max_iter: expected a positive integer, got {max_iter}")
    gen = as_generator(rng)
    v0 = gen.standard_normal((1, *op.in_shape))
    if like is None:
        like = getattr(op, "W", getattr(op, "weight", None))
    if like is None:
        v = np.asarray(v0, dtype=dtype or np.float64)
    else:
        v = from_numpy(v0, like=like, dtype=dtype or like.dtype)
    xp = namespace(v)
    v = v / xp.linalg.vector_norm(v)
    tol = max(float(tol), 8.0 * float(xp.finfo(v.dtype).eps))
    est = 0.0
    for _ in range(max_iter):
        w = op.adjoint(op.forward(v))
        nrm = float(xp.linalg.vector_norm(w))
        if nrm == 0.0:
            return 0.0
        v = w / nrm
        new = math.sqrt(nrm)
        if abs(new - est) <= tol * new:
            return new
        est = new
    log.warning(
        "operator_norm: power iteration did not converge to %.1e in %d steps; the norm %.6g "
        "may be too small (step sizes too large)",
        tol,
        max_iter,
        est,
    )
    return est


def from_layer(layer: Any, *, like: Any = None) -> LinearOperator:
    """The linear part of a :class:`refinv.onnx.chain.Layer` as an operator.

    The layer's NumPy weight is moved once into the namespace/device of
    ``like`` (default NumPy), in ``like``'s dtype.
    """
    w = layer.weight
    if like is not None:
        w = from_numpy(np.asarray(w), like=like, dtype=like.dtype)
    kind = layer.kind
    if kind == "dense":
        return Dense(w, in_shape=layer.in_shape, out_shape=layer.out_shape)
    if kind in ("conv", "conv_transpose"):
        in_shape = tuple(layer.in_shape)
        if len(in_shape) != 3:
            raise UnsupportedGraphError(
                f"layer {layer.name!r}: only 2-D convolutions are supported, got input "
                f"sample shape {in_shape}"
            )
        common = dict(
            strides=layer.strides or None,
            pads=layer.pads or None,
            dilations=layer.dilations or None,
            group=layer.group,
        )
        if kind == "conv":
            op = Conv2d(w, in_shape, **common)
        else:
            op = ConvTranspose2d(w, in_shape, output_padding=layer.output_padding or None, **common)
        if tuple(layer.out_shape) and tuple(op.out_shape) != tuple(layer.out_shape):
            raise ShapeError(
                f"layer {layer.name!r}: the operator gives output {op.out_shape}, the graph "
                f"declares {tuple(layer.out_shape)}"
            )
        return op
    if kind == "resize":
        op = NearestUpsample2d(layer.in_shape, layer.strides)
        if tuple(layer.out_shape) and tuple(op.out_shape) != tuple(layer.out_shape):
            raise ShapeError(
                f"layer {layer.name!r}: upsampling {tuple(layer.in_shape)} by {op.factors} gives "
                f"{op.out_shape}, the graph declares {tuple(layer.out_shape)}"
            )
        return op
    raise UnsupportedGraphError(
        f"layer {layer.name!r}: kind {kind!r} has no linear operator (expected dense, conv, "
        "conv_transpose or resize)"
    )
