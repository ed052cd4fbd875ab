"""ONNX models as black-box functions on array-API batches.

:class:`OnnxModel` loads a model from a path, bytes or an ``onnx.ModelProto``,
validates it (``onnx.checker``, exactly one floating input and one output, a
fixed sample shape), opens an onnxruntime ``InferenceSession`` with explicit
providers, and is then called like a function on a batch
``(batch, *sample_shape)`` of any array-API array, returning the same array
type.

Security: ONNX files are untrusted input (the security model is in the
documentation's "Security model" page). :func:`load_onnx` never lets onnx or
onnxruntime follow an external-data reference by itself: every tensor of the
model (initializers, attribute tensors, the values and indices of sparse
tensors, tensors inside subgraphs and functions) is found, every external
reference must be a relative path that resolves inside the model's folder (no
``..``, no absolute paths, no symlink escaping it), the data is read by us,
checked against the tensor's dims and dtype, and the session is built from the
in-memory model in which no external reference is left. Resource limits
(file size, control flow, memory ceiling, time per call) are described in
:class:`OnnxModel`; every failure of onnx, protobuf or onnxruntime comes out
as a :class:`~refinv.errors.RefinvError`.

Telemetry: onnxruntime's telemetry events are disabled when refinv opens its
first session; set ``REFINV_ORT_TELEMETRY=1`` to leave them on.

Behaviour on NaN input: the forward pass does not scan its input (it is the
inner loop of every solver); NaN/Inf propagate through the network. Solvers
validate their own inputs once, at entry.

dtype policy: the model's input dtype (usually float32) is what onnxruntime
gets. A float64 batch given to a float32 model is cast at this boundary and
the output is cast back to float64, so float64 solvers work with float32
models (the network itself then computes in float32). The model's output
must have the same floating dtype as its input: a float16-input model that
returns float32 (or any model returning an integer or bool tensor) is refused
at load, by the probe run.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..backend import is_cupy, is_numpy, namespace, to_numpy
from ..errors import (
    BackendError,
    ConfigError,
    DTypeError,
    OnnxModelError,
    ResourceLimitError,
    ShapeError,
    UnsafeModelError,
    UnsupportedGraphError,
)

__all__ = ["OnnxModel", "load_onnx", "ModelSource", "LAYOUTS", "detect_layout", "parse_image_shape"]

log = logging.getLogger("refinv.onnx")


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

# onnx.TensorProto.FLOAT / DOUBLE / FLOAT16 (element-type codes fixed by the ONNX spec)
_FLOAT_TYPES = {
    1: np.dtype(np.float32),
    11: np.dtype(np.float64),
    10: np.dtype(np.float16),
}
MIN_OPSET = 7


# ---------------------------------------------------------------- limits
GiB = 2**30
#: Largest model read (file plus external data), bytes; ``max_bytes=``/``REFINV_MAX_MODEL_BYTES``.
DEFAULT_MAX_BYTES = 2 * GiB
#: Wall-time limit of one onnxruntime call, seconds; ``time_limit=``/``REFINV_ORT_TIME_LIMIT``.
DEFAULT_TIME_LIMIT = 600.0
#: onnxruntime arena ceiling per session, bytes; ``memory_limit=``/``REFINV_ORT_MEMORY_LIMIT``.
DEFAULT_MEMORY_LIMIT = 4 * GiB
#: Most nodes in all graphs of a model (subgraphs, functions); ``REFINV_MAX_NODES``.
DEFAULT_MAX_NODES = 5000
#: Largest total dense size of the sparse tensors, bytes; ``REFINV_MAX_SPARSE_BYTES``.
DEFAULT_MAX_SPARSE_BYTES = 256 * 2**20

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


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if not v >= 0:
        raise ConfigError(f"{name}: expected a non-negative number, got {raw!r}")
    return v


def _limit(value: float | None, env: str, default: float, what: str) -> float:
    """An explicit limit, else the environment's, else the default; 0 means no limit."""
    v = _env_number(env, default) if value is None else value
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: expected a non-negative number, got {value!r}") from None
    if not v >= 0:
        raise ConfigError(f"{what}: expected a non-negative number, got {value!r}")
    return v


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
    if not full.is_file():
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
    limit = _limit(max_bytes, "REFINV_MAX_MODEL_BYTES", DEFAULT_MAX_BYTES, "max_bytes")
    allow_control_flow = allow_control_flow or os.environ.get("REFINV_ALLOW_CONTROL_FLOW") == "1"
    budget = [limit if limit > 0 else float("inf"), limit]
    base_dir: Path | None = None
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        label = "ModelProto"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label = "<bytes>"
        data = bytes(source)
        if len(data) > budget[0]:
            raise ResourceLimitError(
                f"{label}: {len(data)} bytes, more than the limit of {int(limit)}; raise it "
                "with max_bytes=... or REFINV_MAX_MODEL_BYTES"
            )
        model = _parse(data, label)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        if not path.is_file():
            raise OnnxModelError(f"{label}: no such ONNX file")
        base_dir = path.parent
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
        model = _parse(data, label)
    else:
        raise OnnxModelError(
            f"expected a path, bytes or onnx.ModelProto, got {type(source).__name__}"
        )

    tensors, sparse, nodes = _scan(model, label)
    if isinstance(source, onnx.ModelProto):
        label = f"ModelProto({model.graph.name or 'unnamed'})"
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
    max_nodes = _limit(None, "REFINV_MAX_NODES", DEFAULT_MAX_NODES, "REFINV_MAX_NODES")
    if max_nodes > 0 and len(nodes) > max_nodes:
        raise ResourceLimitError(
            f"{label}: {len(nodes)} nodes (all graphs), more than the limit of {int(max_nodes)}; "
            "raise it with REFINV_MAX_NODES (0: no limit)"
        )
    sparse_limit = _limit(
        None, "REFINV_MAX_SPARSE_BYTES", DEFAULT_MAX_SPARSE_BYTES, "REFINV_MAX_SPARSE_BYTES"
    )
    dense_total = 0
    for sp in sparse:
        _check_sparse(sp, label, limit)
        dense_total += _prod(sp.dims) * _BITS.get(sp.values.data_type, 64) // 8
        if dense_total > sparse_limit > 0:
            raise ResourceLimitError(
                f"{label}: the sparse tensors make {dense_total} bytes once dense, more than the "
                f"limit of {int(sparse_limit)}; raise it with REFINV_MAX_SPARSE_BYTES (0: no limit)"
            )
    if not allow_control_flow:
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
    return model, label, base_dir


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


