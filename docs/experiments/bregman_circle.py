"""Circle experiment of Wang and Benning (2023), Section 5.1.1: TV-PDHG vs Landweber (discrepancy principle).

64x64 circle x (1 inside, 0 outside), random perceptron W (512 x 4096) and b,
y = ReLU(W x + b) + N(0, sigma^2), clipped at 0; alpha = 1.5e-2.
Prints one JSON object: ||x||, TV(x), PSNR for the ground truth, the TV-PDHG
solution and the Landweber solution stopped by Morozov's principle.

    python docs/experiments/bregman_circle.py                 # paper sizes, 2000 PDHG its
    python docs/experiments/bregman_circle.py --max-iter 10000  # the paper's cap

The paper does not say how W and b were drawn; ours: W_ij ~ N(0, 1/n) and
b_i ~ N(0, 0.1^2) (``--w-std``, ``--b-std``), seeded.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from refinv.operators.activations import ReLU
from refinv.operators.linear import Dense
from refinv.regularizers.tv import tv
from refinv.solvers.bregman import BregmanLayer, perceptron_landweber, perceptron_pdhg


def circle(size: int = 64, radius: float = 16.0) -> np.ndarray:
    c = (size - 1) / 2.0
    i, j = np.mgrid[:size, :size]
    return ((i - c) ** 2 + (j - c) ** 2 <= radius**2).astype(np.float64)


def psnr(x: np.ndarray, ref: np.ndarray, data_range: float = 1.0) -> float:
    mse = float(np.mean((x - ref) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--radius", type=float, default=16.0)
    ap.add_argument("--m", type=int, default=512, help="perceptron width")
    ap.add_argument("--alpha", type=float, default=1.5e-2)
    ap.add_argument("--noise", type=float, default=0.005)
    ap.add_argument("--w-std", type=float, default=None, help="default 1/sqrt(n)")
    ap.add_argument("--b-std", type=float, default=0.1)
    ap.add_argument("--max-iter", type=int, default=2000)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--tau-d", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--float32", action="store_true")
    args = ap.parse_args(argv)

    dt = np.float32 if args.float32 else np.float64
    rng = np.random.default_rng(args.seed)
    x_true = circle(args.size, args.radius)[None, None]  # (1, 1, H, W)
    n = x_true.size
    w_std = args.w_std if args.w_std is not None else 1.0 / math.sqrt(n)
    W = rng.standard_normal((args.m, n)) * w_std
    b = rng.standard_normal(args.m) * args.b_std
    layer = BregmanLayer(Dense(W.astype(dt)), b.astype(dt)[None], ReLU())
    y_clean = np.maximum(x_true.reshape(1, -1) @ W.T + b, 0.0)
    noise = rng.standard_normal(y_clean.shape) * args.noise
    y = np.maximum(y_clean + noise, 0.0).astype(dt)  # clipped at 0: y in dom(Psi)
    delta = float(np.linalg.norm(y - y_clean))
    x_shape = x_true.shape[1:]

    t0 = time.perf_counter()
    res_tv = perceptron_pdhg(
        y, layer, alpha=args.alpha, x_shape=x_shape, max_iter=args.max_iter, tol=args.tol
    )
    t_tv = time.perf_counter() - t0
    res_lw = perceptron_landweber(
        y, layer, delta=delta, tau_d=args.tau_d, x_shape=x_shape, max_iter=100_000
    )

    def row(x):
        x = np.asarray(x, dtype=np.float64)
        return {
            "norm": float(np.linalg.norm(x)),
            "tv": float(tv(x)[0]),
            "psnr": psnr(x, x_true),
        }

    out = {
        "setup": vars(args) | {"w_std": w_std, "delta": delta},
        "ground_truth": row(x_true),
        "tv_pdhg": row(res_tv.x)
        | {
            "iterations": int(res_tv.iterations[0]),
            "stop": res_tv.stop_reason[0],
            "seconds": t_tv,
            "seconds_per_iteration": t_tv / int(res_tv.iterations[0]),
            "discrepancy": float(
                np.linalg.norm(np.maximum(np.asarray(res_tv.x).reshape(1, -1) @ W.T + b, 0) - y)
            ),
        },
        "landweber": row(res_lw.x)
        | {
            "iterations": int(res_lw.iterations[0]),
            "stop": res_lw.stop_reason[0],
            "seconds": res_lw.seconds,
        },
        "paper": {
            "ground_truth": {"norm": 28.07, "tv": 128.0},
            "tv_pdhg": {"norm": 25.69, "tv": 114.93},
            "landweber": {"norm": 6.58, "tv": 707.02},
        },
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
