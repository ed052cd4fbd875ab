"""Deep fully connected autoencoders trained to (numerical) perfect fit (Abitbul and Dar, 2023, App. C).

Full-batch Adam with a cosine learning-rate schedule, Kaiming init
(leaky_relu, a = slope) and zero biases. The model is saved (ONNX) the first
time the full-batch train MSE drops below 1e-3, 1e-4, 1e-5 and 1e-6 (the
state BEFORE that optimizer step, i.e. exactly the parameters whose loss was
measured). Optionally ("refit") the LAST linear layer is then refit in closed
form: float64 least squares of the residual on the training features of the
last hidden layer, added to the Adam weights (minimum-norm correction). This
is not gradient training and the manifest says so for every model it touches.
If a checkpoint threshold is first crossed only by the refit, that checkpoint
is the interpolation  W = W_refit + s (W_adam - W_refit)  of the last layer
(train MSE scales like s^2), flagged "interpolated" in the manifest.

Usage:
    python models/train_mlp.py --only digits-lrelu [--max-seconds 600]
    python models/train_mlp.py            # all MLP models in order
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import numpy as np
from _common import (
    ONNX_DIR,
    attractor_fraction,
    export,
    load,
    n_params,
    ort_mse,
    rel,
    status,
    torch_setup,
    update_manifest,
)

THRESHOLDS = (1e-3, 1e-4, 1e-5, 1e-6)

# name: dataset, width, hidden layers, activation, steps, lr, lr_min, refit, checkpoints, seconds
SPECS = {
    "digits-lrelu": dict(
        data="digits8",
        width=320,
        depth=6,
        act="lrelu",
        steps=12000,
        lr=1e-4,
        lr_min=1e-6,
        refit=True,
        ckpt=True,
        seconds=900,
    ),
    "faces-lrelu": dict(
        data="faces25",
        width=256,
        depth=6,
        act="lrelu",
        steps=10000,
        lr=1e-3,
        lr_min=1e-5,
        refit=True,
        ckpt=True,
        seconds=900,
    ),
    "digits-prelu": dict(
        data="digits8",
        width=224,
        depth=6,
        act="prelu",
        steps=10000,
        lr=1e-4,
        lr_min=1e-6,
        refit=True,
        ckpt=False,
        seconds=600,
    ),
    "digits-lrelu-10layer": dict(
        data="digits8",
        width=192,
        depth=9,
        act="lrelu",
        steps=10000,
        lr=1e-4,
        lr_min=1e-6,
        refit=True,
        ckpt=False,
        seconds=600,
    ),
    "digits28-lrelu": dict(
        data="digits28",
        width=256,
        depth=6,
        act="lrelu",
        steps=10000,
        lr=1e-3,
        lr_min=1e-5,
        refit=True,
        ckpt=False,
        seconds=900,
    ),
    "faces-prelu": dict(
        data="faces25",
        width=160,
        depth=6,
        act="prelu",
        steps=10000,
        lr=1e-3,
        lr_min=1e-5,
        refit=True,
        ckpt=False,
        seconds=600,
    ),
}
SLOPE = 0.1
SEED = 42
TARGET = 5e-14  # stop Adam once the float32 train MSE is below this


def build(torch, n, shape, width, depth, act):
    nn = torch.nn

    def activation():
        if act == "lrelu":
            return nn.LeakyReLU(SLOPE)
        if act == "prelu":
            return nn.PReLU(num_parameters=width, init=SLOPE)
        raise ValueError(act)

    class MLPAE(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [nn.Linear(n, width), activation()]
            for _ in range(depth - 1):
                layers += [nn.Linear(width, width), activation()]
            layers += [nn.Linear(width, n)]
            self.net = nn.Sequential(*layers)
            self.shape = tuple(int(s) for s in shape)
            for m in self.net:
                if isinstance(m, nn.Linear):
                    nn.init.kaiming_normal_(m.weight, a=SLOPE, nonlinearity="leaky_relu")
                    nn.init.zeros_(m.bias)

        def features(self, x):
            return self.net[:-1](torch.flatten(x, 1))

        def forward(self, x):
            y = self.net(torch.flatten(x, 1))
            return y.view(-1, *self.shape)

    return MLPAE()


def refit_last(torch, model, X):
    """Minimum-norm float64 least-squares correction of the last Linear layer."""
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        xt = torch.from_numpy(X.astype(np.float64))
        H = m64.features(xt).numpy()
        R = X.reshape(X.shape[0], -1).astype(np.float64) - m64(xt).reshape(X.shape[0], -1).numpy()
        Ha = np.concatenate([H, np.ones((H.shape[0], 1))], axis=1)
        D, *_ = np.linalg.lstsq(Ha, R, rcond=None)  # (width+1, n)
        last = model.net[-1]
        W0 = last.weight.detach().double().numpy()
        b0 = last.bias.detach().double().numpy()
        W1 = W0 + D[:-1].T
        b1 = b0 + D[-1]
        cond = float(np.linalg.cond(H))
    return (W0, b0), (W1, b1), cond


def set_last(torch, model, W, b):
    with torch.no_grad():
        model.net[-1].weight.copy_(torch.from_numpy(np.asarray(W, dtype=np.float32)))
        model.net[-1].bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float32)))


def refit_finish(cond: float) -> str:
    """The manifest's ``finish`` text of a last-layer refit (``cond``: the features' condition
    number)."""
    return (
        "after Adam, the LAST Linear layer was refit in closed form: float64 minimum-norm "
        "least squares of the training residual on the last hidden layer's features (with a "
        "bias column), added to the Adam weights; not gradient training. Condition number of "
        f"those features: {cond:.3g}"
    )


def set_interpolated_last(torch, model, refit: dict, threshold: float, adam_mse: float) -> float:
    """Last layer ``W = W_refit + s (W_adam - W_refit)`` with ``s = sqrt(0.9 threshold /
    adam_mse)``, so the train MSE (~ s^2 x Adam's) is just below ``threshold``; returns s."""
    s = math.sqrt(0.9 * threshold / adam_mse)
    set_last(
        torch,
        model,
        refit["W1"] + s * (refit["W0"] - refit["W1"]),
        refit["b1"] + s * (refit["b0"] - refit["b1"]),
    )
    return s


def train_one(name, spec, max_seconds=None):
    torch = torch_setup(SEED)
    Xtr, Xte = load(spec["data"])
    shape = Xtr.shape[1:]
    n = int(np.prod(shape))
    model = build(torch, n, shape, spec["width"], spec["depth"], spec["act"])
    x = torch.from_numpy(Xtr)
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    steps, lr0, lr1 = spec["steps"], spec["lr"], spec["lr_min"]
    limit = spec["seconds"] if max_seconds is None else max_seconds
    ckpts = {}  # threshold -> (step, loss, state_dict)
    t0 = time.time()
    step, loss_v, best = 0, float("inf"), float("inf")
    log = open(f"/tmp/refinv_train_{name}.log", "a")
    for step in range(steps):
        lr = lr1 + 0.5 * (lr0 - lr1) * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((model(x) - x) ** 2)
        loss_v = float(loss.detach())
        best = min(best, loss_v)
        if spec["ckpt"]:
            for th in THRESHOLDS:
                if th not in ckpts and loss_v < th:
                    ckpts[th] = (step, loss_v, copy.deepcopy(model.state_dict()))
        if loss_v < TARGET:
            break
        if step % 500 == 0:
            print(
                f"{name} step {step} lr {lr:.2e} loss {loss_v:.3e} t {time.time() - t0:.0f}s",
                file=log,
                flush=True,
            )
        if time.time() - t0 > limit:
            print(f"{name}: wall-clock limit {limit}s hit at step {step}", file=log, flush=True)
            break
        loss.backward()
        opt.step()
    train_seconds = time.time() - t0
    adam_steps = step + 1
    with torch.no_grad():
        adam_mse = float(torch.mean((model(x) - x) ** 2))
    print(
        f"{name}: Adam done, {adam_steps} steps, mse {adam_mse:.3e}, {train_seconds:.0f}s",
        file=log,
        flush=True,
    )

    base = f"{spec['data']}_{spec['act']}_{spec['depth']}x{spec['width']}"
    arch = (
        f"MLP autoencoder {n}-{spec['width']}x{spec['depth']}-{n} (Linear layers: "
        f"{spec['depth'] + 1}; {spec['depth']} hidden layers of width {spec['width']}), "
        f"activation after every hidden Linear, linear output; input flattened, output "
        f"reshaped to {list(shape)}"
    )
    act_desc = (
        f"LeakyReLU(negative_slope={SLOPE})"
        if spec["act"] == "lrelu"
        else f"PReLU(one slope per unit, init {SLOPE}, trained)"
    )
    common = dict(
        kind="autoencoder",
        architecture=arch,
        activation=act_desc,
        dataset=f"data/{spec['data']}.npz",
        split="train",
        n_train=int(Xtr.shape[0]),
        seed=SEED,
        input_shape=[None, *map(int, shape)],
        output_shape=[None, *map(int, shape)],
        init="Kaiming normal (leaky_relu, a=0.1), zero biases",
        optimizer=f"Adam full batch (N={Xtr.shape[0]}), torch {torch.__version__}, 1 thread",
        schedule=(
            f"cosine lr {lr0:g} -> {lr1:g} over {steps} steps; stop at train MSE "
            f"< {TARGET:g} or after {limit}s wall clock"
        ),
        exporter="torch.onnx.export legacy (dynamo=False)",
        opset=17,
        n_params=n_params(model),
    )
    entries = {}

    refit = None
    if spec["refit"] and adam_mse > 1e-12:
        (W0, b0), (W1, b1), cond = refit_last(torch, model, Xtr)
        refit = dict(W0=W0, b0=b0, W1=W1, b1=b1, cond=cond)
        set_last(torch, model, W1, b1)

    # Final model
    path = ONNX_DIR / f"{base}.onnx"
    diff = export(model, torch.from_numpy(Xtr), path)
    mse = ort_mse(path, Xtr)
    mse_te = ort_mse(path, Xte)
    frac, radii = attractor_fraction(model, Xtr)
    rec = dict(common)
    rec.update(
        name=name,
        adam_steps=adam_steps,
        adam_final_train_mse_torch=adam_mse,
        train_seconds=round(train_seconds, 1),
        train_mse=mse,
        test_mse=mse_te,
        ort_vs_torch_max_abs_diff=diff,
        attractor_fraction=frac,
        jacobian_spectral_radius=radii,
        checkpoints=[],
    )
    if refit is not None:
        rec["finish"] = refit_finish(refit["cond"])
    print(
        f"{name}: final ORT train mse {mse:.3e} test {mse_te:.3e} attractors {frac:.2f}",
        file=log,
        flush=True,
    )

    # Checkpoints
    if spec["ckpt"]:
        final_state = copy.deepcopy(model.state_dict())
        for th in THRESHOLDS:
            tag = f"{th:.0e}".replace("-0", "-")
            cpath = ONNX_DIR / "checkpoints" / f"{base}_mse{tag}.onnx"
            crec = dict(common)
            crec.update(name=f"{name}@{tag}", checkpoint_of=rel(path), threshold=th)
            if th in ckpts:
                st, lv, sd = ckpts[th]
                model.load_state_dict(sd)
                crec.update(
                    adam_steps=st,
                    train_mse_torch_at_save=lv,
                    how="Adam state when the full-batch train MSE first dropped below "
                    "the threshold (before that step's update)",
                )
            elif refit is not None and adam_mse >= th:
                model.load_state_dict(final_state)
                s = set_interpolated_last(torch, model, refit, th, adam_mse)
                crec.update(
                    adam_steps=adam_steps,
                    interpolated=True,
                    how=f"interpolated: Adam's final weights with the last layer "
                    f"W = W_refit + {s:.4g} (W_adam - W_refit) (Adam never crossed "
                    f"this threshold; train MSE ~ s^2 * Adam's)",
                )
            else:
                continue
            cdiff = export(model, torch.from_numpy(Xtr), cpath)
            cfrac, cradii = attractor_fraction(model, Xtr)
            crec.update(
                train_mse=ort_mse(cpath, Xtr),
                test_mse=ort_mse(cpath, Xte),
                ort_vs_torch_max_abs_diff=cdiff,
                attractor_fraction=cfrac,
                jacobian_spectral_radius=cradii,
            )
            entries[rel(cpath)] = crec
            rec["checkpoints"].append(rel(cpath))
            print(
                f"{name}: checkpoint {tag} mse {crec['train_mse']:.3e} attractors {cfrac:.2f}",
                file=log,
                flush=True,
            )
        model.load_state_dict(final_state)
    entries[rel(path)] = rec
    update_manifest(entries)
    status(
        f"ready: models/{rel(path)} (train MSE {mse:.2e})"
        + (f" + {len(rec['checkpoints'])} checkpoints" if rec["checkpoints"] else "")
    )
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", choices=list(SPECS), default=None)
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="wall-clock cap on the Adam phase of each model (default: per model)",
    )
    a = ap.parse_args(argv)
    for name in a.only or list(SPECS):
        train_one(name, SPECS[name], a.max_seconds)


if __name__ == "__main__":
    main()
