"""Pixel erasure ``y = H x + e`` and the families of missing-pixel masks.

The degradation of the memorization experiments (Abitbul and Dar, 2023) is a
pixel erasure: ``H = diag(h)`` with ``h_i in {0, 1}``; an erased pixel
(``h_i = 0``) is set to 0 in ``y``; optional i.i.d. Gaussian noise ``e`` is
added to every entry (erased ones included, as in ``y = H x + e``).

A mask is **per pixel**: for images ``(C, H, W)`` it has shape ``(H, W)`` and
applies to every channel of the pixel. For samples of another rank the mask
has the sample's own shape (``(H, W)`` samples) or ``(n,)`` (flat samples);
:func:`pixel_shape` gives it. In a batch, masks are ``(N, *pixel_shape)``
(one per sample) or ``(*pixel_shape)`` (one for all). ``1`` = observed,
``0`` = erased.

Mask families (all reproducible: random ones draw from an explicit seed or
:class:`numpy.random.Generator`), also usable by name through
:func:`parse_mask` (the CLI's ``--mask``). Grammar of a spec, one of::

    random:P        random pixels, a fraction P in [0, 1] of the pixels erased
                    (exactly round(P * n_pixels) of them, drawn per sample)
    blocks:NxS      N random square blocks of S x S pixels erased, per sample
                    (blocks may overlap); also blocks:NxSHxSW for rectangles
                    (N <= H * W, S <= H and S <= W)
    center:S        the centre S x S square erased (S <= min(H, W))
    half:SIDE       half of the image erased, SIDE in top|bottom|left|right
                    (the erased half is ceil(H/2) rows or ceil(W/2) columns)
    rows:K          horizontal stripes: rows i with (i // K) odd are erased
                    (alternating bands K pixels thick, the first band kept;
                    K <= H)
    cols:K          vertical stripes, the same on columns (K <= W)
    grid:K          only the lattice i % K == 0 and j % K == 0 is kept, every
                    other pixel erased (K = 2 erases 3/4 of the pixels;
                    K <= max(H, W))
    file:PATH.npz   a user 0/1 array from an .npz (key "mask", or its only
                    array), shape (H, W) or (N, H, W); file:PATH.npz:KEY
                    takes the array KEY
    ones            nothing erased (sanity runs)

Every count and size must fit the image: one that does not raises
:class:`~refinv.errors.MaskSpecError` (a :class:`~refinv.errors.MaskError`
and a :class:`~refinv.errors.ConfigError`) when the mask is drawn for an
image size, before any work.

Random families give each image its own draw (sample ``i`` of a batch gets
the ``i``-th draw from the generator); deterministic ones give one mask for
the whole batch. Everything here is host NumPy: masks are drawn once and
moved to the solver's device with :func:`refinv.backend.from_numpy`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import as_generator, from_numpy, namespace
from ..errors import ConfigError, MaskError, MaskSpecError, ShapeError
from ..io import is_file, load_npz

__all__ = [
    "pixel_shape",
    "validate_mask",
    "expand_mask",
    "erase",
    "random_pixels",
    "random_blocks",
    "center_square",
    "half_image",
    "stripes",
    "grid",
    "MaskSpec",
    "parse_mask",
    "MASK_GRAMMAR",
]

from .._constants import MASK_GRAMMAR  # noqa: E402  (defined without imports: refinv --help)


def pixel_shape(sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a per-pixel mask for samples of ``sample_shape``.

    ``(C, H, W) -> (H, W)``; ``(H, W) -> (H, W)``; ``(n,) -> (n,)``.
    """
    s = tuple(int(d) for d in sample_shape)
    if len(s) == 3:
        return s[1:]
    if len(s) in (1, 2):
        return s
    raise ShapeError(f"expected a sample shape (C, H, W), (H, W) or (n,), got {s}")


