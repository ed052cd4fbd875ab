"""The conv autoencoder's read-out: element-wise Mul + ReduceSum vs one batched MatMul.

``models/onnx/colour16_convae_lrelu_c4.onnx`` ends in a locally connected 3x3 read-out
(own weights at every pixel). The file of commit ``--base`` (default 6b1aae2) exports it
as a Mul of the 3x3 patches with a broadcast ``(1, 3, 9C, H, W)`` weight tensor followed
by a ReduceSum; this checkout's file (``models/refit_conv.py``'s ``lc_readout``) as one
MatMul batched over the pixels. Both are run by onnxruntime (one intra-op thread) on the
50 training images tiled to each batch size, interleaved, CPU time per image; the ratio
is paired per repeat. Also checked: the two files' outputs on the 100 training and
held-out images (max absolute difference).

Usage::

    python bench/conv_readout.py [--base REV] [--repeats 7] [--markdown]
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (pins BLAS threads through the environment)
import numpy as np
from common import MODELS, ROOT, fmt, parse, parser, publish, record, summary

REL = "models/onnx/colour16_convae_lrelu_c4.onnx"
BATCHES = (1, 5, 10, 50, 100)


def session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def main(argv=None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--base", default="6b1aae2", help="the commit of the Mul + ReduceSum file")
    args = parse(ap, argv)
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old.onnx"
        old.write_bytes(
            subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{args.base}:{REL}"],
                check=True, capture_output=True,
            ).stdout
        )  # fmt: skip
        s = {"mul_reducesum": session(old), "matmul": session(ROOT / REL)}
        with np.load(MODELS / "data" / "colour16.npz", allow_pickle=False) as z:
            train, test = z["train"], z["test"]
        both = np.ascontiguousarray(np.concatenate([train, test]), dtype=np.float32)
        outs = [sess.run(None, {sess.get_inputs()[0].name: both})[0] for sess in s.values()]
        diff = float(np.max(np.abs(outs[0] - outs[1])))
        rows = []
        for b in BATCHES:
            x = np.ascontiguousarray(np.resize(train, (b, *train.shape[1:])), dtype=np.float32)
            n = max(20, 2000 // b)  # calls per timed run
            feeds = {k: {v.get_inputs()[0].name: x} for k, v in s.items()}
            for k, v in s.items():
                v.run(None, feeds[k])
            t = {k: [] for k in s}
            for _ in range(args.repeats):
                for k, v in s.items():
                    c = time.process_time()
                    for _ in range(n):
                        v.run(None, feeds[k])
                    t[k].append((time.process_time() - c) / (n * b) * 1e6)
            ratio = [a / m for a, m in zip(t["mul_reducesum"], t["matmul"], strict=True)]
            rows.append(
                {
                    "batch": b,
                    "mul_reducesum_us_per_image": summary(t["mul_reducesum"]),
                    "matmul_us_per_image": summary(t["matmul"]),
                    "old_over_new": summary(ratio),
                }
            )
    doc = record("conv_readout", args, base=args.base, max_abs_output_diff=diff, rows=rows)
    publish(doc, "conv_readout", render, args)


def render(doc: dict) -> str:
    lines = [
        "## The conv autoencoder's read-out: Mul + ReduceSum vs batched MatMul",
        "",
        f"Command: `python bench/conv_readout.py --repeats {doc['repeats']} --markdown` "
        f"({doc['date']}). `{REL}` of {doc['base']} (Mul + ReduceSum) vs this checkout's "
        "(one MatMul batched over the pixels, `models/refit_conv.py`), onnxruntime with one "
        "thread, CPU microseconds per image, median [min, max]; the ratio is paired per "
        f"repeat. Outputs of the two files on the 100 images: max |difference| "
        f"{doc['max_abs_output_diff']:.2g}.",
        "",
        "| batch | Mul + ReduceSum us/image | MatMul us/image | old / new |",
        "|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['batch']} | {fmt(r['mul_reducesum_us_per_image'])} | "
            f"{fmt(r['matmul_us_per_image'])} | {fmt(r['old_over_new'])} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
