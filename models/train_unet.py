"""Small U-Net autoencoders on the 3x32x32 colour patches (Abitbul and Dar, 2023, App. C, Fig. C.2).

Architecture (base width c): every conv is 3x3, stride 1, padding 1, and is
followed by the activation (LeakyReLU(0.1), PReLU per channel, or Softplus):
    enc1: conv 3->c, conv c->c                    (32x32)
    AvgPool 2, enc2: conv c->2c, conv 2c->2c      (16x16)
    AvgPool 2, bottleneck: conv 2c->4c, conv 4c->4c (8x8)
    nearest upsample x2, concat enc2, conv 6c->2c, conv 2c->2c
    nearest upsample x2, concat enc1, conv 3c->c, conv c->c
    out: conv c->3 (+ activation, except for Softplus: Softplus > 0 cannot
         produce the 5% of training pixels that are exactly 0, so that
         model's output conv is linear)
Recipe: full-batch Adam (N = 50), cosine lr from 2e-3 to 1e-6, then L-BFGS
(strong Wolfe line search, history 50) for the rest of the wall-clock cap.
Checkpoints (LeakyReLU model only) when the train MSE first drops below
1e-3, 1e-4, 1e-5, 1e-6 (in either phase).
Attractors: spectral radius of the 3072x3072 Jacobian by ARPACK
(scipy.sparse.linalg.eigs, largest magnitude, Jacobian-vector products by
torch.func.jvp in float64) instead of dense eigvals (too slow on 1 CPU).

Usage: python models/train_unet.py [--only lrelu prelu softplus] [--max-seconds 3600]

Wider variant (same architecture family, base width 32, ~472k parameters, more than the
50 * 3072 = 153,600 training values; no checkpoints, attractors on the first 5 images
under a 180 s cap):
    python models/train_unet.py --only lrelu --width 32 --lr 1e-3 --adam-frac 0.4 \
        --max-seconds 2520 --attractor-images 5 --attractor-max-seconds 180
-> models/onnx/colour32_unet_lrelu_c32.onnx (tried, NOT shipped: train MSE 1.45e-5 in 2540 s,
0% recovery; see models/README.md, "Not achieved")

Why none of these memorizes (Jacobian spectral radius > 1 at the training images, for
every init, width, number of images and loss tried): models/unet_probe.py.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import numpy as np
from _common import (
    ONNX_DIR,
    export,
    load,
    n_params,
    ort_mse,
    rel,
    status,
    torch_setup,
    update_manifest,
)

SEED = 42
C = 12
THRESHOLDS = (1e-3, 1e-4, 1e-5, 1e-6)
ACTS = ("lrelu", "prelu", "softplus")
CAPS = {"lrelu": 660.0, "prelu": 420.0, "softplus": 420.0}  # seconds, as used for the shipped files


def build(torch, act, c=C, widths=None, init="kaiming"):
    """The U-Net above; ``widths`` (one per level, default (c, 2c, 4c)) gives other depths and
    widths (models/unet_probe.py), ``init="torch"`` keeps PyTorch's default conv init.
    For the default widths the module names and the order of random draws are those of the
    shipped models (e1, e2, b, d2, d1, out)."""
    nn = torch.nn
    widths = tuple(widths or (c, 2 * c, 4 * c))
    if len(widths) < 2:
        raise ValueError(f"a U-Net needs at least 2 levels, got widths={widths}")

    def A(ch):
        if act == "lrelu":
            return nn.LeakyReLU(0.1)
        if act == "prelu":
            return nn.PReLU(ch, init=0.1)
        return nn.Softplus()

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, 1, 1), A(o), nn.Conv2d(o, o, 3, 1, 1), A(o))

    L = len(widths)
    enc_names = [f"e{k + 1}" for k in range(L - 1)] + ["b"]
    dec_names = [f"d{k + 1}" for k in reversed(range(L - 1))]  # deepest first

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            for k, name in enumerate(enc_names):
                self.add_module(name, block(3 if k == 0 else widths[k - 1], widths[k]))
            for name in dec_names:
                k = int(name[1:]) - 1
                self.add_module(name, block(widths[k + 1] + widths[k], widths[k]))
            self.pool = nn.AvgPool2d(2)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.out = nn.Conv2d(widths[0], 3, 3, 1, 1)
            self.out_act = A(3) if act != "softplus" else nn.Identity()
            if init == "kaiming":
                for m in self.modules():
                    if isinstance(m, nn.Conv2d):
                        nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")
                        nn.init.zeros_(m.bias)
            elif init != "torch":
                raise ValueError(f"init must be 'kaiming' or 'torch', got {init!r}")

        def forward(self, x):
            skips, h = [], x
            for k, name in enumerate(enc_names):
                h = getattr(self, name)(h if k == 0 else self.pool(h))
                skips.append(h)
            for name in dec_names:
                k = int(name[1:]) - 1
                h = getattr(self, name)(torch.cat([self.up(h), skips[k]], 1))
            return self.out_act(self.out(h))

    return UNet()


def make_lbfgs(torch, model):
    """The recipe's L-BFGS: strong Wolfe line search, history 50, 20 iterations per step,
    no early stop on small gradients or changes."""
    return torch.optim.LBFGS(
        model.parameters(),
        lr=1,
        max_iter=20,
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=0,
        tolerance_change=0,
    )


def jacobian_operator(torch, m, x0, check=None):
    """``v -> Df(x0) v`` as a scipy LinearOperator (``torch.func.jvp``; ``m`` and ``x0``
    float64, ``x0`` of shape (1, C, H, W)); ``check()`` runs before each product."""
    from scipy.sparse.linalg import LinearOperator

    n = int(np.prod(x0.shape))

    def mv(v):
        if check is not None:
            check()
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).reshape(x0.shape)
        return torch.func.jvp(m, (x0,), (t,))[1].detach().reshape(-1).numpy()

    return LinearOperator((n, n), matvec=mv, dtype=np.float64)


def leading_eig(op, vectors=False):
    """ARPACK's largest-magnitude eigenvalue of ``op`` (with its eigenvector if ``vectors``);
    the settings of the manifest's attractor radii."""
    from scipy.sparse.linalg import eigs

    return eigs(op, k=1, which="LM", tol=1e-4, ncv=24, maxiter=300,
                return_eigenvectors=vectors, v0=np.ones(op.shape[0]))  # fmt: skip


