"""How fast and how lean refinv refuses the session-creation and allocation bombs; print JSON.

Each case runs in a fresh process (its peak RSS, VmHWM, measured from after the imports)
through ``OnnxModel`` and ``read_chain`` with the default limits, and reports the outcome,
the wall time and the peak RSS over the process's baseline. The control is the same file
given to plain onnxruntime with refinv's session options, in a process killed after
``--control-timeout`` seconds (``--control`` to run it; slow by design).

    OPENBLAS_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/untrusted_limits.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CASES = {
    # the control for time and memory: a valid shipped model (the lazy imports of onnx and
    # onnxruntime, ~2 s on the loaded 2-core machine, are in every case's time)
    "valid_digits8_lrelu_6x320": lambda fz: _shipped("digits8_lrelu_6x320"),
    "function_inlining_depth14": lambda fz: fz._function_bomb(14),
    "function_inlining_depth30": lambda fz: fz._function_bomb(30),
    "initializers_1e5": lambda fz: fz._many_initializers(10**5),
    "constant_of_shape_3.5GiB": lambda fz: _cos(fz, 7 * 2**27),
    "expand_2GiB": lambda fz: _expand(fz, 2**27),
    "doc_string_256MiB": lambda fz: _doc(fz, 2**28),
    # what a valid model costs to load: weights of 256 MiB (a MatMul 8192 x 8192)
    "weights_256MiB": lambda fz: _weights(fz, 8192),
}

_RUN = """
import json, sys, time
def hwm():
    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
how, path = sys.argv[1], sys.argv[2]
if how == "control":
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.log_severity_level = 4
    open('/proc/self/clear_refs', 'w').write('5'); base = hwm(); t0 = time.perf_counter()
    try:
        ort.InferenceSession(path, so, providers=['CPUExecutionProvider'],
                             disabled_optimizers=['ConstantFolding'])
        out = 'created'
    except Exception as exc:
        out = 'error: ' + str(exc)[:120]
else:
    from refinv import OnnxModel
    from refinv.onnx import read_chain
    load = OnnxModel if how == "model" else read_chain
    open('/proc/self/clear_refs', 'w').write('5'); base = hwm(); t0 = time.perf_counter()
    try:
        load(path)
        out = 'loaded'
    except Exception as exc:
        out = type(exc).__name__ + ': ' + str(exc)[:120]
print(json.dumps({"outcome": out, "seconds": round(time.perf_counter() - t0, 3),
                  "peak_rss_mb_over_baseline": round((hwm() - base) / 1024, 1)}))
"""


def _shipped(name):
    import onnx

    return onnx.load(ROOT / "models" / "onnx" / f"{name}.onnx")


def _cos(fz, n):
    import numpy as np
    from onnx import helper, numpy_helper

    z = numpy_helper.from_array(np.array(0, np.float32), "zero")
    nodes = [
        helper.make_node("ConstantOfShape", ["shp"], ["big"],
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["zz"]),
        helper.make_node("Add", ["x", "zz"], ["y"]),
    ]  # fmt: skip
    shp = numpy_helper.from_array(np.array([n], np.int64), "shp")
    return fz._model(nodes, [shp, z], ["N", 4], ["N", 4])


def _expand(fz, n):
    import numpy as np
    from onnx import helper, numpy_helper

    z = numpy_helper.from_array(np.array(0, np.float32), "zero")
    nodes = [
        helper.make_node("Expand", ["x", "shp"], ["big"]),
        helper.make_node("ReduceMax", ["big"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["zz"]),
        helper.make_node("Add", ["x", "zz"], ["y"]),
    ]
    shp = numpy_helper.from_array(np.array([n, 1, 4], np.int64), "shp")
    return fz._model(nodes, [shp, z], ["N", 4], ["N", 4])


def _weights(fz, n):
    import numpy as np
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.eye(n, dtype=np.float32), "w")
    return fz._model([helper.make_node("MatMul", ["x", "w"], ["y"])], [w], ["N", n], ["N", n])


def _doc(fz, n):
    from onnx import helper

    m = fz._model([helper.make_node("Relu", ["x"], ["y"])], [], ["N", 4], ["N", 4])
    m.graph.node[0].doc_string = "d" * n
    return m


def _run(how: str, path: Path, timeout: float) -> dict:
    try:
        r = subprocess.run([sys.executable, "-c", _RUN, how, str(path)], capture_output=True,
                           text=True, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"outcome": f"still running after {timeout:g} s (killed)"}
    lines = r.stdout.strip().splitlines()
    return (
        json.loads(lines[-1]) if lines else {"outcome": f"exit {r.returncode}: {r.stderr[-200:]}"}
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--control", action="store_true", help="also plain onnxruntime (slow)")
    ap.add_argument("--control-timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    import _onnx_fuzz as fz

    rows = []
    with tempfile.TemporaryDirectory(prefix="refinv-limits-") as d:
        for name, build in CASES.items():
            p = Path(d) / f"{name}.onnx"
            p.write_bytes(build(fz).SerializeToString())
            row = {"case": name, "file_bytes": p.stat().st_size,
                   "model": _run("model", p, 600), "chain": _run("chain", p, 600)}  # fmt: skip
            if args.control:
                row["plain_onnxruntime"] = _run("control", p, args.control_timeout)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "untrusted_limits",
                      "command": "bench/untrusted_limits.py " + " ".join(argv or sys.argv[1:]),
                      "cases": rows}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
