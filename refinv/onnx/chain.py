"""Explicit layer chains: a feed-forward network as ``x_{i+1} = act_i(A_i x_i + b_i)``.

Explicit-weight methods (PLUGIn, Latent-Pursuit, layered basis pursuit, the
lifted Bregman inversion) need the network as a chain of layers. This module
defines that representation (:class:`Activation`, :class:`Layer`,
:class:`LayerChain`), the activations' values, derivatives and inverses, and
:func:`dense_chain` (a chain from weight matrices); :func:`refinv.onnx.graph.read_chain`
reads one from a feed-forward ONNX graph.

Shared by ``refinv.solvers.generators`` (dense chains) and
``refinv.solvers.bregman`` (dense and convolutional chains).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Activation",
    "Layer",
    "LayerChain",
    "dense_chain",
    "apply_activation",
    "activation_derivative",
    "inverse_activation",
]


@dataclass(frozen=True)
class Activation:
    """A componentwise activation: ``name`` in {"identity", "relu", "leaky_relu",
    "prelu", "tanh", "sigmoid", "clip", "plu"}; ``slope`` for leaky ReLU (scalar) and
    PReLU (array broadcastable to the layer's output sample shape); ``(lo, hi)`` for
    clip; ``(a, b, lo, hi)`` for the piecewise linear unit
    ``plu(u) = a u + b clip(u, lo, hi)`` (Aberdam et al.'s (2020) trained generator)."""

    name: str = "identity"
    slope: Any = None


@dataclass
class Layer:
    """One affine layer followed by an activation.

    ``kind`` is "dense" (``weight`` of shape (out, in), acting on the flattened
    sample), "conv" or "conv_transpose" (``weight`` in ONNX layout, with
    ``strides``, ``pads`` (ONNX order: begins then ends), ``dilations``,
    ``group``, ``output_padding``), or "resize" (nearest-neighbour upsampling by the
    integer factors ``strides``, an empty ``weight``: ONNX ``Resize``, see
    :class:`refinv.operators.NearestUpsample2d`). ``in_shape``/``out_shape`` are sample
    shapes (no batch axis). ``bias`` may be ``None``.
    """

    kind: str
    weight: np.ndarray
    bias: np.ndarray | None
    activation: Activation
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    group: int = 1
    output_padding: tuple[int, ...] = ()
    name: str = ""


@dataclass
class LayerChain:
    """A feed-forward network as a list of :class:`Layer` (input layer first)."""

    layers: list[Layer]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    @property
    def is_dense(self) -> bool:
        """True when every layer is a dense (fully connected) layer."""
        return all(lay.kind == "dense" for lay in self.layers)

    def forward(self, x: Any, *, return_hidden: bool = False) -> Any:
        """Evaluate the chain on a batch ``(batch, *in_shape)`` in ``x``'s namespace.

        Weights are moved once per call to ``x``'s namespace/device/dtype.
        With ``return_hidden=True`` returns ``(y, [x_1, ..., x_L])``: the
        flattened outputs ``(batch, n_i)`` of every layer but the last.
        """
        from ..backend import namespace

        xp = namespace(x)
        n = x.shape[0]
        h = x
        hidden = []
        for i, lay in enumerate(self.layers):
            h = _layer_forward(xp, lay, h, x)
            if i < len(self.layers) - 1:
                hidden.append(xp.reshape(h, (n, -1)))
        y = xp.reshape(h, (n, *self.out_shape))
        return (y, hidden) if return_hidden else y

    @property
    def n_params(self) -> int:
        return int(
            sum(lay.weight.size + (0 if lay.bias is None else lay.bias.size) for lay in self.layers)
        )


def _const(xp: Any, a: Any, like: Any) -> Any:
    from ..backend import from_numpy

    return from_numpy(np.asarray(a), like=like, dtype=like.dtype)


def apply_activation(act: Activation, h: Any) -> Any:
    """``act(h)`` componentwise in ``h``'s namespace (PReLU slopes broadcast over axis 0)."""
    from ..backend import namespace

    xp = namespace(h)
    name = act.name
    if name == "identity":
        return h
    if name == "relu":
        return xp.maximum(h, xp.zeros_like(h))
    if name in ("leaky_relu", "prelu"):
        slope = act.slope if name == "leaky_relu" else _const(xp, act.slope, h)
        return xp.where(h >= 0, h, slope * h)
    if name == "tanh":
        return xp.tanh(h)
    if name == "sigmoid":
        return 1.0 / (1.0 + xp.exp(-h))
    if name == "clip":
        lo, hi = act.slope
        return xp.clip(h, lo, hi)
    if name == "plu":
        a, b, lo, hi = act.slope
        return a * h + b * xp.clip(h, lo, hi)
    raise ValueError(f"unknown activation {name!r}")


def activation_derivative(act: Activation, h: Any) -> Any:
    """``act'(h)`` (ReLU: 1 where ``h > 0``, else 0; the sub-gradient of eq. 4, Joshi et al., 2021)."""
    from ..backend import namespace

    xp = namespace(h)
    one = xp.ones_like(h)
    name = act.name
    if name == "identity":
        return one
    if name == "relu":
        return xp.where(h > 0, one, xp.zeros_like(h))
    if name in ("leaky_relu", "prelu"):
        slope = act.slope if name == "leaky_relu" else _const(xp, act.slope, h)
        return xp.where(h >= 0, one, slope * one)
    if name == "tanh":
        t = xp.tanh(h)
        return one - t * t
    if name == "sigmoid":
        s = 1.0 / (1.0 + xp.exp(-h))
        return s * (one - s)
    if name in ("clip", "plu"):
        a, b, lo, hi = (0.0, 1.0, *act.slope) if name == "clip" else act.slope
        inside = xp.logical_and(h > lo, h < hi)
        return xp.where(inside, (a + b) * one, a * one)
    raise ValueError(f"unknown activation {name!r}")


def inverse_activation(act: Activation, y: Any, *, clip: float = 1e-7) -> Any:
    """``act^{-1}(y)`` for invertible activations (tanh/sigmoid clipped ``clip`` inside
    their range). ReLU is not invertible: :class:`ValueError`."""
    from ..backend import namespace

    xp = namespace(y)
    name = act.name
    if name == "identity":
        return y
    if name in ("leaky_relu", "prelu"):
        slope = act.slope if name == "leaky_relu" else _const(xp, act.slope, y)
        if np.any(np.asarray(act.slope) <= 0):
            raise ValueError(f"{name} with a non-positive slope is not invertible")
        return xp.where(y >= 0, y, y / slope)
    if name == "tanh":
        t = xp.clip(y, -1.0 + clip, 1.0 - clip)
        return 0.5 * xp.log((1.0 + t) / (1.0 - t))
    if name == "sigmoid":
        t = xp.clip(y, clip, 1.0 - clip)
        return xp.log(t / (1.0 - t))
    if name == "plu":
        a, b, lo, hi = act.slope
        if not (a > 0 and a + b > 0):
            raise ValueError(f"plu with slopes {a}, {a + b}: not invertible")
        mid = y / (a + b)
        return xp.where(
            y < (a + b) * lo, (y - b * lo) / a, xp.where(y > (a + b) * hi, (y - b * hi) / a, mid)
        )
    raise ValueError(f"activation {name!r} is not invertible")


def _layer_forward(xp: Any, lay: Layer, h: Any, like: Any) -> Any:
    n = h.shape[0]
    if lay.kind == "dense":
        w = _const(xp, lay.weight, like)
        out = xp.reshape(h, (n, -1)) @ xp.matrix_transpose(w)
        if lay.bias is not None:
            out = out + _const(xp, lay.bias, like)
    else:
        from ..operators.linear import from_layer

        op = from_layer(lay, like=like)
        out = op.forward(xp.reshape(h, (n, *lay.in_shape)))
        if lay.bias is not None:
            b = _const(xp, lay.bias, like)
            out = out + xp.reshape(b, (1, -1, *([1] * (len(out.shape) - 2))))
    out = xp.reshape(out, (n, *lay.out_shape))
    return apply_activation(lay.activation, out)


def dense_chain(
    weights: list[Any],
    activations: str | list[str | Activation] = "relu",
    biases: list[Any] | None = None,
) -> LayerChain:
    """A dense :class:`LayerChain` from weight matrices ``(out, in)`` (input layer first).

    ``activations``: one name for every layer or one per layer (names as in
    :class:`Activation`; ``"leaky_relu:0.1"`` gives a slope).
    """
    acts = [activations] * len(weights) if isinstance(activations, str) else list(activations)
    if len(acts) != len(weights):
        raise ValueError(f"expected {len(weights)} activations, got {len(acts)}")
    layers = []
    for i, w in enumerate(weights):
        w = np.asarray(w, dtype=np.float64)
        a = acts[i]
        if isinstance(a, str):
            name, _, sl = a.partition(":")
            a = Activation(name, float(sl) if sl else (0.01 if name == "leaky_relu" else None))
        b = None if biases is None or biases[i] is None else np.asarray(biases[i], np.float64)
        layers.append(Layer("dense", w, b, a, (w.shape[1],), (w.shape[0],), name=f"dense{i}"))
    return LayerChain(layers, (layers[0].weight.shape[1],), (layers[-1].weight.shape[0],))
