"""The audit's verdict on every shipped autoencoder and checkpoint (models/MANIFEST.json).

For each model: ``refinv.audit`` on its training images (the manifest's ``split``, e.g.
``train[:100]``) and the data set's held-out images, masks ``--masks`` (default
random:0.5), methods ``--methods`` (default blind,known), seed 0, stability on the first
20 images of each split; one JSON line per model with the verdict level, the settings
that carry it and their Holm-adjusted p-values, the extraction counts, the power, the
membership line and the CPU seconds. Resumable: models already in ``--out`` are skipped.

Usage::

    OPENBLAS_NUM_THREADS=1 python bench/audit_verdicts.py --out verdicts.jsonl
    python bench/audit_verdicts.py --render verdicts.jsonl     # the Markdown table
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import time
from pathlib import Path

import common  # noqa: F401  (pins BLAS threads through the environment)
import numpy as np
from common import MODELS


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _images(f, dataset: str, split: str, fallback: str):
    from refinv.io import load_images_for

    path = MODELS / dataset.split(" ")[0]
    m = re.fullmatch(r"(\w+)(?:\[:(\d+)\])?", split or fallback)
    key, n = (m.group(1), m.group(2)) if m else (fallback, None)
    x = load_images_for(f, path, key)
    return x if n is None else x[: int(n)], f"{path.name}:{key}" + (f"[:{n}]" if n else "")


def audit_one(rel: str, entry: dict, masks: list[str], methods: list[str]) -> dict:
    import refinv
    from refinv import OnnxModel

    f = OnnxModel(MODELS / rel, intra_op_threads=1)
    base = entry if "dataset" in entry else {}
    x_tr, tr_spec = _images(f, base["dataset"], base.get("split", "train"), "train")
    x_te, te_spec = _images(f, base["dataset"], "test", "test")
    c0, t0 = _cpu(), time.perf_counter()
    doc = refinv.audit((Path(rel).stem, f), x_tr, x_te, masks=masks, methods=methods,
                       progress=False, data_specs=(tr_spec, te_spec))  # fmt: skip
    v = doc["verdict"]
    return {
        "model": rel,
        "train_mse": entry.get("train_mse"),
        "train": tr_spec,
        "test": te_spec,
        "level": v["level"],
        "carried_by": v["carried_by"],
        "tests": [
            {k: t[k] for k in ("mask", "method", "criterion", "train", "test", "p_adjusted")}
            for t in v["tests"]
        ],  # fmt: skip
        "power": v["power"],
        "membership_inferable": v["membership_inferable"],
        "membership_tests": v["membership_tests"],
        "cpu_seconds": round(_cpu() - c0, 1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


def _p(p: float) -> str:
    return f"{p:.1g}" if p >= 1e-4 else f"{p:.0e}"


def render(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = [
        "| model | train MSE | n train / held-out | verdict | carried by (Holm-adjusted p) | "
        "headline test: extracted train / held-out | power (min. detectable rate) | membership "
        "(AUC, Holm-adjusted p) | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n_tr, n_te = r["tests"][0]["train"]["n"], r["tests"][0]["test"]["n"]
        if r["carried_by"]:
            carried = ", ".join(f"{c['method']} {c['mask']} {_p(c['p_adjusted'])}"
                                for c in r["carried_by"])  # fmt: skip
        else:
            carried = "-"
        # the headline's test: the first that carries the verdict, else the headline
        # setting's approximate test
        pw_ = r["power"]
        head = r["carried_by"][0] if r["carried_by"] else next(
            t for t in r["tests"] if (t["mask"], t["method"], t["criterion"])
            == (pw_["mask"], pw_["method"], "approximate"))  # fmt: skip
        ex = (f"{head['criterion']} {head['method']}: {head['train']['extracted']} / "
              f"{head['test']['extracted']}")  # fmt: skip
        pw = r["power"]["min_detectable_rate"]
        mem = [t for t in r["membership_tests"] if t["significant"]]
        mtxt = ("inferable: " + ", ".join(f"{t['score']} {t['auc']:.2f} ({_p(t['p_adjusted'])})"
                                          for t in mem)) if mem else "not inferable"  # fmt: skip
        out.append(
            f"| {Path(r['model']).stem} | {r['train_mse']:.1e} | {n_tr} / {n_te} | "
            f"**{r['level'].replace('_', ' ')}** | {carried} | {ex} | "
            f"{'none' if pw is None else f'{100 * pw:.0f}%'} | {mtxt} | {r['cpu_seconds']} |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="JSON lines, appended (resumable)")
    ap.add_argument("--render", type=Path, help="print the Markdown table of a JSON lines file")
    ap.add_argument("--masks", default="random:0.5")
    ap.add_argument("--methods", default="blind,known")
    ap.add_argument("--only", default="", help="substring filter on the model path")
    a = ap.parse_args(argv)
    if a.render:
        print(render(a.render))
        return 0
    if a.out is None:
        ap.error("--out or --render is required")
    manifest = json.loads((MODELS / "MANIFEST.json").read_text())["files"]
    done = set()
    if a.out.exists():
        done = {json.loads(line)["model"] for line in a.out.read_text().splitlines() if line}
    for rel, entry in manifest.items():
        if entry.get("kind") != "autoencoder" or rel in done or a.only not in rel:
            continue
        if "dataset" not in entry and "checkpoint_of" in entry:
            entry = {**manifest[entry["checkpoint_of"]], **entry}
        print(f"audit {rel} ...", file=sys.stderr, flush=True)
        row = audit_one(rel, entry, a.masks.split(","), a.methods.split(","))
        with open(a.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"  {row['level']} ({row['cpu_seconds']} CPU s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
