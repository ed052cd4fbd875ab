"""ONNX layer: load untrusted models safely, run them as functions on batches.

:class:`OnnxModel` is the black-box view (onnxruntime); explicit-weight
methods read the layer chain from the initializers (:func:`read_chain`).
"""

from .graph import Activation, Layer, LayerChain, dense_chain, read_chain
from .model import OnnxModel, load_onnx

__all__ = [
    "OnnxModel",
    "load_onnx",
    "read_chain",
    "dense_chain",
    "Activation",
    "Layer",
    "LayerChain",
]
