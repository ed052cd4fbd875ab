"""Files in and out: safe loading (never pickles) and atomic writes.

Every result file refinv writes goes through :func:`atomic_write_bytes`
(temp file in the same folder, fsync, ``os.replace``), so an interrupted run
never leaves a half-written file behind.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DTypeError, NonFiniteError, ShapeError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_save_npz",
    "load_npz",
    "load_images",
    "load_images_for",
    "parse_data_spec",
]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
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


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file, refusing pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        raise ConfigError(
            f"{path}: cannot load without pickle ({exc}); refinv never loads pickles"
        ) from exc
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable .npz file ({exc})") from exc


def parse_data_spec(spec: str, default_key: str = "train") -> tuple[Path, str]:
    """``"DATA.npz:key"`` -> (path, key); no ``:key`` means ``default_key``."""
    if ":" in spec and not Path(spec).is_file():
        p, k = spec.rsplit(":", 1)
        return Path(p), k
    return Path(spec), default_key


def load_images(
    spec: str | os.PathLike,
    key: str | None = None,
    *,
    sample_shape: tuple[int, ...] | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Images ``(N, *sample_shape)`` from ``DATA.npz[:key]``, validated.

    The array must be floating and finite; a flat ``(N, prod(sample_shape))``
    array is reshaped to the model's sample shape.
    """
    if key is None:
        path, key = parse_data_spec(str(spec))
    else:
        path = Path(spec)
    arrays = load_npz(path)
    if key not in arrays:
        raise ConfigError(f"{path}: no array {key!r}; it has {sorted(arrays)}")
    a = arrays[key]
    if not np.issubdtype(a.dtype, np.floating):
        raise DTypeError(f"{path}:{key}: expected floating-point images, got dtype {a.dtype}")
    if sample_shape is not None and tuple(a.shape[1:]) != tuple(sample_shape):
        if a.ndim >= 2 and int(np.prod(a.shape[1:])) == int(np.prod(sample_shape)):
            a = a.reshape((a.shape[0], *sample_shape))
        else:
            raise ShapeError(
                f"{path}:{key}: expected images of shape (N, {', '.join(map(str, sample_shape))}) "
                f"to match the model, got {a.shape}"
            )
    if not np.all(np.isfinite(a)):
        raise NonFiniteError(f"{path}:{key}: expected finite values, got NaN/Inf")
    return np.ascontiguousarray(a, dtype=dtype)


def load_images_for(f: Any, spec: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """:func:`load_images` for the model ``f``: its sample shape, and float64 if the model
    computes in float64, else float32."""
    dtype = np.float64 if f.dtype == np.float64 else np.float32
    return load_images(spec, key, sample_shape=f.sample_shape, dtype=dtype)
