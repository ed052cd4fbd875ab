"""Builders of hostile ONNX models for the security tests and the fuzzer.

Each ``external_model(kind, location)`` is a small graph ``y = x + c`` (x of
shape (N, 4), float32) whose 4-vector ``c`` (or the indices that place it) is
stored as external data at ``location``, in one of the places a tensor can
hide in an ONNX model (:data:`EXTERNAL_KINDS`). If an external reference is
ever resolved outside the model's folder, the file's bytes come out in ``y``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
SECRET = b"TOPSECRET-DATA!!" * 2  # 32 bytes: 4 float32 values or 4 int64 indices

EXTERNAL_KINDS = [
    "initializer",
    "constant_value",
    "sparse_initializer_values",
    "sparse_initializer_indices",
    "constant_sparse_values",
    "constant_sparse_indices",
    "if_subgraph",
    "loop_body",
    "function_body",
]


def _external(t: TensorProto, location: str, length: int) -> TensorProto:
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.ClearField("int64_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    for k, v in (("location", location), ("offset", "0"), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _c(location: str | None, name: str = "c") -> TensorProto:
    t = numpy_helper.from_array(np.arange(4, dtype=np.float32), name)
    return t if location is None else _external(t, location, 16)


def _sparse(location: str | None, part: str, name: str = "c") -> onnx.SparseTensorProto:
    vals = numpy_helper.from_array(np.arange(1, 5, dtype=np.float32), name)
    idx = numpy_helper.from_array(np.arange(4, dtype=np.int64), name + "_idx")
    if location is not None:
        if part == "values":
            _external(vals, location, 16)
        else:
            _external(idx, location, 32)
    return helper.make_sparse_tensor(vals, idx, [4])


def _io():
    return (
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )


def _finish(graph, functions=()) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", OPSET)]
    if functions:
        opsets.append(helper.make_opsetid("local", 1))
    m = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    m.ir_version = 8
    return m


def external_model(kind: str, location: str | None) -> onnx.ModelProto:
    """``y = x + c`` with ``c`` (or its indices) external at ``location`` (None: inline)."""
    ins, outs = _io()
    add = helper.make_node("Add", ["x", "c"], ["y"])
    if kind == "initializer":
        g = helper.make_graph([add], "g", ins, outs, initializer=[_c(location)])
        return _finish(g)
    if kind == "constant_value":
        k = helper.make_node("Constant", [], ["c"], value=_c(location, "cv"))
        return _finish(helper.make_graph([k, add], "g", ins, outs))
    if kind.startswith("sparse_initializer_"):
        g = helper.make_graph([add], "g", ins, outs)
        g.sparse_initializer.append(_sparse(location, kind.rsplit("_", 1)[1]))
        return _finish(g)
    if kind.startswith("constant_sparse_"):
        sp = _sparse(location, kind.rsplit("_", 1)[1], "cs")
        k = helper.make_node("Constant", [], ["c"], sparse_value=sp)
        return _finish(helper.make_graph([k, add], "g", ins, outs))
    if kind == "if_subgraph":
        k = helper.make_node("Constant", [], ["cc"], value=_c(location, "cv"))
        then = helper.make_graph(
            [k], "then", [], [helper.make_tensor_value_info("cc", TensorProto.FLOAT, [4])]
        )
        z = helper.make_node("Constant", [], ["cz"], value=_c(None, "cz0"))
        other = helper.make_graph(
            [z], "else", [], [helper.make_tensor_value_info("cz", TensorProto.FLOAT, [4])]
        )
        cond = numpy_helper.from_array(np.array(True), "cond")
        n_if = helper.make_node("If", ["cond"], ["c"], then_branch=then, else_branch=other)
        g = helper.make_graph([n_if, add], "g", ins, outs, initializer=[cond])
        return _finish(g)
    if kind == "loop_body":
        body = helper.make_graph(
            [
                helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                helper.make_node("Add", ["v_in", "w"], ["v_out"]),
            ],
            "body",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [4]),
            ],
            [
                helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [4]),
            ],
            initializer=[_c(location, "w")],
        )
        inits = [
            numpy_helper.from_array(np.array(1, np.int64), "M"),
            numpy_helper.from_array(np.array(True), "cond"),
            numpy_helper.from_array(np.zeros(4, np.float32), "zero"),
        ]
        loop = helper.make_node("Loop", ["M", "cond", "zero"], ["c"], body=body)
        return _finish(helper.make_graph([loop, add], "g", ins, outs, initializer=inits))
    if kind == "function_body":
        k = helper.make_node("Constant", [], ["cc"], value=_c(location, "cv"))
        a = helper.make_node("Add", ["u", "cc"], ["v"])
        fn = helper.make_function(
            "local", "AddC", ["u"], ["v"], [k, a], [helper.make_opsetid("", OPSET)]
        )
        call = helper.make_node("AddC", ["x"], ["y"], domain="local")
        return _finish(helper.make_graph([call], "g", ins, outs), functions=[fn])
    raise ValueError(kind)


def expected_c(kind: str) -> np.ndarray:
    """The value of ``c`` when everything is inline."""
    if "sparse" in kind:
        return np.arange(1, 5, dtype=np.float32)
    return np.arange(4, dtype=np.float32)


def identity_loop_body():
    """The body graph of a ``Loop`` that passes its condition and one float value through
    unchanged (the trip count alone decides how long the loop runs)."""
    return helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("Identity", ["v_in"], ["v_out"]),
        ],  # fmt: skip
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None),
        ],  # fmt: skip
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None),
        ],  # fmt: skip
    )
