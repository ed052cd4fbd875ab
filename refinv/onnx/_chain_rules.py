"""The chain reader's folding rules: one short function per ONNX operator on the data path.

Each rule folds one node of the data path into the chain being built
(:class:`~refinv.onnx._chain_builder.ChainBuilder`): a linear node opens a layer, an
activation closes it, an elementwise scale/shift or a batch normalization is folded into
the open layer (or kept pending for the next one), a layout ``Transpose``/``Expand``/``Tile``
becomes a pending gather, a reshape only changes the tensor's shape. :data:`RULES` maps each
supported ``op_type`` to its rule; an operator without one is refused by :func:`unsupported`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import onnx

from ..errors import OnnxModelError, UnsupportedGraphError
from ._chain_builder import ChainBuilder, conv_inputs, scale_out_channels
from .chain import Activation
from .loading import prod

__all__ = ["Walk", "Node", "RULES", "unsupported", "attrs", "fuse_plu"]

_ACTIVATIONS = {
    "Relu": "relu",
    "LeakyRelu": "leaky_relu",
    "PRelu": "prelu",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
}
_RESHAPES = {"Flatten", "Reshape", "Squeeze", "Unsqueeze"}
SUPPORTED = (
    "Gemm, MatMul, Add, Sub, Mul, Div, Neg (by constants), BatchNormalization, "
    "Relu, Max/Min with a scalar constant, LeakyRelu, PRelu, Tanh, Sigmoid, Clip, "
    "PLU (a*u + b*Clip(u)), Identity, Dropout, Cast (to the model's type), "
    "Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Expand, Tile (absorbed by a "
    "dense layer, or a pixel repetition), "
    "Conv, ConvTranspose, Resize (nearest, integer factors)"
)


@dataclass
class Walk:
    """What the rules read and write besides the chain: the probe's values of every tensor,
    the model's element type, opset and probe batch, the fused PLU parameters, and the end of
    the data chain (``current``)."""

    label: str
    values: dict
    batch: int
    elem: int
    opset: int
    output: str  # the graph's output name
    b: ChainBuilder
    plu: dict = field(default_factory=dict)
    current: str = ""
    batch_reshape: str = ""  # a final Reshape(-1, 1) that merges the batch axis (skl2onnx)

    def sample_shape(self, name: str) -> tuple[int, ...]:
        v = self.values.get(name)
        if v is None:
            raise OnnxModelError(f"{self.label}: tensor {name!r} has no value in the probe run")
        return tuple(int(d) for d in np.shape(v)[1:])

    def const(self, name: str, node_lbl: str) -> np.ndarray:
        if name not in self.values:
            raise UnsupportedGraphError(
                f"{self.label}: {node_lbl}: input {name!r} is not a constant"
            )
        return np.asarray(self.values[name], dtype=np.float64)


class Node(NamedTuple):
    """One data-path node as the rules see it."""

    node: Any  # onnx.NodeProto
    lbl: str  # "node NAME (op OP)", in error messages
    op: str
    a: dict  # attributes
    others: list  # its inputs other than the data tensor
    out: str
    new_shape: tuple  # the output's sample shape (from the probe)


def attrs(node: Any) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _refuse(w: Walk, n: Node, why: str) -> UnsupportedGraphError:
    return UnsupportedGraphError(f"{w.label}: {n.lbl}: {why}")


def unsupported(w: Walk, n: Node) -> None:
    raise UnsupportedGraphError(
        f"{w.label}: {n.lbl} is not supported on the data path; supported: {SUPPORTED}"
    )


# ---------------------------------------------------------------- no-ops and reshapes
def _cast(w: Walk, n: Node) -> None:
    to = int(n.a.get("to", 0))
    if to != w.elem:
        name = onnx.TensorProto.DataType.Name
        raise _refuse(
            w, n, f"Cast to element type {name(to)} on the data path; only a no-op Cast to the "
            f"model's own type ({name(w.elem)}) is supported",
        )  # fmt: skip


def _reshape(w: Walk, n: Node) -> None:
    """Identity, Dropout, Flatten, Reshape, Squeeze, Unsqueeze: the tensor's shape only."""
    b, out = w.b, n.out
    if (
        n.op == "Reshape"
        and out == w.output
        and tuple(np.shape(w.values[out])) == (w.batch * prod(b.actual), 1)
    ):  # skl2onnx's final Reshape(-1, 1): the batch axis is restored, see OnnxModel
        w.batch_reshape = n.lbl
        return
    if n.op == "Flatten" and int(n.a.get("axis", 1)) != 1:
        raise _refuse(
            w, n, f"Flatten with axis={n.a.get('axis')} mixes the batch axis; expected axis=1"
        )
    if n.op in _RESHAPES and w.sample_shape(out) and w.values[out].shape[0] != w.batch:
        raise _refuse(
            w, n, f"reshape changes the batch axis ({w.batch} -> {w.values[out].shape[0]})"
        )
    b.actual = n.new_shape
    b.follow()


