"""
How much did this autoencoder memorize?
=======================================

An overparameterized autoencoder trained to (near) zero loss can *memorize*
its training set: erase half of the pixels of a training image, and the
network can put them back exactly, although it cannot do so for an image it
never saw. refinv measures this by **blind recovery** (Abitbul and Dar, 2023): the
degradation ``y = H x`` erases pixels, ``H = diag(h)`` is *unknown*, and
plug-and-play ADMM with the autoencoder ``f`` as the prior alternates with a
closed-form estimate of the mask ``h`` (:doc:`/theory/recovery`).

We compare three methods on the training images and on held-out images:

* **blind**: the mask is estimated (:func:`~refinv.solvers.recovery.blind_recovery`);
* **known**: the true mask is given (:func:`~refinv.solvers.recovery.known_mask_recovery`),
  an upper bound for blind recovery;
* **AE iterations**: ``x <- f(x)`` from ``y`` (:func:`~refinv.solvers.recovery.ae_iterations`),
  the baseline of Radhakrishnan et al., at the same number of calls of ``f``.

An image counts as *recovered* when its MSE is below 1e-7 (PSNR above 70 dB,
images in [0, 1]). Memorization shows as a high rate on the training images
and (near) zero on the held-out ones.
"""

# %%
# The shipped model and its data
# ------------------------------
# ``models/onnx/faces25_lrelu_6x256.onnx`` is a fully connected autoencoder
# 625-256x6-625 with LeakyReLU(0.1), trained on 100 images of 25x25 pixels
# to a training MSE of about 1e-13 (see :doc:`/models`). The images come
# from ``skimage.data.lfw_subset()``, which holds 100 faces and 100 non-face
# patches, so some "faces" below are background patches. The held-out
# images come from the same set and were never trained on.
# ``REFINV_DOCS_FAST=1`` (set in CI) uses fewer images.

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import refinv
from refinv.evaluation.report import format_table, memorization_report
from refinv.evaluation.stability import pnp_admm_stability
from refinv.onnx import OnnxModel
from refinv.operators.masks import draw_masks, erase
from refinv.solvers.recovery import DEFAULTS, blind_recovery

FAST = os.environ.get("REFINV_DOCS_FAST") == "1"
N = 20 if FAST else 100  # images per split
if FAST:  # label the numbers of a fast build as such
    print("FAST MODE (REFINV_DOCS_FAST=1, as CI builds these pages):")
    print("  20 images per split instead of 100:")
    print("  the numbers below check that the code runs; they are not the results")

MODELS = Path(refinv.__file__).resolve().parents[1] / "models"
f = OnnxModel(MODELS / "onnx" / "faces25_lrelu_6x256.onnx")
data = np.load(MODELS / "data" / "faces25.npz", allow_pickle=False)
train, test = data["train"][:N], data["test"][:N]
print(f"model input {f.sample_shape}, {f.dtype}; train {train.shape}, held-out {test.shape}")

# %%
# The memorization report
# -----------------------
# :func:`~refinv.evaluation.report.memorization_report` degrades both splits
# with the same random masks (50% of the pixels erased, image ``i`` of each
# split gets the same mask), runs every method and measures each image.
# The solvers' defaults (printed below: ADMM penalty ``rho``, inner ADMM
# iterations per outer iteration, at most ``max_iter`` outer iterations, the
# initial mask) are the ones the CLI uses; ``clip=True`` projects the
# autoencoder's output onto [0, 1]. Where scikit-image is installed (the
# ``audit`` extra), each rate and PSNR has the model-free control beside it
# (columns ``ctl``): the same degraded images filled in by biharmonic
# inpainting with the true mask, no model.

print("solver defaults:", DEFAULTS)
doc = memorization_report(
    [("faces25_lrelu_6x256", f)],
    train,
    test,
    masks=["random:0.5"],
    methods=["blind", "known", "ae-iterations"],
    seed=0,
    solver={"clip": True},
    progress=False,
)
print(format_table(doc))

# %%
# The same numbers as a bar chart. ``doc`` is the JSON document that
# ``refinv evaluate --json`` writes (schema in :doc:`/cli`): every run
# carries its per-image MSE, PSNR and iteration counts.

