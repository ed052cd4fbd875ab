"""ONNX layer: load untrusted models safely, run them as functions on batches.

:class:`OnnxModel` is the black-box view (onnxruntime); explicit-weight
methods read the layer chain from the initializers (:func:`read_chain`).

Modules, by responsibility: :mod:`~refinv.onnx.loading` (safe loading of untrusted
files) and :mod:`~refinv.onnx.limits` (its resource limits); :mod:`~refinv.onnx.session`
(onnxruntime sessions, memory ceiling, time-limit watchdog, providers);
:mod:`~refinv.onnx.layout` (the input's layout); :mod:`~refinv.onnx.model` (the
:class:`OnnxModel` adapter); :mod:`~refinv.onnx.chain` (layer chains) and
:mod:`~refinv.onnx.graph` (:func:`read_chain`, its folding rules in ``_chain_rules``).
"""

from .chain import Activation, Layer, LayerChain, dense_chain
from .graph import read_chain
from .loading import load_onnx
from .model import OnnxModel

__all__ = [
    "OnnxModel",
    "load_onnx",
    "read_chain",
    "dense_chain",
    "Activation",
    "Layer",
    "LayerChain",
]
