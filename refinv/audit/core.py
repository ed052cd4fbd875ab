"""The audit: its plan, its run into the results store, its scores, its verdict and its
three files (``report.json``, ``per_image.csv``, ``report.html``).

The recoveries are the units of :func:`refinv.evaluation.report.memorization_report` for
the same settings (same seeds, same masks, same order), so ``document["recovery"]`` is the
document ``refinv evaluate`` writes. Every unit's result is kept in the store
``out/store.sqlite`` (the engine's, :mod:`refinv.engine.store`), one transaction per unit;
``resume=True`` runs only the units it lacks, so an interrupted audit continues where it
stopped and its report equals an uninterrupted run's (except the timings).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.metrics import ACCURATE_MSE, APPROXIMATE_MSE
from ..evaluation.runs import METHODS
from ..operators.masks import MaskSpec
from .plan import CONTROL, CONTROL_CHECKPOINT, STABILITY, AuditInputs, audit_plan, read_inputs
from .score import Scores, reconstruction_error, score

__all__ = ["AUDIT_SCHEMA_VERSION", "DEFAULT_MASKS", "audit", "per_image_rows", "write_outputs"]

log = logging.getLogger("refinv.audit")

AUDIT_SCHEMA_VERSION = 2
DEFAULT_MASKS = ("random:0.5", "center:9", "rows:2")
STORE = "store.sqlite"


# ------------------------------------------------------------------ the audit
def audit(
    model: Any,
    train: Any,
    test: Any,
    *,
    checkpoints: Sequence[Any] = (),
    masks: Sequence[str | MaskSpec] = DEFAULT_MASKS,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
    noise_std: float = 0.0,
    solver: dict | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    stability_n: int | None = 20,
    stability_method: str = "arnoldi",
    stability_tol: float = 1e-3,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    gallery: int = 6,
    files: dict | None = None,
    argv: Sequence[str] | None = None,
    command: str = "audit",
    data_specs: tuple[str | None, str | None] | None = None,
    started: float | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    shard_size: int | None = None,
    data_layout: str | None = None,
) -> dict:
    """Audit an autoencoder for memorization of its training images.

    The audit's steps: its plan (:func:`refinv.audit.plan.audit_plan`: the recoveries of
    every checkpoint, the control, the stability), the run of the units the store lacks
    (:func:`refinv.engine.execute.execute`), the scores (:func:`refinv.audit.score.score`),
    the verdict (:func:`refinv.audit.verdict.decide`), and the document and its files.

    Parameters
    ----------
    model : path to an ONNX autoencoder, an :class:`~refinv.onnx.OnnxModel` (or any
        callable on batches), or a ``(label, model)`` pair.
    train, test : the training and held-out images: arrays ``(N, *sample_shape)`` in
        [0, 1] or ``"DATA.npz:key"`` specs.
    checkpoints : more models of the same training run (as ``model``): the recovery
        rate vs train loss section and a membership AUC per checkpoint.
    masks, methods, seed, noise_std, solver : as in
        :func:`~refinv.evaluation.report.memorization_report` (same seeds, same masks).
    out : folder for ``report.json``, ``per_image.csv``, ``report.html`` and the results
        store ``store.sqlite``; None writes nothing (the store is temporary).
    resume : reuse the units of work ``out/store.sqlite`` holds (same models, images and
        settings); without it the store is started afresh.
    progress : a progress bar on stderr (None: when stderr is a TTY).
    stability_n : images per split for the local-stability score (the first ones; None:
        all). It costs about 500 model calls per image, one image at a time.
    stability_method, stability_tol : eigensolver and ARPACK tolerance of
        :func:`~refinv.evaluation.stability.pnp_admm_stability` (a score only ranks images,
        so 1e-3 is enough; the radii move by < 1e-3 from tol 1e-6 on the faces MLP).
    n_bootstrap, confidence : percentile-bootstrap intervals.
    gallery : how many of the most exposed training images the report shows.
    files : extra ``role -> path`` inputs for the provenance block.
    argv, started : the command line and the ``time.time()`` the work started at, for the
        provenance block (defaults: ``sys.argv``, now).
    data_specs : ``(train, test)`` as written in ``settings`` when arrays are given.
    workers, scheduler : run the units on a pool of ``workers`` processes, or on Dask
        (``scheduler="local"``: a LocalCluster of ``workers``; or a scheduler's address),
        as ``refinv sweep`` does; the models and images must then be files.
    shard_size : images per unit of work (default: a whole split per unit).
    data_layout : the layout of ``train``/``test`` given as files (``"NCHW"``, ``"NHWC"``,
        None: decided where unambiguous, :func:`refinv.io.load_images`).

    Returns
    -------
    dict
        The audit document (schema ``AUDIT_SCHEMA_VERSION``, docs/cli.md), the same
        that is written to ``out/report.json``.
    """
    from ._deps import require_audit_dependencies

    require_audit_dependencies()
    started = time.time() if started is None else started
    t0 = time.perf_counter()
    _check(n_bootstrap, confidence, shard_size)
    solver = dict(solver or {})
    inp = read_inputs(model, train, test, checkpoints, masks, methods, data_specs, data_layout)
    stab = _stability(inp, stability_n, solver, stability_method, stability_tol)
    plan = audit_plan(inp, seed=seed, noise_std=noise_std, solver=solver, stability=stab,
                      shard_size=shard_size, files=bool(scheduler) or workers > 1)  # fmt: skip
    settings = {"seed": int(seed), "noise_std": float(noise_std), "solver": solver,
                "stability": stab}  # fmt: skip
    with _store(out, resume) as store:
        summary = _run(plan, inp, store, settings, workers, scheduler, progress)
        found = _results(store, plan, inp, command, out is not None)
    stage = {"run": time.perf_counter() - t0}
    t1 = time.perf_counter()
    scored = score(found, inp, seed=seed, confidence=confidence, n_bootstrap=n_bootstrap,
                   stability=stab)  # fmt: skip
    doc = _document(inp, found, scored, _verdict(inp, found, scored), command=command,
                    stab=stab, n_bootstrap=n_bootstrap, confidence=confidence,
                    gallery=gallery)  # fmt: skip
    stage["score"] = time.perf_counter() - t1
    doc["timing"] = {"seconds": round(time.perf_counter() - t0, 3),
                     "stages": {k: round(v, 3) for k, v in stage.items()},
                     "cached_units": summary.skipped, "computed_units": summary.done}  # fmt: skip
    doc["provenance"] = _provenance(inp, files, argv, started)
    if out is not None:
        _render(doc, out, found, scored, inp)
    return doc


def _stability(inp: AuditInputs, n: int | None, solver: dict, method: str, tol: float):
    """The stability score's settings: the first ``n`` images of each split (None: all), and
    the relative accuracy of its radii (:func:`~refinv.evaluation.stability.radius_rtol`)."""
    from ..evaluation.stability import radius_rtol

    n = len(inp.images["train"]) if n is None else int(n)
    dtype = getattr(inp.main[1], "dtype", inp.images["train"].dtype)
    return {"n": min(n, *(len(x) for x in inp.images.values())),
            "rho": float(solver.get("rho") or 0.5), "method": method, "tol": tol,
            "tie_rtol": radius_rtol(method, tol=tol, eps=1e-3, dtype=dtype)}  # fmt: skip


def _check(n_bootstrap: int, confidence: float, shard_size: int | None) -> None:
    from ..errors import ConfigError

    if n_bootstrap < 1:
        raise ConfigError(f"n_bootstrap: expected a positive count, got {n_bootstrap}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence: expected a number in (0, 1), got {confidence}")
    if shard_size is not None and shard_size < 1:
        raise ConfigError(f"shard_size: expected a positive count, got {shard_size}")


# ------------------------------------------------------------------ run
@contextlib.contextmanager
def _store(out: str | Path | None, resume: bool):
    """The audit's store: ``out/store.sqlite`` (started afresh without ``resume``), or a
    temporary one when nothing is written."""
    import tempfile

    from ..engine.store import Store

    if out is None:
        with tempfile.TemporaryDirectory(prefix="refinv-audit-") as tmp:
            with Store(Path(tmp) / STORE) as st:
                yield st
        return
    path = Path(out) / STORE
    if not resume:
        for p in (path, path.with_name(STORE + "-wal"), path.with_name(STORE + "-shm")):
            p.unlink(missing_ok=True)
    with Store(path) as st:
        yield st


def _run(plan, inp: AuditInputs, store, settings: dict, workers, scheduler, progress):
    """Record the settings and the checkpoints' losses, then run the units the store lacks."""
    import json

    from ..engine.execute import execute
    from ..engine.plan import json_default
    from ..evaluation.report import checkpoint_entry

    # units are keyed by their content: an audit resumed with other settings reuses those
    # that do not depend on them and replaces the others (so no settings fingerprint here)
    text = json.dumps(settings, sort_keys=True, default=json_default)
    store.init_sweep({"command": "audit"}, "audit", [m.text for m in inp.masks],
                     inp.methods)  # fmt: skip
    store.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('audit', ?)", (text,))
    for label, f, _ in inp.models:  # the losses measured on these images, every time
        store.add_checkpoint(checkpoint_entry(label, f, inp.images["train"],
                                              inp.images["test"]), refresh=True,
                             other_model=True)  # fmt: skip
    from ..evaluation.runs import warn_unit_diverged

    def warn(unit, out):  # one DivergenceWarning per recovery with diverged images
        warn_unit_diverged(unit, out, settings["solver"], stacklevel=6)

    return execute(plan.units, store, objects=plan.objects, workers=workers,
                   scheduler=scheduler, bar=progress, desc="refinv audit",
                   on_error="raise", on_done=warn, replace=True)  # fmt: skip


@dataclass
class Found:
    """An audit's results, read from its store: the recoveries' report document, the
    control's per-image PSNR (and inpaintings), the stability radii, the reconstruction
    errors, the main model's estimates (for the gallery), the headline setting."""

    recovery: dict
    control_runs: list
    control_psnr: dict
    control_x: dict
    radius: dict
    recon: dict
    arrays: dict
    primary: tuple


def _results(store, plan, inp: AuditInputs, command: str, images: bool) -> Found:
    from ..evaluation.report import new_document, report_from_store

    base = new_document(command=command, seed=plan.units[0].seed,
                        noise_std=plan.units[0].noise_std, masks=inp.masks,
                        methods=inp.methods, solver=plan.units[0].solver)  # fmt: skip
    groups = [g for g in plan.groups if g[2] in METHODS]
    ids = {u.task_id for u in plan.units}
    rec = report_from_store(store, base, groups, ids)
    rec["settings"]["train"], rec["settings"]["test"] = inp.specs["train"], inp.specs["test"]
    units = {}
    for u in sorted(plan.units, key=lambda u: u.start):
        units.setdefault((u.checkpoint, u.mask, u.method, u.split), []).append(u)
    primary = (inp.masks[0].text, "blind" if "blind" in inp.methods else inp.methods[0])
    control_psnr = {(g[1], g[3]): np.asarray(r["psnr"]) for g, r in
                    zip(_groups(units, CONTROL), _control_rows(store, units, ids),
                        strict=True)}  # fmt: skip
    radius = {s: _concat(store, units[(inp.main[0], inp.masks[0].text, STABILITY, s)],
                         "radius") for s in inp.images}  # fmt: skip
    recon = {label: {s: reconstruction_error(f, x) for s, x in inp.images.items()}
             for label, f, _ in inp.models}  # fmt: skip
    found = Found(rec, [], control_psnr, {}, radius, recon, {}, primary)
    if images:
        _gallery_arrays(found, store, units, inp)
    return found


def _groups(units: dict, method: str) -> list[tuple]:
    return [g for g in units if g[2] == method]


def _control_rows(store, units: dict, ids: set) -> list[dict]:
    """The control's per-image PSNR of each (mask, split), from the plan's stored rows."""
    rows: dict[tuple, list] = {}
    for r in store.results():
        if r["method"] == CONTROL and r["task_id"] in ids:
            rows.setdefault((r["checkpoint"], r["mask"], r["method"], r["split"]), []).append(r)
    return [{"psnr": [r["psnr"] for r in sorted(rows.get(g, []), key=lambda r: r["sample"])]}
            for g in _groups(units, CONTROL)]  # fmt: skip


def _concat(store, units: list, name: str) -> np.ndarray:
    parts = [store.arrays(u.task_id, (name,)).get(name) for u in units]
    return np.concatenate([p for p in parts if p is not None]) if parts else np.zeros(0)


def _gallery_arrays(found: Found, store, units: dict, inp: AuditInputs) -> None:
    """The main model's estimates and the control's inpaintings of every image (from the
    store), with the degraded images and masks drawn again (the same seed, the same
    draws), as the gallery shows them."""
    from ..evaluation.runs import degrade

    label0 = inp.main[0]
    seed, noise = next(iter(units.values()))[0].seed, next(iter(units.values()))[0].noise_std
    for spec in inp.masks:
        for s, x in inp.images.items():
            y, mask = degrade(x, spec, seed=seed, noise_std=noise)
            ctl = units[(CONTROL_CHECKPOINT, spec.text, CONTROL, s)]
            found.control_x[(spec.text, s)] = _concat(store, ctl, "x_hat_all")
            for me in inp.methods:
                us = units[(label0, spec.text, me, s)]
                h = _concat(store, us, "h_est_all") if me == "blind" else np.zeros((0,), np.uint8)
                found.arrays[(spec.text, me, s)] = {
                    "x_hat": _concat(store, us, "x_hat_all").astype(np.float32),
                    "y": np.asarray(y, dtype=np.float32),
                    "mask": np.asarray(mask, dtype=np.uint8), "h_est": h.astype(np.uint8),
                }  # fmt: skip


# ------------------------------------------------------------------ verdict and document
def _verdict(inp: AuditInputs, found: Found, scored: Scores) -> dict:
    from .verdict import decide, extraction_tests, gain_tests

    label0 = inp.main[0]
    return decide(
        extraction_tests(scored.cols, found.control_psnr, scored.settings),
        gain_tests(scored.cols, found.control_psnr, scored.settings),
        scored.membership["scores"],
        found.primary,
        observed_fraction={
            r["mask"]: 1.0 - r["erased_fraction"]
            for r in found.recovery["runs"] if r["checkpoint"] == label0 and r["split"] == "train"
        },
    )  # fmt: skip


def _control_section(found: Found, inp: AuditInputs, confidence, n_bootstrap, seed) -> dict:
    from ..evaluation.control import CONTROL_METHOD
    from .stats import clopper_pearson, mean_interval

    runs = []
    for spec in inp.masks:
        for split in inp.images:
            psnr_c = found.control_psnr[(spec.text, split)]
            k_acc = int(np.sum(10 ** (-np.asarray(psnr_c) / 10) < ACCURATE_MSE))
            k_app = int(np.sum(10 ** (-np.asarray(psnr_c) / 10) < APPROXIMATE_MSE))
            runs.append({
                "mask": spec.text, "split": split, "n": int(len(psnr_c)),
                "mean_psnr": float(np.mean(psnr_c)),
                "mean_psnr_ci": mean_interval(psnr_c, confidence, n_bootstrap=n_bootstrap,
                                              seed=seed),
                "accurate_rate": k_acc / len(psnr_c),
                "accurate_rate_ci": clopper_pearson(k_acc, len(psnr_c), confidence),
                "approximate_rate": k_app / len(psnr_c),
                "approximate_rate_ci": clopper_pearson(k_app, len(psnr_c), confidence),
                "psnr": [float(v) for v in psnr_c],
            })  # fmt: skip
    return {"method": CONTROL_METHOD,
            "note": "classical and offline; the paper used a diffusion inpainter in this role",
            "runs": runs}  # fmt: skip


def _document(inp, found, scored, verdict, *, command, stab, n_bootstrap, confidence,
              gallery) -> dict:  # fmt: skip
    rec = found.recovery
    seed = rec["settings"]["seed"]
    gain_tr = scored.per_image["train"]["best_gain"]
    order = np.lexsort((scored.per_image["train"]["best_mse"],
                        -np.nan_to_num(gain_tr, nan=-np.inf)))  # fmt: skip
    gallery_idx = [int(i) for i in order[: min(gallery, len(inp.images["train"]))]]
    return {
        "schema": "refinv.audit", "schema_version": AUDIT_SCHEMA_VERSION, "tool": "refinv",
        "refinv_version": rec["refinv_version"], "command": command,
        "created_utc": rec["created_utc"], "model": inp.main[0],
        "settings": _settings(inp, rec, found, stab, n_bootstrap, confidence, len(gallery_idx)),
        "verdict": verdict,
        "recovery": rec,
        "intervals": scored.intervals,
        "exposure": _exposure(scored.per_image, gallery_idx),
        "membership": scored.membership,
        "control": _control_section(found, inp, confidence, n_bootstrap, seed),
        "timing": {},
    }  # fmt: skip


def _settings(inp, rec, found, stab, n_bootstrap, confidence, n_gallery) -> dict:
    return {
        "seed": rec["settings"]["seed"], "noise_std": rec["settings"]["noise_std"],
        "masks": [s.text for s in inp.masks], "methods": inp.methods,
        "solver": rec["settings"]["solver"],
        "train": inp.specs["train"], "test": inp.specs["test"],
        "checkpoints": [lab for lab, _, _ in inp.models[1:]],
        "primary": {"mask": found.primary[0], "method": found.primary[1]},
        "stability": {"n": stab["n"], "rho": stab["rho"], "method": stab["method"],
                      "tol": stab["tol"], "eps": 1e-3, "tie_rtol": stab["tie_rtol"]},
        "bootstrap": {"n": int(n_bootstrap), "confidence": float(confidence),
                      "method": "BCa bootstrap of the mean PSNR, images resampled with "
                      "replacement"},
        "intervals": {"rates": "Clopper-Pearson (exact binomial)",
                      "auc": "Newcombe (2006) score interval, method 5",
                      "mean_psnr": "BCa bootstrap", "confidence": float(confidence)},
        "gallery": n_gallery,
    }  # fmt: skip


def _exposure(per_image: dict, gallery_idx: list[int]) -> dict:
    def split(s):
        pi = per_image[s]
        return {
            "n": len(pi["best_mse"]),
            "exposed": int(pi["exposed"].sum()),
            "exposed_indices": [int(i) for i in np.flatnonzero(pi["exposed"])],
            "approximate": int(pi["approx"].sum()),
            "approximate_indices": [int(i) for i in np.flatnonzero(pi["approx"])],
            "median_best_gain_db": float(np.median(pi["best_gain"])),
        }

    return {
        "definition": "An image is exposed (extracted exactly) when at least one (mask, method) "
        f"recovers it with MSE < {ACCURATE_MSE:g} and closer than the model-free control; "
        f"approximately when MSE < {APPROXIMATE_MSE:g} (PSNR > 33 dB) and closer than the "
        "control",
        "train": split("train"),
        "test": split("test"),
        "gallery_indices": gallery_idx,
        "gallery_order": "largest PSNR gain of the model's recovery over the control (best "
        "setting), then the lowest MSE",
    }


def _provenance(inp: AuditInputs, files, argv, started) -> dict:
    from ..provenance import provenance

    prov_files = {"model": inp.main[2],
                  "train": inp.paths["train"][0] if inp.paths["train"] else None,
                  "test": inp.paths["test"][0] if inp.paths["test"] else None}  # fmt: skip
    for i, (_, _, p) in enumerate(inp.models[1:], 1):
        prov_files[f"checkpoint_{i}"] = p
    prov_files.update(files or {})
    return provenance(prov_files, argv=argv, started=started)


def _render(doc: dict, out, found: Found, scored: Scores, inp: AuditInputs) -> None:
    t1 = time.perf_counter()
    figures = _figures(doc, found.arrays, found.control_x, inp.images["train"],
                       inp.images["test"], scored.per_image, scored.scores)  # fmt: skip
    doc["timing"]["stages"]["figures"] = round(time.perf_counter() - t1, 3)
    write_outputs(doc, out, figures=figures, per_image=scored.per_image, scores=scored.scores)


# ------------------------------------------------------------------ outputs
def per_image_rows(doc: dict, per_image: dict, scores: dict) -> tuple[list[str], list[list]]:
    """Header and rows of ``per_image.csv`` (one row per image of both splits)."""
    settings = [(m, me) for m in doc["settings"]["masks"] for me in doc["settings"]["methods"]]
    ctrl = {(c["mask"], c["split"]): c["psnr"] for c in doc["control"]["runs"]}
    header = ["split", "index"]
    for m, me in settings:
        header += [f"mse[{me}|{m}]", f"psnr[{me}|{m}]"]
    header += [f"control_psnr[{m}]" for m in doc["settings"]["masks"]]
    header += ["best_mse", "best_psnr", "best_setting", "best_gain_over_control_db",
               "extraction", "exposed", "exposed_settings", "approximately_exposed",
               "score_recovery", "score_reconstruction", "score_stability"]  # fmt: skip
    rows = []
    for split in ("train", "test"):
        pi = per_image[split]
        n = len(pi["best_mse"])
        for i in range(n):
            row: list = [split, i]
            for key in settings:
                m, p = pi["cols"][key]
                row += [_num(m[i]), _num(p[i])]
            row += [_num(ctrl[(m, split)][i]) for m in doc["settings"]["masks"]]
            bs = pi["best_setting"][i]
            best_psnr = max(pi["cols"][bs][1][i], 0.0) if bs is not None else 0.0
            row += [_num(pi["best_mse"][i]), _num(best_psnr),
                    f"{bs[1]}|{bs[0]}" if bs is not None else "", _num(pi["best_gain"][i]),
                    str(pi["level"][i]),
                    "yes" if pi["exposed"][i] else "no", int(pi["n_settings_exposed"][i]),
                    "yes" if pi["approx"][i] else "no"]  # fmt: skip
            for name in ("recovery", "reconstruction", "stability"):
                s = scores[name][split]
                row.append(_num(s[i]) if i < len(s) else "")
            rows.append(row)
    return header, rows


def _num(v) -> str:
    v = float(v)
    return "" if not np.isfinite(v) else f"{v:.6g}"


def write_outputs(
    doc: dict, out: str | Path, *, figures: dict, per_image: dict, scores: dict
) -> dict:
    """Write ``report.json``, ``per_image.csv`` and ``report.html`` into ``out`` (atomically)."""
    from ..io import atomic_write_json, atomic_write_text
    from .html import render_html

    out = Path(out)
    doc["files"] = {"json": "report.json", "csv": "per_image.csv", "html": "report.html"}
    header, rows = per_image_rows(doc, per_image, scores)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(out / "per_image.csv", buf.getvalue())
    atomic_write_text(out / "report.html", render_html(doc, figures))
    atomic_write_json(out / "report.json", doc)
    return doc["files"]


def _figures(doc, arrays, control_x, x_train, x_test, per_image, scores) -> dict[str, bytes]:
    from . import figures as fg

    figs = {
        "roc": fg.roc_figure(doc["membership"]["scores"]),
        "exposure": fg.exposure_figure(doc, per_image),
        "control": fg.control_figure(doc),
        "gallery": fg.gallery_figure(doc, arrays, control_x, x_train, x_test, per_image),
    }
    if len(doc["recovery"]["checkpoints"]) > 1:
        figs["rate_vs_loss"] = fg.rate_vs_loss_figure(doc)
    return figs
