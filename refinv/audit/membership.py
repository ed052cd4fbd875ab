"""Membership inference from per-image scores: ROC, AUC, a permutation test, and the
true-positive rate at the low false-positive rates the held-out set can support.

A score is "higher = more likely a training image". The reporting follows Carlini
et al., "Membership inference attacks from first principles" (2022): the whole ROC
curve, its AUC, and the true-positive rate at a low false-positive rate. What ``n0``
held-out images can show:

* the AUC with the score interval of Newcombe (2006) and a one-sided permutation
  p-value (:mod:`refinv.audit.stats`);
* the TPR at a target FPR ``t`` only when ``t >= 1 / n0``: the attack's threshold calls
  at most ``k = floor(t * n0)`` of the held-out images members (the ROC point with the
  most true positives among those with at most ``k`` false positives; then the fewest
  false positives; calling no image when none of them finds a member). The report gives the
  FPR it achieves (``fp / n0``) with the Clopper-Pearson interval of the threshold's
  TRUE false-positive rate (the threshold is an order statistic of the held-out scores,
  whose true FPR is Beta-distributed; the exact binomial interval covers it), and the TPR
  ``tp / n1`` with its Clopper-Pearson interval (given the threshold, which the held-out
  images alone decide, the true positives are binomial). A target below ``1 / n0`` is
  "not estimable with n0 held-out images (needs >= ceil(1 / t))", never a number.
"""

from __future__ import annotations

import math

import numpy as np

from .stats import auc_interval, auc_permutation_pvalue, clopper_pearson, midrank_auc

__all__ = ["FPR_TARGETS", "roc_summary", "operating_point", "tpr_at_fpr", "needed_nonmembers"]

FPR_TARGETS = (0.01, 0.001)


def needed_nonmembers(target: float) -> int:
    """The fewest held-out images at which a false-positive rate of ``target`` exists
    (``1 / n0 <= target``)."""
    return int(math.ceil(1.0 / target - 1e-9))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The largest TPR among ROC points with FPR <= ``target`` (points exactly at the
    target included)."""
    ok = np.asarray(fpr) <= target + 1e-12
    return float(np.max(np.asarray(tpr)[ok])) if np.any(ok) else 0.0


def _clean(s: np.ndarray, floor: float) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    return np.where(np.isfinite(s), s, floor)


def operating_point(
    members: np.ndarray, nonmembers: np.ndarray, target: float, confidence: float = 0.95
) -> dict:
    """The attack at false-positive rate ``target`` (see the module docstring).

    Returns ``{"target_fpr", "estimable", "needs_nonmembers"}`` and, when estimable,
    ``"false_positives", "fpr", "fpr_ci", "true_positives", "tpr", "tpr_ci", "threshold"``
    (an image is called a member when its score is ``>= threshold``; ``None``: no image is
    called, when no threshold with at most ``floor(target * n0)`` false positives finds a
    member)."""
    m = np.asarray(members, dtype=np.float64)
    u = np.asarray(nonmembers, dtype=np.float64)
    n1, n0 = m.size, u.size
    need = needed_nonmembers(target)
    out: dict = {"target_fpr": float(target), "estimable": bool(n0 >= need and n1 > 0),
                 "needs_nonmembers": need}  # fmt: skip
    if not out["estimable"]:
        return out
    k = int(math.floor(target * n0 + 1e-9))
    # candidate thresholds: every distinct score; among those with at most k held-out
    # scores at or above them, the most true positives, then the fewest false positives
    cand = np.unique(np.concatenate([m, u]))[::-1]
    fp = np.searchsorted(np.sort(-u), -cand, side="right")  # held-out scores >= c
    tp = np.searchsorted(np.sort(-m), -cand, side="right")  # training scores >= c
    ok = np.flatnonzero(fp <= k)
    j = ok[np.lexsort((fp[ok], -tp[ok]))[0]] if ok.size else None
    if j is None or tp[j] == 0:  # no threshold finds a member: call no image (fp 0, tp 0)
        thr, n_fp, n_tp = None, 0, 0
    else:
        thr, n_fp, n_tp = float(cand[j]), int(fp[j]), int(tp[j])
    out.update(
        false_positives=n_fp,
        fpr=n_fp / n0,
        fpr_ci=clopper_pearson(n_fp, n0, confidence),
        true_positives=n_tp,
        tpr=n_tp / n1,
        tpr_ci=clopper_pearson(n_tp, n1, confidence),
        threshold=thr,
    )
    return out


def roc_summary(
    members: np.ndarray,
    nonmembers: np.ndarray,
    *,
    seed: int = 0,
    confidence: float = 0.95,
    fprs: tuple[float, ...] = FPR_TARGETS,
    n_permutations: int = 9999,
) -> dict:
    """ROC of a membership score: training images (``members``) vs held-out ones.

    Non-finite scores (e.g. a diverged recovery) count as the least member-like.

    Returns ``{"n_members", "n_nonmembers", "auc", "auc_ci", "auc_ci_method", "p_value",
    "n_permutations", "tpr_at_fpr": [operating_point(...) per target],
    "min_nonzero_fpr", "roc": {"fpr": [...], "tpr": [...]}}``; ``p_value`` is the
    one-sided permutation p-value of the AUC (members higher).
    """
    from sklearn.metrics import roc_curve

    m = np.asarray(members, dtype=np.float64)
    u = np.asarray(nonmembers, dtype=np.float64)
    allv = np.concatenate([m, u])
    fin = allv[np.isfinite(allv)]
    floor = float(fin.min() - 1.0) if fin.size else 0.0
    m, u = _clean(m, floor), _clean(u, floor)
    n1, n0 = m.size, u.size
    if n1 == 0 or n0 == 0:
        raise ValueError(f"roc_summary: expected members and non-members, got {n1} and {n0}")
    y = np.concatenate([np.ones(n1), np.zeros(n0)])
    fpr, tpr, _ = roc_curve(y, np.concatenate([m, u]), drop_intermediate=False)
    auc = midrank_auc(m, u)
    return {
        "n_members": int(n1),
        "n_nonmembers": int(n0),
        "auc": auc,
        "auc_ci": auc_interval(auc, n1, n0, confidence),
        "auc_ci_method": "Newcombe (2006) score interval, method 5",
        "p_value": auc_permutation_pvalue(m, u, n_permutations=n_permutations, seed=seed),
        "n_permutations": int(n_permutations),
        "tpr_at_fpr": [operating_point(m, u, t, confidence) for t in fprs],
        "min_nonzero_fpr": 1.0 / n0,
        "roc": {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]},
    }
