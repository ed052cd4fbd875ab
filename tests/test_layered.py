"""Layered basis pursuit, Latent-Pursuit, the oracle and batched FISTA (Aberdam et al., 2020)."""

from __future__ import annotations

import numpy as np
import pytest

from refinv.onnx.graph import dense_chain
from refinv.solvers.fista import lasso
from refinv.solvers.generators import DenseNet
from refinv.solvers.layered import (
    _admm_layer,
    debias,
    latent_pursuit,
    layered_basis_pursuit,
    oracle,
    refit_on_support,
    supports_from_latent,
)


def random_gen(rng, n0, n1, n, out="tanh", hidden="relu", bias=False):
    W1 = rng.standard_normal((n1, n0)) / np.sqrt(n1)
    W2 = rng.standard_normal((n, n1)) / np.sqrt(n)
    bs = [0.1 * rng.standard_normal(n1), 0.1 * rng.standard_normal(n)] if bias else None
    return dense_chain([W1, W2], [hidden, out], bs)


@pytest.mark.parametrize("nonneg", [False, True])
def test_lasso_fista_kkt(nonneg):
    rng = np.random.default_rng(0)
    m, n, b, lam = 25, 40, 3, 0.05
    W = rng.standard_normal((m, n)) / np.sqrt(m)
    t = rng.standard_normal((b, m))
    mask = (rng.random((b, m)) > 0.2).astype(float)
    res = lasso(W, t, lam=lam, mask=mask, nonneg=nonneg, max_iter=20000, tol=1e-14)
    x = res.x
    g = ((x @ W.T - t) * mask) @ W  # gradient of the smooth part
    on = np.abs(x) > 1e-10
    if nonneg:
        assert np.all(x >= 0)
        np.testing.assert_allclose(g[on], -lam, atol=1e-6)
        assert np.all(g[~on] >= -lam - 1e-6)
    else:
        np.testing.assert_allclose(g[on], -lam * np.sign(x[on]), atol=1e-6)
        assert np.all(np.abs(g[~on]) <= lam + 1e-6)
    assert on.any() and (~on).any()  # the check is not vacuous


def _admm_problem(rng, latent):
    nj, m, b = 8, 20, 2
    W = rng.standard_normal((m, nj))
    xt = np.abs(rng.standard_normal((b, nj))) * (rng.random((b, nj)) > 0.3)
    h = np.maximum(xt @ W.T, 0) + 0.05 * rng.standard_normal((b, m))  # noisy: constraints bind
    S = (h > 0).astype(float)
    chain = dense_chain([W, np.eye(m)], ["relu", "identity"])
    net = DenseNet(chain, like=h)
    return net, W, h * S, S, 1 - S


@pytest.mark.parametrize("latent", [False, True])
def test_latent_pursuit_middle_layer_constraints_and_kkt(latent):
    rng = np.random.default_rng(1)
    net, W, t, S, Sc = _admm_problem(rng, latent)
    lam, rho, gamma = (0.0, 1.0, 0.1) if latent else (0.05, 1.0, 0.0)
    res = _admm_layer(
        net,
        0,
        t,
        S,
        Sc,
        lam=lam,
        rho=rho,
        gamma=gamma,
        nonneg=not latent,
        latent=latent,
        max_iter=60000,
        tol=1e-13,
        progress=False,
    )
    x, u = res.state.x, res.state.u
    pre = x @ W.T
    tol = 1e-6
    if not latent:
        assert np.all(x >= -tol)
    assert np.all(pre * Sc <= tol)  # W[S^c] x <= 0
    mu = -rho * u * Sc  # multiplier of W[S^c] x <= 0
    assert np.all(mu >= -tol)
    np.testing.assert_allclose(mu * pre * Sc, 0, atol=1e-5)  # complementary slackness
    r = ((pre - t) * S) @ W + mu @ W  # stationarity
    if latent:
        np.testing.assert_allclose(r + gamma * x, 0, atol=1e-5)
    else:
        r = r + lam
        on = x > 1e-8
        np.testing.assert_allclose(r[on], 0, atol=1e-5)
        assert np.all(r[~on] >= -1e-5)
    assert (mu > 1e-4).any()  # an inequality is active: the test sees the constraints


