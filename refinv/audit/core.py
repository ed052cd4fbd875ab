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

AUDIT_SCHEMA_VERSION = 2
DEFAULT_MASKS = ("random:0.5", "center:9", "rows:2")
_CACHE_FORMAT = 2


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

    def get(
        self, key: dict, names: Sequence[str], n: int, rows: Sequence[str] | None = None
    ) -> dict[str, np.ndarray] | None:
        """The arrays ``names`` of a finished unit, those in ``rows`` (default: all) with
        ``n`` rows (one per image); None when not resuming, not cached, or the file is
        unreadable or holds other contents (then it is recomputed, never trusted)."""
        p = self._path(key)
        if p is None or not self.resume or not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                got = {k: z[k] for k in names}
        except Exception as exc:  # unreadable, or a name missing
            log.warning("audit: cache file %s unreadable (%s): recomputing it", p, exc)
            return None
        bad = [k for k in (names if rows is None else rows)
               if got[k].ndim < 1 or got[k].shape[0] != n or got[k].dtype.kind not in "biuf"]  # fmt: skip
        if bad:
            log.warning("audit: cache file %s holds other contents (%s): recomputing it", p,
                        ", ".join(f"{k} {got[k].shape}" for k in bad))  # fmt: skip
            return None
        self.hits += 1
        return got

    def check(self, key: dict, value):
        """``value``, or None (a hit taken back, logged) when the caller found the cached
        contents inconsistent."""
        if value is None:
            self.hits -= 1
            log.warning("audit: cache file %s holds other contents: recomputing it",
                        self._path(key))  # fmt: skip
        return value

    def put(self, key: dict, **arrays: np.ndarray) -> None:
        self.misses += 1
        p = self._path(key)
        if p is not None:
            from ..io import atomic_save_npz

            atomic_save_npz(p, **arrays)


def _run_from_cache(got: dict, method: str, n: int) -> tuple[dict, dict] | None:
    """``(entry, arrays)`` of a cached run unit of ``n`` images, or None when the file's
    entry is not such a run (other contents are recomputed, never trusted)."""
    try:
        entry = json.loads(str(got["entry"]))
    except ValueError:
        return None
    h = got["h_est"]
    if not isinstance(entry, dict) or len(entry.get("mse", ())) != n:
        return None
    if (h.shape[:1] != (n,)) if method == "blind" else (h.size != 0):
        return None
    if not _entry_consistent(entry, method):
        return None
    return entry, {k: got[k] for k in ("x_hat", "y", "mask", "h_est")}


def _entry_consistent(entry: dict, method: str) -> bool:
    """Whether a cached run entry is what ``run_entry`` writes from its own per-sample lists
    (types, lengths, rates): text where numbers go, or a rate that does not follow from the
    MSEs, is other contents."""
    from ..evaluation.report import run_entry

    keys = ("checkpoint", "train_loss", "mask", "split", "psnr", "iterations", "converged",
            "diverged", "residual", "erased_fraction", "mask_error", "seconds", "onnx_seconds")  # fmt: skip
    try:
        mse = [np.nan if v is None else v for v in entry["mse"]]
        again = run_entry(method=method, mse=mse, **{k: entry[k] for k in keys})
    except (KeyError, TypeError, ValueError):
        return False
    return json.dumps(again, sort_keys=True) == json.dumps(entry, sort_keys=True)


