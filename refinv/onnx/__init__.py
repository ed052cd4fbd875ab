"""ONNX layer: load untrusted models safely, run them as functions on batches.

:class:`OnnxModel` is the black-box view (onnxruntime); explicit-weight
methods read the layer chain from the initializers (``refinv.onnx.graph``).
"""

from .model import OnnxModel, load_onnx

__all__ = ["OnnxModel", "load_onnx"]
