"""
Inverting a generator
=====================

Given a generator ``G`` (a decoder: latent code -> image) and an image
``y = G(z*)``, find the code. refinv reads the weights of a dense ONNX
generator as a :class:`~refinv.onnx.chain.LayerChain` and offers

* **PLUGIn** (Joshi et al., 2021, eq. 5): gradient descent with the Jacobian replaced
  by the static matrix ``A_1^T ... A_d^T``
  (:func:`~refinv.solvers.generators.plugin`);
* **gradient descent** on ``1/2 ||G(x) - y||^2`` (Joshi et al., 2021, eq. 4), with
  Armijo backtracking and momentum (:func:`~refinv.solvers.generators.gradient_descent`);
* **Latent-Pursuit** (Aberdam et al., 2020, Algorithm 3): layer by layer from the
  image down, each layer a convex problem on the support of the layer
  above (:func:`~refinv.solvers.layered.latent_pursuit`);

and the invertibility **diagnostics** of Aberdam et al. (2020), Section 3
(:func:`~refinv.evaluation.diagnostics.diagnose`): layer cardinalities
``s_i``, the expansion conditions of Theorem 2, mutual coherence. See
:doc:`/theory/generators` for the mathematics.
"""

import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import refinv
from refinv.errors import DivergenceWarning
from refinv.evaluation.diagnostics import diagnose
from refinv.onnx.graph import dense_chain, read_chain
from refinv.solvers.generators import gradient_descent, plugin
from refinv.solvers.layered import latent_pursuit

FAST = os.environ.get("REFINV_DOCS_FAST") == "1"
if FAST:  # label the numbers of a fast build as such
    print("FAST MODE (REFINV_DOCS_FAST=1, as CI builds these pages):")
    print("  4 latents (not 16), 300 GD iterations (not 1000); 4 images, 1000 PLUGIn")
    print("  iterations (not 16, 5000):")
    print("  the numbers below check that the code runs; they are not the results")
MODELS = Path(refinv.__file__).resolve().parents[1] / "models"


def snr_db(estimate, reference):
    """Per-sample SNR of an estimate in dB (how the papers report latent recovery)."""
    e = np.asarray(estimate, dtype=np.float64).reshape(len(reference), -1)
    r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    err = np.maximum(np.linalg.norm(e - r, axis=1), 1e-300)
    return 20 * np.log10(np.linalg.norm(r, axis=1) / err)


# %%
# A random ReLU generator: PLUGIn vs gradient descent
# ---------------------------------------------------
# PLUGIn's theory is about expansive networks with Gaussian weights:
# ``G(x) = ReLU(A_3 ReLU(A_2 ReLU(A_1 x)))`` with ``A_i`` of shape
# ``n_i x n_{i-1}`` and i.i.d. ``N(0, 1/n_i)`` entries, here
# ``n = (20, 300, 300, 600)``, and latents on the unit sphere.
# :func:`~refinv.onnx.chain.dense_chain` builds the chain from the matrices.
# We record the error ``||x^k - x*||`` with the solvers' ``callback``; the
# state passed to it holds the still-running samples and their data ``y``.

rng = np.random.default_rng(0)
dims = [20, 300, 300, 600]
weights = [
    rng.standard_normal((m, n)) / np.sqrt(m) for n, m in zip(dims[:-1], dims[1:], strict=True)
]
chain = dense_chain(weights, "relu")
n_lat = 4 if FAST else 16
z_true = rng.standard_normal((n_lat, dims[0]))
z_true /= np.linalg.norm(z_true, axis=1, keepdims=True)
y = chain.forward(z_true)
max_iter = 300 if FAST else 1000


def error_tracker(y, z_true, max_iter):
    index = {row.tobytes(): i for i, row in enumerate(np.asarray(y))}
    err = np.full((max_iter + 1, len(y)), np.nan)

    def callback(k, state, residual):
        for x, yy in zip(np.asarray(state.x), np.asarray(state.y), strict=True):
            i = index[yy.tobytes()]
            err[k, i] = np.linalg.norm(x - z_true[i])

    return err, callback


curves = {}
for name in ("PLUGIn (eta = 3)", "gradient descent (Armijo)"):
    err, cb = error_tracker(y, z_true, max_iter)
    if name.startswith("PLUGIn"):
        res = plugin(chain, y, step=3.0, max_iter=max_iter, callback=cb)
    else:
        res = gradient_descent(chain, y, backtracking=True, max_iter=max_iter, callback=cb, rng=0)
    curves[name] = err
    print(
        f"{name:<26} median latent SNR {np.median(snr_db(res.x, z_true)):6.1f} dB, "
        f"iterations {int(np.median(res.iterations))} (median), {res.seconds:.2f} s"
    )

fig, ax = plt.subplots(figsize=(6, 3.4))
for (name, err), color in zip(curves.items(), ("C0", "C3"), strict=True):
    ax.semilogy(err, color=color, alpha=0.35, lw=0.8)
    alive = ~np.all(np.isnan(err), axis=1)  # iterations at which some sample still ran
    ax.semilogy(
        np.flatnonzero(alive), np.nanmedian(err[alive], axis=1), color=color, lw=2.5, label=name
    )
