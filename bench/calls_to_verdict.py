"""Calls to a verdict: the network calls ``refinv evaluate`` makes, before and after, per model.

For every shipped perfect-fit autoencoder (``models/MANIFEST.json``: kind
``autoencoder`` with ``train_mse < 1e-10``; the fully connected MLPs and the
conv autoencoder) this runs, as a user would, in a fresh process::

    refinv evaluate MODEL --train DATA.npz:train --test DATA.npz:test \\
        --masks MASKS --methods blind,known,ae-iterations --json OUT --quiet

with the library's defaults otherwise (3 masks x 3 methods x 2 splits = 18 runs). MASKS
are ``random:0.5,center:S,rows:2`` with S = 9 on the 25x25 faces and 28x28 digits (the
faces setting of ``bench/time_to_verdict.py``, with its 100 held-out images), 6 on the
16x16 colour patches and 3 on the 8x8 digits. It counts the *sample-calls* (one image
through the network once): per image, ``iterations x inner_iter`` for blind and known
mask, ``iterations`` for the AE iterations, summed over the 18 runs; and classes every
image as the report does (accurate MSE < 1e-7, approximate MSE < 5e-4, not recovered).

"before" is another commit (``--base``, default 6b1aae2, the commit this benchmark was
written against), checked out with ``git worktree add --detach`` into a temporary folder
and run from there (its code AND its model files, ``PYTHONPATH`` pointing at it, the
process started outside both checkouts); "after" is this checkout. Printed: per model
the total sample-calls before and after, their ratio, the CPU time of the two processes
(user + system, ``os.wait4``; one run each on a shared machine, so indicative), whether
every per-image class is unchanged, and each image whose class changed (run, image,
before / after class and MSE, the new ``stop_reason`` and iterations).

Usage::

    python bench/calls_to_verdict.py [--base REV] [--models NAME,...] [--keep DIR]
        [--reuse] [--markdown]

``--keep DIR`` keeps the JSON reports (``DIR/before/NAME.json``, ``DIR/after/NAME.json``);
with ``--reuse`` a report already there is read instead of recomputed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (pins BLAS threads through the environment)
import numpy as np
from common import MODELS, ROOT, emit, environment, update_markdown

BASE = "6b1aae2"
PERFECT_FIT = 1e-10
ACCURATE, APPROXIMATE = 1e-7, 5e-4
CENTER = {25: 9, 28: 9, 16: 6, 8: 3}
CLASS_NAMES = ("not", "approximate", "accurate")


def perfect_fit_models(manifest: Path) -> list[tuple[str, dict]]:
    files = json.loads(manifest.read_text())["files"]
    out = []
    for key, rec in files.items():
        mse = rec.get("train_mse")
        if rec.get("kind") == "autoencoder" and mse is not None and mse < PERFECT_FIT:
            if key.startswith("onnx/") and "/checkpoints/" not in key:
                out.append((Path(key).stem, rec))
    return sorted(out)


def masks_for(rec: dict) -> str:
    side = int(rec["input_shape"][-1])
    return f"random:0.5,center:{CENTER[side]},rows:2"


def evaluate(src: Path, models: Path, name: str, rec: dict, out: Path, extra=()) -> dict:
    """One ``refinv evaluate`` process on checkout ``src``; returns its report and CPU time."""
    data = models / rec["dataset"].split()[0]
    cmd = [
        sys.executable, "-m", "refinv", "evaluate", str(models / "onnx" / f"{name}.onnx"),
        "--train", f"{data}:train", "--test", f"{data}:test", "--masks", masks_for(rec),
        "--methods", "blind,known,ae-iterations", "--json", str(out), "--quiet", *extra,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(src), REFINV_NO_PROGRESS="1")
    t0 = time.perf_counter()
    err = out.with_suffix(".stderr.txt")  # the per-run divergence warnings land here
    with tempfile.TemporaryDirectory() as cwd, open(err, "wb") as fe:  # not a checkout
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=fe)
        _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"refinv evaluate failed on {name} ({src}): exit {status}\n{err.read_text()[-2000:]}"
        )
    doc = json.loads(out.read_text())
    return {"doc": doc, "cpu_s": ru.ru_utime + ru.ru_stime, "wall_s": wall}


def classify(mse) -> int:
    if mse is None:
        return 0
    return 2 if mse < ACCURATE else (1 if mse < APPROXIMATE else 0)


def tally(doc: dict) -> dict:
    """Sample-calls per run and per-image classes of a report."""
    inner = {m: (s.get("inner_iter") or 1) for m, s in doc["settings"]["solver"].items()}
    runs = {}
    for r in doc["runs"]:
        k = inner.get(r["method"], 1) if r["method"] != "ae-iterations" else 1
        runs[(r["mask"], r["split"], r["method"])] = {
            "calls": int(sum(r["iterations"]) * k),
            "classes": [classify(m) for m in r["mse"]],
            "mse": r["mse"],
            "iterations": r["iterations"],
            "stop_reason": r.get("stop_reason"),
        }
    return runs


def kind_of_change(c: dict) -> str:
    """``better``: stopped as converged in a better class than the full budget left it (the
    old rule ran on and the iterate drifted off); ``threshold``: both MSEs within a factor 4
    of the class boundary crossed (an image on a non-converging orbit whose class at the
    budget's end is a draw); ``lost``: a worse class by more than that (a late convergence
    the new rule gave up on, or an orbit whose MSE swings over decades)."""
    rank = CLASS_NAMES.index
    mb = np.inf if c["mse_before"] is None else c["mse_before"]
    ma = np.inf if c["mse_after"] is None else c["mse_after"]
    if rank(c["after"]) > rank(c["before"]) and c["stop_reason_after"] == "converged":
        return "better"
    lo, hi = sorted((rank(c["before"]), rank(c["after"])))
    bound = (APPROXIMATE, ACCURATE)[hi - 1] if lo + 1 == hi else None
    if bound is not None and bound / 4 <= min(mb, ma) and max(mb, ma) <= 4 * bound:
        return "threshold"
    return "lost" if rank(c["after"]) < rank(c["before"]) else "better"


def compare(before: dict, after: dict) -> dict:
    b, a = tally(before), tally(after)
    changes, per_method = [], {}
    for key, rb in b.items():
        ra = a[key]
        pm = per_method.setdefault(key[2], [0, 0])
        pm[0] += rb["calls"]
        pm[1] += ra["calls"]
        for i, (cb, ca) in enumerate(zip(rb["classes"], ra["classes"], strict=True)):
            if cb != ca:
                changes.append(
                    {
                        "mask": key[0], "split": key[1], "method": key[2], "image": i,
                        "before": CLASS_NAMES[cb], "after": CLASS_NAMES[ca],
                        "mse_before": rb["mse"][i], "mse_after": ra["mse"][i],
                        "iterations_before": rb["iterations"][i],
                        "iterations_after": ra["iterations"][i],
                        "stop_reason_after": (ra["stop_reason"] or [None] * (i + 1))[i],
                    }
                )  # fmt: skip
                changes[-1]["kind"] = kind_of_change(changes[-1])
    counts = {
        side: [sum(c == k for r in runs.values() for c in r["classes"]) for k in (2, 1, 0)]
        for side, runs in (("before", b), ("after", a))
    }
    reasons: dict[str, int] = {}
    for r in a.values():
        for why in r["stop_reason"] or []:
            reasons[why] = reasons.get(why, 0) + 1
    calls_b = sum(r["calls"] for r in b.values())
    calls_a = sum(r["calls"] for r in a.values())
    return {
        "calls_before": calls_b,
        "calls_after": calls_a,
        "ratio": calls_a / calls_b,
        "per_method": {m: {"before": v[0], "after": v[1]} for m, v in per_method.items()},
        "classes_before": dict(
            zip(("accurate", "approximate", "not"), counts["before"], strict=True)
        ),
        "classes_after": dict(
            zip(("accurate", "approximate", "not"), counts["after"], strict=True)
        ),
        "classes_unchanged": not changes,
        "changes_by_kind": {
            k: sum(c["kind"] == k for c in changes) for k in ("better", "threshold", "lost")
        },
        "changes": changes,
        "stop_reasons_after": reasons,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=BASE, help=f"the 'before' commit (default {BASE})")
    ap.add_argument("--models", default=None, help="comma-separated model names (default: all)")
    ap.add_argument("--keep", default=None, help="keep the JSON reports in this folder")
    ap.add_argument("--reuse", action="store_true", help="read reports already in --keep")
    ap.add_argument(
        "--after-args", default="", metavar="ARGS",
        help="extra refinv evaluate options of the 'after' side (e.g. '--search-patience 20'); "
        "its reports go to --keep/after-LABEL with --label",
    )  # fmt: skip
    ap.add_argument("--label", default="", help="names the 'after' variant (--after-args)")
    ap.add_argument("--markdown", action="store_true", help="update docs/benchmarks.md")
    ap.add_argument(
        "--only", choices=["before", "after"], default=None,
        help="run one side only into --keep (no comparison printed); a later run with --reuse "
        "reads it",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.only and not args.keep:
        ap.error("--only needs --keep")
    keep = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="calls_to_verdict_"))
    after_dir = "after" + (f"-{args.label}" if args.label else "")
    for side in ("before", after_dir):
        (keep / side).mkdir(parents=True, exist_ok=True)
    extra = shlex.split(args.after_args)
    base_dir = Path(tempfile.mkdtemp(prefix="refinv_base_")) / "src"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_dir), args.base],
        check=True, capture_output=True,
    )  # fmt: skip
    base_rev = subprocess.run(
        ["git", "-C", str(base_dir), "rev-parse", "--short", "HEAD"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    head_rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    try:
        models = perfect_fit_models(MODELS / "MANIFEST.json")
        if args.models:
            want = set(args.models.split(","))
            models = [m for m in models if m[0] in want]
        rows = []
        for name, rec in models:
            got = {}
            for side, src, mdir in (
                ("before", base_dir, base_dir / "models"),
                ("after", ROOT, MODELS),
            ):
                if args.only and side != args.only:
                    continue
                out = keep / (after_dir if side == "after" else side) / f"{name}.json"
                meta = out.with_suffix(".cpu.json")
                if args.reuse and out.is_file() and meta.is_file():
                    got[side] = {"doc": json.loads(out.read_text()), **json.loads(meta.read_text())}
                else:
                    got[side] = evaluate(
                        src, mdir, name, rec, out, extra if side == "after" else ()
                    )
                    meta.write_text(json.dumps({k: got[side][k] for k in ("cpu_s", "wall_s")}))
            if args.only:
                print(f"{name}: {args.only} done", file=sys.stderr, flush=True)
                continue
            row = {
                "model": name,
                "kind": "conv" if "conv" in name else "fc",
                "masks": masks_for(rec),
                "n_train": len(got["before"]["doc"]["runs"][0]["mse"]),
                "cpu_s_before": got["before"]["cpu_s"],
                "cpu_s_after": got["after"]["cpu_s"],
                **compare(got["before"]["doc"], got["after"]["doc"]),
            }
            rows.append(row)
            print(
                f"{name}: {row['calls_before']} -> {row['calls_after']} sample-calls "
                f"({row['ratio']:.3f}), {len(row['changes'])} class changes",
                file=sys.stderr,
                flush=True,
            )
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_dir)],
            check=False, capture_output=True,
        )  # fmt: skip
        shutil.rmtree(base_dir.parent, ignore_errors=True)
    if args.only:
        return
    tb = sum(r["calls_before"] for r in rows)
    ta = sum(r["calls_after"] for r in rows)
    doc = {
        "benchmark": "calls_to_verdict",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "base": base_rev,
        "head": head_rev,
        "after_args": args.after_args,
        "label": args.label,
        "rows": rows,
        "total": {"calls_before": tb, "calls_after": ta, "ratio": ta / tb if tb else None},
        "environment": environment(),
    }
    emit(doc)
    if args.markdown:
        section = "calls_to_verdict" + (f"_{args.label}" if args.label else "")
        update_markdown(section, render(doc))


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def render(doc: dict) -> str:
    lines = [
        "## Calls to a verdict: network calls of `refinv evaluate`, before and after"
        + (f" ({doc['label']})" if doc["label"] else ""),
        "",
        "Command: `python bench/calls_to_verdict.py --markdown"
        + (f" --label {doc['label']} --after-args '{doc['after_args']}'" if doc["label"] else "")
        + f"` ({doc['date']}); before = {doc['base']}, after = {doc['head']}"
        + (f" with `{doc['after_args']}`" if doc["after_args"] else "")
        + ". Every shipped perfect-fit autoencoder "
        "(train MSE < 1e-10 in the manifest), its training and held-out images, `refinv "
        "evaluate` with the defaults, 3 masks (`random:0.5,center:S,rows:2`, S = 9 / 6 / 3 "
        "for 25-28 / 16 / 8 pixels) x 3 methods x 2 splits. Sample-calls = images through "
        "the network, summed over the 18 runs; classes: accurate MSE < 1e-7, approximate < "
        "5e-4, not. CPU: one fresh process each (user + system), a shared machine.",
        "",
        "| model | kind | sample-calls before | after | after / before | blind | known | "
        "AE it. | classes (acc / approx / not) | unchanged | CPU s before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        pm = r["per_method"]
        part = " | ".join(
            _pct(pm[m]["after"] / pm[m]["before"]) if m in pm else "-"
            for m in ("blind", "known", "ae-iterations")
        )
        cb = r["classes_before"]
        k = r["changes_by_kind"]
        unchanged = (
            "yes"
            if r["classes_unchanged"]
            else f"{len(r['changes'])} changed ({k['better']} better, {k['threshold']} at a "
            f"threshold, {k['lost']} lost)"
        )
        lines.append(
            f"| `{r['model']}` | {r['kind']} | {r['calls_before']:,} | {r['calls_after']:,} | "
            f"{_pct(r['ratio'])} | {part} | {cb['accurate']} / {cb['approximate']} / "
            f"{cb['not']} | {unchanged} | {r['cpu_s_before']:.1f} / {r['cpu_s_after']:.1f} |"
        )
    t = doc["total"]
    lines.append(
        f"| all | | {t['calls_before']:,} | {t['calls_after']:,} | {_pct(t['ratio'])} | | | | | | |"
    )
    lines += [
        "",
        "Per-method columns: sample-calls after / before of that method's 6 runs. A changed "
        "class is *better* when the image stopped as converged in a better class than the "
        "full budget left it (the old rule ran on and the iterate drifted off), *at a "
        "threshold* when both MSEs are within a factor 4 of the class boundary crossed (an "
        "image that never converges, whose class at the end of the budget is a draw), "
        "*lost* otherwise (a worse class by more than that: a late convergence the new rule "
        "gave up on, or an orbit whose MSE swings over decades).",
    ]
    changed = [(r["model"], c) for r in doc["rows"] for c in r["changes"]]
    if changed:
        lines += [
            "",
            "Images whose class changed (before -> after; MSE; iterations; the new stop reason):",
            "",
            "| model | run | image | class | MSE before / after | iterations before / after "
            "| stop reason | kind |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for model, c in changed:
            mb = "null" if c["mse_before"] is None else f"{c['mse_before']:.2g}"
            ma = "null" if c["mse_after"] is None else f"{c['mse_after']:.2g}"
            lines.append(
                f"| `{model}` | {c['mask']} {c['split']} {c['method']} | {c['image']} | "
                f"{c['before']} -> {c['after']} | {mb} / {ma} | {c['iterations_before']} / "
                f"{c['iterations_after']} | {c['stop_reason_after']} | {c['kind']} |"
            )
    reasons: dict[str, int] = {}
    for r in doc["rows"]:
        for k, v in r["stop_reasons_after"].items():
            reasons[k] = reasons.get(k, 0) + v
    if reasons:
        lines += ["", "Stop reasons after, all runs: " + ", ".join(
            f"{k} {v:,}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])) + "."]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
