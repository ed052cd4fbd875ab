"""Membership statistics against independent computations: the operating point at a target
FPR by brute force over every threshold (a point EXACTLY at the target counts), the smallest
non-zero FPR from the held-out count, the exact binomial intervals against scipy's
``binomtest``, the AUC interval's defining equation at its ends with the two-sided z, and
the permutation p-value against enumeration."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("sklearn")
from scipy.stats import binomtest, norm, rankdata  # noqa: E402

from refinv.audit.membership import operating_point, roc_summary, tpr_at_fpr  # noqa: E402
from refinv.audit.stats import (  # noqa: E402
    auc_interval,
    auc_permutation_pvalue,
    clopper_pearson,
    midrank_auc,
)


def _brute(m, u, target):
    """Every distinct score as a threshold (a score >= it is called a member): among those
    calling at most floor(target * n0) held-out images, the most true positives, then the
    fewest false positives; (0, 0, None) when none finds a member (call no image)."""
    k = math.floor(target * len(u) + 1e-9)
    best = (0, 0, None)  # calling no image
    for t in sorted(set(m) | set(u), reverse=True):
        fp, tp = int(np.sum(u >= t)), int(np.sum(m >= t))
        if fp <= k and (tp, -fp) > (best[0], -best[1]):
            best = (tp, fp, float(t))
    return best


@settings(max_examples=80, deadline=None)
@given(
    m=st.lists(st.integers(0, 12), min_size=1, max_size=12),
    u=st.lists(st.integers(0, 12), min_size=100, max_size=130),
    target=st.sampled_from([0.01, 0.02, 0.05]),
)
def test_operating_point_is_the_brute_force_best_threshold(m, u, target):
    m, u = np.array(m, float), np.array(u, float)
    op = operating_point(m, u, target)
    tp, fp, thr = _brute(m, u, target)
    assert (op["true_positives"], op["false_positives"]) == (tp, fp)
    if tp:
        assert op["threshold"] == thr


def test_a_roc_point_exactly_at_the_target_fpr_is_used():
    """100 held-out images, one of which (9.5) outscores two of the 3 members: FPR 1% allows
    exactly one false positive, and the threshold 1.0 calls all 3 members and that one
    held-out image: TPR 1 at FPR exactly 1/100 (without that point: TPR 1/3 at FPR 0)."""
    u = np.r_[np.zeros(99), 9.5]
    m = np.array([10.0, 9.0, 1.0])
    op = operating_point(m, u, 0.01)
    assert (op["false_positives"], op["true_positives"], op["threshold"]) == (1, 3, 1.0)
    assert op["fpr"] == 0.01 and op["tpr"] == 1.0
    # 2% with 100: two false positives allowed, none needed beyond the one
    assert operating_point(m, u, 0.02)["false_positives"] == 1
    # 1% with 99 held-out images is not estimable (1/99 > 1%)
    assert not operating_point(m, u[1:], 0.01)["estimable"]
    assert tpr_at_fpr(np.array([0.0, 0.01, 0.02]), np.array([0.3, 0.6, 0.9]), 0.01) == 0.6


def test_min_nonzero_fpr_is_one_over_the_held_out_count():
    rng = np.random.default_rng(0)
    r = roc_summary(rng.random(7), rng.random(40), n_permutations=99)
    assert (r["n_members"], r["n_nonmembers"]) == (7, 40)
    assert r["min_nonzero_fpr"] == 1 / 40


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("k, n", [(0, 12), (3, 12), (8, 12), (12, 12), (1, 100), (57, 100)])
def test_clopper_pearson_is_scipys_exact_interval(k, n, confidence):
    ci = binomtest(k, n).proportion_ci(confidence, method="exact")
    assert clopper_pearson(k, n, confidence) == pytest.approx([ci.low, ci.high], abs=1e-12)


@pytest.mark.parametrize("confidence", [0.9, 0.95])
@pytest.mark.parametrize("auc, n1, n0", [(0.8, 20, 20), (0.6, 12, 30), (0.95, 50, 10)])
def test_auc_interval_ends_solve_newcombes_equation(auc, n1, n0, confidence):
    """(auc - theta)^2 = z^2 V(theta) at both ends, z the two-sided normal quantile and V the
    Hanley-McNeil variance with N* = (n1 + n0) / 2 (Newcombe 2006, method 5)."""
    z = norm.ppf(1 - (1 - confidence) / 2)
    ns = (n1 + n0) / 2

    def var(t):
        return t * (1 - t) * (1 + (ns - 1) * ((1 - t) / (2 - t) + t / (1 + t))) / (n1 * n0)

    lo, hi = auc_interval(auc, n1, n0, confidence)
    assert lo < auc < hi
    for t in (lo, hi):
        assert (auc - t) ** 2 == pytest.approx(z * z * var(t), rel=1e-6)


def test_permutation_p_value_against_enumeration():
    """4 members all above 4 non-members: the exact one-sided p is 1 / C(8, 4) = 1/70; with
    20,000 random relabellings the estimate is within 0.005 of it."""
    m, u = np.array([5.0, 6.0, 7.0, 8.0]), np.array([1.0, 2.0, 3.0, 4.0])
    assert midrank_auc(m, u) == 1.0
    p = auc_permutation_pvalue(m, u, n_permutations=20000, seed=3)
    assert p == pytest.approx(1 / 70, abs=0.005)
    # and a partial overlap, by enumeration of the 35 labellings of 3 of 7
    m, u = np.array([4.0, 2.5, 6.0]), np.array([1.0, 3.0, 5.0, 0.5])
    r = rankdata(np.r_[m, u])
    obs = r[:3].sum()
    exact = np.mean([r[list(c)].sum() >= obs - 1e-9 for c in combinations(range(7), 3)])
    assert auc_permutation_pvalue(m, u, n_permutations=20000, seed=4) == pytest.approx(
        exact, abs=0.01
    )