# ---------------------------------------------------------------- gathers
def _transpose(w: Walk, n: Node) -> None:
    b = w.b
    perm = [int(p) for p in n.a.get("perm", range(len(b.actual), -1, -1))]
    if not perm or perm[0] != 0:
        raise _refuse(w, n, f"Transpose with perm {perm} moves the batch axis")
    cur = b.idx if b.idx is not None else np.arange(prod(b.actual))
    new_idx = cur.reshape(b.actual).transpose([p - 1 for p in perm[1:]]).reshape(-1)
    b.reorder(new_idx, n.new_shape, n.lbl)


def _expand_tile(w: Walk, n: Node) -> None:
    b, cur_v, out_v = w.b, w.values[w.current], w.values[n.out]
    reps = np.asarray(w.values[n.node.input[1]]).reshape(-1) if n.op == "Tile" else None
    if (
        np.ndim(out_v) != np.ndim(cur_v)
        or out_v.shape[0] != w.batch
        or (reps is not None and int(reps[0]) != 1)
    ):
        raise _refuse(
            w, n, f"{n.op} changes the rank or the batch axis "
            f"({np.shape(cur_v)} -> {np.shape(out_v)})",
        )  # fmt: skip
    cur = (b.idx if b.idx is not None else np.arange(prod(b.actual))).reshape(b.actual)
    if n.op == "Tile":
        new_idx = np.tile(cur, [int(r) for r in reps[1:]]).reshape(-1)
    else:
        new_idx = np.broadcast_to(cur, n.new_shape).reshape(-1)
    b.reorder(new_idx, n.new_shape, n.lbl)


# ---------------------------------------------------------------- elementwise constants
def _arith(w: Walk, n: Node) -> None:
    """Mul, Div, Add, Sub by a constant, and Neg: ``t -> s * t + c``."""
    b = w.b
    if n.new_shape != b.actual:
        raise _refuse(w, n, f"the constant broadcasts the data from {b.actual} to {n.new_shape}")
    size = prod(b.shape)
    one, zero = np.ones(size), np.zeros(size)
    if n.op == "Neg":
        return b.elementwise(-one, zero, n.lbl)
    k = b.canon(w.const(n.others[0], n.lbl), n.lbl)
    first = n.node.input[0] == w.current
    if n.op == "Mul":
        b.elementwise(k, zero, n.lbl)
    elif n.op == "Div":
        if not first:
            raise _refuse(w, n, "constant divided by data")
        b.elementwise(1.0 / k, zero, n.lbl)
    elif n.op == "Add":
        b.elementwise(one, k, n.lbl)
    else:  # Sub: data - c, or c - data
        b.elementwise(one, -k, n.lbl) if first else b.elementwise(-one, k, n.lbl)


def _batchnorm(w: Walk, n: Node) -> None:
    """Folded into the open linear layer's output channels (inference mode)."""
    b = w.b
    if b.open is None:
        raise _refuse(
            w, n, "BatchNormalization with no preceding linear layer to fold into (e.g. after "
            "an activation)",
        )  # fmt: skip
    if int(n.a.get("training_mode", 0)):
        raise _refuse(w, n, "BatchNormalization in training mode")
    b.refuse_idx(n.lbl, "a BatchNormalization")
    scale, beta, mean, var = (w.const(i, n.lbl) for i in n.node.input[1:5])
    s = scale / np.sqrt(var + float(n.a.get("epsilon", 1e-5)))
    o = b.open
    if o["kind"] == "resize":
        raise _refuse(w, n, "BatchNormalization right after a Resize")
    scale_out_channels(o, s)
    bias = o.get("bias")
    bias = np.zeros(s.shape[0]) if bias is None else bias
    o["bias"] = s * (bias - mean) + beta


