"""The shared solver loop: per-sample stopping, divergence, callback, history, order."""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import array_api_strict as xps
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refinv.backend import namespace
from refinv.errors import ConfigError, DivergenceWarning
from refinv.solvers import SolverResult, run_loop
from refinv.solvers._loop import relative_change


class S(NamedTuple):
    x: Any
    a: Any  # per-sample contraction factor (batched constant)
    k: Any  # per-sample step counter, to check each sample's state is its own


def geometric_step(state: S):
    xp = namespace(state.x)
    x = state.a * state.x
    res = xp.max(xp.abs(x), axis=1)
    return S(x, state.a, state.k + 1), res


def expected_iters(x0: float, a: float, tol: float) -> int:
    # smallest k with |a|^k |x0| < tol
    k = math.floor(math.log(tol / abs(x0)) / math.log(abs(a))) + 1
    while abs(a) ** k * abs(x0) >= tol:  # guard against rounding at the boundary
        k += 1
    return max(k, 1)


def make_state(xp, x0, a, dtype):
    n = len(x0)
    return S(
        xp.asarray(np.asarray(x0, dtype)[:, None] * np.ones((1, 3), dtype)),
        xp.asarray(np.asarray(a, dtype)[:, None]),
        xp.zeros((n,), dtype=xp.int64),
    )


@pytest.mark.parametrize("xp", [np, xps], ids=["numpy", "strict"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_per_sample_counts_and_own_state(xp, dtype):
    x0 = [1.0, 1.0, 2.0, 0.5]
    a = [0.5, 0.9, 0.1, 0.7]
    tol = 1e-3
    r = run_loop(geometric_step, make_state(xp, x0, a, dtype), max_iter=500, tol=tol)
    assert isinstance(r, SolverResult)
    want = [expected_iters(x, q, tol) for x, q in zip(x0, a, strict=True)]
    assert r.iterations.tolist() == want
    assert r.converged.all() and not r.diverged.any()
    assert r.stop_reason == ["converged"] * 4
    # each sample's final state is from its own last iteration, in the original order
    assert np.asarray(r.state.k).tolist() == want
    got = np.asarray(r.x)[:, 0]
    np.testing.assert_allclose(
        got, [x * q**k for x, q, k in zip(x0, a, want, strict=True)], rtol=1e-5
    )
    assert type(r.x) is type(make_state(xp, x0, a, dtype).x)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(0.05, 0.95), min_size=1, max_size=8),
    st.floats(1e-6, 1e-2),
    st.integers(1, 5),
)
def test_batch_composition_does_not_matter(a, tol, check_every):
    """A sample's result is the same alone or in any batch."""
    x0 = [1.0] * len(a)
    full = run_loop(
        geometric_step,
        make_state(np, x0, a, "float64"),
        max_iter=400,
        tol=tol,
        check_every=check_every,
    )
    for i in range(len(a)):
        one = run_loop(
            geometric_step,
            make_state(np, [1.0], [a[i]], "float64"),
            max_iter=400,
            tol=tol,
            check_every=check_every,
        )
        assert one.iterations[0] == full.iterations[i]
        np.testing.assert_array_equal(one.x[0], full.x[i])


def test_max_iter_and_tol_zero():
    r = run_loop(
        geometric_step, make_state(np, [1.0, 1.0], [0.5, 0.99], "float64"), max_iter=7, tol=0.0
    )
    assert r.iterations.tolist() == [7, 7]
    assert not r.converged.any() and r.stop_reason == ["max_iter", "max_iter"]


def test_divergence_flagged_others_continue():
    x0 = [1.0, 1.0, 1.0]
    a = [0.5, 3.0, 0.8]
    st_ = make_state(np, x0, a, "float64")
    x = st_.x.copy()
    x[2, 1] = np.nan  # a NaN sample
    st_ = st_._replace(x=x)
    with pytest.warns(DivergenceWarning, match="2 of 3 samples diverged") as rec:
        r = run_loop(geometric_step, st_, max_iter=100, tol=1e-4, blowup=1e3)
    assert len([w for w in rec if w.category is DivergenceWarning]) == 1
    assert r.diverged.tolist() == [False, True, True]
    assert r.stop_reason[0] == "converged" and r.stop_reason[1] == r.stop_reason[2] == "diverged"
    assert r.iterations[1] == 7  # 3**6 = 729 <= 1e3 < 3**7
    assert r.iterations[2] == 1
    assert r.iterations[0] == expected_iters(1.0, 0.5, 1e-4)


def test_callback_and_history():
    seen = []

    def cb(k, state, res):
        seen.append((k, state.x.shape[0]))
        return k == 5

    r = run_loop(
        geometric_step,
        make_state(np, [1.0, 1.0], [0.1, 0.9], "float64"),
        max_iter=100,
        tol=1e-3,
        callback=cb,
        record_history=True,
    )
    assert seen[-1][0] == 5
    assert r.stop_reason == ["converged", "callback"]
    assert r.iterations.tolist() == [expected_iters(1.0, 0.1, 1e-3), 5]
    assert r.history.shape == (5, 2)
    assert np.isnan(r.history[4:, 0]).all() and np.isfinite(r.history[:, 1]).all()
    np.testing.assert_allclose(r.history[:, 1], 0.9 ** np.arange(1, 6))


