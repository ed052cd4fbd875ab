"""ae_iterations checks convergence every K calls: the documented exact relation to K = 1."""

from __future__ import annotations

import numpy as np
import pytest

from refinv.errors import ConfigError
from refinv.solvers.recovery import ae_iterations


def _contraction(c, rate):
    def f(x):  # x -> c + rate (x - c): relative change decays geometrically, per sample
        return c + rate * (x - c)

    return f


def _every_call_residuals(f, y, n):
    """r_j = ||x^j - x^{j-1}|| / ||x^{j-1}||, j = 1..n, per sample, by brute force."""
    xs, r = [y], []
    for _ in range(n):
        xs.append(f(xs[-1]))
        d = (xs[-1] - xs[-2]).reshape(len(y), -1)
        r.append(np.linalg.norm(d, axis=1) / np.linalg.norm(xs[-2].reshape(len(y), -1), axis=1))
    return xs, np.array(r)  # r[j - 1] is r_j


@pytest.mark.parametrize("k", [1, 3, 10, 7])
@pytest.mark.parametrize("max_iter", [200, 95])
def test_stops_at_first_checked_call_below_tol(k, max_iter):
    rng = np.random.default_rng(0)
    c = rng.random((1, 1, 3, 3)) + 0.5
    y = c + np.array([1e-4, 1e-2, 1.0, 30.0, 1e3])[:, None, None, None] * rng.random((5, 1, 3, 3))
    f = _contraction(c, 0.7)
    tol = 1e-7
    # patience=None: the plain "< tol" rule this test is about (no stall detection)
    res = ae_iterations(f, y, tol=tol, patience=None, max_iter=max_iter, check_every=k)
    xs, r = _every_call_residuals(f, y, max_iter)
    checked = [j for j in range(1, max_iter + 1) if j % k == 0 or j == max_iter]
    for i in range(len(y)):
        hits = [j for j in checked if r[j - 1, i] < tol]
        want = hits[0] if hits else max_iter
        assert res.iterations[i] == want
        assert bool(res.converged[i]) == bool(hits)
        np.testing.assert_array_equal(res.x[i], xs[want][i])  # x^k of the same sequence
        np.testing.assert_allclose(res.residual[i], r[want - 1, i], rtol=1e-12)
    # K = 1 is the every-call rule; K > 1 stops at the next checked call at the latest here
    # (the relative change of a contraction decreases, so it stays below tol once it is)
    every = ae_iterations(f, y, tol=tol, patience=None, max_iter=max_iter, check_every=1)
    for i in range(len(y)):
        j = every.iterations[i]
        nxt = min([c_ for c_ in checked if c_ >= j] or [max_iter])
        assert res.iterations[i] == nxt


def test_history_and_callback_only_at_checks():
    c = np.full((1, 1, 2, 2), 0.5)
    y = c + np.ones((2, 1, 2, 2))
    seen = []
    res = ae_iterations(
        _contraction(c, 0.5), y, tol=0.0, max_iter=25, check_every=10, record_history=True,
        callback=lambda k, s, r: seen.append(k),
    )  # fmt: skip
    assert seen == [10, 20, 25]
    assert res.history.shape == (3, 2)
    assert (res.iterations == 25).all()


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_check_every_must_be_a_positive_integer(bad):
    c = np.zeros((1, 1, 2, 2))
    with pytest.raises(ConfigError, match="check_every"):
        ae_iterations(_contraction(c, 0.5), np.ones((1, 1, 2, 2)), check_every=bad)
