"""The audit: recoveries (the memorization report), per-image exposure, membership
inference, the generic-inpainting control, and the three files of ``out``.

The recoveries are the runs of :func:`refinv.evaluation.report.memorization_report`,
built from the same pieces (:func:`~refinv.evaluation.report.new_document`,
:func:`~refinv.evaluation.report.checkpoint_entry`,
:func:`~refinv.evaluation.report.evaluate_split`), in the same order and with the
same seeds, so ``document["recovery"]`` is the document ``refinv evaluate`` writes
for the same settings. Each finished run is cached atomically in ``out/cache/``
(keyed by the model, the images and every setting); ``resume=True`` reuses the
cached runs, so an interrupted audit continues where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from ..evaluation.metrics import ACCURATE_MSE, APPROXIMATE_MSE
from ..evaluation.report import (
    METHODS,
    checkpoint_entry,
    degrade,
    evaluate_split,
    method_options,
    new_document,
    recovery_metrics,
)
from ..operators.masks import MaskSpec, parse_mask, pixel_shape

__all__ = ["AUDIT_SCHEMA_VERSION", "DEFAULT_MASKS", "audit", "per_image_rows", "write_outputs"]

log = logging.getLogger("refinv.audit")

AUDIT_SCHEMA_VERSION = 1
DEFAULT_MASKS = ("random:0.5", "center:9", "rows:2")
_CACHE_FORMAT = 1


# ------------------------------------------------------------------ inputs
def _open(model: Any, index: int) -> tuple[str, Any, str | None]:
    """``(label, model, path or None)`` from a path, an OnnxModel/callable or a pair."""
    if isinstance(model, (str, Path)):
        from ..onnx import OnnxModel

        f = OnnxModel(model)
        if not f.is_autoencoder:
            raise ConfigError(
                f"{model}: not an autoencoder: input sample shape {f.sample_shape}, output "
                f"{f.output_sample_shape}; recovery needs output shape == input shape"
            )
        return Path(model).stem, f, str(model)
    if isinstance(model, tuple) and len(model) == 2:
        label, f = model
        return str(label), f, getattr(f, "path", None)
    return str(getattr(model, "label", f"model{index}")), model, None


def _images(data: Any, f: Any, default_key: str) -> tuple[np.ndarray, str | None, str | None]:
    """``(images, spec, path)`` from an array or a ``"DATA.npz:key"`` spec."""
    if isinstance(data, (str, Path)):
        from ..io import load_images_for, parse_data_spec

        path, key = parse_data_spec(str(data), default_key)
        return load_images_for(f, path, key), f"{path}:{key}", str(path)
    return np.asarray(data), None, None


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _array_sha(x: np.ndarray) -> str:
    a = np.ascontiguousarray(x)
    return hashlib.sha256(str((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()


def _model_id(f: Any, label: str) -> str:
    return getattr(f, "sha256", None) or f"callable:{label}"


# ------------------------------------------------------------------ cache
class _Cache:
    """One ``.npz`` per finished unit of work in ``out/cache``, written atomically."""

    def __init__(self, out: Path | None, resume: bool):
        self.dir = None if out is None else Path(out) / "cache"
        self.resume = resume
        self.hits = 0
        self.misses = 0

    def _path(self, key: dict) -> Path | None:
        if self.dir is None:
            return None
        return self.dir / f"{key['kind']}-{_fingerprint({**key, 'v': _CACHE_FORMAT})[:24]}.npz"

    def get(self, key: dict, check: Any = None) -> Any:
        """The cached arrays of ``key``, or ``check(arrays)`` (what the caller uses of them;
        it raises or returns None when they are not what this unit writes); None: compute."""
        p = self._path(key)
        if p is None or not self.resume or not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                got = {k: z[k] for k in z.files}
        except Exception:  # a damaged cache file is recomputed, never trusted
            log.warning("audit: unreadable cache file %s: recomputing it", p)
            return None
        if check is not None:
            try:
                got = check(got)
            except Exception:  # noqa: BLE001 - readable, other contents: recomputed too
                got = None
            if got is None:
                log.warning("audit: cache file %s holds other contents: recomputing it", p)
                return None
        self.hits += 1
        return got

    def put(self, key: dict, **arrays: np.ndarray) -> None:
        self.misses += 1
        p = self._path(key)
        if p is not None:
            from ..io import atomic_save_npz

            atomic_save_npz(p, **arrays)


def _cached_run(got: dict, x: np.ndarray, pshape: tuple, **run: Any) -> tuple | None:
    """``(entry, arrays)`` of a cached run if they are exactly what this run writes: the
    entry rebuilt by ``run_entry`` from its own per-sample lists equals it (types, lengths,
    rates, labels), and the arrays have this run's shapes and dtypes."""
    from ..evaluation.report import run_entry

    entry = json.loads(str(got["entry"]))
    keys = ("psnr", "iterations", "converged", "diverged", "residual", "erased_fraction",
            "mask_error", "seconds", "onnx_seconds")  # fmt: skip
    mse = [np.nan if v is None else v for v in entry["mse"]]
    again = run_entry(**run, mse=mse, **{k: entry[k] for k in keys})
    n, blind = len(x), run["method"] == "blind"
    want = {"x_hat": (x.shape, np.float32), "y": (x.shape, np.float32),
            "mask": ((n, *pshape), np.uint8),
            "h_est": ((n, *pshape) if blind else (0,), np.uint8)}  # fmt: skip
    a = {k: got[k] for k in want}
    same = json.dumps(again, sort_keys=True) == json.dumps(entry, sort_keys=True)
    if not same or again["n"] != n or any((a[k].shape, a[k].dtype) != w for k, w in want.items()):
        return None
    return entry, a


