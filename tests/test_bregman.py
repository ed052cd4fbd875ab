"""Lifted Bregman solvers: PDHG vs an independent solver, optimality, Landweber/Morozov,
coordinate descent, batching and backends."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest
from scipy.optimize import LinearConstraint, NonlinearConstraint, minimize

from refinv.errors import ConfigError, UnsupportedGraphError
from refinv.onnx.graph import Activation, Layer, LayerChain
from refinv.operators.activations import Identity, LeakyReLU, ReLU
from refinv.operators.linear import Conv2d, Dense, Gradient2d
from refinv.regularizers.tv import tv
from refinv.solvers.bregman import (
    BregmanLayer,
    invert_chain,
    multilayer_cd,
    perceptron_landweber,
    perceptron_pdhg,
)

H, W_ = 4, 4


def _grad_matrix(h, w):
    G = Gradient2d((h, w))
    return np.asarray([G.forward(e.reshape(1, h, w)).reshape(-1) for e in np.eye(h * w)]).T


def _scipy_tv_least_squares(A, b, y, alpha, p):
    """min_x 1/2||A x + b - y||^2 + alpha TV_p(x) with auxiliary t >= |grad x| (QP / SOCP)."""
    n = A.shape[1]
    D = _grad_matrix(H, W_)  # rows: (pixel, component) interleaved
    D0, D1 = D[0::2], D[1::2]
    nt = D.shape[0]

    def f(v):
        r = A @ v[:n] + b - y
        return 0.5 * r @ r + alpha * np.sum(v[n:])

    def g(v):
        return np.concatenate([A.T @ (A @ v[:n] + b - y), alpha * np.ones(nt)])

    if p == 2:
        return _scipy_tv_least_squares_dual(A, b, y, alpha, D0, D1)
    cons = [
        LinearConstraint(np.hstack([D, np.eye(nt)]), 0, np.inf),
        LinearConstraint(np.hstack([-D, np.eye(nt)]), 0, np.inf),
    ]
    x0 = np.linalg.lstsq(A, y - b, rcond=None)[0]
    v0 = np.concatenate([x0, np.abs(D @ x0) + 0.1])
    r = minimize(
        f, v0, jac=g, constraints=cons, method="SLSQP", options={"ftol": 1e-15, "maxiter": 2000}
    )
    return r.x[:n]


def _scipy_tv_least_squares_dual(A, b, y, alpha, D0, D1):
    """Isotropic case through the smooth dual (A of full column rank):
    max_{|p_ij| <= 1} min_x 1/2||A x + b - y||^2 + alpha <p, grad x>,
    x(p) = (A^T A)^{-1} (A^T (y - b) - alpha grad^T p)."""
    M = np.linalg.inv(A.T @ A)
    c = y - b
    Dt = np.hstack([D0.T, D1.T])  # grad^T acting on (p0, p1)
    npix = D0.shape[0]

    def x_of(q):
        return M @ (A.T @ c - alpha * Dt @ q)

    def negdual(q):
        x = x_of(q)
        r = A @ x - c
        return -(0.5 * r @ r + alpha * q @ (Dt.T @ x))

    def negdual_grad(q):  # envelope theorem: d/dq = alpha grad x(q)
        return -alpha * (Dt.T @ x_of(q))

    def ball(q):
        return 1.0 - q[:npix] ** 2 - q[npix:] ** 2

    def ball_jac(q):
        return np.hstack([np.diag(-2 * q[:npix]), np.diag(-2 * q[npix:])])

    r = minimize(
        negdual,
        np.zeros(2 * npix),
        jac=negdual_grad,
        constraints=[NonlinearConstraint(ball, 0, np.inf, jac=ball_jac)],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    return x_of(r.x)


@pytest.mark.parametrize("p", [1, 2])
def test_identity_pdhg_matches_independent_solver(p):
    rng = np.random.default_rng(0)
    m = 24  # the dual route for p = 2 needs full column rank
    A = rng.standard_normal((m, H * W_))
    b = 0.1 * rng.standard_normal(m)
    x_true = np.zeros((H, W_))
    x_true[1:3, 1:4] = 1.0
    y = A @ x_true.ravel() + b + 0.05 * rng.standard_normal(m)
    alpha = 0.5
    ref = _scipy_tv_least_squares(A, b, y, alpha, p)
    res = perceptron_pdhg(
        y[None],
        BregmanLayer(Dense(A), b[None], Identity()),
        alpha=alpha,
        p=p,
        x_shape=(H, W_),
        max_iter=60_000,
        tol=1e-8,
        check_every=20,
    )
    np.testing.assert_allclose(res.x.reshape(-1), ref, atol=1e-4)


def _pdhg_optimality(res, A, b, y, alpha, act, p=2):
    """At a PDHG fixed point: A^T (s(Ax+b) - y) = alpha div z and z in d||.||(grad x)."""
    x, z = res.x, res.state.z
    G = Gradient2d(x.shape[1:])
    r = act(A.forward(x) + b) - y
    stat = A.adjoint(r) - alpha * G.div(z)
    align = np.sum(G.forward(x) * z, axis=tuple(range(1, z.ndim))) - tv(x, p=p)
    return np.abs(stat).max(), np.abs(align).max()


@pytest.mark.parametrize("p", [1, 2])
def test_relu_pdhg_optimality_conditions(p):
    rng = np.random.default_rng(1)
    A = Dense(rng.standard_normal((60, 36)) / 6, in_shape=(1, 6, 6))
    b = 0.1 * rng.standard_normal((1, 60))
    x_true = np.zeros((2, 1, 6, 6))
    x_true[0, 0, 1:4, 2:5] = 1.0
    x_true[1, 0, 3:, :] = 0.5
    y = np.maximum(A.forward(x_true) + b, 0)
    res = perceptron_pdhg(
        y, BregmanLayer(A, b, ReLU()), alpha=0.05, p=p, max_iter=20_000, tol=1e-9, check_every=20
    )
    assert res.converged.all()
    stat, align = _pdhg_optimality(res, A, b, y, 0.05, ReLU(), p)
    assert stat < 1e-6 and align < 1e-6
    assert res.info["tau_z"] == pytest.approx(1 / (8 * 0.05))


def test_pdhg_batch_independent_and_strict_backend():
    rng = np.random.default_rng(2)
    Wm = rng.standard_normal((20, 25)) / 5
    b = 0.1 * rng.standard_normal((1, 20))
    y = np.maximum(rng.standard_normal((3, 20)), 0)
    lay = BregmanLayer(Dense(Wm, in_shape=(5, 5)), b, LeakyReLU(0.2))
    full = perceptron_pdhg(y, lay, alpha=0.05, max_iter=300, tol=1e-6)
    one = perceptron_pdhg(y[1:2], lay, alpha=0.05, max_iter=300, tol=1e-6)
    np.testing.assert_allclose(full.x[1], one.x[0], rtol=1e-10, atol=1e-12)
    assert full.iterations[1] == one.iterations[0]
    xs = array_api_strict
    lay_s = BregmanLayer(
        Dense(xs.asarray(Wm.astype("float32")), in_shape=(5, 5)),
        xs.asarray(b.astype("float32")),
        LeakyReLU(0.2),
    )
    ys = xs.asarray(y.astype("float32"))
    res = perceptron_pdhg(ys, lay_s, alpha=0.05, max_iter=50, tol=0.0)
    assert type(res.x) is type(ys) and res.x.dtype == xs.float32
    ref = perceptron_pdhg(y, lay, alpha=0.05, max_iter=50, tol=0.0)
    np.testing.assert_allclose(np.asarray(res.x), ref.x, atol=1e-4)


def test_pdhg_refuses_bad_input():
    lay = BregmanLayer(Dense(np.ones((3, 4))), None, ReLU())
    with pytest.raises(ConfigError, match="alpha"):
        perceptron_pdhg(np.ones((1, 3)), lay, alpha=0.0, x_shape=(2, 2))
    with pytest.raises(ValueError, match="image"):
        perceptron_pdhg(np.ones((1, 3)), lay, alpha=1.0)
    with pytest.raises(ValueError, match="expected shape"):
        perceptron_pdhg(np.ones((1, 5)), lay, alpha=1.0, x_shape=(2, 2))


def test_landweber_stops_at_first_discrepancy_crossing():
    rng = np.random.default_rng(3)
    A = Dense(rng.standard_normal((40, 25)) / 5)
    b = 0.1 * rng.standard_normal((1, 40))
    x = rng.standard_normal((2, 25))
    y0 = np.maximum(A.forward(x) + b, 0)
    noise = 0.01 * rng.standard_normal(y0.shape)
    y = np.maximum(y0 + noise, 0)
    delta = np.linalg.norm(y - y0, axis=1)
    lay = BregmanLayer(A, b, ReLU())
    res = perceptron_landweber(y, lay, delta=delta, tau_d=1.5, max_iter=50_000)
    assert res.converged.all()
    for i in range(2):
        k = int(res.iterations[i])
        disc = np.linalg.norm(np.maximum(A.forward(res.x[i : i + 1]) + b, 0) - y[i])
        assert disc <= 1.5 * delta[i]
        if k > 1:
            prev = perceptron_landweber(
                y[i : i + 1], lay, delta=delta[i], tau_d=1.5, max_iter=k - 1
            )
            d_prev = np.linalg.norm(np.maximum(A.forward(prev.x) + b, 0) - y[i])
            assert d_prev > 1.5 * delta[i]
    with pytest.raises(ConfigError, match="delta"):
        perceptron_landweber(y, lay, delta=0.0)


def test_cd_with_one_layer_is_the_pdhg():
    rng = np.random.default_rng(4)
    lay = BregmanLayer(Dense(rng.standard_normal((15, 16)) / 4, in_shape=(4, 4)), None, ReLU())
    y = np.maximum(rng.standard_normal((2, 15)), 0)
    a = perceptron_pdhg(y, lay, alpha=0.02, max_iter=40, tol=0.0)
    c = multilayer_cd(y, [lay], alpha=0.02, inner_iter=1, max_iter=40, tol=0.0)
    np.testing.assert_allclose(c.x, a.x, rtol=1e-12, atol=1e-14)


def _two_layer(rng, conv=False):
    if conv:
        A1 = Conv2d(rng.standard_normal((3, 1, 3, 3)) / 3, (1, 6, 6), strides=(2, 2), pads=(1,) * 4)
        b1 = 0.05 * rng.standard_normal((1, 3, 1, 1))
    else:
        A1 = Dense(rng.standard_normal((45, 36)) / 6, in_shape=(1, 6, 6), out_shape=(5, 3, 3))
        b1 = 0.05 * rng.standard_normal((1, 5, 3, 3))
    A2 = Dense(rng.standard_normal((20, 45 if not conv else 27)) / 5)
    b2 = 0.05 * rng.standard_normal((1, 20))
    return [BregmanLayer(A1, b1, LeakyReLU(0.5)), BregmanLayer(A2, b2, ReLU())]


def _objective(layers, x, h, y, alpha):
    """The lifted objective (3): B_1(h, A_1 x + b_1) + B_2(y, A_2 h + b_2) + alpha TV(x)."""
    l1, l2 = layers
    return (
        l1.act.bregman(h, l1.affine(x))
        + l2.act.bregman(y, l2.affine(np.reshape(h, (h.shape[0], -1))))
        + alpha * tv(x)
    )


@pytest.mark.parametrize(("conv", "alpha", "n_iter"), [(False, 0.05, 1500), (True, 0.05, 600)])
def test_cd_decreases_the_lifted_objective_and_reaches_a_fixed_point(conv, alpha, n_iter):
    rng = np.random.default_rng(5)
    layers = _two_layer(rng, conv)
    x_true = np.zeros((2, 1, 6, 6))
    x_true[0, 0, 1:4, 1:5] = 1.0
    x_true[1, 0, :3] = 0.7
    h_true = layers[0].act(layers[0].affine(x_true))
    y = layers[1].act(layers[1].affine(np.reshape(h_true, (2, -1))))
    short = multilayer_cd(y, layers, alpha=alpha, max_iter=5, tol=0.0)
    long = multilayer_cd(y, layers, alpha=alpha, max_iter=n_iter, tol=0.0)
    j_short = _objective(layers, short.x, short.state.h1, y, alpha)
    j_long = _objective(layers, long.x, long.state.h1, y, alpha)
    j_true = _objective(layers, x_true, h_true, y, alpha)
    assert np.all(j_long < j_short)
    assert np.all(j_long <= j_true + 1e-6)  # the minimizer is at least as good as the truth
    assert float(long.residual.max()) < 1e-4  # approaching a fixed point
    # the state is complete: a warm restart continues the same sequence
    cont = multilayer_cd(y, layers, alpha=alpha, max_iter=6, tol=0.0)
    again = multilayer_cd(
        y,
        layers,
        alpha=alpha,
        x0=short.x,
        z0=short.state.z,
        hidden0=[short.state.h1],
        max_iter=1,
        tol=0.0,
    )
    np.testing.assert_allclose(again.x, cont.x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(again.state.h1, cont.state.h1, rtol=1e-12, atol=1e-12)


def test_invert_chain_and_refusals():
    rng = np.random.default_rng(6)
    Wm = rng.standard_normal((10, 16)).astype(np.float32) / 4
    bias = np.zeros(10, dtype=np.float32)
    chain = LayerChain(
        [Layer("dense", Wm, bias, Activation("relu"), (1, 4, 4), (10,))], (1, 4, 4), (10,)
    )
    y = np.maximum(rng.standard_normal((2, 10)), 0).astype(np.float32)
    res = invert_chain(y, chain, alpha=0.01, max_iter=20)
    assert res.x.shape == (2, 1, 4, 4) and res.x.dtype == np.float32
    lw = invert_chain(y, chain, alpha=0.01, method="landweber", delta=0.5, max_iter=20)
    assert lw.method == "bregman-landweber"
    chain.layers[0].activation = Activation("tanh")
    with pytest.raises(UnsupportedGraphError, match="tanh"):
        invert_chain(y, chain, alpha=0.01)


def _tiny_encoder(path, W, b):
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "W", "b"], ["g"], transB=1),
        helper.make_node("Relu", ["g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "enc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", W.shape[0]])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def test_cli_bregman(tmp_path, capsys):
    import json

    from refinv.cli import main

    rng = np.random.default_rng(7)
    W = (rng.standard_normal((24, 16)) / 4).astype(np.float32)
    b = np.full(24, 2.0, dtype=np.float32)  # all units active: 24 equations, 16 unknowns
    _tiny_encoder(tmp_path / "enc.onnx", W, b)
    x = np.zeros((3, 1, 4, 4), dtype=np.float32)
    x[:, 0, 1:3, 1:3] = 1.0
    y = np.maximum(x.reshape(3, -1) @ W.T + b, 0)
    np.savez(tmp_path / "codes.npz", y=y, x=x)
    out = tmp_path / "out.json"
    argv = ["bregman", str(tmp_path / "enc.onnx"), str(tmp_path / "codes.npz")]
    rc = main([*argv, "--alpha", "1e-3", "--max-iter", "3000", "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["n"] == 3 and rep["method"] == "bregman-pdhg"
    assert rep["mean_psnr"] > 50  # near-exact recovery (55.45 dB measured, 3000 iterations)
    assert "mean PSNR" in capsys.readouterr().out
    rc = main(
        [*argv, "--alpha", "1e-3", "--max-iter", "3000", "--steps", "safe", "--json", str(out)]
    )
    safe = json.loads(out.read_text())
    assert rc == 0 and safe["steps"] == "safe" and safe["mean_psnr"] > 50
    capsys.readouterr()
    rc = main([*argv, "--method", "landweber", "--json", str(out)])
    assert rc == 2  # landweber needs --noise
    assert "noise level" in capsys.readouterr().err
    lw = [*argv, "--method", "landweber", "--noise", "0.01", "--add-noise", "--json", str(out)]
    assert main(lw) == 0
    rep = json.loads(out.read_text())
    assert rep["method"] == "bregman-landweber" and rep["added_noise"]
    assert all(s == "converged" for s in rep["solver"]["stop_reason"])


def test_safe_steps_converge_where_the_papers_steps_do_not():
    """TV denoising (A = I): the paper's default steps (1.99/||A||^2, 1/(8 alpha)) violate
    Condat-Vu's condition and oscillate; steps="safe" satisfies it and reaches the minimizer."""
    rng = np.random.default_rng(3)
    x_true = np.zeros((H, W_))
    x_true[1:3, 1:4] = 1.0
    y = x_true.ravel() + 0.1 * rng.standard_normal(H * W_)
    alpha = 0.3
    layer = BregmanLayer(Dense(np.eye(H * W_)), None, Identity())
    ref = _scipy_tv_least_squares(np.eye(H * W_), np.zeros(H * W_), y, alpha, 2)
    kw = dict(alpha=alpha, x_shape=(H, W_), max_iter=20_000, tol=1e-9, check_every=20)
    safe = perceptron_pdhg(y[None], layer, steps="safe", **kw)
    tau_x, tau_z = safe.info["tau_x"], safe.info["tau_z"]
    assert 1 / tau_x - 8 * tau_z * alpha**2 >= 0.5  # Condat-Vu with ||A|| = 1, ||grad||^2 <= 8
    np.testing.assert_allclose(safe.x.reshape(-1), ref, atol=1e-5)
    paper = perceptron_pdhg(y[None], layer, **{**kw, "max_iter": 2000})
    assert paper.info["tau_x"] == pytest.approx(1.99, rel=1e-6)
    assert not paper.converged[0] and np.abs(paper.x.reshape(-1) - ref).max() > 1e-2
    with pytest.raises(ConfigError, match="steps"):
        perceptron_pdhg(y[None], layer, steps="fast", **kw)


