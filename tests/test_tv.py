"""Total variation: closed-form values, prox by FGP certified by the duality gap and by scipy."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import LinearConstraint, minimize

from refinv.errors import ConfigError
from refinv.operators.linear import Gradient2d
from refinv.regularizers.tv import TotalVariation, project_dual_ball, tv


def test_tv_of_a_step_edge_and_a_diagonal():
    x = np.zeros((1, 5, 6))
    x[0, :, 3:] = 2.0  # vertical edge of height 5, jump 2
    assert float(tv(x)[0]) == pytest.approx(10.0)
    assert float(tv(x, p=1)[0]) == pytest.approx(10.0)
    d = np.zeros((1, 1, 2, 2))
    d[0, 0, 0, 0] = 1.0  # both forward differences -1 at the corner pixel
    assert float(tv(d)[0]) == pytest.approx(np.sqrt(2.0))
    assert float(tv(d, p=1)[0]) == pytest.approx(2.0)


def test_tv_is_per_sample_and_per_channel():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 4, 5))
    t = tv(x)
    assert t.shape == (3,)
    assert float(t[1]) == pytest.approx(float(tv(x[1:2, :1])[0] + tv(x[1:2, 1:])[0]))


def test_projection():
    z = np.asarray([[[3.0, 4.0], [0.3, -0.4]]])
    np.testing.assert_allclose(project_dual_ball(z, 2), [[[0.6, 0.8], [0.3, -0.4]]])
    np.testing.assert_allclose(project_dual_ball(z, 1), [[[1.0, 1.0], [0.3, -0.4]]])
    with pytest.raises(ConfigError, match="expected 1"):
        project_dual_ball(z, 3)


def _gap(T, v, lam, u, p):
    """Primal-dual gap of min 1/2||u - v||^2 + lam TV(u): P(u) - D(p) >= 0, = 0 at the optimum."""
    prim = 0.5 * np.sum((u - v) ** 2, axis=(1, 2)) + lam * np.asarray(T.value(u))
    w = v + lam * np.asarray(T.grad.div(p))
    dual = 0.5 * np.sum(v**2, axis=(1, 2)) - 0.5 * np.sum(w**2, axis=(1, 2))
    return prim - dual


@pytest.mark.parametrize("p", [1, 2])
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), lam=st.floats(0.05, 1.0))
def test_prox_duality_gap_vanishes(p, seed, lam):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((2, 6, 7))
    T = TotalVariation((6, 7), p=p)
    u, q = T.prox_dual(v, lam, n_iter=3000)
    assert np.all(np.asarray(T.project(q)) == pytest.approx(q))  # dual feasible
    gap = _gap(T, v, lam, u, q)
    assert np.all(gap >= -1e-9)
    assert np.all(gap <= 1e-6 * (1 + np.sum(v**2)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_prox_array_api_strict_matches_numpy(dtype):
    v = np.random.default_rng(2).standard_normal((2, 1, 5, 6)).astype(dtype)
    T = TotalVariation((1, 5, 6))
    u = T.prox(array_api_strict.asarray(v), 0.4, n_iter=50)
    assert (
        isinstance(u, type(array_api_strict.asarray(v)))
        and u.dtype == array_api_strict.asarray(v).dtype
    )
    np.testing.assert_allclose(np.asarray(u), T.prox(v, 0.4, n_iter=50), rtol=1e-5, atol=1e-5)


def test_prox_matches_scipy_anisotropic_qp():
    """Anisotropic TV prox as a QP in (u, t): min 1/2||u-v||^2 + lam sum t, -t <= D u <= t."""
    rng = np.random.default_rng(1)
    h, w, lam = 4, 5, 0.3
    v = rng.standard_normal((h, w))
    n = h * w
    D = np.asarray(
        [
            Gradient2d((h, w)).forward(e.reshape(1, h, w)).reshape(-1)
            for e in np.eye(n)  # columns of the gradient matrix
        ]
    ).T
    m = D.shape[0]

    def f(z):
        return 0.5 * np.sum((z[:n] - v.ravel()) ** 2) + lam * np.sum(z[n:])

    def g(z):
        return np.concatenate([z[:n] - v.ravel(), lam * np.ones(m)])

    cons = [
        LinearConstraint(np.hstack([D, np.eye(m)]), 0, np.inf),
        LinearConstraint(np.hstack([-D, np.eye(m)]), 0, np.inf),
    ]
    z0 = np.concatenate([v.ravel(), np.abs(D @ v.ravel()) + 1])
    r = minimize(f, z0, jac=g, constraints=cons, method="SLSQP", options={"ftol": 1e-14})
    u = TotalVariation((h, w), p=1).prox(v[None], lam, n_iter=5000)[0]
    np.testing.assert_allclose(u.ravel(), r.x[:n], atol=1e-5)


def test_prox_errors_and_zero_lambda():
    T = TotalVariation((3, 3))
    v = np.ones((1, 3, 3))
    np.testing.assert_array_equal(T.prox(v, 0.0), v)
    with pytest.raises(ConfigError, match="n_iter"):
        T.prox(v, 1.0, n_iter=0)
    with pytest.raises(ConfigError, match="p"):
        TotalVariation((3, 3), p=3)
