"""
Watching the mask estimate converge
===================================

Blind recovery alternates an x-step (plug-and-play ADMM with the
autoencoder) and a closed-form mask step (eq. 20 of Abitbul and Dar, 2023)::

    h_i = 1  if  (y_i - x_i)^2 <= y_i^2  else  0

The mask starts as a guess (here i.i.d. Bernoulli(1/2), the paper's choice
for fully connected models, passed explicitly as ``mask_init="bernoulli"``) and, on a memorized image, converges to the
true mask within a few outer iterations: this is Figure 2 of Abitbul and Dar (2023).

We follow the mask error (the fraction of pixels whose observed/erased
label is wrong) at every outer iteration with the solver's ``callback``,
and the relative change of ``x`` (the stopping quantity) with
``record_history=True``.
"""

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import refinv
from refinv.onnx import OnnxModel
from refinv.operators.masks import draw_masks, erase
from refinv.solvers.recovery import blind_recovery, initial_mask

FAST = os.environ.get("REFINV_DOCS_FAST") == "1"
N = 8 if FAST else 40  # images per split
T = 30 if FAST else 100  # outer iterations
if FAST:  # label the numbers of a fast build as such
    print("FAST MODE (REFINV_DOCS_FAST=1, as CI builds these pages):")
    print("  8 images per split instead of 40, 30 outer iterations instead of 100:")
    print("  the numbers below check that the code runs; they are not the results")

MODELS = Path(refinv.__file__).resolve().parents[1] / "models"
f = OnnxModel(MODELS / "onnx" / "faces25_lrelu_6x256.onnx")
data = np.load(MODELS / "data" / "faces25.npz", allow_pickle=False)
masks = draw_masks("random:0.5", (1, 25, 25), N, seed=0)  # (N, 25, 25), 1 = observed

# %%
# The callback
# ------------
# :func:`~refinv.solvers.run_loop` calls ``callback(k, state, residual)``
# after outer iteration ``k`` with the state of the samples *still running*
# (a sample that converged has left the batch). The state carries the data
# ``y`` of each sample, which tells us which images are still active. We
# pass ``tol=0`` so that every image runs all ``T`` iterations, and keep a
# snapshot of the mask estimate of the first image.


def track(y):
    index = {np.asarray(row).tobytes(): i for i, row in enumerate(y)}
    errors = np.full((T + 1, len(y)), np.nan)
    snapshots = {}

    def callback(k, state, residual):
        h = np.asarray(state.h)[:, 0]  # (active, 25, 25)
        for row, hk in zip(np.asarray(state.y), h, strict=True):
            i = index[row.tobytes()]
            errors[k, i] = np.mean(hk != masks[i])
            if i == 0:
                snapshots[k] = hk.copy()

    return errors, snapshots, callback


results = {}
for split in ("train", "test"):
    x = data[split][:N]
    y = erase(x, masks)
    errors, snapshots, callback = track(y)
    res = blind_recovery(
        f,
        y,
        mask_init="bernoulli",
        rng=0,
        max_iter=T,
        tol=0.0,
        clip=True,
        callback=callback,
        record_history=True,
        progress=False,
    )
    h0 = np.asarray(initial_mask("bernoulli", y, rng=0))[:, 0]  # the solver's h^0 (same rng)
    errors[0] = np.mean(h0 != masks, axis=(1, 2))
    mse = np.mean((np.asarray(res.x, dtype=np.float64) - x).reshape(N, -1) ** 2, axis=1)
    results[split] = (errors, snapshots, res, mse)
    print(
        f"{split:>5}: mask error mean {np.nanmean(errors[T]):.3f}, "
        f"median {np.nanmedian(errors[T]):.3f}; "
        f"recovered (MSE < 1e-7) {np.mean(mse < 1e-7):.0%}"
    )

# %%
# Mask error and relative change per outer iteration
# ---------------------------------------------------
# Thin lines are single images, thick lines the mean over images. On the
# training images the mask error drops within a few outer iterations and
# ``x`` stops changing (the relative change reaches the float32 resolution
# of the network, ~1e-6). On held-out images the mask error also drops
# (an erased pixel is easy to spot once the autoencoder puts something
# non-zero there) but stays higher, and ``x`` keeps moving: the estimate is
# not a fixed point that agrees with the data.

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
its = np.arange(0, T + 1)
for split, color, label in (("train", "C0", "training"), ("test", "C1", "held-out")):
    errors, _, res, _ = results[split]
    ax1.plot(its, errors, color=color, alpha=0.2, lw=0.8)
    ax1.plot(its, np.nanmean(errors, axis=1), color=color, lw=2.5, label=label)
    hist = res.history  # (checks, batch): ||x^t - x^{t-1}|| / ||x^{t-1}||
    t = np.arange(1, len(hist) + 1)
    geo = np.exp(np.nanmean(np.log(np.maximum(hist, 1e-300)), axis=1))
    ax2.semilogy(t, hist, color=color, alpha=0.2, lw=0.8)
    ax2.semilogy(t, geo, color=color, lw=2.5, label=label)
ax1.set_xlabel("outer iteration t")
ax1.set_ylabel("mask error (fraction of pixels)")
ax1.set_title("mask estimate vs true mask")
ax1.legend()
ax2.set_xlabel("outer iteration t")
ax2.set_ylabel(r"$\|x^t - x^{t-1}\| / \|x^{t-1}\|$")
ax2.set_title("relative change (geometric mean)")
fig.tight_layout()

# %%
# The mask estimate of one training image
# ---------------------------------------
# Black = erased, white = observed. The estimate starts from the Bernoulli
# guess; after the first x-step it already marks most erased pixels, and it
# locks onto the true mask once ``x`` reproduces the observed pixels. Pixels
# that are 0 in the image remain ambiguous: ``y_i = 0`` whether they were
# erased or not, and eq. 20 keeps them only if ``x_i`` is exactly 0.

_, snaps, _, _ = results["train"]
snaps[0] = np.asarray(initial_mask("bernoulli", data["train"][:N], rng=0))[0, 0]
show = [k for k in (0, 1, 2, 3, 5, 10, T) if k in snaps]
fig, axes = plt.subplots(1, len(show) + 1, figsize=(1.6 * (len(show) + 1), 2.0))
for ax, k in zip(axes, show, strict=False):
    ax.imshow(snaps[k], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"t = {k}", fontsize=8)
axes[-1].imshow(masks[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
axes[-1].set_title("true mask", fontsize=8)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