def test_cd_steps_option():
    """multilayer_cd takes the same step rule for its x_0 sub-problem (with ||A_1||)."""
    from refinv.operators.linear import operator_norm

    rng = np.random.default_rng(5)
    A1 = Dense(rng.standard_normal((20, 16)) / 3, in_shape=(1, 4, 4))
    A2 = Dense(rng.standard_normal((12, 20)) / 4)
    layers = [BregmanLayer(A1, None, ReLU()), BregmanLayer(A2, None, ReLU())]
    y = np.maximum(rng.standard_normal((2, 12)), 0)
    alpha = 0.2
    for steps in ("paper", "safe"):
        r = multilayer_cd(y, layers, alpha=alpha, steps=steps, max_iter=3)
        L = operator_norm(A1, like=y, rng=0) ** 2
        want = 1.99 / L if steps == "paper" else 0.99 / (L / 2 + 8 * (1 / (8 * alpha)) * alpha**2)
        assert r.info["tau_x"] == pytest.approx(want, rel=1e-9)
    with pytest.raises(ConfigError, match="steps"):
        multilayer_cd(y, layers, alpha=alpha, steps="fast", max_iter=3)


def _hand_grad(x):
    """Forward differences of an (h, w) image, zero at the last row/column: (h, w, 2)."""
    g = np.zeros((*x.shape, 2))
    g[:-1, :, 0] = x[1:, :] - x[:-1, :]
    g[:, :-1, 1] = x[:, 1:] - x[:, :-1]
    return g


