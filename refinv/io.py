"""Files in and out: safe loading (never pickles) and atomic writes.

Every result file refinv writes goes through :func:`atomic_write_bytes`
(temp file in the same folder, fsync, ``os.replace``), so an interrupted run
never leaves a half-written file behind. A run killed mid-write leaves its
hidden temp file ``.NAME.PID-XXXX.tmp``; the next write of ``NAME`` removes
the temp files of processes that no longer run. A written file gets the mode a
plain ``open(path, "w")`` would give it: an existing file's mode is kept, a new
file gets ``0o666 & ~umask`` (``tempfile.mkstemp`` alone would make it 0600).

Reading is bounded: :func:`load_npz` refuses an ``.npz`` whose arrays would
take more than ``max_bytes`` once decompressed (default 1 GiB, or the
environment variable ``REFINV_NPZ_MAX_BYTES``), from the zip members'
declared sizes and the arrays' headers, before anything is decompressed.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import ConfigError, DTypeError, NonFiniteError, ShapeError

__all__ = [
    "demo_files",
    "DemoFiles",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_save_npz",
    "load_npz",
    "load_images",
    "load_images_for",
    "is_file",
    "channels_last",
    "parse_data_spec",
    "check_writable",
    "new_file_mode",
    "npz_max_bytes",
    "NPZ_MAX_BYTES",
    "NPZ_MAX_BYTES_ENV",
]

#: default cap on the decompressed size of an ``.npz`` read by :func:`load_npz` (1 GiB)
NPZ_MAX_BYTES = 1 << 30
#: environment variable that overrides :data:`NPZ_MAX_BYTES` (a number of bytes)
NPZ_MAX_BYTES_ENV = "REFINV_NPZ_MAX_BYTES"

# temp files of writers without a PID in the name (refinv <= 0.x) older than this are stale
_OLD_TMP_AGE_S = 3600.0


def check_writable(path: str | os.PathLike, what: str = "output", *, probe: bool = True) -> Path:
    """Refuse, before any work, an output path that cannot be written.

    ``path`` must not be a directory, and its folder (or the nearest existing
    ancestor, the writers create the missing ones) must be a directory where
    this process can create a file: with ``probe`` (default) a temporary file
    (or folder) is created there and removed at once. Raises
    :class:`~refinv.errors.ConfigError`.
    """
    import errno

    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{what} {str(path)!r}: expected a file path, got a directory")
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise ConfigError(name_too_long(path, what)) from exc
        raise ConfigError(f"{what} {str(path)!r}: {exc.strerror or exc}") from exc
    if not parent.is_dir():
        raise ConfigError(f"{what} {str(path)!r}: {str(parent)!r} is not a directory")
    if not probe:
        return path
    try:  # a real probe: os.access says yes to root on read-only mounts and /proc
        if parent == path.parent:
            with tempfile.TemporaryFile(prefix=f".{path.name}.probe-", dir=parent):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".refinv-probe-", dir=parent))
    except OSError as exc:
        raise ConfigError(
            f"{what} {str(path)!r}: cannot write in {str(parent)!r} ({exc.strerror or exc})"
        ) from exc
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    except OSError:
        return False
    return True


def _remove_stale_tmp(path: Path) -> None:
    """Remove ``.NAME.*.tmp`` left next to ``path`` by writers that were killed.

    A temp file named ``.NAME.PID-XXXX.tmp`` is stale when process PID no
    longer runs (this process's own are in use by another thread: kept); one
    without a PID (older writers) when it is over an hour old.
    """
    prefix = f".{path.name}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    now = time.time()
    for e in entries:
        name = e.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        tag = name[len(prefix) : -len(".tmp")]
        pid_s, sep, _ = tag.partition("-")
        try:
            if sep and pid_s.isdigit():
                pid = int(pid_s)
                stale = pid != os.getpid() and not _pid_alive(pid)
            else:
                stale = now - e.stat(follow_symlinks=False).st_mtime > _OLD_TMP_AGE_S
            if stale and e.is_file(follow_symlinks=False):
                os.unlink(e.path)
        except OSError:
            pass  # another process removed or replaced it meanwhile


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc``)."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike) -> int:
    """The permission bits ``open(path, "w")`` would leave ``path`` with: its current mode
    if it is an existing regular file, else ``0o666 & ~umask``."""
    import stat

    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, ``os.replace``).

    An unwritable path (a directory, a read-only folder, a full disk) raises
    :class:`~refinv.errors.ConfigError`; the temp file is removed on every error. The
    file's mode is :func:`new_file_mode` (what a plain ``open`` would give it).
    """
    path = Path(path)
    check_writable(path, probe=False)  # the temp file below is the probe
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(path)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent
        )
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), new_file_mode(path))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise ConfigError(f"{path}: cannot write ({exc.strerror or exc})") from exc
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=True)
    return atomic_write_text(path, text + "\n")


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue())


