"""Why the U-Nets do not memorize: short, throwaway U-Net trainings that measure the train
and held-out MSE, the Jacobian spectral radius at training images, and the direction that
expands (nothing is written to models/ or to the manifest).

Each run trains a U-Net of train_unet.py's family (``--widths`` one per level, 3x3 convs,
AvgPool down, nearest upsample + concat skips up, activation after every conv) on the
first ``--n`` colour32 training images: full-batch Adam (cosine lr, optional decoupled
weight decay) for ``--adam-frac`` of ``--seconds``, then L-BFGS (strong Wolfe) for the
rest. It logs train/held-out MSE every 30 s, then prints one JSON line with the final
losses, the ARPACK spectral radius of the Jacobian at the first ``--radii`` training
images (train_unet.spectral_radii), the spectral radius of the linearized known-mask
PnP-ADMM there (refinv.evaluation.stability, rho 0.5, random:0.5 masks of seed 0: the
criterion that decides recovery; < 1 needed), and, at the first image, how the Jacobian's
leading eigenvector splits over the colour channels and whether it is localized.
``--onnx OUT.onnx`` also exports the model, for `refinv evaluate` / `refinv stability`.

    python models/unet_probe.py --widths 12,24,48 --n 10 --seconds 600
    python models/unet_probe.py --widths 12,24,48 --n 10 --seconds 300 --init torch
    python models/unet_probe.py --widths 12,24,48 --n 10 --seconds 300 --opt adam --wd 0.1 --lr 2e-3
    python models/unet_probe.py --widths 12,24,48 --n 50 --seconds 600 --init torch
    python models/unet_probe.py --widths 8,32,128,256 --n 50 --seconds 600

Results of these five runs are in models/README.md ("Not achieved": U-Nets).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from _common import export, load, torch_setup
from train_unet import (
    SEED,
    build,
    jacobian_operator,
    leading_eig,
    make_lbfgs,
    spectral_radii,
)

from refinv.evaluation.stability import pnp_admm_stability
from refinv.operators.masks import draw_masks


def expanding_mode(torch, model, x0):
    """Leading eigenpair of the Jacobian at one image (ARPACK on jvp, float64)."""
    m = copy.deepcopy(model).double().eval()
    x = torch.from_numpy(x0.astype(np.float64))[None]
    vals, vecs = leading_eig(jacobian_operator(torch, m, x), vectors=True)
    v = np.abs(vecs[:, 0]).reshape(x0.shape) ** 2
    v /= v.sum()
    e = v.sum(0)
    i, j = np.unravel_index(int(e.argmax()), e.shape)
    win = e[max(i - 3, 0) : i + 4, max(j - 3, 0) : j + 4].sum()
    return dict(
        eigenvalue=[float(vals[0].real), float(vals[0].imag)],
        channel_energy=[round(float(c), 4) for c in v.sum((1, 2))],
        peak_pixel=[int(i), int(j)],
        energy_in_7x7_around_peak=round(float(win), 4),
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", default="12,24,48", help="channels per level, comma-separated")
    ap.add_argument("--act", choices=("lrelu", "prelu", "softplus"), default="lrelu")
    ap.add_argument("--n", type=int, default=50, help="first N colour32 training images")
    ap.add_argument("--init", choices=("kaiming", "torch"), default="kaiming")
    ap.add_argument("--opt", choices=("adam", "lbfgs", "adam+lbfgs"), default="adam+lbfgs")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.0, help="AdamW decoupled weight decay")
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--adam-frac", type=float, default=0.5)
    ap.add_argument("--radii", type=int, default=3, help="radii at the first N training images")
    ap.add_argument("--onnx", default=None, help="also export the trained model here (ONNX)")
    a = ap.parse_args(argv)

    torch = torch_setup(SEED)
    Xtr, Xte = load("colour32")
    Xtr = Xtr[: a.n]
    x, xt = torch.from_numpy(Xtr), torch.from_numpy(Xte)
    widths = [int(w) for w in a.widths.split(",")]
    model = build(torch, a.act, widths=widths, init=a.init)
    n_par = sum(p.numel() for p in model.parameters())

    def mse(X):
        with torch.no_grad():
            return float(torch.mean((model(X) - X) ** 2))

    t0, last = time.time(), [0.0]

    def log(phase, step, lv):
        if time.time() - last[0] > 30:
            last[0] = time.time()
            print(
                f"{phase} {step} t {time.time() - t0:.0f}s train {lv:.3e} test {mse(xt):.3e}",
                file=sys.stderr,
                flush=True,
            )

    phases = a.opt.split("+")
    for ph in phases:
        share = 1.0 if len(phases) == 1 else (a.adam_frac if ph == "adam" else 1 - a.adam_frac)
        budget, tp, step = share * a.seconds, time.time(), 0
        if ph == "adam":
            opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.wd)
            while time.time() - tp < budget:
                frac = (time.time() - tp) / budget
                for g in opt.param_groups:
                    g["lr"] = 1e-7 + a.lr * 0.5 * (1 + math.cos(math.pi * frac))
                opt.zero_grad(set_to_none=True)
                loss = torch.mean((model(x) - x) ** 2)
                loss.backward()
                opt.step()
                step += 1
                log("adam", step, float(loss.detach()))
        else:
            lb, prev, stalls = make_lbfgs(torch, model), float("inf"), 0

            def closure():
                model.zero_grad(set_to_none=True)
                loss = torch.mean((model(x) - x) ** 2)
                loss.backward()
                return loss

            while time.time() - tp < budget:
                lv = float(lb.step(closure).detach())
                step += 1
                log("lbfgs", step, lv)
                if not math.isfinite(lv) or lv < 1e-13:
                    break
                # float32 L-BFGS can stall (the line search finds no decrease): restart its memory,
                # give up after 3 restarts in a row without progress
                stalls = stalls + 1 if lv >= prev * (1 - 1e-7) else 0
                if stalls >= 3:
                    break
                if stalls:
                    lb = make_lbfgs(torch, model)
                prev = min(prev, lv)
    secs = time.time() - t0
    radii = spectral_radii(torch, model, Xtr, max_images=a.radii)
    model.eval()

    def f_np(X):  # the model as refinv's solvers see it: float32 batches in and out
        with torch.no_grad():
            return model(torch.from_numpy(np.asarray(X, dtype=np.float32))).numpy()

    k = min(a.radii, len(Xtr))
    masks = draw_masks("random:0.5", Xtr.shape[1:], k, seed=0)  # as `refinv evaluate`
    admm = pnp_admm_stability(f_np, Xtr[:k], masks, rho=0.5, method="arnoldi")
    if a.onnx:
        export(model, x, Path(a.onnx))
    out = dict(
        widths=widths,
        act=a.act,
        init=a.init,
        n_train=a.n,
        n_params=n_par,
        train_values=int(x.numel()),
        opt=a.opt,
        lr=a.lr,
        weight_decay=a.wd,
        seconds=round(secs),
        train_mse=mse(x),
        test_mse=mse(xt),
        jacobian_spectral_radius=[round(r, 4) for r in radii],
        admm_radius_rho05_random05=[round(float(r), 4) for r in admm],
        leading_mode_image0=expanding_mode(torch, model, Xtr[0]),
    )
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