def _hand_div(z):
    """div = -grad^T, from the definition <grad x, z> = -<x, div z> (by the matrix of grad)."""
    h, w = z.shape[:2]
    D = np.stack([_hand_grad(e.reshape(h, w)).reshape(-1) for e in np.eye(h * w)], axis=1)
    return -(D.T @ z.reshape(-1)).reshape(h, w)


def test_three_pdhg_steps_written_out_by_hand():
    """Eq. (14) with the over-relaxation 2 grad x^{k+1} - grad x^k, three steps from
    x^0 = 0, z^0 = 0, against the steps written out with NumPy; steps chosen so that the
    projection onto |z_ij| <= 1 is active."""
    rng = np.random.default_rng(21)
    Wm = rng.standard_normal((14, 12)) / 3
    b = 0.1 * rng.standard_normal(14)
    y = np.maximum(rng.standard_normal(14), 0)
    alpha, tau_x, tau_z = 0.7, 0.3, 2.0
    x, z = np.zeros((3, 4)), np.zeros((3, 4, 2))
    active = False
    for _ in range(3):
        r = np.maximum(Wm @ x.reshape(-1) + b, 0) - y
        x_new = x - tau_x * ((Wm.T @ r).reshape(3, 4) - alpha * _hand_div(z))
        q = z + tau_z * alpha * (2 * _hand_grad(x_new) - _hand_grad(x))
        nrm = np.sqrt(q[..., 0] ** 2 + q[..., 1] ** 2)
        active |= bool((nrm > 1).any())
        z = q / np.maximum(nrm, 1.0)[..., None]
        x = x_new
    assert active
    lay = BregmanLayer(Dense(Wm, in_shape=(3, 4)), b[None], ReLU())
    res = perceptron_pdhg(y[None], lay, alpha=alpha, tau_x=tau_x, tau_z=tau_z, max_iter=3, tol=0.0)
    np.testing.assert_allclose(res.x[0], x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.state.z[0], z, rtol=0, atol=1e-12)
    # the same x_0 step inside the coordinate descent (one layer: CD is the PDHG)
    cd = multilayer_cd(y[None], [lay], alpha=alpha, tau_x=tau_x, tau_z=tau_z, inner_iter=3,
                       max_iter=1, tol=0.0)  # fmt: skip
    np.testing.assert_allclose(cd.x[0], x, rtol=0, atol=1e-12)


