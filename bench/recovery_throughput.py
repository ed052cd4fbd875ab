"""Parts 1-2 of the benchmarks: blind-recovery throughput and the onnxruntime floor.

For each shipped autoencoder (whole training set, 50% random pixels erased,
seed 0) three things are timed side by side in this process, interleaved:

* ``refinv``: :func:`refinv.solvers.blind_recovery` on an
  :class:`refinv.onnx.OnnxModel` (NumPy + onnxruntime CPU) with a fixed
  iteration count (``tol=0``: no early stop), ``mask_init="ones"``,
  ``rho=0.5``, ``inner_iter=K``;
* ``torch``: the same algorithm written as a researcher would in PyTorch
  eager mode (``torch.inference_mode``), on the same weights read from the
  ONNX initializers (an MLP from :func:`refinv.onnx.read_chain`; the U-Net
  written functionally from its initializers);
* ``floor``: the same number of bare ``InferenceSession.run`` calls at the
  same batch (no solver at all).

Before timing, both implementations are run for 2 outer iterations and
their estimates and masks compared (float32 tolerance).

Reported: seconds per run (median [min, max] of the repeats), images per
second (``n_images * T / seconds``: image-outer-iterations per second, each
outer iteration being K forward passes), the paired ratios
``torch / refinv`` (> 1: refinv faster) and ``refinv / floor - 1`` (the
solver's overhead over the bare forward passes), and the share of refinv's
time spent inside onnxruntime (``OnnxModel.stats``).

Usage::

    python bench/recovery_throughput.py [--repeats 5] [--markdown]
"""

from __future__ import annotations

import common  # before numpy: pins the BLAS threads (env vars read at load)
import numpy as np
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from refinv.onnx import OnnxModel, read_chain
from refinv.operators.masks import draw_masks, erase
from refinv.solvers.recovery import blind_recovery

# (label, model, data, outer iterations T per timed run)
CASES = {
    "faces25-mlp": ("onnx/faces25_lrelu_6x256.onnx", "data/faces25.npz", 20),
    "digits8-mlp": ("onnx/digits8_lrelu_6x320.onnx", "data/digits8.npz", 20),
    "colour32-unet": ("onnx/colour32_unet_lrelu_c12.onnx", "data/colour32.npz", 2),
}
RHO = 0.5
INNER = 10
# tol=0 and blowup=inf: every sample runs all T outer iterations (the same work as the
# reference and the floor), even one whose iterate grows large (NaN/Inf would still stop it)
SOLVER = dict(
    tol=0.0, rho=RHO, inner_iter=INNER, mask_init="ones", blowup=float("inf"), progress=False
)


# ----------------------------------------------------------------- torch reference
def torch_mlp(path) -> callable:
    """The fully connected autoencoder in torch from the ONNX layer chain."""
    chain = read_chain(str(path))
    layers = []
    for lay in chain.layers:
        if lay.kind != "dense":
            raise ValueError(f"torch_mlp: expected dense layers, got {lay.kind}")
        act = lay.activation
        if act.name not in ("leaky_relu", "relu", "identity"):
            raise ValueError(f"torch_mlp: unsupported activation {act.name}")
        W = torch.from_numpy(np.ascontiguousarray(lay.weight, dtype=np.float32))
        b = None if lay.bias is None else torch.from_numpy(np.asarray(lay.bias, np.float32))
        layers.append((W, b, act.name, float(act.slope or 0.0)))
    out_shape = tuple(chain.out_shape)

    def f(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h = x.reshape(n, -1)
        for W, b, name, slope in layers:
            h = F.linear(h, W, b)
            if name == "leaky_relu":
                h = F.leaky_relu(h, slope)
            elif name == "relu":
                h = F.relu(h)
        return h.reshape(n, *out_shape)

    return f


def torch_unet(path) -> callable:
    """The U-Net of models/train_unet.py (LeakyReLU 0.1), functional, from the initializers."""
    import onnx

    proto = onnx.load(str(path))
    w = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in proto.graph.initializer}

    def block(x, name):
        x = F.leaky_relu(F.conv2d(x, w[f"{name}.0.weight"], w[f"{name}.0.bias"], padding=1), 0.1)
        return F.leaky_relu(F.conv2d(x, w[f"{name}.2.weight"], w[f"{name}.2.bias"], padding=1), 0.1)

    def f(x: torch.Tensor) -> torch.Tensor:
        h1 = block(x, "e1")
        h2 = block(F.avg_pool2d(h1, 2), "e2")
        h3 = block(F.avg_pool2d(h2, 2), "b")
        u2 = block(torch.cat([F.interpolate(h3, scale_factor=2, mode="nearest"), h2], 1), "d2")
        u1 = block(torch.cat([F.interpolate(u2, scale_factor=2, mode="nearest"), h1], 1), "d1")
        return F.leaky_relu(F.conv2d(u1, w["out.weight"], w["out.bias"], padding=1), 0.1)

    return f


