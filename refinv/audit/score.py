"""The audit's scores: per image (recovery against the control, extraction), per run
(intervals) and per score (membership inference), from the results of its units.

Everything here is computed from the stored results (the recoveries' report document,
the control's and the stability's per-image numbers) and the clean images: no recovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..evaluation.metrics import ACCURATE_MSE, APPROXIMATE_MSE

__all__ = ["Scores", "score", "reconstruction_error"]


@dataclass
class Scores:
    """Per split: ``cols[split][(mask, method)] = (mse, psnr)`` of the main model,
    ``per_image[split]`` (best setting, gain, extraction); the three membership scores per
    split; the membership section and the run intervals."""

    settings: list
    cols: dict
    per_image: dict
    scores: dict
    membership: dict
    intervals: list


def score(found: Any, inp: Any, *, seed: int, confidence: float, n_bootstrap: int,
          stability: dict) -> Scores:  # fmt: skip
    """Scores of an audit from its results ``found`` (:class:`refinv.audit.core.Found`)."""
    from .membership import roc_summary

    rec, label0 = found.recovery, inp.main[0]
    primary = found.primary
    settings = [(sp.text, m) for sp in inp.masks for m in inp.methods]
    cols = {s: {(mt, me): _mse_psnr(_find(rec["runs"], label0, mt, me, s))
                for mt, me in settings} for s in ("train", "test")}  # fmt: skip
    per_image = {s: _per_image(cols[s], found.control_psnr, settings, s) for s in cols}
    scores = {
        "recovery": {s: cols[s][primary][1] for s in cols},
        "reconstruction": {s: -found.recon[label0][s] for s in cols},
        "stability": {s: -r for s, r in _tied(found.radius, stability["tie_rtol"]).items()},
    }
    desc = _descriptions(primary, stability)
    membership_scores = [
        {"name": name, "description": desc[name],
         **roc_summary(sc["train"], sc["test"], seed=seed, confidence=confidence)}
        for name, sc in scores.items()
    ]  # fmt: skip
    membership = {
        "model": label0,
        "scores": membership_scores,
        "by_setting": _auc_by_setting(cols, settings),
        "by_checkpoint": _membership_by_checkpoint(rec, inp.models, found.recon, *primary,
                                                   seed, confidence),
    }  # fmt: skip
    intervals = [_run_intervals(r, n_bootstrap, seed, confidence) for r in rec["runs"]]
    return Scores(settings, cols, per_image, scores, membership, intervals)


def _tied(radius: dict, rtol: float) -> dict:
    """The radii of both splits with the values that agree within ``rtol`` (their accuracy)
    made equal, together: rounding-level differences must not rank training images against
    held-out ones (:func:`~refinv.evaluation.stability.tie_radii`)."""
    from ..evaluation.stability import tie_radii

    both = tie_radii(np.concatenate([radius["train"], radius["test"]]), rtol)
    return {"train": both[: len(radius["train"])], "test": both[len(radius["train"]) :]}


def _descriptions(primary: tuple, stability: dict) -> dict:
    mask, method = primary
    return {
        "recovery": f"refinv's: PSNR of the {method} recovery from the degraded image "
        f"({mask}); higher = member",
        "reconstruction": "loss-threshold attack: -||f(x) - x||^2 on the clean image; "
        "higher = member",
        "stability": "local stability: -(spectral radius of the linearized known-mask "
        f"PnP-ADMM at the image, {mask}, rho {stability['rho']:g}); higher = member; first "
        f"{stability['n']} images of each split; radii within {stability['tie_rtol']:.1g} "
        "(relative, their accuracy) are ties",
    }


def reconstruction_error(f: Any, x: np.ndarray) -> np.ndarray:
    """Per-image ``||f(x) - x||^2 / n`` on the clean images (the loss-threshold attack)."""
    out = np.asarray(f(x), dtype=np.float64).reshape(x.shape[0], -1)
    return np.mean((out - np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)) ** 2, axis=1)


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