# ------------------------------------------------------ onnxruntime boundary
_SESSION_LOCK = threading.Lock()
_TELEMETRY_DONE = False


def _telemetry(ort: Any) -> None:
    """Disable onnxruntime telemetry once, unless ``REFINV_ORT_TELEMETRY=1``."""
    global _TELEMETRY_DONE
    if _TELEMETRY_DONE:
        return
    _TELEMETRY_DONE = True
    try:
        if os.environ.get("REFINV_ORT_TELEMETRY", "") == "1":
            ort.enable_telemetry_events()
        else:
            ort.disable_telemetry_events()
    except Exception:  # older or minimal builds without the switch
        log.debug("onnxruntime has no telemetry switch")


def open_session(
    model_bytes: bytes,
    so: Any,
    providers: list[Any],
    *,
    label: str,
    memory_limit: float,
) -> Any:
    """An onnxruntime session for an already validated, inline model.

    Forces the ONNX format (never onnxruntime's own format), disables constant
    folding (it evaluates constant subgraphs at creation, outside every limit)
    and, with ``memory_limit > 0``, gives the session its own CPU arena capped
    at ``memory_limit`` bytes (onnxruntime's environment allocator: registered
    anew right before the session is created, under a lock).
    """
    import onnxruntime as ort

    so.add_session_config_entry("session.load_model_format", "ONNX")
    with _SESSION_LOCK:
        _telemetry(ort)
        if memory_limit > 0:
            so.add_session_config_entry("session.use_env_allocators", "1")
            mem = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            # max_mem, extend strategy 1 (kSameAsRequested: no power-of-two overshoot)
            ort.create_and_register_allocator(mem, ort.OrtArenaCfg(int(memory_limit), 1, -1, -1))
        try:
            return ort.InferenceSession(
                model_bytes,
                sess_options=so,
                providers=providers,
                disabled_optimizers=["ConstantFolding"],
            )
        except Exception as exc:
            raise OnnxModelError(
                f"{label}: onnxruntime could not load the model: {_ort_message(exc)}"
            ) from exc


def _ort_message(exc: BaseException) -> str:
    msg = str(exc).strip()
    m = re.search(r"running (\S+) node\. Name:'([^']*)' Status Message: (.*)", msg, re.S)
    if m:
        return f"node {m.group(2) or '(unnamed)'} (op {m.group(1)}): {m.group(3).strip()}"
    return msg


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


