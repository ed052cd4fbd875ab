"""
Auditing a model
================

A privacy reviewer asks of a trained autoencoder: *which training records can be
extracted from it, and how sure are we?* :func:`refinv.audit` answers with one
document (and, with ``out=``, three files: ``report.json``, ``per_image.csv`` and a
self-contained ``report.html``):

1. a verdict: **exact extraction**, **approximate extraction** or **no extraction
   detected** (with the rate the audit could have detected), decided by one-sided
   Fisher exact tests of training vs held-out images, Holm-adjusted over every setting
   tried; an image counts as extracted only where the model's recovery also beats a
   model-free control on the same image and mask; beside it, whether membership is
   inferable (permutation tests of three scores);
2. the recovery table of ``refinv evaluate`` (the same numbers), with exact
   (Clopper-Pearson) intervals for the rates;
3. a gallery of the training images the model recovers best relative to the control,
   with the control's own inpainting beside the model's, over held-out images;
4. membership inference: ROC, AUC (Newcombe's interval) and the true-positive rate at
   the low false-positive rates the held-out set supports (Carlini et al., "Membership
   inference attacks from first principles", 2022) for three scores: the recovery
   error from a degraded copy (refinv's), the plain reconstruction error
   ``||f(x) - x||`` (the loss-threshold attack) and the local stability of the
   recovery at the image;
5. the generic-inpainting control that uses no model (biharmonic inpainting, classical
   and offline, where Abitbul & Dar used a diffusion inpainter) and the gain over it;
6. recovery vs train loss when checkpoints are given;
7. the threat model and the options that reduce memorization;
8. method, assumptions and limits.

The command line does the same::

    refinv audit models/onnx/faces25_lrelu_6x256.onnx \\
        --train models/data/faces25.npz:train --test models/data/faces25.npz:test \\
        --out out/audit-faces/

It needs the ``audit`` extra (``pip install 'refinv[audit]'``).
``REFINV_DOCS_FAST=1`` (set in CI) audits fewer images with fewer settings.
"""

import base64
import io
import os
import re
import tempfile
import textwrap
import warnings
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np

import refinv
from refinv.evaluation.report import format_table

FAST = os.environ.get("REFINV_DOCS_FAST") == "1"
N = 12 if FAST else 100  # images per split
MASKS = ["random:0.5"] if FAST else ["random:0.5", "center:9", "rows:2"]
METHODS = ["blind", "known"] if FAST else ["blind", "known", "ae-iterations"]
if FAST:  # label the numbers of a fast build as such
    print("FAST MODE (REFINV_DOCS_FAST=1, as CI builds these pages):")
    print("  12 images per split (not 100), 1 mask and 2 methods (not 3 and 3), stability")
    print("  on 4 images (not 20), 200 bootstrap resamples (not 1000):")
    print("  the numbers below check that the code runs; they are not the results")

MODELS = Path(refinv.__file__).resolve().parents[1] / "models"
data = np.load(MODELS / "data" / "faces25.npz", allow_pickle=False)
train, test = data["train"][:N], data["test"][:N]
out = Path(tempfile.mkdtemp(prefix="refinv-audit-"))


