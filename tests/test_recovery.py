"""Recovery solvers: the closed-form steps, PnP-ADMM on known proxes, Theorem 1,
per-sample stopping, batch/chunk independence, divergence, bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import array_api_strict as xps
import numpy as np
import onnx
import pytest
from _doubles import CountingModel
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper, numpy_helper

from refinv import OnnxModel
from refinv.errors import (
    ConfigError,
    DivergenceWarning,
    DTypeError,
    MaskError,
    NonFiniteError,
    ShapeError,
)
from refinv.operators.masks import draw_masks, erase
from refinv.solvers.recovery import (
    ae_iterations,
    blind_recovery,
    initial_mask,
    known_mask_recovery,
    mask_step,
    v_update,
)

MODELS = Path(__file__).resolve().parents[1] / "models"


# ------------------------------------------------------------------ helpers
def onnx_ae(layers, sample_shape, dtype=np.float64, slope=0.1):
    """Flatten -> [Gemm (+ LeakyRelu)]* -> Reshape; layers = [(W (out, in), b, act: bool)]."""
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    nodes = [helper.make_node("Flatten", ["x"], ["h0"], axis=1)]
    inits = []
    cur = "h0"
    for i, (w, b, act) in enumerate(layers):
        inits += [
            numpy_helper.from_array(np.asarray(w, dtype), f"W{i}"),
            numpy_helper.from_array(np.asarray(b, dtype), f"b{i}"),
        ]
        nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"b{i}"], [f"g{i}"], transB=1))
        cur = f"g{i}"
        if act:
            nodes.append(helper.make_node("LeakyRelu", [cur], [f"a{i}"], alpha=slope))
            cur = f"a{i}"
    out_n = int(np.asarray(layers[-1][0]).shape[0])
    out_shape = list(sample_shape) if out_n == int(np.prod(sample_shape)) else [out_n]
    inits.append(numpy_helper.from_array(np.array([-1, *out_shape], np.int64), "shape"))
    nodes.append(helper.make_node("Reshape", [cur, "shape"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "ae",
        [helper.make_tensor_value_info("x", elem, ["N", *sample_shape])],
        [helper.make_tensor_value_info("y", elem, ["N", *out_shape])],
        initializer=inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def projection(images):
    """Orthogonal projection onto the span of ``images`` (N, ...): a linear prox."""
    B = images.reshape(images.shape[0], -1).T
    Q, _ = np.linalg.qr(B)
    return Q @ Q.T


def np_linear(P, shape):
    return lambda a: (a.reshape(a.shape[0], -1) @ P.T).reshape(a.shape[0], *shape)


def mlp_ae(n, width, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((width, n)) * scale / np.sqrt(n)
    w2 = rng.standard_normal((n, width)) * scale / np.sqrt(width)
    return [(w1, 0.1 * rng.standard_normal(width), True), (w2, np.zeros(n), False)]


# ------------------------------------------------------------------ v-update
@given(
    data=st.data(),
    n=st.integers(1, 12),
    rho=st.floats(1e-3, 1e3),
)
@settings(max_examples=60, deadline=None)
def test_v_update_is_the_exact_minimizer(data, n, rho):
    fl = st.floats(-10, 10, allow_nan=False)
    y = data.draw(arrays(np.float64, n, elements=fl))
    w = data.draw(arrays(np.float64, n, elements=fl))
    h = data.draw(arrays(np.float64, n, elements=st.sampled_from([0.0, 1.0])))
    v = v_update(y, h, w, rho)

    def obj(v):
        return 0.5 * np.sum((y - h * v) ** 2) + 0.5 * rho * np.sum((v - w) ** 2)

    # gradient zero: H^T (H v - y) + rho (v - w) = 0 (strictly convex, so the minimizer)
    grad = h * (h * v - y) + rho * (v - w)
    assert np.max(np.abs(grad)) <= 1e-9 * (1 + rho) * (1 + np.max(np.abs(y)) + np.max(np.abs(w)))
    # and no random perturbation does better
    e = np.random.default_rng(n).standard_normal((8, n)) * 1e-3
    assert all(obj(v) <= obj(v + ei) + 1e-12 for ei in e)


# ------------------------------------------------------------------ mask step
@given(
    data=st.data(),
    c=st.integers(1, 3),
    npx=st.integers(1, 6),
    tau=st.sampled_from([0.0, 0.01, 0.3]),
)
@settings(max_examples=60, deadline=None)
def test_mask_step_is_optimal_over_all_binary_masks(data, c, npx, tau):
    el = st.floats(-2, 2, allow_nan=False).map(lambda v: round(v, 3))
    y = data.draw(arrays(np.float64, (1, c, 1, npx), elements=el))
    x = data.draw(arrays(np.float64, (1, c, 1, npx), elements=el))
    # zero some y entries like an erasure does
    y = np.where(data.draw(arrays(np.bool_, (1, 1, 1, npx))), 0.0, y)
    h = mask_step(y, x, tau)
    assert h.shape == (1, 1, 1, npx) and set(np.unique(h)) <= {0.0, 1.0}

    def obj(hh):  # ||y - H x||^2 summed over channels + tau per erased pixel
        return np.sum((y - hh * x) ** 2) + tau * np.sum(1 - hh)

    best = min(
        obj(np.array([(k >> i) & 1 for i in range(npx)], float).reshape(1, 1, 1, npx))
        for k in range(2**npx)
    )
    assert obj(h) <= best + 1e-12


def test_mask_step_flat_samples_and_strict():
    y = np.array([[0.0, 0.5, 0.2]])
    x = np.array([[0.3, 0.5, 0.5]])
    np.testing.assert_array_equal(mask_step(y, x), [[0.0, 1.0, 0.0]])
    hs = mask_step(xps.asarray(y), xps.asarray(x))
    assert type(hs) is type(xps.asarray(y))


# ------------------------------------------------------------------ known proxes
@given(seed=st.integers(0, 10_000), t=st.floats(0.01, 0.5), rho=st.sampled_from([0.5, 1.0, 2.0]))
@settings(max_examples=15, deadline=None)
def test_pnp_admm_with_soft_threshold_solves_the_lasso(seed, t, rho):
    # f = soft threshold at t = prox of (rho t)||.||_1 / rho, so ADMM solves
    # min 1/2||y - Hx||^2 + rho t ||x||_1: x_i = soft(y_i, rho t) observed, 0 erased.
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((3, 1, 4, 5))
    m = draw_masks("random:0.4", (1, 4, 5), 3, seed)
    y = erase(x0, m)

    def soft(a):
        return np.sign(a) * np.maximum(np.abs(a) - t, 0.0)

    r = known_mask_recovery(soft, y, m, rho=rho, reinsert=False, max_iter=500, tol=1e-13)
    lasso = np.sign(y) * np.maximum(np.abs(y) - rho * t, 0.0)
    expect = np.where(m[:, None], lasso, 0.0)
    np.testing.assert_allclose(r.x, expect, atol=1e-8)


@given(seed=st.integers(0, 10_000))
@settings(max_examples=10, deadline=None)
def test_pnp_admm_with_a_projection_solves_constrained_least_squares(seed):
    rng = np.random.default_rng(seed)
    basis = rng.random((3, 1, 4, 4))
    P = projection(basis)
    f = np_linear(P, (1, 4, 4))
    m = draw_masks("random:0.5", (1, 4, 4), 2, seed)
    y = erase(rng.random((2, 1, 4, 4)), m, noise_std=0.05, rng=seed)  # y not in the subspace
    r = known_mask_recovery(f, y, m, reinsert=False, max_iter=3000, tol=1e-14, inner_iter=5)
    B = basis.reshape(3, -1).T
    for i in range(2):
        hi = m[i].reshape(-1)
        c, *_ = np.linalg.lstsq(B[hi], y[i].reshape(-1)[hi], rcond=None)
        np.testing.assert_allclose(r.x[i].reshape(-1), B @ c, atol=1e-7)


def test_known_mask_recovers_subspace_members_exactly_with_reinsertion():
    rng = np.random.default_rng(1)
    train = rng.random((4, 1, 6, 6))
    f = np_linear(projection(train), (1, 6, 6))
    m = draw_masks("random:0.5", (1, 6, 6), 4, 0)
    y = erase(train, m)
    r = known_mask_recovery(f, y, m, max_iter=2000, tol=1e-13)
    np.testing.assert_allclose(r.x, train, atol=1e-8)
    assert r.converged.all()
    np.testing.assert_array_equal(r.x[:, 0][m], y[:, 0][m])  # eq. (31)


# ------------------------------------------------------------------ Theorem 1
def fd_jacobian(f, x, eps=1e-6):
    """Central finite differences of f at flat x (n,), all directions in one batch."""
    n = x.shape[0]
    pts = np.concatenate([x + eps * np.eye(n), x - eps * np.eye(n)])
    out = np.asarray(f(pts.astype(x.dtype)), dtype=np.float64).reshape(2 * n, -1)
    return ((out[:n] - out[n:]) / (2 * eps)).T


def check_prox_jacobian(J, tol):
    assert np.max(np.abs(J - J.T)) <= tol
    ev = np.linalg.eigvalsh(0.5 * (J + J.T))
    assert ev.min() >= -tol and ev.max() <= 1 + tol


@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 8),
    k=st.integers(1, 10),
    slope=st.floats(0.0, 1.0),
    smax=st.floats(0.1, 1.0),
)
@settings(max_examples=25, deadline=None)
def test_theorem1_random_tied_autoencoders(seed, n, k, slope, smax):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((k, n))
    W *= smax / np.linalg.norm(W, 2)  # all singular values in [0, 1]
    b = rng.standard_normal(k)
    c = rng.standard_normal(n)

    def f(x):  # W^T s(W x + b) + c, s = leaky ReLU (s' in [0, 1])
        a = x @ W.T + b
        return np.where(a > 0, a, slope * a) @ W + c

    for _ in range(3):
        x = rng.standard_normal(n)
        assume(np.min(np.abs(W @ x + b)) > 1e-4)  # FD away from the kinks
        check_prox_jacobian(fd_jacobian(f, x), 1e-6)


def test_theorem1_shipped_tied_autoencoder():
    path = MODELS / "onnx" / "tied_digits8_lrelu_k128.onnx"
    if not path.is_file():
        pytest.skip(f"shipped tied autoencoder {path} not present (models/ not trained yet)")
    f = OnnxModel(path)
    n = int(np.prod(f.sample_shape))
    rng = np.random.default_rng(0)
    data = MODELS / "data" / "digits8.npz"
    pts = [rng.random(n)]
    if data.is_file():
        pts.append(np.load(data)["train"][0].reshape(-1))
    for x in pts:
        J = fd_jacobian(lambda p: f(p.reshape(-1, *f.sample_shape).astype(np.float32)), x, 3e-3)
        # float32 network: FD error ~ 1e-7 / 3e-3 (measured ~2e-4)
        check_prox_jacobian(J, 2e-3)


# ------------------------------------------------------------------ per-sample stopping
def test_per_sample_stopping_counts():
    c = np.full((1, 1, 2, 2), 0.5)

    def f(x):  # contraction to c at rate 1/2: relative change decays like 2^-k |x0 - c|
        return c + 0.5 * (x - c)

    y = c + np.array([1e-3, 1.0, 1e3])[:, None, None, None] * np.ones((3, 1, 2, 2))
    r = ae_iterations(f, y, tol=1e-8, max_iter=200)
    assert r.converged.all() and len(set(r.iterations.tolist())) == 3
    for i in range(3):
        ri = ae_iterations(f, y[i : i + 1], tol=1e-8, max_iter=200)
        assert ri.iterations[0] == r.iterations[i]
        np.testing.assert_array_equal(ri.x[0], r.x[i])


@pytest.fixture(scope="module")
def ae64():
    """A float64 ONNX MLP autoencoder on (1, 5, 5) and images it roughly reproduces."""
    layers = mlp_ae(25, 40, 3, scale=0.9)
    proto = onnx_ae(layers, (1, 5, 5), np.float64)
    x = np.random.default_rng(2).random((7, 1, 5, 5))
    return proto, x


@pytest.mark.parametrize("method", ["blind", "known", "ae-iterations"])
def test_batch_composition_and_chunk_size_independence(ae64, method):
    proto, x = ae64
    m = draw_masks("random:0.4", (1, 5, 5), 7, 0)
    y = erase(x, m)
    h0 = draw_masks("random:0.5", (1, 5, 5), 7, 1)  # explicit per-sample initial masks

    def solve(f, idx):
        kw = dict(max_iter=15, tol=1e-9)
        if method == "blind":
            return blind_recovery(f, y[idx], mask_init=h0[idx], clip=True, **kw)
        if method == "known":
            return known_mask_recovery(f, y[idx], m[idx], **kw)
        return ae_iterations(f, y[idx], clip=True, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        full = solve(OnnxModel(proto), np.arange(7))
        chunked = solve(OnnxModel(proto, batch_size=3), np.arange(7))
        sub = solve(OnnxModel(proto), np.array([5, 1, 3]))
    np.testing.assert_allclose(chunked.x, full.x, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(chunked.iterations, full.iterations)
    np.testing.assert_allclose(sub.x, full.x[[5, 1, 3]], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sub.iterations, full.iterations[[5, 1, 3]])


def test_divergence_flagged_others_continue():
    def f(x):  # explodes samples whose first pixel is large, contracts the others
        big = x[:, :1, :1, :1] > 0.5
        return np.where(big, 3.0 * x, 0.5 * x)

    y = np.concatenate([np.full((1, 1, 2, 2), 0.9), np.full((1, 1, 2, 2), 0.1)])
    with pytest.warns(DivergenceWarning):
        r = ae_iterations(f, y, max_iter=100, tol=0)
    assert r.diverged.tolist() == [True, False]
    assert r.iterations[1] == 100 and r.iterations[0] < 100
    assert r.stop_reason[0] == "diverged"


# ------------------------------------------------------------------ misc behaviour
def test_float32_and_float64_and_strict():
    rng = np.random.default_rng(0)
    train = rng.random((3, 1, 4, 4))
    P = projection(train)
    m = draw_masks("random:0.3", (1, 4, 4), 3, 0)
    for dt in (np.float32, np.float64):
        y = erase(train.astype(dt), m)
        r = blind_recovery(np_linear(P.astype(dt), (1, 4, 4)), y, max_iter=5)
        assert r.x.dtype == dt and r.state.h.shape == (3, 1, 4, 4)
    ys = xps.asarray(erase(train, m))
    Ps = xps.asarray(P)

    def fs(a):
        return xps.reshape(xps.reshape(a, (a.shape[0], -1)) @ Ps, a.shape)

    for r in (
        blind_recovery(fs, ys, max_iter=3),
        known_mask_recovery(fs, ys, m, max_iter=3),
        ae_iterations(fs, ys, max_iter=3),
    ):
        assert type(r.x) is type(ys)


def test_initial_masks():
    y = np.zeros((2, 3, 4, 5))
    y[0, 1, 2, 3] = 0.7
    nz = initial_mask("nonzero", y)
    assert nz.shape == (2, 1, 4, 5) and nz.sum() == 1 and nz[0, 0, 2, 3] == 1
    assert initial_mask("ones", y).sum() == 40
    b1 = initial_mask("bernoulli", y, rng=5)
    np.testing.assert_array_equal(b1, initial_mask("bernoulli:0.5", y, rng=5))
    assert 0 < b1.sum() < 40
    assert initial_mask("bernoulli:0", y, rng=0).sum() == 0
    for bad in ("bernoulli:2", "zeros", "ones:1"):
        with pytest.raises(ConfigError):
            initial_mask(bad, y)
    with pytest.raises(MaskError):
        initial_mask(np.full((4, 5), 0.5), y)


def test_bad_inputs(ae64):
    proto, x = ae64
    f = OnnxModel(proto)
    m = draw_masks("random:0.5", (1, 5, 5), 7, 0)
    y = erase(x, m)
    with pytest.raises(MaskError):
        known_mask_recovery(f, y, np.where(m, 1.0, 0.5))
    with pytest.raises(MaskError):
        known_mask_recovery(f, y, m[:, :4])
    with pytest.raises(MaskError):
        known_mask_recovery(f, y, m[:3])
    with pytest.raises(ShapeError, match="model"):
        blind_recovery(f, y[:, :, :4])
    bad = y.copy()
    bad[2, 0, 1, 1] = np.nan
    for solver in (blind_recovery, ae_iterations):
        with pytest.raises(NonFiniteError):
            solver(f, bad)
    with pytest.raises(NonFiniteError):
        known_mask_recovery(f, bad, m)
    with pytest.raises(DTypeError):
        blind_recovery(f, (y * 10).astype(np.int64))
    not_ae = OnnxModel(onnx_ae([(np.ones((3, 25)), np.zeros(3), False)], (1, 5, 5)))
    with pytest.raises(ShapeError, match="not an autoencoder"):
        blind_recovery(not_ae, y)
    with pytest.raises(ShapeError, match="not an autoencoder"):
        ae_iterations(lambda a: a[:, :, :2], y)
    for kw in ({"rho": 0.0}, {"max_iter": 0}, {"tol": -1.0}, {"inner_iter": 0}, {"tau": -1.0},
               {"clip": (1.0, 0.0)}):  # fmt: skip
        with pytest.raises(ConfigError):
            blind_recovery(f, y, **kw)


@pytest.mark.parametrize("model", ["faces25_lrelu_6x256", "digits28_lrelu_6x256"])
def test_shipped_mlp_blind_beats_baseline(model):
    """Smoke check on the shipped perfect-fit MLPs (faces, digits): blind recovers, baseline not."""
    man = MODELS / "MANIFEST.json"
    path = MODELS / "onnx" / f"{model}.onnx"
    if not (man.is_file() and path.is_file()):
        pytest.skip(f"shipped model {path} not present (models/ not trained yet)")
    rec = json.loads(man.read_text())["files"][f"onnx/{model}.onnx"]
    x = np.load(MODELS / rec["dataset"])["train"][:20]
    f = OnnxModel(path)
    m = draw_masks("random:0.5", f.sample_shape, 20, 0)
    y = erase(x, m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        rb = blind_recovery(f, y)
        ra = ae_iterations(f, y, max_iter=200)
    acc_b = np.mean(np.mean((rb.x.astype(np.float64) - x) ** 2, axis=(1, 2, 3)) < 1e-7)
    acc_a = np.mean(np.mean((ra.x.astype(np.float64) - x) ** 2, axis=(1, 2, 3)) < 1e-7)
    # docs: 87% blind accurate recovery on faces25 (first 20 images, seed 0: 90% measured;
    # digits28 95%), the baseline recovers none (0% measured on both)
    assert acc_b >= 0.85 and acc_a == 0.0


def test_one_outer_iteration_matches_the_algorithm_box():
    """One outer iteration (K = 2) equals eqs. (12)-(17) then eq. (20), written out by hand."""
    rng = np.random.default_rng(4)
    P = projection(rng.random((3, 1, 4, 4)))
    f = np_linear(P, (1, 4, 4))
    x0 = rng.random((2, 1, 4, 4))
    m = draw_masks("random:0.5", (1, 4, 4), 2, 0)
    y = erase(x0, m)
    h = np.ones((2, 1, 4, 4))
    rho = 0.7
    z, u = y, np.zeros_like(y)
    for _ in range(2):
        w = z - u
        v = (h * y + rho * w) / (h + rho)  # eq. (17), written out (not the library's v_update)
        z = f(v + u)  # eq. (16)
        u = u + v - z  # eq. (14)
    h_new = ((y - z) ** 2 <= y**2).astype(float)  # eq. (20), one channel
    r = blind_recovery(f, y, max_iter=1, inner_iter=2, rho=rho, mask_init="ones", tol=0)
    np.testing.assert_allclose(r.state.z, z, rtol=0, atol=1e-14)
    np.testing.assert_allclose(r.state.u, u, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(r.state.h, h_new)
    assert 0 < h_new.sum() < h_new.size  # the mask step changed something
    np.testing.assert_array_equal(r.x, r.state.z)


def _exact_rate(f, x, m, solver, **kw) -> float:
    """Share of the images ``x`` that ``solver`` recovers exactly (MSE < 1e-7) from
    ``erase(x, m)`` through ``f`` (diverged samples count as failures)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        r = solver(f, erase(x, m), **kw)
    mse = np.mean((np.asarray(r.x, np.float64) - x) ** 2, axis=(1, 2, 3))
    return float(np.mean(np.nan_to_num(mse, nan=np.inf) < 1e-7))


