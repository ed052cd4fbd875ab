"""Fuzz refinv's ONNX boundary with hostile model files; print JSON (counts per outcome).

Each case (tests/_onnx_fuzz.py: truncations, byte flips and splices, protobuf field
mutations of small models including the shipped tied_digits8_lrelu_k128.onnx,
external-data tricks, subgraphs, resource bombs (function inlining, initializer counts,
text bulk among them), NaN/Inf Clip bounds and conv kernels, forced layouts, non-ONNX
files) runs in a worker
process, in its own sandbox folder whose root (the worker's cwd) holds a secret file that
inotify watches. A case that takes more than --hang seconds is a hang: the worker is
killed and replaced; a worker that dies is a crash.

    nice -n 10 .venv/bin/python bench/fuzz_onnx.py --cases 1200 --seed 0

Outcomes: refinv_error, correct, wrong, other_exception, leak, unverified, hang, crash.
Each case's peak RSS is its worker's VmHWM over the case (reset before it; the worker's
imports included), or the peak of the child process refinv forks to create a session when
that is larger. Done when wrong, other_exception, leak, hang and crash are all 0 and no
case reaches --max-rss-mb (1 GB).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _peak_rss_mb(pid: int | str = "self") -> float | None:
    """The peak resident set (VmHWM) of a process in MB, Linux only."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> None:
    """Start a new VmHWM period for this process (``/proc/self/clear_refs``, Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _worker(conn, base: str, mem_cap: int) -> None:
    import resource

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if mem_cap:
        resource.setrlimit(resource.RLIMIT_AS, (mem_cap, mem_cap))
    import _onnx_fuzz as fz

    import refinv.onnx  # noqa: F401 - imports done before the first case's clock starts

    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            return
        idx, case, time_limit = msg
        root = Path(base) / f"case{idx}"
        root.mkdir()
        os.chdir(root)
        watch = fz.SecretWatch(root)
        _reset_peak_rss()  # the case's peak RSS: this worker's (imports included) during it
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        try:
            res = fz.run_case(case, root, time_limit=time_limit, watch=watch)
        except BaseException as exc:  # noqa: BLE001 - reported, never hidden
            res = {"outcome": "other_exception", "detail": f"runner: {type(exc).__name__}: {exc}",
                   "seconds": 0.0}  # fmt: skip
        finally:
            watch.close()
            os.chdir(base)
            shutil.rmtree(root, ignore_errors=True)
        res["peak_rss_mb"] = _peak_rss_mb()
        # refinv's session-creation trial runs in a forked child: its peak counts too (the
        # children's maximum only grows, so a rise is this case's child)
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if children > children_before:
            res["peak_rss_mb"] = max(res["peak_rss_mb"] or 0.0, children / 1024)
        conn.send(res)


class Pool:
    def __init__(self, base: str, mem_cap: int):
        self.base, self.mem_cap = base, mem_cap
        self.ctx = mp.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, self.base, self.mem_cap),
                                     daemon=True)  # fmt: skip
        self.proc.start()
        if not self.conn.poll(600) or self.conn.recv() != "ready":
            raise RuntimeError("fuzz worker did not start within 600 s")

    def run(self, idx, case, time_limit: float, hang: float) -> dict:
        t0 = time.perf_counter()
        self.conn.send((idx, case, time_limit))
        while True:
            if self.conn.poll(0.2):
                try:
                    return self.conn.recv()
                except EOFError:
                    break
            if not self.proc.is_alive():
                break
            if time.perf_counter() - t0 > hang:
                rss = _peak_rss_mb(self.proc.pid)
                self.proc.kill()
                self.proc.join()
                shutil.rmtree(Path(self.base) / f"case{idx}", ignore_errors=True)
                self._start()
                return {"outcome": "hang", "detail": f"> {hang} s", "seconds": hang,
                        "peak_rss_mb": rss}  # fmt: skip
        code = self.proc.exitcode
        self.proc.join()
        shutil.rmtree(Path(self.base) / f"case{idx}", ignore_errors=True)
        self._start()
        return {"outcome": "crash", "detail": f"worker exit code {code}",
                "seconds": time.perf_counter() - t0}  # fmt: skip

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=10.0, help="OnnxModel time_limit (s)")
    ap.add_argument("--hang", type=float, default=30.0, help="a case longer than this is a hang")
    ap.add_argument("--memory-limit", type=int, default=512 * 2**20,
                    help="REFINV_ORT_MEMORY_LIMIT for the workers (bytes)")  # fmt: skip
    ap.add_argument("--address-space", type=int, default=6 * 2**30,
                    help="RLIMIT_AS of a worker (bytes; 0: none), protects the machine")  # fmt: skip
    ap.add_argument("--max-rss-mb", type=float, default=1024.0,
                    help="a case whose worker's peak RSS reaches this (MB) fails the run")  # fmt: skip
    ap.add_argument("--verbose", action="store_true", help="one line per case on stderr")
    ap.add_argument("--show", type=int, default=20, help="bad cases listed in the JSON")
    args = ap.parse_args(argv)
    os.environ["REFINV_ORT_MEMORY_LIMIT"] = str(args.memory_limit)
    if args.address_space:  # the parent only draws cases: a small address space is plenty
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (args.address_space, args.address_space))
    import _onnx_fuzz as fz

    rng = random.Random(args.seed)
    counts: Counter = Counter()
    families: dict[str, Counter] = {}
    bad, slowest, rss = [], [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="refinv-fuzz-") as base:
        pool = Pool(base, args.address_space)
        try:
            for i in range(args.cases):
                case = fz.make_case(rng)
                if args.verbose:
                    print(f"[{i}] {case.describe()}", file=sys.stderr, flush=True)
                res = pool.run(i, case, args.time_limit, args.hang)
                if args.verbose:
                    print(
                        f"[{i}] -> {res['outcome']} {res['seconds']:.2f}s "
                        f"{res.get('peak_rss_mb') or 0:.0f}MB",
                        file=sys.stderr,
                        flush=True,
                    )
                rss.append((round(res.get("peak_rss_mb") or 0.0), case.kind))
                counts[res["outcome"]] += 1
                fam = case.kind.split(":")[0]
                families.setdefault(fam, Counter())[res["outcome"]] += 1
                slowest.append((round(res["seconds"], 2), case.kind))
                if res["outcome"] in ("wrong", "other_exception", "leak", "hang", "crash",
                                      "unverified"):  # fmt: skip
                    bad.append({"case": i, "kind": case.describe(), **res})
        finally:
            pool.close()
    slowest.sort(reverse=True)
    rss.sort(reverse=True)
    over = [r for r in rss if r[0] >= args.max_rss_mb]
    summary = (
        f"{args.cases} cases: " + ", ".join(f"{k} {counts[k]}" for k in (
            "wrong", "other_exception", "leak", "hang", "crash", "unverified", "correct",
            "refinv_error")) + f"; peak RSS of any case {rss[0][0] if rss else 0} MB "
        f"({rss[0][1] if rss else '-'}), {len(over)} at or over {args.max_rss_mb:g} MB"
    )  # fmt: skip
    out = {
        "summary": summary,
        "command": "bench/fuzz_onnx.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cases": args.cases,
        "seed": args.seed,
        "outcomes": dict(counts),
        "by_family": {k: dict(v) for k, v in sorted(families.items())},
        "bad": bad[: args.show],
        "n_bad": len(bad),
        "slowest_cases_s": slowest[:5],
        "largest_peak_rss_mb": rss[:5],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=1))
    print(summary, file=sys.stderr)
    failed = any(counts[k] for k in ("wrong", "other_exception", "leak", "hang", "crash"))
    return 1 if failed or over else 0


if __name__ == "__main__":
    sys.exit(main())