def npz_max_bytes(max_bytes: int | None = None) -> int:
    """The decompressed-size cap of :func:`load_npz`: ``max_bytes``, else the environment
    variable ``REFINV_NPZ_MAX_BYTES``, else :data:`NPZ_MAX_BYTES` (1 GiB)."""
    if max_bytes is None:
        env = os.environ.get(NPZ_MAX_BYTES_ENV, "").strip()
        if not env:
            return NPZ_MAX_BYTES
        try:
            v = float(env)
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and v >= 1 and v == int(v)):
            raise ConfigError(
                f"{NPZ_MAX_BYTES_ENV}: expected a positive whole number of bytes, got {env!r}"
            )
        return int(v)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ConfigError(f"max_bytes: expected a positive integer, got {max_bytes!r}")
    return max_bytes


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**20 else f"{n} bytes"


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of an ``.npy`` stream (:func:`npy_header`)."""
    shape, _, dtype = npy_header(f)
    return shape, dtype


def npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of an ``.npy`` stream, from its header alone
    (formats 1.0 to 3.0), leaving ``f`` at the first data byte.

    NumPy's public readers cover 1.0 and 2.0; format 3.0 (written when a structured dtype has
    field names outside latin-1) is 2.0 with a UTF-8 header, read here with the public
    :func:`numpy.lib.format.descr_to_dtype` and a literal-only parse (no code runs)."""
    import ast

    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(f)
    elif version == (3, 0):
        (n,) = struct.unpack("<I", f.read(4))
        if n > 100_000:
            raise ValueError(f"an .npy header of {n} bytes (NumPy reads at most 100000)")
        raw = f.read(n)
        if len(raw) != n:
            raise ValueError("truncated .npy header")
        d = ast.literal_eval(raw.decode("utf-8"))
        if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
            raise ValueError(
                f"expected the .npy header keys descr, fortran_order, shape: {d!r:.100}"
            )
        shape, fortran, dtype = d["shape"], d["fortran_order"], fmt.descr_to_dtype(d["descr"])
        if not isinstance(fortran, bool):
            raise ValueError(f"expected fortran_order True or False, got {fortran!r:.40}")
        if not (isinstance(shape, tuple) and all(isinstance(x, int) and x >= 0 for x in shape)):
            raise ValueError(f"expected a shape of non-negative integers, got {shape!r:.100}")
    else:
        raise ValueError(f".npy format version {version} (refinv reads 1.0 to 3.0)")
    return tuple(shape), fortran, dtype