# ------------------------------------------------------------------ statistics
def _run_intervals(run: dict, n_bootstrap: int, seed: int, confidence: float) -> dict:
    """Exact (Clopper-Pearson) intervals of a run's rates and the BCa interval of its mean
    PSNR."""
    from .stats import clopper_pearson, mean_interval

    n = run["n"]
    m = np.array([np.inf if v is None else v for v in run["mse"]], dtype=np.float64)
    out = {k: run[k] for k in ("checkpoint", "mask", "method", "split", "n")}
    out["accurate_rate"] = clopper_pearson(int(np.sum(m < ACCURATE_MSE)), n, confidence)
    out["approximate_rate"] = clopper_pearson(int(np.sum(m < APPROXIMATE_MSE)), n, confidence)
    out["mean_psnr"] = mean_interval(run["psnr"], confidence, n_bootstrap=n_bootstrap, seed=seed)
    return out


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
    from .stats import clopper_pearson, mean_interval

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
                    got = cache.get(key, ("entry", "x_hat", "y", "mask", "h_est"), len(x),
                                    rows=("x_hat", "y", "mask"))  # fmt: skip
                    hit = got and cache.check(key, _run_from_cache(got, method, len(x)))
                    if hit:
                        entry, a = hit
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
    control_x: dict[tuple[str, str], np.ndarray] = {}  # (mask, split) -> reconstructions
    for spec in specs:
        for split, x in splits:
            key = {"kind": "control", "data": data_sha[split], "mask": spec.text,
                   "seed": int(seed), "noise_std": float(noise_std)}  # fmt: skip
            got = cache.get(key, ("psnr", "x"), len(x))
            if got is not None:
                psnr_c, xc = got["psnr"], got["x"]
            else:
                y, mask = degrade(x, spec, seed=seed, noise_std=noise_std)
                xc = biharmonic_inpaint(np.asarray(y), np.asarray(mask)).astype(np.float32)
                psnr_c = recovery_metrics(x, xc)["psnr"]
                cache.put(key, psnr=psnr_c, x=xc)
            control_x[(spec.text, split)] = xc
            k_acc = int(np.sum(10 ** (-np.asarray(psnr_c) / 10) < ACCURATE_MSE))
            k_app = int(np.sum(10 ** (-np.asarray(psnr_c) / 10) < APPROXIMATE_MSE))
            control_runs.append(
                {
                    "mask": spec.text,
                    "split": split,
                    "n": int(len(psnr_c)),
                    "mean_psnr": float(np.mean(psnr_c)),
                    "mean_psnr_ci": mean_interval(
                        psnr_c, confidence, n_bootstrap=n_bootstrap, seed=seed
                    ),
                    "accurate_rate": k_acc / len(psnr_c),
                    "accurate_rate_ci": clopper_pearson(k_acc, len(psnr_c), confidence),
                    "approximate_rate": k_app / len(psnr_c),
                    "approximate_rate_ci": clopper_pearson(k_app, len(psnr_c), confidence),
                    "psnr": [float(v) for v in psnr_c],
                }
            )
            done += 1
            bar.update(done)

    stage["control"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    # -------- local stability at each image (main model, primary mask)
    from ..evaluation.stability import pnp_admm_stability, radius_rtol, tie_radii

    radius: dict[str, np.ndarray] = {}
    for split, x in splits:
        key = {"kind": "stability", "model": _model_id(f0, label0), "data": data_sha[split],
               "mask": primary_mask, "seed": int(seed), "n": n_stab, "rho": rho,
               "method": stability_method, "tol": stability_tol}  # fmt: skip
        got = cache.get(key, ("radius",), n_stab)
        if got is not None:
            radius[split] = got["radius"]
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

    # -------- per image: recovery vs the control, per setting; extraction
    settings_list = [(sp.text, m) for sp in specs for m in methods]
    control_psnr = {(c["mask"], c["split"]): np.asarray(c["psnr"]) for c in control_runs}
    cols = {
        split: {
            (mt, me): _mse_psnr(_find(rec["runs"], label0, mt, me, split))
            for mt, me in settings_list
        }
        for split, _ in splits
    }
    per_image = {
        split: _per_image(cols[split], control_psnr, settings_list, split) for split, _ in splits
    }

    # -------- membership inference
    # radii that agree within their accuracy are ties (both splits together): rounding-level
    # differences must not rank training images against held-out ones
    tie_rtol = radius_rtol(stability_method, tol=stability_tol, eps=1e-3,
                           dtype=getattr(f0, "dtype", x_train.dtype))  # fmt: skip
    both = tie_radii(np.concatenate([radius["train"], radius["test"]]), tie_rtol)
    tied = {"train": both[: len(radius["train"])], "test": both[len(radius["train"]) :]}
    scores = {
        "recovery": {s: cols[s][(primary_mask, primary_method)][1] for s, _ in splits},
        "reconstruction": {s: -recon[label0][s] for s, _ in splits},
        "stability": {s: -tied[s] for s, _ in splits},
    }
    descriptions = {
        "recovery": f"refinv's: PSNR of the {primary_method} recovery from the degraded image "
        f"({primary_mask}); higher = member",
        "reconstruction": "loss-threshold attack: -||f(x) - x||^2 on the clean image; "
        "higher = member",
        "stability": "local stability: -(spectral radius of the linearized known-mask "
        f"PnP-ADMM at the image, {primary_mask}, rho {rho:g}); higher = member; first "
        f"{n_stab} images of each split; radii within {tie_rtol:.1g} (relative, their "
        "accuracy) are ties",
    }
    membership_scores = [
        {"name": name, "description": descriptions[name],
         **roc_summary(sc["train"], sc["test"], seed=seed, confidence=confidence)}
        for name, sc in scores.items()
    ]  # fmt: skip
    membership = {
        "model": label0,
        "scores": membership_scores,
        "by_setting": _auc_by_setting(cols, settings_list),
        "by_checkpoint": _membership_by_checkpoint(rec, opened, recon, primary_mask,
                                                   primary_method, seed, confidence),
    }  # fmt: skip

    # -------- the document
    from .verdict import decide, gain_tests
    from .verdict import extraction_tests as ext_tests

    verdict = decide(
        ext_tests(cols, control_psnr, settings_list),
        gain_tests(cols, control_psnr, settings_list),
        membership_scores,
        (primary_mask, primary_method),
        observed_fraction={
            r["mask"]: 1.0 - r["erased_fraction"]
            for r in rec["runs"] if r["checkpoint"] == label0 and r["split"] == "train"
        },
    )  # fmt: skip
    intervals = [_run_intervals(r, n_bootstrap, seed, confidence) for r in rec["runs"]]
    gain_tr = per_image["train"]["best_gain"]
    order = np.lexsort((per_image["train"]["best_mse"], -np.nan_to_num(gain_tr, nan=-np.inf)))
    gallery_idx = [int(i) for i in order[: min(gallery, len(x_train))]]
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
                "tie_rtol": tie_rtol,
            },  # fmt: skip
            "bootstrap": {
                "n": int(n_bootstrap),
                "confidence": float(confidence),
                "method": "BCa bootstrap of the mean PSNR, images resampled with replacement",
            },  # fmt: skip
            "intervals": {
                "rates": "Clopper-Pearson (exact binomial)",
                "auc": "Newcombe (2006) score interval, method 5",
                "mean_psnr": "BCa bootstrap",
                "confidence": float(confidence),
            },  # fmt: skip
            "gallery": len(gallery_idx),
        },
        "verdict": verdict,
        "recovery": rec,
        "intervals": intervals,
        "exposure": _exposure(per_image, gallery_idx),
        "membership": membership,
        "control": {
            "method": CONTROL_METHOD,
            "note": "classical and offline; the paper used a diffusion inpainter in this role",
            "runs": control_runs,
        },
        "timing": {},
    }
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
        figures = _figures(doc, arrays, control_x, x_train, x_test, per_image, scores)
        doc["timing"]["stages"]["figures"] = round(time.perf_counter() - t1, 3)
        write_outputs(doc, out, figures=figures, per_image=per_image, scores=scores)
    return doc


