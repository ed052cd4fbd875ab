"""Part 3 of the benchmarks: blind recovery time and peak memory vs batch, image size, dtype.

For each shipped autoencoder (three image sizes: 1x8x8 digits, 1x25x25
faces, 3x32x32 colour patches) and each batch size (1, 10, 100, 1000; the
training images repeated to fill the batch), :func:`refinv.solvers.blind_recovery`
runs a fixed T outer x K inner iterations (``tol=0``) in float32 and in
float64 (the float64 batch is cast to the model's float32 at the
onnxruntime boundary), interleaved with the floor (the same number of bare
onnxruntime calls at the same batch).

Reported per (model, batch, dtype): seconds per run (median [min, max] of
the repeats), microseconds per image-outer-iteration, the overhead over the
floor, and the peak memory traced by :mod:`tracemalloc` during one extra
(untimed) run: NumPy arrays and Python objects, NOT onnxruntime's own arena.

T is chosen per batch so that small batches run long enough to time.

Usage::

    python bench/scaling.py [--repeats 5] [--full] [--markdown]

``--full`` adds batch 1000 for the U-Net (slow on one thread).
"""

from __future__ import annotations

import tracemalloc

import common  # before numpy: pins the BLAS threads (env vars read at load)
import numpy as np

from refinv.onnx import OnnxModel
from refinv.operators.masks import draw_masks, erase
from refinv.solvers.recovery import blind_recovery

CASES = {
    "digits8-mlp (1x8x8)": ("onnx/digits8_lrelu_6x320.onnx", "data/digits8.npz"),
    "faces25-mlp (1x25x25)": ("onnx/faces25_lrelu_6x256.onnx", "data/faces25.npz"),
    "colour32-unet (3x32x32)": ("onnx/colour32_unet_lrelu_c12.onnx", "data/colour32.npz"),
}
BATCHES = (1, 10, 100, 1000)
K = 10
# outer iterations per timed run: enough that even batch 1 runs ~10-100 ms, few enough that
# no sample overflows to Inf/NaN (digits8 image 0 does after 80 outer iterations), which would
# stop it and make refinv do less work than the floor (checked: all_samples_ran_T)
CALL_BUDGET = {"mlp": 50, "unet": 20}
SOLVER = dict(
    tol=0.0,
    rho=0.5,
    inner_iter=K,
    mask_init="ones",
    blowup=float("inf"),
    progress=False,
)


def batch_of(x: np.ndarray, b: int) -> np.ndarray:
    reps = -(-b // x.shape[0])
    return np.ascontiguousarray(np.concatenate([x] * reps)[:b])


def peak_bytes(fn) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def outer_iters(label: str, batch: int) -> int:
    return max(2, CALL_BUDGET["unet" if "unet" in label else "mlp"] // batch)


def run_case(label, model_rel, data_rel, batches, repeats) -> list[dict]:
    f = OnnxModel(common.MODELS / model_rel, intra_op_threads=1)
    x = np.load(common.MODELS / data_rel, allow_pickle=False)["train"].astype(np.float32)
    rows = []
    for b in batches:
        T = outer_iters(label, b)
        xb = batch_of(x, b)
        y32 = np.ascontiguousarray(
            erase(xb, draw_masks("random:0.5", f.sample_shape, b, seed=0)), dtype=np.float32
        )
        y64 = y32.astype(np.float64)
        sess, iname, oname = f.session, f.input_name, f.output_name

        def floor(y32=y32, sess=sess, iname=iname, oname=oname, T=T):
            for _ in range(T * K):
                sess.run([oname], {iname: y32})

        fns = {
            "float32": lambda y32=y32, T=T: blind_recovery(f, y32, max_iter=T, **SOLVER),
            "float64": lambda y64=y64, T=T: blind_recovery(f, y64, max_iter=T, **SOLVER),
            "floor": floor,
        }
        t = common.interleaved(fns, repeats=repeats)
        ran = {
            dt: bool(np.all(blind_recovery(f, yy, max_iter=T, **SOLVER).iterations == T))
            for dt, yy in (("float32", y32), ("float64", y64))
        }
        for dt in ("float32", "float64"):
            r = common.ratio(t[dt], t["floor"])
            rows.append(
                {
                    "case": label,
                    "model": model_rel,
                    "batch": b,
                    "dtype": dt,
                    "outer_iter_T": T,
                    "inner_iter_K": K,
                    "seconds": t[dt],
                    "floor_seconds": t["floor"],
                    "all_samples_ran_T": ran[dt],
                    "us_per_image_outer_iter": 1e6 * t[dt]["median"] / (b * T),
                    "overhead_percent": {k: 100 * (r[k] - 1) for k in ("median", "min", "max")},
                    "peak_traced_bytes": peak_bytes(fns[dt]),
                    "input_bytes": int((y32 if dt == "float32" else y64).nbytes),
                }
            )
    return rows


def markdown(doc: dict) -> str:
    lines = [
        "## Scaling: batch size, image size, float32 vs float64 (part 3)",
        "",
        f"Command: `python bench/scaling.py --repeats {doc['repeats']}"
        f"{' --full' if doc['full'] else ''} --markdown` ({doc['date']}). Blind recovery, "
        f"T outer x K = {K} inner iterations (`tol=0`; T = max(2, 50 // batch) for the MLPs, "
        "max(2, 20 // batch) for the U-Net; every sample ran all T: "
        f"{all(r['all_samples_ran_T'] for r in doc['rows'])}), training images repeated to fill "
        "the batch, one thread. Overhead = time / (the same bare onnxruntime calls at the same "
        "batch) - 1. Peak memory: `tracemalloc` peak of one run (NumPy arrays and Python "
        "objects; onnxruntime's own arena is not traced).",
        "",
        "| model | batch | T | dtype | seconds | us / image / outer iter | overhead over floor "
        "| peak traced MiB | input MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        ov = r["overhead_percent"]
        lines.append(
            f"| {r['case']} | {r['batch']} | {r['outer_iter_T']} | {r['dtype']} | {common.fmt(r['seconds'])} "
            f"| {r['us_per_image_outer_iter']:.1f} "
            f"| {ov['median']:.0f}% [{ov['min']:.0f}, {ov['max']:.0f}] "
            f"| {r['peak_traced_bytes'] / 2**20:.2f} | {r['input_bytes'] / 2**20:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--full", action="store_true", help="also batch 1000 for the U-Net")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case labels")
    args = common.parse(ap, argv)
    rows = []
    for label in args.cases.split(","):
        model_rel, data_rel = CASES[label]
        batches = BATCHES if ("unet" not in label or args.full) else BATCHES[:-1]
        rows += run_case(label, model_rel, data_rel, batches, args.repeats)
    doc = common.record("scaling", args, full=args.full, rows=rows)
    common.publish(doc, "scaling", markdown, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
