"""Convolutional autoencoders on the 3x16x16 colour patches: long, resumable, screened trainings.

Three families (every conv 3x3 followed by the activation: LeakyReLU(0.1), PReLU per
channel or Softplus; widths ``w1,w2,w3`` one per resolution 16x16 / 8x8 / 4x4):

* ``unet``: the U-Net of seed 000 (App. C), train_unet.build: two convs per level,
  AvgPool 2 down, nearest upsample + concat skip up, output conv + activation; any number
  of levels (``--widths 32,64,128,256``: the paper-like 4-level net, 16/8/4/2 px here);
* ``unet-noskip1``: the same without the full-resolution skip (the 16x16 decoder level
  sees only the upsampled 8x8 features), the 8x8 skip kept;
* ``convae``: a plain conv autoencoder, no skips (Radhakrishnan et al., "Downsampling leads
  to image memorization in convolutional autoencoders", 2018): conv, strided conv down to
  8x8 and 4x4, an optional narrow 4x4 bottleneck of ``--code`` channels, nearest upsample +
  convs back up, output conv + activation.

Recipe: full-batch Adam (cosine lr from ``--lr`` to 1e-6) for ``--adam-frac`` of the
budget (``--hours`` of wall-clock time, or of CPU time with ``--clock cpu``), then full-batch L-BFGS (strong Wolfe, history 50) in float32, then (``--polish``)
in float64 for the last ``--polish-frac``. Checkpointed every ``--save-every`` seconds to
``RUN/state.pt`` (model, phase, step, clock; loaded with ``weights_only=True``), so a killed
run resumes where it stopped (``--resume``, the same arguments). Every ``--screen-every``
seconds it logs to ``RUN/log.jsonl`` the train and held-out MSE and the spectral radius of
the linearized known-mask PnP-ADMM (refinv.evaluation.stability, rho 0.5, random:0.5 masks
of seed 0, matrix-free) at the first ``--screen-images`` training images, the criterion that
decides recovery (< 1 needed). ``--kill-radius R --kill-after S``: stop a run whose median
radius is still above R after S seconds. The first crossings of train MSE 1e-3 ... 1e-8 are
exported to ``RUN/mse1e-K.onnx``, the final model to ``RUN/final.onnx``. ``--init-from
OTHER/state.pt`` starts a new run from another run's weights (``--adam-frac 0 --polish``:
L-BFGS on the plain loss only, e.g. after a denoising run).

Denoising training (``--denoise-sigma``; Kadkhodaie et al., "Generalization in diffusion
models arises from geometry-adaptive harmonic representations", ICLR 2024: U-Net denoisers
memorize small training sets): each Adam step sees ``--denoise-copies`` copies of the
training images, the first ``--denoise-clean`` of them clean and the others with Gaussian
noise of a standard deviation drawn per copy and image, uniform in ``[LO, HI]``
(``--denoise-sigma LO:HI``) or fixed (``--denoise-sigma S``), and the loss is
``mean((f(x + sigma n) - x)^2)``. The network is then used by refinv as it is, as the
autoencoder ``f`` (the blind denoiser at whatever noise its input has). The logged and
screened ``train`` / ``test`` MSE are always those of the CLEAN images, ``f(x)`` vs ``x``;
``loss`` is the denoising objective. The
noise generator's state is checkpointed with the model, so a resumed run draws the same
noise as an uninterrupted one would. With ``--denoise-fixed`` the L-BFGS phases (float32,
float64 polish) minimize the same objective on ONE fixed, seeded draw of the noisy copies
(L-BFGS needs a deterministic objective), e.g. after a denoising Adam run
(``--init-from``).

    OPENBLAS_NUM_THREADS=1 python models/train_conv.py --arch convae --widths 32,64,128 \\
        --run /tmp/conv/convae_lrelu --hours 1.5
    OPENBLAS_NUM_THREADS=1 python models/train_conv.py --arch unet --widths 32,64,128 \\
        --denoise-sigma 0:0.2 --adam-frac 1 --run /tmp/conv/unet_dn --hours 1.5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from _common import export, load, torch_setup

SEED = 42
THRESHOLDS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)


def build(torch, arch, act, widths, code=None, init="kaiming"):
    if arch == "unet":  # the same modules and random draws as the former 3-level code here
        from train_unet import build as build_unet

        return build_unet(torch, act, widths=widths, init=init)
    nn = torch.nn
    if len(widths) != 3:
        raise SystemExit(f"--arch {arch}: expected 3 widths, got {widths}")
    w1, w2, w3 = widths

    def A(ch):
        if act == "lrelu":
            return nn.LeakyReLU(0.1)
        if act == "prelu":
            return nn.PReLU(ch, init=0.1)
        return nn.Softplus()

    def conv(i, o, stride=1):
        return [nn.Conv2d(i, o, 3, stride, 1), A(o)]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.pool = nn.AvgPool2d(2)
            if arch == "convae":
                c = code or w3
                self.enc = nn.Sequential(*conv(3, w1), *conv(w1, w2, 2), *conv(w2, w2),
                                         *conv(w2, w3, 2), *conv(w3, c))  # fmt: skip
                self.dec3 = nn.Sequential(*conv(c, w3))
                self.dec2 = nn.Sequential(*conv(w3, w2), *conv(w2, w2))
                self.dec1 = nn.Sequential(*conv(w2, w1), *conv(w1, w1))
            else:
                self.e1 = nn.Sequential(*conv(3, w1), *conv(w1, w1))
                self.e2 = nn.Sequential(*conv(w1, w2), *conv(w2, w2))
                self.b = nn.Sequential(*conv(w2, w3), *conv(w3, w3))
                self.d2 = nn.Sequential(*conv(w3 + w2, w2), *conv(w2, w2))
                skip1 = w1 if arch == "unet" else 0
                self.d1 = nn.Sequential(*conv(w2 + skip1, w1), *conv(w1, w1))
            self.out = nn.Conv2d(w1, 3, 3, 1, 1)
            self.out_act = A(3) if act != "softplus" else nn.Identity()
            if init == "kaiming":
                for m in self.modules():
                    if isinstance(m, nn.Conv2d):
                        nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")
                        nn.init.zeros_(m.bias)

        def forward(self, x):
            if arch == "convae":
                h = self.dec3(self.enc(x))
                h = self.dec1(self.up(self.dec2(self.up(h))))
            else:
                s1 = self.e1(x)
                s2 = self.e2(self.pool(s1))
                h = self.b(self.pool(s2))
                h = self.d2(torch.cat([self.up(h), s2], 1))
                h = self.up(h)
                h = self.d1(torch.cat([h, s1], 1) if arch == "unet" else h)
            return self.out_act(self.out(h))

    return Net()


def denoise_loss(torch, model, x, sig, copies, clean, gen):
    """Denoising objective on ``copies`` copies of the batch ``x``, the first ``clean`` of
    them noise-free, the others ``x + sigma n`` with ``sigma`` per copy and image uniform
    in ``sig = (lo, hi)``. Returns (loss, clean MSE of ``f(x)`` before the step: the train
    MSE that refinv sees; computed without gradient when no copy is clean)."""
    n = x.shape[0]
    xr = x.repeat(copies, *([1] * (x.ndim - 1)))
    lo, hi = sig
    s = lo + (hi - lo) * torch.rand(copies * n, generator=gen, dtype=x.dtype)
    s[: clean * n] = 0.0
    z = torch.randn(xr.shape, generator=gen, dtype=x.dtype)
    out = model(xr + s.view(-1, *([1] * (x.ndim - 1))) * z)
    err = (out - xr) ** 2
    loss = torch.mean(err)
    if clean:
        lv = float(err[: clean * n].detach().mean())
    else:
        with torch.no_grad():
            lv = float(torch.mean((model(x) - x) ** 2))
    return loss, lv


def make_lbfgs(torch, model):
    return torch.optim.LBFGS(model.parameters(), lr=1, max_iter=20, history_size=50,
                             line_search_fn="strong_wolfe", tolerance_grad=0,
                             tolerance_change=0)  # fmt: skip


def admm_radii(torch, model, X, k, dtype):
    """Radius of the linearized known-mask PnP-ADMM (rho 0.5, random:0.5 of seed 0) at the
    first k training images, as `refinv stability` measures it (matrix-free)."""
    from refinv.evaluation.stability import pnp_admm_stability
    from refinv.operators.masks import draw_masks

    def f_np(Z):
        with torch.no_grad():
            z = torch.from_numpy(np.asarray(Z, dtype=np.float64)).to(dtype)
            return model(z).double().numpy()

    h = draw_masks("random:0.5", X.shape[1:], k, seed=0)
    r = pnp_admm_stability(f_np, X[:k].astype(np.float64), h, rho=0.5, method="arnoldi")
    return [round(float(v), 4) for v in r]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=("unet", "unet-noskip1", "convae"), required=True)
    ap.add_argument("--act", choices=("lrelu", "prelu", "softplus"), default="lrelu")
    ap.add_argument("--widths", default="32,64,128")
    ap.add_argument("--code", type=int, default=None, help="convae: 4x4 bottleneck channels")
    ap.add_argument("--data", default="colour16")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what --hours, the schedule and --kill-after count: wall-clock time or "
        "this process's CPU time (steady on a shared machine)",
    )
    ap.add_argument("--adam-frac", type=float, default=0.5)
    ap.add_argument("--polish", action="store_true", help="float64 L-BFGS at the end")
    ap.add_argument("--polish-frac", type=float, default=0.25)
    ap.add_argument("--run", required=True, help="run folder (state, log, ONNX exports)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument(
        "--init-from",
        default=None,
        help="start from the weights of another run's state.pt (a new run: fresh "
        "clock and optimizer; e.g. a clean-loss L-BFGS polish of a denoiser)",
    )
    ap.add_argument("--save-every", type=float, default=180.0)
    ap.add_argument("--screen-every", type=float, default=300.0)
    ap.add_argument("--screen-images", type=int, default=5)
    ap.add_argument("--kill-radius", type=float, default=None)
    ap.add_argument("--kill-after", type=float, default=1200.0)
    ap.add_argument(
        "--denoise-sigma",
        default=None,
        help="denoising training: noise std S (fixed) or LO:HI (uniform per copy)",
    )
    ap.add_argument(
        "--denoise-copies",
        type=int,
        default=4,
        help="copies of the training set per step (denoising)",
    )
    ap.add_argument(
        "--denoise-clean", type=int, default=1, help="how many of the copies are clean (sigma 0)"
    )
    ap.add_argument(
        "--denoise-fixed",
        action="store_true",
        help="L-BFGS phases: the denoising objective on ONE fixed draw of the "
        "noisy copies (seeded, the same on resume)",
    )
    a = ap.parse_args(argv)
    sig = None
    if a.denoise_sigma is not None:
        lo, _, hi = a.denoise_sigma.partition(":")
        sig = (float(lo), float(hi or lo))
        if not 0 <= sig[0] <= sig[1]:
            raise SystemExit(f"--denoise-sigma: expected S or LO:HI with 0 <= LO <= HI, got {sig}")
        if (a.adam_frac != 1.0 or a.polish) and not a.denoise_fixed:
            raise SystemExit(
                "--denoise-sigma with L-BFGS phases (--adam-frac < 1, --polish) "
                "needs --denoise-fixed (L-BFGS needs a deterministic objective)"
            )
        if not 0 <= a.denoise_clean < a.denoise_copies:
            raise SystemExit("--denoise-clean: expected 0 <= clean < --denoise-copies")

    torch = torch_setup(SEED)
    run = Path(a.run)
    run.mkdir(parents=True, exist_ok=True)
    Xtr, Xte = load(a.data)
    Xtr = Xtr[: a.n]
    widths = [int(w) for w in a.widths.split(",")]
    model = build(torch, a.arch, a.act, widths, a.code)
    noise = torch.Generator().manual_seed(SEED + 1)  # the denoising noise (own stream)
    budget = a.hours * 3600.0
    st = dict(phase="adam", step=0, elapsed=0.0, cpu=0.0, crossed=[], best=float("inf"))
    opt_state = None
    state_file = run / "state.pt"
    if a.init_from and not (a.resume and state_file.exists()):
        init = torch.load(a.init_from, weights_only=True)
        model.load_state_dict({k: v.float() for k, v in init["model"].items()})
    if a.resume and state_file.exists():
        saved = torch.load(state_file, weights_only=True)
        model.load_state_dict(saved["model"])
        st = json.loads(saved["meta"])
        opt_state = saved.get("adam")
        if saved.get("noise_rng") is not None:
            noise.set_state(saved["noise_rng"])
        if st["phase"] == "polish":
            model.double()
    (run / "args.json").write_text(json.dumps(vars(a), indent=1))
    n_par = sum(p.numel() for p in model.parameters())
    dt = torch.float64 if st["phase"] == "polish" else torch.float32
    x, xt = torch.from_numpy(Xtr).to(dt), torch.from_numpy(Xte).to(dt)
    t_resume, c_resume = time.time(), time.process_time()
    st.setdefault("cpu", 0.0)

    def wall():
        return st["elapsed"] + time.time() - t_resume

    def cpu():
        return st["cpu"] + time.process_time() - c_resume

    elapsed = cpu if a.clock == "cpu" else wall  # the budget's clock

    def mse(X):
        with torch.no_grad():
            return float(torch.mean((model(X) - X) ** 2))

    def logline(**kw):
        rec = dict(t=round(wall()), cpu=round(cpu()), phase=st["phase"], step=st["step"], **kw)
        with open(run / "log.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), file=sys.stderr, flush=True)

    def save(adam=None):
        meta = dict(st, elapsed=wall(), cpu=cpu())
        tmp = run / "state.pt.tmp"
        torch.save({"model": model.state_dict(), "meta": json.dumps(meta), "adam": adam,
                    "noise_rng": noise.get_state()}, tmp)  # fmt: skip
        os.replace(tmp, state_file)

    def export_onnx(name):
        m32 = build(torch, a.arch, a.act, widths, a.code)
        m32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
        diff = export(m32, torch.from_numpy(Xtr), run / f"{name}.onnx")
        logline(export=name, ort_vs_torch=diff)

    def check_cross(lv):
        for thr in THRESHOLDS:
            if lv < thr and thr not in st["crossed"]:
                st["crossed"].append(thr)
                export_onnx(f"mse{thr:.0e}".replace("e-0", "e-"))

    last_save, last_screen = time.time(), -1e9

    def housekeeping(lv, adam=None, loss=None):
        nonlocal last_save, last_screen
        st["best"] = min(st["best"], lv)
        check_cross(lv)
        if time.time() - last_screen > a.screen_every:
            last_screen = time.time()
            radii = admm_radii(torch, model, Xtr, a.screen_images, dt)
            extra = {} if loss is None else dict(loss=loss)
            logline(train=lv, test=mse(xt), admm_radius=radii, n_params=n_par, **extra)
            med = float(np.median(radii))
            if a.kill_radius is not None and elapsed() > a.kill_after and med > a.kill_radius:
                logline(killed=f"median radius {med} > {a.kill_radius} after {elapsed():.0f}s")
                save(adam)
                sys.exit(3)
        if time.time() - last_save > a.save_every:
            last_save = time.time()
            save(adam)

    if not a.resume:
        logline(start=True, n_params=n_par, train_values=int(x.numel()), arch=a.arch,
                widths=widths, code=a.code, act=a.act, denoise_sigma=sig,
                denoise_copies=a.denoise_copies if sig else None,
                denoise_clean=a.denoise_clean if sig else None,
                init_from=a.init_from)  # fmt: skip
    t_adam = a.adam_frac * budget
    t_polish = budget * (1 - a.polish_frac) if a.polish else budget
    if st["phase"] == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=a.lr)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        while elapsed() < t_adam:
            frac = elapsed() / t_adam
            for g in opt.param_groups:
                g["lr"] = 1e-6 + (a.lr - 1e-6) * 0.5 * (1 + math.cos(math.pi * frac))
            opt.zero_grad(set_to_none=True)
            if sig is None:
                loss = torch.mean((model(x) - x) ** 2)
                lv = dn = float(loss.detach())
            else:
                loss, lv = denoise_loss(torch, model, x, sig, a.denoise_copies,
                                        a.denoise_clean, noise)  # fmt: skip
                dn = float(loss.detach())
            loss.backward()
            opt.step()
            st["step"] += 1
            if not (math.isfinite(lv) and math.isfinite(dn)):
                logline(error="non-finite loss in Adam")
                sys.exit(4)
            adam = opt.state_dict() if time.time() - last_save > a.save_every else None
            housekeeping(lv, adam, None if sig is None else dn)
        st["phase"], st["step"] = "lbfgs", 0
        save()
    for phase, until in (("lbfgs", t_polish), ("polish", budget)):
        if st["phase"] != phase:
            continue
        if phase == "polish":
            model.double()
            dt = torch.float64
            x, xt = x.double(), xt.double()
        lb, prev, stalls = make_lbfgs(torch, model), float("inf"), 0
        xin, xout = x, x
        if sig is not None:  # one fixed draw of the noisy copies (the same on resume)
            fixed = torch.Generator().manual_seed(SEED + 2)
            xout = x.repeat(a.denoise_copies, *([1] * (x.ndim - 1)))
            lo, hi = sig
            s = lo + (hi - lo) * torch.rand(xout.shape[0], generator=fixed, dtype=torch.float64)
            s[: a.denoise_clean * x.shape[0]] = 0.0
            z = torch.randn(xout.shape, generator=fixed, dtype=torch.float64)
            xin = xout + (s.view(-1, *([1] * (x.ndim - 1))) * z).to(x.dtype)

        def closure(xin=xin, xout=xout):
            model.zero_grad(set_to_none=True)
            loss = torch.mean((model(xin) - xout) ** 2)
            loss.backward()
            return loss

        while elapsed() < until:
            lv = float(lb.step(closure).detach())
            st["step"] += 1
            if not math.isfinite(lv) or lv < 1e-15:
                break
            stalls = stalls + 1 if lv >= prev * (1 - 1e-7) else 0
            if stalls >= 5:
                logline(stalled=lv)
                break
            if stalls:
                lb = make_lbfgs(torch, model)
            prev = min(prev, lv)
            housekeeping(mse(x))
        if phase == "lbfgs" and a.polish:
            st["phase"], st["step"] = "polish", 0
            save()
    st["phase"] = "done"
    radii = admm_radii(torch, model, Xtr, a.screen_images, dt)
    logline(final=True, train=mse(x), test=mse(xt), admm_radius=radii, n_params=n_par)
    save()
    export_onnx("final")


if __name__ == "__main__":
    main()
