"""Safe loading of untrusted ONNX files: every tensor found, every reference checked.

:func:`load_onnx` never lets onnx or onnxruntime follow an external-data reference by
itself: every tensor of the model (initializers, attribute tensors, the values and indices
of sparse tensors, tensors inside subgraphs and functions) is found, every external
reference must be a relative path that resolves inside the model's folder (no ``..``, no
absolute paths, no symlink escaping it), the data is read by us, checked against the
tensor's dims and dtype, and the model comes back with no external reference left. The
limits (bytes read, nodes, sparse tensors' dense size, control flow) are those of
:mod:`refinv.onnx.limits`; every failure of onnx or protobuf comes out as a
:class:`~refinv.errors.RefinvError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import OnnxModelError, ResourceLimitError, UnsafeModelError, UnsupportedGraphError
from ..io import is_file
from ._bounds import check_structure
from .limits import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_NODES,
    DEFAULT_MAX_SPARSE_BYTES,
    DEFAULT_MAX_TEXT_BYTES,
    resolve_limit,
)

__all__ = ["load_onnx", "ModelSource", "FLOAT_TYPES", "MIN_OPSET", "prod"]


# `onnx` (~1.5 s of CPU to import, mostly ml_dtypes) is imported on first use, so that
# `import refinv` and `refinv --help` never pay for it; the name `onnx` (and
# `external_data_helper`) below become the real modules then, and MAX_OPSET is set.
class _LazyOnnx:
    def __init__(self, attr: str | None = None) -> None:
        self._attr = attr

    def __getattr__(self, name: str) -> Any:
        mod = _import_onnx()
        return getattr(getattr(mod, self._attr) if self._attr else mod, name)


def _import_onnx() -> Any:
    import onnx as real
    from onnx import external_data_helper as edh

    g = globals()
    g["onnx"], g["external_data_helper"] = real, edh
    # Highest default-domain opset we accept: what the installed onnx package knows.
    g.setdefault("MAX_OPSET", real.defs.onnx_opset_version())
    return real


def __getattr__(name: str) -> Any:  # module attribute MAX_OPSET before onnx was imported
    if name == "MAX_OPSET":
        _import_onnx()
        return globals()["MAX_OPSET"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:  # bound at run time by _import_onnx (load_onnx touches `onnx` before it)
    MAX_OPSET: int = 0
onnx: Any = _LazyOnnx()
external_data_helper: Any = _LazyOnnx("external_data_helper")


ModelSource = Union[str, os.PathLike, bytes, "onnx.ModelProto"]  # noqa: UP007

#: onnx.TensorProto.FLOAT / DOUBLE / FLOAT16 (element-type codes fixed by the ONNX spec)
FLOAT_TYPES = {
    1: np.dtype(np.float32),
    11: np.dtype(np.float64),
    10: np.dtype(np.float16),
}
MIN_OPSET = 7

_CONTROL_FLOW = {"Loop", "Scan", "If"}
# bits per element of each tensor data type, and the typed field holding it when not raw
_BITS = {
    1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64,
    14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8,
}  # fmt: skip
_FIELD = {1: "float_data", 14: "float_data", 11: "double_data", 15: "double_data",
          7: "int64_data", 12: "uint64_data", 13: "uint64_data", 8: "string_data"}  # fmt: skip
# values per element in the typed field (complex: 2; 4-bit types: two per int32)
_PER_ELEM = {14: 2.0, 15: 2.0, 21: 0.5, 22: 0.5, 23: 0.5}


def _safe_external_path(location: str, base_dir: Path, label: str) -> Path:
    """Resolve an external-data location, refusing anything outside ``base_dir``."""
    if not location or "\x00" in location:
        raise UnsafeModelError(
            f"{label}: external data path {location!r} is empty or holds a NUL byte; expected a "
            f"file name relative to the model's folder {str(base_dir)!r}"
        )
    p = Path(location)
    if (
        p.is_absolute()
        or location.startswith(("/", "\\", "~"))
        or (len(location) > 1 and location[1] == ":")
    ):
        raise UnsafeModelError(
            f"{label}: external data path {location!r} is absolute; expected a path relative to "
            f"the model's folder {str(base_dir)!r}"
        )
    if ".." in p.parts or ".." in location.replace("\\", "/").split("/"):
        raise UnsafeModelError(
            f"{label}: external data path {location!r} contains '..'; expected a path inside "
            f"the model's folder {str(base_dir)!r}"
        )
    try:
        base = base_dir.resolve()
        full = (base / p).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise UnsafeModelError(
            f"{label}: external data path {location!r} cannot be resolved ({exc})"
        ) from exc
    if full != base and base not in full.parents:
        raise UnsafeModelError(
            f"{label}: external data path {location!r} resolves to {str(full)!r}, outside the "
            f"model's folder {str(base)!r}"
        )
    if not is_file(full, f"{label}: external data file"):
        raise UnsafeModelError(
            f"{label}: external data file {location!r} not found in the model's folder "
            f"{str(base)!r} (expected a regular file there; nothing outside it is read)"
        )
    return full


def _scan(model: onnx.ModelProto, label: str) -> tuple[list, list, list]:
    """Every TensorProto, SparseTensorProto and NodeProto anywhere in ``model``.

    Walks all fields by reflection (graphs, subgraphs of If/Loop/Scan, sparse
    tensors' values and indices, functions, training info), so no place a
    tensor can hide is missed; also refuses text fields that are not UTF-8.
    """
    tensor_d = onnx.TensorProto.DESCRIPTOR
    sparse_d = onnx.SparseTensorProto.DESCRIPTOR
    node_d = onnx.NodeProto.DESCRIPTOR
    tensors: list = []
    sparse: list = []
    nodes: list = []
    stack: list = [model]
    text_limit = resolve_limit(
        None, "REFINV_MAX_TEXT_BYTES", DEFAULT_MAX_TEXT_BYTES, "REFINV_MAX_TEXT_BYTES"
    )
    text = 0
    while stack:
        msg = stack.pop()
        d = msg.DESCRIPTOR
        if d is tensor_d:
            tensors.append(msg)
        elif d is sparse_d:
            sparse.append(msg)
        elif d is node_d:
            nodes.append(msg)
        for fd, val in msg.ListFields():
            if fd.type == fd.TYPE_MESSAGE:
                if fd.is_repeated:
                    stack.extend(val)
                else:
                    stack.append(val)
            elif fd.type == fd.TYPE_STRING:
                for v in val if fd.is_repeated else (val,):
                    if not isinstance(v, str):
                        raise OnnxModelError(
                            f"{label}: field {fd.full_name} holds {bytes(v)[:40]!r}, expected "
                            "UTF-8 text"
                        )
                    text += len(v)
            elif fd.type == fd.TYPE_BYTES and fd.name == "string_data":  # string tensors
                text += sum(len(v) for v in val)
            if text > text_limit > 0:
                raise ResourceLimitError(
                    f"{label}: more than {int(text_limit)} bytes of text (names, doc strings, "
                    f"metadata, string tensors; field {fd.full_name} reached it), which every copy "
                    "of the model repeats; raise the limit with REFINV_MAX_TEXT_BYTES (0: none)"
                )
    return tensors, sparse, nodes


def _tensor_name(t: onnx.TensorProto) -> str:
    return repr(t.name) if t.name else "(unnamed)"


def _numel(dims, label: str, what: str) -> int:
    n = 1
    for d in dims:
        if d < 0:
            raise OnnxModelError(f"{label}: {what}: expected non-negative dims, got {list(dims)}")
        n *= int(d)
    return n


def _check_tensor(t: onnx.TensorProto, label: str, max_bytes: float) -> None:
    """Refuse a tensor whose data does not match its dims and dtype."""
    what = f"tensor {_tensor_name(t)}"
    dt = t.data_type
    if dt not in _BITS and dt != onnx.TensorProto.STRING:
        names = dict((v, k) for k, v in onnx.TensorProto.DataType.items())
        raise OnnxModelError(
            f"{label}: {what}: unsupported data type {dt} ({names.get(dt, 'unknown enum value')}); "
            "expected a numeric ONNX tensor type"
        )
    if t.HasField("segment"):
        raise OnnxModelError(f"{label}: {what}: segmented tensors are not supported")
    n = _numel(t.dims, label, what)
    if dt == onnx.TensorProto.STRING:
        if t.HasField("raw_data") or len(t.string_data) != n:
            raise OnnxModelError(
                f"{label}: {what}: expected {n} strings for dims {list(t.dims)}, got "
                f"{len(t.string_data)}"
            )
        return
    nbytes = -(-n * _BITS[dt] // 8)
    if nbytes > max_bytes > 0:
        raise ResourceLimitError(
            f"{label}: {what}: dims {list(t.dims)} make {nbytes} bytes, more than the limit of "
            f"{int(max_bytes)} (max_bytes)"
        )
    if t.HasField("raw_data"):
        got = len(t.raw_data)
        if got != nbytes:
            raise OnnxModelError(
                f"{label}: {what}: dims {list(t.dims)} of "
                f"{onnx.TensorProto.DataType.Name(dt)} need {nbytes} bytes of raw data, got {got}"
            )
        return
    field = _FIELD.get(dt, "int32_data")
    want = -(-int(n * _PER_ELEM.get(dt, 1.0) * 2) // 2)  # ceil, exact for the 0.5 and 2 cases
    got = len(getattr(t, field))
    if got != want:
        raise OnnxModelError(
            f"{label}: {what}: dims {list(t.dims)} of {onnx.TensorProto.DataType.Name(dt)} need "
            f"{want} values in {field}, got {got}"
        )


def _check_sparse(s: onnx.SparseTensorProto, label: str, max_bytes: float) -> None:
    """A sparse tensor: values 1-D (nnz), indices (nnz) or (nnz, rank) in range."""
    from onnx import numpy_helper

    what = f"sparse tensor {_tensor_name(s.values)}"
    n = _numel(s.dims, label, what)
    bits = _BITS.get(s.values.data_type, 64)
    if n * bits // 8 > max_bytes > 0:
        raise ResourceLimitError(
            f"{label}: {what}: dense shape {list(s.dims)} makes {n * bits // 8} bytes, more "
            f"than the limit of {int(max_bytes)} (max_bytes)"
        )
    vals, idx = s.values, s.indices
    if len(vals.dims) != 1:
        raise OnnxModelError(f"{label}: {what}: expected 1-D values, got dims {list(vals.dims)}")
    nnz = int(vals.dims[0])
    if idx.data_type != onnx.TensorProto.INT64:
        raise OnnxModelError(f"{label}: {what}: expected int64 indices")
    rank = len(s.dims)
    if list(idx.dims) not in ([nnz], [nnz, rank]):
        raise OnnxModelError(
            f"{label}: {what}: expected indices of dims [{nnz}] or [{nnz}, {rank}], got "
            f"{list(idx.dims)}"
        )
    ind = numpy_helper.to_array(idx)
    if ind.size:
        hi = np.asarray(s.dims, dtype=np.int64) if ind.ndim == 2 else np.int64(min(n, 2**62))
        if ind.min() < 0 or np.any(ind >= hi):
            raise OnnxModelError(f"{label}: {what}: indices out of range for dims {list(s.dims)}")


def _load_external(
    t: onnx.TensorProto, base_dir: Path | None, label: str, budget: list[float]
) -> None:
    """Read an external tensor's bytes from inside ``base_dir`` into ``raw_data``."""
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    if base_dir is None:
        raise UnsafeModelError(
            f"{label}: tensor {_tensor_name(t)} references the external data file {loc!r}; load "
            "the model from its path so the file can be found (and checked) next to it"
        )
    path = _safe_external_path(loc, base_dir, label)
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise OnnxModelError(
            f"{label}: tensor {_tensor_name(t)}: external data offset/length "
            f"{info.get('offset')!r}/{info.get('length')!r} are not integers"
        ) from None
    size = path.stat().st_size
    if (
        offset < 0
        or offset > size
        or (length is not None and (length < 0 or offset + length > size))
    ):
        raise OnnxModelError(
            f"{label}: tensor {_tensor_name(t)}: external data offset {offset} and length "
            f"{length} do not fit in {loc!r} ({size} bytes)"
        )
    if length is None:
        length = size - offset
    budget[0] -= length
    if budget[0] < 0:
        raise ResourceLimitError(
            f"{label}: the model and its external data exceed the limit of {int(budget[1])} bytes "
            "read; raise it with max_bytes=... or REFINV_MAX_MODEL_BYTES"
        )
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(length)
    if len(data) != length:
        raise OnnxModelError(f"{label}: external data file {loc!r} changed while being read")
    del t.external_data[:]
    t.data_location = onnx.TensorProto.DEFAULT
    t.raw_data = data


def load_onnx(
    source: ModelSource,
    *,
    check: bool = True,
    max_bytes: float | None = None,
    allow_control_flow: bool = False,
) -> tuple[onnx.ModelProto, str, Path | None]:
    """Load and validate an ONNX model safely.

    Returns ``(model, label, base_dir)`` where ``label`` names the source in
    error messages and ``base_dir`` is the folder external data may live in.
    The returned model holds all its data inline (no external reference left).

    Parameters
    ----------
    max_bytes : float, optional
        Largest number of bytes read (the file plus its external data), checked
        before reading. Default ``REFINV_MAX_MODEL_BYTES`` or 2 GiB; 0: no limit.
    allow_control_flow : bool
        Accept Loop, Scan, If (and any node with a subgraph). Refused by default:
        a 1 KB graph with a Loop can run for ever.
    """
    limit = resolve_limit(max_bytes, "REFINV_MAX_MODEL_BYTES", DEFAULT_MAX_BYTES, "max_bytes")
    allow_control_flow = allow_control_flow or os.environ.get("REFINV_ALLOW_CONTROL_FLOW") == "1"
    budget = [limit if limit > 0 else float("inf"), limit]
    model, label, base_dir = _read_source(source, budget, limit)
    tensors, sparse, nodes = _scan(model, label)
    if isinstance(source, onnx.ModelProto):
        label = f"ModelProto({model.graph.name or 'unnamed'})"
    _inline_tensors(tensors, base_dir, label, budget, limit)
    _check_sizes(nodes, sparse, label, limit)
    check_structure(model, label)  # functions inlined, initializers: what onnxruntime builds
    if not allow_control_flow:
        _refuse_control_flow(nodes, label)
    _check_graph(model, label, check)
    return model, label, base_dir


def _read_source(
    source: ModelSource, budget: list[float], limit: float
) -> tuple[onnx.ModelProto, str, Path | None]:
    """``(model, label, base_dir)`` from a ModelProto (copied), bytes or a path, every read
    bounded by ``budget`` (``[bytes left, limit]``, decremented by what a file gave)."""
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        return model, "ModelProto", None
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = "<bytes>"
        data = bytes(source)
        if len(data) > budget[0]:
            raise ResourceLimitError(
                f"{label}: {len(data)} bytes, more than the limit of {int(limit)}; raise it "
                "with max_bytes=... or REFINV_MAX_MODEL_BYTES"
            )
        return _parse(data, label), label, None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        if not is_file(path, "model"):
            raise OnnxModelError(f"{label}: no such ONNX file")
        size = path.stat().st_size
        if size > budget[0]:
            raise ResourceLimitError(
                f"{label}: the file has {size} bytes, more than the limit of {int(limit)} read; "
                "raise it with max_bytes=... or REFINV_MAX_MODEL_BYTES"
            )
        with open(path, "rb") as fh:
            data = fh.read(size + 1)  # bounded by the size checked above
        if len(data) > size or len(data) > budget[0]:
            raise ResourceLimitError(f"{label}: the file grew while being read")
        budget[0] -= len(data)
        return _parse(data, label), label, path.parent
    raise OnnxModelError(f"expected a path, bytes or onnx.ModelProto, got {type(source).__name__}")


def _inline_tensors(
    tensors: list, base_dir: Path | None, label: str, budget: list[float], limit: float
) -> None:
    """Read every external tensor's data (from inside ``base_dir``) into the model, then check
    every tensor's data against its dims and dtype."""
    for t in tensors:
        if t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL:
            _load_external(t, base_dir, label, budget)
        elif t.external_data:
            raise OnnxModelError(
                f"{label}: tensor {_tensor_name(t)} has external data entries but is not marked "
                "external; expected one or the other"
            )
    for t in tensors:
        _check_tensor(t, label, limit)


def _check_sizes(nodes: list, sparse: list, label: str, limit: float) -> None:
    """The node count and the sparse tensors' total dense size within their limits."""
    max_nodes = resolve_limit(None, "REFINV_MAX_NODES", DEFAULT_MAX_NODES, "REFINV_MAX_NODES")
    if max_nodes > 0 and len(nodes) > max_nodes:
        raise ResourceLimitError(
            f"{label}: {len(nodes)} nodes (all graphs), more than the limit of {int(max_nodes)}; "
            "raise it with REFINV_MAX_NODES (0: no limit)"
        )
    sparse_limit = resolve_limit(
        None, "REFINV_MAX_SPARSE_BYTES", DEFAULT_MAX_SPARSE_BYTES, "REFINV_MAX_SPARSE_BYTES"
    )
    dense_total = 0
    for sp in sparse:
        _check_sparse(sp, label, limit)
        dense_total += prod(sp.dims) * _BITS.get(sp.values.data_type, 64) // 8
        if dense_total > sparse_limit > 0:
            raise ResourceLimitError(
                f"{label}: the sparse tensors make {dense_total} bytes once dense, more than the "
                f"limit of {int(sparse_limit)}; raise it with REFINV_MAX_SPARSE_BYTES (0: no limit)"
            )


def _refuse_control_flow(nodes: list, label: str) -> None:
    for node in nodes:
        if node.op_type in _CONTROL_FLOW or any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            raise UnsupportedGraphError(
                f"{label}: node {node.name or '(unnamed)'} (op {node.op_type}) is control "
                "flow (a subgraph); refused for untrusted models because a few bytes of it "
                "can run for ever. Pass allow_control_flow=True (or set "
                "REFINV_ALLOW_CONTROL_FLOW=1) if you trust the model"
            )


def _check_graph(model: onnx.ModelProto, label: str, check: bool) -> None:
    """A graph with nodes, a supported default-domain opset, and (``check``) onnx's checker."""
    if not model.graph.node:
        raise OnnxModelError(f"{label}: not an ONNX model (the graph has no nodes)")
    opsets = {o.domain: o.version for o in model.opset_import}
    default = opsets.get("", opsets.get("ai.onnx"))
    if default is None:
        raise OnnxModelError(f"{label}: the model imports no default-domain opset")
    if not MIN_OPSET <= default <= MAX_OPSET:
        raise OnnxModelError(
            f"{label}: unsupported opset {default}; expected an opset between {MIN_OPSET} and "
            f"{MAX_OPSET} (re-export the model with opset_version=17)"
        )
    if check:
        try:
            onnx.checker.check_model(model)
        except Exception as exc:  # ValidationError, and ValueError for > 2 GB protos
            raise OnnxModelError(f"{label}: invalid ONNX model: {exc}") from exc


def _parse(data: bytes, label: str) -> onnx.ModelProto:
    if not data:
        raise OnnxModelError(f"{label}: empty file, expected an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise OnnxModelError(
            f"{label}: not an ONNX model or truncated file (protobuf parse failed: {exc})"
        ) from exc
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise OnnxModelError(f"{label}: not an ONNX model (no IR version or no graph)")
    return model


def prod(dims) -> int:
    """The product of ``dims`` as a Python int (1 for no dims)."""
    n = 1
    for d in dims:
        n *= int(d)
    return n
