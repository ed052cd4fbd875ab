"""The audit report's figures (matplotlib figures drawn without pyplot: the user's backend is
never switched), each returned as PNG bytes at 150 dpi, laid out by matplotlib's constrained
layout, with their legends outside the axes (they covered the tallest bars)."""

from __future__ import annotations

import io

import numpy as np

from ..evaluation.report import _img

__all__ = [
    "roc_figure",
    "exposure_figure",
    "control_figure",
    "gallery_figure",
    "rate_vs_loss_figure",
]


#: resolution of the report's PNGs (sharp on high-density screens, ~100-200 kB per figure)
DPI = 150


def _subplots(*grid, figsize=None, **kw):
    """``pyplot.subplots`` without pyplot: a standalone ``Figure`` and its axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(*grid, **kw)


def _legend_outside(ax, *handles_labels, **kw) -> None:
    """The legend to the right of the axes, off the data (``handles, labels`` of another
    axes may be given)."""
    ax.legend(*handles_labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0.0, **kw)  # fmt: skip


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def roc_figure(scores: list[dict]) -> bytes:
    """ROC curves of the membership scores: linear axes, and log-log (low FPR)."""
    fig, axes = _subplots(1, 2, figsize=(10, 4.0))
    for s in scores:
        fpr = np.asarray(s["roc"]["fpr"])
        tpr = np.asarray(s["roc"]["tpr"])
        lab = f"{s['name']} (AUC {s['auc']:.2f})"
        (line,) = axes[0].plot(fpr, tpr, label=lab)
        # log-log: FPR 0 cannot be drawn; those points sit at 0.5/n0, marked as such
        floor = 0.5 / max(s["n_nonmembers"], 1)
        axes[1].plot(np.maximum(fpr, floor), np.maximum(tpr, floor), color=line.get_color())
        zero = fpr == 0
        if np.any(zero & (tpr > 0)):
            axes[1].plot(np.full(int(zero.sum()), floor), np.maximum(tpr[zero], floor), "<",
                         color=line.get_color(), ms=5)  # fmt: skip
    if scores:
        f0 = 0.5 / max(scores[0]["n_nonmembers"], 1)
        axes[1].axvline(f0, color="0.6", lw=0.8, ls="--")
        axes[1].annotate("FPR = 0\n(drawn at 0.5/n)", (f0, 1.0), xytext=(4, -4),
                         textcoords="offset points", fontsize=6, va="top", color="0.35")  # fmt: skip
    for ax in axes:
        ax.plot([0, 1], [0, 1], ":", color="0.5", label="chance")
        ax.set_xlabel("false-positive rate (held-out called member)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("true-positive rate (training called member)")
    axes[1].set_ylabel("true-positive rate (log)")  # short: the long one ran into the left panel
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_title("log-log (low FPR)", fontsize=9)
    axes[0].set_title("ROC", fontsize=9)
    # one legend for both panels (the lines of the left one; the right repeats them), outside
    _legend_outside(axes[1], *axes[0].get_legend_handles_labels())
    return _png(fig)


def exposure_figure(doc: dict, per_image: dict) -> bytes:
    """Per-image best recovery PSNR, training vs held-out (histograms)."""
    fig, ax = _subplots(figsize=(7.5, 3.2))
    cap = doc["recovery"]["thresholds"]["psnr_cap_db"]
    bins = np.linspace(0, cap, 41)
    for split, color, name in (("train", "C3", "training"), ("test", "C0", "held-out")):
        pi = per_image[split]
        best = np.array(
            [
                pi["cols"][bs][1][i] if bs is not None else 0.0
                for i, bs in enumerate(pi["best_setting"])
            ]
        )
        ax.hist(best, bins=bins, alpha=0.6, color=color, label=f"{name} (n={len(best)})")
    ax.axvline(70, color="k", ls="--", lw=1, label="accurate (MSE 1e-7 = 70 dB)")
    ax.set_xlabel("best recovery PSNR over masks and methods (dB)")
    ax.set_ylabel("images")
    _legend_outside(ax)
    ax.grid(alpha=0.3)
    return _png(fig)


def control_figure(doc: dict) -> bytes:
    """Mean PSNR per mask: model recovery (primary method) vs the inpainting control."""
    label = doc["model"]
    method = doc["settings"]["primary"]["method"]
    masks = doc["settings"]["masks"]
    rec = {
        (r["mask"], r["split"]): r["mean_psnr"]
        for r in doc["recovery"]["runs"]
        if r["checkpoint"] == label and r["method"] == method
    }
    ctrl = {(c["mask"], c["split"]): c["mean_psnr"] for c in doc["control"]["runs"]}
    fig, ax = _subplots(figsize=(max(4.5, 1.9 * len(masks)) + 2.2, 3.4))  # + the legend
    w = 0.2
    xs = np.arange(len(masks))
    bars = [
        ("recovery, training", rec, "train", "C3"),
        ("recovery, held-out", rec, "test", "C0"),
        ("inpainting control, training", ctrl, "train", "C1"),
        ("inpainting control, held-out", ctrl, "test", "C2"),
    ]
    for k, (name, d, split, color) in enumerate(bars):
        ax.bar(xs + (k - 1.5) * w, [d[(m, split)] for m in masks], w, label=name, color=color)
    ax.set_xticks(xs, masks)
    ax.set_ylabel(f"mean PSNR (dB), {method}")
    _legend_outside(ax)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def _tile(a) -> np.ndarray:
    """One cell of the gallery as an RGB array in [0, 1]."""
    im = _img(np.asarray(a, dtype=np.float64))
    return np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im


def gallery_figure(
    doc: dict, arrays: dict, control_x: dict, x_train, x_test, per_image: dict
) -> bytes:
    """Most exposed training images (the largest gain of the model's recovery over the
    control): original / degraded / recovered through the model / the control's inpainting
    of the same degraded image / estimated mask, over the held-out image with the same
    index, the same mask and the same method. One montage (one axes), so it draws fast
    whatever the number of images."""
    idx = doc["exposure"]["gallery_indices"]
    k = max(len(idx), 1)
    names = ["training", "degraded", "model", "control", "mask (est.)", "held-out",
             "degraded", "model", "control"]  # fmt: skip
    th = doc["recovery"]["thresholds"]["accurate_mse"]
    primary = (doc["settings"]["primary"]["mask"], doc["settings"]["primary"]["method"])
    cols, titles, notes = [], [], []
    for i in idx:
        # the headline setting when it recovers the image accurately, else the image's best
        if per_image["train"]["cols"][primary][0][i] < th:
            mask, method = primary
        else:
            mask, method = per_image["train"]["best_setting"][i] or primary
        a_tr = arrays[(mask, method, "train")]
        h = a_tr["h_est"][i] if a_tr["h_est"].size else a_tr["mask"][i]
        cells = [x_train[i], a_tr["y"][i], a_tr["x_hat"][i], control_x[(mask, "train")][i], h]
        m_tr = per_image["train"]["cols"][(mask, method)][0][i]
        m_te = np.nan
        if i < len(x_test):  # the held-out image with the same index, when there is one
            a_te = arrays[(mask, method, "test")]
            cells += [x_test[i], a_te["y"][i], a_te["x_hat"][i], control_x[(mask, "test")][i]]
            m_te = per_image["test"]["cols"][(mask, method)][0][i]
        cols.append([_tile(c) for c in cells])
        gain = per_image["train"]["best_gain"][i]
        titles.append(f"#{i}  {method}\n{mask}\n+{gain:.0f} dB vs control"
                      if np.isfinite(gain) else f"#{i}  {method}\n{mask}")  # fmt: skip
        notes.append((m_tr, m_te))
    if not cols:
        cols, titles, notes = [[_tile(x_train[0])]], [""], [(np.nan, np.nan)]
    hh, ww = cols[0][0].shape[:2]
    pad = max(2, hh // 8)
    H = len(names) * (hh + pad) + pad
    W = k * (ww + pad) + pad
    canvas = np.ones((H, W, 3))
    for j, col in enumerate(cols):
        for r, cell in enumerate(col):
            y0, x0 = pad + r * (hh + pad), pad + j * (ww + pad)
            canvas[y0 : y0 + hh, x0 : x0 + ww] = cell
    fig, ax = _subplots(figsize=(1.3 * k + 1.2, 1.25 * len(names) + 0.6))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([pad + j * (ww + pad) + ww / 2 for j in range(len(cols))], titles, fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([pad + r * (hh + pad) + hh / 2 for r in range(len(names))], names, fontsize=8)
    for j, (m_tr, m_te) in enumerate(notes):
        x = pad + j * (ww + pad) + ww / 2
        for r, m in ((2, m_tr), (7, m_te)):
            if r == 7 and len(cols[j]) < 9:
                continue
            txt = f"MSE {m:.0e}" if np.isfinite(m) else "diverged"
            ax.text(x, pad + r * (hh + pad) + hh + pad * 0.45, txt, ha="center", va="center",
                    fontsize=6, color="C3" if np.isfinite(m) and m < th else "0.2")  # fmt: skip
    for side in ax.spines.values():
        side.set_visible(False)
    ax.tick_params(length=0)
    return _png(fig)


def rate_vs_loss_figure(doc: dict) -> bytes:
    """Accurate recovery rate vs train loss per (mask, method); solid training, dashed held-out."""
    loss = {c["label"]: c["train_loss"] for c in doc["recovery"]["checkpoints"]}
    by: dict[tuple, list] = {}
    for r in doc["recovery"]["runs"]:
        by.setdefault((r["mask"], r["method"], r["split"]), []).append(
            (max(loss[r["checkpoint"]], 1e-30), 100 * r["accurate_rate"])
        )
    fig, ax = _subplots(figsize=(7.5, 3.6))
    colors: dict[tuple, str] = {}
    for (mask, method, split), pts in sorted(by.items()):
        pts.sort()
        c = colors.setdefault((mask, method), f"C{len(colors) % 10}")
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            "-o" if split == "train" else "--x",
            color=c,
            label=f"{method}, {mask}" if split == "train" else None,
        )
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("train loss (MSE), measured on the training images")
    ax.set_ylabel("accurate recovery rate (%)")
    ax.set_title("solid: training images; dashed: held-out", fontsize=8)
    _legend_outside(ax)
    ax.grid(alpha=0.3)
    return _png(fig)