class _ArpackTimeout(Exception):
    pass


def spectral_radii(torch, model, X, max_images=None, log=None, max_seconds=None):
    """Spectral radius of the Jacobian at each image: ARPACK (largest magnitude) on
    Jacobian-vector products; if ARPACK does not converge in 300 restarts (clustered
    eigenvalues), the largest magnitude among its converged Ritz values, else 40 steps of
    power iteration on J^T J (an upper bound: the largest singular value).
    With max_seconds, stops once the total time is spent: the image being computed and
    the remaining ones get None."""
    from scipy.sparse.linalg import ArpackNoConvergence

    m = copy.deepcopy(model).double().eval()
    shape = X.shape[1:]
    n = int(np.prod(shape))
    out = []
    t_start = time.time()
    for i, xi in enumerate(X if max_images is None else X[:max_images]):
        x0 = torch.from_numpy(xi.astype(np.float64))[None]
        if max_seconds is not None and time.time() - t_start > max_seconds:
            out.append(None)
            continue

        def check():
            if max_seconds is not None and time.time() - t_start > max_seconds:
                raise _ArpackTimeout

        op = jacobian_operator(torch, m, x0, check)
        mv = op.matvec
        t0 = time.time()
        try:
            r = float(np.abs(leading_eig(op)).max())
        except _ArpackTimeout:
            r = None
        except ArpackNoConvergence as e:
            if len(e.eigenvalues):
                r = float(np.abs(e.eigenvalues).max())
            else:
                v = np.ones(n) / math.sqrt(n)
                for _ in range(40):
                    x0r = x0.detach().requires_grad_(True)
                    y = m(x0r).reshape(-1)
                    jv = torch.from_numpy(mv(v))
                    (g,) = torch.autograd.grad(y, x0r, jv)
                    w = g.reshape(-1).numpy()
                    r = float(np.sqrt(np.linalg.norm(w)))
                    v = w / np.linalg.norm(w)
        out.append(r)
        if log is not None:
            print(f"  radius image {i}: {r} ({time.time() - t0:.1f}s)", file=log, flush=True)
    return out


