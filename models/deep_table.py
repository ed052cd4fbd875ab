"""Recovery tables of the deep fully connected autoencoders (Abitbul and Dar, 2023, Sec. 4, App. D.2).

For each model: rho is tuned per architecture, as the paper's App. D.2 does,
on the first ``--tune-images`` images of ``--tune-on`` (``train``: the
training images, in-sample, as the perfect-fit tables did; ``val``: the data
file's validation split, never trained on and not in the table) by blind
recovery at random:0.5 for rho in ``--rhos`` (best accurate rate, ties broken
by the approximate rate, then by the mean PSNR); then
``refinv.memorization_report`` runs blind, known-mask and AE-iterations
recovery with that rho on every training image and the first ``--n-test``
held-out images (default all), for each mask, with the model-free control
(biharmonic inpainting of the same degraded images) beside every rate, and
for the checkpoints of the same run (``--checkpoints-mask`` only). One JSON
line per model is appended to ``--json``; a markdown table is printed.

    OPENBLAS_NUM_THREADS=1 python models/deep_table.py \\
        models/onnx/digits28_lrelu_10L128.onnx --json models/logs/deep/tables.jsonl
    OPENBLAS_NUM_THREADS=1 python models/deep_table.py --tune-on val --tune-images 100 \\
        --masks random:0.5,center:6,rows:2 \\
        models/onnx/natural16_lrelu_20L128_n1200.onnx --json models/logs/deep/natural.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from refinv import OnnxModel, memorization_report
from refinv.io import load_images

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "MANIFEST.json"


def split_key(split: str) -> str:
    return split.split("[")[0]


def load_for(path: Path, f: OnnxModel, n_test: int | None = None):
    rec = json.loads(MANIFEST.read_text())["files"][str(path.resolve().relative_to(HERE))]
    data = HERE / rec["dataset"]
    key = split_key(rec["split"])
    train = load_images(data, key, sample_shape=f.sample_shape)
    train = train[: rec["n_train"]]
    test = load_images(data, "test", sample_shape=f.sample_shape)[:n_test]
    return rec, data, train, test


def tune_rho(f, train, rhos, k, solver):
    scores = {}
    for rho in rhos:
        doc = memorization_report(
            f, train[:k], None, masks=["random:0.5"], methods=["blind"],
            solver=dict(solver, rho=rho), progress=False, control=False,
        )  # fmt: skip
        r = doc["runs"][0]
        scores[rho] = (r["accurate_rate"], r["approximate_rate"], r["mean_psnr"])
    best = max(rhos, key=lambda r: scores[r])
    return best, {str(k_): list(v) for k_, v in scores.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--report", nargs="+", type=Path, default=None,
                    help="print the markdown tables of these JSON-lines files and exit")  # fmt: skip
    ap.add_argument("--masks", default="random:0.5,center:9,rows:2")
    ap.add_argument("--rhos", default="0.25,0.5,1,2")
    ap.add_argument("--tune-images", type=int, default=20)
    ap.add_argument(
        "--tune-on",
        choices=("train", "val"),
        default="train",
        help="the images rho is chosen on (val: the data file's 'val' split)",
    )
    ap.add_argument("--n-test", type=int, default=None, help="first N held-out images")
    ap.add_argument("--checkpoints", nargs="*", type=Path, default=None,
                    help="checkpoints of the (single) model, lowest loss last")  # fmt: skip
    ap.add_argument("--checkpoints-mask", default="random:0.5")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.report:
        rows = [json.loads(line) for p in a.report for line in p.read_text().splitlines() if line]
        print(report(rows, a.masks.split(",")))
        return
    if not a.models or a.json is None:
        ap.error("give MODEL.onnx ... and --json OUT.jsonl (or --report FILE.jsonl ...)")
    rhos = [float(r) for r in a.rhos.split(",")]
    masks = a.masks.split(",")
    solver = {}
    for path in a.models:
        t0 = time.process_time()
        f = OnnxModel(path, intra_op_threads=1)
        rec, data, train, test = load_for(path, f, a.n_test)
        tune = (
            train if a.tune_on == "train" else load_images(data, "val", sample_shape=f.sample_shape)
        )
        rho, scores = tune_rho(f, tune, rhos, a.tune_images, solver)
        methods = ["blind", "known", "ae-iterations"]
        doc = memorization_report(
            [(path.stem, f)], train, test, masks=masks, methods=methods,
            solver=dict(solver, rho=rho), progress=False,
        )  # fmt: skip
        row = dict(model=str(path.relative_to(HERE)) if path.is_absolute() else str(path),
                   n_train=int(train.shape[0]), n_test=int(test.shape[0]),
                   train_mse=rec["train_mse"], test_mse=rec["test_mse"],
                   attractor_fraction=rec.get("attractor_fraction"), rho=rho, rho_scores=scores,
                   rho_tuned_on=f"{a.tune_on}[:{a.tune_images}]", rates={}, control={})  # fmt: skip
        for r in doc["runs"]:
            row["rates"][f"{r['mask']}/{r['method']}/{r['split']}"] = [
                r["accurate_rate"],
                r["approximate_rate"],
                r["mean_psnr"],
            ]
        for c in (doc["control"] or {}).get("runs", []):
            row["control"][f"{c['mask']}/{c['split']}"] = [
                c["accurate_rate"], c["approximate_rate"], c["mean_psnr"],
            ]  # fmt: skip
        if a.checkpoints:
            cks = [(p.stem, OnnxModel(p, intra_op_threads=1)) for p in a.checkpoints]
            cdoc = memorization_report(
                cks, train, test, masks=[a.checkpoints_mask], methods=methods,
                solver=dict(solver, rho=rho), progress=False, control=False,
            )  # fmt: skip
            row["checkpoints"] = [
                dict(
                    label=c["label"],
                    train_loss=c["train_loss"],
                    rates={
                        f"{r['method']}/{r['split']}": [r["accurate_rate"], r["approximate_rate"]]
                        for r in cdoc["runs"]
                        if r["checkpoint"] == c["label"]
                    },
                )  # fmt: skip
                for c in cdoc["checkpoints"]
            ]
        row["cpu_seconds"] = round(time.process_time() - t0, 1)
        with open(a.json, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(markdown([row], masks), flush=True)


def markdown(rows, masks):
    ctl = any(r.get("control") for r in rows)
    out = ["| model | n | train / held-out MSE | rho | mask | blind train | held-out | known train "
           "| held-out | AE-it. train | held-out |"
           + (" control train | held-out |" if ctl else ""),
           "|" + "---|" * (13 if ctl else 11)]  # fmt: skip
    for r in rows:
        for m in masks:
            cells = []
            for method in ("blind", "known", "ae-iterations"):
                for split in ("train", "test"):
                    acc, app, _ = r["rates"][f"{m}/{method}/{split}"]
                    cells.append(f"{100 * acc:.0f}% / {100 * app:.0f}%")
            if ctl:
                for split in ("train", "test"):
                    c = r.get("control", {}).get(f"{m}/{split}")
                    cells.append(f"{100 * c[0]:.0f}% / {100 * c[1]:.0f}%" if c else "-")
            out.append(f"| {Path(r['model']).stem} | {r['n_train']} | {r['train_mse']:.1e} / "
                       f"{r['test_mse']:.1e} | {r['rho']:g} | {m} | " + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(out)


def report(rows, masks):
    """Main table (every mask), rate vs train loss (checkpoints), and rho tuning."""
    held_acc = max([v[0] for r in rows for c in r.get("checkpoints", [])
                    for k, v in c["rates"].items() if k.endswith("/test")], default=0.0)  # fmt: skip
    out = [markdown(rows, masks), "", "Recovery vs train loss (accurate / approximate, training "
           f"images; the largest held-out ACCURATE rate at any checkpoint: {100 * held_acc:.0f}%):",
           "",
           "| model | checkpoint train MSE | blind | known | AE-it. | held-out blind / known |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        for c in r.get("checkpoints", []):
            cr = c["rates"]
            cells = [f"{100 * cr[f'{m}/train'][0]:.0f}% / {100 * cr[f'{m}/train'][1]:.0f}%"
                     for m in ("blind", "known", "ae-iterations")]  # fmt: skip
            held = f"{100 * cr['blind/test'][1]:.0f}% / {100 * cr['known/test'][1]:.0f}% (approx.)"
            out.append(f"| {Path(r['model']).stem} | {c['train_loss']:.1e} | " + " | ".join(cells)
                       + f" | {held} |")  # fmt: skip
    tuned = sorted({r.get("rho_tuned_on", "train[:20]") for r in rows})
    out += ["", f"rho tuning (blind, random:0.5, on {', '.join(tuned)}; accurate / approximate "
            "rate per rho):",
            "", "| model | " + " | ".join(f"rho {k}" for k in rows[0]["rho_scores"]) + " | chosen |",
            "|---|" + "---|" * (len(rows[0]["rho_scores"]) + 1)]  # fmt: skip
    for r in rows:
        out.append(f"| {Path(r['model']).stem} | "
                   + " | ".join(f"{100 * v[0]:.0f}% / {100 * v[1]:.0f}%" for v in r["rho_scores"].values())
                   + f" | {r['rho']:g} |")  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    main()
