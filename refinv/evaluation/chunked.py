"""Recovery of large image sets in chunks: flat memory in the number of images.

Per-sample stopping makes every sample's solve independent of the others
(:func:`~refinv.solvers.run_loop`), so a split can be processed ``chunk``
images at a time with the same results as one batch: the masks, the noise
and the blind solver's Bernoulli initial mask are drawn from the same three
generators as :func:`~refinv.evaluation.report.evaluate_split`
(``default_rng(seed)``, ``default_rng([seed, 2])``, ``default_rng([seed, 1])``),
one draw per sample in order, so the chunks continue each other's streams.
(The network's floating-point kernels may round differently at different
batch sizes; the solvers' own arithmetic is per sample.)

Memory: the solver holds about 13 copies of a chunk instead of the whole
batch; the images are read from the ``.npz`` chunk by chunk
(:class:`NpzImages`, never the whole array), and per-image outputs can be
streamed to disk (:class:`NpzStreamWriter`); what stays in memory per image
is the run's per-sample numbers (MSE, PSNR, iterations, ...).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DivergenceWarning, NonFiniteError, ShapeError
from ..io import channels_last, check_images_header, is_file, new_file_mode, npy_header
from ..operators.masks import MaskSpec, erase, pixel_shape
from .runs import method_options, recovery_metrics, run_entry, run_method, warn_diverged

__all__ = [
    "DEFAULT_CHUNK",
    "NpzImages",
    "NpzStreamWriter",
    "evaluate_split_chunked",
    "mean_loss",
]

#: images per chunk (faces25-sized: ~32 MiB of solver state per chunk)
DEFAULT_CHUNK = 1024


class NpzImages:
    """One image array of an ``.npz`` file, read ``chunk`` images at a time.

    Same checks as :func:`refinv.io.load_images` (floating dtype, finite
    values, sample shape; a flat ``(N, prod(sample_shape))`` array is
    reshaped; channels-last ``(N, H, W, C)`` images are transposed per chunk
    under the same rule, ``layout``), done per chunk; ``dtype`` is what the
    chunks are cast to. Object (pickled) arrays are refused.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        key: str,
        *,
        sample_shape: tuple[int, ...],
        dtype: Any = np.float32,
        rows_ok: bool = False,
        layout: str | None = None,
    ) -> None:
        self.path, self.key = Path(path), key
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.dtype = np.dtype(dtype)
        if not is_file(self.path, "data"):
            raise ConfigError(f"{self.path}: no such file")
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
                if key not in names:
                    raise ConfigError(f"{self.path}: no array {key!r}; it has {sorted(names)}")
                with zf.open(f"{key}.npy") as fp:
                    shape, fortran, dt = self._header(fp)
        except zipfile.BadZipFile as exc:
            raise ConfigError(f"{self.path}: not an .npz file ({exc})") from exc
        except (ValueError, SyntaxError, struct.error) as exc:
            raise ConfigError(f"{self.path}: {key!r} is not a readable .npy array ({exc})") from exc
        label = f"{self.path}:{key}"
        # the rules of load_images
        self._nhwc = channels_last(label, shape, self.sample_shape, layout)
        if self._nhwc:
            shape = (shape[0], shape[3], shape[1], shape[2])
        check_images_header(label, shape, dt, self.sample_shape, rows_ok=rows_ok)
        if fortran:
            raise ConfigError(f"{label}: expected a C-ordered array, got Fortran order")
        n_pix = int(np.prod(self.sample_shape))
        self.n = int(shape[0])
        self._file_dtype = dt
        self._per_image = n_pix * dt.itemsize

    @staticmethod
    def _header(fp) -> tuple[tuple[int, ...], bool, np.dtype]:
        return npy_header(fp)  # .npy formats 1.0 to 3.0

    def __len__(self) -> int:
        return self.n

    def chunks(self, size: int):
        """Yield ``(start, images)`` with ``images`` of shape ``(<= size, *sample_shape)``."""
        if size < 1:
            raise ConfigError(f"chunk: expected a positive integer, got {size}")
        label = f"{self.path}:{self.key}"
        with zipfile.ZipFile(self.path) as zf, zf.open(f"{self.key}.npy") as fp:
            self._header(fp)
            s = 0
            while s < self.n:
                m = min(size, self.n - s)
                buf = fp.read(m * self._per_image)
                if len(buf) != m * self._per_image:
                    raise ConfigError(f"{label}: truncated array data")
                if self._nhwc:  # (m, H, W, C) in the file: transposed, never reshaped
                    c, h, w = self.sample_shape
                    a = np.frombuffer(buf, dtype=self._file_dtype).reshape((m, h, w, c))
                    a = a.transpose(0, 3, 1, 2)
                else:
                    a = np.frombuffer(buf, dtype=self._file_dtype).reshape((m, *self.sample_shape))
                if not np.all(np.isfinite(a)):
                    raise NonFiniteError(f"{label}: expected finite values, got NaN/Inf")
                yield s, np.array(a, dtype=self.dtype)  # own, writable, C-ordered copy
                s += m


