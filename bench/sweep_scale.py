"""Sweeps at scale: throughput vs workers, per-task overhead, memory per worker, resume after kill.

Runs one generated sweep config (an autoencoder, its training and held-out images, masks x
methods) with ``python -m refinv.sweep`` as a child process, one executor at a time:

* in-process (``--workers 1``) and the process pool (``--workers 2``);
* Dask ``LocalCluster`` with 1 and 2 workers (``--scheduler local --workers N``).

For each run: wall time, recoveries per second, the sum of the tasks' own compute
seconds (``tasks.seconds`` in the store), the fixed cost (a rerun of the finished sweep:
every task skipped, so only import, config validation, store and cluster start/stop),
the executor overhead ``wall - fixed - compute / workers`` (worker start-up included), per
task ``/ (tasks / workers)``, peak
RSS (``VmHWM`` of /proc) of the sweep process and of each worker process, and the
1-minute load average before and after. Per-task overhead is also measured bare: the
round trip of a no-op task on a 2-process pool and on a 2-worker LocalCluster.

``--kill`` adds the resume check: a Dask 2-worker sweep is SIGKILLed once a fraction of
its tasks is stored, the worker processes are checked to exit, the sweep is rerun, and
the store must hold exactly the uninterrupted run's per-sample rows (bitwise: every
column of every row equal) with only the missing tasks computed on the rerun.

Every store's rows are compared with the in-process store's (``identical_rows``).

    python bench/sweep_scale.py --model models/onnx/digits28_lrelu_6x256.onnx \\
        --data models/data/digits28_1797.npz --n 100 --kill --markdown > sweep_scale.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common  # first: pins BLAS/OpenMP threads before numpy loads)

ROW_COLS = (
    "checkpoint, mask, method, split, sample, task_id, model_sha256, mse, psnr, iterations, "
    "converged, diverged, residual, erased_fraction, mask_error"
)

EXECUTORS = {
    "inprocess-1": ("in-process (`--workers 1`)", 1, []),
    "pool-2": ("process pool (`--workers 2`)", 2, []),
    "dask-1": ("Dask LocalCluster (`--scheduler local --workers 1`)", 1, ["--scheduler", "local"]),
    "dask-2": ("Dask LocalCluster (`--scheduler local --workers 2`)", 2, ["--scheduler", "local"]),
}


def write_config(
    folder: Path, model: str, data: str, n: int | None, masks, methods, shard, max_iter
) -> Path:
    n_line = f"n = {n}" if n else ""
    solver = f"max_iter = {max_iter}" if max_iter else ""
    text = f"""seed = 0
shard_size = {shard}
masks = {json.dumps(list(masks))}
methods = {json.dumps(list(methods))}

[solver]
{solver}

[runtime]
threads = 1

[datasets.d]
train = "{Path(data).resolve()}:train"
test = "{Path(data).resolve()}:test"
{n_line}

[[models]]
path = "{Path(model).resolve()}"
dataset = "d"
"""
    p = folder / "sweep.toml"
    p.write_text(text)
    return p


# ------------------------------------------------------------------ /proc monitoring
def _children() -> dict[int, int]:
    """pid -> parent pid of every process we can see."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            out[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(root: int) -> list[int]:
    tree = _children()
    found, frontier = [], [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in tree.items() if pp == p]
        found += kids
        frontier += kids
    return found


def _hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return ""


