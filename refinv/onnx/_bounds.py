"""What a few bytes of ONNX can make onnxruntime build, counted before onnxruntime sees them.

The node cap of :mod:`refinv.onnx.limits` counts the nodes a file holds; onnxruntime builds
more than that when it creates a session, and refinv counts it first:

* **model-local functions** are inlined at session creation, each call replaced by the
  function's body: a chain of functions that each call the previous one twice is ``2 d + 1``
  nodes in the file and ``2^d`` once inlined (:func:`inlined_node_count`, linear in the file);
* **initializers** cost session creation about quadratically in their number
  (:func:`initializer_count`, capped by ``REFINV_MAX_INITIALIZERS``);
* **tensor sizes** that the graph fixes (a ``ConstantOfShape``, ``Expand``, ``Tile`` or
  ``Range`` of constant arguments; any shape onnx's shape inference can work out with data
  propagation) are computed for the probe batch before it runs
  (:func:`check_tensor_sizes`): one tensor over a quarter of the memory ceiling is refused
  before anything is allocated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import OnnxModelError, ResourceLimitError
from .limits import DEFAULT_MAX_INITIALIZERS, DEFAULT_MAX_NODES, resolve_limit

__all__ = ["inlined_node_count", "initializer_count", "check_structure", "check_tensor_sizes"]

_GRAPH, _GRAPHS = 5, 10  # onnx.AttributeProto.GRAPH / GRAPHS


def _subgraphs(node: Any) -> list:
    out = []
    for a in node.attribute:
        if a.type == _GRAPH:
            out.append(a.g)
        elif a.type == _GRAPHS:
            out.extend(a.graphs)
    return out


def inlined_node_count(model: Any, label: str) -> int:
    """The nodes of the main graph (subgraphs included) once every call of a model-local
    function is replaced by its body, recursively: what onnxruntime builds. Linear in the file
    (each function's size is computed once); a function that calls itself, directly or not,
    is an :class:`~refinv.errors.OnnxModelError`."""
    funcs = {(f.domain, f.name, getattr(f, "overload", "")): f for f in model.functions}
    size: dict[tuple, int] = {}

    def key(n: Any) -> tuple:
        return (n.domain, n.op_type, getattr(n, "overload", ""))

    def calls(nodes: Any) -> list[tuple]:
        """The local functions called by ``nodes`` and their subgraphs."""
        out, stack = [], list(nodes)
        while stack:
            n = stack.pop()
            if key(n) in funcs:
                out.append(key(n))
            for g in _subgraphs(n):
                stack.extend(g.node)
        return out

    def nodes_size(nodes: Any) -> int:
        total, stack = 0, list(nodes)
        while stack:
            n = stack.pop()
            total += size[key(n)] if key(n) in funcs else 1
            for g in _subgraphs(n):
                stack.extend(g.node)
        return total

    # each function's size after its callees' (iterative depth-first order, cycles refused)
    state: dict[tuple, int] = {}  # 1: on the stack, 2: done
    for root in funcs:
        if state.get(root) == 2:
            continue
        stack = [(root, iter(calls(funcs[root].node)))]
        state[root] = 1
        while stack:
            k, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                size[k] = nodes_size(funcs[k].node)
                state[k] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                raise OnnxModelError(
                    f"{label}: the model-local function {nxt[1]!r} (domain {nxt[0]!r}) calls "
                    "itself, directly or through others; onnxruntime would inline it for ever"
                )
            elif state.get(nxt) != 2:
                state[nxt] = 1
                stack.append((nxt, iter(calls(funcs[nxt].node))))
    return nodes_size(model.graph.node)


def initializer_count(model: Any) -> int:
    """Initializers (dense and sparse) of the main graph and of every subgraph."""
    total, stack = 0, [model.graph]
    for f in model.functions:
        stack.extend(g for n in f.node for g in _subgraphs(n))
    while stack:
        g = stack.pop()
        total += len(g.initializer) + len(g.sparse_initializer)
        stack.extend(sg for n in g.node for sg in _subgraphs(n))
    return total


def check_structure(model: Any, label: str) -> None:
    """The node cap on the inlined graph and the initializer cap, before onnxruntime."""
    max_nodes = resolve_limit(None, "REFINV_MAX_NODES", DEFAULT_MAX_NODES, "REFINV_MAX_NODES")
    if model.functions and max_nodes > 0:
        n = inlined_node_count(model, label)
        if n > max_nodes:
            raise ResourceLimitError(
                f"{label}: {n} nodes once its model-local functions are inlined (as onnxruntime "
                f"does when it creates a session), more than the limit of {int(max_nodes)}; "
                "raise it with REFINV_MAX_NODES (0: no limit)"
            )
    max_inits = resolve_limit(
        None, "REFINV_MAX_INITIALIZERS", DEFAULT_MAX_INITIALIZERS, "REFINV_MAX_INITIALIZERS"
    )
    if max_inits > 0:
        n = initializer_count(model)
        if n > max_inits:
            raise ResourceLimitError(
                f"{label}: {n} initializers, more than the limit of {int(max_inits)} (session "
                "creation grows about quadratically with them); raise it with "
                "REFINV_MAX_INITIALIZERS (0: no limit)"
            )


def check_tensor_sizes(
    model: Any, input_name: str, batch: int, memory_limit: float, label: str, *, kept: bool = False
) -> None:
    """Refuse, before onnxruntime allocates anything, a tensor the graph fixes at more than a
    quarter of the memory ceiling for a batch of ``batch`` samples (with ``kept``, every
    intermediate tensor is kept, as by the chain reader's probe: their sum must fit the
    ceiling too). Shapes come from onnx's shape inference with data propagation on a copy of
    the graph whose batch axis is ``batch``; tensors it cannot size are left to the arena."""
    import onnx
    from onnx import shape_inference

    if memory_limit <= 0:
        return
    m = onnx.ModelProto()  # the graph without its weights' data: shapes only need dims
    m.ir_version = model.ir_version
    m.opset_import.extend(model.opset_import)
    m.functions.extend(model.functions)
    m.graph.CopyFrom(_light_graph(model.graph))
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name == input_name and len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    try:
        inferred = shape_inference.infer_shapes(m, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort; the arena stays the backstop
        return
    total, quarter = 0, memory_limit / 4
    for vi in [*inferred.graph.value_info, *inferred.graph.output]:
        nbytes = _static_bytes(vi)
        if nbytes is None:
            continue
        total += nbytes
        if nbytes > quarter:
            raise ResourceLimitError(
                f"{label}: tensor {vi.name!r} would take {nbytes} bytes for a batch of {batch} "
                f"(shape {_dims(vi)}), more than a quarter of the memory ceiling of "
                f"{int(memory_limit)} bytes; refused before running (raise the ceiling with "
                "memory_limit=... or REFINV_ORT_MEMORY_LIMIT)"
            )
    if kept and total > memory_limit:
        raise ResourceLimitError(
            f"{label}: the intermediate tensors of a batch of {batch} would take {total} bytes "
            f"together, more than the memory ceiling of {int(memory_limit)} bytes (the chain "
            "reader keeps them all); raise it with REFINV_ORT_MEMORY_LIMIT"
        )


def _light_graph(src: Any) -> Any:
    """``src`` with its float initializers of more than 64 values replaced by their
    declaration (a graph input of the same type and dims): shape inference needs their dims,
    not their data; small and integer ones (shapes, axes) keep their values."""
    import onnx

    dst = onnx.GraphProto()
    dst.name = src.name
    dst.node.extend(src.node)
    dst.input.extend(src.input)
    dst.output.extend(src.output)
    dst.value_info.extend(src.value_info)
    dst.sparse_initializer.extend(src.sparse_initializer)
    declared = {i.name for i in src.input}
    for t in src.initializer:
        n = int(np.prod(t.dims, dtype=np.int64)) if len(t.dims) else 1
        if n <= 64 or t.data_type in (6, 7, 12, 13):  # small, or int32/int64/uint32/uint64
            dst.initializer.append(t)
        elif t.name not in declared:
            dst.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return dst


def _static_bytes(vi: Any) -> int | None:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
        return None
    n = 1
    for d in tt.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 0:
            return None
        n *= int(d.dim_value)
    bits = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32,
            13: 64, 14: 64, 15: 128, 16: 16}.get(tt.elem_type)  # fmt: skip
    return None if bits is None else n * bits // 8


def _dims(vi: Any) -> tuple:
    return tuple(int(d.dim_value) for d in vi.type.tensor_type.shape.dim)
