"""Shared helpers of the refinv benchmarks: pinned threads, interleaved timing, Markdown.

Every comparison in ``bench/`` is timed side by side in one process with the
repeats interleaved (A, B, A, B, ...), so that load from other processes on a
shared machine hits both sides alike; a result is the median of the repeats
with its min and max, and a ratio is computed per repeat (paired) and then
summarized the same way.

Import this module BEFORE numpy/torch/onnxruntime: it pins the BLAS/OpenMP
thread pools to one thread through the environment (read when those
libraries load). ``pin_torch()`` pins torch's intra-op pool; refinv's
``OnnxModel`` is opened with ``intra_op_threads=1`` by the scripts.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
DOCS_MD = ROOT / "docs" / "benchmarks.md"

__all__ = [
    "ROOT",
    "MODELS",
    "summary",
    "interleaved",
    "ratio",
    "pin_torch",
    "environment",
    "update_markdown",
    "fmt",
    "emit",
]


def summary(values: list[float]) -> dict:
    """``{"median", "min", "max", "n", "all"}`` of a list of numbers."""
    v = [float(a) for a in values]
    return {
        "median": statistics.median(v),
        "min": min(v),
        "max": max(v),
        "n": len(v),
        "all": v,
    }


def interleaved(
    fns: dict[str, Callable[[], Any]], *, repeats: int = 5, warmup: int = 1
) -> dict[str, dict]:
    """Time each callable ``repeats`` times, interleaved (round robin), after ``warmup`` calls.

    Returns ``{name: summary(seconds)}``. ``repeats`` must be >= 5 for the
    reported numbers (the scripts enforce it).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: summary(v) for k, v in times.items()}


def ratio(num: dict, den: dict) -> dict:
    """Per-repeat ratio ``num / den`` of two interleaved timings, summarized (paired)."""
    r = [a / b for a, b in zip(num["all"], den["all"], strict=True)]
    return summary(r)


def pin_torch(threads: int = 1) -> str:
    """Pin torch's intra- and inter-op pools; returns the torch version."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set once in this process
        pass
    return torch.__version__


def environment() -> dict:
    """Versions and machine, for the JSON record."""
    import numpy as np
    import onnxruntime as ort

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "threads": "OPENBLAS/OMP/MKL_NUM_THREADS=1, torch.set_num_threads(1), "
        "onnxruntime intra_op_threads=1",
    }
    if "torch" in sys.modules:
        env["torch"] = sys.modules["torch"].__version__
    try:
        import refinv

        env["refinv"] = getattr(refinv, "__version__", "?")
    except ImportError:  # pragma: no cover
        pass
    return env


def fmt(s: dict, scale: float = 1.0, digits: int = 3) -> str:
    """``median [min, max]`` of a summary, scaled."""
    return (
        f"{s['median'] * scale:.{digits}g} [{s['min'] * scale:.{digits}g}, "
        f"{s['max'] * scale:.{digits}g}]"
    )


_HEADER = """# Benchmarks

Measured by the scripts in `bench/` (see `bench/README.md`); each section is
(re)written by `python bench/<script>.py --markdown`. Numbers are the median
of >= 5 interleaved repeats with `[min, max]`; ratios are computed per
repeat (paired) and summarized the same way. All CPU runs pin every thread
pool to ONE thread (`OPENBLAS_NUM_THREADS=1`, `torch.set_num_threads(1)`,
onnxruntime `intra_op_threads=1`) on a shared, noisy 2-core machine: compare
numbers within a table, not across machines.

"""


def update_markdown(section: str, text: str, path: Path = DOCS_MD) -> Path:
    """Replace (or append) the block ``<!-- bench:section -->`` .. ``<!-- /bench:section -->``."""
    start, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.is_file() else _HEADER
    pat = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pat.sub(lambda _m: block, old) if pat.search(old) else old.rstrip() + "\n\n" + block
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(path)
    return path


def emit(doc: dict) -> None:
    """Print the JSON record to stdout."""
    print(json.dumps(doc, indent=2, default=float))


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--repeats`` (>= 5) and ``--markdown``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (>= 5)")
    ap.add_argument("--markdown", action="store_true", help="update docs/benchmarks.md")
    return ap


def parse(ap: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = ap.parse_args(argv)
    if args.repeats < 5:
        ap.error("--repeats: at least 5")
    return args


def record(name: str, args: argparse.Namespace, **fields: Any) -> dict:
    """A benchmark's JSON record: name, UTC date, repeats, the fields, the environment."""
    return {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "repeats": args.repeats,
        **fields,
        "environment": environment(),
    }


def publish(doc: dict, section: str, render: Callable[[dict], str], args) -> None:
    """Print the record; with ``--markdown`` also rewrite its section of docs/benchmarks.md."""
    emit(doc)
    if args.markdown:
        update_markdown(section, render(doc))
