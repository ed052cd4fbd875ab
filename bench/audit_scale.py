"""A dataset-scale audit on 1 vs N worker processes: CPU, wall time, peak RSS per process,
and the TPR at 0.1% FPR that a held-out set of >= 1,000 images makes estimable.

Runs ``python -m refinv audit MODEL --train DATA:train --test DATA:test --workers W`` as a
child process once per ``--workers`` value (each into its own fresh store), watching the
child and its worker processes through /proc (:class:`sweep_scale.Monitor`: peak RSS,
``VmHWM``, and CPU seconds of every process). Reports per run: wall seconds, CPU seconds of
the whole process tree (``RUSAGE_CHILDREN``), per process peak RSS and CPU, the units
computed, and from ``report.json`` the number of training and held-out images and, for
each membership score, the AUC and the operating point at FPR 0.1% (FPR achieved, its
exact Clopper-Pearson interval, TPR with its exact interval) or why it is not estimable.
The runs' ``report.json`` are compared (everything but timings and provenance), and their
``per_image.csv`` byte for byte.

    python bench/audit_scale.py --model models/onnx/natural16_fc20.onnx \\
        --data models/data/natural16.npz --workers 1,2 --shard-size 250 \\
        --out /tmp/audit_scale > audit_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import common  # noqa: F401  (pins BLAS/OpenMP threads through the environment)
from sweep_scale import Monitor

ROOT = Path(__file__).resolve().parents[1]


def _cpu_s(pid: int) -> float | None:
    """utime + stime of a running process, seconds (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMonitor(Monitor):
    """:class:`sweep_scale.Monitor` that also keeps each process's last CPU seconds."""

    def __init__(self, pid: int, every: float = 0.2):
        self.cpu: dict[int, float] = {}  # before the sampling thread starts
        super().__init__(pid, every)

    def sample(self) -> None:
        super().sample()
        for p in list(self.peak):
            c = _cpu_s(p)
            if c is not None:
                self.cpu[p] = c


def run_one(args, workers: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "refinv", "audit", args.model,
           "--train", f"{args.data}:{args.train_key}", "--test", f"{args.data}:{args.test_key}",
           "--out", str(out), "--workers", str(workers), "--quiet", *args.extra]  # fmt: skip
    if args.shard_size:
        cmd += ["--shard-size", str(args.shard_size)]
    env = dict(os.environ, REFINV_NO_PROGRESS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    mon = CpuMonitor(proc.pid)
    log, _ = proc.communicate()
    wall = time.perf_counter() - t0
    summary = mon.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"audit failed ({proc.returncode}):\n{log[-3000:]}")
    workers_ = [p for p in mon.peak if p != proc.pid
                and "resource_tracker" not in mon.cmd.get(p, "")]  # fmt: skip
    procs = [{"role": "audit" if p == proc.pid else "worker",
              "peak_rss_mib": round(mon.peak[p] / 1024, 1),
              "cpu_s_at_last_sample": round(mon.cpu.get(p, 0.0), 1)}
             for p in [proc.pid, *sorted(workers_)]]  # fmt: skip
    doc = json.loads((out / "report.json").read_text())
    return {
        "workers": workers,
        "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "load_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "processes": procs,
        "monitor": summary,
        "units": doc["timing"],
        "n_train": doc["exposure"]["train"]["n"],
        "n_test": doc["exposure"]["test"]["n"],
        "membership": [_score(s) for s in doc["membership"]["scores"]],
        "verdict": doc["verdict"]["level"],
    }


def _score(s: dict) -> dict:
    keep = ("estimable", "needs_nonmembers", "false_positives", "fpr", "fpr_ci",
            "true_positives", "tpr", "tpr_ci")  # fmt: skip
    out = {"score": s["name"], "auc": s["auc"], "auc_ci": s["auc_ci"]}
    for t in s["tpr_at_fpr"]:
        out[f"at_fpr_{100 * t['target_fpr']:g}%"] = {k: t[k] for k in keep if k in t}
    return out


def _comparable(p: Path) -> dict:
    doc = json.loads((p / "report.json").read_text())
    for k in ("provenance", "timing", "created_utc", "files"):
        doc.pop(k, None)
    doc["recovery"].pop("created_utc", None)
    for r in doc["recovery"]["runs"]:
        r.pop("seconds", None)
        r.pop("onnx_seconds", None)
    return doc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--train-key", default="train")
    ap.add_argument("--test-key", default="test")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--shard-size", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("extra", nargs="*", help="more refinv audit options (after --)")
    a = ap.parse_args()
    a.model, a.data = str(Path(a.model).resolve()), str(Path(a.data).resolve())
    a.out = a.out.resolve()
    runs = []
    for w in [int(v) for v in a.workers.split(",")]:
        runs.append(run_one(a, w, a.out / f"workers{w}"))
        print(json.dumps(runs[-1]), file=sys.stderr)
    dirs = [a.out / f"workers{r['workers']}" for r in runs]
    same = all(_comparable(d) == _comparable(dirs[0]) for d in dirs[1:])
    csv = all((d / "per_image.csv").read_bytes() == (dirs[0] / "per_image.csv").read_bytes()
              for d in dirs[1:])  # fmt: skip
    print(
        json.dumps(
            {
                "benchmark": "audit_scale",
                "model": a.model,
                "data": a.data,
                "shard_size": a.shard_size,
                "runs": runs,
                "reports_identical": same,
                "per_image_csv_identical": csv,
            },
            indent=1,
        )
    )