def validate_mask(mask: Any, pshape: tuple[int, ...], *, batch: int | None = None) -> np.ndarray:
    """Check a user mask and return it as a host ``bool`` array.

    Accepts ``pshape`` (one mask for all samples) or ``(batch, *pshape)``.
    Values must be exactly 0 or 1 (bool, integer or float); anything else,
    NaN included, raises :class:`~refinv.errors.MaskError`.
    """
    a = np.asarray(mask)
    pshape = tuple(int(d) for d in pshape)
    shape = tuple(a.shape)
    batched = len(shape) == len(pshape) + 1 and shape[1:] == pshape
    if not (shape == pshape or (batched and (batch is None or shape[0] == batch))):
        nb = "N" if batch is None else str(batch)
        raise MaskError(
            f"mask: expected shape {pshape} or ({nb}, {', '.join(map(str, pshape))}) "
            f"(one 0/1 value per pixel), got {shape}"
        )
    if a.dtype == bool:
        return a
    if not (np.issubdtype(a.dtype, np.number)):
        raise MaskError(f"mask: expected a numeric 0/1 array, got dtype {a.dtype}")
    bad = ~((a == 0) | (a == 1))
    if bad.any():
        vals = np.unique(a[bad])[:5]
        raise MaskError(
            f"mask: expected only the values 0 (erased) and 1 (observed), got "
            f"{int(bad.sum())} other entries, e.g. {vals.tolist()}"
        )
    return a == 1


def expand_mask(mask: Any, sample_shape: tuple[int, ...], batch: int, *, like: Any) -> Any:
    """A 0/1 float mask of shape ``(batch, *shape)`` that broadcasts against ``like``.

    For ``(C, H, W)`` samples the result is ``(batch, 1, H, W)`` (one value per
    pixel, shared by its channels); otherwise ``(batch, *sample_shape)``.
    The mask may be host NumPy (validated here) or already an array of
    ``like``'s namespace holding 0/1 values.
    """
    pshape = pixel_shape(sample_shape)
    xp = namespace(like)
    if isinstance(mask, np.ndarray) or not hasattr(mask, "__array_namespace__"):
        m = validate_mask(mask, pshape, batch=batch)
        m = np.broadcast_to(m, (batch, *pshape))
        if len(sample_shape) == 3:
            m = m[:, None]
        return xp.astype(from_numpy(np.ascontiguousarray(m), like=like), like.dtype)
    if tuple(mask.shape) == pshape:
        mask = xp.broadcast_to(mask, (batch, *pshape))
    if tuple(mask.shape) != (batch, *pshape):
        raise MaskError(f"mask: expected shape {pshape} or {(batch, *pshape)}, got {mask.shape}")
    mask = xp.astype(mask, like.dtype)
    if len(sample_shape) == 3:
        mask = xp.expand_dims(mask, axis=1)
    return mask


def erase(
    x: Any, mask: Any, *, noise_std: float = 0.0, rng: int | np.random.Generator | None = None
) -> Any:
    """The degradation ``y = H x + e``: erased pixels set to 0, plus optional noise.

    Parameters
    ----------
    x : array, shape (batch, *sample_shape)
        Clean samples (NumPy or any array-API array; same type returned).
    mask : array-like of 0/1, shape ``pixel_shape`` or ``(batch, *pixel_shape)``
        ``1`` observed, ``0`` erased; applies to every channel of a pixel.
    noise_std : float
        Standard deviation of the i.i.d. Gaussian noise ``e`` (0: none).
    rng : int or numpy.random.Generator
        Source of the noise (required when ``noise_std > 0``; drawn on the host).
    """
    xp = namespace(x)
    if noise_std < 0 or not math.isfinite(noise_std):
        raise ConfigError(f"noise_std: expected a finite number >= 0, got {noise_std}")
    h = expand_mask(mask, tuple(x.shape[1:]), int(x.shape[0]), like=x)
    y = h * x
    if noise_std > 0:
        if rng is None:
            raise ConfigError("erase: noise_std > 0 needs an explicit rng (seed or Generator)")
        e = as_generator(rng).standard_normal(tuple(x.shape)) * noise_std
        y = y + from_numpy(e.astype(np.dtype(str(x.dtype))), like=x)
    return xp.asarray(y)