def test_shipped_conv_autoencoder_memorizes():
    """The convolutional row (models/README.md, colour16 trials): the plain conv autoencoder
    with a 64-value bottleneck gives its training images back under blind and known-mask
    recovery and never its held-out images; AE iterations alone recover none. Measured on
    all 50 images: blind 84%, known 90%, AE iterations 0%, held-out 0% (the first 12
    training images are all recovered by both)."""
    man = MODELS / "MANIFEST.json"
    path = MODELS / "onnx" / "colour16_convae_lrelu_c4.onnx"
    if not (man.is_file() and path.is_file()):
        pytest.skip(f"shipped model {path} not present")
    data = np.load(MODELS / "data" / "colour16.npz")
    f = OnnxModel(path)
    m = draw_masks("random:0.5", f.sample_shape, 12, 0)
    train, test = data["train"][:12], data["test"][:12]
    assert _exact_rate(f, train, m, blind_recovery) >= 0.9
    assert _exact_rate(f, train, m, known_mask_recovery, mask=m) >= 0.9
    assert _exact_rate(f, train, m, ae_iterations, max_iter=100) == 0.0
    assert _exact_rate(f, test, m, blind_recovery) == 0.0


def test_shipped_gradient_trained_unet_memorizes():
    """The U-Net trained by gradient descent alone (models/README.md, "U-Nets trained by
    gradient descent alone"; Abitbul and Dar 2023, Sec. 4, at 10 images): blind and known-mask
    recovery give back its 10 training patches exactly, AE iterations fewer, no held-out patch.
    Measured with refinv evaluate (random:0.5, seed 0): blind 10/10, known 10/10, AE
    iterations 3/10 (1,000 calls), held-out 0/50 for every method."""
    path = MODELS / "onnx" / "colour16_unet4_lrelu_dn_n10.onnx"
    if not path.is_file():
        pytest.skip(f"shipped model {path} not present")
    data = np.load(MODELS / "data" / "colour16.npz")
    f = OnnxModel(path)
    m = draw_masks("random:0.5", f.sample_shape, 10, 0)
    train, test = data["train10"], data["test"][:10]
    blind = _exact_rate(f, train, m, blind_recovery)
    assert blind >= 0.9
    assert _exact_rate(f, train, m, known_mask_recovery, mask=m) >= blind
    assert _exact_rate(f, train, m, ae_iterations) <= 0.5
    assert _exact_rate(f, test, m, blind_recovery) == 0.0
    assert _exact_rate(f, test, m, known_mask_recovery, mask=m) == 0.0