def _cached_vector(got: dict, name: str, n: int) -> np.ndarray | None:
    """The cached float vector ``name`` of ``n`` values, or None."""
    v = got[name]
    return v if v.shape == (n,) and v.dtype == np.float64 else None


# ------------------------------------------------------------------ statistics
def _boot_idx(n: int, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(n, size=(n_bootstrap, n)) if n else np.zeros((n_bootstrap, 0), int)


def _run_intervals(run: dict, n_bootstrap: int, seed: int, confidence: float) -> dict:
    from .membership import bootstrap_interval

    n = run["n"]
    m = np.array([np.inf if v is None else v for v in run["mse"]], dtype=np.float64)
    p = np.asarray(run["psnr"], dtype=np.float64)
    out = {k: run[k] for k in ("checkpoint", "mask", "method", "split", "n")}
    if n == 0:
        out.update(
            accurate_rate=[None, None], approximate_rate=[None, None], mean_psnr=[None, None]
        )
        return out
    idx = _boot_idx(n, n_bootstrap, np.random.default_rng([seed, 4]))
    out["accurate_rate"] = bootstrap_interval(np.mean(m[idx] < ACCURATE_MSE, axis=1), confidence)
    out["approximate_rate"] = bootstrap_interval(
        np.mean(m[idx] < APPROXIMATE_MSE, axis=1), confidence
    )
    out["mean_psnr"] = bootstrap_interval(np.mean(p[idx], axis=1), confidence)
    return out


def _mean_ci(values: np.ndarray, n_bootstrap: int, seed: int, confidence: float) -> list:
    from .membership import bootstrap_interval

    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return [None, None]
    idx = _boot_idx(v.size, n_bootstrap, np.random.default_rng([seed, 5]))
    return bootstrap_interval(np.mean(v[idx], axis=1), confidence)


def _reconstruction_error(f: Any, x: np.ndarray) -> np.ndarray:
    """Per-image ``||f(x) - x||^2 / n`` on the clean images (the loss-threshold attack)."""
    out = np.asarray(f(x), dtype=np.float64).reshape(x.shape[0], -1)
    return np.mean((out - np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)) ** 2, axis=1)


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
) -> dict:
    """Audit an autoencoder for memorization of its training images.

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
    out : folder for ``report.json``, ``per_image.csv``, ``report.html`` and the run
        cache; None writes nothing.
    resume : reuse the finished runs cached in ``out/cache`` (same inputs, same settings).
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

    Returns
    -------
    dict
        The audit document (schema ``AUDIT_SCHEMA_VERSION``, docs/cli.md), the same
        that is written to ``out/report.json``.
    """
    from .._progress import Progress
    from ..evaluation.control import CONTROL_METHOD, biharmonic_inpaint
    from ..provenance import provenance
    from ._deps import require_audit_dependencies
    from .membership import roc_summary

    require_audit_dependencies()
    started = time.time() if started is None else started
    t0 = time.perf_counter()
    methods = list(methods)
    if not methods:
        raise ConfigError("methods: expected at least one of blind, known, ae-iterations, got none")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"methods: expected names from {', '.join(METHODS)}, got {m!r}")
    specs = [ms if isinstance(ms, MaskSpec) else parse_mask(ms) for ms in masks]
    if not specs:
        raise ConfigError("masks: expected at least one mask spec, got none")
    if n_bootstrap < 1:
        raise ConfigError(f"n_bootstrap: expected a positive count, got {n_bootstrap}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence: expected a number in (0, 1), got {confidence}")
    solver = dict(solver or {})

    opened = [_open(m, i) for i, m in enumerate([model, *checkpoints])]
    label0, f0, path0 = opened[0]
    x_train, train_spec, train_path = _images(train, f0, "train")
    x_test, test_spec, test_path = _images(test, f0, "test")
    if data_specs is not None:
        train_spec = train_spec or data_specs[0]
        test_spec = test_spec or data_specs[1]
    for name, x in (("train", x_train), ("test", x_test)):
        if x.ndim < 2 or x.shape[0] == 0:
            raise ShapeError(f"{name}: expected a non-empty batch of images, got shape {x.shape}")
    if tuple(x_train.shape[1:]) != tuple(x_test.shape[1:]):
        raise ShapeError(
            f"train and test: expected images of one shape, got {x_train.shape[1:]} and "
            f"{x_test.shape[1:]}"
        )
    shape0 = getattr(f0, "sample_shape", None)
    for label, f, _ in opened[1:]:
        if getattr(f, "sample_shape", shape0) != shape0:
            raise ConfigError(
                f"checkpoints: {label} takes samples of shape {f.sample_shape}, the main model "
                f"{shape0}"
            )
    if len({lab for lab, _, _ in opened}) != len(opened):
        raise ConfigError(f"checkpoints: expected distinct labels, got {[o[0] for o in opened]}")
    splits = [("train", x_train), ("test", x_test)]
    data_sha = {s: _array_sha(x) for s, x in splits}
    pshape = pixel_shape(tuple(x_train.shape[1:]))
    primary_method = "blind" if "blind" in methods else methods[0]
    primary_mask = specs[0].text
    rho = float(solver.get("rho") or 0.5)
    n_stab = min(
        int(stability_n) if stability_n is not None else len(x_train), len(x_train), len(x_test)
    )
    cache = _Cache(Path(out) if out is not None else None, resume)

    # -------- recoveries: the memorization report, run by run, cached
    rec = new_document(
        command=command, seed=seed, noise_std=noise_std, masks=specs, methods=methods, solver=solver
    )
    n_units = len(opened) * len(specs) * 2 * len(methods) + 2 * len(specs) + 2
    bar = Progress(n_units, desc="refinv audit", enabled=progress)
    done = 0
    arrays: dict[tuple, dict] = {}  # main model: (mask, method, split) -> arrays
    recon: dict[str, dict[str, np.ndarray]] = {}
    for k, (label, f, _) in enumerate(opened):
        ck = checkpoint_entry(label, f, x_train, x_test)
        rec["checkpoints"].append(ck)
        recon[label] = {s: _reconstruction_error(f, x) for s, x in splits}
        for spec in specs:
            for split, x in splits:
                for method in methods:
                    key = {
                        "kind": "run",
                        "model": _model_id(f, label),
                        "label": label,
                        "data": data_sha[split],
                        "split": split,
                        "mask": spec.text,
                        "method": method,
                        "seed": int(seed),
                        "noise_std": float(noise_std),
                        "solver": method_options(method, solver),
                    }
                    got = cache.get(key, partial(
                        _cached_run, x=x, pshape=pshape, checkpoint=label,
                        train_loss=ck["train_loss"], method=method, mask=spec.text, split=split,
                    ))  # fmt: skip
                    if got is not None:
                        entry, a = got
                    else:
                        entry, res, y, mask = evaluate_split(
                            f, x, spec, method, label=label, train_loss=ck["train_loss"],
                            split=split, seed=seed, noise_std=noise_std, solver=solver,
                            progress=False,
                        )  # fmt: skip
                        h_est = (
                            np.asarray(res.state.h).reshape(len(x), *pshape)
                            if method == "blind"
                            else np.zeros((0,), np.uint8)
                        )
                        a = {
                            "x_hat": np.asarray(res.x, dtype=np.float32),
                            "y": np.asarray(y, dtype=np.float32),
                            "mask": np.asarray(mask, dtype=np.uint8),
                            "h_est": np.asarray(h_est, dtype=np.uint8),
                        }
                        cache.put(key, entry=np.array(json.dumps(entry)), **a)
                    rec["runs"].append(entry)
                    if k == 0:
                        arrays[(spec.text, method, split)] = a
                    done += 1
                    bar.update(done)
    rec["settings"]["train"] = train_spec
    rec["settings"]["test"] = test_spec

    stage = {"recoveries": time.perf_counter() - t0}
    t1 = time.perf_counter()
    # -------- the generic-inpainting control (main model's masks; no model)
    control_runs = []
    for spec in specs:
        for split, x in splits:
            key = {"kind": "control", "data": data_sha[split], "mask": spec.text,
                   "seed": int(seed), "noise_std": float(noise_std)}  # fmt: skip
            psnr_c = cache.get(key, partial(_cached_vector, name="psnr", n=len(x)))
            if psnr_c is None:
                y, mask = degrade(x, spec, seed=seed, noise_std=noise_std)
                xc = biharmonic_inpaint(np.asarray(y), np.asarray(mask))
                psnr_c = recovery_metrics(x, xc)["psnr"]
                cache.put(key, psnr=psnr_c)
            control_runs.append(
                {
                    "mask": spec.text,
                    "split": split,
                    "n": int(len(psnr_c)),
                    "mean_psnr": float(np.mean(psnr_c)),
                    "mean_psnr_ci": _mean_ci(psnr_c, n_bootstrap, seed, confidence),
                    "accurate_rate": float(np.mean(10 ** (-psnr_c / 10) < ACCURATE_MSE)),
                    "psnr": [float(v) for v in psnr_c],
                }
            )
            done += 1
            bar.update(done)

    stage["control"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    # -------- local stability at each image (main model, primary mask)
    from ..evaluation.stability import pnp_admm_stability

    radius: dict[str, np.ndarray] = {}
    for split, x in splits:
        key = {"kind": "stability", "model": _model_id(f0, label0), "data": data_sha[split],
               "mask": primary_mask, "seed": int(seed), "n": n_stab, "rho": rho,
               "method": stability_method, "tol": stability_tol}  # fmt: skip
        got = cache.get(key, partial(_cached_vector, name="radius", n=len(x[:n_stab])))
        if got is not None:
            radius[split] = got
        else:
            _, mask = degrade(x, specs[0], seed=seed, noise_std=0.0)
            radius[split] = np.asarray(
                pnp_admm_stability(
                    f0,
                    x[:n_stab],
                    mask[:n_stab],
                    rho=rho,
                    method=stability_method,
                    tol=stability_tol,
                )
            )
            cache.put(key, radius=radius[split])
        done += 1
        bar.update(done)
    bar.close()
    stage["stability"] = time.perf_counter() - t1
    t1 = time.perf_counter()

    # -------- per-image best recovery (main model)
    per_image = {}
    for split, x in splits:
        n = len(x)
        best_mse = np.full(n, np.inf)
        best_setting = np.full(n, -1)
        settings_list = [(s.text, m) for s in specs for m in methods]
        cols = {}
        for j, (mt, me) in enumerate(settings_list):
            run = _find(rec["runs"], label0, mt, me, split)
            m = np.array([np.inf if v is None else v for v in run["mse"]], dtype=np.float64)
            cols[(mt, me)] = (m, np.asarray(run["psnr"], dtype=np.float64))
            better = m < best_mse
            best_mse = np.where(better, m, best_mse)
            best_setting = np.where(better, j, best_setting)
        n_exposed = sum((c[0] < ACCURATE_MSE).astype(int) for c in cols.values())
        per_image[split] = {
            "cols": cols,
            "n_settings_exposed": n_exposed,
            "best_mse": best_mse,
            "best_setting": [settings_list[j] if j >= 0 else None for j in best_setting],
            "exposed": best_mse < ACCURATE_MSE,
            "approx": best_mse < APPROXIMATE_MSE,
        }

    # -------- membership inference
    prim = {s: per_image[s]["cols"][(primary_mask, primary_method)] for s, _ in splits}

    def summary(name, desc, s_tr, s_te):
        r = roc_summary(s_tr, s_te, n_bootstrap=n_bootstrap, seed=seed, confidence=confidence)
        return {"name": name, "description": desc, **r}

    scores = {
        "recovery": {s: prim[s][1] for s, _ in splits},  # PSNR of the recovery (higher = member)
        "reconstruction": {s: -recon[label0][s] for s, _ in splits},
        "stability": {s: -radius[s] for s, _ in splits},
    }
    membership_scores = [
        summary(
            "recovery",
            f"refinv's: PSNR of the {primary_method} recovery from the degraded image "
            f"({primary_mask}); higher = member",
            scores["recovery"]["train"], scores["recovery"]["test"],
        ),
        summary(
            "reconstruction",
            "loss-threshold attack: -||f(x) - x||^2 on the clean image; higher = member",
            scores["reconstruction"]["train"], scores["reconstruction"]["test"],
        ),
        summary(
            "stability",
            f"local stability: -(spectral radius of the linearized known-mask PnP-ADMM at the "
            f"image, {primary_mask}, rho {rho:g}); higher = member; first {n_stab} images "
            "of each split",
            scores["stability"]["train"], scores["stability"]["test"],
        ),
    ]  # fmt: skip
    from sklearn.metrics import roc_auc_score

    yy = np.concatenate([np.ones(len(x_train)), np.zeros(len(x_test))])
    by_setting = []
    for (mt, me), (_, p_tr) in per_image["train"]["cols"].items():
        p_te = per_image["test"]["cols"][(mt, me)][1]
        by_setting.append(
            {"mask": mt, "method": me,
             "auc": float(roc_auc_score(yy, np.concatenate([p_tr, p_te])))}
        )  # fmt: skip
    by_checkpoint = []
    for label, _, _ in opened:
        row = {"checkpoint": label}
        row["train_loss"] = next(c["train_loss"] for c in rec["checkpoints"] if c["label"] == label)
        for name, s_tr, s_te in (
            ("recovery",
             np.asarray(_find(rec["runs"], label, primary_mask, primary_method, "train")["psnr"]),
             np.asarray(_find(rec["runs"], label, primary_mask, primary_method, "test")["psnr"])),
            ("reconstruction", -recon[label]["train"], -recon[label]["test"]),
        ):  # fmt: skip
            r = roc_summary(s_tr, s_te, n_bootstrap=n_bootstrap, seed=seed, confidence=confidence)
            row[name] = {"auc": r["auc"], "auc_ci": r["auc_ci"],
                         "tpr_at_fpr": r["tpr_at_fpr"]}  # fmt: skip
        by_checkpoint.append(row)

    # -------- the document
    intervals = [_run_intervals(r, n_bootstrap, seed, confidence) for r in rec["runs"]]
    n_tr, n_te = len(x_train), len(x_test)
    ex_tr = int(per_image["train"]["exposed"].sum())
    ex_te = int(per_image["test"]["exposed"].sum())
    # most exposed: accurately recovered under the most settings, then the lowest best MSE
    order = np.lexsort((per_image["train"]["best_mse"], -per_image["train"]["n_settings_exposed"]))
    gallery_idx = [int(i) for i in order[: min(gallery, n_tr)]]
    doc: dict[str, Any] = {
        "schema": "refinv.audit",
        "schema_version": AUDIT_SCHEMA_VERSION,
        "tool": "refinv",
        "refinv_version": rec["refinv_version"],
        "command": command,
        "created_utc": rec["created_utc"],
        "model": label0,
        "settings": {
            "seed": int(seed),
            "noise_std": float(noise_std),
            "masks": [s.text for s in specs],
            "methods": methods,
            "solver": rec["settings"]["solver"],
            "train": train_spec,
            "test": test_spec,
            "checkpoints": [lab for lab, _, _ in opened[1:]],
            "primary": {"mask": primary_mask, "method": primary_method},
            "stability": {
                "n": n_stab,
                "rho": rho,
                "method": stability_method,
                "tol": stability_tol,
                "eps": 1e-3,
            },  # fmt: skip
            "bootstrap": {
                "n": int(n_bootstrap),
                "confidence": float(confidence),
                "method": "percentile, images resampled with replacement",
            },  # fmt: skip
            "gallery": len(gallery_idx),
        },
        "verdict": {},
        "recovery": rec,
        "intervals": intervals,
        "exposure": {
            "definition": "An image is exposed when at least one (mask, method) recovers it "
            f"accurately (MSE < {ACCURATE_MSE:g})",
            "train": {
                "n": n_tr,
                "exposed": ex_tr,
                "exposed_indices": [int(i) for i in np.flatnonzero(per_image["train"]["exposed"])],
                "approximate": int(per_image["train"]["approx"].sum()),
            },  # fmt: skip
            "test": {
                "n": n_te,
                "exposed": ex_te,
                "exposed_indices": [int(i) for i in np.flatnonzero(per_image["test"]["exposed"])],
                "approximate": int(per_image["test"]["approx"].sum()),
            },  # fmt: skip
            "gallery_indices": gallery_idx,
        },
        "membership": {
            "model": label0,
            "scores": membership_scores,
            "by_setting": by_setting,
            "by_checkpoint": by_checkpoint,
        },
        "control": {
            "method": CONTROL_METHOD,
            "note": "classical and offline; the paper used a diffusion inpainter in this role",
            "runs": control_runs,
        },
        "timing": {},
    }
    doc["verdict"] = _verdict(doc)
    stage["membership"] = time.perf_counter() - t1
    doc["timing"] = {
        "seconds": round(time.perf_counter() - t0, 3),
        "stages": {k: round(v, 3) for k, v in stage.items()},
        "cached_units": cache.hits,
        "computed_units": cache.misses,
    }
    prov_files = {"model": path0, "train": train_path, "test": test_path}
    for i, (_, _, p) in enumerate(opened[1:], 1):
        prov_files[f"checkpoint_{i}"] = p
    prov_files.update(files or {})
    doc["provenance"] = provenance(prov_files, argv=argv, started=started)
    if out is not None:
        t1 = time.perf_counter()
        figures = _figures(doc, arrays, x_train, x_test, per_image, scores)
        doc["timing"]["stages"]["figures"] = round(time.perf_counter() - t1, 3)
        write_outputs(doc, out, figures=figures, per_image=per_image, scores=scores)
    return doc


def _find(runs: list[dict], label: str, mask: str, method: str, split: str) -> dict:
    for r in runs:
        if (r["checkpoint"], r["mask"], r["method"], r["split"]) == (label, mask, method, split):
            return r
    raise KeyError((label, mask, method, split))  # pragma: no cover - built above


# ------------------------------------------------------------------ verdict
def _observed(run: dict) -> str:
    return f"{100.0 * (1.0 - run['erased_fraction']):.0f}%"


def _verdict(doc: dict) -> dict:
    rec = doc["recovery"]
    label = doc["model"]
    pm, pmeth = doc["settings"]["primary"]["mask"], doc["settings"]["primary"]["method"]
    tr = _find(rec["runs"], label, pm, pmeth, "train")
    te = _find(rec["runs"], label, pm, pmeth, "test")
    k_tr = round(tr["accurate_rate"] * tr["n"])
    k_te = round(te["accurate_rate"] * te["n"])
    headline = (
        f"{k_tr} of {tr['n']} training images were recovered exactly (MSE < {ACCURATE_MSE:g}) "
        f"from {_observed(tr)} of their pixels (mask {pm}, {pmeth} recovery); "
        f"{k_te} of {te['n']} held-out images."
    )
    # memorization shown: some setting's train interval lies above its held-out interval
    iv = {(r["checkpoint"], r["mask"], r["method"], r["split"]): r for r in doc["intervals"]}
    separated = []
    for r in rec["runs"]:
        if r["checkpoint"] != label or r["split"] != "train":
            continue
        a = iv[(label, r["mask"], r["method"], "train")]["accurate_rate"]
        b = iv[(label, r["mask"], r["method"], "test")]["accurate_rate"]
        if a[0] is not None and b[1] is not None and a[0] > b[1]:
            separated.append(f"{r['mask']}/{r['method']}")
    ex = doc["exposure"]
    ms = {s["name"]: s for s in doc["membership"]["scores"]}
    auc = ms["recovery"]
    loss = ms["reconstruction"]
    stab = ms["stability"]
    memorized = bool(separated)
    if memorized:
        summary = (
            f"This model memorized training images: {ex['train']['exposed']} of "
            f"{ex['train']['n']} training images can be extracted exactly from a degraded copy "
            f"under at least one of the {len(doc['settings']['masks']) * len(doc['settings']['methods'])} "
            f"settings tried, against {ex['test']['exposed']} of {ex['test']['n']} held-out images."
        )
    else:
        summary = (
            f"No memorization was detected by recovery: no setting recovers clearly more "
            f"training images than held-out images ({ex['train']['exposed']} of "
            f"{ex['train']['n']} training and {ex['test']['exposed']} of {ex['test']['n']} "
            "held-out images exposed). This does not prove that the model memorized nothing "
            "(see Method, assumptions and limits)."
        )
    mi = (
        f"Membership inference: the recovery score separates training from held-out images "
        f"with AUC {auc['auc']:.2f} (95% interval {_ci(auc['auc_ci'])}); the loss-threshold "
        f"attack ||f(x) - x|| with AUC {loss['auc']:.2f} ({_ci(loss['auc_ci'])}); the local "
        f"stability with AUC {stab['auc']:.2f} ({_ci(stab['auc_ci'])}). "
        f"AUC 0.5 is chance."
    )
    ctrl = {(c["mask"], c["split"]): c for c in doc["control"]["runs"]}
    c_tr, c_te = ctrl[(pm, "train")], ctrl[(pm, "test")]
    control = (
        f"Generic inpainting without the model (biharmonic) reaches a mean PSNR of "
        f"{c_tr['mean_psnr']:.1f} dB on training and {c_te['mean_psnr']:.1f} dB on held-out "
        f"images at mask {pm}; recovery through the model reaches {tr['mean_psnr']:.1f} dB "
        f"and {te['mean_psnr']:.1f} dB."
    )
    return {
        "memorization_detected": memorized,
        "separated_settings": separated,
        "headline": headline,
        "summary": summary,
        "membership": mi,
        "control": control,
        "exposed_train": ex["train"]["exposed"],
        "exposed_test": ex["test"]["exposed"],
        "n_train": ex["train"]["n"],
        "n_test": ex["test"]["n"],
        "recovery_auc": auc["auc"],
        "reconstruction_auc": loss["auc"],
        "stability_auc": stab["auc"],
    }


def _ci(ci: list) -> str:
    if ci[0] is None:
        return "n/a"
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


# ------------------------------------------------------------------ outputs
def per_image_rows(doc: dict, per_image: dict, scores: dict) -> tuple[list[str], list[list]]:
    """Header and rows of ``per_image.csv`` (one row per image of both splits)."""
    settings = [(m, me) for m in doc["settings"]["masks"] for me in doc["settings"]["methods"]]
    ctrl = {(c["mask"], c["split"]): c["psnr"] for c in doc["control"]["runs"]}
    header = ["split", "index"]
    for m, me in settings:
        header += [f"mse[{me}|{m}]", f"psnr[{me}|{m}]"]
    header += [f"control_psnr[{m}]" for m in doc["settings"]["masks"]]
    header += ["best_mse", "best_psnr", "best_setting", "exposed", "exposed_settings",
               "approximately_exposed",
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
                    f"{bs[1]}|{bs[0]}" if bs is not None else "",
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


def _figures(doc, arrays, x_train, x_test, per_image, scores) -> dict[str, bytes]:
    from . import figures as fg

    figs = {
        "roc": fg.roc_figure(doc["membership"]["scores"]),
        "exposure": fg.exposure_figure(doc, per_image),
        "control": fg.control_figure(doc),
        "gallery": fg.gallery_figure(doc, arrays, x_train, x_test, per_image),
    }
    if len(doc["recovery"]["checkpoints"]) > 1:
        figs["rate_vs_loss"] = fg.rate_vs_loss_figure(doc)
    return figs
