"""
Bring your own model
====================

refinv reads networks as ONNX files, so any trainer works: export the
autoencoder once, then measure it with refinv (which never imports the
trainer). This tutorial shows the PyTorch code that trains a small
autoencoder on 8x8 digits and exports it, then loads an exported 8x8-digits
autoencoder with refinv and runs the memorization report on it.

These pages are built without PyTorch (it is not a dependency of refinv or of
its docs), so the training and export cells are shown but skipped here, and
the refinv part evaluates the shipped ``models/onnx/digits8_lrelu_6x320.onnx``:
an autoencoder of the same family (64-320x6-64, LeakyReLU(0.1), Kaiming
initialization, zero biases, full-batch Adam with a cosine schedule),
trained on the 100 training digits by ``models/train_mlp.py`` and exported the
same way. With ``torch`` installed (``pip install -e ".[train]"``) the same
file trains and exports its own model and evaluates that one instead.
"""

# %%
# Train (PyTorch)
# ---------------
# A fully connected autoencoder 64-256x4-64 with LeakyReLU(0.1), Kaiming
# initialization and zero biases, trained full-batch with Adam on a cosine
# schedule on 20 training digits. Input and output are images
# ``(N, 1, 8, 8)``. (Runs only where PyTorch is installed; the line printed
# below says which model the rest of the page evaluates.)

import os
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import refinv
from refinv.evaluation.report import format_table, memorization_report
from refinv.onnx import OnnxModel

FAST = os.environ.get("REFINV_DOCS_FAST") == "1"
if FAST:  # label the numbers of a fast build as such
    print("FAST MODE (REFINV_DOCS_FAST=1, as CI builds these pages):")
    print("  600 training steps instead of 2000:")
    print("  the numbers below check that the code runs; they are not the results")
MODELS = Path(refinv.__file__).resolve().parents[1] / "models"
workdir = Path(tempfile.mkdtemp(prefix="refinv_byo_"))

try:
    import torch
    from torch import nn
except ImportError:
    torch = None
    print(
        "PyTorch is not installed: this page evaluates the shipped "
        "models/onnx/digits8_lrelu_6x320.onnx on 20 of its training digits."
    )

if torch is not None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    digits = np.load(MODELS / "data" / "digits8.npz", allow_pickle=False)
    train, test = digits["train"][:20], digits["test"][:20]
    x = torch.from_numpy(train)

    width, depth = 256, 4
    layers = [nn.Flatten()]
    dims = [64] + [width] * depth
    for n_in, n_out in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.1)]
    layers += [nn.Linear(width, 64), nn.Unflatten(1, (1, 8, 8))]
    net = nn.Sequential(*layers)
    for mod in net:
        if isinstance(mod, nn.Linear):
            nn.init.kaiming_normal_(mod.weight, a=0.1, nonlinearity="leaky_relu")
            nn.init.zeros_(mod.bias)

    steps = 600 if FAST else 2000
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-6)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((net(x) - x) ** 2).mean()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    print(f"training MSE after {steps} steps: {losses[-1]:.2e}")

# %%
# Export to ONNX
# --------------
# The legacy exporter writes one self-contained file; name the input ``x``,
# the output ``y``, and make the batch axis dynamic (refinv runs whole
# batches). refinv accepts opset 17 and newer graphs of standard operators.

if torch is not None:
    path = workdir / "my_autoencoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        torch.onnx.export(
            net,
            (x[:2],),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    print(f"exported {path.name}: {path.stat().st_size / 1e3:.0f} kB")
else:
    path = MODELS / "onnx" / "digits8_lrelu_6x320.onnx"  # exported the same way
    digits = np.load(MODELS / "data" / "digits8.npz", allow_pickle=False)
    train, test = digits["train"][:20], digits["test"][:20]

# %%
# Load it with refinv
# -------------------
# :class:`~refinv.onnx.model.OnnxModel` treats the file as untrusted input:
# it runs ``onnx.checker``, requires one floating input and one output with
# a fixed sample shape, refuses external-data references that leave the
# model's folder, reads the sample shape and dtype, and then runs batches of
# NumPy (or array-API, or CuPy) arrays, returning the same array type. Check that it reproduces the images it was
# trained on. From the command line, ``refinv inspect my_autoencoder.onnx``
# prints the same facts.

f = OnnxModel(path)
print(f"sample shape {f.sample_shape} -> {f.output_sample_shape}, dtype {f.dtype}")
print(f"sha256 {f.sha256[:16]}...")
fit = np.mean((np.asarray(f(train), dtype=np.float64) - train) ** 2)
print(f"training MSE measured through onnxruntime: {fit:.2e}")

# %%
# Measure the memorization
# ------------------------
# Half of the pixels of every image erased; blind and known-mask recovery on
# 20 training images and on 20 held-out images. On the 8x8 digits far fewer
# training images come back than with the faces model of tutorial 1: the
# shipped model fits its training digits to an MSE of about 2e-13, but none
# of them is an attractor of the recovery iteration (models/MANIFEST.json:
# attractor fraction 0%; ``refinv stability`` measures it), so a 0-10%
# recovery rate here says "hard to measure by this method", not "not
# memorized". Only 32 pixels per image are observed.

doc = memorization_report(
    [(path.stem, f)],
    train,
    test,
    masks=["random:0.5"],
    methods=["blind", "known"],
    solver={"clip": True},
    progress=False,
)
print(format_table(doc))

# %%
# Per-image PSNR: every dot is one image (capped at 200 dB for exact
# recoveries). The dashed line is the accurate-recovery threshold, 70 dB
# (MSE 1e-7).

fig, ax = plt.subplots(figsize=(6, 3.2))
for i, run in enumerate(r for r in doc["runs"] if r["split"] in ("train", "test")):
    psnr = np.asarray(run["psnr"])
    jitter = np.random.default_rng(i).uniform(-0.12, 0.12, psnr.size)
    pos = {"blind": 0, "known": 1}[run["method"]] + (-0.2 if run["split"] == "train" else 0.2)
    ax.scatter(
        pos + jitter,
        psnr,
        s=14,
        color="C0" if run["split"] == "train" else "C1",
        label=("training" if run["split"] == "train" else "held-out")
        if run["method"] == "blind"
        else None,
    )
ax.axhline(70, ls="--", color="gray", lw=1)
ax.set_xticks([0, 1], ["blind", "known mask"])
ax.set_ylabel("PSNR (dB)")
ax.set_title(f"{path.name}: 50% of the pixels erased")
ax.legend()
fig.tight_layout()

# %%
# Notes
# -----
# * An autoencoder that takes flat vectors ``(N, 64)`` works the same way;
#   masks are then per entry.
# * Export in float32: a float64 batch given to a float32 model is cast at
#   the boundary and the output comes back as float64, so float64 solvers
#   work (the network itself still computes in float32). Models with
#   external data files must keep them inside the ``.onnx`` file's folder.
# * The command-line equivalent::
#
#       refinv evaluate my_autoencoder.onnx --train DATA.npz:train \
#           --test DATA.npz:test --masks random:0.5 --methods blind,known