def test_oracle_equals_least_squares_on_supports():
    rng = np.random.default_rng(2)
    ch = random_gen(rng, 5, 30, 40, bias=True)
    z = rng.standard_normal((3, 5))
    y = ch.forward(z)
    y = np.clip(y + 0.01 * rng.standard_normal(y.shape), -0.99, 0.99)
    mask = (rng.random(y.shape) > 0.3).astype(float)
    res = oracle(ch, y, z_true=z, mask=mask)
    (h1,) = supports_from_latent(ch, z)
    W1, W2 = ch.layers[0].weight, ch.layers[1].weight
    b1, b2 = ch.layers[0].bias, ch.layers[1].bias
    for i in range(3):
        S = np.flatnonzero(h1[i] > 0)
        o = mask[i] > 0
        t = np.arctanh(y[i][o]) - b2[o]
        hS = np.linalg.lstsq(W2[o][:, S], t, rcond=None)[0]
        zi = np.linalg.lstsq(W1[S], hS - b1[S], rcond=None)[0]
        np.testing.assert_allclose(res.x[i], zi, atol=1e-9)
        np.testing.assert_allclose(res.state.hidden[0][i][S], hS, atol=1e-9)


@pytest.mark.parametrize("method", ["lbp", "lp"])
def test_layerwise_methods_recover_exactly_in_the_unique_regime(method):
    rng = np.random.default_rng(3)
    ch = random_gen(rng, 10, 60, 100)
    z = rng.standard_normal((4, 10))
    y = ch.forward(z)
    f = layered_basis_pursuit if method == "lbp" else latent_pursuit
    res = f(ch, y, max_iter=5000)
    snr = 20 * np.log10(np.linalg.norm(z, axis=1) / np.linalg.norm(res.x - z, axis=1))
    assert np.all(snr > 60), snr
    assert len(res.state.hidden) == 1 and res.info["stages"]


def test_layerwise_fail_when_first_layer_too_sparse():
    """s_1 < n_0: the first layer is not invertible (Theorem 2 iii); nothing recovers z."""
    rng = np.random.default_rng(4)
    ch = random_gen(rng, 20, 24, 100)  # s_1 ~ 12 < 20
    z = rng.standard_normal((3, 20))
    y = ch.forward(z)
    for res in (oracle(ch, y, z_true=z), latent_pursuit(ch, y, max_iter=500)):
        assert np.all(np.linalg.norm(res.x - z, axis=1) > 1e-3 * np.linalg.norm(z, axis=1))


def test_batched_equals_single_sample_with_different_supports():
    rng = np.random.default_rng(5)
    ch = random_gen(rng, 6, 40, 60)
    z = rng.standard_normal((3, 6))
    y = ch.forward(z)
    full = latent_pursuit(ch, y, max_iter=800, debias_result=False)
    one = latent_pursuit(ch, y[1:2], max_iter=800, debias_result=False)
    np.testing.assert_allclose(one.x[0], full.x[1], atol=1e-10)


def test_invertible_hidden_activation_and_biases():
    rng = np.random.default_rng(6)
    ch = random_gen(rng, 5, 20, 40, out="sigmoid", hidden="leaky_relu:0.2", bias=True)
    z = rng.standard_normal((3, 5))
    y = ch.forward(z)
    for f in (layered_basis_pursuit, latent_pursuit):
        res = f(ch, y, max_iter=3000)
        np.testing.assert_allclose(res.x, z, atol=1e-7)


def test_debias_with_true_supports_is_exact_and_inpainting():
    rng = np.random.default_rng(7)
    ch = random_gen(rng, 8, 40, 150)
    z = rng.standard_normal((2, 8))
    y = ch.forward(z)
    net = DenseNet(ch, like=y)
    mask = (rng.random(y.shape) > 0.45).astype(float)  # 45% missing, still > n_1 observed
    zz = debias(net, y, mask, supports_from_latent(ch, z))
    np.testing.assert_allclose(zz, z, atol=1e-9)
    res = latent_pursuit(ch, np.where(mask > 0, y, 0.0), mask=mask, max_iter=3000)
    np.testing.assert_allclose(res.x, z, atol=1e-7)


def test_array_api_strict_and_float32():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(8)
    ch = random_gen(rng, 5, 40, 60)
    z = rng.standard_normal((2, 5))
    y = ch.forward(z)
    for f in (latent_pursuit, layered_basis_pursuit):
        r = f(ch, xps.asarray(y), max_iter=2000)
        assert type(r.x).__module__.startswith("array_api_strict")
        np.testing.assert_allclose(np.asarray(r.x), z, atol=1e-9)
    r = oracle(ch, xps.asarray(y), z_true=xps.asarray(z))
    np.testing.assert_allclose(np.asarray(r.x), z, atol=1e-9)
    r32 = latent_pursuit(ch, y.astype(np.float32), max_iter=2000)
    assert r32.x.dtype == np.float32
    np.testing.assert_allclose(r32.x, z, atol=1e-4)