class Monitor:
    """Samples VmHWM (peak RSS) of a process and its descendants until stopped."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every = pid, every
        self.peak: dict[int, int] = {}
        self.cmd: dict[int, str] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def sample(self) -> None:
        for p in [self.pid, *descendants(self.pid)]:
            cmd = _cmd(p)  # read each time: a spawned child shows its parent's until exec
            if p != self.pid and "spawn_main" not in cmd:
                continue
            h = _hwm_kib(p)
            if h is not None:
                self.peak[p] = max(self.peak.get(p, 0), h)
                self.cmd[p] = cmd

    def stop(self) -> dict:
        self._stop.set()
        self._t.join()
        workers = {
            p: kib
            for p, kib in self.peak.items()
            if p != self.pid
            and "spawn_main" in self.cmd.get(p, "")
            and "resource_tracker" not in self.cmd.get(p, "")
        }
        return {
            "sweep_process_peak_rss_mib": round(self.peak.get(self.pid, 0) / 1024, 1),
            "worker_peak_rss_mib": sorted(round(v / 1024, 1) for v in workers.values()),
        }


# ------------------------------------------------------------------ runs
def sweep_cmd(cfg: Path, db: Path, workers: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "refinv.sweep", str(cfg), "--db", str(db), "--quiet",
            "--workers", str(workers), *extra]  # fmt: skip


def run_sweep_proc(cfg: Path, db: Path, workers: int, extra: list[str]) -> dict:
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        sweep_cmd(cfg, db, workers, extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, REFINV_NO_PROGRESS="1"),
    )
    mon = Monitor(proc.pid)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    mem = mon.stop()
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed (rc {proc.returncode}): {out}\n{err[-2000:]}")
    return {"wall_s": wall, "stdout": out.strip(), "load_before": load0,
            "load_after": os.getloadavg(), **mem}  # fmt: skip


def store_facts(db: Path) -> dict:
    con = sqlite3.connect(db)
    try:
        n_tasks, compute = con.execute(
            "SELECT count(*), sum(seconds) FROM tasks WHERE status='done'"
        ).fetchone()
        n_rows = con.execute("SELECT count(*) FROM results").fetchone()[0]
    finally:
        con.close()
    return {"tasks": n_tasks, "recoveries": n_rows, "compute_s": compute}


def rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(
            f"SELECT {ROW_COLS} FROM results ORDER BY checkpoint, mask, method, split, sample"
        ).fetchall()
    finally:
        con.close()


def rows_digest(r: list[tuple]) -> str:
    return hashlib.sha256(repr(r).encode()).hexdigest()[:16]


def measure(cfg: Path, folder: Path, name: str, repeat: int) -> dict:
    label, workers, extra = EXECUTORS[name]
    db = folder / f"{name}-{repeat}.sqlite"
    run = run_sweep_proc(cfg, db, workers, extra)
    facts = store_facts(db)
    fixed = run_sweep_proc(cfg, db, workers, extra)  # everything skipped: the fixed cost
    compute = facts["compute_s"] or 0.0
    overhead = run["wall_s"] - fixed["wall_s"] - compute / workers
    per_task = overhead / (facts["tasks"] / workers)
    return {
        "executor": name,
        "label": label,
        "workers": workers,
        "repeat": repeat,
        **facts,
        **run,
        "recoveries_per_s": facts["recoveries"] / run["wall_s"],
        "fixed_s": fixed["wall_s"],
        "compute_per_recovery_s": compute / facts["recoveries"],
        "overhead_s": overhead,
        "overhead_per_task_s": per_task,
        "db": str(db),
    }


def _noop(i: int) -> int:
    return i


def trivial_task_overhead(n: int = 200) -> dict:
    """Round trip of a no-op task: 2-process spawn pool and 2-worker Dask LocalCluster."""
    import logging
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    out = {}
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        list(ex.map(_noop, range(20)))  # warm up (spawn, imports)
        t0 = time.perf_counter()
        for f in [ex.submit(_noop, i) for i in range(n)]:
            f.result()
        out["pool_2_noop_task_s"] = (time.perf_counter() - t0) / n
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        return out
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster, Client(cluster) as client:  # fmt: skip
        client.gather([client.submit(_noop, i, pure=False) for i in range(20)])
        t0 = time.perf_counter()
        client.gather([client.submit(_noop, i, pure=False) for i in range(n)])
        out["dask_2_noop_task_s"] = (time.perf_counter() - t0) / n
    return out


def kill_and_resume(cfg: Path, folder: Path, reference: list[tuple], fraction: float) -> dict:
    db = folder / "killed.sqlite"
    total = None
    proc = subprocess.Popen(
        sweep_cmd(cfg, db, 2, ["--scheduler", "local"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, REFINV_NO_PROGRESS="1"),
    )
    from refinv.sweep import load_config, make_tasks

    total = len(make_tasks(load_config(cfg)))
    target = max(1, int(fraction * total))
    done = 0
    workers: list[int] = []
    while proc.poll() is None and done < target:
        time.sleep(0.05)
        workers = [p for p in descendants(proc.pid) if "spawn_main" in _cmd(p)] or workers
        try:
            con = sqlite3.connect(db, timeout=1)
            done = con.execute("SELECT count(*) FROM tasks WHERE status='done'").fetchone()[0]
            con.close()
        except sqlite3.Error:
            done = 0
    load0 = os.getloadavg()
    proc.send_signal(signal.SIGKILL)
    rc = proc.wait()
    t_kill = time.perf_counter()
    alive = list(workers)
    while alive and time.perf_counter() - t_kill < 30:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and _hwm_kib(p) is not None]
        time.sleep(0.1)
    orphans_gone_s = time.perf_counter() - t_kill
    con = sqlite3.connect(db)
    integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    n_done = con.execute("SELECT count(*) FROM tasks WHERE status='done'").fetchone()[0]
    con.close()
    resume = run_sweep_proc(cfg, db, 2, ["--scheduler", "local"])
    m = re.match(
        r"(\d+) tasks: (\d+) already in .*, (\d+) computed, (\d+) failed", resume["stdout"]
    )
    final = rows(db)
    return {
        "killed_rc": rc,
        "tasks_total": total,
        "tasks_done_at_kill": n_done,
        "integrity_after_kill": integrity,
        "worker_pids_at_kill": workers,
        "workers_still_alive_after_kill": alive,
        "workers_gone_within_s": round(orphans_gone_s, 2),
        "resume_skipped": int(m.group(2)) if m else None,
        "resume_computed": int(m.group(3)) if m else None,
        "resume_failed": int(m.group(4)) if m else None,
        "resume_wall_s": resume["wall_s"],
        "load_at_kill": load0,
        "rows": len(final),
        "identical_to_uninterrupted": final == reference,
        "rows_sha": rows_digest(final),
    }


def speedups(runs: list[dict]) -> dict:
    """Wall of 1 worker / wall of 2 workers: of the medians, and per repeat (paired)."""

    def walls(name: str) -> list[float]:
        return [
            r["wall_s"] for r in sorted(runs, key=lambda r: r["repeat"]) if r["executor"] == name
        ]

    sp: dict = {}
    for key, one, two in (("pool", "inprocess-1", "pool-2"), ("dask", "dask-1", "dask-2")):
        a, b = walls(one), walls(two)
        if a and b:
            sp[key] = statistics.median(a) / statistics.median(b)
            sp[f"{key}_per_repeat"] = [x / y for x, y in zip(a, b, strict=False)]
    return sp


def render(doc: dict) -> str:
    c = doc["config"]
    lines = [
        "### Sweeps at scale (`bench/sweep_scale.py`)",
        "",
        f"{doc['date']}; model `{c['model']}`, data `{c['data']}`"
        f" ({c['n'] or 'all'} images per split), masks {', '.join(c['masks'])}, methods "
        f"{', '.join(c['methods'])}, shard {c['shard']}, "
        f"max_iter {c['max_iter'] or 'default'}: {doc['runs'][0]['recoveries']} recoveries "
        f"in {doc['runs'][0]['tasks']} tasks per run. `{doc['command']}`. One run per "
        f"executor and repeat (repeats: {doc['repeats']}), with the 1-minute load average "
        "before/after (2 cores).",
        "",
        "| executor | wall s | recoveries/s | compute s/recovery | fixed s | executor "
        "overhead s (per task) | peak RSS sweep / workers MiB | load before/after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["runs"]:
        w = ", ".join(f"{v:g}" for v in r["worker_peak_rss_mib"]) or "-"
        lines.append(
            f"| {r['label']} | {r['wall_s']:.1f} | {r['recoveries_per_s']:.2f} | "
            f"{r['compute_per_recovery_s']:.4f} | {r['fixed_s']:.1f} | {r['overhead_s']:.1f} "
            f"({r['overhead_per_task_s']:.3f}) | "
            f"{r['sweep_process_peak_rss_mib']:g} / {w} | "
            f"{r['load_before'][0]:.2f} / {r['load_after'][0]:.2f} |"
        )
    s = doc["speedup_2_over_1"]

    def each(key: str) -> str:
        return ", ".join(f"{v:.2f}x" for v in s.get(f"{key}_per_repeat", []))

    lines += [
        "",
        f"Speedup at 2 workers (median wall of 1 worker / of 2 workers): process pool vs "
        f"in-process {s['pool']:.2f}x (per repeat {each('pool')}), Dask 2 vs 1 workers "
        f"{s['dask']:.2f}x (per repeat {each('dask')}). Every store's per-sample rows "
        f"identical to the in-process one's: {doc['identical_rows']}.",
    ]
    o = doc.get("trivial_task", {})
    if o:
        lines.append(
            f"Bare round trip of a no-op task: process pool {o['pool_2_noop_task_s'] * 1e3:.2f} ms, "
            f"Dask LocalCluster {o.get('dask_2_noop_task_s', float('nan')) * 1e3:.2f} ms."
        )
    k = doc.get("kill")
    if k:
        lines.append(
            f"Kill and resume (Dask, 2 workers): SIGKILL after {k['tasks_done_at_kill']} of "
            f"{k['tasks_total']} tasks (integrity {k['integrity_after_kill']}; worker processes "
            f"gone {k['workers_gone_within_s']} s after the kill: "
            f"{not k['workers_still_alive_after_kill']}); the rerun skipped "
            f"{k['resume_skipped']} and computed {k['resume_computed']}; final store identical "
            f"to the uninterrupted run's, row for row and bit for bit: "
            f"{k['identical_to_uninterrupted']}."
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(common.MODELS / "onnx" / "digits28_lrelu_6x256.onnx"))
    ap.add_argument("--data", default=str(common.MODELS / "data" / "digits28_1797.npz"))
    ap.add_argument("--n", type=int, default=100, help="first n images of each split (0: all)")
    ap.add_argument("--masks", default="random:0.5")
    ap.add_argument("--methods", default="blind")
    ap.add_argument("--shard", type=int, default=50)
    ap.add_argument("--max-iter", type=int, default=0, help="0: the solver default")
    ap.add_argument("--executors", default=",".join(EXECUTORS))
    ap.add_argument("--repeats", type=int, default=1, help="runs per executor (interleaved)")
    ap.add_argument("--kill", action="store_true", help="also the kill-and-resume check")
    ap.add_argument("--kill-fraction", type=float, default=0.4)
    ap.add_argument("--no-trivial", action="store_true", help="skip the no-op task timing")
    ap.add_argument("--keep", default=None, help="folder for the stores (default: a temp dir)")
    ap.add_argument("--markdown", action="store_true", help="update docs/benchmarks.md")
    ap.add_argument("--section", default="sweep_scale", help="docs/benchmarks.md section")
    ap.add_argument(
        "--render",
        default=None,
        metavar="JSON",
        help="only rewrite the Markdown section from a JSON record of this script",
    )
    args = ap.parse_args(argv)
    if args.render:
        doc = json.loads(Path(args.render).read_text())
        doc["speedup_2_over_1"] = speedups(doc["runs"])
        common.update_markdown(args.section, render(doc))
        return 0
    masks = [m for m in args.masks.split(",") if m]
    methods = [m for m in args.methods.split(",") if m]
    names = [e for e in args.executors.split(",") if e]
    for e in names:
        if e not in EXECUTORS:
            ap.error(f"--executors: expected names from {', '.join(EXECUTORS)}, got {e!r}")
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sweep_scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    cfg = write_config(
        folder, args.model, args.data, args.n or None, masks, methods, args.shard, args.max_iter
    )
    runs = []
    for rep in range(args.repeats):
        for name in names:
            r = measure(cfg, folder, name, rep)
            print(f"{name} rep {rep}: {r['wall_s']:.1f}s load {r['load_before'][0]:.2f}",
                  file=sys.stderr)  # fmt: skip
            runs.append(r)
    ref_rows = rows(Path(runs[0]["db"]))
    identical = all(rows(Path(r["db"])) == ref_rows for r in runs)
    sp = speedups(runs)
    doc = {
        "benchmark": "sweep_scale",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python bench/sweep_scale.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "repeats": args.repeats,
        "config": {
            "model": Path(args.model).name,
            "data": Path(args.data).name,
            "n": args.n,
            "masks": masks,
            "methods": methods,
            "shard": args.shard,
            "max_iter": args.max_iter,
        },  # fmt: skip
        "runs": runs,
        "speedup_2_over_1": sp,
        "identical_rows": identical,
        "rows_sha": rows_digest(ref_rows),
    }
    if not args.no_trivial:
        doc["trivial_task"] = trivial_task_overhead()
    if args.kill:
        doc["kill"] = kill_and_resume(cfg, folder, ref_rows, args.kill_fraction)
    doc["environment"] = common.environment()
    common.emit(doc)
    if args.markdown:
        if not sp.get("pool") or not sp.get("dask"):
            ap.error("--markdown: needs all four executors")
        common.update_markdown(args.section, render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