def audit_quietly(*args, **kwargs):
    """refinv.audit, with its DivergenceWarnings (one per run with stopped samples, counted in
    the document) printed as one line per run, without Python's warning header (the file
    and line of the code that warned)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", refinv.errors.DivergenceWarning)
        result = refinv.audit(*args, **kwargs)
    diverged = [str(w.message) for w in caught if w.category is refinv.errors.DivergenceWarning]
    for w in caught:
        if w.category is not refinv.errors.DivergenceWarning:
            print(f"{w.category.__name__}: {w.message}")
    if diverged:
        print(f"{len(diverged)} runs had diverged samples (stopped; 'diverged' per image):")
        for msg in diverged:
            print("  " + msg.split(" samples diverged")[0] + " diverged")
    return result


doc = audit_quietly(
    MODELS / "onnx" / "faces25_lrelu_6x256.onnx",
    train,
    test,
    checkpoints=[MODELS / "onnx" / "checkpoints" / "faces25_lrelu_6x256_mse1e-4.onnx"],
    masks=MASKS,
    methods=METHODS,
    out=out,
    stability_n=4 if FAST else 20,
    n_bootstrap=200 if FAST else 1000,
    progress=False,
)

# %%
# The verdict
# -----------
# Plain words and numbers, the first section of the report.

if FAST:
    print(f"(fast documentation build: {N} images per split, not the full audit)\n")
v = doc["verdict"]
for key in ("headline", "summary", "membership", "control"):
    print(textwrap.fill(v[key], 88), end="\n\n")

# %%
# Approximate extraction
# ----------------------
# The same model earlier in its training (checkpoint at train loss 1e-4) recovers no
# training image exactly, but many approximately (MSE < 5e-4, PSNR > 33 dB) and better
# than the control, and almost no held-out image: the verdict is approximate
# extraction, not "nothing found". The evidence is the table of tests behind it.

early = audit_quietly(
    MODELS / "onnx" / "checkpoints" / "faces25_lrelu_6x256_mse1e-4.onnx",
    train,
    test,
    masks=["random:0.5"],
    methods=["blind", "known"],
    stability_n=4 if FAST else 20,
    n_bootstrap=200 if FAST else 1000,
    progress=False,
)
print(early["verdict"]["headline"], end="\n\n")
for t in early["verdict"]["tests"]:
    print(
        f"{t['mask']:>10} {t['method']:>6} {t['criterion']:>11}: training "
        f"{t['train']['extracted']:>3}/{t['train']['n']}, held-out "
        f"{t['test']['extracted']:>3}/{t['test']['n']}, Holm-adjusted p {t['p_adjusted']:.2g}"
    )

# %%
# The recovery table
# ------------------
# ``doc["recovery"]`` is the document ``refinv evaluate`` writes for the same
# settings (the audit runs the same recoveries with the same seeds); the report adds
# bootstrap intervals (``doc["intervals"]``).

print(format_table(doc["recovery"]))

# %%
# Membership inference
# --------------------
# Each score gives every image a number (higher = "was in the training set"). The
# perfect-fit model gives itself away to the plain loss-threshold attack; the
# recovery score is what a reviewer can *show*: the image itself. The last lines
# compare the final model with its checkpoint at training loss 1e-4.

for s in doc["membership"]["scores"]:
    at = []
    for t in s["tpr_at_fpr"]:  # a rate below 1 / (held-out images) is not estimable
        if t["estimable"]:
            lo, hi = t["tpr_ci"]
            at.append(f"TPR {100 * t['tpr']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}] at "
                      f"{100 * t['target_fpr']:g}% FPR")  # fmt: skip
        else:
            at.append(f"{100 * t['target_fpr']:g}% FPR needs >= {t['needs_nonmembers']} "
                      "held-out images")  # fmt: skip
    print(
        f"{s['name']:>15}: AUC {s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}], "
        f"permutation p {s['p_value']:.1g}; " + "; ".join(at)
    )
for c in doc["membership"]["by_checkpoint"]:
    print(
        f"{c['checkpoint']:>34} (train loss {c['train_loss']:.1e}): recovery AUC "
        f"{c['recovery']['auc']:.3f}, loss-threshold AUC {c['reconstruction']['auc']:.3f}"
    )

# %%
# The report's figures
# --------------------
# ``report.html`` is one file with its figures embedded (base64 PNG, no network, no
# script). Here are the figures, read back from it: the per-image exposure, the
# gallery of the most exposed training images over their held-out controls, the ROC
# curves, the inpainting control and recovery vs train loss.

# sphinx_gallery_multi_image_block = "single"
page = (out / "report.html").read_text()
pngs = re.findall(r'<img id="([^"]+)"[^>]*src="data:image/png;base64,([^"]+)"', page)
for name, b64 in pngs:
    img = matplotlib.image.imread(io.BytesIO(base64.b64decode(b64)))
    h, w = img.shape[:2]
    fig, ax = plt.subplots(figsize=(min(9.0, w / 90), min(9.0, w / 90) * h / w))
    ax.imshow(img)
    ax.set_axis_off()
    ax.set_title(name, fontsize=9)
    plt.show()

# %%
# The per-image file
# ------------------
# ``per_image.csv`` has one row per image of both splits: the recovery MSE/PSNR per
# method and mask, the control's PSNR, the best recovery, the best gain over the
# control, the extraction level (exact / approximate / none) and the three scores.

lines = (out / "per_image.csv").read_text().splitlines()
print(len(lines) - 1, "rows; columns:", lines[0])
