"""The paper-like U-Net on the 3x32x32 colour patches, trained on ONE GPU to the paper's regime.

Abitbul and Dar (2023) train U-Nets on 50 images to train MSE ~1e-8 (Sec. 4, App. C); on
one CPU thread this net costs 0.69 s per full-batch step, so 1e5 steps take 19 hours
(models/README.md, "U-Nets trained by gradient descent alone"). This script is the one run
to make on a GPU: train_unet.build with ``--widths 32,64,128,256`` (3x3 convs, an activation
after each, AvgPool down, nearest upsample + concatenated skips up, 4 levels; 1,947,715
parameters = 12.7 per training value), strict float32 (TF32 OFF for matmul and cuDNN: its
10-bit mantissa floors the loss near 1e-7), full-batch Adam with a linear warm-up and a
cosine learning rate from ``--lr`` to ``--lr-min`` over the run's steps, then an optional
float64 L-BFGS polish (strong Wolfe) for ``--polish-seconds``.

Wall time is bounded: after ``--time-steps`` timed steps the number of Adam steps becomes
``min(--steps, what fits in --max-seconds less the polish and the screens)``, and the cosine
is laid over that number (logged as ``steps_total``; kept on resume), keeping time for the
radius screens still to come at the cost of those made so far. Every
``--check-every`` steps the loss is read (one device sync) and the first time it is below
1e-3 ... 1e-8 the weights of that step (before its update) are saved as a state dict,
``RUN/mse1e-K.pt``. Every ``--screen-every`` seconds ``RUN/log.jsonl`` gets the train and
held-out MSE and the spectral radius of the linearized known-mask PnP-ADMM (rho 0.5,
random:0.5 masks of seed 0, the masks `refinv evaluate` draws) at the first
``--screen-images`` training images, by ARPACK on the n x n matrix ``(I - D) + (2D - I) J``
with exact Jacobian-vector products (float64 copy of the model), the quantity
`refinv stability` estimates by finite differences (refinv.evaluation.stability). At the end
the crossings and the final model are exported to ONNX (opset 17, as every model here) when
onnx is importable; else ``python models/train_unet_gpu.py --export-only --run RUN`` does it
later on any machine. ``RUN/state.pt`` (model, Adam, clock; loaded with
``weights_only=True``) is written every ``--save-every`` seconds: ``--resume`` goes on.

The one GPU run (about 8 minutes; models/README.md gives the exact device command)::

    python models/train_unet_gpu.py --run RUN --steps 150000 --max-seconds 420 \\
        --polish-seconds 60

The denoising variant (Kadkhodaie et al., ICLR 2024; on CPU at 16x16 it made every
training image attracting where the plain loss made every one repelling: models/README.md)
adds ``--denoise-sigma 0:0.05 --denoise-copies 3``.

CPU smoke test (a few steps; the same code path)::

    OPENBLAS_NUM_THREADS=1 python models/train_unet_gpu.py --run /tmp/gpu_smoke \\
        --steps 5 --time-steps 2 --check-every 1 --screen-images 0 --max-seconds 200 \\
        --polish-seconds 100 --device cpu
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from _common import export, load
from train_unet import build

SEED = 42
THRESHOLDS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)


def tag(thr: float) -> str:
    return f"mse{thr:.0e}".replace("e-0", "e-")


def random_pixel_masks_np(pshape, fraction, n, seed):
    """refinv's ``draw_masks(f"random:{fraction}", ..., n, seed)`` (refinv.operators.masks
    .random_pixels) without refinv: per mask exactly round(fraction * pixels) pixels erased
    (0), drawn by ``default_rng(seed).permutation``. For the GPU image, where refinv's
    dependency array-api-compat is absent; tests/test_models_scripts.py checks the two agree."""
    g = np.random.default_rng(seed)
    npix = int(np.prod(pshape))
    k = round(fraction * npix)
    out = np.ones((n, npix), dtype=bool)
    for i in range(n):
        out[i, g.permutation(npix)[:k]] = False
    return out.reshape((n, *pshape))


def random_pixel_masks(pshape, fraction, n, seed):
    """``(n, H, W)`` masks as `refinv evaluate` draws them (refinv's own code if importable)."""
    try:
        from refinv.operators.masks import draw_masks
    except ImportError:
        return random_pixel_masks_np(pshape, fraction, n, seed)
    return draw_masks(f"random:{fraction}", (1, *pshape), n, seed)


def admm_radius(torch, model, x0, h, rho=0.5, tol=1e-6, maxiter=300):
    """Spectral radius of the linearized known-mask PnP-ADMM at the fixed point ``x0``
    ``(C, H, W)`` with mask ``h`` ``(H, W)`` (1 = observed): largest |eigenvalue| of
    ``(I - D) + (2D - I) J``, ``D = rho / (h + rho)``, ``J = Df(x0)`` (refinv.evaluation
    .stability, whose 2n x 2n iteration matrix has the same non-zero eigenvalues).
    ``model`` is a float64 copy; ``J s`` by ``torch.func.jvp`` on its device."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigs

    dev = next(model.parameters()).device
    n = x0.size
    d = rho / (np.broadcast_to(h, x0.shape).reshape(n).astype(np.float64) + rho)
    xt = torch.from_numpy(x0.astype(np.float64))[None].to(dev)

    def mv(s):
        t = torch.from_numpy(np.ascontiguousarray(s, dtype=np.float64)).reshape(xt.shape)
        js = torch.func.jvp(model, (xt,), (t.to(dev),))[1].detach().reshape(-1).cpu().numpy()
        return (1.0 - d) * s + (2.0 * d - 1.0) * js

    op = LinearOperator((n, n), matvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(n)
    try:
        vals = eigs(op, k=6, which="LM", tol=tol, ncv=24, maxiter=maxiter, v0=v0,
                    return_eigenvectors=False)  # fmt: skip
    except ArpackNoConvergence as e:
        vals = e.eigenvalues
        if len(vals) == 0:
            return float("nan")
    return float(np.abs(vals).max())


def radii(torch, model, X, masks):
    if not len(masks):
        return []
    m = copy.deepcopy(model).double().eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return [round(admm_radius(torch, m, X[i], masks[i]), 4) for i in range(len(masks))]


def export_all(torch, a, run: Path, Xtr):
    """ONNX of every saved state dict in ``run`` (crossings and final), float32, as
    _common.export writes every model here; returns {name: max |ORT - torch|}."""
    out = {}
    for pt in sorted(run.glob("*.pt")):
        if pt.name == "state.pt":
            continue
        saved = torch.load(pt, weights_only=True, map_location="cpu")
        m = build(torch, a.act, widths=[int(w) for w in a.widths.split(",")])
        m.load_state_dict({k: v.float() for k, v in saved["model"].items()})
        out[pt.stem] = export(m, torch.from_numpy(Xtr), run / f"{pt.stem}.onnx")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="run folder")
    ap.add_argument("--data", default="colour32")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--widths", default="32,64,128,256")
    ap.add_argument("--act", choices=("lrelu", "prelu", "softplus"), default="lrelu")
    ap.add_argument("--steps", type=int, default=150000, help="Adam steps at most")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-min", type=float, default=1e-7)
    ap.add_argument("--warmup", type=int, default=500, help="linear warm-up steps")
    ap.add_argument("--max-seconds", type=float, default=420.0, help="wall cap, whole run")
    ap.add_argument("--polish-seconds", type=float, default=60.0, help="float64 L-BFGS; 0: none")
    ap.add_argument("--time-steps", type=int, default=300, help="steps timed to fit the budget")
    ap.add_argument("--check-every", type=int, default=10, help="steps between loss reads")
    ap.add_argument("--screen-every", type=float, default=60.0, help="seconds; 0: every check")
    ap.add_argument("--screen-images", type=int, default=5, help="0: no radius (smoke tests)")
    ap.add_argument("--save-every", type=float, default=60.0)
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cpu")
    ap.add_argument(
        "--denoise-sigma", default=None, metavar="LO:HI",
        help="denoising training (Kadkhodaie et al. 2024): per Adam step the training set "
        "once clean and --denoise-copies - 1 times with Gaussian noise of a std drawn from "
        "U[LO, HI] per copy, all mapped to the clean images; the polish minimizes the same "
        "objective on one fixed draw; crossings and screens read the CLEAN train MSE",
    )  # fmt: skip
    ap.add_argument("--denoise-copies", type=int, default=3, help="copies per step (1 clean)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--export-only", action="store_true", help="ONNX of RUN/*.pt, then exit")
    a = ap.parse_args(argv)
    sig = None
    if a.denoise_sigma is not None:
        lo, _, hi = a.denoise_sigma.partition(":")
        sig = (float(lo), float(hi or lo))
        if not (0 <= sig[0] <= sig[1] and math.isfinite(sig[1])):
            ap.error(f"--denoise-sigma: expected S or LO:HI with 0 <= LO <= HI, got {sig}")
        if a.denoise_copies < 2:
            ap.error("--denoise-copies: expected at least 2 (one clean copy and a noisy one)")

    import torch

    run = Path(a.run)
    run.mkdir(parents=True, exist_ok=True)
    Xtr, Xte = load(a.data)
    Xtr = Xtr[: a.n]
    if a.export_only:
        a_saved = argparse.Namespace(**json.loads((run / "args.json").read_text()))
        print(json.dumps(export_all(torch, a_saved, run, Xtr)))
        return
    dev = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if a.device == "auto" else a.device))  # fmt: skip
    # strict float32: no TF32 anywhere (matmul and cuDNN convolutions)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(SEED)
    widths = [int(w) for w in a.widths.split(",")]
    model = build(torch, a.act, widths=widths).to(dev)
    n_par = sum(p.numel() for p in model.parameters())
    masks = random_pixel_masks(Xtr.shape[2:], 0.5, a.screen_images, 0)
    st = dict(phase="adam", step=0, steps_total=None, elapsed=0.0, crossed=[], s_per_step=None)
    opt = torch.optim.Adam(
        model.parameters(), lr=a.lr, **({"fused": True} if dev.type == "cuda" else {})
    )
    state_file = run / "state.pt"
    if a.resume and state_file.exists():
        saved = torch.load(state_file, weights_only=True, map_location=dev)
        st = json.loads(saved["meta"])
        if st["phase"] != "adam":
            model.double()
        model.load_state_dict(saved["model"])
        if saved.get("adam") is not None and st["phase"] == "adam":
            opt.load_state_dict(saved["adam"])
    else:
        (run / "log.jsonl").unlink(missing_ok=True)
    (run / "args.json").write_text(json.dumps(vars(a), indent=1))
    t_resume = time.time()

    def elapsed():
        return st["elapsed"] + time.time() - t_resume

    def logline(**kw):
        rec = dict(t=round(elapsed(), 1), phase=st["phase"], step=st["step"], **kw)
        with open(run / "log.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), file=sys.stderr, flush=True)

    def save(with_adam=True):
        meta = dict(st, elapsed=elapsed())
        tmp = run / "state.pt.tmp"
        adam = opt.state_dict() if with_adam and st["phase"] == "adam" else None
        torch.save({"model": model.state_dict(), "meta": json.dumps(meta), "adam": adam}, tmp)
        os.replace(tmp, state_file)

    dt = torch.float64 if st["phase"] != "adam" else torch.float32
    x = torch.from_numpy(Xtr).to(dev, dt)
    xt = torch.from_numpy(Xte).to(dev, dt)

    def mse(X):
        with torch.no_grad():
            return float(torch.mean((model(X) - X) ** 2))

    noise = torch.Generator(device=dev).manual_seed(SEED + 1)  # own stream (not resumed)

    def noisy(X, gen):
        """(inputs, targets): X once clean, then copies with noise of a U[LO, HI] std each."""
        k = a.denoise_copies
        tgt = X.repeat(k, *([1] * (X.ndim - 1)))
        shape = (tgt.shape[0],) + (1,) * (X.ndim - 1)
        std = sig[0] + (sig[1] - sig[0]) * torch.rand(shape, generator=gen, device=dev,
                                                       dtype=X.dtype)  # fmt: skip
        std[: X.shape[0]] = 0.0
        z = torch.randn(tgt.shape, generator=gen, device=dev, dtype=X.dtype)
        return tgt + std * z, tgt

    def check_cross(lv):
        for thr in THRESHOLDS:
            if lv < thr and thr not in st["crossed"]:
                st["crossed"].append(thr)
                sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
                torch.save(
                    {"model": sd, "meta": json.dumps(dict(st, loss=lv))}, run / f"{tag(thr)}.pt"
                )
                logline(crossed=tag(thr), loss=lv)

    last_save, last_screen, screen_s, n_screens = time.time(), -1e9, 0.0, 0

    def screen(lv, **kw):
        nonlocal last_screen, screen_s, n_screens
        t0 = time.time()
        r = radii(torch, model, Xtr, masks)
        screen_s += time.time() - t0
        n_screens += 1
        last_screen = time.time()
        logline(train=lv, test=mse(xt), admm_radius=r, screen_s=round(time.time() - t0, 2), **kw)

    if not a.resume:
        logline(start=True, device=str(dev), gpu=torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
                torch=torch.__version__, n_params=n_par, train_values=int(x.numel()),
                params_per_value=round(n_par / x.numel(), 2), widths=widths, act=a.act,
                tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                tf32_cudnn=torch.backends.cudnn.allow_tf32)  # fmt: skip
    adam_cap = a.max_seconds - a.polish_seconds
    if st["phase"] == "adam":
        t_timed, lr = None, None

        def sync():
            if dev.type == "cuda":
                torch.cuda.synchronize()

        while st["steps_total"] is None or st["step"] < st["steps_total"]:
            s = st["step"]
            if st["steps_total"] is None:  # time steps 20 .. 20 + time_steps, then fit the cap
                if s == 20 or (t_timed is None and s > 20):  # (a resumed timing)
                    sync()
                    t_timed = (time.time(), s)
                if s == 20 + a.time_steps or s + 1 >= a.steps:
                    sync()
                    sps = (time.time() - t_timed[0]) / (s - t_timed[1]) if t_timed else 0.0
                    # keep time for the screens still to come (each as long as those so far)
                    per = screen_s / max(n_screens, 1)
                    left = (adam_cap - elapsed()) * (
                        0.95 - min(per / max(a.screen_every, 1e-9), 0.5)
                    )
                    fit = s + int(left / sps) if sps > 0 else a.steps
                    st["steps_total"] = max(s + 1, min(a.steps, fit))
                    st["s_per_step"] = sps
                    logline(steps_total=st["steps_total"], s_per_step=sps, steps_asked=a.steps)
            total = st["steps_total"] or a.steps
            if s < a.warmup:
                lr = a.lr * (s + 1) / a.warmup
            else:
                frac = min((s - a.warmup) / max(total - a.warmup, 1), 1.0)
                lr = a.lr_min + (a.lr - a.lr_min) * 0.5 * (1 + math.cos(math.pi * frac))
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            if sig is None:
                loss = torch.mean((model(x) - x) ** 2)
            else:
                xin, xout = noisy(x, noise)
                loss = torch.mean((model(xin) - xout) ** 2)
            if s % a.check_every == 0:
                # the one device sync per check_every steps (denoising: the clean train MSE)
                lv = float(loss.detach()) if sig is None else mse(x)
                if not math.isfinite(lv):
                    logline(error="non-finite loss")
                    save(False)
                    sys.exit(4)
                check_cross(lv)
                if time.time() - last_screen > a.screen_every:
                    screen(lv, lr=lr)
                if time.time() - last_save > a.save_every:
                    save()
                    last_save = time.time()
            loss.backward()
            opt.step()
            st["step"] += 1
            if elapsed() > adam_cap:  # the estimate was off: stop on time, say so
                logline(stopped="Adam wall cap reached before steps_total")
                break
        screen(mse(x), lr=lr)
        st["phase"], st["adam_steps"], st["step"] = "polish", st["step"], 0
        model.double()
        x, xt = x.double(), xt.double()
        save(False)
    if st["phase"] == "polish" and a.polish_seconds > 0:

        def make():
            return torch.optim.LBFGS(model.parameters(), lr=1, max_iter=20, history_size=50,
                                     line_search_fn="strong_wolfe", tolerance_grad=0,
                                     tolerance_change=0)  # fmt: skip

        xin, xout = x, x
        if sig is not None:  # one fixed draw (L-BFGS needs a deterministic objective)
            xin, xout = noisy(x, torch.Generator(device=dev).manual_seed(SEED + 2))

        def closure():
            model.zero_grad(set_to_none=True)
            loss = torch.mean((model(xin) - xout) ** 2)
            loss.backward()
            return loss

        lb, prev, stalls = make(), float("inf"), 0
        while elapsed() < a.max_seconds - 5:
            obj = float(lb.step(closure).detach())  # the objective (denoising: on its draw)
            st["step"] += 1
            if not math.isfinite(obj):
                logline(error="non-finite loss in the polish")
                break
            lv = mse(x)
            check_cross(lv)
            stalls = stalls + 1 if obj >= prev * (1 - 1e-7) else 0
            if stalls >= 5:
                logline(stalled=lv)
                break
            if stalls:
                lb = make()
            prev = min(prev, obj)
            if time.time() - last_screen > a.screen_every:
                screen(lv)
            if time.time() - last_save > a.save_every:
                save(False)
                last_save = time.time()
    st["phase"] = "done"
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    torch.save({"model": sd, "meta": json.dumps(dict(st, elapsed=elapsed()))}, run / "final.pt")
    screen(mse(x), final=True, screens_s=round(screen_s, 1))
    save(False)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        logline(export="skipped: onnx/onnxruntime not importable; run --export-only later")
        return
    logline(export=export_all(torch, a, run, Xtr))


if __name__ == "__main__":
    main()