def _check_npz_size(path: Path, cap: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Refuse an ``.npz`` over ``cap`` decompressed bytes, reading only zip and .npy headers;
    return each array's ``(shape, dtype)`` by name."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(f"{path}: not a readable .npz file ({exc})") from exc
    with zf:
        infos = zf.infolist()
        declared = sum(i.file_size for i in infos)
        how = f"set {NPZ_MAX_BYTES_ENV}=BYTES (or pass max_bytes) to allow a larger file"
        if declared > cap:
            raise ConfigError(
                f"{path}: expected at most {_gib(cap)} of arrays once decompressed, its "
                f"{len(infos)} member(s) declare {_gib(declared)}; {how}"
            )
        total = 0
        headers = {}
        for info in infos:
            if not info.filename.endswith(".npy"):
                continue
            try:
                with zf.open(info) as f:
                    shape, dtype = _npy_header(f)
            except Exception as exc:
                raise ConfigError(
                    f"{path}: member {info.filename!r} is not a readable .npy array ({exc})"
                ) from exc
            if dtype.hasobject:
                raise ConfigError(
                    f"{path}: array {info.filename[:-4]!r} holds Python objects (dtype "
                    f"{dtype}), which load only with pickle; refinv never loads pickles"
                )
            nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
            if nbytes > info.file_size:
                raise ConfigError(
                    f"{path}: array {info.filename[:-4]!r} of shape {tuple(shape)} {dtype} "
                    f"needs {nbytes} bytes, its zip member holds {info.file_size}: truncated "
                    "or forged"
                )
            total += nbytes
            headers[info.filename[:-4]] = (tuple(int(d) for d in shape), dtype)
        if total > cap:
            raise ConfigError(
                f"{path}: expected at most {_gib(cap)} of arrays, its arrays take {_gib(total)}; "
                f"{how}"
            )
    return headers


def load_npz(path: str | os.PathLike, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file, refusing pickled objects and oversized files.

    ``max_bytes`` caps the decompressed size of all arrays together (default
    :func:`npz_max_bytes`: ``REFINV_NPZ_MAX_BYTES`` or 1 GiB). It is checked on
    the zip members' declared sizes and on the arrays' headers before any
    array is decompressed, so a small file that would inflate to gigabytes is
    refused at once (:class:`~refinv.errors.ConfigError`).
    """
    path = Path(path)
    if not is_file(path, "data"):
        raise ConfigError(f"{path}: no such file")
    cap = npz_max_bytes(max_bytes)
    _check_npz_size(path, cap)
    return _read_npz(path, None)


def _read_npz(path: Path, keys: list[str] | None) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (None: all) of an ``.npz`` whose headers were checked."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in (z.files if keys is None else keys)}
    except ValueError as exc:
        raise ConfigError(
            f"{path}: cannot load without pickle ({exc}); refinv never loads pickles"
        ) from exc
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable .npz file ({exc})") from exc


def is_file(path: str | os.PathLike, what: str = "file") -> bool:
    """Whether ``path`` is a regular file (symlinks followed), like ``Path.is_file``, except
    that a path the system cannot even look up because a component is longer than the file
    system allows (``ENAMETOOLONG``, which Python 3.11's pathlib raises as ``OSError``) is
    a :class:`~refinv.errors.ConfigError` that says so."""
    import errno
    import stat

    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise ConfigError(name_too_long(path, what)) from exc
        return False
    except ValueError:  # a NUL byte in the path
        return False


def name_too_long(path: str | os.PathLike, what: str = "file") -> str:
    """The message for a path the system refuses as too long (``ENAMETOOLONG``)."""
    parts = [p for p in Path(path).parts if p != os.sep]
    longest = max((len(os.fsencode(p)) for p in parts), default=0)
    try:
        limit = os.pathconf(os.getcwd(), "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    text = str(path)
    shown = text if len(text) <= 80 else f"{text[:40]}...{text[-30:]}"
    return (
        f"{what} {shown!r}: the file system refuses this path as too long: expected file and "
        f"folder names of at most {limit} bytes, got one of {longest} bytes "
        f"({len(os.fsencode(text))} bytes in all)"
    )


def parse_data_spec(spec: str, default_key: str = "train") -> tuple[Path, str]:
    """``"DATA.npz:key"`` -> (path, key); no ``:key`` means ``default_key``."""
    if ":" in spec and not is_file(spec, "data"):
        p, k = spec.rsplit(":", 1)
        return Path(p), k
    return Path(spec), default_key


def load_images(
    spec: str | os.PathLike,
    key: str | None = None,
    *,
    sample_shape: tuple[int, ...] | None = None,
    dtype: Any = np.float32,
    rows_ok: bool = False,
    layout: str | None = None,
) -> np.ndarray:
    """Images ``(N, *sample_shape)`` from ``DATA.npz[:key]``, validated.

    The array must be floating, finite and hold at least one image. Its
    images must have the model's ``sample_shape``, up to reshapes that cannot
    reorder values: singleton axes added or dropped (``(N, H, W)`` for a
    ``(1, H, W)`` model) and, for single-channel samples, flattening
    (``(N, H*W)`` rows for a ``(1, H, W)`` model, ``(N, H, W)`` images for an
    ``(H*W,)`` model). Anything else with the right number of values (e.g.
    channels-last ``(N, H, W, C)`` for a ``(C, H, W)`` model, or flat rows
    of colour images) is refused: a reshape would scramble the images.
    ``rows_ok=True`` (a flat model given an image shape: its rows are its own order) also
    accepts rows ``(N, prod(sample_shape))``, reshaped row-major. Channels-last images
    ``(N, H, W, C)`` of a ``(C, H, W)`` model are TRANSPOSED (never reshaped) when
    ``layout="NHWC"``, or without it where the shapes leave no doubt
    (:func:`channels_last`); ``layout="NCHW"`` refuses them.
    """
    if key is None:
        path, key = parse_data_spec(str(spec))
    else:
        path = Path(spec)
    if not is_file(path, "data"):
        raise ConfigError(f"{path}: no such file")
    cap = npz_max_bytes()
    headers = _check_npz_size(path, cap)
    if key not in headers:
        raise ConfigError(f"{path}: no array {key!r}; it has {sorted(headers)}")
    shape, file_dtype = headers[key]
    nhwc = channels_last(f"{path}:{key}", shape, sample_shape, layout)
    if nhwc:
        shape = (shape[0], shape[3], shape[1], shape[2])
    check_images_header(f"{path}:{key}", shape, file_dtype, sample_shape, rows_ok=rows_ok)
    made = math.prod(shape) * np.dtype(dtype).itemsize
    if made > cap:  # what the images become (float16 -> float32 doubles), not only the bytes
        raise ConfigError(
            f"{path}:{key}: expected images that take at most {_gib(cap)} as {np.dtype(dtype)}, "
            f"its {shape} {file_dtype} array would take {_gib(made)}; set "
            f"{NPZ_MAX_BYTES_ENV}=BYTES to allow more"
        )
    a = _read_npz(path, [key])[key]
    if nhwc:
        a = np.transpose(a, (0, 3, 1, 2))
    if sample_shape is not None and tuple(a.shape[1:]) != tuple(sample_shape):
        a = a.reshape((a.shape[0], *sample_shape))
    a = np.ascontiguousarray(a, dtype=dtype)
    if not np.isfinite(a).all():
        raise NonFiniteError(
            f"{path}:{key}: expected finite values (as {np.dtype(dtype)}), got NaN/Inf"
        )
    return a


def channels_last(
    label: str, shape: tuple[int, ...], sample_shape: tuple[int, ...] | None, layout: str | None
) -> bool:
    """Whether a data file's images ``shape`` (batch first) are the channels-last
    ``(N, H, W, C)`` form of a model's ``(C, H, W)`` samples, to be transposed on reading.

    ``layout`` ``"NHWC"`` says so (the shape must then be ``(N, H, W, C)``); ``"NCHW"`` says
    not; ``None`` decides from the shapes where that is unambiguous: ``(N, H, W, C)`` with
    ``C > 1`` that is not also ``(N, C, H, W)``. One channel needs no transpose (the same
    values in the same order)."""
    if layout not in (None, "NCHW", "NHWC"):
        raise ConfigError(f"data layout: expected NCHW or NHWC, got {layout!r}")
    if sample_shape is None or len(sample_shape) != 3 or layout == "NCHW":
        if layout == "NHWC" and (sample_shape is None or len(sample_shape) != 3):
            raise ConfigError(
                f"{label}: --data-layout NHWC needs a model with (C, H, W) images, got samples "
                f"{sample_shape}"
            )
        return False
    c, h, w = (int(d) for d in sample_shape)
    nhwc = tuple(int(d) for d in shape[1:]) == (h, w, c)
    if layout == "NHWC":
        if not nhwc:
            raise ShapeError(
                f"{label}: --data-layout NHWC: expected images (N, {h}, {w}, {c}) for the "
                f"model's ({c}, {h}, {w}), got {tuple(shape)}"
            )
        return c > 1
    return nhwc and c > 1 and tuple(int(d) for d in shape[1:]) != (c, h, w)


def check_images_header(
    label: str,
    shape: tuple[int, ...],
    dtype: Any,
    sample_shape: tuple[int, ...] | None,
    *,
    rows_ok: bool = False,
) -> None:
    """The checks of :func:`load_images` that need only an array's shape and dtype (also
    run on the header of a file read in chunks): floating, at least one image, and samples
    of ``sample_shape`` up to reshapes that cannot reorder values."""
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    if dtype.hasobject or not np.issubdtype(dtype, np.floating):
        raise DTypeError(f"{label}: expected floating-point images, got dtype {dtype}")
    if len(shape) < 1 or shape[0] == 0:
        raise ShapeError(f"{label}: expected at least one image, got an array of shape {shape}")
    if sample_shape is None or shape[1:] == tuple(sample_shape):
        return
    want = f"(N, {', '.join(map(str, sample_shape))})"
    if len(shape) >= 2 and _same_layout(shape[1:], tuple(sample_shape)):
        return
    if rows_ok and shape[1:] == (math.prod(sample_shape),):
        return
    if len(shape) >= 2 and math.prod(shape[1:]) == math.prod(sample_shape):
        hint = ""
        if len(sample_shape) == 3 and shape[1:] == (*sample_shape[1:], sample_shape[0]):
            hint = (" (channels-last: --data-layout NHWC, or layout='NHWC' in Python, reads "
                    "it transposed)")  # fmt: skip
        raise ShapeError(
            f"{label}: expected images of shape {want} to match the model, got "
            f"{shape}{hint}: the same number of values per image in another layout, "
            "which refinv does not reshape (it would scramble the images)"
        )
    raise ShapeError(f"{label}: expected images of shape {want} to match the model, got {shape}")


def _same_layout(got: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """Whether samples of shape ``got`` reshape to ``want`` without reordering pixels:
    equal once size-1 axes are dropped, or one side flat and the other single-channel
    (at most two axes longer than 1, flattened row-major)."""
    sg = tuple(d for d in got if d != 1)
    sw = tuple(d for d in want if d != 1)
    if sg == sw:
        return True
    if math.prod(sg) != math.prod(sw):
        return False
    return (len(sg) == 1 and len(sw) <= 2) or (len(sw) == 1 and len(sg) <= 2)


def load_images_for(
    f: Any, spec: str | os.PathLike, key: str | None = None, layout: str | None = None
) -> np.ndarray:
    """:func:`load_images` for the model ``f``: its sample shape, and float64 if the model
    computes in float64, else float32; ``layout``: the data file's (``"NCHW"``, ``"NHWC"``,
    ``None``: decided where unambiguous)."""
    dtype = np.float64 if f.dtype == np.float64 else np.float32
    return load_images(spec, key, sample_shape=f.sample_shape, dtype=dtype,
                       rows_ok=flat_rows_ok(f), layout=layout)  # fmt: skip


def flat_rows_ok(f: Any) -> bool:
    """Whether data rows ``(N, D)`` are the model's own order: a flat model ``(batch, D)``
    given an image shape (refinv flattens its ``(C, H, W)`` arrays row-major for it)."""
    return getattr(f, "layout", None) == "flat" and getattr(f, "image_shape", None) is not None


# ------------------------------------------------------------------ the demo files
class DemoFiles(NamedTuple):
    """Paths of the packaged demo files."""

    model: Path  #: the faces MLP autoencoder (ONNX), a perfect fit of its training images
    data: Path  #: its data set (.npz): ``train`` (100 images 1x25x25) and ``test`` (100)


def demo_files() -> DemoFiles:
    """The shipped faces autoencoder and its data set, packaged in refinv itself
    (``refinv/_data``), so they exist in a wheel as in a checkout: ``model`` is
    ``faces25_lrelu_6x256.onnx`` (a 6-layer LeakyReLU MLP trained to train MSE ~1e-13 on
    100 face crops), ``data`` is ``faces25.npz`` with ``train`` and ``test`` arrays
    ``(100, 1, 25, 25)`` in [0, 1]. The rest of the model zoo lives in the repository's
    ``models/`` folder (not in the wheel).

    >>> import refinv
    >>> model, data = refinv.demo_files()
    >>> model.name, data.name
    ('faces25_lrelu_6x256.onnx', 'faces25.npz')
    """
    root = Path(__file__).resolve().parent / "_data"
    return DemoFiles(root / "onnx" / "faces25_lrelu_6x256.onnx", root / "data" / "faces25.npz")
