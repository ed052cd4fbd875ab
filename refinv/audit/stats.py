"""The audit's statistics: exact tests, intervals whose coverage is tested, multiplicity.

Everything a verdict rests on is an exact test or an interval with known coverage:

* rates: the Clopper-Pearson interval (exact binomial; never ``[0, 0]``);
* train vs held-out exposure: the one-sided Fisher exact test
  (:func:`fisher_greater`);
* gain over the control on the same images: the exact sign test
  (:func:`sign_test_greater`);
* membership scores: a permutation test of the AUC (:func:`auc_permutation_pvalue`)
  and the score interval of Newcombe (2006) for the AUC (:func:`auc_interval`),
  which does not collapse at AUC 0 or 1;
* a mean (PSNR): the bias-corrected and accelerated bootstrap (:func:`mean_interval`);
* several settings tried: Holm's step-down adjustment (:func:`holm`), which controls
  the family-wise error rate under any dependence between the tests.

References: C. J. Clopper and E. S. Pearson, "The use of confidence or fiducial limits
illustrated in the case of the binomial", Biometrika 26 (1934); S. Holm, "A simple
sequentially rejective multiple test procedure", Scand. J. Statist. 6 (1979);
R. G. Newcombe, "Confidence intervals for an effect size measure based on the
Mann-Whitney statistic. Part 2: asymptotic methods and evaluation", Statistics in
Medicine 25 (2006), method 5; B. Efron, "Better bootstrap confidence intervals",
JASA 82 (1987). ``tests/test_audit_stats.py`` measures the coverage of every interval
by simulation with known truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "clopper_pearson",
    "fisher_greater",
    "sign_test_greater",
    "holm",
    "auc_interval",
    "auc_permutation_pvalue",
    "mean_interval",
    "min_detectable_rate",
    "midrank_auc",
]


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2.0))


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> list[float | None]:
    """Exact two-sided interval ``[lo, hi]`` for a binomial proportion, ``k`` of ``n``
    (``[None, None]`` when ``n == 0``). ``lo = 0`` when ``k = 0`` and ``hi = 1`` when
    ``k = n``; otherwise Beta quantiles (Clopper and Pearson, 1934)."""
    from scipy.stats import beta

    k, n = int(k), int(n)
    if n <= 0:
        return [None, None]
    if not 0 <= k <= n:
        raise ValueError(f"clopper_pearson: expected 0 <= k <= n, got k={k}, n={n}")
    a = (1.0 - confidence) / 2.0
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1.0 - a, k + 1, n - k))
    return [lo, hi]


def fisher_greater(k1: int, n1: int, k0: int, n0: int) -> float:
    """One-sided Fisher exact test that the rate of group 1 (``k1`` of ``n1``, training
    images) exceeds that of group 0 (``k0`` of ``n0``, held-out images): the
    hypergeometric probability of ``k1`` or more of the ``k1 + k0`` events in group 1."""
    from scipy.stats import hypergeom

    k1, n1, k0, n0 = int(k1), int(n1), int(k0), int(n0)
    if n1 <= 0 or n0 <= 0:
        return 1.0
    return float(min(1.0, hypergeom.sf(k1 - 1, n1 + n0, k1 + k0, n1)))


def sign_test_greater(d: np.ndarray) -> tuple[int, int, float]:
    """Exact one-sided sign test that the differences ``d`` are more often positive than
    negative (zeros and non-finite values dropped). Returns ``(positives, n_nonzero, p)``."""
    from scipy.stats import binom

    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    n, k = int(d.size), int(np.sum(d > 0))
    p = 1.0 if n == 0 else float(binom.sf(k - 1, n, 0.5))
    return k, n, min(1.0, p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the ``i``-th smallest of
    ``m`` is multiplied by ``m - i + 1`` (``i`` from 1), made non-decreasing, capped at 1.
    Rejecting where the adjusted p-value is below ``alpha`` controls the family-wise error
    rate at ``alpha``."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return [float(v) for v in adj]


def midrank_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """``P(member score > non-member score) + P(tie) / 2`` (the Mann-Whitney statistic
    over ``n1 * n0``), from mid-ranks."""
    from scipy.stats import rankdata

    m = np.asarray(members, dtype=np.float64)
    u = np.asarray(nonmembers, dtype=np.float64)
    n1, n0 = m.size, u.size
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(np.concatenate([m, u]))
    return float((r[:n1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _newcombe_var(theta: float, n1: int, n0: int) -> float:
    """Hanley-McNeil variance of the AUC at ``theta`` with ``n1 - 1`` and ``n0 - 1`` both
    replaced by ``N* - 1``, ``N* = (n1 + n0) / 2`` (Newcombe 2006, method 5)."""
    ns = (n1 + n0) / 2.0
    t = theta
    return t * (1 - t) * (1 + (ns - 1) * ((1 - t) / (2 - t) + t / (1 + t))) / (n1 * n0)


def auc_interval(auc: float, n1: int, n0: int, confidence: float = 0.95) -> list[float | None]:
    """Score-type interval for the AUC (Newcombe 2006, method 5): the ``theta`` with
    ``(auc - theta)^2 = z^2 V(theta)`` on each side of ``auc``, ``V`` the Hanley-McNeil
    variance at ``theta``. Unlike a bootstrap or a Wald interval it stays proper at AUC
    0 and 1 (perfect separation of ``n1`` and ``n0`` images gives a lower limit below 1)."""
    from scipy.optimize import brentq

    if n1 <= 0 or n0 <= 0 or not np.isfinite(auc):
        return [None, None]
    z = _z(confidence)
    a = float(min(max(auc, 0.0), 1.0))

    def g(t):
        return (a - t) ** 2 - z * z * _newcombe_var(t, n1, n0)

    # g < 0 just inside auc (V > 0 there) and g(0), g(1) >= 0: one sign change per side;
    # the ends are pulled in by 1e-12 so that the trivial root theta = auc in {0, 1} (V = 0)
    # is not the one found
    eps = 1e-12
    lo = 0.0 if a <= eps or g(0.0) <= 0 else float(brentq(g, 0.0, a - eps))
    hi = 1.0 if a >= 1.0 - eps or g(1.0) <= 0 else float(brentq(g, a + eps, 1.0))
    return [lo, hi]


def auc_permutation_pvalue(
    members: np.ndarray,
    nonmembers: np.ndarray,
    *,
    n_permutations: int = 9999,
    seed: int = 0,
    chunk_cells: int = 2_000_000,
) -> float:
    """One-sided permutation p-value of the AUC (H1: members score higher): the share of
    random relabellings (``n1`` of the ``n1 + n0`` images called members) whose rank sum
    is at least the observed one, counting the observed labelling
    (``(1 + #{>=}) / (1 + B)``, exact in level for any score distribution and ties).
    Random labellings from ``default_rng([seed, 6])``, drawn in chunks of
    ``chunk_cells`` array cells."""
    from scipy.stats import rankdata

    m = np.asarray(members, dtype=np.float64)
    u = np.asarray(nonmembers, dtype=np.float64)
    n1, n0 = m.size, u.size
    if n1 == 0 or n0 == 0:
        return 1.0
    r = rankdata(np.concatenate([m, u]))
    obs = r[:n1].sum()
    n = n1 + n0
    rng = np.random.default_rng([seed, 6])
    rows = max(1, chunk_cells // n)
    hits, done = 0, 0
    while done < n_permutations:
        b = min(rows, n_permutations - done)
        perm = rng.permuted(np.broadcast_to(np.arange(n), (b, n)), axis=1)[:, :n1]
        hits += int(np.sum(r[perm].sum(axis=1) >= obs - 1e-9))
        done += b
    return float((1 + hits) / (1 + n_permutations))


def mean_interval(
    values: np.ndarray, confidence: float = 0.95, *, n_bootstrap: int = 1000, seed: int = 0
) -> list[float | None]:
    """BCa bootstrap interval of the mean (``scipy.stats.bootstrap``; non-finite values
    dropped; ``[v, v]`` when every value is ``v``; ``[None, None]`` when empty)."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return [None, None]
    if np.all(v == v[0]) or v.size < 3:
        return [float(v.min()), float(v.max())]
    res = bootstrap(
        (v,), np.mean, confidence_level=confidence, n_resamples=n_bootstrap, method="BCa",
        vectorized=True, random_state=np.random.default_rng([seed, 5]),
    )  # fmt: skip
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # BCa undefined: percentile
        res = bootstrap(
            (v,), np.mean, confidence_level=confidence, n_resamples=n_bootstrap,
            method="percentile", vectorized=True, random_state=np.random.default_rng([seed, 5]),
        )  # fmt: skip
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return [lo, hi]


def min_detectable_rate(
    n1: int, k0: int, n0: int, *, level: float, power: float = 0.8
) -> tuple[int | None, float | None]:
    """The smallest true training-image rate that the one-sided Fisher test at ``level``
    would detect with probability ``power``, held-out count ``k0`` of ``n0`` as observed.

    Returns ``(k_min, rate)``: ``k_min`` the fewest training events of ``n1`` that reject
    (``None`` if even ``n1`` of ``n1`` does not), ``rate`` the ``r`` with
    ``P(Binomial(n1, r) >= k_min) = power``."""
    from scipy.optimize import brentq
    from scipy.stats import binom

    k_min = None
    for k in range(int(n1) + 1):
        if fisher_greater(k, n1, k0, n0) <= level:
            k_min = k
            break
    if k_min is None:
        return None, None
    if k_min == 0:
        return 0, 0.0
    rate = brentq(lambda r: binom.sf(k_min - 1, n1, r) - power, 1e-12, 1.0 - 1e-12)
    return k_min, float(rate)
