"""Operators: degradations (pixel erasure and mask families), linear operators
with adjoints (dense, convolution, transposed convolution, discrete gradient)
and proximal activations."""

from .activations import Clip, Identity, LeakyReLU, ProxActivation, ReLU, activation_from_graph
from .linear import (
    Conv2d,
    ConvTranspose2d,
    Dense,
    Gradient2d,
    LinearOperator,
    NearestUpsample2d,
    from_layer,
    operator_norm,
)
from .masks import MaskSpec, draw_masks, erase, parse_mask, pixel_shape, validate_mask

__all__ = [
    "MaskSpec",
    "draw_masks",
    "erase",
    "parse_mask",
    "pixel_shape",
    "validate_mask",
    "Clip",
    "Identity",
    "LeakyReLU",
    "ProxActivation",
    "ReLU",
    "activation_from_graph",
    "Conv2d",
    "ConvTranspose2d",
    "Dense",
    "Gradient2d",
    "LinearOperator",
    "NearestUpsample2d",
    "from_layer",
    "operator_norm",
]
