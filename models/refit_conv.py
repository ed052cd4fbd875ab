"""Finish a conv autoencoder of train_conv.py exactly: a locally connected read-out, refit in
closed form (the conv analogue of train_mlp.py's last-layer refit).

The trained model's output layer is a 3x3 conv (C -> 3 channels, weights shared over the
16x16 positions) followed by the activation. Its shared weights cannot interpolate 50
training images (9C + 1 parameters per output channel against 50 x 256 values), so the
read-out is replaced by a *locally connected* 3x3 layer: at every pixel p and channel c its
own weights w[c, :, p] over the same 3x3 x C neighbourhood of the penultimate features.
With the features fixed, that layer is linear in its weights, 50 equations per output value
and 9C + 1 unknowns, so the float64 minimum-norm least-squares solution fits the training
images to rounding (targets: the images themselves, through the inverse of the output
activation, the identity on [0, 1] for LeakyReLU/PReLU). The conv read-out is the special
case w[c, :, p] = W_conv[c, :] for all p, so intermediate losses are reached exactly by
interpolating the read-out, W(s) = W_refit + s (W_conv - W_refit): the residual is linear
in s, train MSE(s) = s^2 x MSE(conv read-out). Those are the checkpoints below the trained
model's loss, flagged ``interpolated`` (as the faces MLP's 1e-5 / 1e-6 checkpoints).

    python models/refit_conv.py --run /tmp/conv/convae_c4 --out models/onnx/colour16_convae_lrelu_c4
        [--thresholds 1e-5,1e-6,1e-7,1e-8]

writes OUT.onnx (the refit model) and OUT_mse1e-K.onnx (interpolated checkpoints) and prints
their train / held-out MSE (onnxruntime) as JSON lines. The read-out is exported as one
batched MatMul over the pixels (:func:`lc_readout`).

    python models/refit_conv.py --from-onnx models/onnx/colour16_convae_lrelu_c4.onnx [--register]

re-exports an already exported locally connected model (and the interpolated checkpoints
its manifest entry lists) from its own ONNX weights, for files written before the read-out
was a MatMul (an element-wise Mul + ReduceSum over a broadcast (N, 3, 9C, H, W) tensor, 31%
of the model's kernel time at batch 100); it checks that the new file's outputs equal the
old one's within 1e-5 on the training and held-out images and, with ``--register``, records
the new sha256 / size / MSEs in MANIFEST.json.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from _common import export, load, n_params, ort_mse, torch_setup
from train_conv import SEED, build


def patches(torch, F):
    """(N, C, H, W) -> (N, 9C, H, W): the 3x3 neighbourhood (zero padded) of every pixel,
    as slices of the padded map (exports to ONNX as Pad + Slice + Concat)."""
    H, W = F.shape[-2:]
    P = torch.nn.functional.pad(F, (1, 1, 1, 1))
    return torch.cat([P[:, :, i : i + H, j : j + W] for i in range(3) for j in range(3)], 1)


def lc_readout(torch, F, weight, bias):
    """The locally connected read-out as one batched MatMul over the pixels (exported as
    Transpose + Pad + Slice + Concat + Reshape + MatMul + Reshape + Transpose):
    out[n, c, p] = sum_k patches[n, k, p] * weight[c, k, p] + bias[c, p].

    The transpose to pixel-major ``(H, W, N, C)`` comes BEFORE the 3x3 neighbourhoods are
    gathered, so the patches arrive as ``(H*W, N, 9C)`` with no transpose of the 9x larger
    patch tensor, and the weights are stored pre-arranged as ``(H*W, 9C, 3)``. The same
    numbers as ``(patches(F)[:, None] * weight[None]).sum(2) + bias`` (an earlier export's
    Mul + ReduceSum over a broadcast ``(N, 3, 9C, H, W)`` tensor) up to the summation order.
    """
    c, k, H, W = (int(v) for v in weight.shape)  # static: no shape ops on the data path
    Ft = F.permute(2, 3, 0, 1)  # (H, W, N, C): the transpose before the gather
    Ft = torch.nn.functional.pad(Ft, (0, 0, 0, 0, 1, 1, 1, 1))  # (H+2, W+2, N, C)
    P = torch.cat([Ft[i : i + H, j : j + W] for i in range(3) for j in range(3)], 3)
    out = torch.matmul(P.reshape(H * W, -1, k), pixel_major(weight))  # (HW, N, 3)
    return out.reshape(H, W, -1, c).permute(2, 3, 0, 1) + bias


def pixel_major(weight):
    """``(3, 9C, H, W)`` locally connected weights as ``(H*W, 9C, 3)`` (the MatMul's right side)."""
    c, k, H, W = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(H * W, k, c)


def make_lc_model(torch, base, weight, bias):
    """``base`` with its output conv replaced by a locally connected 3x3 layer:
    out[n, c, p] = act(sum_k patches[n, k, p] * weight[c, k, p] + bias[c, p])
    (:func:`lc_readout`: one batched MatMul)."""
    nn = torch.nn

    class LC(nn.Module):
        def __init__(self):
            super().__init__()
            self.base = base
            self.weight = nn.Parameter(weight.clone())  # (3, 9C, H, W)
            self.bias = nn.Parameter(bias.clone())  # (3, H, W)

        def features(self, x):
            b = self.base
            h = b.dec3(b.enc(x))
            return b.dec1(b.up(b.dec2(b.up(h))))

        def forward(self, x):
            return self.base.out_act(lc_readout(torch, self.features(x), self.weight, self.bias))

    return LC()


def conv_as_lc(torch, conv, H, W):
    """The shared conv read-out as locally connected weights (same function)."""
    w = conv.weight.detach()  # (3, C, 3, 3) -> (3, 9C) in patches()' order (i, j, channel)
    wk = torch.cat([w[:, :, i, j] for i in range(3) for j in range(3)], 1)
    return (wk[:, :, None, None].expand(-1, -1, H, W).clone(),
            conv.bias.detach()[:, None, None].expand(-1, H, W).clone())  # fmt: skip


def refit(torch, lc, X, act):
    """Float64 minimum-norm least squares of the read-out at every (channel, pixel)."""
    with torch.no_grad():
        P = patches(torch, lc.features(torch.from_numpy(X))).double()  # (N, K, H, W)
    N, K, H, Wd = P.shape
    A = torch.cat([P, torch.ones(N, 1, H, Wd, dtype=P.dtype)], 1)  # (N, K+1, H, W)
    A = A.permute(2, 3, 0, 1).reshape(H * Wd, N, K + 1)  # per pixel: N x (K+1)
    T = torch.from_numpy(X.astype(np.float64))  # targets: pre-activations
    if act in ("lrelu", "prelu"):
        T = torch.where(T >= 0, T, T / 0.1)
    T = T.permute(2, 3, 0, 1).reshape(H * Wd, N, 3)
    # min-norm solution w = A^T (A A^T)^{-1} t, per pixel (N x N Gram systems)
    G = A @ A.transpose(1, 2)
    sol = A.transpose(1, 2) @ torch.linalg.solve(G, T)  # (HW, K+1, 3)
    cond = float(torch.linalg.cond(G).max())
    w = sol[:, :K, :].permute(2, 1, 0).reshape(3, K, H, Wd)
    b = sol[:, K, :].permute(1, 0).reshape(3, H, Wd)
    return w, b, cond


def from_onnx(torch, path: Path):
    """The LC model of an exported file, rebuilt from its initializers (any read-out export):
    ``(model, data name, n_train)``. Widths, code size and activation are read off the graph."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    ops = {n.op_type for n in g.node}
    if "PRelu" in ops or "Softplus" in ops or "LeakyRelu" not in ops:
        raise SystemExit(f"{path}: --from-onnx rebuilds LeakyReLU conv autoencoders only")
    w1, w2, w3, code = (init[f"base.enc.{i}.weight"].shape[0] for i in (0, 2, 6, 8))
    base = build(torch, "convae", "lrelu", [w1, w2, w3], code)
    sd = {k[len("base.") :]: torch.from_numpy(v.copy()) for k, v in init.items()
          if k.startswith("base.")}  # fmt: skip
    base.load_state_dict(sd, strict=False)  # the shared read-out conv (base.out) is not in the file
    bias = init["bias"]  # (3, H, W)
    H, W = bias.shape[1:]
    pm = [v for v in init.values() if v.shape == (H * W, 9 * w1, 3)]
    if pm:  # already the MatMul form: pixel_major(weight), folded by the exporter
        weight = pm[0].reshape(H, W, 9 * w1, 3).transpose(3, 2, 0, 1)
    else:  # the Mul + ReduceSum form: (1, 3, 9C, H, W), folded by the exporter
        (weight,) = [v[0] for v in init.values() if v.shape == (1, 3, 9 * w1, H, W)]
    lc = make_lc_model(
        torch, base.eval(), torch.from_numpy(weight.copy()), torch.from_numpy(bias.copy())
    )
    return lc.eval()


def reexport(a) -> None:
    """``--from-onnx``: the same weights, read-out exported as a batched MatMul."""
    import shutil
    import tempfile

    from _common import HERE, MANIFEST, ort_run, rel, update_manifest

    torch = torch_setup(SEED)
    key = rel(a.from_onnx)
    files = json.loads(MANIFEST.read_text())["files"]
    rec = files[key]
    data = Path(rec["dataset"]).stem
    Xtr, Xte = load(data)
    Xtr = Xtr[: rec["n_train"]]
    X = np.concatenate([Xtr, Xte])
    entries = {}
    for k in [key] + [c for c in rec.get("checkpoints", []) if files[c].get("interpolated")]:
        path = HERE / k
        with tempfile.TemporaryDirectory() as tmp:
            old = Path(tmp) / "old.onnx"
            shutil.copyfile(path, old)
            lc = from_onnx(torch, old)
            new = Path(tmp) / "new.onnx"
            diff_torch = export(lc, torch.from_numpy(Xtr), new)
            diff_old = float(np.max(np.abs(ort_run(new, X) - ort_run(old, X))))
            if not diff_old <= 1e-5:
                raise SystemExit(f"{k}: the MatMul export differs from the file by {diff_old:.3g}")
            shutil.copyfile(new, path)
        r = dict(files[k])
        r.update(
            train_mse=ort_mse(path, Xtr),
            test_mse=ort_mse(path, Xte),
            ort_vs_torch_max_abs_diff=diff_torch,
            readout_export=(
                "batched MatMul over the pixels (models/refit_conv.py lc_readout), re-exported "
                "from the earlier Mul + ReduceSum export's own weights (models/refit_conv.py "
                f"--from-onnx); max |new - old| output difference {diff_old:.3g} on the "
                f"{X.shape[0]} training and held-out images"
            ),
        )
        entries[k] = r
        print(json.dumps(dict(file=k, max_abs_diff_vs_old=diff_old, ort_vs_torch=diff_torch,
                              train_mse=r["train_mse"], test_mse=r["test_mse"])), flush=True)  # fmt: skip
    if a.register:
        update_manifest(entries)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a train_conv.py run folder")
    ap.add_argument("--out", type=Path, help="output path stem (no .onnx)")
    ap.add_argument("--from-onnx", type=Path, help="re-export this LC model (and its "
                    "interpolated checkpoints) with the MatMul read-out")  # fmt: skip
    ap.add_argument("--thresholds", default="1e-5,1e-6,1e-7,1e-8")
    ap.add_argument("--name", default=None, help="manifest name (with --register)")
    ap.add_argument("--register", action="store_true", help="record the files in MANIFEST.json")
    a = ap.parse_args(argv)
    if a.from_onnx is not None:
        return reexport(a)
    if a.run is None or a.out is None:
        ap.error("--run and --out are required (or --from-onnx)")
    torch = torch_setup(SEED)
    args = json.loads((a.run / "args.json").read_text())
    if args["arch"] != "convae":
        raise SystemExit("refit_conv.py finishes convae runs only")
    widths = [int(w) for w in args["widths"].split(",")]
    base = build(torch, "convae", args["act"], widths, args["code"])
    state = torch.load(a.run / "state.pt", weights_only=True)
    base.load_state_dict({k: v.float() for k, v in state["model"].items()})
    base.eval()
    Xtr, Xte = load(args["data"])
    Xtr = Xtr[: args["n"]]
    H, W = Xtr.shape[-2:]
    w_conv, b_conv = conv_as_lc(torch, base.out, H, W)
    lc = make_lc_model(torch, base, w_conv, b_conv).eval()
    with torch.no_grad():
        same = float((lc(torch.from_numpy(Xtr)) - base(torch.from_numpy(Xtr))).abs().max())
    w_fit, b_fit, cond = refit(torch, lc, Xtr, args["act"])
    xt = torch.from_numpy(Xtr)

    def mse_at(s):
        with torch.no_grad():
            lc.weight.copy_((w_fit + s * (w_conv.double() - w_fit)).float())
            lc.bias.copy_((b_fit + s * (b_conv.double() - b_fit)).float())
            return float(((lc(xt).double() - xt.double()) ** 2).mean())

    m_conv = mse_at(1.0)
    rows = [dict(stage="trained (conv read-out)", torch_train_mse=m_conv, lc_equals_conv=same)]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for thr in sorted((float(t) for t in a.thresholds.split(",")), reverse=True):
        if thr >= m_conv:
            continue
        s = math.sqrt(thr / m_conv) * 0.9  # 0.9: safely below the threshold
        got = mse_at(s)
        path = a.out.parent / "checkpoints" / f"{a.out.name}_mse{thr:.0e}.onnx".replace("e-0", "e-")
        diff = export(lc, xt, path)
        rows.append(dict(stage=f"interpolated s={s:.4g}", threshold=thr, torch_train_mse=got,
                         path=str(path), ort_vs_torch=diff, s=s))  # fmt: skip
    got = mse_at(0.0)
    path = a.out.parent / f"{a.out.name}.onnx"
    diff = export(lc, xt, path)
    rows.append(dict(stage="refit", torch_train_mse=got, gram_cond_max=cond, path=str(path),
                     ort_vs_torch=diff))  # fmt: skip
    for r in rows:
        if "path" in r:
            r["ort_train_mse"] = ort_mse(Path(r["path"]), Xtr)
            r["ort_test_mse"] = ort_mse(Path(r["path"]), Xte)
        print(json.dumps(r), flush=True)
    if a.register:
        register(
            a, args, rows, a.run, n_params(lc) - n_params(base.out), n_params(base), m_conv, cond
        )


def register(a, args, rows, run: Path, n_par: int, n_base: int, m_conv: float, cond: float):
    from _common import rel, update_manifest

    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    final = [r for r in log if r.get("final")]
    act = {"lrelu": "LeakyReLU(0.1)", "prelu": "PReLU (per channel, init 0.1)",
           "softplus": "Softplus"}[args["act"]]  # fmt: skip
    w1, w2, w3 = (int(w) for w in args["widths"].split(","))
    code = args["code"] or w3
    common = dict(
        kind="autoencoder",
        architecture=(
            f"plain conv autoencoder, no skips: 3x3 convs, activation after every conv; "
            f"16x16: conv 3->{w1}; stride-2 conv {w1}->{w2} (8x8), conv {w2}->{w2}; stride-2 "
            f"conv {w2}->{w3} (4x4), conv {w3}->{code} (bottleneck {code}x4x4 = {16 * code} "
            f"values); conv {code}->{w3}; nearest upsample x2, conv {w3}->{w2}, conv {w2}->{w2}; "
            f"nearest upsample x2, conv {w2}->{w1}, conv {w1}->{w1}; read-out: locally connected "
            f"3x3 layer ({w1}->3 channels, own weights at each of the 16x16 pixels) + activation"
        ),
        activation=act,
        dataset=f"data/{args['data']}.npz",
        split="train",
        n_train=int(args["n"]),
        seed=SEED,
        input_shape=[None, 3, 16, 16],
        output_shape=[None, 3, 16, 16],
        init="Kaiming normal (leaky_relu, a=0.1), zero biases",
        optimizer=f"Adam full batch (N={args['n']}), torch 2.13.0+cpu, 1 thread; read-out "
        "finished in closed form (models/refit_conv.py)",
        schedule=f"Adam cosine lr {args['lr']} -> 1e-6 over {args['adam_frac']} of "
        f"{args['hours']} h wall clock (models/train_conv.py; L-BFGS then stalled at once)",
        exporter="torch.onnx.export legacy (dynamo=False)",
        opset=17,
        n_params=n_par,
        adam_final_train_mse_torch=m_conv,
        finish=(
            "after Adam, the conv read-out (shared weights) was replaced by a locally connected "
            "3x3 read-out and refit in closed form: float64 minimum-norm least squares per pixel "
            f"and channel on the penultimate features (max condition number of the {args['n']}x"
            f"{args['n']} Gram matrices {cond:.3g})"
        ),
        train_log=final[-1] if final else None,
    )
    name = a.name or a.out.name
    main_rel = rel(Path(rows[-1]["path"]))
    entries = {}
    cks = []
    for r in rows[1:-1]:
        k = rel(Path(r["path"]))
        cks.append(k)
        entries[k] = dict(common, name=f"{name}@{r['threshold']:.0e}", checkpoint_of=main_rel,
                          threshold=r["threshold"], interpolated=True,
                          how=f"interpolated read-out W = W_refit + {r['s']:.4g} (W_conv - "
                          "W_refit) (train MSE = s^2 x the conv read-out's)",
                          train_mse=r["ort_train_mse"], test_mse=r["ort_test_mse"],
                          ort_vs_torch_max_abs_diff=r["ort_vs_torch"])  # fmt: skip
    for thr in (1e-3, 1e-4, 1e-5):
        p = run / f"mse{thr:.0e}.onnx".replace("e-0", "e-")
        if p.is_file():
            dst = (
                a.out.parent
                / "checkpoints"
                / f"{a.out.name}_mse{thr:.0e}.onnx".replace("e-0", "e-")
            )
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(p.read_bytes())
            k = rel(dst)
            cks.insert(len([c for c in cks if "checkpoints/" in c]), k)
            Xtr, Xte = load(args["data"])
            entries[k] = dict(common, name=f"{name}@{thr:.0e}", checkpoint_of=main_rel,
                              threshold=thr, how="Adam state when the full-batch train MSE first "
                              "dropped below the threshold (conv read-out, before the refit)",
                              architecture=common["architecture"].split("; read-out")[0]
                              + "; read-out: 3x3 conv " f"{w1}->3 + activation",
                              train_mse=ort_mse(dst, Xtr[: args["n"]]), test_mse=ort_mse(dst, Xte),
                              n_params=n_base)  # fmt: skip
    r = rows[-1]
    entries[main_rel] = dict(common, name=name, train_mse=r["ort_train_mse"],
                             test_mse=r["ort_test_mse"], ort_vs_torch_max_abs_diff=r["ort_vs_torch"],
                             checkpoints=sorted(cks, key=lambda k: -float(k.split("mse")[-1][:-5])))  # fmt: skip
    update_manifest(entries)


if __name__ == "__main__":
    main()