ax.set_xlabel("iteration k")
ax.set_ylabel(r"$\|x^k - x^*\|$")
ax.set_title("random generator 20-300-300-600, noiseless")
ax.legend()
fig.tight_layout()

# %%
# PLUGIn uses the step size of the paper's experiments, ``eta = 3``; its
# theoretical step for Gaussian ReLU networks, ``eta = 2^d``
# (``step="gaussian"``), makes the *first* iterate an unbiased estimate of
# ``x*`` (eq. 7) but is too long to iterate with on this network. Gradient
# descent needs a line search (``backtracking=True``) to make progress at
# all from its random start.
#
# A trained generator
# -------------------
# ``models/onnx/digits28_gen_fc_20-128-392-784_decoder.onnx`` is the decoder
# of an autoencoder trained on 28x28 digits (Aberdam et al., 2020, Section 6.2): two ReLU
# layers with biases (batch norm folded in) and a piecewise linear output
# unit. :func:`~refinv.onnx.graph.read_chain` extracts its layers; the codes
# of the training images are shipped with it, so ``y = G(z)`` has a known
# answer.

name = "digits28_gen_fc_20-128-392-784"
gen = read_chain(MODELS / "onnx" / f"{name}_decoder.onnx")
for layer in gen.layers:
    print(
        f"  {layer.kind:<6} {layer.weight.shape!s:<11} {layer.activation.name:<6} bias={layer.bias is not None}"
    )
n_img = 4 if FAST else 16
z = np.load(MODELS / "latents" / f"{name}_codes.npz", allow_pickle=False)["z_train"][:n_img]
z = z.astype(np.float64)
y = gen.forward(z)

iters = 1000 if FAST else 5000
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", DivergenceWarning)
    runs = {
        "Latent-Pursuit": latent_pursuit(gen, y, rho=1e-2, max_iter=iters),
        "gradient descent": gradient_descent(
            gen, y, backtracking=True, momentum=0.9, max_iter=iters, tol=1e-12, rng=0
        ),
        "PLUGIn (1/prod||A_i||)": plugin(gen, y, step="norm", max_iter=iters),
    }
for w in caught:
    print("warning:", w.message)
for method, res in runs.items():
    s = snr_db(res.x, z)
    print(
        f"{method:<24} latent SNR median {np.median(s):7.1f} dB, > 60 dB for {np.mean(s > 60):4.0%}, "
        f"{res.seconds:.2f} s"
    )

# %%
# The images ``G(x)`` of the estimates. Gradient descent and Latent-Pursuit
# recover the codes. PLUGIn has no guarantee here (trained weights, biases,
# a non-ReLU output): with the paper's step for trained weights it fails,
# most samples diverge, the shared solver loop stops them and warns
# (:class:`~refinv.errors.DivergenceWarning`), and its images are noise.

fig, axes = plt.subplots(
    1 + len(runs), n_img, figsize=(max(1.6 * n_img, 6.4), 1.6 * (1 + len(runs))), squeeze=False
)
rows = [("target y", y)] + [(m, gen.forward(np.asarray(r.x))) for m, r in runs.items()]
for i, (label, imgs) in enumerate(rows):
    for j in range(n_img):
        ax = axes[i, j]
        img = np.asarray(imgs[j], dtype=np.float64).reshape(28, 28)
        ax.imshow(np.clip(np.nan_to_num(img, nan=0.0), 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0:
            # row labels: the method's name only, horizontal, in a readable size
            ax.set_ylabel(label.split(" (")[0], fontsize=10, rotation=0, ha="right", va="center")
fig.tight_layout()
# sphinx_gallery_thumbnail_number = 2

# %%
# Uniqueness diagnostics
# ----------------------
# Theorem 2 of Aberdam et al. (2020) (random weights) asks the layers to *expand* along
# the way down: ``s_1 >= n_0`` (the first hidden layer has at least as many
# active units as the latent has entries), ``s_i < s_{i+1}``, and
# ``s_L < n``. The layer-wise methods rely on them. The second shipped
# generator, ``digits28_plugin_20-500-500-784`` (bias-free, ReLU everywhere,
# built for PLUGIn), *contracts*: its second hidden layer has fewer active
# units than the first, so the condition ``s_1 < s_2`` fails, and
# Latent-Pursuit fails on it (a latent SNR of about -5 dB on 8 training
# codes when we tried; not repeated here to keep the build short).

for stem in ("digits28_gen_fc_20-128-392-784", "digits28_plugin_20-500-500-784"):
    ch = read_chain(MODELS / "onnx" / f"{stem}_decoder.onnx")
    zz = np.load(MODELS / "latents" / f"{stem}_codes.npz", allow_pickle=False)["z_train"][:32]
    report = diagnose(ch, zz.astype(np.float64))
    print(f"{stem}: n0 = {report['n0']}, n = {report['n']}")
    for row in report["theorem2"]:
        conds = {
            k: v for k, v in row.items() if k not in ("layer", "s_mean", "s_min", "s_max", "holds")
        }
        text = ", ".join(f"{k}: {v:.0%}" for k, v in conds.items())
        print(f"  hidden layer {row['layer']}: s mean {row['s_mean']:.0f} ({text})")
    for lay in report["layers"]:
        print(
            f"  layer {lay['index']} {lay['in']}->{lay['out']}: coherence {lay.get('coherence', float('nan')):.2f}"
        )