@pytest.mark.parametrize("name", ["digits28_prelu_20L128", "digits28_lrelu_20L128"])
def test_shipped_20_layer_autoencoders_memorize(name):
    """The 20-layer FC rows (models/README.md, deep FC section; Abitbul and Dar 2023, Sec. 4):
    blind recovery gives back most training images exactly, known-mask recovery nearly all,
    AE iterations none, and no held-out image. Measured on the first 16 images (random:0.5,
    seed 0): blind 13/16 for both, known 16/16 (PReLU) and 15/16 (LeakyReLU), AE iterations
    0/16, held-out blind 0/16; on all 100 images blind is 87% / 76% (refinv evaluate)."""
    path = MODELS / "onnx" / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"shipped model {path} not present")
    data = np.load(MODELS / "data" / "digits28.npz")
    f = OnnxModel(path)
    m = draw_masks("random:0.5", f.sample_shape, 16, 0)
    train, test = data["train"][:16], data["test"][:16]
    assert _exact_rate(f, train, m, blind_recovery) >= 0.75
    assert _exact_rate(f, train, m, known_mask_recovery, mask=m) >= 0.9
    assert _exact_rate(f, train, m, ae_iterations, max_iter=100) == 0.0
    assert _exact_rate(f, test, m, blind_recovery) == 0.0


