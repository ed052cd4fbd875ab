"""Structural fuzzing of refinv's ONNX boundary (shared by tests/test_fuzz_onnx.py and
bench/fuzz_onnx.py).

:func:`make_case` draws one hostile input from a ``random.Random``: a truncation, byte
flips or splices of a small seed model (the shipped ``tied_digits8_lrelu_k128.onnx`` and
small generated MLP / conv / sparse / control-flow models), a protobuf-level mutation
(op types, attributes, dtypes, dims, raw data, names, opsets, declared shapes, casts of
the output), an external-data trick (every kind of reference, pointing at a secret file
by every kind of path), a subgraph, a resource bomb, or a file that is not ONNX at all.

:func:`run_case` writes the case into a sandbox folder (``secret.bin`` in the sandbox
root, which is the working directory; the model in ``model/``), loads it through
:class:`refinv.OnnxModel` and :func:`refinv.onnx.read_chain`, and classifies:

``refinv_error``  a RefinvError (the secret's bytes not in the message)
``correct``       loaded and ran; output shape/dtype as declared by refinv and values
                  equal to a plain onnxruntime run of the same file (chain: the layer
                  chain's forward pass equals it)
``wrong``         loaded and ran but the result disagrees (a silently wrong output)
``other_exception`` any exception that is not a RefinvError
``leak``          the secret file was opened (inotify, any thread, C++ included) or its
                  bytes came out
``unverified``    refinv ran it but the plain onnxruntime reference could not
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import random
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from _hostile import EXTERNAL_KINDS, SECRET, external_model, identity_loop_body
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
OPSET = 17
SECRET_NAME = "secret.bin"


# ------------------------------------------------------------------ seeds
def _mlp(widths=(8, 16, 8), seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, cur = [], [], "x"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        inits += [
            numpy_helper.from_array(
                (rng.standard_normal((b, a)) / np.sqrt(a)).astype("f4"), f"w{i}"
            ),
            numpy_helper.from_array((0.1 * rng.standard_normal(b)).astype("f4"), f"b{i}"),
        ]
        last = i == len(widths) - 2
        out = "y" if last else f"h{i}"
        g = out if last else f"g{i}"
        nodes.append(
            helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [g], transB=1, name=f"gemm{i}")
        )
        if not last:
            nodes.append(helper.make_node("Relu", [g], [out], name=f"relu{i}"))
        cur = out
    return _model(nodes, inits, ["N", widths[0]], ["N", widths[-1]])


def _conv() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((3, 1, 3, 3)).astype("f4") * 0.3, "k"),
        numpy_helper.from_array(rng.standard_normal(3).astype("f4") * 0.1, "kb"),
        numpy_helper.from_array(rng.standard_normal((3, 1, 3, 3)).astype("f4") * 0.3, "kt"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "k", "kb"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("LeakyRelu", ["c"], ["a"], alpha=0.1, name="act"),
        helper.make_node("ConvTranspose", ["a", "kt"], ["y"], pads=[1, 1, 1, 1], name="deconv"),
    ]
    return _model(nodes, inits, ["N", 1, 6, 6], ["N", 1, 6, 6])


def _model(nodes, inits, in_shape, out_shape, elem=TensorProto.FLOAT) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "fuzz",
        [helper.make_tensor_value_info("x", elem, in_shape)],
        [helper.make_tensor_value_info("y", elem, out_shape)],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    return m


_SEEDS: list[tuple[str, bytes]] | None = None


def seeds() -> list[tuple[str, bytes]]:
    global _SEEDS
    if _SEEDS is None:
        s = [("tied_digits8", (ROOT / "models/onnx/tied_digits8_lrelu_k128.onnx").read_bytes())]
        s += [("mlp", _mlp().SerializeToString()), ("conv", _conv().SerializeToString())]
        s += [("sparse", external_model("sparse_initializer_values", None).SerializeToString())]
        s += [("if", external_model("if_subgraph", None).SerializeToString())]
        _SEEDS = s
    return _SEEDS


# ------------------------------------------------------------------ cases
@dataclass
class Case:
    kind: str
    files: dict[str, bytes]
    model: str = "model/m.onnx"
    kwargs: dict = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    refuse: bool = False  # only a RefinvError is right (e.g. a layout= contradicting the graph)

    def describe(self) -> str:
        return f"{self.kind} {self.kwargs}"


def _bytes_mutation(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    how = rng.choice(["truncate", "flip", "splice", "zero_run"])
    b = bytearray(data)
    if how == "truncate":
        return how, bytes(b[: rng.randrange(len(b))])
    if how == "flip":
        for _ in range(rng.choice([1, 1, 2, 4, 16])):
            i = rng.randrange(len(b))
            b[i] ^= rng.choice([1, 2, 4, 8, 16, 32, 64, 128, rng.randrange(1, 256)])
        return how, bytes(b)
    if how == "zero_run":
        i = rng.randrange(len(b))
        n = rng.randrange(1, 64)
        b[i : i + n] = bytes(len(b[i : i + n]))
        return how, bytes(b)
    i = rng.randrange(len(b))
    j = min(len(b), i + rng.randrange(0, 32))
    ins = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 16)))
    return how, bytes(b[:i] + ins + b[j:])


_OPS = ["Relu", "Identity", "Gemm", "MatMul", "Add", "Conv", "Loop", "If", "Scan", "Foo",
        "Reshape", "Cast", "Softmax", "Tile", "Expand", "ConstantOfShape", "Dropout", "Sigmoid",
        "Transpose", "Flatten", "LeakyRelu", "BatchNormalization", "Squeeze", "Range"]  # fmt: skip
_WEIRD_INTS = [0, -1, 1, 2, 3, 7, 64, 10**6, 2**31 - 1, 2**31, 2**40, -(2**31), 2**63 - 1]


def _proto_mutation(m: onnx.ModelProto, rng: random.Random) -> str:
    g = m.graph
    how = rng.choice([
        "op_type", "attr", "dtype", "dims", "raw", "in_elem", "out_elem", "in_dims",
        "out_dims", "rename", "drop_node", "dup_node", "opset", "ir", "cast_out",
        "bad_utf8", "float_data", "swap_inputs",
    ])  # fmt: skip
    nodes, inits = list(g.node), list(g.initializer)
    if how == "op_type" and nodes:
        rng.choice(nodes).op_type = rng.choice(_OPS)
    elif how == "attr" and nodes:
        n = rng.choice(nodes)
        if n.attribute and rng.random() < 0.7:
            a = rng.choice(list(n.attribute))
            if a.type == onnx.AttributeProto.INT:
                a.i = rng.choice(_WEIRD_INTS)
            elif a.type == onnx.AttributeProto.FLOAT:
                a.f = rng.choice([float("nan"), float("inf"), -1e30, 0.0, 1e-30])
            elif a.type == onnx.AttributeProto.INTS:
                del a.ints[:]
                a.ints.extend(rng.choice(_WEIRD_INTS) for _ in range(rng.randrange(0, 6)))
            else:
                a.type = rng.choice(list(onnx.AttributeProto.AttributeType.values()))
        else:
            name = rng.choice(["pads", "strides", "group", "axis", "alpha", "transA", "to"])
            n.attribute.append(helper.make_attribute(name, rng.choice(_WEIRD_INTS)))
    elif how == "dtype" and inits:
        rng.choice(inits).data_type = rng.choice([*range(0, 30), 99, -3])
    elif how == "dims" and inits:
        t = rng.choice(inits)
        dims = list(t.dims)
        if dims and rng.random() < 0.6:
            dims[rng.randrange(len(dims))] = rng.choice(_WEIRD_INTS[:8] + [2**20])
        else:
            dims = dims[::-1] if rng.random() < 0.5 else dims + [1]
        del t.dims[:]
        t.dims.extend(dims)
    elif how == "raw" and inits:
        t = rng.choice(inits)
        if t.HasField("raw_data"):
            r = t.raw_data
            t.raw_data = r[: rng.randrange(len(r) + 1)] if rng.random() < 0.5 else r + r[:8]
    elif how == "float_data" and inits:
        t = rng.choice(inits)
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * rng.randrange(0, 5))
    elif how in ("in_elem", "out_elem"):
        vi = g.input[0] if how == "in_elem" else g.output[0]
        vi.type.tensor_type.elem_type = rng.choice([0, 2, 6, 7, 9, 10, 11, 16, 21, 40])
    elif how in ("in_dims", "out_dims"):
        vi = g.input[0] if how == "in_dims" else g.output[0]
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and rng.random() < 0.7:
            d = dims[rng.randrange(len(dims))]
            if rng.random() < 0.3:
                d.dim_param = "Q"
            else:
                d.dim_value = rng.choice([0, 1, 2, 3, 5, 63, 65, 10**9])
        else:
            vi.type.tensor_type.ClearField("shape") if rng.random() < 0.5 else dims.add()
    elif how == "rename" and nodes:
        n = rng.choice(nodes)
        if n.input:
            n.input[rng.randrange(len(n.input))] = rng.choice(["nope", "x", "y", ""])
    elif how == "swap_inputs" and nodes:
        n = rng.choice(nodes)
        if len(n.input) > 1:
            ins = list(n.input)
            rng.shuffle(ins)
            del n.input[:]
            n.input.extend(ins)
    elif how == "drop_node" and len(nodes) > 1:
        del g.node[rng.randrange(len(nodes))]
    elif how == "dup_node" and nodes:
        g.node.insert(rng.randrange(len(nodes) + 1), rng.choice(nodes))
    elif how == "opset":
        m.opset_import[0].version = rng.choice([1, 6, 7, 9, 11, 13, 17, 21, 22, 23, 24, 99])
    elif how == "ir":
        m.ir_version = rng.choice([0, 1, 3, 4, 7, 8, 9, 10, 11, 12, 99])
    elif how == "cast_out":
        to = rng.choice([TensorProto.INT64, TensorProto.BOOL, TensorProto.FLOAT16,
                         TensorProto.DOUBLE, TensorProto.BFLOAT16, TensorProto.INT8])  # fmt: skip
        out = g.output[0].name
        for n in g.node:
            for k, o in enumerate(n.output):
                if o == out:
                    n.output[k] = out + "_pre"
        g.node.append(helper.make_node("Cast", [out + "_pre"], [out], to=to))
        if rng.random() < 0.5:
            g.output[0].type.tensor_type.elem_type = to
    elif how == "bad_utf8" and nodes:
        rng.choice(nodes).name = "BADUTF8"
    return how


def _external_trick(rng: random.Random) -> Case:
    kind = rng.choice(EXTERNAL_KINDS)
    loc = rng.choice(["secret.bin", "../secret.bin", "ABS", "link.bin", "sub/../../secret.bin",
                      "data.bin", "data.bin", "data.bin", "data.bin", "", "dir", "./data.bin", "..\\secret.bin",
                      "/proc/self/environ", "data.bin\x00x", "~/secret.bin"])  # fmt: skip
    if loc == "ABS":
        loc = "@ROOT@/secret.bin"
    data = np.arange(1, 5, dtype=np.float32).tobytes() if "indices" not in kind else (
        np.arange(4, dtype=np.int64).tobytes())  # fmt: skip
    m = external_model(kind, loc)
    tensors = [t for t in _all_tensors(m) if t.data_location == TensorProto.EXTERNAL]
    how = rng.choice(["plain", "plain", "plain", "offset", "length", "nonint", "both"])
    for t in tensors:
        e = {x.key: x for x in t.external_data}
        if how in ("offset", "both"):
            e["offset"].value = str(rng.choice([4, 16, 31, 32, 1000, -8, 2**62]))
        if how in ("length", "both"):
            e["length"].value = str(rng.choice([0, 4, 15, 17, 64, -1, 2**62]))
        if how == "nonint":
            e["offset"].value = "zero"
    files = {"model/data.bin": data}
    case = Case(f"external:{kind}:{loc!r}:{how}", files, kwargs={"allow_control_flow": True})
    case.files["model/m.onnx"] = m.SerializeToString()
    if loc == "link.bin":
        case.symlinks["model/link.bin"] = "secret.bin"
    if loc == "dir":
        case.dirs = ("model/dir",)
    if rng.random() < 0.2:  # the same bytes without a folder
        case.kind += ":bytes"
        case.kwargs["as_bytes"] = True
    return case


def _all_tensors(m):
    from refinv.onnx.loading import _scan

    return _scan(m, "m")[0]


def _wrap_control_flow(rng: random.Random) -> Case:
    name, data = rng.choice(seeds()[:3])
    inner = onnx.load_from_string(data)
    how = rng.choice(["if", "loop_huge", "loop_small", "nested_if"])
    g = inner.graph
    sub_out = helper.make_tensor_value_info(
        g.output[0].name, g.output[0].type.tensor_type.elem_type, None
    )
    if how.startswith("loop"):
        trip = 10**12 if how == "loop_huge" else 3
        body = identity_loop_body()
        inits = [numpy_helper.from_array(np.array(trip, np.int64), "M"),
                 numpy_helper.from_array(np.array(True), "cnd")]  # fmt: skip
        loop = helper.make_node("Loop", ["M", "cnd", "x"], ["y"], body=body)
        m = _model([loop], inits, list(_shape(g.input[0])), list(_shape(g.output[0])))
    else:
        then = helper.make_graph(
            list(g.node), "then", [], [sub_out], initializer=list(g.initializer)
        )
        other = helper.make_graph(
            list(g.node), "else", [], [sub_out], initializer=list(g.initializer)
        )
        if how == "nested_if":
            cond2 = helper.make_node(
                "Constant", [], ["cnd2"], value=numpy_helper.from_array(np.array(False))
            )
            inner_if = helper.make_node(
                "If", ["cnd2"], [g.output[0].name], then_branch=then, else_branch=other
            )
            then = helper.make_graph([cond2, inner_if], "then2", [], [sub_out])
        cnd = numpy_helper.from_array(np.array(rng.random() < 0.5), "cnd")
        n_if = helper.make_node("If", ["cnd"], ["y"], then_branch=then, else_branch=other)
        m = _model([n_if], [cnd], list(_shape(g.input[0])), list(_shape(g.output[0])))
        m.graph.input[0].name = g.input[0].name
    kw = {"allow_control_flow": rng.random() < 0.7}
    return Case(f"control_flow:{how}:{name}", {"model/m.onnx": m.SerializeToString()}, kwargs=kw)


def _shape(vi):
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "N")
            for d in vi.type.tensor_type.shape.dim]  # fmt: skip


def _bomb(rng: random.Random, how: str | None = None) -> Case:
    how = how or rng.choice(["constant_of_shape", "expand", "tile", "sparse_dense", "many_nodes",
                      "range", "big_declared_input", "deep_if", "function_inlining",
                      "many_initializers", "string_bulk"])  # fmt: skip
    n = rng.choice([2**28, 2**31, 2**34, 2**40])
    z = numpy_helper.from_array(np.array(0, np.float32), "zero")
    tail = [helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
            helper.make_node("Mul", ["s", "zero"], ["zz"]),
            helper.make_node("Add", ["x", "zz"], ["y"])]  # fmt: skip
    if how == "constant_of_shape":
        nodes = [helper.make_node("ConstantOfShape", ["shp"], ["big"],
                                  value=numpy_helper.from_array(np.array([1.0], np.float32)))]  # fmt: skip
        inits = [numpy_helper.from_array(np.array([n], np.int64), "shp"), z]
        m = _model(nodes + tail, inits, ["N", 4], ["N", 4])
    elif how == "expand":
        nodes = [helper.make_node("Expand", ["x", "shp"], ["big"])]
        inits = [numpy_helper.from_array(np.array([n // 4, 1, 4], np.int64), "shp"), z]
        m = _model(nodes + tail, inits, ["N", 4], ["N", 4])
    elif how == "tile":
        nodes = [helper.make_node("Tile", ["x", "rep"], ["big"])]
        inits = [numpy_helper.from_array(np.array([n // 8, 1], np.int64), "rep"), z]
        m = _model(nodes + tail, inits, ["N", 4], ["N", 4])
    elif how == "range":
        nodes = [helper.make_node("Range", ["st", "lim", "dl"], ["big"])]
        inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in
                 (("st", 0.0), ("lim", float(n)), ("dl", 1.0))] + [z]  # fmt: skip
        m = _model(nodes + tail, inits, ["N", 4], ["N", 4])
    elif how == "sparse_dense":
        vals = numpy_helper.from_array(np.ones(1, np.float32), "c")
        idx = numpy_helper.from_array(np.zeros(1, np.int64), "c_idx")
        m = _model([helper.make_node("ReduceSum", ["c"], ["big"], keepdims=0)] + tail[1:2]
                   + [helper.make_node("Add", ["x", "zz"], ["y"])], [z], ["N", 4], ["N", 4])  # fmt: skip
        m.graph.node[1].input[0] = "big"
        m.graph.sparse_initializer.append(helper.make_sparse_tensor(vals, idx, [n]))
    elif how == "many_nodes":
        k = rng.choice([10**4, 10**5])
        nodes = [helper.make_node("Identity", ["x" if i == 0 else f"t{i - 1}"],
                                  ["y" if i == k - 1 else f"t{i}"]) for i in range(k)]  # fmt: skip
        m = _model(nodes, [], ["N", 4], ["N", 4])
    elif how == "function_inlining":
        n = rng.choice([3, 8, 12, 14, 16, 20, 30])  # depth: 2**n nodes once inlined
        m = _function_bomb(n)
    elif how == "many_initializers":
        n = rng.choice([10**3, 2 * 10**4, 10**5])
        m = _many_initializers(n)
    elif how == "string_bulk":  # a large text field: every copy of it costs its size again
        n = rng.choice([2**20, 2**26])
        m = _model([helper.make_node("Identity", ["x"], ["y"])], [], ["N", 4], ["N", 4])
        where = rng.choice(["doc_string", "metadata", "string_tensor"])
        if where == "doc_string":
            m.graph.node[0].doc_string = "d" * n
        elif where == "metadata":
            onnx.helper.set_model_props(m, {"k": "v" * n})
        else:
            m.graph.initializer.append(helper.make_tensor("s", TensorProto.STRING, [1], [b"s" * n]))
    elif how == "big_declared_input":
        m = _model([helper.make_node("Identity", ["x"], ["y"])], [], [rng.choice([1, 2]), 2**15, 2**15],
                   [rng.choice([1, 2]), 2**15, 2**15])  # fmt: skip
    else:  # deep_if: If nested 60 levels
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        body = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "b0", [], [out])
        leaf = body
        for i in range(rng.choice([5, 20])):
            c = helper.make_node(
                "Constant", [], [f"c{i}"], value=numpy_helper.from_array(np.array(True))
            )
            nif = helper.make_node("If", [f"c{i}"], ["y"], then_branch=body, else_branch=leaf)
            body = helper.make_graph([c, nif], f"b{i + 1}", [], [out])
        m = _model(list(body.node), [], ["N", 4], ["N", 4])
    kw = {"allow_control_flow": True} if how == "deep_if" else {}
    return Case(f"bomb:{how}:{n}", {"model/m.onnx": m.SerializeToString()}, kwargs=kw)


def _function_bomb(depth: int) -> onnx.ModelProto:
    """Model-local functions f_i(x) = f_{i-1}(f_{i-1}(x)), f_0 = Relu: 2 * depth + 1 nodes in
    the file, 2**depth once inlined (onnxruntime inlines them at session creation)."""
    op = [helper.make_opsetid("", OPSET), helper.make_opsetid("local", 1)]
    fns = [
        helper.make_function(
            "local", "f0", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], op
        )
    ]
    for i in range(1, depth + 1):
        body = [helper.make_node(f"f{i - 1}", ["a"], ["t"], domain="local"),
                helper.make_node(f"f{i - 1}", ["t"], ["b"], domain="local")]  # fmt: skip
        fns.append(helper.make_function("local", f"f{i}", ["a"], ["b"], body, op))
    m = _model(
        [helper.make_node(f"f{depth}", ["x"], ["y"], domain="local")], [], ["N", 4], ["N", 4]
    )
    m.opset_import.append(helper.make_opsetid("local", 1))
    m.functions.extend(fns)
    return m


def _many_initializers(k: int) -> onnx.ModelProto:
    """``k`` unused one-element initializers beside an Identity (session creation grows
    about quadratically with them: 10^4 took 0.7 s, 10^5 ~ 200 s)."""
    inits = [numpy_helper.from_array(np.array([i], np.float32), f"c{i}") for i in range(k)]
    return _model([helper.make_node("Identity", ["x"], ["y"])], inits, ["N", 4], ["N", 4])


def _numeric(rng: random.Random, how: str | None = None) -> Case:
    """Weights and bounds that are NaN or Inf, where a layer chain could silently differ from
    onnxruntime: a Clip with a NaN bound, a convolution kernel holding one NaN or Inf next to
    zero padding (the chain must equal the model or be refused)."""
    how = how or rng.choice(["nan_clip", "nan_conv", "inf_conv", "nan_deconv"])
    bad = float("nan") if how.startswith("nan") else rng.choice([float("inf"), -float("inf")])
    if how == "nan_clip":
        lo, hi = rng.choice([(bad, 1.0), (0.0, bad), (bad, bad)])
        inits = [
            numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("lo", lo), ("hi", hi))
        ]
        nodes = [helper.make_node("Gemm", ["x", "w"], ["g"], transB=1),
                 helper.make_node("Clip", ["g", "lo", "hi"], ["y"])]  # fmt: skip
        w = np.random.default_rng(rng.randrange(2**32)).standard_normal((8, 8)).astype("f4")
        m = _model(nodes, [numpy_helper.from_array(w, "w"), *inits], ["N", 8], ["N", 8])
    else:
        m = _conv()
        name = "kt" if how == "nan_deconv" else "k"
        t = next(t for t in m.graph.initializer if t.name == name)
        k = numpy_helper.to_array(t).copy()
        k.flat[rng.randrange(k.size)] = bad
        t.CopyFrom(numpy_helper.from_array(k, name))
    return Case(f"numeric:{how}", {"model/m.onnx": m.SerializeToString()})


def _forced_layout(rng: random.Random) -> Case:
    """A ``layout=`` given by the caller for a model declared in another (or the same) layout:
    a contradiction must be an error, never a silent transpose."""
    c, h, w = rng.choice([(1, 5, 5), (3, 4, 6), (1, 4, 6), (2, 3, 3)])
    declared = rng.choice(["NCHW", "NHWC"])
    shape = ["N", c, h, w] if declared == "NCHW" else ["N", h, w, c]
    m = _model([helper.make_node("Identity", ["x"], ["y"])], [], shape, shape)
    forced = rng.choice(["NCHW", "NHWC", "flat"])
    # (2, 3, 3) and (3, 3, 2) fit both layouts: a layout given for them is the only answer
    refuse = forced != declared and (c, h, w) != (2, 3, 3)
    return Case(f"layout:{declared}{tuple(shape[1:])}:forced_{forced}",
                {"model/m.onnx": m.SerializeToString()}, kwargs={"layout": forced},
                refuse=refuse)  # fmt: skip


def _not_onnx(rng: random.Random) -> Case:
    how = rng.choice(["empty", "text", "random", "npz", "zip_of_onnx", "json", "zeros", "varints"])
    if how == "empty":
        data = b""
    elif how == "text":
        data = ("this is not a model\n" * rng.randrange(1, 50)).encode()
    elif how == "random":
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000)))
    elif how == "npz":
        buf = io.BytesIO()
        np.savez(buf, a=np.arange(10))
        data = buf.getvalue()
    elif how == "zip_of_onnx":
        import zipfile

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("m.onnx", seeds()[1][1])
        data = buf.getvalue()
    elif how == "json":
        data = b'{"graph": {"node": []}, "ir_version": 8}'
    elif how == "zeros":
        data = bytes(rng.randrange(1, 4096))
    else:  # protobuf-looking varint soup
        data = b"".join(struct.pack("BB", rng.randrange(8, 120), rng.randrange(256))
                        for _ in range(rng.randrange(1, 300)))  # fmt: skip
    return Case(f"not_onnx:{how}", {"model/m.onnx": data})


#: the kinds added in the second round (issue 33), each drawable on its own (make_kind)
ROUND2_KINDS = ("bomb:function_inlining", "bomb:many_initializers", "bomb:string_bulk",
                "numeric:nan_clip", "numeric:nan_conv", "numeric:inf_conv",
                "numeric:nan_deconv", "layout")  # fmt: skip


def make_kind(kind: str, rng: random.Random) -> Case:
    """One case of ``kind`` (an entry of :data:`ROUND2_KINDS`), drawn from ``rng``."""
    family, _, how = kind.partition(":")
    if family == "bomb":
        return _bomb(rng, how)
    if family == "numeric":
        return _numeric(rng, how)
    return _forced_layout(rng)


def make_case(rng: random.Random) -> Case:
    """One fuzz case, drawn from ``rng``."""
    family = rng.choices(
        ["bytes", "proto", "proto2", "external", "control_flow", "bomb", "not_onnx", "numeric",
         "layout"],
        weights=[25, 30, 10, 15, 6, 9, 8, 5, 4],
    )[0]  # fmt: skip
    if family == "numeric":
        return _numeric(rng)
    if family == "layout":
        return _forced_layout(rng)
    if family == "bytes":
        name, data = rng.choice(seeds())
        how, out = _bytes_mutation(data, rng)
        return Case(
            f"bytes:{how}:{name}", {"model/m.onnx": out}, kwargs={"allow_control_flow": True}
        )
    if family in ("proto", "proto2"):
        name, data = rng.choice(seeds())
        m = onnx.load_from_string(data)
        hows = [
            _proto_mutation(m, rng) for _ in range(1 if family == "proto" else rng.randrange(2, 5))
        ]
        out = m.SerializeToString()
        if "bad_utf8" in hows:
            out = out.replace(b"BADUTF8", b"BAD\xff\xfe8\x80")
        return Case(f"proto:{'+'.join(hows)}:{name}", {"model/m.onnx": out},
                    kwargs={"allow_control_flow": name == "if"})  # fmt: skip
    if family == "external":
        return _external_trick(rng)
    if family == "control_flow":
        return _wrap_control_flow(rng)
    if family == "bomb":
        return _bomb(rng)
    return _not_onnx(rng)


# ------------------------------------------------------------------ inotify
class SecretWatch:
    """Reports whether any thread of this process (C++ included) opened or read files in a
    folder since the last :meth:`events` call (Linux inotify; inactive elsewhere)."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, folder: Path):
        self.fd = -1
        path = ctypes.util.find_library("c")
        if not path or not hasattr(os, "O_NONBLOCK"):
            return
        try:
            libc = ctypes.CDLL(path, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK)
            if fd < 0:
                return
            if libc.inotify_add_watch(fd, str(folder).encode(), self.IN_ACCESS | self.IN_OPEN) < 0:
                os.close(fd)
                return
            self.fd = fd
        except (OSError, AttributeError):
            self.fd = -1

    @property
    def active(self) -> bool:
        return self.fd >= 0

    def events(self) -> list[str]:
        names = []
        if self.fd < 0:
            return names
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return names
            i = 0
            while i + 16 <= len(buf):
                _, _, _, ln = struct.unpack_from("iIII", buf, i)
                names.append(buf[i + 16 : i + 16 + ln].rstrip(b"\0").decode(errors="replace"))
                i += 16 + ln

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ------------------------------------------------------------------ running
def materialize(case: Case, root: Path) -> Path:
    """Write the case under ``root`` (which holds the secret); return the model path."""
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / SECRET_NAME).write_bytes(SECRET)
    for rel, data in case.files.items():
        data = data.replace(b"@ROOT@", str(root).encode())
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for rel, target in case.symlinks.items():
        os.symlink(root / target, root / rel)
    for rel in case.dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)
    return root / case.model