methods = ["blind", "known", "ae-iterations"]
rates = {
    (r["method"], r["split"]): 100 * r["accurate_rate"]
    for r in doc["runs"]
    if r["mask"] == "random:0.5"
}
fig, ax = plt.subplots(figsize=(6, 3.2))
xpos = np.arange(len(methods))
ax.bar(xpos - 0.2, [rates[m, "train"] for m in methods], 0.4, label="training images")
ax.bar(xpos + 0.2, [rates[m, "test"] for m in methods], 0.4, label="held-out images")
ax.set_xticks(xpos, methods)
ax.set_ylabel("recovered, MSE < 1e-7 (%)")
ax.set_ylim(0, 100)
ax.set_title("faces25_lrelu_6x256, 50% of the pixels erased")
ax.legend()
fig.tight_layout()

# %%
# Looking at the images
# ---------------------
# The report is built from the solver functions, which we can call directly.
# :func:`~refinv.operators.masks.draw_masks` draws reproducible masks
# (``1`` = observed) and :func:`~refinv.operators.masks.erase` applies them.
# The blind solver returns the estimated mask in ``result.state.h``.

k = 6
masks = draw_masks("random:0.5", train.shape[1:], k, seed=1)
rows = []
for name, x in [("train", train[:k]), ("held-out", test[:k])]:
    y = erase(x, masks)
    res = blind_recovery(f, y, clip=True, progress=False)
    xhat = np.asarray(res.x)
    mse = np.mean((xhat - x).reshape(k, -1).astype(np.float64) ** 2, axis=1)
    h_est = np.asarray(res.state.h).reshape(k, *masks.shape[1:])
    err = np.mean(h_est != masks.reshape(h_est.shape), axis=(1, 2))
    rows.append((name, x, y, xhat, h_est, mse, err))
    print(f"{name:>8}: MSE per image", " ".join(f"{v:.1e}" for v in mse))
    print(f"{'':>8}  mask error   ", " ".join(f"{v:.2f}" for v in err))
    print(f"{'':>8}  outer iterations", res.iterations)

