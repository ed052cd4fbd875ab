"""Small ONNX graphs for the chain-reader and operator tests, built from nodes with
``onnx.helper`` and checked; and onnxruntime on them (CPU)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper
from onnx import helper as oh


def graph_model(nodes, inits, in_shape, out_shape, dtype=TensorProto.FLOAT, opset=17):
    """A checked model: input ``x`` and output ``y`` of shape ``("N", *shape)`` (symbolic
    batch), initializers from ``{name: array}``, IR version 8."""
    g = oh.make_graph(
        nodes,
        "g",
        [oh.make_tensor_value_info("x", dtype, ["N", *in_shape])],
        [oh.make_tensor_value_info("y", dtype, ["N", *out_shape])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def ort_run(m, x):
    """onnxruntime's output ``y`` of the model ``m`` on the input ``x``."""
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]