def test_bad_parameters():
    s = make_state(np, [1.0], [0.5], "float64")
    with pytest.raises(ConfigError, match="max_iter"):
        run_loop(geometric_step, s, max_iter=0, tol=1e-3)
    with pytest.raises(ConfigError, match="tol"):
        run_loop(geometric_step, s, max_iter=3, tol=-1)
    with pytest.raises(ConfigError, match="primary"):
        run_loop(geometric_step, s, max_iter=3, tol=1e-3, primary="nope")
    bad = S(np.zeros((2, 3)), np.zeros((3, 1)), np.zeros(2, np.int64))
    with pytest.raises(ConfigError, match="batch"):
        run_loop(geometric_step, bad, max_iter=3, tol=1e-3)


def test_no_divergence_warning_when_all_fine():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_loop(geometric_step, make_state(np, [1.0], [0.5], "float64"), max_iter=50, tol=1e-3)


class Still(NamedTuple):
    x: Any


def standing_step(state: Still):
    """A step at a fixed point: the residual is exactly 0."""
    return Still(state.x), np.zeros(state.x.shape[0])


def test_tol_zero_runs_every_iteration_even_at_a_fixed_point():
    """``res < tol`` is strict: with tol = 0 a residual of exactly 0 does not stop a sample
    (the fixed-iteration runs of the benchmarks and the paper's T)."""
    r = run_loop(standing_step, Still(np.ones((2, 3))), max_iter=9, tol=0.0)
    assert r.iterations.tolist() == [9, 9]
    assert not r.converged.any() and r.stop_reason == ["max_iter", "max_iter"]


def test_residual_equal_to_tol_does_not_converge():
    def half(state: Still):
        return Still(state.x), np.full(state.x.shape[0], 0.5)

    r = run_loop(half, Still(np.ones((1, 2))), max_iter=4, tol=0.5)
    assert r.iterations.tolist() == [4] and not r.converged.any()
    r = run_loop(half, Still(np.ones((1, 2))), max_iter=4, tol=np.nextafter(0.5, 1.0))
    assert r.iterations.tolist() == [1] and r.converged.all()


def test_relative_change_divides_by_the_old_iterate():
    """||new - old|| / max(||old||, eps), per sample, by hand."""
    old = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    new = np.array([[6.0, 8.0], [1.0, 2.0], [0.0, 1.0]])
    got = relative_change(np, new, old)
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(got, [5.0 / 5.0, 2.0 / 1.0, 1.0 / eps], rtol=1e-15)


def test_divergence_is_one_warning_and_no_log_line(caplog):
    """One message per event: the DivergenceWarning, not a log record as well."""
    st_ = make_state(np, [1.0, 1.0], [0.5, 3.0], "float64")
    with caplog.at_level("DEBUG"), pytest.warns(DivergenceWarning) as rec:
        run_loop(geometric_step, st_, max_iter=100, tol=1e-4, blowup=1e3, method="geo")
    assert [str(w.message) for w in rec if w.category is DivergenceWarning] == [
        "geo: 1 of 2 samples diverged (NaN/Inf or |x| > 1000) and were stopped; "
        "the others continued"
    ]
    assert not [r for r in caplog.records if r.levelno >= 30]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_fast_paths_are_bitwise_the_array_api_path(dtype):
    """relative_change and the blow-up check take a NumPy shortcut (no namespace lookups);
    it must give the bits of the generic array-API code (run here on array-api-strict)."""
    from refinv.solvers._loop import _per_sample_maxabs

    rng = np.random.default_rng(0)
    new = rng.standard_normal((7, 3, 5, 4)) * 10.0 ** rng.integers(-8, 8, (7, 1, 1, 1))
    old = new + rng.standard_normal(new.shape) * 1e-3
    new, old = new.astype(dtype), old.astype(dtype)
    old[3] = 0.0  # the eps floor of the denominator
    fast = relative_change(np, new, old)
    slow = relative_change(xps, xps.asarray(new), xps.asarray(old))
    assert type(fast) is np.ndarray and fast.dtype == dtype
    assert np.asarray(slow).tobytes() == fast.tobytes()
    assert (
        relative_change(np, new, old, eps=0.5).tobytes()
        == np.asarray(relative_change(xps, xps.asarray(new), xps.asarray(old), eps=0.5)).tobytes()
    )
    m = _per_sample_maxabs(new)
    assert m.tobytes() == np.asarray(_per_sample_maxabs(xps.asarray(new))).tobytes()
    assert np.array_equal(m, np.abs(new).reshape(7, -1).max(axis=1))