def test_mask_step_ties_are_observed():
    """Eq. (20) is ``<=``: a tie ``(y - x)^2 == y^2`` keeps the pixel observed, in particular
    y = x = 0 (a black pixel reproduced exactly), and x = 2 y; summed over channels too."""
    y = np.array([[0.0, 0.5, 0.5, -0.25]])
    x = np.array([[0.0, 1.0, 0.5, -0.5]])
    np.testing.assert_array_equal(mask_step(y, x), [[1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(mask_step(y, x + 1e-3), [[0.0, 0.0, 1.0, 1.0]])
    y4 = np.zeros((1, 3, 1, 2))
    x4 = np.zeros((1, 3, 1, 2))
    y4[0, :, 0, 1] = [0.5, 0.0, 0.25]
    x4[0, :, 0, 1] = [1.0, 0.0, 0.5]  # sum (y - x)^2 = 0.3125 = sum y^2
    np.testing.assert_array_equal(mask_step(y4, x4), np.ones((1, 1, 1, 2)))


def test_baseline_and_blind_make_the_same_number_of_calls():
    """Equal cost: ae_iterations' default is 100 x 10 = 1000 calls of f, the blind solver's
    max_iter x inner_iter; tol = 0 runs every iteration."""
    rng = np.random.default_rng(5)
    f = np_linear(0.9 * projection(rng.random((3, 1, 4, 4))), (1, 4, 4))
    y = rng.random((2, 1, 4, 4))
    g = CountingModel(f, (1, 4, 4))
    r = ae_iterations(g, y, tol=0.0)
    assert g.calls == 1000 and r.iterations.tolist() == [1000, 1000]
    g = CountingModel(f, (1, 4, 4))
    blind_recovery(g, y, tol=0.0)
    assert g.calls == 1000
    g = CountingModel(f, (1, 4, 4))
    known_mask_recovery(g, y, np.ones((4, 4)), max_iter=7, inner_iter=3, tol=0.0)
    assert g.calls == 21


def test_residual_is_the_change_relative_to_the_old_iterate():
    """Stopping rule ||x^t - x^{t-1}|| / ||x^{t-1}||: f = 2x gives exactly 1 (0.5 if it were
    divided by the new iterate's norm)."""
    y = np.full((1, 1, 2, 2), 0.25)
    r = ae_iterations(lambda a: 2.0 * a, y, max_iter=3, tol=0.0)
    assert r.residual[0] == 1.0
    r = ae_iterations(lambda a: 2.0 * a, y, max_iter=3, tol=1.0)  # 1 < 1 is false
    assert r.iterations[0] == 3 and not r.converged[0]


@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (6, 1, 4, 5), (6, 20)])
def test_blind_mask_steps_are_mask_step(shape):
    """The blind solver computes eq. 20's right side once per batch instead of per step; its
    masks must be those of mask_step on the same iterates (channels summed for 4-D)."""
    rng = np.random.default_rng(1)
    y = rng.random(shape).astype(np.float32)
    y[:, ..., :2] = 0.0  # pixels where the tie rule matters

    def f(a):
        return (0.3 + 0.5 * a).astype(a.dtype)

    steps = []

    def cb(k, state, res):
        steps.append((state.x.copy(), state.h.copy(), state.y.copy()))

    r = blind_recovery(f, y, max_iter=5, inner_iter=2, tol=0.0, tau=0.01, callback=cb)
    assert len(steps) == 5 and r.iterations.tolist() == [5] * 6
    for x, h, yy in steps:
        assert np.array_equal(h, mask_step(yy, x, 0.01))
