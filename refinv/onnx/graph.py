"""Explicit layer chains read from ONNX initializers.

Explicit-weight methods (PLUGIn, Latent-Pursuit, layered basis pursuit, the
lifted Bregman inversion) need the network as a chain of layers
``x_{i+1} = act_i(A_i x_i + b_i)``. This module defines that representation
(:class:`Layer`, :class:`LayerChain`) and :func:`read_chain`, which walks a
feed-forward ONNX graph in topological order and builds it.

Shared by ``refinv.solvers.generators`` (dense chains) and
``refinv.solvers.bregman`` (dense and convolutional chains).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Activation", "Layer", "LayerChain", "read_chain"]


@dataclass(frozen=True)
class Activation:
    """A componentwise activation: ``name`` in {"identity", "relu", "leaky_relu",
    "prelu", "tanh", "sigmoid"}; ``slope`` for leaky ReLU (scalar) and PReLU
    (array broadcastable to the layer's output sample shape)."""

    name: str = "identity"
    slope: Any = None


@dataclass
class Layer:
    """One affine layer followed by an activation.

    ``kind`` is "dense" (``weight`` of shape (out, in), acting on the flattened
    sample), "conv" or "conv_transpose" (``weight`` in ONNX layout, with
    ``strides``, ``pads`` (ONNX order: begins then ends), ``dilations``,
    ``group``, ``output_padding``). ``in_shape``/``out_shape`` are sample
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
    def n_params(self) -> int:
        return int(
            sum(lay.weight.size + (0 if lay.bias is None else lay.bias.size) for lay in self.layers)
        )


def read_chain(source: Any) -> LayerChain:
    """Read the layer chain of a feed-forward ONNX model (path, bytes, ModelProto
    or :class:`~refinv.onnx.OnnxModel`). Implemented in ``_chain_reader``."""
    from ._chain_reader import read_chain as _read

    return _read(source)
