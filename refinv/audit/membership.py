"""Membership inference from per-image scores: ROC, AUC and TPR at low FPR, with bootstrap
intervals (scikit-learn's ``roc_curve`` / ``roc_auc_score``).

A score is "higher = more likely a training image". The reporting follows
Carlini et al., "Membership inference attacks from first principles" (2022):
the whole ROC curve, its AUC, and the true-positive rate at a low false-positive
rate. With ``n`` held-out images the smallest non-zero FPR is ``1 / n``; a target
below it (0.1% with 100 held-out images) reads the TPR at FPR 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FPR_TARGETS", "roc_summary", "bootstrap_interval", "tpr_at_fpr"]

FPR_TARGETS = (0.01, 0.001)


def bootstrap_interval(values: np.ndarray, confidence: float = 0.95) -> list[float | None]:
    """Percentile interval ``[lo, hi]`` of bootstrap replicates (NaNs dropped)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return [None, None]
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(v, [a, 1.0 - a])
    return [float(lo), float(hi)]


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The largest TPR among ROC points with FPR <= ``target``."""
    ok = np.asarray(fpr) <= target + 1e-12
    return float(np.max(np.asarray(tpr)[ok])) if np.any(ok) else 0.0


def _clean(s: np.ndarray, floor: float) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    return np.where(np.isfinite(s), s, floor)


def _curve(y: np.ndarray, s: np.ndarray, fprs, point: bool = True):
    """AUC, TPR at each target FPR and the ROC. The point estimate uses ``roc_auc_score``;
    a bootstrap replicate takes the area under its ``roc_curve`` (``sklearn.metrics.auc``,
    the same number) to call scikit-learn once instead of twice."""
    from sklearn.metrics import auc as area
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    a = float(roc_auc_score(y, s)) if point else float(area(fpr, tpr))
    return a, [tpr_at_fpr(fpr, tpr, t) for t in fprs], (fpr, tpr)


def roc_summary(
    members: np.ndarray,
    nonmembers: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    fprs: tuple[float, ...] = FPR_TARGETS,
) -> dict:
    """ROC of a membership score: training images (``members``) vs held-out ones.

    Non-finite scores (e.g. a diverged recovery) count as the least member-like.
    Intervals: percentile bootstrap, members and non-members resampled separately
    (``default_rng([seed, 3])``).

    Returns ``{"n_members", "n_nonmembers", "auc", "auc_ci", "tpr_at_fpr":
    [{"fpr", "tpr", "ci"}], "min_nonzero_fpr", "roc": {"fpr": [...], "tpr": [...]}}``.
    """
    m = np.asarray(members, dtype=np.float64)
    u = np.asarray(nonmembers, dtype=np.float64)
    allv = np.concatenate([m, u])
    fin = allv[np.isfinite(allv)]
    floor = float(fin.min() - 1.0) if fin.size else 0.0
    m, u = _clean(m, floor), _clean(u, floor)
    n1, n0 = m.size, u.size
    y = np.concatenate([np.ones(n1), np.zeros(n0)])
    auc, tprs, (fpr, tpr) = _curve(y, np.concatenate([m, u]), fprs)
    rng = np.random.default_rng([seed, 3])
    boot_auc = np.empty(n_bootstrap)
    boot_tpr = np.empty((n_bootstrap, len(fprs)))
    for b in range(n_bootstrap):
        s = np.concatenate([m[rng.integers(n1, size=n1)], u[rng.integers(n0, size=n0)]])
        boot_auc[b], tb, _ = _curve(y, s, fprs, point=False)
        boot_tpr[b] = tb
    return {
        "n_members": int(n1),
        "n_nonmembers": int(n0),
        "auc": auc,
        "auc_ci": bootstrap_interval(boot_auc, confidence),
        "tpr_at_fpr": [
            {"fpr": float(t), "tpr": tprs[i], "ci": bootstrap_interval(boot_tpr[:, i], confidence)}
            for i, t in enumerate(fprs)
        ],
        "min_nonzero_fpr": 1.0 / n0 if n0 else None,
        "roc": {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]},
    }
