"""Time to verdict: a full ``refinv evaluate`` report, split into import, load, solvers, figures.

The command timed (the shipped faces25 perfect-fit MLP, its 100 training and
100 held-out images, 3 masks x 3 methods x 2 splits = 18 runs and 18 figures)::

    refinv evaluate models/onnx/faces25_lrelu_6x256.onnx \\
        --train models/data/faces25.npz:train --test models/data/faces25.npz:test \\
        --mask random:0.5,center:9,rows:2 --method blind,known,ae-iterations \\
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
DEMO_MODEL = "colour16_convae_lrelu_c4"  # --commands demo: refinv demo --model DEMO_MODEL

DRIVER = r"""
import sys, time, json, resource, os
w0, c0 = time.perf_counter(), time.process_time()
import refinv, refinv.cli, refinv.cli.evaluate, refinv.cli.recover, refinv.io
import refinv.evaluation.report as R, refinv.solvers.recovery, refinv.onnx.model as M
if sys.argv[1] == "audit":
    import refinv.audit.core as A, refinv.evaluation.stability as S
    import refinv.audit.membership as MI
    try:
        import refinv.evaluation.control as C
    except ImportError:  # checkouts before the control moved out of refinv.audit
        import refinv.audit.control as C
t_import, c_import = time.perf_counter() - w0, time.process_time() - c0
onnx_at_import = "onnx" in sys.modules
KEYS = ("load", "solvers", "stability", "control", "membership", "figures", "report")
acc = {k: 0.0 for k in KEYS}
cpu = {k: 0.0 for k in KEYS}
depth = [0]

def timed(obj, name, key):
    fn = getattr(obj, name, None)
    if fn is None:
        return
    def wrapper(*a, **k):
        if depth[0]:  # a timed function called from another: counted once, by the outer
            return fn(*a, **k)
        depth[0] += 1
        s, c = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            acc[key] += time.perf_counter() - s
            cpu[key] += time.process_time() - c
            depth[0] -= 1
    setattr(obj, name, wrapper)

timed(M.OnnxModel, "__init__", "load")
timed(refinv.io, "load_images_for", "load")
timed(R, "evaluate_split", "solvers")
try:  # the chunked runs of refinv evaluate (newer checkouts)
    import refinv.evaluation.chunked as CH
    timed(CH, "evaluate_split_chunked", "solvers")
except ImportError:
    pass
try:  # the engine's units (newer checkouts): every recovery goes through run_method
    import refinv.evaluation.runs as RU
    timed(RU, "run_method", "solvers")
except ImportError:
    pass
timed(R, "figure_examples", "figures")
timed(R, "figure_rate_vs_loss", "figures")
if sys.argv[1] == "audit":
    timed(A, "evaluate_split", "solvers")
    timed(S, "pnp_admm_stability", "stability")
    timed(C, "biharmonic_inpaint", "control")
    timed(MI, "roc_summary", "membership")
    timed(MI, "bootstrap_interval", "membership")
    timed(A, "_figures", "figures")
    timed(A, "write_outputs", "report")
w1, c1 = time.perf_counter(), time.process_time()
rc = refinv.cli.main(sys.argv[1:])
t_main, c_main = time.perf_counter() - w1, time.process_time() - c1
acc["other"] = t_main - sum(acc[k] for k in KEYS)
cpu["other"] = c_main - sum(cpu[k] for k in KEYS)
ru = resource.getrusage(resource.RUSAGE_SELF)
print("TTV " + json.dumps(dict(rc=rc, import_s=t_import, import_cpu_s=c_import,
      onnx_at_import=onnx_at_import, refinv_file=refinv.__file__,
      main_s=t_main, main_cpu_s=c_main, maxrss_kib=ru.ru_maxrss,
      **{k + "_s": v for k, v in acc.items()}, **{k + "_cpu_s": v for k, v in cpu.items()})))
