"""Read an explicit layer chain from a feed-forward ONNX graph.

How it works
------------
1. The model is loaded safely (:func:`refinv.onnx.loading.load_onnx`).
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
   raises :class:`~refinv.errors.UnsupportedGraphError` naming the node. Each operator
   is folded by its rule in :data:`refinv.onnx._chain_rules.RULES`.

A layer is opened by a linear node (Gemm, MatMul, Conv, ConvTranspose) and
closed by the next activation (or by the next linear node / the end of the
graph, with the identity activation). Weights are float64 NumPy arrays:
dense weights are ``(out, in)`` acting on the flattened sample.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import OnnxModelError, RefinvError, ResourceLimitError, UnsupportedGraphError
from ._bounds import check_tensor_sizes
from ._chain_builder import ChainBuilder
from ._chain_rules import RULES, Node, Walk, attrs, fuse_plu, unsupported
from .chain import Activation, LayerChain
from .layout import detect_layout, resolve_layout
from .limits import DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT, resolve_limit
from .loading import prod
from .session import open_session, run_session, session_options

__all__ = ["read_layer_chain"]

_SHAPE_SOURCES = {"Shape", "Size"}


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
    opts = session_options(None)  # one intra-op thread (onnxruntime's default: one per core)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    memory_limit = resolve_limit(
        None, "REFINV_ORT_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT, "memory_limit"
    )
    time_limit = resolve_limit(None, "REFINV_ORT_TIME_LIMIT", DEFAULT_TIME_LIMIT, "time_limit")
    nbytes = prod(dims) * np.dtype(dtype).itemsize
    if memory_limit > 0 and nbytes > memory_limit / 4:
        raise ResourceLimitError(
            f"{label}: the probe input of shape {tuple(dims)} alone needs {nbytes} bytes, more "
            f"than a quarter of the memory ceiling of {int(memory_limit)} bytes; raise it with "
            "REFINV_ORT_MEMORY_LIMIT"
        )
    # the probe keeps every intermediate tensor: sized from the graph before it runs
    check_tensor_sizes(model, input_name, dims[0], memory_limit, label, kept=True)
    try:
        data = probe.SerializeToString()
    except Exception as exc:
        raise OnnxModelError(f"{label}: cannot serialize the probe model: {exc}") from exc
    sess = open_session(
        data,
        opts,
        ["CPUExecutionProvider"],
        label=label,
        memory_limit=memory_limit,
        time_limit=time_limit,
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


def _graph_layout(graph: onnx.GraphProto, in_vi: onnx.ValueInfoProto, label: str) -> str | None:
    """The input layout :class:`~refinv.onnx.OnnxModel` would detect for this graph
    (:func:`refinv.onnx.layout.detect_layout`), so that a chain read from a path uses the same
    (N, C, H, W) coordinates as the model; ``None`` where the graph does not decide it (an
    ambiguous or non-image input: the chain then keeps the graph's own coordinates)."""
    dims = in_vi.type.tensor_type.shape.dim[1:]
    if not all(d.HasField("dim_value") for d in dims):
        return None
    try:
        found, _ = detect_layout(graph, in_vi.name, tuple(d.dim_value for d in dims), label)
    except RefinvError:
        return None
    return found


def read_layer_chain(model: onnx.ModelProto, label: str, layout: str | None = None) -> LayerChain:
    """The layer chain of a loaded, validated model (:func:`refinv.onnx.graph.read_chain`)."""
    w, start = _start(model, label, layout)
    _walk(w, start)
    return _finish(w, start, model)


class _Start:
    """What the walk starts from: the input, its dtype, its shape in the chain's coordinates,
    the channels-last gather (if any) and the tensors' kinds."""

    def __init__(self, in_vi, np_dtype, in_shape, to_nhwc, kind, nodes) -> None:
        self.in_vi, self.np_dtype, self.in_shape = in_vi, np_dtype, in_shape
        self.to_nhwc, self.kind, self.nodes = to_nhwc, kind, nodes
        self.skipped: list[str] = []


def _start(model: onnx.ModelProto, label: str, layout: str | None) -> tuple[Walk, _Start]:
    """Check the input, run the probe, and set up the walk at the graph's input."""
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
    dims = in_vi.type.tensor_type.shape.dim[1:]
    if layout in ("NHWC", "NCHW") and all(d.HasField("dim_value") for d in dims):
        # a given layout the graph contradicts is an error, as for OnnxModel(layout=...)
        resolve_layout(layout, g, in_vi.name, tuple(d.dim_value for d in dims), label)
    nhwc = (layout if layout is not None else _graph_layout(g, in_vi, label)) == "NHWC"
    elem = in_vi.type.tensor_type.elem_type
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
    if not in_vi.type.HasField("tensor_type") or elem not in floats:
        raise UnsupportedGraphError(
            f"{label}: expected a float16/float32/float64 tensor input, got "
            f"{in_vi.type.WhichOneof('value') or 'no type'} with element type {elem}"
        )
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
    opset = max([int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")] or [0])
    values, batch = _probe(model, in_vi.name, in_vi, np_dtype, label)
    values.update(inits)
    in_shape = tuple(int(d) for d in values.get(in_vi.name, np.zeros(0)).shape[1:]) or tuple(
        int(d.dim_value) for d in in_vi.type.tensor_type.shape.dim[1:]
    )
    b = ChainBuilder(in_shape, label)
    to_nhwc = None  # the gather from a canonical (C, H, W) to a channels-last (H, W, C) tensor
    if nhwc and len(in_shape) == 3:
        hh, ww, cc = in_shape
        in_shape = (cc, hh, ww)
        to_nhwc = np.arange(cc * hh * ww).reshape(in_shape).transpose(1, 2, 0).reshape(-1)
        b = ChainBuilder(in_shape, label)
        b.actual = (hh, ww, cc)
        if cc > 1:
            b.idx, b.idx_node = to_nhwc, "the channels-last input"
    kind: dict[str, str] = {in_vi.name: "data"}  # else constant; "shape" for shape-derived
    for n in inits:
        kind.setdefault(n, "const")
    consts = set(inits) | {o for nd in g.node if nd.op_type == "Constant" for o in nd.output}
    nodes, plu = fuse_plu(list(g.node), consts, values)
    w = Walk(label, values, batch, elem, opset, g.output[0].name, b, plu, current=in_vi.name)
    return w, _Start(in_vi, np_dtype, in_shape, to_nhwc, kind, nodes)


def _walk(w: Walk, s: _Start) -> None:
    """Fold every data-path node into the chain by its rule; skip shape and constant nodes."""
    consumed: dict[str, str] = {}
    kind = s.kind
    for idx, node in enumerate(s.nodes):
        lbl = _node_label(node, idx)
        try:
            ins = [i for i in node.input if i]
            data_ins = [i for i in ins if kind.get(i) == "data"]
            skip = _skipped_kind(node, ins, data_ins, kind)
            if skip is not None:
                for o in node.output:
                    kind[o] = skip
                s.skipped.append(node.name or node.op_type)
                continue
            if len(data_ins) > 1 or data_ins[0] != w.current or w.current in consumed:
                prev = consumed.get(data_ins[0]) or consumed.get(w.current)
                raise UnsupportedGraphError(
                    f"{w.label}: {lbl} is not part of a simple chain (it reads "
                    f"{', '.join(repr(i) for i in data_ins)}"
                    + (f", already consumed by {prev}" if prev else "")
                    + "): skip connections and branches are not supported by explicit-weight "
                    "methods"
                )
            consumed[w.current] = lbl
            others = [i for i in ins if i != w.current]
            out = node.output[0]
            n = Node(node, lbl, node.op_type, attrs(node), others, out, w.sample_shape(out))
            RULES.get(node.op_type, unsupported)(w, n)
            kind[out] = "data"
            for o in node.output[1:]:
                kind[o] = "const"  # e.g. Dropout's mask: never used on the data path
            w.current = out
        except RefinvError:
            raise
        except Exception as exc:  # e.g. a constant of an unexpected shape or dtype
            raise UnsupportedGraphError(
                f"{w.label}: {lbl}: cannot read this node: {type(exc).__name__}: {exc}"
            ) from exc


def _skipped_kind(node: onnx.NodeProto, ins: list, data_ins: list, kind: dict) -> str | None:
    """``"shape"`` for the outputs of Shape/Size and of what computes on shapes only,
    ``"const"`` for a node without a data input, ``None`` for a data-path node."""
    if node.op_type in _SHAPE_SOURCES:
        return "shape"
    if not data_ins:
        return "shape" if any(kind.get(i) == "shape" for i in ins) else "const"
    return None


def _finish(w: Walk, s: _Start, model: onnx.ModelProto) -> LayerChain:
    """Check that the data chain ends at the graph's output, close the last layer, and return
    the chain (a channels-last output shaped like the input comes back in (C, H, W))."""
    b, in_shape, output = w.b, s.in_shape, model.graph.output[0].name
    if w.current != output:
        raise UnsupportedGraphError(
            f"{w.label}: the graph output {output!r} is not the end of the data chain "
            f"({w.current!r})"
        )
    if s.to_nhwc is not None and b.actual == (in_shape[1], in_shape[2], in_shape[0]):
        # a channels-last output shaped like the input: the chain returns (C, H, W), as
        # OnnxModel does (the output transposed back)
        if b.idx is not None and np.array_equal(
            b.idx, np.arange(prod(b.shape)).reshape(b.shape).transpose(1, 2, 0).reshape(-1)
        ):
            b.idx, b.actual = None, b.shape
        elif b.idx is None:
            back = np.arange(prod(b.actual)).reshape(b.actual).transpose(2, 0, 1).reshape(-1)
            if np.array_equal(back, np.arange(back.size)) or b.gather_last_dense(back, in_shape):
                b.shape = b.actual = in_shape
    b.refuse_idx("the graph output", "the end of the graph")
    if w.batch_reshape:
        b.shape = b.actual
    b.flush_pre("output scale/shift")
    b.close(Activation("identity"))
    if not b.layers:
        raise UnsupportedGraphError(f"{w.label}: no linear layer found on the data path")
    info = {
        "source": w.label,
        "producer": model.producer_name,
        "input": s.in_vi.name,
        "output": output,
        "dtype": str(np.dtype(s.np_dtype)),
        "skipped_nodes": len(s.skipped),
    }
    if w.batch_reshape:
        info["output_reshape"] = (
            f"{w.batch_reshape} merges the batch axis (Reshape(-1, 1)): the chain keeps one "
            "output row per sample"
        )
    return LayerChain(layers=b.layers, in_shape=in_shape, out_shape=tuple(b.shape), info=info)
