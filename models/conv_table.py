"""One row per convolutional autoencoder: does it memorize? (JSON lines + a markdown table).

For each ONNX model (and the data set it was trained on): parameters, train and held-out
MSE (onnxruntime), the numerical rank of the Jacobian at the first ``--n-rank`` training
images (singular values > 1e-3 x the largest; central differences), the radius of the
linearized known-mask PnP-ADMM at every training image (rho 0.5, random:0.5 masks of seed
0, matrix-free; < 1 = locally attracting), and the accurate / approximate recovery rates
of blind, known-mask and AE-iterations recovery on the training and held-out images as
``refinv evaluate`` measures them (it is run through the CLI, default settings, random:0.5).

    OPENBLAS_NUM_THREADS=1 python models/conv_table.py models/onnx/colour16_convae_lrelu.onnx \\
        --data models/data/colour16.npz [--masks random:0.5] [--json OUT.jsonl]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from refinv import OnnxModel
from refinv.cli import main as refinv_main
from refinv.evaluation.stability import model_jacobian, pnp_admm_stability
from refinv.io import load_images
from refinv.operators.masks import draw_masks


def n_params(path: Path) -> int:
    import onnx

    m = onnx.load(str(path))
    return int(sum(int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type == 1))


def row(path: Path, data: Path, masks: str, n_rank: int, radius_images: int | None) -> dict:
    f = OnnxModel(path, intra_op_threads=1)
    train = load_images(data, "train", sample_shape=f.sample_shape)
    test = load_images(data, "test", sample_shape=f.sample_shape)

    def mse(x):
        return float(np.mean((np.asarray(f(x), np.float64) - x.astype(np.float64)) ** 2))

    J = model_jacobian(f, train[:n_rank])
    sv = [np.linalg.svd(Jb, compute_uv=False) for Jb in J]
    k = len(train) if radius_images is None else min(radius_images, len(train))
    h = draw_masks("random:0.5", f.sample_shape, k, seed=0)
    radii = pnp_admm_stability(f, train[:k], h, rho=0.5, method="arnoldi")
    out = dict(
        model=str(path),
        n_params=n_params(path),
        train_mse=mse(train),
        test_mse=mse(test),
        jacobian_rank=[int((s > 1e-3 * s[0]).sum()) for s in sv],
        n_values=int(J.shape[1]),
        admm_radius_median=round(float(np.median(radii)), 4),
        admm_radius_below_1=f"{int((radii < 1).sum())}/{k}",
    )
    with tempfile.TemporaryDirectory() as tmp:
        js = Path(tmp) / "report.json"
        argv = ["evaluate", str(path), "--train", f"{data}:train", "--test", f"{data}:test",
                "--mask", masks, "--threads", "1", "--json", str(js)]  # fmt: skip
        rc = refinv_main(argv)
        if rc != 0:
            raise SystemExit(f"refinv evaluate failed ({rc}) on {path}")
        doc = json.loads(js.read_text())
    out["rates"] = {
        f"{r['mask']}/{r['method']}/{r['split']}": [r["accurate_rate"], r["approximate_rate"]]
        for r in doc["runs"]
    }
    return out


def markdown(rows: list[dict], mask: str) -> str:
    head = ("| model | params | train MSE | held-out MSE | Jacobian rank | ADMM radius < 1 "
            "(median) | blind acc/approx train | held-out | known train | held-out | "
            "AE-it. train | held-out |")  # fmt: skip
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        cells = []
        for method in ("blind", "known", "ae-iterations"):
            for split in ("train", "test"):
                a, p = r["rates"][f"{mask}/{method}/{split}"]
                cells.append(f"{100 * a:.0f}% / {100 * p:.0f}%")
        lines.append(
            f"| {Path(r['model']).stem} | {r['n_params']:,} | {r['train_mse']:.2e} | "
            f"{r['test_mse']:.2e} | {'/'.join(map(str, r['jacobian_rank']))} of {r['n_values']} "
            f"| {r['admm_radius_below_1']} ({r['admm_radius_median']}) | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--masks", default="random:0.5")
    ap.add_argument("--n-rank", type=int, default=3)
    ap.add_argument("--radius-images", type=int, default=None, help="default: all")
    ap.add_argument("--json", type=Path, default=None, help="append the JSON lines here")
    a = ap.parse_args(argv)
    rows = []
    for p in a.models:
        r = row(p, a.data, a.masks, a.n_rank, a.radius_images)
        rows.append(r)
        print(json.dumps(r), flush=True)
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(json.dumps(r) + "\n")
    print(markdown(rows, a.masks.split(",")[0]))


if __name__ == "__main__":
    main()