"""


def command(cmd: str, out: Path, extra: str) -> list[str]:
    if cmd == "audit":  # its defaults: the same 3 masks x 3 methods; 20 stability images/split
        return [
            "audit", str(MODEL),
            "--train", f"{DATA}:train", "--test", f"{DATA}:test",
            "--mask", MASKS, "--method", METHODS,
            "--out", str(out / "audit"), "--quiet",
            *shlex.split(extra),
        ]  # fmt: skip
    if cmd == "demo":  # the conv autoencoder's demo (its model file from the checkout run)
        return ["demo", "--model", DEMO_MODEL, "--json", str(out / "report.json"), "--quiet",
                *shlex.split(extra)]  # fmt: skip
    return [
        "evaluate", str(MODEL),
        "--train", f"{DATA}:train", "--test", f"{DATA}:test",
        "--mask", MASKS, "--method", METHODS,
        "--figures", str(out / "fig"), "--json", str(out / "report.json"), "--quiet",
        *shlex.split(extra),
    ]  # fmt: skip


def run_once(src: Path, cmd: str, extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER, *command(cmd, out, extra)],
            env=env, capture_output=True, text=True, cwd=tmp,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"refinv {cmd} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("TTV ")][-1]
        rec = json.loads(line[4:])
        if not Path(rec["refinv_file"]).resolve().is_relative_to(src):
            raise SystemExit(f"imported {rec['refinv_file']}, not the checkout {src}")
        rec["wall_s"] = wall
        rec["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if cmd == "audit":
            report = json.loads((out / "audit" / "report.json").read_text())
            rec["n_figures"] = None
            runs = report["recovery"]["runs"] if "recovery" in report else report["runs"]
        else:
            rec["n_figures"] = len(sorted((out / "fig").glob("*.png"))) if cmd != "demo" else 0
            report = json.loads((out / "report.json").read_text())
            runs = report["runs"]
        rec["n_runs"] = len(runs)
        rec["accurate_rate"] = {
            f"{r['mask']}/{r['method']}/{r['split']}": r["accurate_rate"] for r in runs
        }
    return rec


PHASES = [
    "import", "load", "solvers", "stability", "control", "membership", "figures", "report",
    "other",
]  # fmt: skip
KEYS = ["wall_s", "cpu_s"] + [f"{k}_s" for k in PHASES] + [f"{k}_cpu_s" for k in PHASES]


def main(argv=None) -> None:
    ap = parser(__doc__)
    ap.add_argument(
        "--src", action="append", default=None, metavar="[NAME=]DIR",
        help="refinv checkout to run (PYTHONPATH); several NAME=DIR are interleaved, e.g. "
        "before=/tmp/old after=. (default: this checkout)",
    )  # fmt: skip
    ap.add_argument(
        "--partial", default=None, metavar="PATH",
        help="after every round, write the raw runs so far here (JSON)",
    )  # fmt: skip
    ap.add_argument("--label", default=None, help="name of this measurement (e.g. before/after)")
    ap.add_argument(
        "--variant", action="append", default=None, metavar="NAME=ARGS",
        help="extra CLI arguments of one variant; several are interleaved (default: none)",
    )  # fmt: skip
    ap.add_argument(
        "--commands", default="evaluate,audit",
        help="comma-separated refinv commands timed, interleaved (default evaluate,audit; "
        f"demo: refinv demo --model {DEMO_MODEL}, its model file from each --src checkout)",
    )  # fmt: skip
    ap.add_argument(
        "--from-partial", default=None, metavar="PATH",
        help="summarize the rounds of a --partial file instead of running (a run cut short; "
        "repeats = the rounds it holds)",
    )  # fmt: skip
    ap.add_argument("--load", default="", help="what else ran on the machine (recorded)")
    args = parse(ap, argv)
    variants = dict(v.split("=", 1) for v in (args.variant or ["default="]))
    cmds = [c.strip() for c in args.commands.split(",") if c.strip()]
    srcs = {}
    for item in args.src or [str(ROOT)]:
        name, _, d = item.rpartition("=")
        srcs[name or "src"] = Path(d).resolve()
    runs: dict[str, list[dict]] = {
        f"{sn} {c} {k}": [] for c in cmds for sn in srcs for k in variants
    }
    load_start = os.getloadavg()
    if args.from_partial:
        part = json.loads(Path(args.from_partial).read_text())
        runs = {k: v for k, v in part["runs"].items() if k in runs}
        args.repeats = min(len(v) for v in runs.values())
        runs = {k: v[: args.repeats] for k, v in runs.items()}
        load_start = part.get("loadavg_at_start", load_start)
    for i in range(0 if args.from_partial else args.repeats):
        for c in cmds:
            for sn, src in srcs.items():
                for name, extra in variants.items():
                    runs[f"{sn} {c} {name}"].append(run_once(src, c, extra))
        if args.partial:
            Path(args.partial).write_text(
                json.dumps(
                    {
                        "rounds": i + 1,
                        "loadavg": os.getloadavg(),
                        "loadavg_at_start": load_start,
                        "runs": runs,
                    }
                )  # fmt: skip
            )
    out = {}
    for key, rs in runs.items():
        sn, c, name = key.split(" ", 2)
        out[key] = {
            "src": str(srcs[sn]),
            "command": c,
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
    loadavg = part["loadavg"] if args.from_partial else os.getloadavg()
    doc = record(
        "time_to_verdict",
        args,
        label=args.label,
        src={k: str(v) for k, v in srcs.items()},
        machine_load=args.load,
        loadavg_at_start=load_start,
        loadavg_at_end=loadavg,
        commands={c: "refinv " + " ".join(command(c, Path("DIR"), "")) for c in cmds},
        variants=out,
    )
    publish(doc, f"time_to_verdict_{args.label or 'run'}", render, args)


def render(doc: dict) -> str:
    la0, la1 = doc.get("loadavg_at_start") or doc["loadavg_at_end"], doc["loadavg_at_end"]
    lines = [
        f"### Time to verdict: {doc['label'] or 'run'}",
        "",
        f"Command: `python bench/time_to_verdict.py --repeats {doc['repeats']}"
        f"{' --label ' + doc['label'] if doc['label'] else ''}` ({doc['date']}); "
        f"other load on the machine: {doc['machine_load'] or 'not recorded'} "
        f"(1-minute load average {la0[0]:.2f} at the start, {la1[0]:.2f} at the end). "
        "Seconds, median [min, max] of fresh processes; CPU = process time (user + system, "
        "all threads); each phase in CPU seconds, then its wall seconds.",
        "",
        "| command, variant | wall | CPU | "
        + " | ".join(f"{k} CPU" for k in PHASES)
        + " | peak RSS MiB |",
        "|---|---|---|" + "---|" * len(PHASES) + "---|",
    ]
    for name, v in doc["variants"].items():
        cells = [fmt(v["wall_s"]), fmt(v["cpu_s"])]
        for k in PHASES:
            if f"{k}_cpu_s" in v:
                cells.append(f"{fmt(v[f'{k}_cpu_s'])} (wall {v[f'{k}_s']['median']:.3g})")
            else:
                cells.append("-")
        lines.append(
            f"| {name} `{v['args']}` | "
            + " | ".join(cells)
            + f" | {v['maxrss_mib']['median']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
