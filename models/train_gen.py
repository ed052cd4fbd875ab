"""Generators (Aberdam et al., 2020; Joshi et al., 2021) and encoders for lifted Bregman inversion (Wang and Benning, 2023).

All four are autoencoders trained with full-batch Adam on the 100 training
digits of ``data/digits28.npz`` (1x28x28, NOT MNIST: see README); the parts
the inversion methods need are exported as separate ONNX files:

* ``gen-fc``  (Aberdam et al., 2020, Sec. 6.2): decoder z(20) -> Linear 128 -> BN -> ReLU ->
  Linear 392 -> BN -> ReLU -> Linear 784 -> PLU, PLU(u) = 0.1 u + 0.9 clip(u, 0, 1)
  (invertible piecewise linear: identity on [0, 1], slope 0.1 outside;
  inverse: y on [0, 1], 10 y below 0, 10 (y - 0.9) above 1). Batch norm is
  folded into the preceding Linear at export (eval-mode statistics = the
  full-batch statistics of the final training codes), so the ONNX graph is
  Gemm, Relu, Gemm, Relu, Gemm, then Clip/Mul/Mul/Add for the PLU, Reshape.
  Encoder (not shipped) 784-392-128-20, ReLU, linear code.
* ``plugin``  (Joshi et al., 2021, Sec. 4): decoder z(20) -> 500 -> 500 -> 784, ReLU after
  EVERY layer (output included), NO biases: G(z) = ReLU(A3 ReLU(A2 ReLU(A1 z))),
  the form of PLUGIn's theory (legacy export of bias-free Linear gives MatMul
  nodes whose weight initializers are already transposed, (in, out)).
  Encoder (not shipped) 784-500-500-20, ReLU, linear code.
* ``bregman-fc`` (Wang and Benning, 2023, Sec. 5.1.2): x -> ReLU(W1 x + b1) (code 100) ->
  W2 . + b2. Encoder and decoder exported separately (Flatten + Gemm + Relu;
  Gemm + Reshape). The paper centres MNIST images; we do not (images in [0, 1]).
* ``bregman-conv`` (Wang and Benning, 2023, Sec. 5.2): encoder Conv(1->8, 4x4, s2, p1) ReLU,
  Conv(8->16, 4x4, s2, p1) ReLU, Flatten, Linear(784 -> 300) ReLU (the code);
  decoder Linear(300 -> 784) (affine), reshape 16x7x7, ConvTranspose(16->8,
  4x4, s2, p1) ReLU, ConvTranspose(8->1, 4x4, s2, p1) ReLU.

For each, ``latents/<name>_codes.npz`` holds float32 arrays ``z_train`` and
``z_test`` (the encoder's codes of the training / held-out images, i.e. the
ground truth for inversion; decoder(z_train) is an exactly attainable target).

Usage: python models/train_gen.py [--only gen-fc plugin bregman-fc bregman-conv]
       [--max-seconds 240]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from _common import (
    HERE,
    ONNX_DIR,
    attractor_fraction,
    export,
    load,
    n_params,
    ort_run,
    rel,
    status,
    torch_setup,
    update_manifest,
)

SEED = 42
NAMES = ("gen-fc", "plugin", "bregman-fc", "bregman-conv")
STEPS = {"gen-fc": 4000, "plugin": 4000, "bregman-fc": 4000, "bregman-conv": 4000}
LR = 1e-3


def build(torch, name):
    nn = torch.nn

    class PLU(nn.Module):
        def forward(self, u):
            return 0.1 * u + 0.9 * torch.clamp(u, 0.0, 1.0)

    class View(nn.Module):
        def __init__(self, *shape):
            super().__init__()
            self.shape = shape

        def forward(self, x):
            return x.view(-1, *self.shape)

    if name == "gen-fc":
        enc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 392),
            nn.ReLU(),
            nn.Linear(392, 128),
            nn.ReLU(),
            nn.Linear(128, 20),
        )
        dec = nn.Sequential(
            nn.Linear(20, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(),
            nn.Linear(128, 392),
            nn.BatchNorm1d(392),
            nn.ReLU(),
            nn.Linear(392, 784),
            PLU(),
            View(1, 28, 28),
        )
    elif name == "plugin":
        enc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 500),
            nn.ReLU(),
            nn.Linear(500, 500),
            nn.ReLU(),
            nn.Linear(500, 20),
        )
        dec = nn.Sequential(
            nn.Linear(20, 500, bias=False),
            nn.ReLU(),
            nn.Linear(500, 500, bias=False),
            nn.ReLU(),
            nn.Linear(500, 784, bias=False),
            nn.ReLU(),
            View(1, 28, 28),
        )
    elif name == "bregman-fc":
        enc = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU())
        dec = nn.Sequential(nn.Linear(100, 784), View(1, 28, 28))
    elif name == "bregman-conv":
        enc = nn.Sequential(
            nn.Conv2d(1, 8, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 4, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(784, 300),
            nn.ReLU(),
        )
        dec = nn.Sequential(
            nn.Linear(300, 784),
            View(16, 7, 7),
            nn.ConvTranspose2d(16, 8, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 4, 2, 1),
            nn.ReLU(),
        )
    else:
        raise ValueError(name)

    class AE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec = enc, dec

        def forward(self, x):
            return self.dec(self.enc(x))

    return AE()


def fold_bn(torch, dec):
    """Replace Linear+BatchNorm1d (eval) by one Linear with the same output."""
    nn = torch.nn
    mods = list(dec)
    out = []
    i = 0
    while i < len(mods):
        m = mods[i]
        if (
            isinstance(m, nn.Linear)
            and i + 1 < len(mods)
            and isinstance(mods[i + 1], nn.BatchNorm1d)
        ):
            bn = mods[i + 1]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            lin = nn.Linear(m.in_features, m.out_features)
            with torch.no_grad():
                lin.weight.copy_(m.weight * scale[:, None])
                lin.bias.copy_((m.bias - bn.running_mean) * scale + bn.bias)
            out.append(lin)
            i += 2
        else:
            out.append(m)
            i += 1
    return nn.Sequential(*out)


def train(name, max_seconds):
    torch = torch_setup(SEED)
    Xtr, Xte = load("digits28")
    x = torch.from_numpy(Xtr)
    model = build(torch, name)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    steps = STEPS[name]
    t0 = time.time()
    log = open(f"/tmp/refinv_train_{name}.log", "a")
    for step in range(steps):
        lr = 1e-5 + 0.5 * (LR - 1e-5) * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        z = model.enc(x)
        loss = torch.mean((model.dec(z) - x) ** 2)
        # keep latent codes O(1) for the generators (ground truth for inversion)
        total = loss + (1e-4 * torch.mean(z**2) if name in ("gen-fc", "plugin") else 0.0)
        total.backward()
        opt.step()
        if step % 500 == 0:
            print(
                f"{name} step {step} loss {float(loss.detach()):.3e} t {time.time() - t0:.0f}s",
                file=log,
                flush=True,
            )
        if time.time() - t0 > max_seconds:
            print(f"{name}: wall-clock cap {max_seconds}s at step {step}", file=log, flush=True)
            break
    secs = time.time() - t0
    steps_done = step + 1
    model.eval()
    if name == "gen-fc":
        # eval-mode BN statistics := the exact (biased) full-batch statistics of the final codes
        with torch.no_grad():
            h = model.enc(x)
            for m in model.dec:
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.running_mean.copy_(h.mean(0))
                    m.running_var.copy_(h.var(0, unbiased=False))
                h = m(h)
        model.dec = fold_bn(torch, model.dec).eval()
    with torch.no_grad():
        ztr = model.enc(x)
        zte = model.enc(torch.from_numpy(Xte))
    tag = {
        "gen-fc": "digits28_gen_fc_20-128-392-784",
        "plugin": "digits28_plugin_20-500-500-784",
        "bregman-fc": "digits28_bregman_fc_code100",
        "bregman-conv": "digits28_bregman_conv_code300",
    }[name]
    dpath = ONNX_DIR / f"{tag}_decoder.onnx"
    ddiff = export(model.dec, ztr, dpath, in_name="z", out_name="y")
    g_train = ort_run(dpath, ztr.numpy(), in_name="z")
    g_test = ort_run(dpath, zte.numpy(), in_name="z")
    dec_mse = float(np.mean((g_train.astype(np.float64) - Xtr) ** 2))
    dec_mse_te = float(np.mean((g_test.astype(np.float64) - Xte) ** 2))
    entries = {}
    epath = None
    if name.startswith("bregman"):
        epath = ONNX_DIR / f"{tag}_encoder.onnx"
        ediff = export(model.enc, x, epath, in_name="x", out_name="y")
        code_ort = ort_run(epath, Xtr)
        code_err = float(np.max(np.abs(code_ort - ztr.numpy())))
    lpath = HERE / "latents" / f"{tag}_codes.npz"
    lpath.parent.mkdir(exist_ok=True)
    np.savez(lpath, z_train=ztr.numpy().astype(np.float32), z_test=zte.numpy().astype(np.float32))
    frac, radii = attractor_fraction(model, Xtr)
    arch = {
        "gen-fc": "decoder 20-128-392-784 fully connected: Gemm-Relu-Gemm-Relu-Gemm-PLU-Reshape "
        "(batch norm of the first two layers folded into their Gemm); PLU(u) = 0.1 u + "
        "0.9 clip(u, 0, 1). Trained jointly with an encoder 784-392-128-20 (ReLU, linear code)",
        "plugin": "decoder 20-500-500-784, bias-free, ReLU after every layer including the "
        "output: G(z) = ReLU(A3 ReLU(A2 ReLU(A1 z))) (MatMul nodes, weights stored (in, out)). "
        "Trained jointly with an encoder 784-500-500-20 (ReLU, linear code)",
        "bregman-fc": "2-layer FC autoencoder: encoder Flatten-Gemm(784->100)-Relu (code 100); "
        "decoder Gemm(100->784)-Reshape (affine, linear)",
        "bregman-conv": "encoder Conv(1->8,4x4,s2,p1)-Relu-Conv(8->16,4x4,s2,p1)-Relu-Flatten-"
        "Gemm(784->300)-Relu (code 300); decoder Gemm(300->784)-Reshape(16,7,7)-"
        "ConvTranspose(16->8,4x4,s2,p1)-Relu-ConvTranspose(8->1,4x4,s2,p1)-Relu",
    }[name]
    common = dict(
        dataset="data/digits28.npz",
        split="train",
        n_train=100,
        seed=SEED,
        optimizer=f"Adam full batch (N=100), torch {torch.__version__}, 1 thread"
        + ("; loss MSE + 1e-4 mean(z^2)" if name in ("gen-fc", "plugin") else "; loss MSE"),
        schedule=f"cosine lr {LR:g} -> 1e-5 over {steps} steps (cap {max_seconds}s); "
        f"{steps_done} steps run",
        exporter="torch.onnx.export legacy (dynamo=False)",
        opset=17,
        train_seconds=round(secs, 1),
        latents_file=rel(lpath),
        family=name,
    )
    entries[rel(dpath)] = dict(
        common,
        kind="decoder",
        name=f"{name}-decoder",
        architecture=arch,
        activation={
            "gen-fc": "ReLU hidden, PLU output",
            "plugin": "ReLU everywhere",
            "bregman-fc": "none (affine decoder)",
            "bregman-conv": "ReLU",
        }[name],
        input_name="z",
        input_shape=[None, int(ztr.shape[1])],
        output_shape=[None, 1, 28, 28],
        n_params=n_params(model.dec),
        train_mse=dec_mse,
        test_mse=dec_mse_te,
        train_mse_definition="mean((decoder(z_train) - train images)^2), z_train from "
        + rel(lpath),
        ort_vs_torch_max_abs_diff=ddiff,
        autoencoder_attractor_fraction=frac,
        autoencoder_jacobian_spectral_radius=radii,
        attractor_note="spectral radius of the Jacobian of decoder(encoder(x)) at the "
        "training images",
    )
    if epath is not None:
        entries[rel(epath)] = dict(
            common,
            kind="encoder",
            name=f"{name}-encoder",
            architecture=arch,
            activation="ReLU",
            input_shape=[None, 1, 28, 28],
            output_shape=[None, int(ztr.shape[1])],
            n_params=n_params(model.enc),
            ort_vs_torch_max_abs_diff=ediff,
            max_abs_diff_to_z_train=code_err,
            decoder=rel(dpath),
            train_mse=dec_mse,
            train_mse_definition="of the full autoencoder decoder(encoder(x)) on the train set",
        )
    entries[rel(lpath)] = dict(
        kind="latents",
        name=f"{name}-codes",
        dataset="data/digits28.npz",
        seed=SEED,
        keys={"z_train": list(ztr.shape), "z_test": list(zte.shape)},
        description="float32: z_train / z_test = encoder codes of the train / held-out images "
        "(torch float32); decoder(z_train) is an exactly attainable inversion target",
        decoder=rel(dpath),
        encoder=rel(epath) if epath else None,
    )
    update_manifest(entries)
    print(
        f"{name}: decoder-recon mse {dec_mse:.3e} test {dec_mse_te:.3e} attr {frac:.2f} "
        f"{secs:.0f}s",
        file=log,
        flush=True,
    )
    return rel(dpath), dec_mse


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", choices=NAMES, default=None)
    ap.add_argument("--max-seconds", type=float, default=240)
    a = ap.parse_args(argv)
    done = []
    for name in a.only or NAMES:
        p, mse = train(name, a.max_seconds)
        done.append(f"models/{p} (recon MSE {mse:.2e})")
    status("ready: " + ", ".join(done) + " (+ encoders/latents, see MANIFEST)")


if __name__ == "__main__":
    main()
