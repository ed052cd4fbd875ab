"""PLUGIn and gradient descent on explicit generators (Joshi et al., 2021)."""

from __future__ import annotations

import numpy as np
import pytest

from refinv.onnx.graph import Activation, dense_chain
from refinv.solvers.generators import (
    DenseNet,
    gradient_descent,
    leaky_constant,
    plugin,
    plugin_step_size,
)


def gaussian_chain(rng, widths, act="relu"):
    """Weights A_i (n_i x n_{i-1}) with i.i.d. N(0, 1/n_i) entries (Joshi et al.'s (2021) model)."""
    ws = [
        rng.standard_normal((b, a)) / np.sqrt(b)
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    ]
    return dense_chain(ws, act)


@pytest.mark.parametrize("act", ["relu", "leaky_relu:0.2"])
def test_monte_carlo_unbiasedness_of_the_library_gradient(act):
    """E[A^T s(A x)] = lambda x for A with i.i.d. N(0, 1/m) entries (eq. 7 of Joshi et al., 2021), with
    lambda = leaky_constant(s) ((1 + c) / 2) and A^T s(A x) computed by the library:
    DenseNet.backward(pres, A x) = A^T D A x = A^T s(A x) (s(a) = D a, D = diag(s'(A x)))."""
    rng = np.random.default_rng(1234)
    m, n, T = 40, 4, 1500
    x = rng.standard_normal((1, n))
    v = []
    for _ in range(T):
        net = DenseNet(gaussian_chain(rng, [n, m], act), like=x)
        _, pres = net.forward(x, keep=True)
        np.testing.assert_allclose(pres[0], x @ net.chain.layers[0].weight.T)
        v.append(net.backward(pres, pres[0])[0])
    v = np.asarray(v)
    lam = leaky_constant(Activation("relu") if act == "relu" else Activation("leaky_relu", 0.2))
    mean, se = v.mean(0), v.std(0, ddof=1) / np.sqrt(T)
    assert np.all(np.abs(mean - lam * x[0]) <= 5 * se), (mean, lam * x[0], se)
    # and it can fail: the bias of a wrong constant is detected
    assert np.any(np.abs(mean - (lam - 0.15) * x[0]) > 5 * se)


def test_gradient_descent_default_step_is_one_over_the_product_of_squared_norms():
    """step = 1 / prod_i ||A_i||_2^2, on weights whose norms are known by construction
    (||A_1|| = 2, ||A_2|| = 3): 1/36."""
    rng = np.random.default_rng(15)
    q1 = np.linalg.qr(rng.standard_normal((6, 3)))[0]  # orthonormal columns
    q2 = np.linalg.qr(rng.standard_normal((8, 6)))[0]
    A1 = 2.0 * q1 * np.array([1.0, 0.5, 0.25])
    A2 = 3.0 * q2 * np.array([1.0, 0.9, 0.1, 0.2, 0.3, 0.4])
    ch = dense_chain([A1, A2], "relu")
    y = ch.forward(rng.standard_normal((2, 3)))
    r = gradient_descent(ch, y, max_iter=1, tol=0.0)
    assert r.info["step"] == pytest.approx(1 / 36, rel=1e-12)


def test_one_plugin_step_with_eta_2_is_unbiased_for_d_1():
    """x^1 = x^0 - 2 A^T(ReLU(A x^0) - ReLU(A x*)) has mean x* for any fixed x^0."""
    rng = np.random.default_rng(7)
    m, n, T = 30, 3, 600
    xs = rng.standard_normal((1, n))
    x0 = rng.standard_normal((1, n))
    est = []
    for _ in range(T):
        ch = gaussian_chain(rng, [n, m])
        y = ch.forward(xs)
        r = plugin(ch, y, x0=x0, step="gaussian", max_iter=1, tol=0.0)
        est.append(r.x[0])
        assert r.info["step"] == 2.0
    est = np.asarray(est)
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(T)
    assert np.all(np.abs(mean - xs[0]) <= 5 * se)


@pytest.mark.parametrize("c", [0.0, 0.01, 0.1, 0.5])
def test_leaky_constant_closed_form_and_monte_carlo(c):
    lam = leaky_constant(Activation("leaky_relu", c) if c else Activation("relu"))
    assert lam == pytest.approx((1 + c) / 2, abs=1e-15)
    g = np.random.default_rng(3).standard_normal(200_000)
    v = g * np.where(g >= 0, g, c * g)
    assert abs(v.mean() - lam) <= 5 * v.std() / np.sqrt(g.size)


def test_leaky_constant_tanh_quadrature_matches_monte_carlo():
    g = np.random.default_rng(4).standard_normal(400_000)
    v = g * np.tanh(g)
    assert abs(leaky_constant(Activation("tanh")) - v.mean()) <= 5 * v.std() / np.sqrt(g.size)


def test_step_size_rules():
    rng = np.random.default_rng(5)
    ch = gaussian_chain(rng, [3, 20, 30, 40])
    assert plugin_step_size(ch, "gaussian") == 8.0
    assert plugin_step_size(ch, "leaky") == pytest.approx(8.0)
    norms = [np.linalg.norm(lay.weight, 2) for lay in ch]
    assert plugin_step_size(ch, "norm") == pytest.approx(1 / np.prod(norms))
    lk = dense_chain([lay.weight for lay in ch], "leaky_relu:0.2")
    assert plugin_step_size(lk, "leaky") == pytest.approx((2 / 1.2) ** 3)
    assert plugin_step_size(ch, 1.5) == 1.5