@torch.inference_mode()
def torch_blind(f, y: torch.Tensor, T: int, K: int, rho: float):
    """Blind recovery (PnP-ADMM + mask step, eqs. 12-20), fixed T outer x K inner iterations."""
    h = torch.ones_like(y[:, :1]) if y.ndim == 4 else torch.ones_like(y)
    z, u = y.clone(), torch.zeros_like(y)
    x = y
    for _ in range(T):
        for _ in range(K):
            v = (h * y + rho * (z - u)) / (h + rho)  # v-step: eq. (12) in closed form (17)
            vu = v + u
            z = f(vu)  # eq. (13) replaced by (16)
            u = vu - z  # eq. (14)
        x = z
        lhs, rhs = (y - x) ** 2, y**2
        if y.ndim == 4:
            lhs, rhs = lhs.sum(1, keepdim=True), rhs.sum(1, keepdim=True)
        h = (lhs <= rhs).to(y.dtype)  # eq. (20)
    return x, h


# ----------------------------------------------------------------- one case
def run_case(label: str, model_rel: str, data_rel: str, T: int, repeats: int) -> dict:
    path = common.MODELS / model_rel
    x = np.load(common.MODELS / data_rel, allow_pickle=False)["train"].astype(np.float32)
    f = OnnxModel(path, intra_op_threads=1)
    mask = draw_masks("random:0.5", f.sample_shape, x.shape[0], seed=0)
    y = np.ascontiguousarray(erase(x, mask), dtype=np.float32)
    n = y.shape[0]
    ft = torch_unet(path) if "unet" in model_rel else torch_mlp(path)
    yt = torch.from_numpy(y)

    # --- same results first (2 outer iterations)
    r = blind_recovery(f, y, max_iter=2, **SOLVER)
    xt, ht = torch_blind(ft, yt, 2, INNER, RHO)
    dx = float(np.max(np.abs(r.x - xt.numpy())))
    scale = float(np.max(np.abs(r.x)))
    dh = float(np.mean(r.state.h != ht.numpy()))
    one_pass = float(np.max(np.abs(f(y) - ft(yt).numpy())))
    ok = dx <= 1e-4 * max(scale, 1.0) and dh <= 1e-3
    if not ok:
        raise SystemExit(
            f"{label}: refinv and the torch reference disagree (max|dx| {dx:.3g}, "
            f"mask mismatch {dh:.3g}); not timing"
        )

    sess, iname, oname = f.session, f.input_name, f.output_name
    calls = T * INNER
    ort_share, full = [], []

    def run_refinv():
        f.stats.reset()
        res = blind_recovery(f, y, max_iter=T, **SOLVER)
        ort_share.append(f.stats.seconds / res.seconds)
        full.append(bool(np.all(res.iterations == T)))

    def run_torch():
        torch_blind(ft, yt, T, INNER, RHO)

    def run_floor():
        for _ in range(calls):
            sess.run([oname], {iname: y})

    def run_torch_floor():
        with torch.inference_mode():
            for _ in range(calls):
                ft(yt)

    t = common.interleaved(
        {
            "refinv": run_refinv,
            "torch": run_torch,
            "floor": run_floor,
            "torch_floor": run_torch_floor,
        },
        repeats=repeats,
    )
    ratio_torch = common.ratio(t["torch"], t["refinv"])
    ratio_floor = common.ratio(t["refinv"], t["floor"])
    overhead = {k: (v - 1.0) * 100 for k, v in ratio_floor.items() if k in ("median", "min", "max")}
    torch_over = common.ratio(t["torch"], t["torch_floor"])
    return {
        "case": label,
        "model": model_rel,
        "data": f"{data_rel}:train",
        "n_images": n,
        "sample_shape": list(f.sample_shape),
        "outer_iter_T": T,
        "inner_iter_K": INNER,
        "forward_passes": calls,
        "rho": RHO,
        "mask": "random:0.5 seed 0",
        "check": {
            "outer_iters": 2,
            "max_abs_diff_x": dx,
            "max_abs_x": scale,
            "mask_mismatch_fraction": dh,
            "max_abs_diff_one_forward": one_pass,
        },
        "seconds": t,
        "images_per_second": {
            k: n * T / t[k]["median"] for k in ("refinv", "torch", "floor", "torch_floor")
        },
        "ratio_torch_over_refinv": ratio_torch,
        "ratio_refinv_over_floor": ratio_floor,
        "overhead_percent": overhead,
        "ratio_torch_over_torch_forward_only": torch_over,
        "onnxruntime_share_in_refinv": common.summary(ort_share[-repeats:]),
        "all_samples_ran_T": all(full),
        "forward_ms_per_call": {
            "onnxruntime": 1e3 * t["floor"]["median"] / calls,
            "torch": 1e3 * t["torch_floor"]["median"] / calls,
        },
    }


