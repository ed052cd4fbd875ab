"""Peak memory of ``refinv recover`` (or ``refinv evaluate``) vs the number of images.

Data: the 100 shipped faces25 training images (1x25x25 float32) tiled to N
images (``--sizes``, default 20,000 and 200,000), written once per size to
an uncompressed ``.npz`` in a temporary folder. Each measurement is a fresh
process::

    refinv recover models/onnx/faces25_lrelu_6x256.onnx DATA.npz --method blind \\
        --max-iter 1 --inner-iter 1 --threads 1 --quiet [--out OUT.npz]

(one outer iteration of one PnP-ADMM step and the mask step: the real code
path, the solver's full state, the cheapest settings), and its peak resident
set size is read from ``os.wait4`` (``ru_maxrss`` of that child only).
``--src DIR`` runs another checkout of refinv (``PYTHONPATH``) to measure
the code before a change; ``--with-out`` also measures with ``--out``.

``--command evaluate`` measures ``refinv evaluate`` instead, on the shipped
digits8 MLP (1x8x8) with its 100 training and 100 held-out images each tiled
to N::

    refinv evaluate models/onnx/digits8_lrelu_6x320.onnx --train DATA.npz:train \\
        --test DATA.npz:test --mask random:0.5 --method blind,known,ae-iterations \\
        --max-iter 1 --inner-iter 1 --threads 1 --quiet [--json OUT.json]

(``--with-out`` adds ``--json``: the report holds per-image lists, O(N) by design).

Usage::

    python bench/memory.py [--repeats 1] [--sizes 20000,200000] [--with-out] [--markdown]

Peak RSS is not a timing: it varies by a few MiB between runs, so one repeat
per size is the default (``--repeats N`` for more; the JSON keeps them all).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (pins BLAS threads through the environment)
from common import MODELS, ROOT, fmt, parser, publish, record, summary

MODEL = MODELS / "onnx" / "faces25_lrelu_6x256.onnx"
FACES = MODELS / "data" / "faces25.npz"
DIGITS_MODEL = MODELS / "onnx" / "digits8_lrelu_6x320.onnx"
DIGITS = MODELS / "data" / "digits8.npz"


def make_data(folder: Path, n: int, source: Path = FACES) -> Path:
    """The tiled data set, written by a child process: Linux folds a parent's peak RSS into
    the ``ru_maxrss`` of every child it starts afterwards (at ``exec``), so this process
    must stay small. Every array of ``source`` (train, test) is tiled to ``n`` images."""
    p = folder / f"{source.stem}_x{n}.npz"
    if not p.is_file():
        code = (
            "import sys, numpy as np\n"
            "z = np.load(sys.argv[1]); n = int(sys.argv[3])\n"
            "t = lambda b: np.tile(b, (-(-n // len(b)),) + (1,) * (b.ndim - 1))[:n]\n"
            "np.savez(sys.argv[2], **{k: t(z[k]) for k in z.files if z[k].ndim > 1})\n"
        )
        subprocess.run([sys.executable, "-c", code, str(source), str(p), str(n)], check=True)
    return p


def peak_rss(src: Path, data: Path, out: Path | None, command: str = "recover", model=None):
    """(peak RSS MiB, wall s) of one ``refinv recover`` (or ``evaluate``) process."""
    if command == "evaluate":
        cmd = [
            sys.executable, "-m", "refinv", "evaluate", str(model or DIGITS_MODEL),
            "--train", f"{data}:train", "--test", f"{data}:test", "--mask", "random:0.5",
            "--method", "blind,known,ae-iterations", "--max-iter", "1", "--inner-iter", "1",
            "--threads", "1", "--quiet",
        ]  # fmt: skip
        if out is not None:
            cmd += ["--json", str(out)]
    else:
        cmd = [
            sys.executable, "-m", "refinv", "recover", str(MODEL), str(data), "--method",
            "blind", "--max-iter", "1", "--inner-iter", "1", "--threads", "1", "--quiet",
        ]  # fmt: skip
        if out is not None:
            cmd += ["--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(src))
    t0 = time.perf_counter()
    # cwd: not the checkout, whose refinv/ would shadow PYTHONPATH for `python -m`
    p = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=data.parent
    )
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode() if p.stderr else ""
    if p.returncode != 0:
        raise SystemExit(f"refinv {command} failed ({p.returncode}): {err[-2000:]}")
    return ru.ru_maxrss / 1024.0, wall  # Linux: KiB


def own_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--sizes", default="20000,200000", help="numbers of images")
    ap.add_argument("--src", default=str(ROOT), help="refinv checkout to run (PYTHONPATH)")
    ap.add_argument("--label", default="after", help="name of this measurement")
    ap.add_argument("--with-out", action="store_true", help="also measure with --out")
    ap.add_argument("--load", default="", help="what else ran on the machine (recorded)")
    ap.add_argument("--command", default="recover", choices=["recover", "evaluate"])
    ap.add_argument(
        "--dataset", default="digits8", choices=["digits8", "faces25"],
        help="evaluate: model and images (faces25: its 6x256 MLP, 1x25x25 images)",
    )  # fmt: skip
    ap.set_defaults(repeats=1)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats: at least 1")
    sizes = [int(s) for s in args.sizes.split(",")]
    src = Path(args.src).resolve()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = DIGITS if args.command == "evaluate" and args.dataset == "digits8" else FACES
        datas = {n: make_data(folder, n, source) for n in sizes}
        variants = [False, True] if args.with_out else [False]
        res: dict[tuple, list] = {(n, o): [] for n in sizes for o in variants}
        for _ in range(args.repeats):
            for n in sizes:
                for o in variants:
                    out = folder / ("out.json" if args.command == "evaluate" else "out.npz")
                    out = out if o else None
                    model = DIGITS_MODEL if args.dataset == "digits8" else MODEL
                    res[(n, o)].append(peak_rss(src, datas[n], out, args.command, model))
                    if out is not None:
                        out.unlink()
        for (n, o), vals in res.items():
            rows.append(
                {
                    "n_images": n,
                    "with_out": o,
                    "input_mib": n
                    * 4
                    / 2**20
                    * (
                        (128 if args.dataset == "digits8" else 1250)
                        if args.command == "evaluate"
                        else 625
                    ),
                    "peak_rss_mib": summary([v[0] for v in vals]),
                    "wall_s": summary([v[1] for v in vals]),
                }
            )
    ratios = {}
    for o in sorted({r["with_out"] for r in rows}):
        rs = sorted((r for r in rows if r["with_out"] == o), key=lambda r: r["n_images"])
        if len(rs) >= 2:
            ratios["with_out" if o else "no_out"] = (
                rs[-1]["peak_rss_mib"]["median"] / rs[0]["peak_rss_mib"]["median"]
            )
    doc = record(
        "memory",
        args,
        label=args.label,
        src=str(src),
        machine_load=args.load,
        command=(
            f"refinv evaluate {args.dataset.upper()}_MODEL --train DATA.npz:train --test DATA.npz:test --mask "
            "random:0.5 --method blind,known,ae-iterations --max-iter 1 --inner-iter 1 "
            "--threads 1 --quiet [--json OUT.json]"
            if args.command == "evaluate"
            else "refinv recover MODEL DATA.npz --method blind --max-iter 1 --inner-iter 1 "
            "--threads 1 --quiet [--out OUT.npz]"
        ),
        refinv_command=args.command,
        dataset=args.dataset if args.command == "evaluate" else "faces25",
        rows=rows,
        largest_over_smallest=ratios,
        parent_peak_rss_mib=own_peak_mib(),
    )
    name = "memory" if args.command == "recover" else "memory_evaluate"
    publish(doc, f"{name}_{args.label}", render, args)


def render(doc: dict) -> str:
    cmd = doc.get("refinv_command", "recover")
    data = (
        f"{doc.get('dataset', 'faces25')} (training and held-out)"
        if cmd == "evaluate"
        else "faces25"
    )
    flag = "--json" if cmd == "evaluate" else "--out"
    lines = [
        f"### Peak memory of `refinv {cmd}`: {doc['label']}",
        "",
        f"Command: `python bench/memory.py --repeats {doc['repeats']} --label {doc['label']}"
        f"{' --with-out' if any(r['with_out'] for r in doc['rows']) else ''}"
        f"{' --command evaluate --dataset ' + doc.get('dataset', '') if cmd == 'evaluate' else ''}"
        f"` ({doc['date']}); "
        f"each run a fresh `{doc['command']}` on {data} images tiled to N; peak RSS from "
        "`os.wait4` (median [min, max] MiB). Other load: "
        f"{doc['machine_load'] or 'not recorded'}.",
        "",
        f"| images | {flag} | input MiB | peak RSS MiB | wall s |",
        "|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['n_images']:,} | {'yes' if r['with_out'] else 'no'} | {r['input_mib']:.0f} | "
            f"{fmt(r['peak_rss_mib'], digits=4)} | {fmt(r['wall_s'])} |"
        )
    if doc["largest_over_smallest"]:
        lines += [
            "",
            "Peak RSS, largest N / smallest N (medians): "
            + ", ".join(f"{k}: {v:.3f}" for k, v in doc["largest_over_smallest"].items()),
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