def _reference(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 4
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    b = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    if b is None:
        return s.run(None, {inp.name: x})[0]
    n = x.shape[0]  # a fixed batch: run padded chunks of b samples, as documented for refinv
    pad = np.zeros((-n % b, *x.shape[1:]), x.dtype)
    xs = np.concatenate([x, pad])
    return np.concatenate(
        [s.run(None, {inp.name: xs[i : i + b]})[0] for i in range(0, len(xs), b)]
    )[:n]


def _close(a: np.ndarray, b: np.ndarray, rtol: float) -> bool:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    fin = np.isfinite(b) & (np.abs(b) < 1e30)
    if not np.array_equal(np.isnan(a) & fin, np.zeros_like(fin)):
        return False
    scale = 1.0 + (np.abs(b[fin]).max() if fin.any() else 0.0)
    return bool(np.all(np.abs(a[fin] - b[fin]) <= rtol * scale))


def run_case(case: Case, root: Path, *, time_limit: float = 10.0, watch: SecretWatch | None = None,
             chain: bool = True) -> dict:  # fmt: skip
    """Run one case in ``root`` (must be the cwd). Returns ``{"outcome", "detail", "seconds"}``
    for the black-box path and, with ``chain``, the chain reader (worst of both)."""
    from refinv import OnnxModel
    from refinv.errors import RefinvError
    from refinv.onnx import read_chain

    path = materialize(case, root)
    kw = dict(case.kwargs)
    as_bytes = kw.pop("as_bytes", False)
    src = path.read_bytes() if as_bytes else path
    t0 = time.perf_counter()
    results = []
    if watch is not None:
        watch.events()
    rng = np.random.default_rng(0)

    def leaked(*blobs) -> bool:
        hit = watch is not None and SECRET_NAME in watch.events()
        return hit or any(SECRET[:16] in b or b"TOPSECRET" in b for b in blobs)

    # black box (a layout= given: refinv's (N, C, H, W) arrays reach the graph transposed)
    nhwc = kw.get("layout") == "NHWC"

    def to_graph(a):
        return a.transpose(0, 2, 3, 1) if nhwc else a

    def from_graph(a):
        return a.transpose(0, 3, 1, 2) if nhwc else a

    try:
        f = OnnxModel(src, intra_op_threads=1, time_limit=time_limit, **kw)
        x = rng.random((3, *f.sample_shape)).astype(f.dtype)
        y = f(x)
    except RefinvError as exc:
        msg = str(exc).encode(errors="replace")
        results.append(("leak", f"model: in message: {exc}") if leaked(msg) else
                       ("refinv_error", f"model: {type(exc).__name__}: {str(exc)[:160]}"))  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - this is what the fuzzer looks for
        results.append(("other_exception", f"model: {type(exc).__name__}: {str(exc)[:300]}"))
    else:
        if leaked(y.tobytes(), np.asarray(y, np.float32).tobytes()):
            results.append(("leak", "model: secret opened or in the output"))
        elif y.shape != (3, *f.output_sample_shape) or y.dtype != f.dtype:
            results.append(("wrong", f"model: got {y.shape} {y.dtype}, declared "
                                     f"{(3, *f.output_sample_shape)} {f.dtype}"))  # fmt: skip
        else:
            try:
                ref = from_graph(_reference(path, to_graph(x)))
            except Exception as exc:  # noqa: BLE001
                results.append(("unverified", f"model: reference failed: {str(exc)[:200]}"))
            else:
                ok = ref.dtype == y.dtype and _close(y, ref, 1e-5)
                results.append(("correct", "model") if ok else
                               ("wrong", f"model: differs from onnxruntime (max abs diff "
                                         f"{np.nanmax(np.abs(y.astype('f8') - ref.astype('f8'))) if ref.shape == y.shape else ref.shape})"))  # fmt: skip
    # chain reader
    if chain and "layout" not in kw:  # read_chain takes no layout=: the model's is tested
        try:
            c = read_chain(src)
            x = rng.random((3, *c.in_shape))
            yc = c.forward(x)
        except RefinvError as exc:
            msg = str(exc).encode(errors="replace")
            results.append(("leak", f"chain: in message: {exc}") if leaked(msg) else
                           ("refinv_error", f"chain: {type(exc).__name__}: {str(exc)[:160]}"))  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            results.append(("other_exception", f"chain: {type(exc).__name__}: {str(exc)[:300]}"))
        else:
            blobs = [lay.weight.astype(np.float32).tobytes() for lay in c.layers]
            if leaked(*blobs):
                results.append(("leak", "chain: secret opened or in the weights"))
            else:
                try:
                    ref = _reference(path, x.astype(np.float32))
                except Exception as exc:  # noqa: BLE001
                    results.append(("unverified", f"chain: reference failed: {str(exc)[:200]}"))
                else:
                    ok = _close(yc, ref, 1e-3)
                    results.append(
                        ("correct", "chain") if ok else ("wrong", "chain: differs from onnxruntime")
                    )
    if case.refuse:  # anything but a refusal is a silently wrong interpretation
        results = [(("wrong", f"accepted, expected a RefinvError: {d}") if o == "correct" else
                    (o, d)) for o, d in results]  # fmt: skip
    order = ["leak", "other_exception", "wrong", "unverified", "correct", "refinv_error"]
    worst = min(results, key=lambda r: order.index(r[0]))
    return {
        "outcome": worst[0],
        "detail": "; ".join(d for _, d in results),
        "outcomes": [o for o, _ in results],
        "seconds": time.perf_counter() - t0,
    }
