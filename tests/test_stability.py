"""Local stability of known-mask PnP-ADMM at a fixed point: the predicted spectral radius
(refinv.evaluation.stability) against the solver's actual error decay, on affine autoencoders
where the linearization is exact, and on the shipped models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from refinv.errors import ConfigError, MaskError
from refinv.evaluation.stability import (
    model_jacobian,
    pnp_admm_iteration_matrix,
    pnp_admm_radius,
    pnp_admm_stability,
    resolve_method,
    stability_radii,
)
from refinv.solvers.recovery import known_mask_recovery

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 3, 4)
N = 12


class AffineAE:
    """f(x) = x* + A (x - x*): x* is a fixed point and Df = A everywhere."""

    def __init__(self, xstar, A):
        self.sample_shape = self.output_sample_shape = xstar.shape
        self.xstar, self.A = xstar.reshape(-1), A

    def __call__(self, x):
        b = x.reshape(x.shape[0], -1)
        return (self.xstar + (b - self.xstar) @ self.A.T).reshape(x.shape)


def _problem(seed, scale):
    rng = np.random.default_rng(seed)
    xstar = rng.random(SHAPE)
    Q = np.linalg.qr(rng.standard_normal((N, N)))[0]
    A = Q @ np.diag(scale * rng.uniform(-1, 1, N)) @ Q.T  # symmetric, like a prox's Jacobian
    h = np.zeros(N)
    h[rng.permutation(N)[: N // 2]] = 1
    return xstar, A, h.reshape(SHAPE[1:])


def test_jacobian_of_an_affine_model_is_exact():
    xstar, A, _ = _problem(0, 1.0)
    J = model_jacobian(AffineAE(xstar, A), xstar[None])
    np.testing.assert_allclose(J[0], A, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [0.9, 1.6])
def test_radius_predicts_the_solvers_error_decay(seed, scale):
    xstar, A, h = _problem(seed, scale)
    f = AffineAE(xstar, A)
    rho = 0.5
    r = pnp_admm_stability(f, xstar[None], h[None], rho=rho)[0]
    y = xstar * h  # noiseless erasure: x* is the fixed point

    def err(T):
        res = known_mask_recovery(
            f, y[None], h[None], rho=rho, inner_iter=1, max_iter=T, tol=0.0,
            reinsert=False, blowup=np.inf, progress=False,
        )  # fmt: skip
        return np.linalg.norm(res.x - xstar)

    e1, e2 = err(60), err(100)
    rate = (e2 / e1) ** (1 / 40)  # the affine iteration's error ~ C r^k
    assert rate == pytest.approx(r, rel=0.03)
    if r < 1:
        assert err(2000) < 1e-8  # recovered
    else:
        assert e2 > e1  # repelled: never recovered


def _brute_force_matrix(A, hv, xs, rho):
    """Column j: one inner ADMM step (eqs. 17, 16, 14, written out) applied at the fixed point
    x* to the unit perturbation e_j of (z, u), minus the fixed point."""
    n = hv.size
    M = np.empty((2 * n, 2 * n))
    for j in range(2 * n):
        e = np.zeros(2 * n)
        e[j] = 1.0
        dz, du = e[:n], e[n:]
        w = (xs + dz) - du  # z - u, at z = x* + dz, u = du
        v = (hv * xs + rho * w) / (hv + rho)  # eq. (17)
        z = xs + A @ (v + du - xs)  # eq. (16)
        u = du + v - z  # eq. (14)
        M[:, j] = np.concatenate([z - xs, u])
    return M


def _nonsymmetric(seed, scale=1.3):
    rng = np.random.default_rng(seed)
    xstar = rng.random(SHAPE)
    A = scale * rng.standard_normal((N, N)) / np.sqrt(N)
    h = np.zeros(N)
    h[rng.permutation(N)[: N // 2]] = 1
    return xstar, A, h.reshape(SHAPE[1:])


@pytest.mark.parametrize("kind", ["symmetric", "nonsymmetric"])
def test_iteration_matrix_by_brute_force(kind):
    """Column j of M is one inner ADMM step applied to the unit perturbation e_j."""
    xstar, A, h = _problem(3, 1.2) if kind == "symmetric" else _nonsymmetric(3)
    hv, rho = h.reshape(N), 0.7
    M = pnp_admm_iteration_matrix(A, hv, rho)
    np.testing.assert_allclose(M, _brute_force_matrix(A, hv, xstar.reshape(N), rho), atol=1e-12)


def test_jacobian_of_a_nonsymmetric_model_is_not_transposed():
    """J[b][i, j] = d f_i / d x_j: on f(x) = x* + A (x - x*) that is A, not A^T."""
    xstar, A, _ = _nonsymmetric(0)
    assert np.abs(A - A.T).max() > 0.5
    J = model_jacobian(AffineAE(xstar, A), np.stack([xstar, xstar]))
    np.testing.assert_allclose(J, np.stack([A, A]), atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_radius_on_a_nonsymmetric_affine_model(seed):
    """On a NON-symmetric affine model the radius (dense and matrix-free) is the largest
    |eigenvalue| of the iteration matrix built by hand from eqs. (17), (16), (14), and it is
    the decay rate of the solver's error. (The radius alone cannot tell J from J^T: M's
    nonzero eigenvalues are those of (I - D) + (2D - I) J, and (I - D) + (2D - I) J^T is
    similar to its transpose (I - D) + J (2D - I), hence the matrix checks above.)"""
    xstar, A, h = _nonsymmetric(seed)
    f = AffineAE(xstar, A)
    hv, rho = h.reshape(N), 0.5
    want = np.abs(np.linalg.eigvals(_brute_force_matrix(A, hv, xstar.reshape(N), rho))).max()
    for method in ("dense", "arnoldi"):
        r = pnp_admm_stability(f, xstar[None], h[None], rho=rho, method=method)[0]
        assert r == pytest.approx(want, rel=1e-6)
    wt = np.abs(np.linalg.eigvals(_brute_force_matrix(A.T, hv, xstar.reshape(N), rho))).max()
    assert wt == pytest.approx(want, rel=1e-9)  # the similarity noted above
    y = xstar * h

    def err(T):
        res = known_mask_recovery(
            f, y[None], h[None], rho=rho, inner_iter=1, max_iter=T, tol=0.0,
            reinsert=False, blowup=np.inf, progress=False,
        )  # fmt: skip
        return np.linalg.norm(res.x - xstar)

    rate = (err(140) / err(100)) ** (1 / 40)
    assert rate == pytest.approx(want, rel=0.03)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reduced_radius_equals_the_iteration_matrix_radius(seed):
    """M = B C with C = [D, I - D], B = [J; I - J]: the n x n matrix C B has M's non-zero
    eigenvalues, so the same spectral radius (nonsymmetric J, complex spectra)."""
    rng = np.random.default_rng(seed)
    n = 40
    J = rng.standard_normal((n, n)) * rng.uniform(0.05, 0.4)
    h = (rng.random(n) < 0.5).astype(float)
    for rho in (0.1, 0.5, 3.0):
        M = pnp_admm_iteration_matrix(J, h, rho)
        assert pnp_admm_radius(J, h, rho) == pytest.approx(
            np.abs(np.linalg.eigvals(M)).max(), rel=1e-10
        )


def test_a_repelling_fixed_point_is_still_reached_when_the_iteration_lands_on_it():
    """The verdict is local: radius > 1 says that a NEARBY start drifts away, not that the
    image cannot be reached. Here the degraded image is the fixed point itself (x* is 0 at
    every erased pixel, so the ADMM's start z = y equals x*), and every step maps x* to x*
    exactly in floating point: f(x) = x* + A (x - x*) with x - x* = 0, and at rho = 1 the
    v-step (y + z - u) / 2 on observed pixels is y / 2 + x* / 2 = x* (halving is exact). So
    the iteration never leaves x* and recovers it to MSE 0, although its radius is > 1; a
    1e-6 nudge of the start at one erased pixel is repelled, as the radius says."""
    xstar, A, h = _problem(4, 1.6)
    xstar = xstar * h  # zero at the erased pixels: y = h x* = x*
    f = AffineAE(xstar, A)
    rho = 1.0
    r = pnp_admm_stability(f, xstar[None], h[None], rho=rho)[0]
    assert r > 1.05

    def known(y):
        return known_mask_recovery(
            f, y[None], h[None], rho=rho, max_iter=100, tol=0.0, reinsert=False,
            blowup=np.inf, progress=False,
        )  # fmt: skip

    y = xstar * h
    np.testing.assert_array_equal(y, xstar)
    res = known(y)
    assert np.mean((res.x[0] - xstar) ** 2) == 0.0  # reached exactly
    nudged = y.copy()
    erased = np.flatnonzero(h.reshape(-1) == 0)[0]
    nudged.reshape(-1)[erased] += 1e-6
    res2 = known(nudged)
    assert np.linalg.norm(res2.x[0] - xstar) > 1e-3  # repelled: from 1e-6 to > 1e-3


@pytest.mark.parametrize("kind", ["symmetric", "nonsymmetric"])
@pytest.mark.parametrize("seed", [0, 1])
def test_arnoldi_equals_dense(kind, seed):
    """The matrix-free radius (ARPACK on M, one JVP per product) equals the dense one; with a
    nonsymmetric J, M's leading eigenvalues come in complex pairs."""
    rng = np.random.default_rng(seed)
    shape, n = (1, 10, 15), 150
    xstar = rng.random(shape)
    if kind == "symmetric":
        Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
        A = Q @ np.diag(1.3 * rng.uniform(-1, 1, n)) @ Q.T
    else:
        A = rng.standard_normal((n, n)) / np.sqrt(n)  # spectrum ~ unit disc, complex
    f = AffineAE(xstar, A)
    h = (rng.random((2, 10, 15)) < 0.5).astype(float)
    x = np.stack([xstar, xstar])
    for rho in (0.2, 0.5, 2.0):
        dense = pnp_admm_stability(f, x, h, rho=rho, method="dense")
        arnoldi = pnp_admm_stability(f, x, h, rho=rho, method="arnoldi")
        np.testing.assert_allclose(arnoldi, dense, rtol=1e-6)
    # auto: dense up to max_dim values, matrix-free above (no refusal)
    auto = pnp_admm_stability(f, x, h, rho=0.5, max_dim=100)
    np.testing.assert_allclose(auto, pnp_admm_stability(f, x, h, rho=0.5), rtol=1e-6)


@pytest.mark.parametrize("method", ["dense", "arnoldi"])
def test_stability_radii_equal_one_rho_at_a_time(method, capsys, monkeypatch):
    """stability_radii (the dense Jacobian once per image for every rho) gives the radii of
    pnp_admm_stability run once per rho; its progress bar counts the (image, rho) pairs."""
    rng = np.random.default_rng(3)
    xstar = rng.random((1, 6, 7))
    f = AffineAE(xstar, rng.standard_normal((42, 42)) / np.sqrt(42))
    x = np.stack([xstar, xstar, xstar])
    h = (rng.random((3, 6, 7)) < 0.5).astype(float)
    rhos = [0.2, 0.5, 2.0]
    monkeypatch.delenv("REFINV_NO_PROGRESS", raising=False)
    got = stability_radii(f, x, h, rhos, method=method, progress=True)
    assert got.shape == (3, 3)
    for i, rho in enumerate(rhos):
        want = pnp_admm_stability(f, x, h, rho=rho, method=method)
        np.testing.assert_allclose(got[i], want, rtol=1e-6)
    err = capsys.readouterr().err
    assert f"stability ({method})" in err and "9/9" in err
    with pytest.raises(ConfigError, match="rho"):
        stability_radii(f, x, h, [0.5, 0.0])


def test_auto_is_dense_only_for_small_images():
    """auto: dense up to 256 values (faster there), ARPACK above (faster, and within the
    finite-difference noise of the dense radius on the faces MLP; module docstring)."""
    assert resolve_method("auto", 64, 2048) == "dense"
    assert resolve_method("auto", 256, 2048) == "dense"
    assert resolve_method("auto", 625, 2048) == "arnoldi"
    assert resolve_method("auto", 100, 50) == "arnoldi"
    assert resolve_method("dense", 625, 2048) == "dense"


def test_refuses_bad_input():
    xstar, A, h = _problem(0, 1.0)
    f = AffineAE(xstar, A)
    with pytest.raises(MaskError):
        pnp_admm_stability(f, xstar[None], 0.5 * np.ones((1, 3, 4)))
    with pytest.raises(ConfigError, match="max_dim.*arnoldi"):
        pnp_admm_stability(f, xstar[None], h[None], max_dim=8, method="dense")
    with pytest.raises(ConfigError, match="method"):
        pnp_admm_stability(f, xstar[None], h[None], method="eig")
    with pytest.raises(ConfigError, match="rho"):
        pnp_admm_stability(f, xstar[None], h[None], rho=-1.0, method="arnoldi")
    with pytest.raises(ConfigError, match="eps"):
        pnp_admm_stability(f, xstar[None], h[None], eps=0.0, method="arnoldi")
    with pytest.raises(ConfigError, match="rho"):
        pnp_admm_iteration_matrix(A, h.reshape(N), 0.0)


@pytest.mark.skipif(
    not (ROOT / "models" / "onnx" / "faces25_lrelu_6x256.onnx").is_file(), reason="needs models/"
)
def test_shipped_models_faces_stable_digits_unstable():
    """The measured explanation of recovery on the shipped MLPs (docs/theory/recovery.md):
    faces25 (blind 87%) has radius < 1 at its training images, digits8 (0%) > 1."""
    from refinv import OnnxModel
    from refinv.operators.masks import draw_masks

    med = {}
    for model, data in [("faces25_lrelu_6x256", "faces25"), ("digits8_lrelu_6x320", "digits8")]:
        f = OnnxModel(ROOT / "models" / "onnx" / f"{model}.onnx")
        x = np.load(ROOT / "models" / "data" / f"{data}.npz")["train"][:5]
        h = draw_masks("random:0.5", f.sample_shape, len(x), seed=0)
        med[data] = np.median(pnp_admm_stability(f, x, h, rho=0.5))
    assert med["faces25"] < 0.9 and med["digits8"] > 1.1


@pytest.mark.skipif(
    not (ROOT / "models" / "onnx" / "colour32_unet_lrelu_c12.onnx").is_file(),
    reason="needs models/",
)
def test_shipped_unet_repels_its_training_images():
    """3x32x32 images (n = 3072, matrix-free): the shipped U-Net is not a memorizer in the
    recoverable sense (models/README.md: dense radii 1.105 and 1.120 at rho = 0.5)."""
    from refinv import OnnxModel
    from refinv.operators.masks import draw_masks

    f = OnnxModel(ROOT / "models" / "onnx" / "colour32_unet_lrelu_c12.onnx")
    x = np.load(ROOT / "models" / "data" / "colour32.npz")["train"][:2]
    h = draw_masks("random:0.5", f.sample_shape, len(x), seed=0)
    r = pnp_admm_stability(f, x, h, rho=0.5)  # auto -> arnoldi (3072 > 2048)
    np.testing.assert_allclose(r, [1.105, 1.120], atol=0.005)


@pytest.mark.skipif(
    not (ROOT / "models" / "onnx" / "colour16_convae_lrelu_c4.onnx").is_file(),
    reason="needs models/",
)
def test_shipped_conv_autoencoder_attracts_its_training_images():
    """The conv autoencoder that memorizes (64-value bottleneck) keeps its training images
    attracting, unlike the U-Nets (models/README.md: 46 of 50 below 1, median 0.80)."""
    from refinv import OnnxModel
    from refinv.operators.masks import draw_masks

    f = OnnxModel(ROOT / "models" / "onnx" / "colour16_convae_lrelu_c4.onnx")
    x = np.load(ROOT / "models" / "data" / "colour16.npz")["train"][:5]
    h = draw_masks("random:0.5", f.sample_shape, len(x), seed=0)
    r = pnp_admm_stability(f, x, h, rho=0.5, method="arnoldi")
    assert np.median(r) < 0.9 and np.sum(r < 1) >= 4
