"""What bounding onnxruntime's session creation costs per model load; print JSON.

refinv first creates each session in a forked child process that is killed past the time
limit and whose address space is capped near the memory ceiling
(``refinv.onnx.session._trial``); then it creates the session itself. This measures, per
shipped model, the median wall time of

* ``plain``: the session creation alone (what refinv did before; the control),
* ``bounded``: the trial child plus the creation (a model's first load in a process),
* ``again``: a later load of the same bytes (the completed trial is remembered),

over ``--repeat`` loads each, interleaved.

    OPENBLAS_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/session_trial.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["digits8_lrelu_6x320", "digits28_lrelu_20L128", "colour32_unet_lrelu_c12",
          "faces25_lrelu_6x256"]  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    import onnxruntime as ort

    from refinv.onnx import session as s
    from refinv.onnx.limits import DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT

    rows = []
    for name in MODELS:
        path = ROOT / "models" / "onnx" / f"{name}.onnx"
        if not path.is_file():
            continue
        data = path.read_bytes()
        kw = dict(label=name, memory_limit=DEFAULT_MEMORY_LIMIT)
        times: dict[str, list[float]] = {"plain": [], "bounded": [], "again": []}
        for _ in range(args.repeat):
            so = s.session_options(None)
            so.add_session_config_entry("session.load_model_format", "ONNX")
            so.add_session_config_entry("session.use_env_allocators", "1")
            t0 = time.perf_counter()
            with s._SESSION_LOCK:
                s._create(ort, data, so, ["CPUExecutionProvider"], **kw)
            times["plain"].append(time.perf_counter() - t0)
            s._TRIED.clear()
            t0 = time.perf_counter()
            s.open_session(data, s.session_options(None), ["CPUExecutionProvider"],
                           time_limit=DEFAULT_TIME_LIMIT, **kw)  # fmt: skip
            times["bounded"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            s.open_session(data, s.session_options(None), ["CPUExecutionProvider"],
                           time_limit=DEFAULT_TIME_LIMIT, **kw)  # fmt: skip
            times["again"].append(time.perf_counter() - t0)
        med = {k: round(statistics.median(v), 4) for k, v in times.items()}
        rows.append({"model": name, "bytes": len(data), **{f"{k}_s": v for k, v in med.items()},
                     "trial_cost_s": round(med["bounded"] - med["plain"], 4)})  # fmt: skip
    out = {
        "benchmark": "session_trial",
        "command": "bench/session_trial.py " + " ".join(argv or sys.argv[1:]),
        "repeat": args.repeat,
        "onnxruntime": ort.__version__,
        "models": rows,
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