def test_relu_output_layer_is_one_more_relu_layer():
    rng = np.random.default_rng(9)
    ch = random_gen(rng, 5, 30, 150, out="relu")
    z = rng.standard_normal((2, 5))
    y = ch.forward(z)
    for f in (latent_pursuit, layered_basis_pursuit):
        res = f(ch, y, max_iter=4000)
        np.testing.assert_allclose(res.x, z, atol=1e-7)
    np.testing.assert_allclose(oracle(ch, y, z_true=z).x, z, atol=1e-9)


def test_shipped_trained_generator_when_present():
    """Seed 002's trained setting: 20-128-392-784, ReLU hidden, PLU output (models/)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "models"
    model = root / "onnx" / "digits28_gen_fc_20-128-392-784_decoder.onnx"
    codes = root / "latents" / "digits28_gen_fc_20-128-392-784_codes.npz"
    if not (model.is_file() and codes.is_file()):
        pytest.skip("shipped generator not present in models/")
    from refinv.onnx.graph import read_chain

    ch = read_chain(model)
    z = np.load(codes)["z_train"][:2].astype(np.float64)
    y = ch.forward(z)
    np.testing.assert_allclose(oracle(ch, y, z_true=z).x, z, rtol=1e-9, atol=1e-9)
    res = latent_pursuit(ch, y, max_iter=3000)
    err = np.linalg.norm(res.x - z, axis=1) / np.linalg.norm(z, axis=1)
    assert np.all(err < 1e-5), err


def test_refit_on_support_is_exact_on_a_superset_of_the_support():
    # t = W x* with supp(x*) = S subset of T = {h != 0}, W[r, T] full column rank:
    # argmin_{x_{T^c} = 0} ||r (t - W x)|| = x* (zeros on the spurious T \ S); |T| > sum(r): keep h
    rng = np.random.default_rng(3)
    m, n, b = 30, 45, 3
    W = rng.standard_normal((m, n)) / np.sqrt(m)
    xs = np.zeros((b, n))
    T = np.zeros((b, n), dtype=bool)
    for i in range(b):
        idx = rng.permutation(n)
        xs[i, idx[:10]] = np.abs(rng.standard_normal(10)) + 0.1
        T[i, idx[: 18 if i < 2 else 40]] = True  # 8 spurious entries; sample 2: |T| = 40 > 26
    rows = np.ones((b, m))
    rows[:, :4] = 0.0  # masked rows do not count (26 equations)
    t = xs @ W.T + (1 - rows) * 5.0  # masked rows carry garbage
    h = np.where(T, xs + 1e-3 * rng.standard_normal((b, n)), 0.0)  # a Lasso-like estimate
    x = refit_on_support(np, W, t, rows, h)
    np.testing.assert_allclose(x[:2], xs[:2], atol=1e-10)
    assert np.all(x[:2][~T[:2]] == 0)
    np.testing.assert_array_equal(x[2], h[2])  # no unique refit: unchanged


def test_lbp_refit_recovers_wherever_basis_pursuit_does():
    # the noiseless Algorithm 1 is basis pursuit (lam = 2 eps = 0). Near the l1 phase transition
    # the Lasso (lam > 0) solution keeps spurious O(lam) nonzeros: without the refit the support
    # read off h_1 is wrong; with it LBP recovers z wherever BP (an LP) recovers h_1
    from scipy.optimize import linprog

    rng = np.random.default_rng(0)
    n0, n1, n = 8, 56, 50
    chain = random_gen(rng, n0, n1, n)
    W2 = chain.layers[1].weight
    z = rng.standard_normal((8, n0))
    y = chain.forward(z)
    h1 = supports_from_latent(chain, z)[0]
    bp = np.zeros(len(z), dtype=bool)
    for i, x in enumerate(h1):
        r = linprog(np.ones(2 * n1), A_eq=np.hstack([W2, -W2]), b_eq=W2 @ x, bounds=(0, None))
        bp[i] = np.linalg.norm(r.x[:n1] - r.x[n1:] - x) < 1e-6 * np.linalg.norm(x)
    assert bp.sum() >= 4  # the check is not vacuous
    errs = {}
    for refit in (True, False):
        res = layered_basis_pursuit(chain, y, lam=1e-4, refit=refit, max_iter=20000, tol=1e-13)
        errs[refit] = np.linalg.norm(res.x - z, axis=1) / np.linalg.norm(z, axis=1)
    assert np.all(errs[True][bp] < 1e-6)
    assert np.any(errs[False][bp] > 1e-3)
