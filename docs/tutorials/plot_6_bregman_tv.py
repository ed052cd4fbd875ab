"""
Seeing through an encoder with total variation
==============================================

An encoder layer ``y = ReLU(W x + b)`` with more inputs than outputs throws
information away; inverting it needs a prior. Wang and Benning (2023) write ReLU as a
proximal map, replaces the squared error by the **lifted Bregman loss**
``B_Psi(y, W x + b)`` (convex in ``x``, gradient ``W^T (ReLU(W x + b) - y)``)
and adds total variation:

.. math::

   \\min_x \\; B_\\Psi(y, W x + b) + \\alpha\\, \\mathrm{TV}(x),

solved by a primal-dual (PDHG) iteration, eq. (14)
(:func:`~refinv.solvers.bregman.perceptron_pdhg`); several layers are
handled by coordinate descent, eqs. (15)-(17)
(:func:`~refinv.solvers.bregman.multilayer_cd`). See :doc:`/theory/bregman`.
"""

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import refinv
from refinv.evaluation.metrics import psnr
from refinv.onnx import OnnxModel
from refinv.onnx.graph import read_chain
from refinv.operators.activations import ReLU
from refinv.operators.linear import Dense
from refinv.regularizers.tv import tv
from refinv.solvers.bregman import BregmanLayer, invert_chain, perceptron_landweber, perceptron_pdhg

FAST = os.environ.get("REFINV_DOCS_FAST") == "1"
if FAST:  # label the numbers of a fast build as such
    print("FAST MODE (REFINV_DOCS_FAST=1, as CI builds these pages):")
    print("  600 PDHG iterations (not 3000); 4 images and 500 iterations (not 8, 3000):")
    print("  the numbers below check that the code runs; they are not the results")
MODELS = Path(refinv.__file__).resolve().parents[1] / "models"

# %%
# The circle experiment (Section 5.1.1)
# -------------------------------------
# A 64x64 image of a disc (1 inside, 0 outside), a random perceptron with
# ``W`` of shape 512 x 4096 and a bias ``b``, and noisy data
# ``y = ReLU(W x + b) + N(0, 0.005^2)``, clipped at 0 so that it stays in the
# range of ReLU. The paper does not say how ``W`` and ``b`` were drawn; we
# use ``W_ij ~ N(0, 1/4096)`` and ``b_i ~ N(0, 0.1^2)``. The TV inversion
# (``alpha = 1.5e-2``) is compared with Landweber iteration stopped by
# Morozov's discrepancy principle (the unregularized baseline).

size, m = 64, 512
c = (size - 1) / 2
ii, jj = np.mgrid[:size, :size]
x_true = (((ii - c) ** 2 + (jj - c) ** 2) <= 16.0**2).astype(np.float64)[
    None, None
]  # (1, 1, 64, 64)
n = x_true.size

rng = np.random.default_rng(0)
W = rng.standard_normal((m, n)) / math.sqrt(n)
b = rng.standard_normal(m) * 0.1
layer = BregmanLayer(Dense(W), b[None], ReLU())
y_clean = np.maximum(x_true.reshape(1, -1) @ W.T + b, 0.0)
y = np.maximum(y_clean + 0.005 * rng.standard_normal(y_clean.shape), 0.0)
delta = float(np.linalg.norm(y - y_clean))  # the noise level, known to Morozov's principle

pdhg_iter = 600 if FAST else 3000
res_tv = perceptron_pdhg(
    y, layer, alpha=1.5e-2, x_shape=(1, size, size), max_iter=pdhg_iter, tol=1e-5
)
res_lw = perceptron_landweber(y, layer, delta=delta, x_shape=(1, size, size), max_iter=100_000)

print(f"{'':<12} {'||x||':>7} {'TV(x)':>8} {'PSNR':>7} iterations")
for name, x in (("truth", x_true), ("TV-PDHG", res_tv.x), ("Landweber", res_lw.x)):
    x = np.asarray(x, dtype=np.float64)
    its = {"TV-PDHG": res_tv.iterations[0], "Landweber": res_lw.iterations[0]}.get(name, "")
    p = float(psnr(x, x_true)[0])
    print(f"{name:<12} {np.linalg.norm(x):7.2f} {float(tv(x)[0]):8.2f} {p:7.2f} {its}")
print("paper (their random W): truth 28.07 / 128.0; TV 25.69 / 114.93; Landweber 6.58 / 707.02")

fig, axes = plt.subplots(1, 3, figsize=(8, 2.9))
for ax, (title, x) in zip(
    axes,
    (("ground truth", x_true), ("TV-PDHG", res_tv.x), ("Landweber + discrepancy", res_lw.x)),
    strict=True,
):
    im = ax.imshow(np.asarray(x)[0, 0], cmap="gray")
    ax.set_title(title, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046)
