"""The memorization report's figures: renderers of a report document (and of the store's
images), drawn with Pillow and matplotlib (the ``plot`` extra) without pyplot.

:func:`figure_examples` is one grid of original / degraded / recovered / mask images per
run; :func:`figure_rate_vs_loss` the accurate-recovery rate against the train loss (the
paper's Figure 3); :func:`report_figures` writes both for a report from its store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = [
    "FIGURES_EXTRA",
    "require_figure_dependencies",
    "figure_examples",
    "figure_rate_vs_loss",
    "png_bytes",
    "report_figures",
]

#: The extra that figures need: matplotlib (its DejaVu font, the rate-vs-loss plot) and
#: Pillow (PNG files, text; installed with matplotlib).
FIGURES_EXTRA = "plot"


def require_figure_dependencies(what: str = "figures") -> None:
    """Import matplotlib and Pillow; a :class:`~refinv.errors.ConfigError` naming the
    ``plot`` extra when either is missing."""
    missing = []
    for module, dist in (("matplotlib", "matplotlib"), ("PIL", "Pillow")):
        try:
            __import__(module)
        except ImportError:
            missing.append(dist)
    if missing:
        raise ConfigError(
            f"{what} need {' and '.join(missing)}, the packages of the '{FIGURES_EXTRA}' extra; "
            f"install them with: pip install 'refinv[{FIGURES_EXTRA}]'"
        )


def _figure_class():
    """matplotlib's ``Figure``, drawn without pyplot: the user's backend is never switched."""
    require_figure_dependencies()
    from matplotlib.figure import Figure

    return Figure


def _img(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
    elif a.ndim == 1:
        s = int(round(np.sqrt(a.size)))
        a = a.reshape(s, -1) if s * s == a.size else a[None, :]
    return np.clip(a, 0.0, 1.0)


_FONTS: dict[float, Any] = {}


def _font(size: float = 8.0) -> Any:
    """DejaVu Sans (shipped with matplotlib) at ``size`` points on a 100 dpi page, for Pillow."""
    if size not in _FONTS:
        import os

        from matplotlib import get_data_path
        from PIL import ImageFont

        path = os.path.join(get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
        _FONTS[size] = ImageFont.truetype(path, size=round(size * 100 / 72))
    return _FONTS[size]


def png_bytes(img: np.ndarray) -> bytes:
    """A PNG file (8-bit grayscale ``(H, W)`` or RGB ``(H, W, 3)`` uint8) from an array
    (encoded by Pillow)."""
    import io

    from PIL import Image

    a = np.ascontiguousarray(img, dtype=np.uint8)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3) or 0 in a.shape:
        raise ValueError(
            f"png_bytes: expected a non-empty (H, W) or (H, W, 3) array, got {a.shape}"
        )
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _tile_scale(hw: tuple[int, int]) -> int:
    """Nearest-neighbour magnification of one image in the example grids (about 100 px)."""
    return max(1, round(100 / max(hw)))


def figure_examples(
    path: str | Path,
    *,
    x: np.ndarray,
    y: np.ndarray,
    xhat: np.ndarray,
    h_true: np.ndarray,
    h_est: np.ndarray | None = None,
    mse: Sequence[float | None] | None = None,
    checkpoint: str = "",
    mask: str = "",
    method: str = "",
    split: str = "",
    x_control: np.ndarray | None = None,
    mse_control: Sequence[float | None] | None = None,
) -> Path:
    """Grid: original / degraded / recovered / [control] / estimated mask (true mask if none),
    one column per image; ``x_control`` (the model-free control's images, with their
    ``mse_control``) adds the row "control (no model)".

    Drawn from the pixels with Pillow (no plotting figure): each image magnified by
    :func:`_tile_scale` (nearest neighbour, gray levels 0..1 -> 0..255, clipped), row
    names on the left, the recovered images' MSE above them and
    ``checkpoint | mask | method | split`` on top, in matplotlib's DejaVu Sans.
    """
    require_figure_dependencies()
    from PIL import Image, ImageDraw

    from ..io import atomic_write_bytes

    k = int(x.shape[0])
    rows = [("original", x), ("degraded", y), ("recovered", xhat)]
    if x_control is not None:
        rows.append(("control (no model)", x_control))
    rows.append(("estimated mask", h_est) if h_est is not None else ("true mask", h_true))
    tiles = [[_img(arr[j]) for j in range(k)] for _, arr in rows]
    hw = tiles[0][0].shape[:2] if k else (1, 1)
    sc = _tile_scale(hw)
    th, tw = hw[0] * sc, hw[1] * sc
    gap, cap, title_h = 6, 14, 20
    label_w = 12 + max(round(_font().getlength(name)) for name, _ in rows)
    colour = any(t.ndim == 3 for r in tiles for t in r)
    width = label_w + max(k, 1) * (tw + gap) + gap
    height = title_h + len(rows) * (cap + th + gap) + gap
    im = Image.new("RGB" if colour else "L", (width, height), "white")
    draw = ImageDraw.Draw(im)

    def text(s: str, left: int, top: int, h: int, size: float = 8.0) -> None:
        """Black text from ``left``, vertically centred in ``[top, top + h)``."""
        draw.text((left, top + h / 2), s, fill="black", font=_font(size), anchor="lm")

    text(f"{checkpoint} | {mask} | {method} | {split}", gap, 2, title_h - 2, 9.0)
    for i, (name, _) in enumerate(rows):
        top = title_h + i * (cap + th + gap) + cap
        text(name, 4, top, th)
        for j in range(k):
            left = label_w + j * (tw + gap)
            err = mse if i == 2 else (mse_control if i == 3 and x_control is not None else None)
            if err is not None and err[j] is not None:
                text(f"MSE {err[j]:.1e}", left, top - cap, cap, 7.0)
            t = np.round(tiles[i][j] * 255.0).astype(np.uint8)
            t = np.repeat(np.repeat(t, sc, axis=0), sc, axis=1)
            if colour and t.ndim == 2:
                t = np.repeat(t[..., None], 3, axis=2)
            im.paste(Image.fromarray(t), (left, top))
    return atomic_write_bytes(path, png_bytes(np.asarray(im)))


def figure_rate_vs_loss(doc: dict, path: str | Path) -> Path:
    """Accurate recovery rate (train) vs train loss, one line per (mask, method): paper's Fig. 3.

    With the control, its accurate rate on the training images of each mask is a dotted
    horizontal line (the model-free level)."""
    import io

    from ..io import atomic_write_bytes
    from .control import control_index

    Figure = _figure_class()

    by: dict[tuple, list] = {}
    for r in doc["runs"]:
        if r["split"] == "train" and r["train_loss"] is not None:
            by.setdefault((r["mask"], r["method"]), []).append(
                (r["train_loss"], r["accurate_rate"])
            )
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for (mask, method), pts in sorted(by.items()):
        pts.sort()
        ax.plot(
            [p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=f"{method}, {mask}"
        )
    for (mask, split), c in sorted(control_index(doc).items()):
        if split == "train":
            ax.axhline(
                100 * c["accurate_rate"], ls=":", color="0.4", lw=1, label=f"control, {mask}"
            )
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("train loss (MSE)")
    ax.set_ylabel("accurate recovery rate (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in s)[:40]


def report_figures(doc: dict, store: Any, out: str | Path, task_of: dict) -> list[Path]:
    """The example grid of every run of ``doc`` (the images the store kept for it; with the
    control, its inpaintings of the same images as a row) and, with two or more
    checkpoints, the rate-vs-train-loss figure, written to ``out``.

    ``task_of`` maps a run's ``(checkpoint, mask, method, split)`` (and the control's, under
    its own checkpoint and method) to the task that kept its first images."""
    from ..engine.plan import CONTROL, CONTROL_CHECKPOINT
    from .control import control_index

    out = Path(out)
    ctl = control_index(doc)
    written = []
    for i, r in enumerate(doc["runs"]):
        key = (r["checkpoint"], r["mask"], r["method"], r["split"])
        a = store.arrays(task_of[key], ("x", "y", "x_hat", "h_true", "h_est"))
        k = len(a["x"])
        extra = {}
        c_task = task_of.get((CONTROL_CHECKPOINT, key[1], CONTROL, key[3]))
        if (key[1], key[3]) in ctl and c_task is not None:
            xc = store.arrays(c_task, ("x_hat",)).get("x_hat")
            if xc is not None:
                extra = {"x_control": xc[:k], "mse_control": ctl[(key[1], key[3])]["mse"][:k]}
        name = f"{i:03d}_{_slug(key[0])}_{_slug(key[1])}_{key[2]}_{key[3]}.png"
        written.append(
            figure_examples(
                out / name,
                x=a["x"],
                y=a["y"],
                xhat=a["x_hat"],
                h_true=a["h_true"],
                h_est=a.get("h_est"),
                mse=r["mse"][:k],
                checkpoint=key[0],
                mask=key[1],
                method=key[2],
                split=key[3],
                **extra,
            )  # fmt: skip
        )
    if len(doc["checkpoints"]) > 1:
        written.append(figure_rate_vs_loss(doc, out / "rate_vs_train_loss.png"))
    return written
