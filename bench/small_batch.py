"""Per-call overhead at small batches: refinv's solvers vs the bare onnxruntime calls.

Blind recovery (``tol=0``: a fixed T outer x K = 10 inner iterations, so
every sample runs them all) and the AE-iterations baseline on the shipped
faces25 MLP at batch 1 and 10 (training images), against the floor: the same
number of bare ``InferenceSession.run`` calls on a batch of the same shape.
Timed interleaved in this process, CPU time (``process_time``; one thread
everywhere), paired per repeat. Overhead = refinv / floor - 1.

Usage::

    python bench/small_batch.py [--repeats 7] [--markdown]
"""

from __future__ import annotations

import time

import common  # noqa: F401  (pins BLAS threads through the environment)
from common import MODELS, fmt, parse, parser, publish, record, summary

from refinv.io import load_images
from refinv.onnx import OnnxModel
from refinv.operators.masks import draw_masks, erase
from refinv.solvers.recovery import ae_iterations, blind_recovery

T, K = 100, 10


def cpu_timed(fns: dict, repeats: int) -> dict[str, list[float]]:
    for fn in fns.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c = time.process_time()
            fn()
            out[k].append(time.process_time() - c)
    return out


def main(argv=None) -> None:
    ap = parser(__doc__)
    args = parse(ap, argv)
    f = OnnxModel(MODELS / "onnx" / "faces25_lrelu_6x256.onnx", intra_op_threads=1)
    x_all = load_images(MODELS / "data" / "faces25.npz", "train", sample_shape=f.sample_shape)
    rows = []
    for batch in (1, 10):
        x = x_all[:batch]
        y = erase(x, draw_masks("random:0.5", f.sample_shape, batch, seed=0))
        sess, name_in, name_out = f.session, f.input_name, f.output_name
        kw = dict(tol=0.0, blowup=float("inf"), progress=False)

        def floor(n=T * K, y=y, sess=sess, name_in=name_in, name_out=name_out):
            z = y
            for _ in range(n):
                (z,) = sess.run([name_out], {name_in: z})

        fns = {
            "floor": floor,
            "blind": lambda y=y, kw=kw: blind_recovery(f, y, max_iter=T, inner_iter=K, **kw),
            "ae-iterations": lambda y=y, kw=kw: ae_iterations(f, y, max_iter=T * K, **kw),
        }
        t = cpu_timed(fns, args.repeats)
        for m in ("blind", "ae-iterations"):
            over = [a / b - 1 for a, b in zip(t[m], t["floor"], strict=True)]
            rows.append(
                {
                    "batch": batch,
                    "method": m,
                    "calls": T * K,
                    "cpu_s": summary(t[m]),
                    "floor_cpu_s": summary(t["floor"]),
                    "overhead": summary(over),
                }
            )
    doc = record("small_batch", args, rows=rows)
    publish(doc, "small_batch", render, args)


def render(doc: dict) -> str:
    lines = [
        "## Small batches: overhead over the bare onnxruntime calls",
        "",
        f"Command: `python bench/small_batch.py --repeats {doc['repeats']} --markdown` "
        f"({doc['date']}). faces25 MLP, {T * K} calls of the network per run (blind: T = {T} "
        f"outer x K = {K}; ae-iterations: {T * K} steps), `tol=0`, one thread; CPU seconds, "
        "median [min, max]; overhead paired per repeat.",
        "",
        "| batch | method | refinv CPU s | floor CPU s | overhead |",
        "|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        o = r["overhead"]
        lines.append(
            f"| {r['batch']} | {r['method']} | {fmt(r['cpu_s'])} | {fmt(r['floor_cpu_s'])} | "
            f"{100 * o['median']:.1f}% [{100 * o['min']:.1f}, {100 * o['max']:.1f}] |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