class NpzStreamWriter:
    """Write an ``.npz`` (like :func:`numpy.savez`) whose arrays arrive in row chunks.

    ``arrays``: ``{name: (shape, dtype)}``. :meth:`write` appends rows
    ``[start, start + len)`` of one array (in order); :meth:`close` checks
    that every array is complete and moves the file into place atomically
    (rows are spooled to temporary ``.npy`` files next to ``path`` first).
    """

    def __init__(self, path: str | os.PathLike, arrays: dict[str, tuple[tuple, Any]]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._files: dict[str, Any] = {}
        self._meta: dict[str, tuple[tuple, np.dtype]] = {}
        self._rows: dict[str, int] = {}
        for name, (shape, dtype) in arrays.items():
            dt = np.dtype(dtype)
            f = open(self._dir / f"{name}.npy", "wb")  # noqa: SIM115 (closed in close/abort)
            np.lib.format.write_array_header_2_0(
                f, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False,
                    "shape": tuple(int(d) for d in shape)},
            )  # fmt: skip
            self._files[name], self._meta[name], self._rows[name] = f, (tuple(shape), dt), 0

    def write(self, name: str, start: int, rows: Any) -> None:
        shape, dt = self._meta[name]
        a = np.ascontiguousarray(np.asarray(rows), dtype=dt)
        if start != self._rows[name] or tuple(a.shape[1:]) != tuple(shape[1:]):
            raise ShapeError(
                f"{name}: expected rows from {self._rows[name]} of shape (k, *{shape[1:]}), got "
                f"rows from {start} of shape {a.shape}"
            )
        self._files[name].write(a.tobytes())
        self._rows[name] += int(a.shape[0])

    def close(self) -> Path:
        try:
            for name, f in self._files.items():
                f.close()
                if self._rows[name] != self._meta[name][0][0]:
                    raise ShapeError(
                        f"{name}: {self._rows[name]} of {self._meta[name][0][0]} rows written"
                    )
            tmp = self._dir / "out.npz"
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name in self._files:
                    with (
                        open(self._dir / f"{name}.npy", "rb") as src,
                        zf.open(f"{name}.npy", "w", force_zip64=True) as dst,
                    ):
                        shutil.copyfileobj(src, dst, 1 << 20)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, new_file_mode(self.path))  # as a plain open() of the output would
            os.replace(tmp, self.path)
            return self.path
        finally:
            self.abort()

    def abort(self) -> None:
        for f in self._files.values():
            f.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _chunks(images: Any, chunk: int):
    if isinstance(images, NpzImages):
        return images.chunks(int(chunk))
    arr = np.asarray(images)
    return ((s, arr[s : s + int(chunk)]) for s in range(0, int(arr.shape[0]), int(chunk)))