# ---------------------------------------------------------------- linear layers
def _gemm(w: Walk, n: Node) -> None:
    a, node = n.a, n.node
    if int(a.get("transA", 0)):
        raise _refuse(w, n, "Gemm with transA=1 on the data path")
    if node.input[0] != w.current:
        raise _refuse(w, n, "the data must be Gemm's first input")
    wt = w.const(node.input[1], n.lbl)
    wt = wt if int(a.get("transB", 0)) else wt.T
    wt = float(a.get("alpha", 1.0)) * wt
    bias = None
    if len(node.input) > 2 and node.input[2]:
        c = w.const(node.input[2], n.lbl) * float(a.get("beta", 1.0))
        bias = np.broadcast_to(c.reshape(-1) if c.size > 1 else c, (wt.shape[0],)).copy()
    _open_dense(w, n, *w.b.dense_inputs(wt, bias))


def _matmul(w: Walk, n: Node) -> None:
    if n.node.input[0] != w.current or len(w.b.actual) != 1:
        raise _refuse(
            w, n, "MatMul must multiply a (batch, features) data tensor on the left by a "
            f"constant matrix; got data shape {w.b.actual}",
        )  # fmt: skip
    wt = w.const(n.node.input[1], n.lbl)
    if wt.ndim != 2:
        raise _refuse(w, n, f"MatMul weight of rank {wt.ndim}")
    _open_dense(w, n, *w.b.dense_inputs(wt.T.copy(), None))


def _open_dense(w: Walk, n: Node, weight: np.ndarray, bias: np.ndarray | None) -> None:
    w.b.open_layer(kind="dense", weight=weight, bias=bias, name=n.node.name)
    w.b.shape = w.b.actual = n.new_shape


def _conv(w: Walk, n: Node) -> None:
    """Conv, ConvTranspose: a convolution layer (explicit pads only)."""
    a, node, b = n.a, n.node, w.b
    if node.input[0] != w.current:
        raise _refuse(w, n, "the data must be the first input")
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise _refuse(w, n, f"auto_pad={a['auto_pad']!r}; expected explicit pads")
    b.refuse_idx(n.lbl, "a convolution")
    wt = w.const(node.input[1], n.lbl)
    if not np.isfinite(wt).all():  # onnxruntime skips padded taps; a matrix multiplies them
        raise _refuse(
            w, n, f"the kernel holds {int((~np.isfinite(wt)).sum())} NaN/Inf value(s); the layer "
            "chain would multiply them by the zero padding (NaN) where onnxruntime skips those "
            "taps, so it would not be the model's function",
        )  # fmt: skip
    nsp = wt.ndim - 2
    bias = w.const(node.input[2], n.lbl) if len(node.input) > 2 and node.input[2] else None
    conv = dict(
        kind="conv" if n.op == "Conv" else "conv_transpose",
        strides=a.get("strides", [1] * nsp),
        pads=a.get("pads", [0] * (2 * nsp)),
        dilations=a.get("dilations", [1] * nsp),
        group=a.get("group", 1),
        output_padding=a.get("output_padding", [0] * nsp) if n.op == "ConvTranspose" else (),
        name=node.name,
        out_shape=n.new_shape,
    )
    if b.pre is not None:
        wt, bias = conv_inputs(wt, bias, b, conv, n.new_shape, n.lbl)
    b.open_layer(weight=wt, bias=bias, **conv)
    b.shape = b.actual = n.new_shape


def _resize(w: Walk, n: Node) -> None:
    """Resize, Upsample: a nearest-neighbour upsampling layer (integer factors)."""
    w.b.refuse_idx(n.lbl, "a Resize")
    factors = _nearest_factors(n.a, n.op, w.opset, w.b.shape, n.new_shape, f"{w.label}: {n.lbl}")
    w.b.open_resize(factors, n.new_shape, n.node.name, n.lbl)


# ---------------------------------------------------------------- activations
def _close(w: Walk, n: Node, name: str, slope: Any = None) -> None:
    """Close the open layer with the activation ``name`` (``slope``: its parameters)."""
    b = w.b
    b.actual = n.new_shape
    b.follow()
    b.close(Activation(name, slope))
    b.follow()


def _need_layer(w: Walk, n: Node) -> None:
    """An activation needs an open layer (a pending scale/shift becomes a diagonal one)."""
    if w.b.open is None:
        w.b.flush_pre(n.lbl)
    if w.b.open is None:
        raise _refuse(
            w, n, "an activation with no linear layer before it (two activations in a row, or "
            "an activation on the input)",
        )  # fmt: skip


