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

import dataclasses
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import (
    ConfigError,
    OnnxModelError,
    RefinvError,
    ResourceLimitError,
    UnsupportedGraphError,
)
from .graph import Activation, Layer, LayerChain
from .model import (
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_TIME_LIMIT,
    _limit,
    _prod,
    detect_layout,
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
_MAX_DIAGONAL = 8192  # features of the largest diagonal layer kept for an unabsorbed scale


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
    """Accumulates layers while the data path is walked.

    Besides the open layer, two pending transforms describe how the current data tensor
    ``t`` relates to the *canonical* tensor ``z`` that the chain computes so far (the
    output of the last layer, or the chain's input): ``t = gather(s * z + c, idx)`` on the
    flattened sample. ``pre = (s, c)`` is an elementwise affine map (a scale or shift by a
    constant written after an activation or on the input) that the next linear layer
    absorbs; ``idx`` is a permutation of the sample's entries (a layout ``Transpose``)
    that the next dense layer absorbs into its columns. Both are ``None`` when trivial.
    """

    def __init__(self, in_shape: tuple[int, ...]):
        self.layers: list[Layer] = []
        self.open: dict | None = None
        self.shape = in_shape  # sample shape of the canonical data tensor
        self.actual = in_shape  # sample shape of the tensor in the graph (differs under idx)
        self.pre: tuple[np.ndarray, np.ndarray] | None = None
        self.idx: np.ndarray | None = None
        self.idx_node = ""  # the Transpose that made idx (named if it cannot be absorbed)

    def open_layer(self, **kw) -> None:
        self.close(Activation("identity"))
        self.open = dict(kw, in_shape=kw.get("in_shape", self.shape))

    def close(self, act: Activation) -> None:
        if self.open is None:
            return
        o = self.open
        out_shape = o["out_shape"] if o["kind"] != "dense" and "out_shape" in o else self.shape
        self.layers.append(
            Layer(
                kind=o["kind"],
                weight=o["weight"],
                bias=o.get("bias"),
                activation=act,
                in_shape=tuple(o["in_shape"]),
                out_shape=tuple(out_shape),
                strides=tuple(o.get("strides", ())),
                pads=tuple(o.get("pads", ())),
                dilations=tuple(o.get("dilations", ())),
                group=int(o.get("group", 1)),
                output_padding=tuple(o.get("output_padding", ())),
                name=o.get("name", ""),
            )
        )
        self.open = None

    def follow(self) -> None:
        """With no pending gather the canonical tensor is the graph's tensor: take its shape,
        except while a convolution or resize layer is open (its output keeps its channel
        axis, whatever reshape or size-1 transpose the graph applies to it)."""
        if self.idx is None and (self.open is None or self.open["kind"] == "dense"):
            self.shape = self.actual

    def open_diagonal(self, s: np.ndarray, c: np.ndarray, name: str) -> None:
        """Keep ``t -> s * t + c`` as a dense diagonal layer of its own (opened)."""
        n = s.size
        if n > _MAX_DIAGONAL:
            raise UnsupportedGraphError(
                f"{name}: an elementwise scale/shift that no neighbouring layer absorbs, on "
                f"{n} features (more than {_MAX_DIAGONAL} for a diagonal layer)"
            )
        self.open_layer(
            kind="dense",
            weight=np.diag(s),
            bias=None if not np.any(c) else c.copy(),
            name=name + " (diagonal)",
        )


def _per_channel(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``a`` (flat over the sample ``shape``) as one value per channel (axis 0), or None."""
    if len(shape) < 2:
        return None
    pc = np.asarray(a).reshape(shape[0], -1)
    return pc[:, 0].copy() if np.all(pc == pc[:, :1]) else None


def _scale_out_channels(o: dict, s: np.ndarray) -> None:
    """Scale the output channels (rows) of the open linear layer ``o`` by ``s``."""
    w = o["weight"]
    if o["kind"] == "conv_transpose":  # weight (C_in, C_out/group, k...)
        grp = o.get("group", 1)
        cin, cog = w.shape[0], w.shape[1]
        w = w.reshape(grp, cin // grp, cog, *w.shape[2:])
        w = w * s.reshape(grp, 1, cog, *([1] * (w.ndim - 3)))
        w = w.reshape(cin, cog, *w.shape[3:])
    else:  # dense (out, in) and conv (out, in/group, k...): scale rows
        w = w * s.reshape(-1, *([1] * (w.ndim - 1)))
    o["weight"] = w


def _conv_inputs(w, bias, b: _Builder, conv: dict, out_shape, lbl: str):
    """Absorb the pending scale/shift ``b.pre`` into the input of a convolution: a per-channel
    scale multiplies the weight's input channels, a shift adds ``conv(c)`` to the bias where
    that is constant per output channel. Anything else stays a diagonal layer of its own."""
    from ..operators.linear import from_layer

    s, c = b.pre
    sc = _per_channel(s, b.shape)
    pcc = None
    if sc is not None and w.ndim == 4 and np.any(c):
        lay = Layer(
            kind=conv["kind"],
            weight=w,
            bias=None,
            activation=Activation("identity"),
            in_shape=tuple(b.shape),
            out_shape=tuple(out_shape),
            strides=tuple(conv["strides"]),
            pads=tuple(conv["pads"]),
            dilations=tuple(conv["dilations"]),
            group=int(conv["group"]),
            output_padding=tuple(conv["output_padding"]),
        )
        contrib = np.asarray(from_layer(lay).forward(c.reshape(1, *b.shape)))[0]
        pcc = _per_channel(contrib.reshape(-1), tuple(out_shape))
    if sc is None or w.ndim != 4 or (np.any(c) and pcc is None):
        b.pre = None
        b.open_diagonal(s, c, lbl)
        return w, bias
    grp = int(conv["group"])
    if conv["kind"] == "conv":  # weight (M, C/group, kh, kw)
        m, cg = w.shape[0], w.shape[1]
        chan = (np.arange(m) // (m // grp))[:, None] * cg + np.arange(cg)[None, :]
        w = w * sc[chan][:, :, None, None]
    else:  # conv_transpose: weight (C, M/group, kh, kw)
        w = w * sc[:, None, None, None]
    if pcc is not None:
        bias = pcc if bias is None else bias + pcc
    b.pre = None
    return w, bias


def _onnx_nearest_index(n_out: int, n_in: int, scale: float, ctm: str, mode: str) -> np.ndarray:
    """The input index ONNX ``Resize`` (mode nearest) reads for each output index."""
    o = np.arange(n_out, dtype=np.float64)
    if ctm == "asymmetric":
        x = o / scale
    elif ctm in ("half_pixel", "half_pixel_symmetric"):
        x = (o + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        x = (o + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(o)
    elif ctm == "tf_half_pixel_for_nn":
        x = (o + 0.5) / scale
    elif ctm == "align_corners":
        x = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(o)
    else:
        raise ValueError(ctm)
    if mode == "round_prefer_floor":
        i = np.ceil(x - 0.5)
    elif mode == "round_prefer_ceil":
        i = np.floor(x + 0.5)
    elif mode == "floor":
        i = np.floor(x)
    elif mode == "ceil":
        i = np.ceil(x)
    else:
        raise ValueError(mode)
    return np.clip(i, 0, n_in - 1).astype(np.int64)


def _nearest_factors(a: dict, op: str, opset: int, in_shape, out_shape, where: str):
    """Integer upsampling factors of a nearest-neighbour ``Resize``/``Upsample`` that
    repeats every pixel (output pixel ``o`` reads input pixel ``o // f``); else refuse."""

    def s(v):
        return v.decode() if isinstance(v, bytes) else str(v)

    mode = s(a.get("mode", "nearest"))
    if mode != "nearest":
        raise UnsupportedGraphError(
            f"{where}: {op} with mode {mode!r}; only mode 'nearest' is a pixel-repeating "
            "upsampling (supported)"
        )
    if len(in_shape) != 3 or len(out_shape) != 3 or in_shape[0] != out_shape[0]:
        raise UnsupportedGraphError(
            f"{where}: {op} from {tuple(in_shape)} to {tuple(out_shape)}; expected a spatial "
            "upsampling (C, H, W) -> (C, fH, fW)"
        )
    legacy = op == "Upsample" or opset < 11
    ctm = s(a.get("coordinate_transformation_mode", "asymmetric" if legacy else "half_pixel"))
    nm = s(a.get("nearest_mode", "floor" if legacy else "round_prefer_floor"))
    factors = []
    for n_in, n_out in zip(in_shape[1:], out_shape[1:], strict=True):
        if n_out % n_in:
            raise UnsupportedGraphError(
                f"{where}: {op} from {tuple(in_shape)} to {tuple(out_shape)}: expected integer "
                "upsampling factors"
            )
        f = n_out // n_in
        try:
            ok = np.array_equal(
                _onnx_nearest_index(n_out, n_in, float(f), ctm, nm), np.arange(n_out) // f
            )
        except ValueError:
            ok = False
        if not ok:
            raise UnsupportedGraphError(
                f"{where}: {op} with coordinate_transformation_mode {ctm!r} and nearest_mode "
                f"{nm!r} at factor {f} does not repeat each pixel {f} times; supported: the "
                "modes that do (asymmetric/floor as PyTorch's nn.Upsample writes, half_pixel with "
                "rounding, ...)"
            )
        factors.append(f)
    return tuple(factors)


def _upsample(flat: np.ndarray, shape, factors) -> np.ndarray:
    """A flat array over the sample ``shape`` (C, H, W), each pixel repeated by ``factors``."""
    x = np.asarray(flat).reshape(shape)
    return np.repeat(np.repeat(x, factors[0], axis=1), factors[1], axis=2).reshape(-1)


def read_chain(source: Any, *, layout: str | None = None) -> LayerChain:
    """Read the layer chain ``x_{i+1} = act_i(A_i x_i + b_i)`` of a feed-forward ONNX model.

    Parameters
    ----------
    source : path, bytes, onnx.ModelProto or OnnxModel
        The model (loaded safely through :func:`refinv.onnx.model.load_onnx`).
    layout : {"NHWC", "NCHW", "flat", "graph"}, optional
        Read a channels-last model in refinv's channels-first coordinates: the chain
        takes and returns ``(N, C, H, W)`` like :class:`~refinv.onnx.OnnxModel`, the
        input/output transposes being absorbed (a leading ``Transpose`` to NCHW cancels,
        a dense layer takes the permutation into its columns). Default: the layout of an
        ``OnnxModel`` source, else the layout that ``OnnxModel`` would detect from the graph
        (so a chain read from a path and the model agree); where the graph does not decide
        it (an ambiguous input), and with ``"graph"``, the graph's own coordinates.

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
    layout = layout if layout is not None else getattr(source, "layout", None)
    if layout is not None and layout not in ("NHWC", "NCHW", "flat", "NHW", "graph"):
        raise ConfigError(
            f"layout: expected NHWC, NCHW, flat or 'graph' (the graph's own coordinates), "
            f"got {layout!r}"
        )
    try:
        return _read_chain(model, label, layout)
    except RefinvError:
        raise
    except Exception as exc:  # a malformed graph the walk did not anticipate
        raise UnsupportedGraphError(
            f"{label}: cannot read the layer chain: {type(exc).__name__}: {exc}"
        ) from exc


def _graph_layout(graph: onnx.GraphProto, in_vi: onnx.ValueInfoProto, label: str) -> str | None:
    """The input layout :class:`~refinv.onnx.OnnxModel` would detect for this graph
    (:func:`refinv.onnx.model.detect_layout`), so that a chain read from a path uses the same
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


def _read_chain(model: onnx.ModelProto, label: str, layout: str | None = None) -> LayerChain:
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
    to_nhwc = None  # the gather from a canonical (C, H, W) to a channels-last (H, W, C) tensor
    if nhwc and len(in_shape) == 3:
        hh, ww, cc = in_shape
        in_shape = (cc, hh, ww)
        to_nhwc = np.arange(cc * hh * ww).reshape(in_shape).transpose(1, 2, 0).reshape(-1)
        b = _Builder(in_shape)
        b.actual = (hh, ww, cc)
        if cc > 1:
            b.idx, b.idx_node = to_nhwc, "the channels-last input"
    skipped: list[str] = []
    batch_reshape = ""  # a final Reshape(-1, 1) that merges the batch axis (skl2onnx)

    consts = set(inits) | {o for nd in g.node if nd.op_type == "Constant" for o in nd.output}
    nodes, plu = _fuse_plu(list(g.node), consts, values)

    def canon(c: Any, lbl: str) -> np.ndarray:
        """A constant broadcast to the data tensor, as a flat array over the canonical sample."""
        flat = np.broadcast_to(np.asarray(c, dtype=np.float64), (1, *b.actual)).reshape(-1)
        if b.idx is None:
            return flat.copy()
        out = np.zeros(_prod(b.shape))
        out[b.idx] = flat
        if not np.array_equal(out[b.idx], flat):
            raise UnsupportedGraphError(
                f"{label}: {lbl}: a constant that differs between the copies of a value "
                f"replicated by {b.idx_node}"
            )
        return out

    def elementwise(s: np.ndarray, c: np.ndarray, name: str) -> None:
        """Apply ``t -> s * t + c`` (flat canonical arrays) to the data tensor."""
        o = b.open
        if o is None:  # after an activation or on the input: the next linear layer absorbs it
            if b.pre is None:
                b.pre = (s.copy(), c.copy())
            else:
                b.pre = (s * b.pre[0], s * b.pre[1] + c)
            return
        bias = o.get("bias")
        if o["kind"] == "dense":
            o["weight"] = s[:, None] * o["weight"]
            o["bias"] = c.copy() if bias is None else s * bias + c
            return
        sc, cc = _per_channel(s, b.shape), _per_channel(c, b.shape)
        if sc is not None and cc is not None and (o["kind"] != "resize" or np.all(sc == 1)):
            if o["kind"] != "resize":
                _scale_out_channels(o, sc)
            o["bias"] = cc if bias is None else sc * bias + cc
            return
        b.open_diagonal(s, c, name)

    def flush_pre(name: str) -> None:
        """Keep a pending scale/shift as a diagonal layer (nothing absorbs it)."""
        if b.pre is not None:
            s, c = b.pre
            b.pre = None
            b.open_diagonal(s, c, name)

    def open_resize(factors, new_shape, name: str, lbl: str) -> None:
        """Open a nearest-upsampling layer; a pending scale/shift is upsampled after it."""
        pre, b.pre, old = b.pre, None, b.shape
        b.open_layer(
            kind="resize",
            weight=np.zeros(0),
            bias=None,
            strides=tuple(factors),
            name=name,
            out_shape=tuple(new_shape),
        )
        b.shape = b.actual = tuple(new_shape)
        if pre is not None:  # nearest upsampling commutes with elementwise maps
            elementwise(*(_upsample(p, old, factors) for p in pre), lbl)

    def idx_to_resize(lbl: str) -> None:
        """A pending gather that repeats every pixel (jnp.repeat: Reshape/Expand/Reshape)
        becomes a nearest-upsampling layer."""
        cs, acs = b.shape, b.actual
        if len(cs) != 3 and b.open is None and b.layers:  # reshaped since: the image shape
            last = tuple(b.layers[-1].out_shape)
            cs = last if len(last) == 3 and _prod(last) == _prod(cs) else cs
        if b.idx is None or len(cs) != 3 or len(acs) != 3 or cs[0] != acs[0]:
            return
        if acs[1] % cs[1] or acs[2] % cs[2]:
            return
        f = (acs[1] // cs[1], acs[2] // cs[2])
        if np.array_equal(b.idx, _upsample(np.arange(_prod(cs)), cs, f)):
            b.idx, b.shape = None, cs
            open_resize(f, acs, b.idx_node + " (pixel repetition)", lbl)

    def refuse_idx(lbl: str, what: str) -> None:
        idx_to_resize(lbl)
        if b.idx is not None:
            raise UnsupportedGraphError(
                f"{label}: {b.idx_node} permutes or replicates the data (a layout Transpose, "
                f"an Expand) and {what} ({lbl}) cannot absorb that; only a dense layer after it "
                "(or before it, through elementwise nodes) can"
            )

    def dense_inputs(w: np.ndarray, bias: np.ndarray | None):
        """Absorb the pending gather (a permutation or a replication) and scale/shift into a
        dense weight (out, in): ``W gather(u, idx) = W' u`` with ``W'[:, j]`` the sum of the
        columns ``k`` with ``idx[k] = j``."""
        if b.idx is not None:
            wc = np.zeros((w.shape[0], _prod(b.shape)))
            np.add.at(wc, (slice(None), b.idx), w)
            w, b.idx = wc, None
            b.actual = b.shape
        if b.pre is not None:
            s, c = b.pre
            b.pre = None
            if np.any(c):
                bias = (w @ c) if bias is None else bias + w @ c
            w = w * s[None, :]
        return w, bias

    def reorder(new_idx: np.ndarray, new_shape: tuple[int, ...], lbl: str) -> None:
        """The data are now ``x[new_idx]`` of shape ``new_shape`` (a layout Transpose, an
        Expand or Tile): nothing pending if that is the identity, else absorbed by the last
        dense layer's rows where it can, else pending for the next dense layer (named)."""
        b.actual = new_shape
        if np.array_equal(new_idx, np.arange(new_idx.size)):
            b.idx = None
            b.follow()
        elif b.idx is None and gather_last_dense(new_idx, new_shape):
            b.shape = new_shape
        else:
            b.idx, b.idx_node = new_idx, lbl

    def gather_last_dense(idx: np.ndarray, new_shape: tuple[int, ...]) -> bool:
        """Push a gather (permutation, replication) back into the rows of the last dense
        layer (through its elementwise activation); True if done."""
        if b.pre is not None:
            b.pre = (b.pre[0][idx], b.pre[1][idx])
        o = b.open
        if o is not None:
            if o["kind"] != "dense":
                return False
            o["weight"] = o["weight"][idx]
            if o.get("bias") is not None:
                o["bias"] = o["bias"][idx]
            return True
        if not b.layers or b.layers[-1].kind != "dense":
            return False
        lay = b.layers[-1]
        act = lay.activation
        if act.name == "prelu" and np.size(act.slope) > 1:
            sl = np.broadcast_to(np.asarray(act.slope, np.float64), lay.out_shape).reshape(-1)
            act = Activation("prelu", sl[idx].reshape(new_shape))
        b.layers[-1] = dataclasses.replace(
            lay,
            weight=lay.weight[idx],
            bias=None if lay.bias is None else lay.bias[idx],
            activation=act,
            out_shape=tuple(new_shape),
        )
        return True

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
            if op in ("Max", "Min") and len(ins) == 2:
                v = np.asarray(values[others[0]]) if others and others[0] in values else None
                if v is None or v.size != 1:
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: {op} of the data with a non-scalar or data-dependent "
                        "operand; expected a scalar constant (Max(x, 0) is a ReLU)"
                    )
                c0 = float(v.reshape(-1)[0])
                op = "Relu" if op == "Max" and c0 == 0.0 else "Clip"
                clip = (c0, np.inf) if node.op_type == "Max" else (-np.inf, c0)

            if op == "Cast":
                to = int(a.get("to", 0))
                if to != elem:
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: Cast to element type "
                        f"{onnx.TensorProto.DataType.Name(to)} on the data path; only a no-op "
                        f"Cast to the model's own type "
                        f"({onnx.TensorProto.DataType.Name(elem)}) is supported"
                    )
            elif op == "Transpose":
                perm = [int(p) for p in a.get("perm", range(len(b.actual), -1, -1))]
                if not perm or perm[0] != 0:
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: Transpose with perm {perm} moves the batch axis"
                    )
                cur = b.idx if b.idx is not None else np.arange(_prod(b.actual))
                new_idx = cur.reshape(b.actual).transpose([p - 1 for p in perm[1:]]).reshape(-1)
                reorder(new_idx, new_shape, lbl)
            elif op in ("Expand", "Tile"):
                cur_v = values[current]
                reps = np.asarray(values[node.input[1]]).reshape(-1) if op == "Tile" else None
                if (
                    np.ndim(values[out]) != np.ndim(cur_v)
                    or values[out].shape[0] != batch
                    or (reps is not None and int(reps[0]) != 1)
                ):
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: {op} changes the rank or the batch axis "
                        f"({np.shape(cur_v)} -> {np.shape(values[out])})"
                    )
                cur = (b.idx if b.idx is not None else np.arange(_prod(b.actual))).reshape(b.actual)
                if op == "Tile":
                    new_idx = np.tile(cur, [int(r) for r in reps[1:]]).reshape(-1)
                else:
                    new_idx = np.broadcast_to(cur, new_shape).reshape(-1)
                reorder(new_idx, new_shape, lbl)
            elif (
                op == "Reshape"
                and out == g.output[0].name
                and tuple(np.shape(values[out])) == (batch * _prod(b.actual), 1)
            ):  # skl2onnx's final Reshape(-1, 1): the batch axis is restored, see OnnxModel
                batch_reshape = lbl
            elif op in _PASS or op in _RESHAPES:
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
                b.actual = new_shape
                b.follow()
            elif op in ("Mul", "Div", "Add", "Sub", "Neg"):
                if new_shape != b.actual:
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: the constant broadcasts the data from {b.actual} to "
                        f"{new_shape}"
                    )
                n = _prod(b.shape)
                one, zero = np.ones(n), np.zeros(n)
                if op == "Neg":
                    elementwise(-one, zero, lbl)
                else:
                    k = canon(const(others[0], lbl), lbl)
                    first = node.input[0] == current
                    if op == "Mul":
                        elementwise(k, zero, lbl)
                    elif op == "Div":
                        if not first:
                            raise UnsupportedGraphError(f"{label}: {lbl}: constant divided by data")
                        elementwise(1.0 / k, zero, lbl)
                    elif op == "Add":
                        elementwise(one, k, lbl)
                    else:  # Sub: data - c, or c - data
                        elementwise(one, -k, lbl) if first else elementwise(-one, k, lbl)
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
                w, bias = dense_inputs(w, bias)
                b.open_layer(kind="dense", weight=w, bias=bias, name=node.name)
                b.shape = b.actual = new_shape
            elif op == "MatMul":
                if node.input[0] != current or len(b.actual) != 1:
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: MatMul must multiply a (batch, features) data tensor on the "
                        f"left by a constant matrix; got data shape {b.actual}"
                    )
                w = const(node.input[1], lbl)
                if w.ndim != 2:
                    raise UnsupportedGraphError(f"{label}: {lbl}: MatMul weight of rank {w.ndim}")
                w, bias = dense_inputs(w.T.copy(), None)
                b.open_layer(kind="dense", weight=w, bias=bias, name=node.name)
                b.shape = b.actual = new_shape
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
                refuse_idx(lbl, "a BatchNormalization")
                scale, beta, mean, var = (const(i, lbl) for i in node.input[1:5])
                s = scale / np.sqrt(var + float(a.get("epsilon", 1e-5)))
                o = b.open
                if o["kind"] == "resize":
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: BatchNormalization right after a Resize"
                    )
                _scale_out_channels(o, s)
                bias = o.get("bias")
                bias = np.zeros(s.shape[0]) if bias is None else bias
                o["bias"] = s * (bias - mean) + beta
            elif op in _ACTIVATIONS or op in ("Clip", "_PLU"):
                if b.open is None:
                    flush_pre(lbl)
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
                    if b.idx is not None or slope.size > 1:
                        slope = canon(slope, lbl).reshape(b.shape)
                elif op == "Clip":
                    slope = clip if node.op_type in ("Max", "Min") else _clip_bounds(node, values)
                elif op == "_PLU":
                    slope = plu[out]
                b.actual = new_shape
                b.follow()
                b.close(Activation(name, slope))
                b.follow()
            elif op in ("Conv", "ConvTranspose"):
                if node.input[0] != current:
                    raise UnsupportedGraphError(f"{label}: {lbl}: the data must be the first input")
                if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                    raise UnsupportedGraphError(
                        f"{label}: {lbl}: auto_pad={a['auto_pad']!r}; expected explicit pads"
                    )
                refuse_idx(lbl, "a convolution")
                w = const(node.input[1], lbl)
                nsp = w.ndim - 2
                bias = const(node.input[2], lbl) if len(node.input) > 2 and node.input[2] else None
                conv = dict(
                    kind="conv" if op == "Conv" else "conv_transpose",
                    strides=a.get("strides", [1] * nsp),
                    pads=a.get("pads", [0] * (2 * nsp)),
                    dilations=a.get("dilations", [1] * nsp),
                    group=a.get("group", 1),
                    output_padding=a.get("output_padding", [0] * nsp)
                    if op == "ConvTranspose"
                    else (),
                    name=node.name,
                    out_shape=new_shape,
                )
                if b.pre is not None:
                    w, bias = _conv_inputs(w, bias, b, conv, new_shape, lbl)
                b.open_layer(weight=w, bias=bias, **conv)
                b.shape = b.actual = new_shape
            elif op in ("Resize", "Upsample"):
                refuse_idx(lbl, "a Resize")
                factors = _nearest_factors(a, op, opset, b.shape, new_shape, f"{label}: {lbl}")
                open_resize(factors, new_shape, node.name, lbl)
            else:
                raise UnsupportedGraphError(
                    f"{label}: {lbl} is not supported on the data path; supported: "
                    "Gemm, MatMul, Add, Sub, Mul, Div, Neg (by constants), BatchNormalization, "
                    "Relu, Max/Min with a scalar constant, LeakyRelu, PRelu, Tanh, Sigmoid, Clip, "
                    "PLU (a*u + b*Clip(u)), Identity, Dropout, Cast (to the model's type), "
                    "Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Expand, Tile (absorbed by a "
                    "dense layer, or a pixel repetition), "
                    "Conv, ConvTranspose, Resize (nearest, integer factors)"
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
    if to_nhwc is not None and b.actual == (in_shape[1], in_shape[2], in_shape[0]):
        # a channels-last output shaped like the input: the chain returns (C, H, W), as
        # OnnxModel does (the output transposed back)
        if b.idx is not None and np.array_equal(
            b.idx, np.arange(_prod(b.shape)).reshape(b.shape).transpose(1, 2, 0).reshape(-1)
        ):
            b.idx, b.actual = None, b.shape
        elif b.idx is None:
            back = np.arange(_prod(b.actual)).reshape(b.actual).transpose(2, 0, 1).reshape(-1)
            if np.array_equal(back, np.arange(back.size)) or gather_last_dense(back, in_shape):
                b.shape = b.actual = in_shape
    refuse_idx("the graph output", "the end of the graph")
    if batch_reshape:
        b.shape = b.actual
    flush_pre("output scale/shift")
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
            **(
                {
                    "output_reshape": f"{batch_reshape} merges the batch axis (Reshape(-1, 1)): "
                    "the chain keeps one output row per sample"
                }
                if batch_reshape
                else {}
            ),
        },
    )