def test_cd_hidden_steps_use_the_next_layers_norm():
    """tau_l = 1.99 / ||A_{l+1}||^2 for the hidden x_l (eq. 17), on weights whose norms are
    known by construction (2, 3 and 5)."""
    rng = np.random.default_rng(22)

    def scaled(m, n, s):  # singular values s, s/2, ... : norm s
        u = np.linalg.qr(rng.standard_normal((m, min(m, n))))[0]
        v = np.linalg.qr(rng.standard_normal((n, min(m, n))))[0]
        return (u * (s / (1 + np.arange(min(m, n))))) @ v.T

    A1, A2, A3 = (
        Dense(scaled(10, 16, 2.0), in_shape=(1, 4, 4)),
        Dense(scaled(8, 10, 3.0)),
        Dense(scaled(6, 8, 5.0)),
    )
    layers = [BregmanLayer(A, None, ReLU()) for A in (A1, A2, A3)]
    y = np.maximum(rng.standard_normal((1, 6)), 0)
    r = multilayer_cd(y, layers, alpha=0.1, max_iter=1)
    np.testing.assert_allclose(r.info["op_norms"], [2.0, 3.0, 5.0], rtol=1e-6)
    np.testing.assert_allclose(r.info["tau_hidden"], [1.99 / 9.0, 1.99 / 25.0], rtol=1e-6)
    assert r.info["tau_x"] == pytest.approx(1.99 / 4.0, rel=1e-6)
