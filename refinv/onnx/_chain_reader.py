"""Read an explicit layer chain from a feed-forward ONNX graph.

How it works
------------
1. The model is loaded safely (:func:`refinv.onnx.model.load_onnx`).
2. One *probe* run of onnxruntime on a zero input of batch 1 (or the model's
   fixed batch) returns every intermediate tensor (under the same memory
   ceiling and time limit as :class:`~refinv.onnx.OnnxModel`, see
   ``REFINV_ORT_MEMORY_LIMIT`` / ``REFINV_ORT_TIME_LIMIT``). This gives the exact sample
   shape of every tensor on the data path (whatever chain of
   Shape/Gather/Unsqueeze/Concat the exporter emitted for a Flatten or an
   Unflatten) and the value of every constant computed inside the graph
   (a ``Transpose`` of a weight, a ``Constant`` node, ...).
3. The nodes are walked in their (topological) order. Each tensor is
   classified as *data* (depends on the input values), *shape* (depends only
   on the input's shape: outputs of ``Shape``/``Size`` and what is computed
   from them) or *constant*. Nodes without a data input are skipped. Every
   data node must consume exactly one data tensor, the current end of the
   chain, which no other data node consumes (no skip connections), and be one
   of: Gemm, MatMul, Add/Sub (bias), BatchNormalization (folded into the open
   linear layer), Relu, LeakyRelu, PRelu, Tanh, Sigmoid, Identity, Dropout,
   Flatten, Reshape, Squeeze, Unsqueeze, Conv, ConvTranspose, Clip, and the
   piecewise linear unit ``Add(a * u, b * Clip(u, lo, hi))`` (recognized as one
   activation "plu" before the walk; it is the one branch allowed). Anything else
   raises :class:`~refinv.errors.UnsupportedGraphError` naming the node.

A layer is opened by a linear node (Gemm, MatMul, Conv, ConvTranspose) and
closed by the next activation (or by the next linear node / the end of the
graph, with the identity activation). Weights are float64 NumPy arrays:
dense weights are ``(out, in)`` acting on the flattened sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import OnnxModelError, RefinvError, ResourceLimitError, UnsupportedGraphError
from .graph import Activation, Layer, LayerChain
from .model import (
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_TIME_LIMIT,
    _limit,
    _prod,
    load_onnx,
    open_session,
    run_session,
)

__all__ = ["read_chain"]

_ACTIVATIONS = {
    "Relu": "relu",
    "LeakyRelu": "leaky_relu",
    "PRelu": "prelu",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
}
_PASS = {"Identity", "Dropout"}
_RESHAPES = {"Flatten", "Reshape", "Squeeze", "Unsqueeze"}
_LINEAR = {"Gemm", "MatMul", "Conv", "ConvTranspose"}
_SHAPE_SOURCES = {"Shape", "Size"}


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _node_label(node: onnx.NodeProto, idx: int) -> str:
    return f"node {node.name or f'#{idx}'} (op {node.op_type})"


def _probe(
    model: onnx.ModelProto, input_name: str, input_vi: onnx.ValueInfoProto, dtype, label: str
):
    """Run the model once on zeros; return every named tensor's value."""
    import onnxruntime as ort

    dims = []
    for i, d in enumerate(input_vi.type.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif i == 0:
            dims.append(1)
        else:
            raise OnnxModelError(
                f"{label}: input {input_name!r}: expected fixed positive sample dimensions, got "
                f"{d.dim_value if d.HasField('dim_value') else 'a symbolic dimension'} at axis {i}"
            )
    if len(dims) < 2:
        raise OnnxModelError(
            f"{label}: input {input_name!r}: expected a declared shape (batch, *sample_shape), "
            f"got {dims}"
        )
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    inits = {t.name for t in probe.graph.initializer}
    for node in probe.graph.node:
        for out in node.output:
            if out and out not in known and out not in inits:
                vi = onnx.ValueInfoProto()
                vi.name = out
                probe.graph.output.append(vi)
                known.add(out)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    memory_limit = _limit(None, "REFINV_ORT_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT, "memory_limit")
    time_limit = _limit(None, "REFINV_ORT_TIME_LIMIT", DEFAULT_TIME_LIMIT, "time_limit")
    nbytes = _prod(dims) * np.dtype(dtype).itemsize
    if memory_limit > 0 and nbytes > memory_limit / 4:
        raise ResourceLimitError(
            f"{label}: the probe input of shape {tuple(dims)} alone needs {nbytes} bytes, more "
            f"than a quarter of the memory ceiling of {int(memory_limit)} bytes; raise it with "
            "REFINV_ORT_MEMORY_LIMIT"
        )
    try:
        data = probe.SerializeToString()
    except Exception as exc:
        raise OnnxModelError(f"{label}: cannot serialize the probe model: {exc}") from exc
    sess = open_session(
        data, opts, ["CPUExecutionProvider"], label=label, memory_limit=memory_limit
    )
    names = [o.name for o in sess.get_outputs()]
    vals = run_session(
        sess,
        None,
        {input_name: np.zeros(dims, dtype=dtype)},
        label=f"{label}: probe run",
        time_limit=time_limit,
        memory_limit=memory_limit,
    )
    return dict(zip(names, vals, strict=True)), dims[0]


def _clip_bounds(node: onnx.NodeProto, values: dict) -> tuple[float, float]:
    a = _attrs(node)
    lo, hi = float(a.get("min", -np.inf)), float(a.get("max", np.inf))
    if len(node.input) > 1 and node.input[1]:
        lo = float(np.asarray(values[node.input[1]]).reshape(-1)[0])
    if len(node.input) > 2 and node.input[2]:
        hi = float(np.asarray(values[node.input[2]]).reshape(-1)[0])
    return lo, hi


def _fuse_plu(nodes: list, consts: set, values: dict) -> tuple[list, dict]:
    """Replace ``Add(a * u, b * Clip(u, lo, hi))`` (any operand order, ``a``/``b`` scalar
    constants or absent) by one pseudo-node ``_PLU``: the piecewise linear unit
    ``plu(u) = a u + b clip(u, lo, hi)``. Returns the new node list and the parameters
    of each pseudo-node (by output name)."""
    consumers: dict[str, list[int]] = {}
    for i, nd in enumerate(nodes):
        for t in nd.input:
            consumers.setdefault(t, []).append(i)

    def scalar(name):
        if name not in consts:
            return None
        v = np.asarray(values.get(name))
        return float(v.reshape(-1)[0]) if v.size == 1 else None

    def scaled(i, src):
        """Node i = Mul(src, c) -> (c, out); else None."""
        nd = nodes[i]
        if nd.op_type != "Mul" or src not in nd.input:
            return None
        other = [t for t in nd.input if t != src]
        c = scalar(other[0]) if len(other) == 1 else None
        return None if c is None else (c, nd.output[0])

    drop: set[int] = set()
    params: dict[str, tuple] = {}
    replace: dict[int, onnx.NodeProto] = {}
    for ci, c in enumerate(nodes):
        if c.op_type != "Clip" or not c.input:
            continue
        u = c.input[0]
        users = [i for i in consumers.get(u, []) if i != ci]
        cusers = consumers.get(c.output[0], [])
        if len(users) != 1 or len(cusers) != 1:
            continue
        if any(t and t not in consts for t in c.input[1:]):
            continue
        lin_u = scaled(users[0], u)
        lin_c = scaled(cusers[0], c.output[0])
        a, bu, ui = (lin_u[0], lin_u[1], users[0]) if lin_u else (1.0, u, None)
        b, bc, cj = (lin_c[0], lin_c[1], cusers[0]) if lin_c else (1.0, c.output[0], None)
        add_i = cusers[0] if cj is None else (consumers.get(bc) or [None])[0]
        if add_i is None or nodes[add_i].op_type != "Add" or set(nodes[add_i].input) != {bu, bc}:
            continue
        if ui is not None and consumers.get(bu) != [add_i]:
            continue
        if ui is None and users[0] != add_i:
            continue
        lo, hi = _clip_bounds(c, values)
        add = nodes[add_i]
        fused = onnx.helper.make_node("_PLU", [u], [add.output[0]], name=add.name or c.name)
        params[add.output[0]] = (a, b, lo, hi)
        drop.update(i for i in (ci, ui, cj) if i is not None)
        replace[add_i] = fused
    out = [replace.get(i, nd) for i, nd in enumerate(nodes) if i not in drop]
    return out, params


class _Builder:
    """Accumulates layers while the data path is walked."""

    def __init__(self, in_shape: tuple[int, ...]):
        self.layers: list[Layer] = []
        self.open: dict | None = None
        self.shape = in_shape  # sample shape of the current data tensor

    def open_layer(self, **kw) -> None:
        self.close(Activation("identity"))
        self.open = dict(kw, in_shape=kw.get("in_shape", self.shape))

    def close(self, act: Activation) -> None:
        if self.open is None:
            return
        o = self.open
        self.layers.append(
            Layer(
                kind=o["kind"],
                weight=o["weight"],
                bias=o.get("bias"),
                activation=act,
                in_shape=tuple(o["in_shape"]),
                out_shape=tuple(self.shape),
                strides=tuple(o.get("strides", ())),
                pads=tuple(o.get("pads", ())),
                dilations=tuple(o.get("dilations", ())),
                group=int(o.get("group", 1)),
                output_padding=tuple(o.get("output_padding", ())),
                name=o.get("name", ""),
            )
        )
        self.open = None


def read_chain(source: Any) -> LayerChain:
    """Read the layer chain ``x_{i+1} = act_i(A_i x_i + b_i)`` of a feed-forward ONNX model.

    Parameters
    ----------
    source : path, bytes, onnx.ModelProto or OnnxModel
        The model (loaded safely through :func:`refinv.onnx.model.load_onnx`).

    Returns
    -------
    LayerChain
        Layers in float64, input layer first; ``info`` holds the model label,
        the exporter (``producer_name``) and the list of skipped shape nodes.

    Raises
    ------
    UnsupportedGraphError
        For an operator outside the supported list, a skip connection (a data
        tensor consumed twice or a node with two data inputs), a transposed
        data input, a batch-norm or bias with no linear layer to fold into.
    """
    proto = getattr(source, "proto", None)
    if isinstance(proto, onnx.ModelProto):
        model, label, _ = load_onnx(proto)
        label = getattr(source, "label", label)
    else:
        model, label, _ = load_onnx(source)
    try:
        return _read_chain(model, label)
    except RefinvError:
        raise
    except Exception as exc:  # a malformed graph the walk did not anticipate
        raise UnsupportedGraphError(
            f"{label}: cannot read the layer chain: {type(exc).__name__}: {exc}"
        ) from exc


def _read_chain(model: onnx.ModelProto, label: str) -> LayerChain:
    g = model.graph
    try:
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    except Exception as exc:
        raise OnnxModelError(f"{label}: cannot read the initializers: {exc}") from exc
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        raise UnsupportedGraphError(
            f"{label}: expected one input and one output, got {len(inputs)} inputs and "
            f"{len(g.output)} outputs"
        )
    in_vi = inputs[0]
    elem = in_vi.type.tensor_type.elem_type
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
    if not in_vi.type.HasField("tensor_type") or elem not in floats:
        raise UnsupportedGraphError(
            f"{label}: expected a float16/float32/float64 tensor input, got "
            f"{in_vi.type.WhichOneof('value') or 'no type'} with element type {elem}"
        )
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
    values, batch = _probe(model, in_vi.name, in_vi, np_dtype, label)
    values.update(inits)
    in_shape = tuple(int(d) for d in values.get(in_vi.name, np.zeros(0)).shape[1:]) or tuple(
        int(d.dim_value) for d in in_vi.type.tensor_type.shape.dim[1:]
    )

    def sample_shape(name: str) -> tuple[int, ...]:
        v = values.get(name)
        if v is None:
            raise OnnxModelError(f"{label}: tensor {name!r} has no value in the probe run")
        return tuple(int(d) for d in np.shape(v)[1:])

    def const(name: str, node_lbl: str) -> np.ndarray:
        if name not in values:
            raise UnsupportedGraphError(f"{label}: {node_lbl}: input {name!r} is not a constant")
        return np.asarray(values[name], dtype=np.float64)

    kind: dict[str, str] = {in_vi.name: "data"}  # else constant; "shape" for shape-derived
    for n in inits:
        kind.setdefault(n, "const")
    consumed: dict[str, str] = {}
    current = in_vi.name
    b = _Builder(in_shape)
    skipped: list[str] = []

    consts = set(inits) | {o for nd in g.node if nd.op_type == "Constant" for o in nd.output}
    nodes, plu = _fuse_plu(list(g.node), consts, values)
    for idx, node in enumerate(nodes):
        lbl = _node_label(node, idx)
        try:
            ins = [i for i in node.input if i]
            data_ins = [i for i in ins if kind.get(i) == "data"]
            if node.op_type in _SHAPE_SOURCES:
                for o in node.output:
                    kind[o] = "shape"
                skipped.append(node.name or node.op_type)
                continue
            if not data_ins:
                k = "shape" if any(kind.get(i) == "shape" for i in ins) else "const"
                for o in node.output:
                    kind[o] = k
                skipped.append(node.name or node.op_type)
                continue
            if len(data_ins) > 1 or data_ins[0] != current or current in consumed:
                prev = consumed.get(data_ins[0]) or consumed.get(current)
                raise UnsupportedGraphError(
                    f"{label}: {lbl} is not part of a simple chain (it reads "
                    f"{', '.join(repr(i) for i in data_ins)}"
                    + (f", already consumed by {prev}" if prev else "")
                    + "): skip connections and branches are not supported by explicit-weight methods"
                )
            consumed[current] = lbl
            a = _attrs(node)
            op = node.op_type
            others = [i for i in ins if i != current]
            out = node.output[0]
            new_shape = sample_shape(out)

            if op in _PASS or op in _RESHAPES:
                if op == "Flatten" and int(a.get("axis", 1)) != 1:
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: Flatten with axis={a.get('axis')} mixes the batch axis; "
                        "expected axis=1"
                    )
                if op in _RESHAPES and sample_shape(out) and values[out].shape[0] != batch:
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: reshape changes the batch axis "
                        f"({batch} -> {values[out].shape[0]})"
                    )
                b.shape = new_shape
            elif op == "Gemm":
                if int(a.get("transA", 0)):
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: Gemm with transA=1 on the data path"
                    )
                if node.input[0] != current:
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: the data must be Gemm's first input"
                    )
                w = const(node.input[1], lbl)
                w = w if int(a.get("transB", 0)) else w.T
                w = float(a.get("alpha", 1.0)) * w
                bias = None
                if len(node.input) > 2 and node.input[2]:
                    c = const(node.input[2], lbl) * float(a.get("beta", 1.0))
                    bias = np.broadcast_to(c.reshape(-1) if c.size > 1 else c, (w.shape[0],)).copy()
                b.open_layer(kind="dense", weight=w, bias=bias, name=node.name)
                b.shape = new_shape
            elif op == "MatMul":
                if node.input[0] != current or len(b.shape) != 1:
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: MatMul must multiply a (batch, features) data tensor on the "
                        f"left by a constant matrix; got data shape {b.shape}"
                    )
                w = const(node.input[1], lbl)
                if w.ndim != 2:
                    raise UnsupportedGraphError(f"{label}: {lbl}: MatMul weight of rank {w.ndim}")
                b.open_layer(kind="dense", weight=w.T.copy(), bias=None, name=node.name)
                b.shape = new_shape
            elif op in ("Add", "Sub"):
                if b.open is None:
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: a bias {op} with no open linear layer to fold it into "
                        "(e.g. after an activation)"
                    )
                c = const(others[0], lbl)
                if op == "Sub":
                    c = -c if node.input[1] != current else None
                    if c is None:
                        raise UnsupportedGraphError(f"{label}: {lbl}: constant minus data")
                c = np.broadcast_to(c, (1, *new_shape))[0]
                o = b.open
                bias_full = c if o["kind"] == "dense" else c
                if o["kind"] == "dense":
                    add = np.asarray(bias_full).reshape(-1)
                else:  # conv: a per-channel constant
                    cb = np.asarray(bias_full)
                    per_ch = cb.reshape(cb.shape[0], -1)
                    if not np.all(per_ch == per_ch[:, :1]):
                        raise UnsupportedGraphError(
                            f"{label}: {lbl}: a non per-channel bias after a convolution"
                        )
                    add = per_ch[:, 0].copy()
                o["bias"] = add.copy() if o.get("bias") is None else o["bias"] + add
            elif op == "BatchNormalization":
                if b.open is None:
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: BatchNormalization with no preceding linear layer to fold "
                        "into (e.g. after an activation)"
                    )
                if int(a.get("training_mode", 0)):
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: BatchNormalization in training mode"
                    )
                scale, beta, mean, var = (const(i, lbl) for i in node.input[1:5])
                s = scale / np.sqrt(var + float(a.get("epsilon", 1e-5)))
                o = b.open
                w = o["weight"]
                if o["kind"] == "conv_transpose":  # weight (C_in, C_out/group, k...)
                    grp = o.get("group", 1)
                    cin, cog = w.shape[0], w.shape[1]
                    w = w.reshape(grp, cin // grp, cog, *w.shape[2:])
                    w = w * s.reshape(grp, 1, cog, *([1] * (w.ndim - 3)))
                    w = w.reshape(cin, cog, *w.shape[3:])
                else:  # dense (out, in) and conv (out, in/group, k...): scale rows
                    w = w * s.reshape(-1, *([1] * (w.ndim - 1)))
                bias = o.get("bias")
                bias = np.zeros(s.shape[0]) if bias is None else bias
                o["weight"] = w
                o["bias"] = s * (bias - mean) + beta
            elif op in _ACTIVATIONS or op in ("Clip", "_PLU"):
                if b.open is None:
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: an activation with no linear layer before it (two activations "
                        "in a row, or an activation on the input)"
                    )
                name = _ACTIVATIONS.get(op, {"Clip": "clip", "_PLU": "plu"}.get(op))
                slope = None
                if op == "LeakyRelu":
                    slope = float(a.get("alpha", 0.01))
                elif op == "PRelu":
                    slope = const(node.input[1], lbl)
                elif op == "Clip":
                    slope = _clip_bounds(node, values)
                elif op == "_PLU":
                    slope = plu[out]
                b.shape = new_shape
                b.close(Activation(name, slope))
            elif op in ("Conv", "ConvTranspose"):
                if node.input[0] != current:
                    raise UnsupportedGraphError(f"{label}: {lbl}: the data must be the first input")
                if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: auto_pad={a['auto_pad']!r}; expected explicit pads"
                    )
                w = const(node.input[1], lbl)
                nsp = w.ndim - 2
                bias = const(node.input[2], lbl) if len(node.input) > 2 and node.input[2] else None
                b.open_layer(
                    kind="conv" if op == "Conv" else "conv_transpose",
                    weight=w,
                    bias=bias,
                    strides=a.get("strides", [1] * nsp),
                    pads=a.get("pads", [0] * (2 * nsp)),
                    dilations=a.get("dilations", [1] * nsp),
                    group=a.get("group", 1),
                    output_padding=a.get("output_padding", [0] * nsp)
                    if op == "ConvTranspose"
                    else (),
                    name=node.name,
                )
                b.shape = new_shape
            else:
                raise UnsupportedGraphError(
                    f"{label}: {lbl} is not supported on the data path; supported: "
                    "Gemm, MatMul, Add, Sub, BatchNormalization, Relu, LeakyRelu, PRelu, Tanh, "
                    "Sigmoid, Clip, PLU (a*u + b*Clip(u)), Identity, Dropout, Flatten, Reshape, "
                    "Squeeze, Unsqueeze, Conv, ConvTranspose"
                )
            kind[out] = "data"
            for o in node.output[1:]:
                kind[o] = "const"  # e.g. Dropout's mask: never used on the data path
            current = out
        except RefinvError:
            raise
        except Exception as exc:  # e.g. a constant of an unexpected shape or dtype
            raise UnsupportedGraphError(
                f"{label}: {lbl}: cannot read this node: {type(exc).__name__}: {exc}"
            ) from exc

    if current != g.output[0].name:
        raise UnsupportedGraphError(
            f"{label}: the graph output {g.output[0].name!r} is not the end of the data chain "
            f"({current!r})"
        )
    b.close(Activation("identity"))
    if not b.layers:
        raise UnsupportedGraphError(f"{label}: no linear layer found on the data path")
    return LayerChain(
        layers=b.layers,
        in_shape=in_shape,
        out_shape=tuple(b.shape),
        info={
            "source": label,
            "producer": model.producer_name,
            "input": in_vi.name,
            "output": g.output[0].name,
            "dtype": str(np.dtype(np_dtype)),
            "skipped_nodes": len(skipped),
        },
    )