fig.tight_layout()

# %%
# The Landweber iterate meets the discrepancy level after a handful of
# iterations and is essentially the minimum-norm part of ``x`` that ``W``
# sees: small, noisy, with a large total variation. The TV solution has
# nearly the norm of the disc and a total variation close to the disc's
# (closer the longer the PDHG runs: ``REFINV_DOCS_FAST=1`` stops it early),
# which is the qualitative gap of the paper's table. The PDHG's convergence
# is in ``res_tv.history`` when run with
# ``record_history=True``; its step sizes are in ``res_tv.info``:

print({k: v for k, v in res_tv.info.items() if k in ("tau_x", "tau_z", "op_norm")})

# %%
# Inverting a trained encoder
# ---------------------------
# ``models/onnx/digits28_bregman_fc_code100_encoder.onnx`` maps a 28x28 digit
# to a code of 100 non-negative numbers, ``ReLU(W x + b)`` with ``W`` of
# shape 100 x 784; it was trained with a decoder that maps codes back to
# images. :func:`~refinv.onnx.graph.read_chain` reads the encoder's weights
# and :func:`~refinv.solvers.bregman.invert_chain` runs the TV inversion
# (PDHG for one layer, coordinate descent for several). We compare it with
# the trained decoder on the codes of training and held-out digits, with and
# without noise on the code.

stem = "digits28_bregman_fc_code100"
chain = read_chain(MODELS / "onnx" / f"{stem}_encoder.onnx")
encoder = OnnxModel(MODELS / "onnx" / f"{stem}_encoder.onnx")
decoder = OnnxModel(MODELS / "onnx" / f"{stem}_decoder.onnx")
digits = np.load(MODELS / "data" / "digits28.npz", allow_pickle=False)
k = 4 if FAST else 8
iters = 500 if FAST else 3000
alphas = {0.0: 1e-3, 0.05: 5e-2}  # code noise std -> alpha (picked on a small grid, see below)

rows = []
for split in ("train", "test"):
    x = digits[split][:k].astype(np.float64)
    code = np.asarray(encoder(x), dtype=np.float64)
    for sigma, alpha in alphas.items():
        yk = np.maximum(code + sigma * np.random.default_rng(1).standard_normal(code.shape), 0.0)
        res = invert_chain(yk, chain, alpha=alpha, max_iter=iters, tol=1e-5)
        x_tv = np.asarray(res.x).reshape(x.shape)
        x_dec = np.asarray(decoder(yk), dtype=np.float64).reshape(x.shape)
        p_tv, p_dec = float(np.mean(psnr(x_tv, x))), float(np.mean(psnr(x_dec, x)))
        rows.append((split, sigma, x, x_tv, x_dec))
        print(
            f"{split:>5}, code noise {sigma:4.2f}, alpha {alpha:g}: "
            f"TV inversion {p_tv:5.1f} dB, decoder {p_dec:5.1f} dB"
        )

fig, axes = plt.subplots(3, 2 * k, figsize=(max(1.3 * 2 * k, 7.0), 4.4))
for col, (split, _sigma, x, x_tv, x_dec) in enumerate(r for r in rows if r[1] == 0.0):
    for j in range(k):
        for i, (label, img) in enumerate(
            (("original", x), ("TV inversion", x_tv), ("decoder", x_dec))
        ):
            ax = axes[i, col * k + j]
            ax.imshow(np.clip(img[j, 0], 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if col * k + j == 0:
                ax.set_ylabel(label, fontsize=10, rotation=0, ha="right", va="center")
        if j == 0:
            axes[0, col * k].set_title(
                f"{'training' if split == 'train' else 'held-out'} digits", fontsize=11, loc="left"
            )
fig.tight_layout()

# %%
# The regularization parameter must grow with the noise: with noise-free
# codes a small ``alpha = 1e-3`` is best, with noise std 0.05 on the codes
# ``alpha = 5e-2`` (on a grid 1e-3, 1e-2, 5e-2, 0.2, chosen against the
# ground truth as the paper does; ``alpha = 1e-3`` gives about 8 dB there).
#
# The inversion uses nothing but the encoder's weights and a generic image
# prior, yet it recovers the digits from 100 numbers without a trained
# decoder. On these smooth upsampled digits the trained decoder is
# better (it has learned the data); the paper's point is that the
# variational inversion needs no training and comes with a convergent
# algorithm and an explicit regularization parameter ``alpha``. The
# experiment scripts in ``docs/experiments/`` (``bregman_circle.py``,
# ``bregman_encoders.py``) run the full sweeps over noise levels and
# ``alpha``, including the two-layer convolutional encoder.
