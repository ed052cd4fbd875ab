"""Wang and Benning (2023), Sections 5.1.2 / 5.2 (Figs. 4-7): TV inversion of the shipped encoders vs their
decoders, on training and held-out digits, with Gaussian noise on the codes.

For each encoder (``fc``: Flatten-Gemm(784->100)-ReLU; ``conv``: two Conv(4x4, s2)+ReLU,
Gemm(784->300)+ReLU), split (train / test), noise std sigma: y = ReLU(code + N(0, sigma^2))
(clipped to dom(Psi)); the TV inversion (PDHG eq. 14 for fc, coordinate descent 15-17 for
conv) for each alpha of the grid, and the decoder's reconstruction decoder(y). Prints one
JSON object: mean PSNR (data range 1) per (encoder, split, noise, alpha), the best alpha
per noise level (chosen on the ground truth, as the paper does), the decoder's PSNR, and
seconds per iteration.

    OPENBLAS_NUM_THREADS=1 python docs/experiments/bregman_encoders.py            # small
    OPENBLAS_NUM_THREADS=1 python docs/experiments/bregman_encoders.py --n 100 \\
        --max-iter-fc 10000 --max-iter-conv 1500                                  # full
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from refinv.evaluation.metrics import psnr
from refinv.onnx import OnnxModel
from refinv.onnx.graph import read_chain
from refinv.solvers.bregman import invert_chain

ROOT = Path(__file__).resolve().parents[2] / "models"
ENCODERS = {
    "fc": ("digits28_bregman_fc_code100", 100),
    "conv": ("digits28_bregman_conv_code300", 300),
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default="fc,conv")
    ap.add_argument("--n", type=int, default=10, help="images per split")
    ap.add_argument("--noise", default="0,0.01,0.05,0.1,0.33", help="code noise stds")
    ap.add_argument("--alphas", default="1e-3,1e-2,5e-2")
    ap.add_argument("--max-iter-fc", type=int, default=2000)
    ap.add_argument("--max-iter-conv", type=int, default=200)
    ap.add_argument("--inner-iter", type=int, default=10)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figure", help="PNG: PSNR vs noise (inversion and decoder)")
    args = ap.parse_args(argv)
    noises = [float(s) for s in args.noise.split(",")]
    alphas = [float(s) for s in args.alphas.split(",")]
    data = np.load(ROOT / "data" / "digits28.npz")
    out: dict = {"setup": vars(args), "results": {}}
    for enc in args.encoders.split(","):
        stem, _ = ENCODERS[enc]
        chain = read_chain(ROOT / "onnx" / f"{stem}_encoder.onnx")
        encoder = OnnxModel(ROOT / "onnx" / f"{stem}_encoder.onnx")
        decoder = OnnxModel(ROOT / "onnx" / f"{stem}_decoder.onnx")
        max_iter = args.max_iter_fc if len(chain) == 1 else args.max_iter_conv
        res_enc: dict = {"layers": len(chain), "max_iter": max_iter, "splits": {}}
        for split in ("train", "test"):
            x_true = data[split][: args.n].astype(np.float64)
            code = np.asarray(encoder(x_true), dtype=np.float64)
            rows = []
            for sigma in noises:
                rng = np.random.default_rng(
                    [args.seed, round(sigma * 1e6)]
                )  # same sigma, same draw
                y = np.maximum(code + sigma * rng.standard_normal(code.shape), 0.0)
                x_dec = np.asarray(decoder(y), dtype=np.float64).reshape(x_true.shape)
                row = {
                    "noise": sigma,
                    "delta2_mean": float(np.mean(np.sum((y - code) ** 2, axis=1))),
                    "psnr_decoder": float(np.mean(psnr(x_dec, x_true))),
                    "alphas": {},
                }
                for alpha in alphas:
                    t0 = time.perf_counter()
                    r = invert_chain(
                        y,
                        chain,
                        alpha=alpha,
                        max_iter=max_iter,
                        tol=args.tol,
                        inner_iter=args.inner_iter,
                    )
                    sec = time.perf_counter() - t0
                    its = int(r.iterations.sum())
                    row["alphas"][str(alpha)] = {
                        "psnr": float(np.mean(psnr(np.asarray(r.x), x_true))),
                        "iterations_mean": float(r.iterations.mean()),
                        "converged": int(r.converged.sum()),
                        "seconds": sec,
                        "seconds_per_iteration_per_sample": sec / max(its, 1),
                    }
                best = max(row["alphas"], key=lambda a: row["alphas"][a]["psnr"])
                row["best_alpha"] = float(best)
                row["psnr_inversion_best"] = row["alphas"][best]["psnr"]
                rows.append(row)
                print(
                    f"{enc} {split} sigma={sigma:g}: inversion {row['psnr_inversion_best']:.2f} dB "
                    f"(alpha {best}), decoder {row['psnr_decoder']:.2f} dB",
                    flush=True,
                    file=__import__("sys").stderr,
                )
            res_enc["splits"][split] = rows
        out["results"][enc] = res_enc
    if args.figure:
        _figure(out, args.figure)
    print(json.dumps(out, indent=1))
    return out


def _figure(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    encs = list(out["results"])
    fig, axes = plt.subplots(1, len(encs), figsize=(4.5 * len(encs), 3.4), squeeze=False)
    for ax, enc in zip(axes[0], encs, strict=True):
        for split, ls in (("train", "-"), ("test", "--")):
            rows = out["results"][enc]["splits"][split]
            s = [r["noise"] for r in rows]
            ax.plot(
                s,
                [r["psnr_inversion_best"] for r in rows],
                "o" + ls,
                c="C0",
                label=f"TV inversion ({split})",
            )
            ax.plot(
                s, [r["psnr_decoder"] for r in rows], "s" + ls, c="C1", label=f"decoder ({split})"
            )
        ax.set_xlabel("noise std on the code")
        ax.set_ylabel("mean PSNR (dB)")
        ax.set_title(f"{enc} encoder")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