def mean_loss(f: Any, images: Any, chunk: int = DEFAULT_CHUNK) -> float:
    """``mean((f(x) - x)^2)`` over every pixel of every image, ``chunk`` images at a time."""
    total, count = 0.0, 0
    for _, x in _chunks(images, chunk):
        d = np.asarray(f(x), dtype=np.float64) - x.astype(np.float64)
        total += float(np.sum(d * d))
        count += d.size
    return total / count if count else float("nan")


def evaluate_split_chunked(
    f: Any,
    images: Any,
    spec: MaskSpec,
    method: str,
    *,
    chunk: int = DEFAULT_CHUNK,
    label: str = "model",
    train_loss: float | None = None,
    split: str = "train",
    seed: int = 0,
    noise_std: float = 0.0,
    solver: dict | None = None,
    progress: bool | None = None,
    on_chunk: Callable[..., None] | None = None,
) -> dict:
    """:func:`~refinv.evaluation.report.evaluate_split` ``chunk`` images at a time.

    ``images``: an array ``(N, *sample_shape)`` or an :class:`NpzImages`.
    Returns the run entry (the same fields and values as ``evaluate_split``'s).
    ``on_chunk(start, x, y, mask, result, metrics)`` is called after each
    chunk (``mask``: the true masks, bool; ``metrics``: ``{"mse", "psnr"}``),
    e.g. to stream the estimates to disk.
    """
    if int(chunk) != chunk or chunk < 1:
        raise ConfigError(f"chunk: expected a positive integer, got {chunk}")
    source = _chunks(images, chunk)
    rng_mask = np.random.default_rng(seed)
    rng_noise = np.random.default_rng([seed, 2])
    opts = method_options(method, dict(solver or {}))
    if method == "blind":
        opts.setdefault("rng", np.random.default_rng([seed, 1]))
    cols: dict[str, list] = {k: [] for k in ("mse", "psnr", "it", "conv", "div", "res")}
    reasons: list[str] = []
    observed = pixels = mismatched = 0
    stats = getattr(f, "stats", None)
    ort0 = stats.seconds if stats is not None else None
    seconds = 0.0
    for start, x in source:
        m = int(x.shape[0])
        pshape = pixel_shape(tuple(x.shape[1:]))
        mask = spec.draw(pshape, m, rng_mask)
        y = erase(x, mask, noise_std=noise_std, rng=rng_noise)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)
            res = run_method(
                method, f, y, mask, options=opts, seed=seed, noisy=noise_std > 0,
                progress=progress,
            )  # fmt: skip
        seconds += time.perf_counter() - t0
        met = recovery_metrics(x, np.asarray(res.x))
        observed += int(np.count_nonzero(mask))
        pixels += int(mask.size)
        if method == "blind":
            h = np.asarray(res.state.h).reshape(m, *pshape)
            mismatched += int(np.count_nonzero(h != mask.reshape(h.shape)))
        for k, v in (
            ("mse", met["mse"]), ("psnr", met["psnr"]), ("it", res.iterations),
            ("conv", res.converged), ("div", res.diverged), ("res", res.residual),
        ):  # fmt: skip
            cols[k].append(np.asarray(v))
        reasons.extend(res.stop_reason)
        if on_chunk is not None:
            on_chunk(start, x, y, mask, res, met)
        del res, y, x, mask

    def cat(k, dt):
        return np.concatenate(cols[k]).astype(dt) if cols[k] else np.zeros(0, dt)

    entry = run_entry(
        checkpoint=str(label),
        train_loss=train_loss,
        method=method,
        mask=spec.text,
        split=split,
        mse=cat("mse", np.float64),
        psnr=cat("psnr", np.float64),
        iterations=cat("it", np.int64),
        converged=cat("conv", bool),
        diverged=cat("div", bool),
        residual=cat("res", np.float64),
        stop_reason=reasons,
        erased_fraction=float(1.0 - observed / pixels) if pixels else 0.0,
        mask_error=(float(mismatched / pixels) if pixels else 0.0) if method == "blind" else None,
        seconds=seconds,
        onnx_seconds=(stats.seconds - ort0) if stats is not None else None,
    )
    warn_diverged(entry, solver)
    return entry