fig, axes = plt.subplots(8, k, figsize=(1.35 * k, 11.5))
labels = ["original", "degraded", "recovered", "estimated mask"]
for b, (name, x, y, xhat, h_est, mse, err) in enumerate(rows):
    for j in range(k):
        ims = [x[j, 0], y[j, 0], np.clip(xhat[j, 0], 0, 1), h_est[j]]
        for i, im in enumerate(ims):
            ax = axes[4 * b + i, j]
            ax.imshow(im, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{name}\n{labels[i]}", fontsize=8)
            if i == 2:
                ax.set_title(f"MSE {mse[j]:.0e}", fontsize=7)
            if i == 3:
                ax.set_title(f"mask err {err[j]:.2f}", fontsize=7)
fig.suptitle("blind recovery: training images (top) vs held-out images (bottom)", fontsize=9)
# sphinx_gallery_thumbnail_number = 2
fig.tight_layout()

# %%
# What to read from it
# --------------------
# * Training images come back to MSE ~1e-14 (far below the 1e-7 threshold)
#   and the estimated mask matches the true one (up to pixels that are
#   exactly 0 in the image, which eq. 20 cannot tell from erased ones).
#   Held-out images are completed with something plausible-looking but
#   wrong, MSE around 1e-2.
# * Known-mask recovery is the upper bound; blind recovery comes close,
#   so the mask step costs little on this model.
# * The AE iterations alone recover almost nothing: low training loss does
#   not make the training images *attractors* of ``x <- f(x)`` (the manifest
#   records the Jacobian spectral radius at each training image). The ADMM
#   data-consistency step is what makes the memorization visible.
# * The control (``ctl``) recovers (almost) no image exactly (1 of the 100
#   training faces at random:0.5, 0 of the held-out ones): an exact rate far
#   above it on training images only is memorization. An
#   APPROXIMATE rate needs the control beside it: on smooth images a generic
#   inpainter reaches MSE < 5e-4 for many images it knows nothing about.
#
# The same report from the command line (see :doc:`/cli`)::
#
#     refinv evaluate models/onnx/faces25_lrelu_6x256.onnx \
#         --train models/data/faces25.npz:train --test models/data/faces25.npz:test \
#         --masks random:0.5 --methods blind,known,ae-iterations --json report.json

# %%
# Is a 0% rate "not memorized" or "not measurable"? The stability check
# ---------------------------------------------------------------------
# A memorized image is a fixed point of the ADMM; an iterate near it converges
# to it if it *attracts* the iteration. :func:`~refinv.evaluation.stability.pnp_admm_stability`
# measures that: the spectral radius of the linearized known-mask ADMM at
# each training image (< 1 attracts, > 1 repels: a local criterion, whose
# agreement with actual outcomes is measured in :doc:`/theory/recovery`). Here on this faces model and on the shipped 8x8
# digits model, which fits its training set just as well (train MSE 2e-13)
# but whose training images are never recovered.

k = 3 if FAST else 10
for name, data_name in [("faces25_lrelu_6x256", "faces25"), ("digits8_lrelu_6x320", "digits8")]:
    g = OnnxModel(MODELS / "onnx" / f"{name}.onnx")
    xs = np.load(MODELS / "data" / f"{data_name}.npz", allow_pickle=False)["train"][:k]
    hs = draw_masks("random:0.5", g.sample_shape, k, seed=0)
    radius = pnp_admm_stability(g, xs, hs, rho=0.5)
    print(f"{name:22s} radius at {k} training images: {np.round(radius, 3)}")

# %%
# Below 1 for faces, above 1 for the 8x8 digits: on that model a 0% rate
# means the method cannot see the memorization, not that there is none.
# ``refinv stability MODEL.onnx DATA.npz`` prints the same per rho.

# %%
# A convolutional autoencoder that memorizes
# ------------------------------------------
# ``models/onnx/colour16_convae_lrelu_c4.onnx`` is a convolutional
# autoencoder on 3x16x16 colour patches: strided 3x3 convs down to a 4x4 code
# of 4 channels (64 values per image), nearest upsampling and convs back up,
# no skip connections, trained on 50 patches by Adam (to train MSE 1.3e-5),
# then finished in closed form: its read-out is a locally connected 3x3 layer
# (own weights at every pixel, 44% of the parameters) solved as the
# minimum-norm interpolant of the 50 training patches (train MSE 3e-14,
# held-out MSE 1e-2; ``models/refit_conv.py``, :doc:`/models`). The exact
# recoveries below depend on that read-out: the same network as Adam left it
# at train MSE 1e-4 recovers 0% of its training patches exactly and 88%
# approximately (22% of the held-out ones; the model-free control 52% / 66%).
# The shipped colour32 U-Nets repel their training images and recover
# nothing; that the skips are the cause is not what the longer U-Net trainings
# found: on 10 patches the same U-Net trained first as a denoiser and then on
# the reconstruction loss (``colour16_unet4_lrelu_dn_n10``, train MSE 3e-8)
# gives back 10 of 10 exactly and 0 of 50 held-out, while trained on the
# reconstruction loss alone to 1e-8 it gives back 2 of 10 (:doc:`/models`,
# :doc:`/theory/recovery`). The same report as for the MLP:

g = OnnxModel(MODELS / "onnx" / "colour16_convae_lrelu_c4.onnx")
colour = np.load(MODELS / "data" / "colour16.npz", allow_pickle=False)
nc = 10 if FAST else 50
doc_conv = memorization_report(
    [("colour16_convae_lrelu_c4", g)],
    colour["train"][:nc],
    colour["test"][:nc],
    masks=["random:0.5"],
    methods=["blind", "known", "ae-iterations"],
    seed=0,
    progress=False,
)
print(format_table(doc_conv))

# %%
# Side by side with the MLP (accurate recovery, MSE < 1e-7; ``refinv evaluate``
# on all 50 patches gives blind 84%, known 90%, AE iterations 0%, held-out 0%, the
# model-free control 0% of the training and 4% of the held-out patches; all with
# the closed-form read-out):

conv_rates = {(r["method"], r["split"]): 100 * r["accurate_rate"] for r in doc_conv["runs"]}
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
panels = [("faces25_lrelu_6x256 (MLP)", rates), ("colour16_convae_lrelu_c4 (conv)", conv_rates)]
for ax, (title, rr) in zip(axes, panels, strict=True):
    ax.bar(xpos - 0.2, [rr[m, "train"] for m in methods], 0.4, label="training images")
    ax.bar(xpos + 0.2, [rr[m, "test"] for m in methods], 0.4, label="held-out images")
    ax.set_xticks(xpos, methods)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, 100)
axes[0].set_ylabel("recovered, MSE < 1e-7 (%)")
axes[0].legend(fontsize=8)
fig.tight_layout()