def _plain_activation(w: Walk, n: Node) -> None:
    """Relu, Tanh, Sigmoid."""
    _need_layer(w, n)
    _close(w, n, _ACTIVATIONS[n.op])


def _leaky_relu(w: Walk, n: Node) -> None:
    _need_layer(w, n)
    _close(w, n, "leaky_relu", float(n.a.get("alpha", 0.01)))


def _prelu(w: Walk, n: Node) -> None:
    _need_layer(w, n)
    slope = w.const(n.node.input[1], n.lbl)
    if w.b.idx is not None or slope.size > 1:
        slope = w.b.canon(slope, n.lbl).reshape(w.b.shape)
    _close(w, n, "prelu", slope)


def _clip(w: Walk, n: Node) -> None:
    _need_layer(w, n)
    bounds = clip_bounds(n.node, w.values)
    if np.isnan(bounds).any():
        raise _refuse(w, n, f"a NaN bound {bounds}: onnxruntime ignores it, refinv's clip would "
                      "make every value NaN; refused rather than read differently")  # fmt: skip
    _close(w, n, "clip", bounds)


def _plu(w: Walk, n: Node) -> None:
    """The fused piecewise linear unit ``a u + b clip(u, lo, hi)`` (:func:`fuse_plu`)."""
    _need_layer(w, n)
    _close(w, n, "plu", w.plu[n.out])


def _max_min(w: Walk, n: Node) -> None:
    """Max/Min with a scalar constant: ``Max(x, 0)`` is a ReLU, otherwise a one-sided Clip."""
    if len([i for i in n.node.input if i]) != 2:
        unsupported(w, n)
    v = np.asarray(w.values[n.others[0]]) if n.others and n.others[0] in w.values else None
    if v is None or v.size != 1:
        raise _refuse(
            w, n, f"{n.op} of the data with a non-scalar or data-dependent operand; expected a "
            "scalar constant (Max(x, 0) is a ReLU)",
        )  # fmt: skip
    c0 = float(v.reshape(-1)[0])
    if np.isnan(c0):
        raise _refuse(w, n, f"{n.op} with NaN: its result is onnxruntime's implementation")
    _need_layer(w, n)
    if n.op == "Max" and c0 == 0.0:
        return _close(w, n, "relu")
    _close(w, n, "clip", (c0, np.inf) if n.op == "Max" else (-np.inf, c0))


#: op_type -> the rule that folds it into the chain
RULES = {
    "Cast": _cast,
    **dict.fromkeys(
        ("Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze"), _reshape
    ),
    "Transpose": _transpose,
    "Expand": _expand_tile,
    "Tile": _expand_tile,
    **dict.fromkeys(("Mul", "Div", "Add", "Sub", "Neg"), _arith),
    "BatchNormalization": _batchnorm,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Conv": _conv,
    "ConvTranspose": _conv,
    "Resize": _resize,
    "Upsample": _resize,
    **dict.fromkeys(("Relu", "Tanh", "Sigmoid"), _plain_activation),
    "LeakyRelu": _leaky_relu,
    "PRelu": _prelu,
    "Clip": _clip,
    "_PLU": _plu,
    "Max": _max_min,
    "Min": _max_min,
}


# ---------------------------------------------------------------- helpers of the rules
def clip_bounds(node: onnx.NodeProto, values: dict) -> tuple[float, float]:
    a = attrs(node)
    lo, hi = float(a.get("min", -np.inf)), float(a.get("max", np.inf))
    if len(node.input) > 1 and node.input[1]:
        lo = float(np.asarray(values[node.input[1]]).reshape(-1)[0])
    if len(node.input) > 2 and node.input[2]:
        hi = float(np.asarray(values[node.input[2]]).reshape(-1)[0])
    return lo, hi


def fuse_plu(nodes: list, consts: set, values: dict) -> tuple[list, dict]:
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
        lo, hi = clip_bounds(c, values)
        if np.isnan(lo) or np.isnan(hi):
            continue  # left to the Clip rule, which refuses a NaN bound
        add = nodes[add_i]
        fused = onnx.helper.make_node("_PLU", [u], [add.output[0]], name=add.name or c.name)
        params[add.output[0]] = (a, b, lo, hi)
        drop.update(i for i in (ci, ui, cj) if i is not None)
        replace[add_i] = fused
    out = [replace.get(i, nd) for i, nd in enumerate(nodes) if i not in drop]
    return out, params


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