def _find(runs: list[dict], label: str, mask: str, method: str, split: str) -> dict:
    for r in runs:
        if (r["checkpoint"], r["mask"], r["method"], r["split"]) == (label, mask, method, split):
            return r
    raise KeyError((label, mask, method, split))  # pragma: no cover - built above


def _mse_psnr(run: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-image MSE (inf where diverged) and PSNR of a run entry."""
    m = np.array([np.inf if v is None else v for v in run["mse"]], dtype=np.float64)
    return m, np.asarray(run["psnr"], dtype=np.float64)


def _per_image(cols: dict, control_psnr: dict, settings: list, split: str) -> dict:
    """Per image of one split: the best setting (lowest MSE), the best gain over the
    control over all settings, in how many settings it is extracted exactly, and its
    extraction level (``"exact"``, ``"approximate"``, ``"none"``)."""
    from .verdict import extracted, gain_db

    n = len(next(iter(cols.values()))[0])
    best_mse, best_setting = np.full(n, np.inf), np.full(n, -1)
    best_gain = np.full(n, -np.inf)
    exact, approx = np.zeros(n, bool), np.zeros(n, bool)
    n_exact = np.zeros(n, int)
    for j, (mt, me) in enumerate(settings):
        m, p = cols[(mt, me)]
        c = control_psnr[(mt, split)]
        better = m < best_mse
        best_mse = np.where(better, m, best_mse)
        best_setting = np.where(better, j, best_setting)
        best_gain = np.maximum(best_gain, gain_db(p, c))
        e = extracted(m, p, c, ACCURATE_MSE)
        exact |= e
        n_exact += e
        approx |= extracted(m, p, c, APPROXIMATE_MSE)
    return {
        "cols": cols,
        "best_mse": best_mse,
        "best_setting": [settings[j] if j >= 0 else None for j in best_setting],
        "best_gain": best_gain,
        "n_settings_exposed": n_exact,
        "exposed": exact,
        "approx": approx,
        "level": np.where(exact, "exact", np.where(approx, "approximate", "none")),
    }


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


def _auc_by_setting(cols: dict, settings: list) -> list[dict]:
    from .stats import midrank_auc

    return [
        {"mask": mt, "method": me,
         "auc": midrank_auc(_finite(cols["train"][(mt, me)][1]),
                            _finite(cols["test"][(mt, me)][1]))}
        for mt, me in settings
    ]  # fmt: skip


def _finite(s: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(s), s, -1.0)


def _membership_by_checkpoint(rec, opened, recon, mask, method, seed, confidence) -> list:
    from .membership import roc_summary

    rows = []
    for label, _, _ in opened:
        row = {"checkpoint": label}
        row["train_loss"] = next(c["train_loss"] for c in rec["checkpoints"] if c["label"] == label)
        for name, s_tr, s_te in (
            ("recovery", _mse_psnr(_find(rec["runs"], label, mask, method, "train"))[1],
             _mse_psnr(_find(rec["runs"], label, mask, method, "test"))[1]),
            ("reconstruction", -recon[label]["train"], -recon[label]["test"]),
        ):  # fmt: skip
            r = roc_summary(s_tr, s_te, seed=seed, confidence=confidence)
            row[name] = {k: r[k] for k in ("auc", "auc_ci", "p_value", "tpr_at_fpr")}
        rows.append(row)
    return rows


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
