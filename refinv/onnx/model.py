"""ONNX models as black-box functions on array-API batches.

:class:`OnnxModel` loads a model from a path, bytes or an ``onnx.ModelProto``,
validates it (``onnx.checker``, exactly one floating input and one output, a
fixed sample shape), opens an onnxruntime ``InferenceSession`` with explicit
providers, and is then called like a function on a batch
``(batch, *sample_shape)`` of any array-API array, returning the same array
type.

Security: ONNX files are untrusted input. :func:`load_onnx` never lets
onnx or onnxruntime follow an external-data reference by itself: every
reference must be a relative path that resolves inside the model's folder
(no ``..``, no absolute paths, no symlink escaping it), the data is read by
us, and the session is built from the in-memory model.

Behaviour on NaN input: the forward pass does not scan its input (it is the
inner loop of every solver); NaN/Inf propagate through the network. Solvers
validate their own inputs once, at entry.

dtype policy: the model's input dtype (usually float32) is what onnxruntime
gets. A float64 batch given to a float32 model is cast at this boundary and
the output is cast back to float64, so float64 solvers work with float32
models (the network itself then computes in float32).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..backend import is_cupy, is_numpy, namespace, to_numpy
from ..errors import BackendError, DTypeError, OnnxModelError, ShapeError, UnsafeModelError

__all__ = ["OnnxModel", "load_onnx", "ModelSource"]

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


def _safe_external_path(location: str, base_dir: Path, label: str) -> Path:
    """Resolve an external-data location, refusing anything outside ``base_dir``."""
    p = Path(location)
    if (
        p.is_absolute()
        or location.startswith(("/", "\\"))
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
    base = base_dir.resolve()
    full = (base / p).resolve()
    if full != base and base not in full.parents:
        raise UnsafeModelError(
            f"{label}: external data path {location!r} resolves to {str(full)!r}, outside the "
            f"model's folder {str(base)!r}"
        )
    if not full.is_file():
        raise OnnxModelError(f"{label}: external data file {location!r} not found in {str(base)!r}")
    return full


def load_onnx(
    source: ModelSource, *, check: bool = True
) -> tuple[onnx.ModelProto, str, Path | None]:
    """Load and validate an ONNX model safely.

    Returns ``(model, label, base_dir)`` where ``label`` names the source in
    error messages and ``base_dir`` is the folder external data may live in.
    """
    base_dir: Path | None = None
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        label = f"ModelProto({model.graph.name or 'unnamed'})"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label = "<bytes>"
        model = _parse(bytes(source), label)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        if not path.is_file():
            raise OnnxModelError(f"{label}: no such ONNX file")
        base_dir = path.parent
        model = _parse(path.read_bytes(), label)
    else:
        raise OnnxModelError(
            f"expected a path, bytes or onnx.ModelProto, got {type(source).__name__}"
        )

    ext = [
        t
        for t in external_data_helper._get_all_tensors(model)
        if t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if ext:
        if base_dir is None:
            raise OnnxModelError(
                f"{label}: the model references external data files; load it from its path so "
                "they can be found (and checked) next to it"
            )
        for t in ext:
            info = {e.key: e.value for e in t.external_data}
            _safe_external_path(info.get("location", ""), base_dir, label)
        external_data_helper.load_external_data_for_model(model, str(base_dir))

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
        except onnx.checker.ValidationError as exc:
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
    ) -> None:
        import onnxruntime as ort

        self.proto, self.label, self.base_dir = load_onnx(source)
        self._bytes = self.proto.SerializeToString()
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
        if elem not in _FLOAT_TYPES:
            raise OnnxModelError(
                f"{self.label}: expected a floating-point input (float32/float64/float16), got "
                f"{onnx.TensorProto.DataType.Name(elem)}"
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
        self.sample_shape: tuple[int, ...] = tuple(int(d) for d in dims[1:])  # type: ignore[arg-type]
        self.fixed_batch: int | None = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        odims = _dims(out)
        self._declared_out = (
            tuple(int(d) for d in odims[1:])  # type: ignore[arg-type]
            if len(odims) >= 2 and all(isinstance(d, int) and d > 0 for d in odims[1:])
            else None
        )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        self.batch_size = batch_size

        provider = provider.lower()
        available = ort.get_available_providers()
        if provider == "cpu":
            providers: list[Any] = ["CPUExecutionProvider"]
        elif provider == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BackendError(cuda_provider_missing(available))
            providers = [
                ("CUDAExecutionProvider", {"device_id": device_id}),
                "CPUExecutionProvider",
            ]
        else:
            raise ValueError(f"provider: expected 'cpu' or 'cuda', got {provider!r}")
        self.provider = provider
        self.device_id = device_id
        so = ort.SessionOptions()
        # default ONE intra-op thread (never slower than onnxruntime's spinning pool on a loaded
        # machine; docs/benchmarks.md "time to verdict"); 0 = onnxruntime's own default
        so.intra_op_num_threads = 1 if intra_op_threads is None else int(intra_op_threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(self._bytes, sess_options=so, providers=providers)
        except Exception as exc:
            raise OnnxModelError(
                f"{self.label}: onnxruntime could not load the model: {exc}"
            ) from exc
        if provider == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            raise BackendError(
                f"{self.label}: provider='cuda': onnxruntime-gpu could not start its CUDA "
                "provider (no usable GPU, or the CUDA 12 / cuDNN 9 libraries it needs are "
                f"not found) and fell back to {self.session.get_providers()}"
            )
        self._out_shape: tuple[int, ...] | None = None

    # ------------------------------------------------------------------ info
    def __repr__(self) -> str:
        return (
            f"OnnxModel({self.label!r}, sample_shape={self.sample_shape}, dtype={self.dtype}, "
            f"provider={self.provider!r})"
        )

    @property
    def output_sample_shape(self) -> tuple[int, ...]:
        """Shape of one output sample (declared, or found by one forward pass on zeros)."""
        if self._out_shape is None:
            if self._declared_out is not None:
                self._out_shape = self._declared_out
            else:
                nb = self.fixed_batch or 1
                z = np.zeros((nb, *self.sample_shape), dtype=self.dtype)
                self._out_shape = tuple(self._run_np(z).shape[1:])
        return self._out_shape

    @property
    def is_autoencoder(self) -> bool:
        return self.output_sample_shape == self.sample_shape

    def initializers(self) -> dict[str, np.ndarray]:
        """The model's initializers (weights) as read-only NumPy arrays."""
        from onnx import numpy_helper

        return {i.name: numpy_helper.to_array(i) for i in self.proto.graph.initializer}

    # --------------------------------------------------------------- calling
    def _run_np(self, x: np.ndarray) -> np.ndarray:
        sess = self.session
        t0 = time.perf_counter()
        # the C++ session's run: the Python wrapper's per-call input checks cost ~10% at batch 1
        (y,) = getattr(sess, "_sess", sess).run([self.output_name], {self.input_name: x}, None)
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
            return np.zeros((0, *self.output_sample_shape), dtype=self.dtype)
        chunks = self._chunks(n)
        if len(chunks) == 1 and self.fixed_batch in (None, n):
            return self._run_np(x)
        out = None
        for s, e in chunks:
            part = x[s:e]
            if self.fixed_batch is not None and e - s < self.fixed_batch:
                pad = np.zeros((self.fixed_batch - (e - s), *self.sample_shape), dtype=self.dtype)
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
        out = cp.empty((n, *self.output_sample_shape), dtype=self.dtype)
        for s, e in self._chunks(n):
            part = cp.ascontiguousarray(x[s:e])
            o = out[s:e]
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
            self.session.run_with_iobinding(io)
            self.stats.seconds += time.perf_counter() - t0
            self.stats.calls += 1
            self.stats.samples += e - s
        return out

    def __call__(self, x: Any) -> Any:
        """Run the network on a batch ``(batch, *sample_shape)``; same array type out."""
        if (
            type(x) is np.ndarray
            and x.dtype == self.dtype
            and x.shape[1:] == self.sample_shape
            and x.flags.c_contiguous
        ):
            return self._forward_numpy(x)  # fast path: the solvers' inner loop on NumPy
        xp = namespace(x)
        if tuple(x.shape[1:]) != self.sample_shape or x.ndim != len(self.sample_shape) + 1:
            raise ShapeError(
                f"{self.label}: expected input of shape (batch, "
                f"{', '.join(map(str, self.sample_shape))}), got {tuple(x.shape)}"
            )
        in_dtype = x.dtype
        if not (in_dtype == xp.float32 or in_dtype == xp.float64 or in_dtype == xp.float16):
            raise DTypeError(
                f"{self.label}: expected a floating-point batch (the model takes {self.dtype}), "
                f"got dtype {in_dtype}"
            )
        if is_numpy(x):
            xin = x if x.dtype == self.dtype else x.astype(self.dtype)
            y = self._forward_numpy(np.ascontiguousarray(xin))
            return y if y.dtype == in_dtype else y.astype(in_dtype)
        if is_cupy(x):
            xin = x if x.dtype == self.dtype else x.astype(self.dtype)
            y = self._forward_cupy(xin)
            return y if y.dtype == in_dtype else y.astype(in_dtype)
        # any other CPU array-API library: through DLPack to NumPy and back
        host = to_numpy(x)
        if host.dtype != self.dtype:
            host = host.astype(self.dtype)
        y = self._forward_numpy(np.ascontiguousarray(host))
        out = xp.asarray(y)
        return out if out.dtype == in_dtype else xp.astype(out, in_dtype)
