"""onnxruntime intra-op threads: wall and CPU time of real recoveries per session setting.

The default of ``refinv recover/evaluate/demo`` (``--threads`` not given) is
chosen here. Contenders, each an onnxruntime CPU session on the same model:

* ``1``: ``intra_op_num_threads = 1`` (what ``refinv sweep`` always used);
* ``2-spin``: 2 intra-op threads, spinning allowed (onnxruntime's own default
  on a 2-core machine: ``intra_op_num_threads = 0`` = one per physical core);
* ``2-nospin``: 2 threads with ``session.intra_op.allow_spinning = 0``;
* ``ort-default``: ``intra_op_num_threads = 0`` (whatever onnxruntime picks).

Workloads (the real solvers, per-sample stopping on): blind recovery with
the library defaults (``tol = 1e-6``, ``max_iter = 100``) on the 100 faces25
training images (MLP), and 2 outer iterations on 20 colour32 images (U-Net).
Timed interleaved in this process: wall (``perf_counter``) and CPU
(``process_time``: every thread of the process). The results are checked
to be the same for every contender (max |difference| recorded).

Usage::

    python bench/threads.py [--repeats 5] [--label load|idle] [--markdown]
"""

from __future__ import annotations

import os
import time

import numpy as np
import onnxruntime as ort
from common import MODELS, fmt, parse, parser, publish, record, summary

from refinv.io import load_images
from refinv.onnx import OnnxModel
from refinv.operators.masks import draw_masks, erase
from refinv.solvers.recovery import blind_recovery

CASES = {
    "faces25-mlp": ("onnx/faces25_lrelu_6x256.onnx", "data/faces25.npz", 100, {}),
    "colour32-unet": (
        "onnx/colour32_unet_lrelu_c12.onnx", "data/colour32.npz", 20, {"max_iter": 2, "tol": 0.0}
    ),
}  # fmt: skip

SETTINGS = {
    "1": (1, True),
    "2-spin": (2, True),
    "2-nospin": (2, False),
    "ort-default": (0, True),
}


def session(model: OnnxModel, threads: int, spin: bool) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model._bytes, sess_options=so, providers=["CPUExecutionProvider"])


def main(argv=None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--label", default="run", help="load / idle (recorded, names the section)")
    ap.add_argument("--load", default="", help="what else ran on the machine (recorded)")
    args = parse(ap, argv)
    load_start = os.getloadavg()
    cases = {}
    for case, (mpath, dpath, n, opts) in CASES.items():
        models = {}
        for name, (threads, spin) in SETTINGS.items():
            f = OnnxModel(MODELS / mpath)
            f.session = session(f, threads, spin)
            models[name] = f
        f0 = models["1"]
        x = load_images(MODELS / dpath, "train", sample_shape=f0.sample_shape)[:n]
        y = erase(x, draw_masks("random:0.5", f0.sample_shape, len(x), seed=0))
        out: dict[str, np.ndarray] = {}
        wall: dict[str, list[float]] = {k: [] for k in models}
        cpu: dict[str, list[float]] = {k: [] for k in models}

        def run(name, record_it=True, models=models, y=y, opts=opts, out=out, wall=wall, cpu=cpu):
            t0, c0 = time.perf_counter(), time.process_time()
            res = blind_recovery(models[name], y, progress=False, **opts)
            t1, c1 = time.perf_counter(), time.process_time()
            out[name] = np.asarray(res.x)
            if record_it:
                wall[name].append(t1 - t0)
                cpu[name].append(c1 - c0)

        for name in models:  # warm-up
            run(name, record_it=False)
        for _ in range(args.repeats):
            for name in models:
                run(name)
        base_w, base_c = wall["1"], cpu["1"]
        cases[case] = {
            "n": int(len(x)),
            "options": opts,
            "max_abs_diff_vs_1_thread": {
                k: float(np.max(np.abs(v - out["1"]))) for k, v in out.items()
            },
            "settings": {
                k: {
                    "wall_s": summary(wall[k]),
                    "cpu_s": summary(cpu[k]),
                    "wall_vs_1": summary([a / b for a, b in zip(wall[k], base_w, strict=True)]),
                    "cpu_vs_1": summary([a / b for a, b in zip(cpu[k], base_c, strict=True)]),
                }
                for k in models
            },
        }
    doc = record(
        "threads",
        args,
        label=args.label,
        machine_load=args.load,
        loadavg_at_start=load_start,
        loadavg_at_end=os.getloadavg(),
        cases=cases,
    )
    publish(doc, f"threads_{args.label}", render, args)


def render(doc: dict) -> str:
    lines = [
        f"### onnxruntime threads: {doc['label']}",
        "",
        f"Command: `python bench/threads.py --repeats {doc['repeats']} --label {doc['label']}` "
        f"({doc['date']}); other load: {doc['machine_load'] or 'not recorded'} (1-minute load "
        f"average {(doc.get('loadavg_at_start') or doc['loadavg_at_end'])[0]:.2f} at the start, "
        f"{doc['loadavg_at_end'][0]:.2f} at the end). Ratios to 1 thread are paired per repeat.",
        "",
        "| case | setting | wall s | CPU s | wall / 1 thread | CPU / 1 thread |",
        "|---|---|---|---|---|---|",
    ]
    for case, c in doc["cases"].items():
        for k, s in c["settings"].items():
            lines.append(
                f"| {case} (n={c['n']}) | {k} | {fmt(s['wall_s'])} | {fmt(s['cpu_s'])} | "
                f"{fmt(s['wall_vs_1'])} | {fmt(s['cpu_vs_1'])} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