def markdown(doc: dict) -> str:
    lines = [
        "## Blind recovery throughput and the onnxruntime floor (parts 1-2)",
        "",
        f"Command: `python bench/recovery_throughput.py --repeats {doc['repeats']} --markdown` "
        f"({doc['date']}). Whole training set, `random:0.5` masks (seed 0), "
        f"`rho={RHO}`, `mask_init='ones'`, `tol=0` (fixed T outer x K={INNER} inner "
        "iterations), float32, one thread everywhere. Images/s = images x T / seconds "
        "(image-outer-iterations per second; a full default solve is T = 100).",
        "",
        "| case | n | T | refinv s | torch eager s | ORT floor s | refinv img/s | torch img/s "
        "| torch/refinv | refinv overhead over floor | time in ORT |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in doc["cases"]:
        s = c["seconds"]
        ov = c["overhead_percent"]
        sh = c["onnxruntime_share_in_refinv"]
        lines.append(
            f"| {c['case']} | {c['n_images']} | {c['outer_iter_T']} | {common.fmt(s['refinv'])} "
            f"| {common.fmt(s['torch'])} | {common.fmt(s['floor'])} "
            f"| {c['images_per_second']['refinv']:.0f} | {c['images_per_second']['torch']:.0f} "
            f"| {common.fmt(c['ratio_torch_over_refinv'])} "
            f"| {ov['median']:.1f}% [{ov['min']:.1f}, {ov['max']:.1f}] "
            f"| {100 * sh['median']:.0f}% |"
        )
    lines += [
        "",
        "Checked before timing (2 outer iterations, same inputs): max |x_refinv - x_torch| and "
        "mask mismatch: "
        + "; ".join(
            f"{c['case']} {c['check']['max_abs_diff_x']:.2g} / "
            f"{c['check']['mask_mismatch_fraction']:.2g}"
            for c in doc["cases"]
        )
        + ". Forward pass alone, ms per call (ORT / torch): "
        + "; ".join(
            f"{c['case']} {c['forward_ms_per_call']['onnxruntime']:.2f} / "
            f"{c['forward_ms_per_call']['torch']:.2f}"
            for c in doc["cases"]
        )
        + ".",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    args = common.parse(ap, argv)
    common.pin_torch(1)
    cases = []
    for label in args.cases.split(","):
        model_rel, data_rel, T = CASES[label]
        cases.append(run_case(label, model_rel, data_rel, T, args.repeats))
    doc = common.record("recovery_throughput", args, cases=cases)
    common.publish(doc, "recovery", markdown, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
