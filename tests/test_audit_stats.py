"""The audit's statistics against hand computations and brute force, and the coverage of
every interval the report prints, measured by simulation with known truth."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("sklearn")
from scipy.stats import binom, norm  # noqa: E402

from refinv.audit.membership import operating_point, roc_summary  # noqa: E402
from refinv.audit.stats import (  # noqa: E402
    auc_interval,
    auc_permutation_pvalue,
    clopper_pearson,
    fisher_greater,
    holm,
    mean_interval,
    midrank_auc,
    min_detectable_rate,
    sign_test_greater,
)


# ------------------------------------------------------------------ exact values
def test_clopper_pearson_known_values():
    # 0 of 100: [0, 1 - 0.025^(1/100)] = [0, 0.0362] (the issue's "exact: [0, 3.6%]")
    lo, hi = clopper_pearson(0, 100)
    assert (
        lo == 0.0
        and hi == pytest.approx(1 - 0.025 ** (1 / 100))
        and hi == pytest.approx(0.0362, abs=1e-4)
    )
    lo, hi = clopper_pearson(100, 100)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 100))
    # k of n: the bounds are where the binomial tails equal alpha / 2
    lo, hi = clopper_pearson(7, 40)
    assert binom.sf(6, 40, lo) == pytest.approx(0.025)
    assert binom.cdf(7, 40, hi) == pytest.approx(0.025)
    assert clopper_pearson(0, 0) == [None, None]


def _fisher_brute(k1, n1, k0, n0):
    """P(K1 >= k1) for K1 hypergeometric: k1 + k0 events among n1 + n0, n1 drawn."""
    k = k1 + k0
    tot = math.comb(n1 + n0, k)
    return sum(math.comb(n1, j) * math.comb(n0, k - j) for j in range(k1, min(k, n1) + 1)) / tot


@given(n1=st.integers(1, 12), n0=st.integers(1, 12), data=st.data())
@settings(max_examples=60, deadline=None)
def test_fisher_greater_is_the_hypergeometric_tail(n1, n0, data):
    k1 = data.draw(st.integers(0, n1))
    k0 = data.draw(st.integers(0, n0))
    assert fisher_greater(k1, n1, k0, n0) == pytest.approx(_fisher_brute(k1, n1, k0, n0))


def test_fisher_values_of_the_issue():
    # 4 of 100 vs 0 of 100: one-sided p = 0.061, which the old interval rule called a
    # separation; 78 of 100 vs 2 of 100 is overwhelming
    assert fisher_greater(4, 100, 0, 100) == pytest.approx(0.0606, abs=1e-4)
    assert fisher_greater(78, 100, 2, 100) < 1e-25
    assert fisher_greater(0, 100, 5, 100) == 1.0


def test_holm_by_hand():
    # p = (0.01, 0.04, 0.03, 0.005), m = 4: sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 ->
    # 0.02, 0.03, 0.06, max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []


def test_sign_test_by_hand():
    d = np.array([1.0, 2.0, -1.0, 0.0, np.nan, 3.0])  # 3 positive of 4 non-zero
    k, n, p = sign_test_greater(d)
    assert (k, n) == (3, 4) and p == pytest.approx(5 / 16)


def test_midrank_auc_and_permutation_p_by_enumeration():
    m, u = np.array([3.0, 5.0, 2.0]), np.array([1.0, 2.0, 0.0])
    pairs = m[:, None] - u[None, :]
    assert midrank_auc(m, u) == pytest.approx(np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0))
    # exact permutation p: the share of the 20 labellings with rank sum >= the observed
    allv = np.concatenate([m, u])
    from scipy.stats import rankdata

    r = rankdata(allv)
    obs = r[:3].sum()
    exact = np.mean([r[list(c)].sum() >= obs - 1e-9 for c in combinations(range(6), 3)])
    p = auc_permutation_pvalue(m, u, n_permutations=20000, seed=1)
    assert p == pytest.approx(exact, abs=0.01)


def test_min_detectable_rate_is_the_power_boundary():
    k, r = min_detectable_rate(100, 0, 100, level=0.05 / 18, power=0.8)
    assert fisher_greater(k, 100, 0, 100) <= 0.05 / 18 < fisher_greater(k - 1, 100, 0, 100)
    assert binom.sf(k - 1, 100, r) == pytest.approx(0.8)
    # no power at all: 5 vs 4 images at level 0.05/8 (the best case, 5 of 5 vs 0 of 4, has
    # p = 1/126 > 0.00625)
    assert min_detectable_rate(5, 0, 4, level=0.05 / 8) == (None, None)


def test_auc_interval_never_collapses():
    lo, hi = auc_interval(1.0, 100, 100)
    assert 0.9 < lo < 1.0 and hi == 1.0
    lo, hi = auc_interval(0.0, 20, 20)
    assert lo == 0.0 and 0.0 < hi < 0.2
    lo, hi = auc_interval(0.5, 100, 100)
    assert lo < 0.5 < hi and hi - 0.5 == pytest.approx(0.5 - lo, abs=1e-9)


def test_operating_point_by_hand():
    m = np.array([9.0, 8.0, 7.0, 3.0, 1.0])
    u = np.arange(100, dtype=float) / 10  # 0.0 .. 9.9
    # FPR 1% with 100 held-out images: at most 1 false positive; held-out 9.9 is the top
    # and no member reaches 9.9
    # no threshold with at most 1 false positive finds a member: call no image (fp 0, tp 0)
    op = operating_point(m, u, 0.01)
    assert op["false_positives"] == 0 and op["true_positives"] == 0 and op["threshold"] is None
    assert op["fpr_ci"] == clopper_pearson(0, 100) and op["tpr_ci"] == clopper_pearson(0, 5)
    u2 = np.concatenate([np.arange(98) / 20, [9.5, 9.5]])  # two held-out tie at 9.5
    op = operating_point(m, u2, 0.01)  # 9.5 would call 2 held-out: the cut stays above it
    assert op["false_positives"] == 0 and op["true_positives"] == 0
    op = operating_point(m, u2, 0.02)
    assert op["false_positives"] == 2 and op["true_positives"] == 3  # down to 7.0 (fp stays 2)
    op = operating_point(m, np.arange(100) / 20, 0.01)  # held-out max 4.95
    assert op["false_positives"] == 0 and op["true_positives"] == 3 and op["threshold"] == 7.0
    assert not operating_point(m, u[:99], 0.01)["estimable"]


# ------------------------------------------------------------------ coverage
REPS = 240


def _gauss(auc, n1, n0, rng):
    d = math.sqrt(2) * norm.ppf(auc)  # members N(d, 1), non-members N(0, 1): AUC = Phi(d/sqrt2)
    return rng.normal(d, 1, n1), rng.normal(0, 1, n0), d


@pytest.mark.parametrize("n", [20, 100])
@pytest.mark.parametrize("p", [0.0, 0.02, 0.3, 0.97])
def test_rate_interval_coverage(n, p):
    rng = np.random.default_rng([1, n, int(100 * p)])
    ks = rng.binomial(n, p, REPS)
    cov = np.mean([clopper_pearson(k, n)[0] <= p <= clopper_pearson(k, n)[1] for k in ks])
    assert cov >= 0.90


@pytest.mark.parametrize("n1, n0", [(100, 100), (20, 20), (50, 400)])
@pytest.mark.parametrize("auc", [0.5, 0.76, 0.92, 0.98])
def test_auc_interval_coverage(n1, n0, auc):
    rng = np.random.default_rng([2, n1, n0, int(1000 * auc)])
    hits = 0
    for _ in range(REPS):
        m, u, _ = _gauss(auc, n1, n0, rng)
        lo, hi = auc_interval(midrank_auc(m, u), n1, n0)
        hits += lo <= auc <= hi
    assert hits / REPS >= 0.90


@pytest.mark.parametrize("n1, n0, target", [(100, 100, 0.01), (100, 1000, 0.001), (50, 200, 0.01)])
@pytest.mark.parametrize("auc", [0.76, 0.92, 0.98])
def test_low_fpr_intervals_cover_the_thresholds_true_rates(n1, n0, target, auc):
    """At the threshold the attack picks, the exact intervals cover its TRUE FPR and TRUE
    TPR (known from the Gaussian scores). The old bootstrap's TPR-at-0.1% interval covered
    the truth in 17-36% of repetitions."""
    rng = np.random.default_rng([3, n0, int(1000 * auc)])
    f_hit = t_hit = 0
    for _ in range(REPS):
        m, u, d = _gauss(auc, n1, n0, rng)
        op = operating_point(m, u, target)
        assert op["estimable"] and op["false_positives"] <= round(target * n0)
        c = op["threshold"]  # called member when score >= c; None: no image called
        true_fpr, true_tpr = (0.0, 0.0) if c is None else (norm.sf(c), norm.sf(c - d))
        f_hit += op["fpr_ci"][0] <= true_fpr <= op["fpr_ci"][1]
        t_hit += op["tpr_ci"][0] <= true_tpr <= op["tpr_ci"][1]
    assert f_hit / REPS >= 0.90 and t_hit / REPS >= 0.90


def test_a_100_image_audit_gives_no_number_below_its_resolution():
    rng = np.random.default_rng(4)
    m, u, _ = _gauss(0.92, 100, 100, rng)
    r = roc_summary(m, u, n_permutations=99)
    at01 = next(t for t in r["tpr_at_fpr"] if t["target_fpr"] == 0.001)
    assert at01 == {"target_fpr": 0.001, "estimable": False, "needs_nonmembers": 1000}


@pytest.mark.parametrize("n", [20, 100])
@pytest.mark.parametrize("kind", ["bimodal", "normal"])
def test_mean_psnr_interval_coverage(n, kind):
    """BCa interval of a mean PSNR: normal scores, and the bimodal mix of recovered images
    (capped at 200 dB) and failures (~25 dB) that recovery produces."""
    rng = np.random.default_rng([5, n, len(kind)])
    if kind == "bimodal":
        p_rec, truth = 0.3, 0.3 * 200 + 0.7 * 25
    else:
        truth = 30.0
    hits = 0
    reps = 200
    for _ in range(reps):
        if kind == "bimodal":
            v = np.where(rng.random(n) < p_rec, 200.0, rng.normal(25, 3, n))
        else:
            v = rng.normal(30, 4, n)
        lo, hi = mean_interval(v, n_bootstrap=400, seed=int(rng.integers(1 << 30)))
        hits += lo <= truth <= hi
    assert hits / reps >= 0.90


def test_permutation_test_holds_its_level():
    rng = np.random.default_rng(6)
    ps = [auc_permutation_pvalue(rng.normal(size=30), rng.normal(size=30), n_permutations=199,
                                 seed=i) for i in range(300)]  # fmt: skip
    assert np.mean(np.asarray(ps) <= 0.05) <= 0.08  # nominal 0.05, 300 draws
    assert np.mean(np.asarray(ps) <= 0.5) == pytest.approx(0.5, abs=0.1)
