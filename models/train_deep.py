"""Deep fully connected autoencoders: the 10- and 20-layer models of Abitbul and Dar (2023), App. C.

Two regimes, both trained by full-batch Adam (cosine learning rate, Kaiming
init with a = slope, zero biases, one torch thread, seed 42):

* perfect fit (``--regime perfect``): 100 training images, Adam until the
  train MSE stops moving, then (``--refit``) the documented closed-form
  finish of ``train_mlp.py``: float64 minimum-norm least squares of the LAST
  Linear layer on the last hidden layer's features. Checkpoints are the Adam
  states of the first crossings of 1e-3 ... 1e-6; a threshold that only the
  refit crosses gets the interpolated last layer (flagged ``interpolated``).
* moderate overfitting (``--regime moderate``): many training images; Adam
  STOPS at the first crossing of ``--target`` (no refit), so models trained
  on 100, 300 and 1,200 images have the same train loss.

Runs are resumable: ``RUN/state.pt`` (model, Adam state, step, clock; loaded
with ``weights_only=True``) is written atomically every ``--save-every``
seconds and ``--resume`` continues from it; ``RUN/log.jsonl`` gets the train
and held-out MSE every ``--log-every`` steps. ``--register`` exports the final
model and its checkpoints into ``models/onnx/`` and the manifest.

Usage (one run each; a driver runs them in sequence):
    python models/train_deep.py --data digits28 --depth 19 --width 128 --act lrelu \\
        --regime perfect --refit --run /tmp/deep/d28_l20 --register
    python models/train_deep.py --data digits28_1797 --train-key train --n 1200 \\
        --depth 19 --width 128 --regime moderate --target 2e-4 --run /tmp/deep/mod1200 --register
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
from _common import (
    DATA,
    ONNX_DIR,
    attractor_fraction,
    export,
    n_params,
    ort_mse,
    rel,
    status,
    torch_setup,
    update_manifest,
)
from train_mlp import SLOPE, build, refit_finish, refit_last, set_interpolated_last, set_last

SEED = 42
THRESHOLDS = (1e-3, 1e-4, 1e-5, 1e-6)


def load_split(name, train_key, test_key, n):
    with np.load(DATA / f"{name}.npz", allow_pickle=False) as z:
        xtr, xte = z[train_key].copy(), z[test_key].copy()
    if n is not None:
        if n > xtr.shape[0]:
            raise SystemExit(f"--n {n}: {name}.npz[{train_key}] has only {xtr.shape[0]} images")
        xtr = xtr[:n]
    return np.ascontiguousarray(xtr), np.ascontiguousarray(xte)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--train-key", default="train")
    ap.add_argument("--test-key", default="test")
    ap.add_argument("--n", type=int, default=None, help="first N training images")
    ap.add_argument("--depth", type=int, required=True, help="hidden layers (Linear layers - 1)")
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--act", choices=("lrelu", "prelu"), default="lrelu")
    ap.add_argument("--regime", choices=("perfect", "moderate"), required=True)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-min", type=float, default=1e-5)
    ap.add_argument("--steps", type=int, default=10000, help="length of the cosine schedule")
    ap.add_argument("--target", type=float, default=5e-14, help="stop Adam below this train MSE")
    ap.add_argument("--refit", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=3600.0)
    ap.add_argument("--run", required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--save-every", type=float, default=60.0)
    ap.add_argument("--log-every", type=int, default=250)
    ap.add_argument("--register", action="store_true")
    ap.add_argument(
        "--ship-checkpoints",
        action="store_true",
        help="with --register: checkpoints into models/onnx/checkpoints and the manifest "
        "(default: RUN/checkpoints/, listed in the manifest entry as not shipped)",
    )
    ap.add_argument("--name", default=None, help="file stem in models/onnx (default derived)")
    a = ap.parse_args(argv)

    torch = torch_setup(SEED)
    run = Path(a.run)
    run.mkdir(parents=True, exist_ok=True)
    Xtr, Xte = load_split(a.data, a.train_key, a.test_key, a.n)
    shape = Xtr.shape[1:]
    nvals = int(np.prod(shape))
    model = build(torch, nvals, shape, a.width, a.depth, a.act)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    st = dict(step=0, elapsed=0.0, crossed={}, done=False)
    state_file = run / "state.pt"
    if a.resume and state_file.exists():
        saved = torch.load(state_file, weights_only=True)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["adam"])
        st = json.loads(saved["meta"])
        stop = str(st.get("stop", ""))
        if (
            st["done"]
            and a.regime == "moderate"
            and st["step"] < a.steps
            and (
                (stop.startswith("train MSE") and st.get("final_adam_mse", 0.0) >= a.target)
                or (stop.startswith("wall-clock") and st["elapsed"] < a.max_seconds)
            )
        ):
            # resumed with a LOWER target, or a later wall-clock limit, than the one it
            # stopped at: Adam continues from the saved state (same cosine schedule, same
            # step count); the stop is recorded in the run's history
            st["done"] = False
            st.setdefault("resumed_from", []).append(
                dict(step=st["step"], train=st["final_adam_mse"], stop=stop)
            )
            st.pop("stop")
    (run / "args.json").write_text(json.dumps(vars(a), indent=1))
    x, xt = torch.from_numpy(Xtr), torch.from_numpy(Xte)
    t_resume = time.time()

    def elapsed():
        return st["elapsed"] + time.time() - t_resume

    def logline(**kw):
        rec = dict(t=round(elapsed(), 1), step=st["step"], **kw)
        with open(run / "log.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def save():
        meta = dict(st, elapsed=elapsed())
        tmp = run / "state.pt.tmp"
        torch.save(
            {"model": model.state_dict(), "adam": opt.state_dict(), "meta": json.dumps(meta)}, tmp
        )
        os.replace(tmp, state_file)

    def ckpt_save(thr, lv):
        # the parameters whose loss was just measured (before this step's update)
        torch.save(model.state_dict(), run / f"ckpt_{thr:.0e}.pt")
        st["crossed"][f"{thr:.0e}"] = dict(step=st["step"], loss=lv, t=round(elapsed(), 1))

    if not st["step"]:
        logline(start=True, n_params=n_params(model), n_train=int(Xtr.shape[0]), shape=list(shape))
    last_save = time.time()
    stop_reason = None
    while not st["done"]:
        s = st["step"]
        frac = min(s / a.steps, 1.0)
        lr = a.lr_min + 0.5 * (a.lr - a.lr_min) * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((model(x) - x) ** 2)
        lv = float(loss.detach())
        if not math.isfinite(lv):
            logline(error="non-finite loss")
            sys.exit(4)
        for thr in THRESHOLDS:
            if lv < thr and f"{thr:.0e}" not in st["crossed"] and a.regime == "perfect":
                ckpt_save(thr, lv)
        if s % a.log_every == 0:
            with torch.no_grad():
                te = float(torch.mean((model(xt) - xt) ** 2))
            logline(train=lv, test=te, lr=lr)
        if lv < a.target:
            stop_reason = f"train MSE {lv:.3e} < target {a.target:g}"
        elif s >= a.steps:
            stop_reason = f"end of the {a.steps}-step schedule"
        elif elapsed() > a.max_seconds:
            stop_reason = f"wall-clock limit {a.max_seconds:g} s"
        if stop_reason:
            st["done"] = True
            st["stop"] = stop_reason
            st["final_adam_mse"] = lv
            break
        loss.backward()
        opt.step()
        st["step"] += 1
        if time.time() - last_save > a.save_every:
            save()
            last_save = time.time()
    save()
    logline(done=st.get("stop"), train=st.get("final_adam_mse"))
    st["elapsed"] = elapsed()  # the Adam phase's clock, over all resumes
    if a.register:
        register(torch, a, model, Xtr, Xte, st, run)


def register(torch, a, model, Xtr, Xte, st, run):
    shape = Xtr.shape[1:]
    nvals = int(np.prod(shape))
    n = int(Xtr.shape[0])
    stem = a.name or f"{a.data}_{a.act}_{a.depth + 1}L{a.width}" + (
        f"_n{n}" if a.regime == "moderate" else ""
    )
    adam_mse = float(st["final_adam_mse"])
    act_desc = (
        f"LeakyReLU(negative_slope={SLOPE})"
        if a.act == "lrelu"
        else f"PReLU(one slope per unit, init {SLOPE}, trained)"
    )
    common = dict(
        kind="autoencoder",
        architecture=(
            f"MLP autoencoder {nvals}-{a.width}x{a.depth}-{nvals} ({a.depth + 1} Linear layers; "
            f"{a.depth} hidden layers of width {a.width}), activation after every hidden Linear, "
            f"linear output; input flattened, output reshaped to {list(shape)}"
        ),
        activation=act_desc,
        dataset=f"data/{a.data}.npz",
        split=a.train_key + (f"[:{n}]" if a.n is not None else ""),
        n_train=n,
        seed=SEED,
        input_shape=[None, *map(int, shape)],
        output_shape=[None, *map(int, shape)],
        init=f"Kaiming normal (leaky_relu, a={SLOPE}), zero biases",
        optimizer=f"Adam full batch (N={n}), torch {torch.__version__}, 1 thread",
        schedule=(
            f"cosine lr {a.lr:g} -> {a.lr_min:g} over {a.steps} steps; stopped: {st.get('stop')}"
        ),
        regime=a.regime,
        exporter="torch.onnx.export legacy (dynamo=False)",
        opset=17,
        n_params=n_params(model),
        script="models/train_deep.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(a).items()
            if v not in (None, False)
            and k
            not in ("run", "resume", "register", "save_every", "log_every", "ship_checkpoints")
        ).replace(" True", ""),
    )
    entries = {}
    refit = None
    if a.refit and adam_mse > 1e-12:
        (W0, b0), (W1, b1), cond = refit_last(torch, model, Xtr)
        refit = dict(W0=W0, b0=b0, W1=W1, b1=b1, cond=cond)
        set_last(torch, model, W1, b1)
    path = ONNX_DIR / f"{stem}.onnx"
    diff = export(model, torch.from_numpy(Xtr), path)
    frac, radii = attractor_fraction(model, Xtr, max_images=100)
    rec = dict(common)
    rec.update(
        name=stem,
        adam_steps=int(st["step"]) + 1,
        adam_final_train_mse_torch=adam_mse,
        train_seconds=round(float(st["elapsed"]), 1),
        train_mse=ort_mse(path, Xtr),
        test_mse=ort_mse(path, Xte),
        ort_vs_torch_max_abs_diff=diff,
        attractor_fraction=frac,
        jacobian_spectral_radius=radii,
        checkpoints=[],
        train_wall_clock_note="wall clock on the shared 2-core machine (one torch thread)",
    )
    if st.get("resumed_from"):
        rec["resumed_from"] = st["resumed_from"]  # earlier stops of this run, then resumed
    if refit is not None:
        rec["finish"] = refit_finish(refit["cond"])
    final_state = copy.deepcopy(model.state_dict())
    if a.regime == "perfect":
        for thr in THRESHOLDS:
            tag = f"{thr:.0e}".replace("-0", "-")
            cdir = ONNX_DIR / "checkpoints" if a.ship_checkpoints else run / "checkpoints"
            cpath = cdir / f"{stem}_mse{tag}.onnx"
            crec = dict(common)
            crec.update(name=f"{stem}@{tag}", checkpoint_of=rel(path), threshold=thr)
            key = f"{thr:.0e}"
            if key in st["crossed"]:
                model.load_state_dict(torch.load(run / f"ckpt_{key}.pt", weights_only=True))
                crec.update(
                    adam_steps=st["crossed"][key]["step"],
                    train_mse_torch_at_save=st["crossed"][key]["loss"],
                    how="Adam state when the full-batch train MSE first dropped below the "
                    "threshold (before that step's update)",
                )
            elif refit is not None and adam_mse >= thr:
                model.load_state_dict(final_state)
                s = set_interpolated_last(torch, model, refit, thr, adam_mse)
                crec.update(
                    adam_steps=int(st["step"]) + 1,
                    interpolated=True,
                    how=f"interpolated: Adam's final weights with the last layer W = W_refit + "
                    f"{s:.4g} (W_adam - W_refit) (Adam never crossed this threshold)",
                )
            else:
                continue
            cdiff = export(model, torch.from_numpy(Xtr), cpath)
            cfrac, cradii = attractor_fraction(model, Xtr, max_images=100)
            crec.update(
                train_mse=ort_mse(cpath, Xtr),
                test_mse=ort_mse(cpath, Xte),
                ort_vs_torch_max_abs_diff=cdiff,
                attractor_fraction=cfrac,
                jacobian_spectral_radius=cradii,
            )
            if a.ship_checkpoints:
                entries[rel(cpath)] = crec
                rec["checkpoints"].append(rel(cpath))
            else:
                rec.setdefault("checkpoints_not_shipped", []).append(
                    dict(
                        file=cpath.name,
                        **{
                            k: crec[k]
                            for k in (
                                "threshold",
                                "train_mse",
                                "test_mse",
                                "attractor_fraction",
                                "how",
                            )
                        },
                    )  # fmt: skip
                )
                (run / f"{cpath.stem}.json").write_text(json.dumps(crec, indent=1, default=str))
        model.load_state_dict(final_state)
    entries[rel(path)] = rec
    update_manifest(entries)
    status(f"ready: models/{rel(path)} (train MSE {rec['train_mse']:.2e}, attractors {frac:.2f})")
    (run / "registered.json").write_text(json.dumps(rec, indent=1, default=str))


if __name__ == "__main__":
    main()
