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

import os as _os

# onnxruntime 1.32 on Linux, when it is imported, writes a device id and an event database
# under ~/.cache/Microsoft/DeveloperTools/.onnxruntime and looks up its telemetry server,
# whatever disable_telemetry_events() says later; ORT_DISABLE_TELEMETRY=1 in the environment
# before the import prevents both (measured: docs/security.md). refinv imports onnxruntime
# only from this package, so it is set here unless REFINV_ORT_TELEMETRY=1 or the caller
# chose a value.
if _os.environ.get("REFINV_ORT_TELEMETRY", "") != "1":
    _os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .chain import Activation, Layer, LayerChain, dense_chain  # noqa: E402
from .graph import read_chain  # noqa: E402
from .loading import load_onnx  # noqa: E402
from .model import OnnxModel  # noqa: E402

__all__ = [
    "OnnxModel",
    "load_onnx",
    "read_chain",
    "dense_chain",
    "Activation",
    "Layer",
    "LayerChain",
]
