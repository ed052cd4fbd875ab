"""Time to verdict: a full ``refinv evaluate`` report, split into import, load, solvers, figures.

The command timed (the shipped faces25 perfect-fit MLP, its 100 training and
100 held-out images, 3 masks x 3 methods x 2 splits = 18 runs and 18 figures)::

    refinv evaluate models/onnx/faces25_lrelu_6x256.onnx \\
        --train models/data/faces25.npz:train --test models/data/faces25.npz:test \\
        --masks random:0.5,center:9,rows:2 --methods blind,known,ae-iterations \\
        --figures DIR --json DIR/report.json --quiet [--threads N]

Each repeat is a fresh ``python`` process (so the import is paid, as a user
pays it) running a small driver that imports the modules the command uses
(``import``), then calls ``refinv.cli.main`` with timers wrapped around
``OnnxModel.__init__`` and the image loader (``load``), every
``evaluate_split`` (``solvers``: degradation, solve, metrics), and the
figure functions (``figures``, including matplotlib's import). ``other`` is
the rest of ``main`` (checkpoint losses, JSON, table). The parent records
the process's wall time and CPU time (user + system, all its threads).

``--src DIR`` runs the driver on another checkout of refinv (``PYTHONPATH``),
so the same script measures the code before and after a change; several
``--variant NAME=ARGS`` are run interleaved (round robin), e.g.
``--variant threads1='--threads 1' --variant default=''``.

Usage::

    python bench/time_to_verdict.py [--repeats 5] [--src DIR] [--markdown]
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (pins BLAS threads through the environment)
from common import MODELS, ROOT, fmt, parse, parser, publish, record, summary

MODEL = MODELS / "onnx" / "faces25_lrelu_6x256.onnx"
DATA = MODELS / "data" / "faces25.npz"
MASKS = "random:0.5,center:9,rows:2"
METHODS = "blind,known,ae-iterations"

DRIVER = r"""
import sys, time, json, resource
t0 = time.perf_counter()
import refinv, refinv.cli, refinv.cli.evaluate, refinv.cli.recover, refinv.io
import refinv.evaluation.report as R, refinv.solvers.recovery, refinv.onnx.model as M
t_import = time.perf_counter() - t0
onnx_at_import = "onnx" in sys.modules
acc = {"load": 0.0, "solvers": 0.0, "figures": 0.0}

def timed(obj, name, key):
    fn = getattr(obj, name)
    def wrapper(*a, **k):
        s = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc[key] += time.perf_counter() - s
    setattr(obj, name, wrapper)

timed(M.OnnxModel, "__init__", "load")
timed(refinv.io, "load_images_for", "load")
timed(R, "evaluate_split", "solvers")
timed(R, "figure_examples", "figures")
timed(R, "figure_rate_vs_loss", "figures")
t1 = time.perf_counter()
rc = refinv.cli.main(sys.argv[1:])
t_main = time.perf_counter() - t1
acc["other"] = t_main - acc["load"] - acc["solvers"] - acc["figures"]
ru = resource.getrusage(resource.RUSAGE_SELF)
print("TTV " + json.dumps(dict(rc=rc, import_s=t_import, onnx_at_import=onnx_at_import,
      main_s=t_main, maxrss_kib=ru.ru_maxrss, **{k + "_s": v for k, v in acc.items()})))
"""


def command(out: Path, extra: str) -> list[str]:
    return [
        "evaluate", str(MODEL),
        "--train", f"{DATA}:train", "--test", f"{DATA}:test",
        "--masks", MASKS, "--methods", METHODS,
        "--figures", str(out / "fig"), "--json", str(out / "report.json"), "--quiet",
        *shlex.split(extra),
    ]  # fmt: skip


def run_once(src: Path, extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER, *command(out, extra)],
            env=env, capture_output=True, text=True, cwd=tmp,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"refinv evaluate failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("TTV ")][-1]
        rec = json.loads(line[4:])
        rec["wall_s"] = wall
        rec["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        figs = sorted((out / "fig").glob("*.png"))
        rec["n_figures"] = len(figs)
        report = json.loads((out / "report.json").read_text())
        rec["n_runs"] = len(report["runs"])
        rec["accurate_rate"] = {
            f"{r['mask']}/{r['method']}/{r['split']}": r["accurate_rate"] for r in report["runs"]
        }
    return rec


KEYS = ["wall_s", "cpu_s", "import_s", "load_s", "solvers_s", "figures_s", "other_s"]


def main(argv=None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--src", default=str(ROOT), help="refinv checkout to run (PYTHONPATH)")
    ap.add_argument("--label", default=None, help="name of this measurement (e.g. before/after)")
    ap.add_argument(
        "--variant", action="append", default=None, metavar="NAME=ARGS",
        help="extra CLI arguments of one variant; several are interleaved (default: none)",
    )  # fmt: skip
    ap.add_argument("--load", default="", help="what else ran on the machine (recorded)")
    args = parse(ap, argv)
    variants = dict(v.split("=", 1) for v in (args.variant or ["default="]))
    src = Path(args.src).resolve()
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, extra in variants.items():
            runs[name].append(run_once(src, extra))
    out = {}
    for name, rs in runs.items():
        out[name] = {
            "args": variants[name],
            **{k: summary([r[k] for r in rs]) for k in KEYS},
            "maxrss_mib": summary([r["maxrss_kib"] / 1024 for r in rs]),
            "onnx_at_import": rs[0]["onnx_at_import"],
            "n_runs": rs[0]["n_runs"],
            "n_figures": rs[0]["n_figures"],
            "accurate_rate": rs[0]["accurate_rate"],
            "same_rates_every_repeat": all(
                r["accurate_rate"] == rs[0]["accurate_rate"] for r in rs
            ),
        }
    loadavg = os.getloadavg()
    doc = record(
        "time_to_verdict",
        args,
        label=args.label,
        src=str(src),
        machine_load=args.load,
        loadavg_at_end=loadavg,
        command="refinv " + " ".join(command(Path("DIR"), "")),
        variants=out,
    )
    publish(doc, f"time_to_verdict_{args.label or 'run'}", render, args)


def render(doc: dict) -> str:
    lines = [
        f"### Time to verdict: {doc['label'] or 'run'}",
        "",
        f"Command: `python bench/time_to_verdict.py --repeats {doc['repeats']}"
        f"{' --label ' + doc['label'] if doc['label'] else ''}` ({doc['date']}); "
        f"other load on the machine: {doc['machine_load'] or 'not recorded'} "
        f"(load average at the end {doc['loadavg_at_end'][0]:.2f}). Seconds, median [min, max] "
        "of fresh processes.",
        "",
        "| variant | wall | CPU | import | load | solvers | figures | other | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in doc["variants"].items():
        cells = [fmt(v[k]) for k in KEYS]
        lines.append(
            f"| {name} `{v['args']}` | "
            + " | ".join(cells)
            + f" | {v['maxrss_mib']['median']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