class _Watchdog:
    """One daemon thread that sets ``RunOptions.terminate`` on calls past their deadline.

    Registering a call is a dict insertion (atomic under the GIL, no lock on the
    hot path); the thread looks at the running calls every ``interval`` seconds
    (at most a quarter of the shortest limit seen, at most 1 s).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, tuple[float, Any]] = {}
        self._fired: set[int] = set()
        self._ids = itertools.count(1)
        self._interval = 1.0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, run_options: Any, seconds: float) -> int:
        tok = next(self._ids)
        self._active[tok] = (time.monotonic() + seconds, run_options)
        if self._thread is None or seconds < 4 * self._interval:
            with self._lock:
                self._interval = min(self._interval, max(seconds / 4, 0.005))
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._loop, name="refinv-ort-watchdog", daemon=True
                    )
                    self._thread.start()
            self._wake.set()
        return tok

    def stop(self, tok: int) -> bool:
        """Forget a call; True if it was stopped for running too long."""
        self._active.pop(tok, None)
        if tok in self._fired:
            self._fired.discard(tok)
            return True
        return False

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            now = time.monotonic()
            for tok, (deadline, ro) in list(self._active.items()):
                if deadline <= now and tok in self._active:
                    self._fired.add(tok)
                    ro.terminate = True


_WATCHDOG = _Watchdog()


def run_session(
    session: Any,
    outputs: list[str] | None,
    feeds: dict[str, Any] | None,
    *,
    label: str,
    time_limit: float,
    memory_limit: float,
    iobinding: Any = None,
) -> Any:
    """``session.run`` with a wall-time limit; every failure becomes a RefinvError."""
    ro = _ort().RunOptions()
    ro.log_severity_level = 4  # the error comes back in the exception; nothing on stderr
    tok = _WATCHDOG.start(ro, time_limit) if time_limit > 0 else None
    try:
        if iobinding is not None:
            session.run_with_iobinding(iobinding, ro)
            return None
        # the C++ session's run: the Python wrapper's per-call input checks cost ~10% at batch 1
        if outputs is None:
            return session.run(None, feeds, ro)
        return getattr(session, "_sess", session).run(outputs, feeds, ro)
    except Exception as exc:
        fired = tok is not None and _WATCHDOG.stop(tok)
        tok = None
        if fired:
            raise ResourceLimitError(
                f"{label}: one onnxruntime call ran longer than the time limit of "
                f"{time_limit:g} s and was stopped; raise it with OnnxModel(..., time_limit=...) "
                "or REFINV_ORT_TIME_LIMIT (seconds, 0: no limit)"
            ) from exc
        msg = _ort_message(exc)
        if "Available memory of" in msg or "Failed to allocate memory" in msg:
            raise ResourceLimitError(
                f"{label}: the model needs more memory than the ceiling of {int(memory_limit)} "
                f"bytes ({msg}); raise it with OnnxModel(..., memory_limit=...) or "
                "REFINV_ORT_MEMORY_LIMIT (bytes, 0: no limit), or use a smaller batch_size"
            ) from exc
        shapes = {k: tuple(getattr(v, "shape", ())) for k, v in (feeds or {}).items()}
        raise OnnxModelError(
            f"{label}: onnxruntime failed on input {shapes or '(bound buffers)'}: {msg}"
        ) from exc
    finally:
        if tok is not None:
            _WATCHDOG.stop(tok)


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    out: list[int | str | None] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


# ------------------------------------------------------------------ layouts
#: The layouts a model input can have (``OnnxModel(layout=...)``, ``--layout``).
LAYOUTS = ("NCHW", "NHWC", "flat")
_CHANNELS = (1, 3)  # channel counts the declared-shape rules recognize (grey, RGB)
_PERM_NHWC_TO_NCHW = [0, 3, 1, 2]
_PERM_NCHW_TO_NHWC = [0, 2, 3, 1]
_LAYOUT_HINT = (
    "choose it with OnnxModel(..., layout='NCHW'|'NHWC') or the CLI's --layout NCHW|NHWC "
    "(NCHW: (batch, channels, height, width); NHWC: (batch, height, width, channels))"
)


def _input_transpose_perm(graph: Any, input_name: str) -> list[int] | None:
    """The ``perm`` of the Transpose that is the only consumer of the graph input, if any."""
    users = [n for n in graph.node if input_name in n.input]
    if len(users) != 1 or users[0].op_type != "Transpose":
        return None
    for a in users[0].attribute:
        if a.name == "perm":
            return [int(v) for v in a.ints]
    return None


def detect_layout(
    graph: Any, input_name: str, sample_dims: tuple[int, ...], label: str
) -> tuple[str | None, str]:
    """``(layout, how)`` of a model input from its graph: ``how`` says what decided it.

    Rules (only where unambiguous):

    * a 2-D input ``(batch, D)`` is ``"flat"``; a 3-D input ``(batch, H, W)`` is ``"NHW"``
      (images without a channel axis); other ranks but 4 have no layout (``None``);
    * a 4-D input whose only consumer is a ``Transpose`` with ``perm=[0, 3, 1, 2]`` (what
      tf2onnx and Keras write for a channels-last model) is ``"NHWC"``; one with
      ``perm=[0, 2, 3, 1]`` (a channels-first input to a channels-last graph) is ``"NCHW"``;
    * otherwise from the declared ``(batch, a, b, c)``: ``"NCHW"`` when ``a`` is 1 or 3 and
      neither ``b`` nor ``c`` is; ``"NHWC"`` when ``c`` is 1 or 3 and neither ``a`` nor ``b``
      is. Anything else (``(N, 3, 3, 3)``, ``(N, 1, 28, 1)``, ``(N, 2, 7, 5)``, ...) is
      ambiguous and raises :class:`~refinv.errors.OnnxModelError` saying how to choose.
    """
    rank = len(sample_dims)
    if rank == 1:
        return "flat", "declared 2-D input (batch, D)"
    if rank == 2:
        return "NHW", "declared 3-D input (batch, H, W)"
    if rank != 3:
        return None, f"declared {rank + 1}-D input: no image layout"
    perm = _input_transpose_perm(graph, input_name)
    if perm == _PERM_NHWC_TO_NCHW:
        return "NHWC", "the input feeds a Transpose perm=[0, 3, 1, 2] (channels-last input)"
    if perm == _PERM_NCHW_TO_NHWC:
        return "NCHW", "the input feeds a Transpose perm=[0, 2, 3, 1] (channels-first input)"
    a, b, c = sample_dims
    if a in _CHANNELS and b not in _CHANNELS and c not in _CHANNELS:
        return "NCHW", f"declared input (batch, {a}, {b}, {c}): channels first, C = {a}"
    if c in _CHANNELS and a not in _CHANNELS and b not in _CHANNELS:
        return "NHWC", f"declared input (batch, {a}, {b}, {c}): channels last, C = {c}"
    raise OnnxModelError(
        f"{label}: cannot tell the layout of the input (batch, {a}, {b}, {c}) from the graph: "
        f"channels-first ({a} channels of {b}x{c}) and channels-last ({c} channels of {a}x{b}) "
        f"both fit (refinv decides only when exactly one of the axes 1 and 3 is 1 or 3, or the "
        f"input feeds a layout Transpose); {_LAYOUT_HINT}"
    )


def parse_image_shape(value: Any, what: str = "image_shape") -> tuple[int, int, int]:
    """``(C, H, W)`` from ``(C, H, W)``, ``(H, W)`` (one channel) or text ``CxHxW`` / ``HxW``."""
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(
                f"{what}: expected CxHxW or HxW (e.g. 1x28x28), got {value!r}"
            ) from None
    else:
        try:
            dims = [int(d) for d in value]
        except (TypeError, ValueError):
            raise ConfigError(f"{what}: expected (C, H, W) or (H, W), got {value!r}") from None
    if len(dims) == 2:
        dims = [1, *dims]
    if len(dims) != 3 or any(d < 1 for d in dims):
        raise ConfigError(f"{what}: expected (C, H, W) or (H, W) of positive sizes, got {value!r}")
    return (dims[0], dims[1], dims[2])


def _batch_axis_error(where: str, nb: int, got: tuple[int, ...]) -> OnnxModelError:
    return OnnxModelError(
        f"{where}: expected the output's leading axis to be the batch axis (size {nb}, one output "
        f"sample per input sample), got an output of shape {got}. refinv needs axis 0 of the "
        "output to be the batch axis: re-export the model with a dynamic batch axis on input "
        "and output (e.g. torch.onnx.export(..., dynamic_axes={'x': {0: 'batch'}, 'y': {0: "
        "'batch'}})) and without a final Reshape/Flatten that merges the batch axis into "
        "another (the one pattern refinv repairs is a trailing Reshape(-1, 1), as skl2onnx "
        "writes: an output (batch * D, 1))"
    )


@dataclass
class OrtStats:
    """How much work went to onnxruntime (informational; reset with :meth:`reset`)."""

    calls: int = 0
    samples: int = 0
    seconds: float = 0.0

    def reset(self) -> None:
        self.calls = 0
        self.samples = 0
        self.seconds = 0.0


# The one command that swaps the CPU runtime for the GPU one (docs/gpu.md).
GPU_INSTALL = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu>=1.18'"


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cuda_provider_missing(available: list[str]) -> str:
    """Why ``provider='cuda'`` cannot work with this onnxruntime, and the exact fix.

    ``onnxruntime`` (CPU) and ``onnxruntime-gpu`` are two distributions that write
    one ``onnxruntime/`` package folder: with both installed, whichever was
    installed last owns the shared files, and typically only the CPU providers load.
    """
    cpu, gpu = _dist_version("onnxruntime"), _dist_version("onnxruntime-gpu")
    if cpu and gpu:
        return (
            f"provider='cuda': both onnxruntime {cpu} (CPU) and onnxruntime-gpu {gpu} are "
            "installed; they share one 'onnxruntime' package folder and the CPU build's files "
            f"are the ones loaded (providers {available}). Fix: {GPU_INSTALL}"
        )
    if gpu:
        return (
            f"provider='cuda': onnxruntime-gpu {gpu} is installed but reports no "
            f"CUDAExecutionProvider (providers {available}); reinstall it: {GPU_INSTALL}"
        )
    return (
        "provider='cuda' needs onnxruntime-gpu instead of the CPU onnxruntime"
        f"{f' {cpu}' if cpu else ''} (providers {available}). Fix: {GPU_INSTALL}"
    )


class OnnxModel:
    """An ONNX network as a function on batches.

    Parameters
    ----------
    source : path, bytes or onnx.ModelProto
        The model. Paths may use external data inside their own folder only.
    provider : {"cpu", "cuda"}
        onnxruntime execution provider. ``"cuda"`` requires an onnxruntime build
        with the CUDA provider (``onnxruntime-gpu``) and raises
        :class:`~refinv.errors.BackendError` otherwise.
    batch_size : int, optional
        Largest batch sent to onnxruntime in one call; larger inputs are split
        into chunks. Default: no splitting for dynamic-batch models.
    intra_op_threads : int, optional
        onnxruntime's intra-op thread count (default ``None``: 1 thread; ``0``:
        onnxruntime's own default, one spinning thread per physical core).
    device_id : int
        CUDA device for the CUDA provider.
    max_bytes : float, optional
        Largest model read (file plus external data), checked before reading.
        Default: ``REFINV_MAX_MODEL_BYTES`` or 2 GiB; 0: no limit.
    allow_control_flow : bool
        Accept graphs with Loop, Scan or If (any subgraph). Default: refused
        (or ``REFINV_ALLOW_CONTROL_FLOW=1``), since a tiny Loop can run for ever.
    time_limit : float, optional
        Wall-time limit of one onnxruntime call in seconds (a stuck call is
        stopped through ``RunOptions.terminate`` between two operators and
        raises :class:`~refinv.errors.ResourceLimitError`). Default:
        ``REFINV_ORT_TIME_LIMIT`` or 600; 0: no limit.
    memory_limit : float, optional
        Ceiling of the session's CPU memory arena in bytes (weights and
        activations; an allocation beyond it fails at once with
        :class:`~refinv.errors.ResourceLimitError`); with ``provider="cuda"``
        also the CUDA arena's ``gpu_mem_limit``. Default:
        ``REFINV_ORT_MEMORY_LIMIT`` or 4 GiB; 0: onnxruntime's own arena, no
        ceiling.
    layout : {"NCHW", "NHWC", "flat"}, optional
        The layout of the model's input. Default ``None``: detected from the
        graph where unambiguous (:func:`detect_layout`: a leading ``Transpose``
        with ``perm=[0, 3, 1, 2]`` means NHWC; a declared ``(N, C, H, W)`` with
        ``C`` 1 or 3 and ``H``, ``W`` not, NCHW; ``(N, H, W, C)`` likewise, NHWC;
        ``(N, D)``, flat); an ambiguous input such as ``(N, 3, 3, 3)`` raises
        :class:`~refinv.errors.OnnxModelError` asking for ``layout=``.
    image_shape : tuple or str, optional
        Flat models ``(N, D)``: the image shape ``(C, H, W)`` (or ``(H, W)``,
        or ``"1x28x28"``) of a sample, ``C * H * W == D``
        (:meth:`set_image_shape`).

    Notes
    -----
    Layouts: refinv's arrays are always ``(N, C, H, W)`` (``sample_shape``), whatever
    the layout; the model converts at the onnxruntime boundary, so masks,
    solvers, metrics and figures never see the layout. An NHWC model gets
    the batch **transposed** to ``(N, H, W, C)`` (never reshaped) and its
    output, when shaped like its input, transposed back; a flat model with an
    image shape gets ``x.reshape(N, D)`` (row-major over ``(C, H, W)``) and its
    output reshaped back. Masks therefore stay per pixel over the channel
    axis wherever the graph has it (the mask the NHWC graph sees is the NCHW
    mask transposed), and the same weights give the same results in every
    layout. ``onnx_sample_shape`` is the graph's own sample shape,
    ``layout_source`` says how the layout was decided and
    :meth:`layout_info` is what the CLI records in its JSON.

    Batch axis: the probe at load runs a batch of 2 and a batch of 3 (or the
    fixed batch) and requires a leading output axis of the same size. The
    one pattern repaired is skl2onnx's trailing ``Reshape(-1, 1)`` (an output
    ``(batch * D, 1)``): it is read as ``(batch, D)`` (``batch_axis_restored``,
    logged as a warning) once each sample's values are checked to be the
    same in both probe batches; any other mismatch raises
    :class:`~refinv.errors.OnnxModelError` naming the batch axis and the fix.

    Verification at load: the model is run on probe batches (2 and 3 samples,
    or the fixed batch) and the computed output is compared with the declared
    output (shape, dtype), with the input batch and with the input's dtype;
    any mismatch raises :class:`~refinv.errors.OnnxModelError`. Every later
    call checks the output's shape and dtype again (a data-dependent shape
    is refused, not passed on).

    Examples
    --------
    >>> f = OnnxModel("models/digits_mlp_lrelu.onnx")   # doctest: +SKIP
    >>> f.sample_shape, f.dtype                          # doctest: +SKIP
    ((1, 8, 8), dtype('float32'))
    >>> z = f(x)   # x: (batch, 1, 8, 8), NumPy/CuPy/array-api-strict  # doctest: +SKIP
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        provider: str = "cpu",
        batch_size: int | None = None,
        intra_op_threads: int | None = None,
        device_id: int = 0,
        max_bytes: float | None = None,
        allow_control_flow: bool = False,
        time_limit: float | None = None,
        memory_limit: float | None = None,
        layout: str | None = None,
        image_shape: Any = None,
    ) -> None:
        import onnxruntime as ort

        self.time_limit = _limit(
            time_limit, "REFINV_ORT_TIME_LIMIT", DEFAULT_TIME_LIMIT, "time_limit"
        )
        self.memory_limit = _limit(
            memory_limit, "REFINV_ORT_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT, "memory_limit"
        )
        self.proto, self.label, self.base_dir = load_onnx(
            source, max_bytes=max_bytes, allow_control_flow=allow_control_flow
        )
        try:
            self._bytes = self.proto.SerializeToString()
        except Exception as exc:  # > 2 GB once the external data are inline
            raise ResourceLimitError(f"{self.label}: cannot serialize the model: {exc}") from exc
        self.sha256 = hashlib.sha256(self._bytes).hexdigest()
        self.stats = OrtStats()

        init_names = {i.name for i in self.proto.graph.initializer}
        inputs = [i for i in self.proto.graph.input if i.name not in init_names]
        outputs = list(self.proto.graph.output)
        if len(inputs) != 1 or len(outputs) != 1:
            raise OnnxModelError(
                f"{self.label}: expected exactly one input and one output, got "
                f"{len(inputs)} inputs {[i.name for i in inputs]} and {len(outputs)} outputs "
                f"{[o.name for o in outputs]}"
            )
        inp, out = inputs[0], outputs[0]
        elem = inp.type.tensor_type.elem_type
        if not inp.type.HasField("tensor_type") or elem not in _FLOAT_TYPES:
            kind = inp.type.WhichOneof("value") or "no type"
            name = dict((v, k) for k, v in onnx.TensorProto.DataType.items()).get(elem, elem)
            raise OnnxModelError(
                f"{self.label}: expected a floating-point input tensor (float32/float64/float16), "
                f"got {kind if kind != 'tensor_type' else name}"
            )
        if not out.type.HasField("tensor_type"):
            raise OnnxModelError(
                f"{self.label}: expected a tensor output, got "
                f"{out.type.WhichOneof('value') or 'no type'}"
            )
        self.dtype: np.dtype = _FLOAT_TYPES[elem]
        self.input_name = inp.name
        self.output_name = out.name
        dims = _dims(inp)
        if len(dims) < 2:
            raise OnnxModelError(
                f"{self.label}: expected an input of shape (batch, *sample_shape), got declared "
                f"shape {dims}"
            )
        if not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            raise OnnxModelError(
                f"{self.label}: expected fixed sample dimensions after the batch axis, got "
                f"declared input shape {dims}"
            )
        #: the sample shape the ONNX graph takes (its declared input, batch axis dropped)
        self.onnx_sample_shape: tuple[int, ...] = tuple(int(d) for d in dims[1:])  # type: ignore[arg-type]
        self._resolve_layout(layout, inp.name)
        #: the sample shape refinv's arrays have: (C, H, W) for image models whatever the layout
        self.sample_shape: tuple[int, ...] = self.onnx_sample_shape
        self.image_shape: tuple[int, int, int] | None = None
        if self.layout == "NHWC":
            h, w, c = self.onnx_sample_shape
            self.sample_shape = self.image_shape = (c, h, w)
        elif self.layout == "NCHW":
            self.image_shape = self.onnx_sample_shape  # type: ignore[assignment]
        self.batch_axis_restored = False
        self._restore_k = 0
        self.fixed_batch: int | None = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        odims = _dims(out)
        self._declared_out = (
            tuple(int(d) for d in odims[1:])  # type: ignore[arg-type]
            if len(odims) >= 2 and all(isinstance(d, int) and d > 0 for d in odims[1:])
            else None
        )
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size: expected a positive integer, got {batch_size}")
        self.batch_size = batch_size

        provider = provider.lower()
        available = ort.get_available_providers()
        if provider == "cpu":
            providers: list[Any] = ["CPUExecutionProvider"]
        elif provider == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BackendError(cuda_provider_missing(available))
            cuda_opts: dict[str, Any] = {"device_id": device_id}
            if self.memory_limit > 0:
                cuda_opts["gpu_mem_limit"] = int(self.memory_limit)
            providers = [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
        else:
            raise ConfigError(f"provider: expected 'cpu' or 'cuda', got {provider!r}")
        self.provider = provider
        self.device_id = device_id
        so = ort.SessionOptions()
        # default ONE intra-op thread (never slower than onnxruntime's spinning pool on a loaded
        # machine; docs/benchmarks.md "time to verdict"); 0 = onnxruntime's own default
        so.intra_op_num_threads = 1 if intra_op_threads is None else int(intra_op_threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = open_session(
            self._bytes, so, providers, label=self.label, memory_limit=self.memory_limit
        )
        if provider == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            raise BackendError(
                f"{self.label}: provider='cuda': onnxruntime-gpu could not start its CUDA "
                "provider (no usable GPU, or the CUDA 12 / cuDNN 9 libraries it needs are "
                f"not found) and fell back to {self.session.get_providers()}"
            )
        self._out_shape: tuple[int, ...] | None = None
        self._out_shape = self._probe(out)
        if image_shape is not None:
            self.set_image_shape(image_shape)

    # ---------------------------------------------------------------- layout
    def _resolve_layout(self, layout: str | None, input_name: str) -> None:
        """Set ``layout`` and ``layout_source`` from ``layout=`` or the graph (detect_layout)."""
        native = self.onnx_sample_shape
        if layout is None:
            self.layout, self.layout_source = detect_layout(
                self.proto.graph, input_name, native, self.label
            )
            if self.layout is not None:
                log.info("%s: input layout %s (%s)", self.label, self.layout, self.layout_source)
            return
        names = {v.lower(): v for v in (*LAYOUTS, "NHW")}
        if not isinstance(layout, str) or layout.lower() not in names:
            raise ConfigError(
                f"layout: expected one of {', '.join(LAYOUTS)} or None, got {layout!r}"
            )
        layout = names[layout.lower()]
        need = {"NCHW": 3, "NHWC": 3, "flat": 1, "NHW": 2}[layout]
        if len(native) != need:
            raise ConfigError(
                f"{self.label}: layout={layout!r} needs a {need + 1}-D input, the model declares "
                f"(batch, {', '.join(map(str, native))})"
            )
        self.layout, self.layout_source = layout, "given (layout=)"

    def set_image_shape(self, image_shape: Any) -> None:
        """Give a flat model ``(batch, D)`` the image shape ``(C, H, W)`` (or ``(H, W)``) of its
        samples: refinv's arrays are then ``(batch, C, H, W)`` and are flattened row-major
        (``x.reshape(batch, D)``) at the boundary, so every mask family works. ``D`` must be
        ``C * H * W``. On an image model the shape must be its own ``(C, H, W)``."""
        shape = parse_image_shape(image_shape)
        if self.layout != "flat":
            if self.image_shape is not None and tuple(self.image_shape) == shape:
                return
            raise ConfigError(
                f"{self.label}: image_shape {shape} given for a {self.layout or 'non-image'} "
                f"model whose samples are {self.sample_shape}; image_shape is for flat models "
                "(batch, D)"
            )
        (d,) = self.onnx_sample_shape
        if _prod(shape) != d:
            raise ConfigError(
                f"{self.label}: image_shape {'x'.join(map(str, shape))} has {_prod(shape)} pixel "
                f"values, the flat model takes D = {d} per sample (input (batch, {d})); expected "
                f"C * H * W == {d}"
            )
        self.image_shape = shape
        self.sample_shape = shape

    def layout_info(self) -> dict:
        """What the model's layout is and how refinv maps its arrays to the graph (for JSON)."""
        return {
            "layout": self.layout,
            "layout_source": self.layout_source,
            "onnx_sample_shape": list(self.onnx_sample_shape),
            "sample_shape": list(self.sample_shape),
            "image_shape": None if self.image_shape is None else list(self.image_shape),
            "batch_axis_restored": self.batch_axis_restored,
        }

    def _to_native(self, x: Any) -> Any:
        """refinv's ``(batch, *sample_shape)`` -> the graph's input layout (contiguous)."""
        if self.layout == "NHWC":
            t = x.transpose(0, 2, 3, 1)
            if is_numpy(x):
                return np.ascontiguousarray(t)
            import cupy as cp

            return cp.ascontiguousarray(t)
        if self.layout == "flat" and self.image_shape is not None:
            return x.reshape((x.shape[0], *self.onnx_sample_shape))
        return x

    def _from_native(self, y: Any) -> Any:
        """The graph's output -> refinv's layout (only for outputs shaped like the input)."""
        converted = self.layout == "NHWC" or (
            self.layout == "flat" and self.image_shape is not None
        )
        if not converted or self._out_shape != self.onnx_sample_shape:
            return y
        if self.layout == "NHWC":
            t = y.transpose(0, 3, 1, 2)
            if is_numpy(y):
                return np.ascontiguousarray(t)
            import cupy as cp

            return cp.ascontiguousarray(t)
        return y.reshape((y.shape[0], *self.sample_shape))

    # ------------------------------------------------------------------ info
    def __repr__(self) -> str:
        return (
            f"OnnxModel({self.label!r}, sample_shape={self.sample_shape}, layout={self.layout!r}, "
            f"dtype={self.dtype}, provider={self.provider!r})"
        )

    def _probe(self, out: onnx.ValueInfoProto) -> tuple[int, ...]:
        """Run the model on small batches; refuse outputs that do not match what it declares,
        its input batch or its input dtype. Returns the output sample shape (in the graph's
        layout).

        Batch axis: a batch of 2 (or the fixed batch) and, for a dynamic batch, a batch of 3
        must come back with a leading axis of the same size. The one exception repaired is
        skl2onnx's trailing ``Reshape(-1, 1)``: outputs ``(2 * D, 1)`` and ``(3 * D, 1)`` are
        reshaped to ``(batch, D)`` (``batch_axis_restored``), after checking that each
        sample's ``D`` values are the same in both batches."""
        native = self.onnx_sample_shape
        nb = self.fixed_batch or 2
        sizes = [nb] if self.fixed_batch else [2, 3]
        nbytes = max(sizes) * _prod(native) * self.dtype.itemsize
        budget = self.memory_limit / 4 if self.memory_limit > 0 else float("inf")
        if nbytes > budget:
            raise ResourceLimitError(
                f"{self.label}: the probe batch of shape {(nb, *native)} alone needs "
                f"{nbytes} bytes, more than a quarter of the memory ceiling of "
                f"{int(self.memory_limit)} bytes; raise it with memory_limit=... or "
                "REFINV_ORT_MEMORY_LIMIT"
            )
        # deterministic values in [0, 1): image-like, and not all equal; the batch of 3 is the
        # batch of 2 plus its first sample again
        x = np.resize((np.arange(97) * 0.618034 % 1.0).astype(self.dtype), nb * _prod(native))
        x = x.reshape(nb, *native)
        batches = [x] if self.fixed_batch else [x, np.concatenate([x, x[:1]])]
        ys = [self._run_np(batches[0])]
        if len(batches) == 2:
            try:
                ys.append(self._run_np(batches[1]))
            except ResourceLimitError:
                raise
            except OnnxModelError as exc:
                raise OnnxModelError(
                    f"{self.label}: the model runs on a batch of 2 but not on a batch of 3 (the "
                    "input's batch axis is declared dynamic, but the graph fixes a batch size, "
                    "e.g. a Reshape to the batch it was traced with); re-export it with a "
                    f"dynamic batch axis, or declare the fixed batch in its input: {exc}"
                ) from exc
        self.stats.reset()
        where = f"{self.label}: probe run on a batch of shape {(nb, *native)}"
        for y in ys:
            if not isinstance(y, np.ndarray):
                raise OnnxModelError(f"{where}: expected a tensor output, got {type(y).__name__}")
            if y.dtype.kind != "f":
                raise OnnxModelError(
                    f"{where}: expected a floating-point output, got dtype {y.dtype}"
                )
            if y.dtype != self.dtype:
                raise OnnxModelError(
                    f"{where}: expected the output in the input's dtype {self.dtype}, got "
                    f"{y.dtype} (refinv does not mix dtypes between a model's input and output)"
                )
        y = ys[0]
        declared_elem = out.type.tensor_type.elem_type
        if declared_elem and _FLOAT_TYPES.get(declared_elem) != y.dtype:
            name = dict((v, k) for k, v in onnx.TensorProto.DataType.items()).get(declared_elem)
            raise OnnxModelError(
                f"{where}: the graph declares output dtype {name or declared_elem} but computes "
                f"{y.dtype}"
            )
        odims = _dims(out)
        if out.type.tensor_type.HasField("shape"):
            declared = [
                y.shape[0] if i == 0 and not isinstance(d, int) else d for i, d in enumerate(odims)
            ]
            if len(odims) != y.ndim or any(
                isinstance(d, int) and d != c for d, c in zip(declared, y.shape, strict=True)
            ):
                raise OnnxModelError(
                    f"{where}: the graph declares output shape {odims} but computes {y.shape}"
                )
        if 0 in y.shape or y.ndim < 1:
            raise OnnxModelError(
                f"{where}: expected an output of shape ({nb}, *sample_shape), got {y.shape}"
            )
        if all(
            b.shape[0] == yb.shape[0] and yb.ndim >= 2 for b, yb in zip(batches, ys, strict=True)
        ):
            if len(ys) == 2 and ys[1].shape[1:] != y.shape[1:]:
                raise OnnxModelError(
                    f"{where}: the output sample shape depends on the batch size: {y.shape[1:]} "
                    f"for a batch of {nb}, {ys[1].shape[1:]} for a batch of 3"
                )
            return tuple(int(d) for d in y.shape[1:])
        # skl2onnx's Reshape(-1, 1): (batch * D, 1)
        k = y.shape[0] // nb
        if not (
            y.ndim == 2
            and y.shape[1] == 1
            and k > 1
            and y.shape[0] == nb * k
            and all(yb.shape == (b.shape[0] * k, 1) for b, yb in zip(batches, ys, strict=True))
        ):
            b, yb = next(
                (b, yb)
                for b, yb in zip(batches, ys, strict=True)
                if yb.ndim < 2 or yb.shape[0] != b.shape[0]
            )
            raise _batch_axis_error(
                f"{self.label}: probe run on a batch of shape {b.shape}", b.shape[0], yb.shape
            )
        rows = [yb.reshape(b.shape[0], k) for b, yb in zip(batches, ys, strict=True)]
        if len(rows) == 2:
            ref = np.concatenate([rows[0], rows[0][:1]]).astype(np.float64)
            if not np.allclose(rows[1], ref, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(ref).max())):
                raise _batch_axis_error(where, nb, y.shape)
        self.batch_axis_restored = True
        self._restore_k = k
        log.warning(
            "%s: the model returns (batch * %d, 1) (a trailing Reshape(-1, 1), as skl2onnx "
            "writes); refinv restores the batch axis: outputs are read as (batch, %d)",
            self.label,
            k,
            k,
        )
        return (k,)

    @property
    def output_sample_shape(self) -> tuple[int, ...]:
        """Shape of one output sample (computed by the probe run at load, checked against the
        declared one)."""
        assert self._out_shape is not None
        if self._out_shape == self.onnx_sample_shape:
            return self.sample_shape  # the same layout conversion as the input
        return self._out_shape

    @property
    def is_autoencoder(self) -> bool:
        return self.output_sample_shape == self.sample_shape

    def initializers(self) -> dict[str, np.ndarray]:
        """The model's initializers (weights) as read-only NumPy arrays."""
        from onnx import numpy_helper

        try:
            return {i.name: numpy_helper.to_array(i) for i in self.proto.graph.initializer}
        except Exception as exc:
            raise OnnxModelError(f"{self.label}: cannot read the initializers: {exc}") from exc

    # --------------------------------------------------------------- calling
    def _run_np(self, x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        (y,) = run_session(
            self.session,
            [self.output_name],
            {self.input_name: x},
            label=self.label,
            time_limit=self.time_limit,
            memory_limit=self.memory_limit,
        )
        if self.batch_axis_restored and y.shape == (x.shape[0] * self._restore_k, 1):
            y = y.reshape(x.shape[0], self._restore_k)
        if self._out_shape is not None and (
            y.dtype != self.dtype or y.shape[1:] != self._out_shape or y.shape[0] != x.shape[0]
        ):
            raise OnnxModelError(
                f"{self.label}: on a batch of shape {x.shape} the model returned "
                f"{getattr(y, 'shape', None)} {getattr(y, 'dtype', type(y).__name__)}; expected "
                f"{(x.shape[0], *self._out_shape)} {self.dtype} (as in the probe run at load)"
            )
        self.stats.seconds += time.perf_counter() - t0
        self.stats.calls += 1
        self.stats.samples += x.shape[0]
        return y

    def _chunks(self, n: int) -> list[tuple[int, int]]:
        step = self.fixed_batch or self.batch_size or n
        return [(s, min(s + step, n)) for s in range(0, n, step)] or [(0, 0)]

    def _forward_numpy(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if self.fixed_batch is None and (self.batch_size is None or n <= self.batch_size) and n:
            return self._run_np(x)  # one call (the common case: no splitting to plan)
        if n == 0:
            return np.zeros((0, *self._out_shape), dtype=self.dtype)  # type: ignore[misc]
        chunks = self._chunks(n)
        if len(chunks) == 1 and self.fixed_batch in (None, n):
            return self._run_np(x)
        out = None
        for s, e in chunks:
            part = x[s:e]
            if self.fixed_batch is not None and e - s < self.fixed_batch:
                pad = np.zeros(
                    (self.fixed_batch - (e - s), *self.onnx_sample_shape), dtype=self.dtype
                )
                part = np.concatenate([part, pad])
            y = self._run_np(np.ascontiguousarray(part))[: e - s]
            if out is None:
                out = np.empty((n, *y.shape[1:]), dtype=y.dtype)
            out[s:e] = y
        return out

    def _forward_cupy(self, x: Any) -> Any:
        import cupy as cp

        if self.provider != "cuda":
            raise BackendError(
                f"{self.label}: got a CuPy array but the session runs on the CPU provider; open "
                "the model with provider='cuda' or move the data to the host explicitly "
                "(refinv.backend.to_numpy)"
            )
        n = x.shape[0]
        out = cp.empty((n, *self._out_shape), dtype=self.dtype)  # type: ignore[misc]
        for s, e in self._chunks(n):
            part = cp.ascontiguousarray(x[s:e])
            o = out[s:e]
            if self.batch_axis_restored:  # the graph writes (m * D, 1): a view of the same rows
                o = o.reshape((e - s) * self._restore_k, 1)
            io = self.session.io_binding()
            io.bind_input(
                self.input_name,
                "cuda",
                self.device_id,
                self.dtype,
                tuple(part.shape),
                part.data.ptr,
            )
            io.bind_output(
                self.output_name, "cuda", self.device_id, self.dtype, tuple(o.shape), o.data.ptr
            )
            t0 = time.perf_counter()
            run_session(
                self.session,
                None,
                None,
                label=self.label,
                time_limit=self.time_limit,
                memory_limit=self.memory_limit,
                iobinding=io,
            )
            self.stats.seconds += time.perf_counter() - t0
            self.stats.calls += 1
            self.stats.samples += e - s
        return out

    def __call__(self, x: Any) -> Any:
        """Run the network on a batch ``(batch, *sample_shape)``; same array type out.

        ``sample_shape`` is refinv's layout (``(C, H, W)`` for image models, also channels-last
        and flat ones given an image shape): the batch is transposed (NHWC) or flattened
        (flat) to the graph's input here, and an output shaped like the input comes back in
        refinv's layout."""
        if (
            type(x) is np.ndarray
            and x.dtype == self.dtype
            and x.shape[1:] == self.sample_shape
            and x.flags.c_contiguous
        ):  # fast path: the solvers' inner loop on NumPy
            return self._from_native(self._forward_numpy(self._to_native(x)))
        xp = namespace(x)
        if tuple(x.shape[1:]) != self.sample_shape or x.ndim != len(self.sample_shape) + 1:
            raise ShapeError(
                f"{self.label}: expected input of shape (batch, "
                f"{', '.join(map(str, self.sample_shape))}), got {tuple(x.shape)}"
            )
        in_dtype = x.dtype
        floats = [getattr(xp, n) for n in ("float32", "float64", "float16") if hasattr(xp, n)]
        if not any(in_dtype == t for t in floats):  # array-api-strict has no float16
            raise DTypeError(
                f"{self.label}: expected a floating-point batch (the model takes {self.dtype}), "
                f"got dtype {in_dtype}"
            )
        if is_numpy(x):
            xin = x if x.dtype == self.dtype else x.astype(self.dtype)
            y = self._from_native(self._forward_numpy(self._to_native(np.ascontiguousarray(xin))))
            return y if y.dtype == in_dtype else y.astype(in_dtype)
        if is_cupy(x):
            xin = x if x.dtype == self.dtype else x.astype(self.dtype)
            y = self._from_native(self._forward_cupy(self._to_native(xin)))
            return y if y.dtype == in_dtype else y.astype(in_dtype)
        # any other CPU array-API library: through DLPack to NumPy and back
        host = to_numpy(x)
        if host.dtype != self.dtype:
            host = host.astype(self.dtype)
        y = self._from_native(self._forward_numpy(self._to_native(np.ascontiguousarray(host))))
        out = xp.asarray(y)
        return out if out.dtype == in_dtype else xp.astype(out, in_dtype)
