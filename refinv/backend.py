"""Array-API backend: namespaces, devices, dtypes, host transfers, RNG.

refinv's solvers are written against the Python array API standard, through
``array-api-compat``. The rules, as scipy and scikit-learn adopted them:

* the namespace comes from the inputs (:func:`namespace`); arrays from two
  namespaces or two devices are refused with :class:`~refinv.errors.BackendError`,
  nothing is moved silently;
* the array type that comes in is the array type that goes out;
* host <-> device copies happen only at explicit boundaries
  (:func:`to_numpy`, :func:`from_numpy`): loading data, calling onnxruntime on
  the CPU provider, writing results;
* float32 and float64 are both first-class (:func:`result_float_dtype`); a
  float64 solver feeding a float32 ONNX model casts at the model boundary
  (:class:`refinv.onnx.OnnxModel` does it and casts the output back);
* the standard has no RNG: random draws use an explicit
  :class:`numpy.random.Generator` (or a seed, see :func:`as_generator`) on
  the host and are moved once with :func:`from_numpy`.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import array_api_compat.numpy  # noqa: F401  (imported once here, not in the first solver call)
import numpy as np
from array_api_compat import array_namespace, is_array_api_obj
from array_api_compat import device as _device

from .errors import BackendError, DTypeError, NonFiniteError, ShapeError

__all__ = [
    "namespace",
    "device_of",
    "same_device",
    "to_numpy",
    "from_numpy",
    "as_generator",
    "result_float_dtype",
    "require_floating",
    "require_finite",
    "require_batch_shape",
    "is_numpy",
    "is_cupy",
    "all_finite",
]


_NP_XP = array_api_compat.numpy


def namespace(*arrays: Any):
    """Return the array-API namespace shared by ``arrays`` (``None`` entries ignored).

    Raises :class:`BackendError` if the arrays come from different libraries or
    live on different devices.
    """
    arrs = [a for a in arrays if a is not None and not isinstance(a, (int, float, bool))]
    if arrs and all(type(a) is np.ndarray for a in arrs):
        return _NP_XP  # fast path: plain NumPy arrays (one device), same answer as below
    if not arrs:
        raise BackendError("namespace(): expected at least one array, got none")
    for a in arrs:
        if not is_array_api_obj(a):
            raise BackendError(
                f"expected an array-API array (NumPy, CuPy, array-api-strict, ...), "
                f"got {type(a).__module__}.{type(a).__name__}"
            )
    try:
        xp = array_namespace(*arrs)
    except TypeError as exc:
        kinds = sorted({f"{type(a).__module__}.{type(a).__name__}" for a in arrs})
        raise BackendError(
            f"arrays from different namespaces cannot be mixed: got {kinds}; "
            "convert them explicitly (refinv never moves data silently)"
        ) from exc
    devs = {str(_device(a)) for a in arrs}
    if len(devs) > 1:
        raise BackendError(
            f"arrays live on different devices {sorted(devs)}; move them explicitly first"
        )
    return xp


def device_of(x: Any):
    """The device an array lives on (``'cpu'`` for NumPy)."""
    return _device(x)


def same_device(a: Any, b: Any) -> bool:
    return str(_device(a)) == str(_device(b))


def is_numpy(x: Any) -> bool:
    return isinstance(x, np.ndarray)


def is_cupy(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def to_numpy(x: Any) -> np.ndarray:
    """Explicit boundary: copy (or view) an array onto the host as NumPy."""
    if isinstance(x, np.ndarray):
        return x
    if is_cupy(x):
        return x.get()
    try:
        return np.from_dlpack(x)
    except (TypeError, BufferError, AttributeError, RuntimeError):
        return np.asarray(x)


def from_numpy(a: np.ndarray, like: Any = None, *, xp: Any = None, dtype: Any = None):
    """Explicit boundary: bring a NumPy array into the namespace/device of ``like`` (or ``xp``)."""
    if xp is None:
        xp = np if like is None else namespace(like)
    kw = {}
    if like is not None and not isinstance(like, np.ndarray):
        kw["device"] = _device(like)
    if dtype is not None:
        kw["dtype"] = dtype
    if xp is np or getattr(xp, "__name__", "") in ("numpy", "array_api_compat.numpy"):
        return np.asarray(a, dtype=dtype)
    return xp.asarray(a, **kw)


def as_generator(rng: int | np.random.Generator | None) -> np.random.Generator:
    """An explicit NumPy Generator from a seed, a Generator, or ``None`` (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng: expected an int seed, a numpy.random.Generator or None, got {rng!r}")


def result_float_dtype(xp: Any, x: Any):
    """float32 stays float32, float64 stays float64, anything else is refused."""
    if x.dtype == xp.float32 or x.dtype == xp.float64:
        return x.dtype
    raise DTypeError(f"expected a float32 or float64 array, got dtype {x.dtype}")


def require_floating(x: Any, name: str) -> None:
    xp = namespace(x)
    if not (x.dtype == xp.float32 or x.dtype == xp.float64):
        raise DTypeError(f"{name}: expected a float32 or float64 array, got dtype {x.dtype}")


def all_finite(x: Any) -> bool:
    xp = namespace(x)
    return bool(xp.all(xp.isfinite(x)))


def require_finite(x: Any, name: str) -> None:
    """Raise :class:`NonFiniteError` if ``x`` holds NaN or Inf (one device sync)."""
    xp = namespace(x)
    bad = ~xp.isfinite(x)
    if bool(xp.any(bad)):
        n_bad = int(xp.sum(xp.astype(bad, xp.int64)))
        raise NonFiniteError(f"{name}: expected finite values, got {n_bad} NaN/Inf entries")


def require_batch_shape(x: Any, sample_shape: tuple[int, ...], name: str) -> None:
    """``x`` must be ``(batch, *sample_shape)``."""
    if tuple(x.shape[1:]) != tuple(sample_shape) or x.ndim != len(sample_shape) + 1:
        raise ShapeError(
            f"{name}: expected shape (batch, {', '.join(map(str, sample_shape))}), "
            f"got {tuple(x.shape)}"
        )


# ------------------------------------------------------------------ the GPU install
class GpuRoute(NamedTuple):
    """One way to run refinv on a GPU: the CUDA major, refinv's extra, its CuPy package and
    the onnxruntime-gpu releases built for that CUDA major."""

    cuda_major: int
    extra: str
    cupy: str
    onnxruntime_gpu: str

    @property
    def install(self) -> str:
        """The one command that puts the GPU runtime of this route in place (docs/gpu.md)."""
        return (
            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install "
            f"'onnxruntime-gpu[cuda,cudnn]{self.onnxruntime_gpu}'"
        )


#: The CUDA major each GPU extra is for: the CuPy package it installs and the onnxruntime-gpu
#: releases built for the same CUDA major. Measured (readelf -d on the wheels'
#: libonnxruntime_providers_cuda.so, and their ``cuda`` extras): onnxruntime-gpu 1.26.0 links
#: libcudart.so.12 / libcublas.so.12 (extras nvidia-cuda-runtime-cu12, nvidia-cudnn-cu12),
#: 1.31.1 links libcudart.so.13 / libcublas.so.13 (nvidia-cuda-runtime 13, nvidia-cudnn-cu13);
#: the switch is at 1.27.0. tests/test_gpu_install.py checks the extras in pyproject.toml and
#: what pip resolves today against this table.
GPU_ROUTES = {
    13: GpuRoute(13, "gpu", "cupy-cuda13x", ">=1.27"),
    12: GpuRoute(12, "gpu-cuda12", "cupy-cuda12x", ">=1.18,<1.27"),
}
#: the route of the ``gpu`` extra
GPU_DEFAULT = GPU_ROUTES[13]


def cuda_major_of_requirements(requirements) -> int | None:
    """The CUDA major an onnxruntime-gpu distribution is built for, from its requirements
    (``importlib.metadata.requires``): the major of its ``nvidia-cuda-runtime`` requirement
    (``nvidia-cuda-runtime-cu12~=12.0`` -> 12, ``nvidia-cuda-runtime~=13.0`` -> 13); ``None``
    when it names none (releases before 1.19)."""
    import re

    for req in requirements or ():
        m = re.match(r"\s*nvidia-cuda-runtime(?:-cu(\d+))?\s*(?:[~=<>!]=?\s*(\d+))?", str(req))
        if m and (m.group(1) or m.group(2)):
            return int(m.group(1) or m.group(2))
    return None


def installed_onnxruntime_gpu_cuda_major() -> int | None:
    """The CUDA major of the installed onnxruntime-gpu (None: not installed, or unknown)."""
    from importlib import metadata

    try:
        return cuda_major_of_requirements(metadata.requires("onnxruntime-gpu"))
    except metadata.PackageNotFoundError:
        return None


def gpu_route_for(cuda_major: int | None) -> GpuRoute:
    """The route of ``cuda_major`` (the default one when unknown)."""
    return GPU_ROUTES.get(cuda_major or 0, GPU_DEFAULT)


def cuda_libraries_text(cuda_major: int | None) -> str:
    """``"CUDA 13 and cuDNN 9 libraries"`` for the installed onnxruntime-gpu's CUDA major."""
    if cuda_major is None:
        return "CUDA and cuDNN 9 libraries it was built for"
    return f"CUDA {cuda_major} and cuDNN 9 libraries"


class NativeStderr:
    """Capture what native code (onnxruntime's C++ logger) writes to file descriptor 2 inside
    a ``with`` block, so that its raw coloured lines do not reach the terminal; the text, ANSI
    colours removed, is in ``.text`` afterwards and is handed to :mod:`logging` by the caller.
    Python's own ``sys.stderr`` writes inside the block are captured too."""

    def __init__(self) -> None:
        self.text = ""

    def __enter__(self) -> NativeStderr:
        import sys
        import tempfile

        try:
            sys.stderr.flush()
            self._tmp = tempfile.TemporaryFile(mode="w+b")
            self._saved = os.dup(2)
            os.dup2(self._tmp.fileno(), 2)
        except (OSError, ValueError, AttributeError):  # no fd 2 (embedded interpreters)
            self._saved = None
        return self

    def __exit__(self, *exc) -> None:
        import re
        import sys

        if self._saved is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.seek(0)
        raw = self._tmp.read().decode("utf-8", "replace")
        self._tmp.close()
        self.text = re.sub(r"\x1b\[[0-9;]*m", "", raw).strip()