# ---------------------------------------------------------------- families
def _check_pshape(pshape: tuple[int, ...], family: str, need_2d: bool = True) -> tuple[int, ...]:
    pshape = tuple(int(d) for d in pshape)
    if need_2d and len(pshape) != 2:
        hint = ""
        if len(pshape) == 1:
            hint = (
                "; for a flat model (N, D) give the image shape of its samples: "
                "OnnxModel(..., image_shape=(C, H, W)) or --image-shape CxHxW (or data (N, C, H, W))"
            )
        raise ShapeError(f"{family} masks need 2-D pixels (H, W), got pixel shape {pshape}{hint}")
    return pshape


def random_pixels(
    pshape: tuple[int, ...], fraction: float, rng: int | np.random.Generator | None, n: int = 1
) -> np.ndarray:
    """``n`` masks with exactly ``round(fraction * n_pixels)`` random pixels erased each."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"random: expected an erased fraction in [0, 1], got {fraction}")
    g = as_generator(rng)
    npix = int(np.prod(pshape))
    k = round(fraction * npix)
    out = np.ones((n, npix), dtype=bool)
    for i in range(n):
        out[i, g.permutation(npix)[:k]] = False
    return out.reshape((n, *pshape))


def random_blocks(
    pshape: tuple[int, ...],
    n_blocks: int,
    size: tuple[int, int],
    rng: int | np.random.Generator | None,
    n: int = 1,
) -> np.ndarray:
    """``n`` masks, each with ``n_blocks`` random blocks of ``size`` erased (may overlap)."""
    H, W = _check_pshape(pshape, "blocks")
    bh, bw = size
    if not (0 <= n_blocks <= H * W and 1 <= bh <= H and 1 <= bw <= W):
        raise MaskSpecError(
            f"blocks: expected 0 to {H * W} blocks (the pixel count) of a size between 1x1 and "
            f"{H}x{W} (the image), got {n_blocks} blocks of {bh}x{bw}"
        )
    g = as_generator(rng)
    out = np.ones((n, H, W), dtype=bool)
    for i in range(n):
        for _ in range(n_blocks):
            r = int(g.integers(0, H - bh + 1))
            c = int(g.integers(0, W - bw + 1))
            out[i, r : r + bh, c : c + bw] = False
    return out


def center_square(pshape: tuple[int, ...], size: int) -> np.ndarray:
    """The centred ``size x size`` square erased (offset ``(H - size) // 2``)."""
    H, W = _check_pshape(pshape, "center")
    if not 0 <= size <= min(H, W):
        raise MaskSpecError(
            f"center: expected a square size in [0, {min(H, W)}] (fits the {H}x{W} image), "
            f"got {size}"
        )
    m = np.ones((H, W), dtype=bool)
    r, c = (H - size) // 2, (W - size) // 2
    m[r : r + size, c : c + size] = False
    return m


def half_image(pshape: tuple[int, ...], side: str) -> np.ndarray:
    """Half of the image erased: ``side`` in ``top``, ``bottom``, ``left``, ``right``."""
    H, W = _check_pshape(pshape, "half")
    m = np.ones((H, W), dtype=bool)
    hh, hw = (H + 1) // 2, (W + 1) // 2
    if side == "top":
        m[:hh] = False
    elif side == "bottom":
        m[H - hh :] = False
    elif side == "left":
        m[:, :hw] = False
    elif side == "right":
        m[:, W - hw :] = False
    else:
        raise ConfigError(f"half: expected top, bottom, left or right, got {side!r}")
    return m


def stripes(pshape: tuple[int, ...], width: int, *, axis: str = "rows") -> np.ndarray:
    """Alternating stripes ``width`` pixels thick; the odd bands (``(i // width) % 2 == 1``) erased."""
    H, W = _check_pshape(pshape, axis)
    if width < 1:
        raise ConfigError(f"{axis}: expected a stripe width >= 1, got {width}")
    n = H if axis == "rows" else W
    if axis in ("rows", "cols") and width > n:
        raise MaskSpecError(
            f"{axis}: expected a stripe width in [1, {n}] (fits the {H}x{W} image), got {width}"
        )
    if axis == "rows":
        keep = (np.arange(H) // width) % 2 == 0
        return np.repeat(keep[:, None], W, axis=1)
    if axis == "cols":
        keep = (np.arange(W) // width) % 2 == 0
        return np.repeat(keep[None, :], H, axis=0)
    raise ConfigError(f"stripes: expected axis 'rows' or 'cols', got {axis!r}")


def grid(pshape: tuple[int, ...], step: int) -> np.ndarray:
    """Keep only the lattice ``i % step == 0 and j % step == 0``; erase every other pixel."""
    H, W = _check_pshape(pshape, "grid")
    if step < 1:
        raise ConfigError(f"grid: expected a step >= 1, got {step}")
    if step > max(H, W):
        raise MaskSpecError(
            f"grid: expected a step in [1, {max(H, W)}] (fits the {H}x{W} image), got {step}"
        )
    rows = np.arange(H) % step == 0
    cols = np.arange(W) % step == 0
    return rows[:, None] & cols[None, :]


# ---------------------------------------------------------------- specs
@dataclass(frozen=True)
class MaskSpec:
    """A parsed mask specification (see :func:`parse_mask` for the grammar).

    ``random`` is True for families drawn per sample from the seed.
    """

    family: str
    params: tuple = ()
    text: str = ""
    array: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def random(self) -> bool:
        return self.family in ("random", "blocks")

    def draw(
        self,
        pshape: tuple[int, ...],
        n: int,
        rng: int | np.random.Generator | None = None,
    ) -> np.ndarray:
        """Masks for ``n`` samples: bool ``(n, *pshape)``, 1 = observed.

        Random families draw one mask per sample, in order, from ``rng`` (a
        seed or a Generator; required). Deterministic ones are broadcast (a
        read-only view).
        """
        pshape = tuple(int(d) for d in pshape)
        fam, p = self.family, self.params
        if self.random and rng is None:
            raise ConfigError(f"mask {self.text!r} is random: pass a seed or a Generator")
        if fam == "random":
            return random_pixels(pshape, p[0], rng, n)
        if fam == "blocks":
            return random_blocks(pshape, p[0], (p[1], p[2]), rng, n)
        if fam == "center":
            m = center_square(pshape, p[0])
        elif fam == "half":
            m = half_image(pshape, p[0])
        elif fam in ("rows", "cols"):
            m = stripes(pshape, p[0], axis=fam)
        elif fam == "grid":
            m = grid(pshape, p[0])
        elif fam == "ones":
            m = np.ones(pshape, dtype=bool)
        elif fam == "file":
            assert self.array is not None
            m = validate_mask(self.array, pshape, batch=n)
            if m.ndim == len(pshape) + 1:
                return m
        else:  # pragma: no cover - parse_mask only builds known families
            raise ConfigError(f"unknown mask family {fam!r}")
        return np.broadcast_to(m, (n, *pshape))

    def __str__(self) -> str:
        return self.text


def _int(s: str, what: str, spec: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise ConfigError(f"mask {spec!r}: expected an integer {what}, got {s!r}") from None
    return v


def parse_mask(spec: str | os.PathLike) -> MaskSpec:
    """Parse a mask spec such as ``random:0.5``, ``center:4``, ``blocks:3x2``.

    Grammar (``MASK_GRAMMAR``): ``random:P`` (fraction P of pixels erased),
    ``blocks:NxS`` or ``blocks:NxSHxSW`` (N random blocks), ``center:S``,
    ``half:top|bottom|left|right``, ``rows:K``, ``cols:K`` (stripes K thick),
    ``grid:K`` (keep the K-lattice), ``file:PATH.npz`` (key ``mask`` or the
    only array; ``file:PATH.npz:KEY`` for the array ``KEY``), ``ones``. Errors raise
    :class:`~refinv.errors.ConfigError`
    (a bad file's values/shape raise :class:`~refinv.errors.MaskError` when drawn).
    """
    text = str(spec).strip()
    fam, _, arg = text.partition(":")
    fam = fam.lower()
    if fam == "ones" and not arg:
        return MaskSpec("ones", (), text)
    if not arg:
        raise ConfigError(f"mask {text!r}: expected FAMILY:ARG, one of {MASK_GRAMMAR}")
    if fam == "random":
        try:
            p = float(arg)
        except ValueError:
            raise ConfigError(f"mask {text!r}: expected a fraction, got {arg!r}") from None
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"mask {text!r}: expected an erased fraction in [0, 1], got {p}")
        return MaskSpec("random", (p,), text)
    if fam == "blocks":
        parts = arg.lower().split("x")
        if len(parts) not in (2, 3):
            raise ConfigError(f"mask {text!r}: expected blocks:NxS or blocks:NxSHxSW")
        nums = [_int(s, "block count/size", text) for s in parts]
        if len(nums) == 2:
            nums.append(nums[1])
        if nums[0] < 0 or nums[1] < 1 or nums[2] < 1:
            raise ConfigError(f"mask {text!r}: expected N >= 0 and sizes >= 1")
        return MaskSpec("blocks", tuple(nums), text)
    if fam in ("center", "rows", "cols", "grid"):
        k = _int(arg, "size", text)
        if k < (0 if fam == "center" else 1):
            raise ConfigError(f"mask {text!r}: expected a positive size, got {k}")
        return MaskSpec(fam, (k,), text)
    if fam == "half":
        side = arg.lower()
        if side not in ("top", "bottom", "left", "right"):
            raise ConfigError(f"mask {text!r}: expected half:top|bottom|left|right")
        return MaskSpec("half", (side,), text)
    if fam == "file":
        # file:PATH.npz or file:PATH.npz:KEY (a path that exists as given wins, so a
        # file name with a colon still works)
        path, key = Path(arg), None
        head, sep, tail = arg.rpartition(":")
        if sep and head and tail and not is_file(path, "mask file"):
            path, key = Path(head), tail
        try:
            arrays = load_npz(path)  # never unpickles
        except ConfigError as exc:
            raise ConfigError(f"mask {text!r}: {exc}") from exc
        if key is not None:
            if key not in arrays:
                raise ConfigError(
                    f"mask {text!r}: expected a key of {path} after ':', one of "
                    f"{sorted(arrays)}; got {key!r}"
                )
            a = arrays[key]
        elif "mask" in arrays:
            a = arrays["mask"]
        elif len(arrays) == 1:
            a = next(iter(arrays.values()))
        else:
            raise ConfigError(
                f"mask {text!r}: expected a key 'mask' or one array (or file:PATH.npz:KEY), "
                f"got {sorted(arrays)}"
            )
        params = (str(path),) if key is None else (str(path), key)
        return MaskSpec("file", params, text, array=np.asarray(a))
    raise ConfigError(f"mask {text!r}: unknown family {fam!r}; expected one of {MASK_GRAMMAR}")


def draw_masks(
    spec: str | MaskSpec, sample_shape: tuple[int, ...], n: int, seed: Any = None
) -> np.ndarray:
    """Convenience: ``parse_mask(spec).draw(pixel_shape(sample_shape), n, seed)``."""
    ms = spec if isinstance(spec, MaskSpec) else parse_mask(spec)
    return ms.draw(pixel_shape(sample_shape), n, seed)


__all__.append("draw_masks")