def test_plugin_recovers_expansive_gaussian_network_and_is_batch_independent():
    rng = np.random.default_rng(6)
    ch = gaussian_chain(rng, [3, 150, 150])
    x = rng.standard_normal((4, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = ch.forward(x)
    r = plugin(ch, y, step=3.0, max_iter=3000, tol=1e-13)
    assert np.all(np.linalg.norm(r.x - x, axis=1) <= 1e-8)
    assert r.converged.all()
    r1 = plugin(ch, y[2:3], step=3.0, max_iter=3000, tol=1e-13)
    np.testing.assert_allclose(r1.x[0], r.x[2], atol=1e-12)


def test_plugin_mask_ignores_unobserved_entries():
    rng = np.random.default_rng(8)
    ch = gaussian_chain(rng, [3, 120, 200])
    x = rng.standard_normal((2, 3))
    y = ch.forward(x)
    mask = (rng.random(y.shape) > 0.4).astype(float)
    garbage = np.where(mask > 0, y, 1e3)
    a = plugin(ch, y, mask=mask, step=3.0, max_iter=500)
    b = plugin(ch, garbage, mask=mask, step=3.0, max_iter=500)
    np.testing.assert_allclose(a.x, b.x, atol=1e-12)


def test_restarts_keep_the_lowest_measurement_error():
    rng = np.random.default_rng(9)
    ch = gaussian_chain(rng, [4, 30, 30])  # not expansive enough: starts disagree
    x = rng.standard_normal((3, 4))
    y = ch.forward(x)
    r = plugin(ch, y, step=2.0, max_iter=200, restarts=4, rng=1)
    errs = np.asarray(r.info["restart_errors"])
    assert errs.shape == (3, 5)
    got = np.linalg.norm(ch.forward(r.x) - y, axis=1)
    np.testing.assert_allclose(got, errs.min(axis=1), rtol=1e-9, atol=1e-12)


def test_backward_is_the_gradient_finite_differences():
    rng = np.random.default_rng(10)
    ws = [rng.standard_normal((6, 3)), rng.standard_normal((5, 6))]
    bs = [rng.standard_normal(6), rng.standard_normal(5)]
    ch = dense_chain(ws, ["leaky_relu:0.2", "tanh"], bs)
    x = rng.standard_normal((2, 3))
    net = DenseNet(ch, like=x)
    y = rng.standard_normal((2, 5))
    out, pres = net.forward(x, keep=True)
    g = net.backward(pres, out - y)

    def f(v):
        return 0.5 * np.sum((net.forward(v) - y) ** 2, axis=1)

    eps = 1e-6
    fd = np.stack([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(3)], axis=1)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kw", [{}, {"backtracking": True}, {"momentum": 0.5}])
def test_gradient_descent_recovers_latent(kw):
    rng = np.random.default_rng(11)
    ch = gaussian_chain(rng, [3, 60, 80])
    x = rng.standard_normal((3, 3))
    y = ch.forward(x)
    r = gradient_descent(ch, y, x0=x + 0.05 * rng.standard_normal(x.shape), max_iter=4000, **kw)
    assert np.all(np.linalg.norm(r.x - x, axis=1) <= 1e-6 * np.linalg.norm(x, axis=1))


def test_backtracking_decreases_the_loss_every_step():
    rng = np.random.default_rng(12)
    ch = gaussian_chain(rng, [4, 40, 40])
    x = rng.standard_normal((2, 4))
    y = ch.forward(x)
    losses = []

    def cb(k, state, res):
        losses.append(0.5 * np.sum((ch.forward(state.x) - y[: state.x.shape[0]]) ** 2, axis=1))

    gradient_descent(ch, y, backtracking=True, step=10.0, max_iter=30, tol=0.0, callback=cb)
    L = np.stack(losses)
    assert np.all(np.diff(L, axis=0) <= 1e-12)


def test_array_api_strict_and_float32():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(13)
    ch = gaussian_chain(rng, [3, 50, 60])
    x = rng.standard_normal((2, 3))
    y = ch.forward(x)
    r = plugin(ch, xps.asarray(y), step=3.0, max_iter=50)
    assert type(r.x).__module__.startswith("array_api_strict")
    r32 = plugin(ch, y.astype(np.float32), step=3.0, max_iter=2000, tol=1e-6)
    assert r32.x.dtype == np.float32
    assert np.all(np.linalg.norm(r32.x - x, axis=1) < 1e-3)
    g = gradient_descent(ch, xps.asarray(y), max_iter=5, backtracking=True)
    assert type(g.x).__module__.startswith("array_api_strict")


def test_per_pixel_mask_broadcasts_over_channels():
    from refinv.onnx.graph import LayerChain

    rng = np.random.default_rng(14)
    base = gaussian_chain(rng, [3, 60, 48])
    ch = LayerChain(base.layers, base.in_shape, (3, 4, 4))
    x = rng.standard_normal((2, 3))
    y = ch.forward(x)
    pix = (rng.random((2, 1, 4, 4)) > 0.3).astype(float)
    full = np.broadcast_to(pix, y.shape)
    a = plugin(ch, np.where(full > 0, y, 7.0), mask=pix, step=3.0, max_iter=300)
    b = plugin(ch, y, mask=full.reshape(2, -1), step=3.0, max_iter=300)
    np.testing.assert_allclose(a.x, b.x, atol=1e-12)
    assert a.x.shape == (2, 3)