def train_one(
    act,
    max_seconds,
    adam_frac=0.6,
    width=C,
    lr0=2e-3,
    attractor_images=None,
    attractor_max_seconds=None,
):
    torch = torch_setup(SEED)
    Xtr, Xte = load("colour32")
    x = torch.from_numpy(Xtr)
    model = build(torch, act, width)
    ckpt = act == "lrelu" and width == C  # the wider variants ship without checkpoints
    ckpts = {}
    log = open(f"/tmp/refinv_train_unet_{act}_c{width}.log", "a")
    t0 = time.time()
    adam_budget = adam_frac * max_seconds
    # Adam phase: cosine schedule defined on an estimated step count (timed after 20 steps)
    opt = torch.optim.Adam(model.parameters(), lr=lr0)
    steps_est, step, lv = 10**9, 0, float("inf")

    def record(loss_v):
        if ckpt:
            for th in THRESHOLDS:
                if th not in ckpts and loss_v < th:
                    ckpts[th] = (time.time() - t0, loss_v, copy.deepcopy(model.state_dict()))

    while step < steps_est:
        if step == 20:
            steps_est = int(adam_budget / ((time.time() - t0) / 20))
        frac = min(step / max(steps_est, 1), 1.0) if step >= 20 else 0.0
        lr = 1e-6 + 0.5 * (lr0 - 1e-6) * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((model(x) - x) ** 2)
        lv = float(loss.detach())
        record(lv)
        loss.backward()
        opt.step()
        if step % 200 == 0:
            print(
                f"unet-{act}-c{width} adam step {step}/{steps_est} lr {lr:.2e} loss {lv:.3e} "
                f"t {time.time() - t0:.0f}s",
                file=log,
                flush=True,
            )
        step += 1
        if time.time() - t0 > adam_budget:
            break
    adam_steps, adam_loss = step, lv
    # L-BFGS phase
    lb = make_lbfgs(torch, model)
    lbfgs_outer = 0

    def closure():
        lb.zero_grad(set_to_none=True)
        loss = torch.mean((model(x) - x) ** 2)
        record(float(loss.detach()))
        loss.backward()
        return loss

    while time.time() - t0 < max_seconds:
        lv = float(lb.step(closure))
        lbfgs_outer += 1
        print(
            f"unet-{act}-c{width} lbfgs {lbfgs_outer} loss {lv:.3e} t {time.time() - t0:.0f}s",
            file=log,
            flush=True,
        )
        if not math.isfinite(lv) or lv < 1e-12:
            break
    secs = time.time() - t0
    with torch.no_grad():
        final_loss = float(torch.mean((model(x) - x) ** 2))

    base = f"colour32_unet_{act}_c{width}"
    name = f"unet-{act}" if width == C else f"unet-{act}-c{width}"
    path = ONNX_DIR / f"{base}.onnx"
    common = dict(
        kind="autoencoder",
        architecture=f"U-Net, base width {width}: 2 convs per level at 32/16/8 px (c, 2c, 4c "
        "channels), AvgPool down, nearest Upsample + concat skips up, 3x3 convs stride 1 "
        "padding 1, activation after every conv"
        + ("" if act != "softplus" else " except the output conv (linear)"),
        activation={
            "lrelu": "LeakyReLU(0.1)",
            "prelu": "PReLU (per channel, init 0.1)",
            "softplus": "Softplus(beta=1)",
        }[act],
        dataset="data/colour32.npz",
        split="train",
        n_train=50,
        seed=SEED,
        input_shape=[None, 3, 32, 32],
        output_shape=[None, 3, 32, 32],
        init="Kaiming normal (leaky_relu, a=0.1), zero biases",
        optimizer=f"Adam full batch (N=50) then L-BFGS (strong Wolfe, history 50, 20 "
        f"iterations per step), torch {torch.__version__}, 1 thread",
        schedule=f"Adam cosine lr {lr0:g} -> 1e-6 for {adam_steps} steps "
        f"({adam_frac:.0%} of a {max_seconds:.0f}s cap), then L-BFGS for the rest "
        f"({lbfgs_outer} outer steps)",
        exporter="torch.onnx.export legacy (dynamo=False)",
        opset=17,
        n_params=n_params(model),
    )
    diff = export(model, x, path)
    mse = ort_mse(path, Xtr)
    t_att = time.time()
    radii = spectral_radii(
        torch, model, Xtr, max_images=attractor_images, log=log, max_seconds=attractor_max_seconds
    )
    t_att = time.time() - t_att
    done = [r for r in radii if r is not None]
    rec = dict(
        common,
        name=name,
        train_seconds=round(secs, 1),
        train_mse=mse,
        adam_final_train_mse_torch=adam_loss,
        final_train_mse_torch=final_loss,
        test_mse=ort_mse(path, Xte),
        ort_vs_torch_max_abs_diff=diff,
        attractor_fraction=float(np.mean(np.asarray(done) < 1)) if done else None,
        jacobian_spectral_radius=[None if r is None else round(r, 6) for r in radii],
        attractor_method="ARPACK largest-magnitude eigenvalue of the Jacobian (jvp); see "
        "spectral_radii in train_unet.py for the non-convergence fallback",
        checkpoints=[],
    )
    if attractor_images is not None or attractor_max_seconds is not None:
        rec["attractor_images"] = (
            f"capped to save time: first {len(radii)} of {len(Xtr)} training images"
            + (f", at most {attractor_max_seconds:.0f}s in all" if attractor_max_seconds else "")
            + f"; {len(done)} computed in {t_att:.0f}s (None = not computed within the cap); "
            "attractor_fraction is over the computed ones only"
        )
    entries = {}
    final_state = copy.deepcopy(model.state_dict())
    for th in THRESHOLDS:
        if th not in ckpts:
            continue
        tsave, lsave, sd = ckpts[th]
        model.load_state_dict(sd)
        tag = f"{th:.0e}".replace("-0", "-")
        cpath = ONNX_DIR / "checkpoints" / f"{base}_mse{tag}.onnx"
        cdiff = export(model, x, cpath)
        cr = spectral_radii(torch, model, Xtr, max_images=20, log=log)
        entries[rel(cpath)] = dict(
            common,
            name=f"{name}@{tag}",
            checkpoint_of=rel(path),
            threshold=th,
            saved_at_seconds=round(tsave, 1),
            train_mse_torch_at_save=lsave,
            train_mse=ort_mse(cpath, Xtr),
            test_mse=ort_mse(cpath, Xte),
            ort_vs_torch_max_abs_diff=cdiff,
            attractor_fraction=float(np.mean(np.asarray(cr) < 1)),
            attractor_images="first 20 of 50 training images",
            jacobian_spectral_radius=[round(r, 6) for r in cr],
        )
        rec["checkpoints"].append(rel(cpath))
    model.load_state_dict(final_state)
    entries[rel(path)] = rec
    update_manifest(entries)
    print(
        f"{name}: ORT train mse {mse:.3e}, attractors {rec['attractor_fraction']}, "
        f"{secs:.0f}s, ckpts {list(ckpts)}",
        file=log,
        flush=True,
    )
    status(
        f"ready: models/{rel(path)} (train MSE {mse:.2e})"
        + (f" + {len(rec['checkpoints'])} checkpoints" if rec["checkpoints"] else "")
    )


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", choices=ACTS, default=None)
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help=f"wall-clock cap per model (default: the caps of the shipped runs, {CAPS})",
    )
    ap.add_argument(
        "--width",
        type=int,
        default=C,
        help=f"base width c (default {C}, the shipped models); another width writes "
        "colour32_unet_<act>_c<width>.onnx and saves no checkpoints",
    )
    ap.add_argument("--lr", type=float, default=2e-3, help="starting Adam lr (cosine to 1e-6)")
    ap.add_argument("--adam-frac", type=float, default=0.6, help="share of the cap spent in Adam")
    ap.add_argument(
        "--attractor-images",
        type=int,
        default=None,
        help="spectral radii on the first N training images only (default: all)",
    )
    ap.add_argument(
        "--attractor-max-seconds",
        type=float,
        default=None,
        help="total time cap for the spectral radii (default: none)",
    )
    a = ap.parse_args(argv)
    for act in a.only or ACTS:
        train_one(
            act,
            CAPS[act] if a.max_seconds is None else a.max_seconds,
            adam_frac=a.adam_frac,
            width=a.width,
            lr0=a.lr,
            attractor_images=a.attractor_images,
            attractor_max_seconds=a.attractor_max_seconds,
        )


if __name__ == "__main__":
    main()
