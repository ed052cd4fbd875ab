"""Tied 2-layer autoencoder satisfying Theorem 1 of Abitbul and Dar (2023) (a Moreau proximity operator).

    f(x) = W^T s(W x + b),   s = LeakyReLU(0.1)  (s' in {0.1, 1}, inside [0, 1]),
    W in R^{k x 64}, all singular values of W in [0, 0.9999].

Trained on the 100 flattened 8x8 digits (input and output shape (N, 64)) by
full-batch projected Adam: after every step the singular values of W are
clipped to [0, 0.9999] (the margin keeps them <= 1 after float32 rounding).
The ONNX graph is exactly  x -> Gemm(x, W, b, transB=1) -> LeakyRelu -> MatMul(., W):
the MatMul reuses the same initializer W (k x 64), so no transposed copy.
W and b are also saved in ``weights/tied_digits8_lrelu_k128.npz`` (keys W, b, slope).

Usage: python models/train_tied.py [--max-seconds 120]
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
    ort_mse,
    rel,
    status,
    torch_setup,
    update_manifest,
)

SEED = 42
K = 128
SLOPE = 0.1
SMAX = 0.9999
STEPS = 6000


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-seconds", type=float, default=180)
    a = ap.parse_args(argv)
    torch = torch_setup(SEED)
    nn = torch.nn
    F = torch.nn.functional
    Xtr, Xte = load("digits8")
    Xtr, Xte = Xtr.reshape(100, -1), Xte.reshape(100, -1)
    n = Xtr.shape[1]

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.W = nn.Parameter(torch.empty(K, n))
            self.b = nn.Parameter(torch.zeros(K))
            nn.init.orthogonal_(self.W)
            with torch.no_grad():
                self.W.mul_(0.9)
                self.b.fill_(0.1)

        def forward(self, x):
            return F.leaky_relu(F.linear(x, self.W, self.b), SLOPE) @ self.W

    def project(m):
        with torch.no_grad():
            U, S, Vh = torch.linalg.svd(m.W.double(), full_matrices=False)
            m.W.copy_(((U * S.clamp(0.0, SMAX)) @ Vh).float())

    model = Tied()
    project(model)
    x = torch.from_numpy(Xtr)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    t0 = time.time()
    for step in range(STEPS):
        lr = 1e-5 + 0.5 * (1e-2 - 1e-5) * (1 + math.cos(math.pi * step / STEPS))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((model(x) - x) ** 2)
        loss.backward()
        opt.step()
        project(model)
        if time.time() - t0 > a.max_seconds:
            break
    secs = time.time() - t0
    steps_done = step + 1

    path = ONNX_DIR / f"tied_digits8_lrelu_k{K}.onnx"
    diff = export(model, x, path)
    import onnx

    g = onnx.load(str(path)).graph
    ops = [nd.op_type for nd in g.node]
    assert ops == ["Gemm", "LeakyRelu", "MatMul"], ops
    W = model.W.detach().numpy().astype(np.float32)
    b = model.b.detach().numpy().astype(np.float32)
    sv = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    wpath = HERE / "weights" / f"tied_digits8_lrelu_k{K}.npz"
    wpath.parent.mkdir(exist_ok=True)
    np.savez(wpath, W=W, b=b, slope=np.asarray(SLOPE, dtype=np.float32))
    mse = ort_mse(path, Xtr)
    frac, radii = attractor_fraction(model, Xtr)
    common = dict(
        seed=SEED, dataset="data/digits8.npz (flattened to (N, 64))", split="train", n_train=100
    )
    rec = dict(
        common,
        kind="autoencoder",
        name="tied",
        architecture=f"tied 2-layer autoencoder f(x) = W^T s(W x + b), W {K}x{n}, no output bias; "
        "ONNX nodes exactly Gemm(x, W, b, transB=1) -> LeakyRelu(alpha=0.1) -> MatMul(h, W) "
        "(one shared initializer W)",
        activation=f"LeakyReLU(negative_slope={SLOPE}); s' in [0, 1]",
        theorem1=dict(
            singular_values_min=float(sv.min()),
            singular_values_max=float(sv.max()),
            activation_derivative_range=[SLOPE, 1.0],
            satisfied=bool(sv.max() <= 1),
        ),
        input_shape=[None, n],
        output_shape=[None, n],
        init="orthogonal W scaled by 0.9, b = 0.1",
        optimizer="projected Adam, full batch (N=100): after every step the singular values "
        f"of W are clipped to [0, {SMAX}] (float64 SVD)",
        schedule=f"cosine lr 1e-2 -> 1e-5 over {STEPS} steps (cap {a.max_seconds}s); "
        f"{steps_done} steps run",
        exporter="torch.onnx.export legacy (dynamo=False)",
        opset=17,
        n_params=int(W.size + b.size),
        train_seconds=round(secs, 1),
        train_mse=mse,
        test_mse=ort_mse(path, Xte),
        ort_vs_torch_max_abs_diff=diff,
        attractor_fraction=frac,
        jacobian_spectral_radius=radii,
        weights_file=rel(wpath),
        note="Not a perfect-fit model: Theorem 1 makes f firmly nonexpansive (Jacobian "
        "symmetric PSD, eigenvalues in [0, 1]), so the spectral radius is <= 1 everywhere.",
    )
    wrec = dict(
        common,
        kind="weights",
        name="tied-weights",
        of_model=rel(path),
        keys={"W": [K, n], "b": [K], "slope": []},
        description="W (k x 64) and b (k,) of the tied autoencoder, float32; "
        "f(x) = W^T leaky_relu(W x + b, slope); used to check Theorem 1",
        singular_values_max=float(sv.max()),
    )
    update_manifest({rel(path): rec, rel(wpath): wrec})
    status(
        f"ready: models/{rel(path)} + models/{rel(wpath)} (tied AE, Theorem 1, "
        f"train MSE {mse:.2e}, sigma_max {sv.max():.4f})"
    )
    print(f"tied: mse {mse:.3e} sv [{sv.min():.3f}, {sv.max():.5f}] attr {frac:.2f} {secs:.0f}s")


if __name__ == "__main__":
    main()
