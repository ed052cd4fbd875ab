"""Radii that agree within their accuracy are ties (issue 32): a model whose radii are all
equal up to rounding (1e-13) must not rank its training images against held-out ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from refinv.errors import ConfigError
from refinv.evaluation.stability import radius_rtol, tie_radii


def test_rounding_level_differences_are_ties_larger_ones_are_kept():
    r = [1.0 + 1e-13, 0.5, 1.0 - 1e-13, 1.0, 0.5 + 1e-3, np.nan]
    got = tie_radii(r, 1e-8)
    assert got[0] == got[2] == got[3] == 1.0 - 1e-13  # the group's smallest value
    assert got[1] == 0.5 and got[4] == 0.5 + 1e-3  # 2e-3 apart relative: distinct
    assert np.isnan(got[5])
    assert tie_radii(r, 0.0)[0] == r[0]  # rtol 0: nothing merged
    with pytest.raises(ConfigError, match="rtol"):
        tie_radii(r, -1.0)


def test_groups_are_anchored_at_their_first_value_not_chained():
    """0, 0.9, 1.8 ... (times 1e-6 around 1): each within rtol of its neighbour, but the group
    ends once a value is more than rtol from the group's first: no tie spreads further than
    rtol."""
    r = 1.0 + 1e-6 * np.array([0.0, 0.9, 1.8, 2.7])
    got = tie_radii(r, 1e-6)
    assert got[0] == got[1] == r[0] and got[2] == got[3] == r[2]


def test_auc_of_radii_equal_up_to_rounding_is_one_half():
    """Members and non-members with radius 1 up to +-1e-13 (the identity's radii by finite
    differences): without ties the AUC is whatever the rounding says; with them, 1/2."""
    rng = np.random.default_rng(0)
    members = 1.0 + 1e-13 * rng.standard_normal(10)
    nonmembers = 1.0 + 1e-13 * rng.standard_normal(10) + 2e-13
    y = np.r_[np.ones(10), np.zeros(10)]
    raw = np.r_[members, nonmembers]
    assert roc_auc_score(y, -raw) != 0.5  # the rounding "ranks" them
    tied = tie_radii(raw, radius_rtol("dense", dtype=np.float64))
    assert roc_auc_score(y, -tied) == 0.5
    # a real difference survives: members' radii 0.8, held-out 1.2 (+ rounding)
    real = np.r_[members - 0.2, nonmembers + 0.2]
    assert roc_auc_score(y, -tie_radii(real, radius_rtol("arnoldi", tol=1e-3))) == 1.0


def test_radius_rtol():
    f32, f64 = np.finfo(np.float32).eps, np.finfo(np.float64).eps
    assert radius_rtol("arnoldi", tol=1e-3) == 1e-3
    assert radius_rtol("arnoldi", tol=1e-6, eps=1e-3) == pytest.approx(f32 / 1e-3)  # 1.2e-4
    assert radius_rtol("dense", dtype=np.float64, eps=1e-3) == pytest.approx(np.sqrt(f64))
    assert radius_rtol("dense", dtype=np.float32, eps=1e-2) == pytest.approx(f32 / 1e-2)


@settings(max_examples=60, deadline=None)
@given(
    r=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=30),
    rtol=st.sampled_from([0.0, 1e-12, 1e-6, 1e-3, 0.1]),
)
def test_ties_are_a_small_non_decreasing_map(r, rtol):
    r = np.asarray(r)
    t = tie_radii(r, rtol)
    order = np.argsort(r, kind="stable")
    assert np.all(np.diff(t[order]) >= 0)  # ranks kept, only ties added
    assert np.all(np.abs(t - r) <= rtol * np.abs(r) + 1e-300)
    for i in range(r.size):  # equal radii stay equal
        assert np.all(t[r == r[i]] == t[i])
