"""prox_check and the stability method switch on models whose Jacobians are known EXACTLY.

A linear model ``f(x) = x A^T`` with dyadic ``A`` (entries with a few binary digits), dyadic
points and a power-of-two finite-difference step has a float64 central difference with no
rounding at all: ``model_jacobian`` returns ``A`` bit for bit. So every threshold of
:func:`refinv.evaluation.prox.prox_check` can be tested exactly at its boundary, and the
numbers it reports compared with hand-computed values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from refinv.evaluation.prox import jacobian_prox_stats, prox_check
from refinv.evaluation.stability import model_jacobian, pnp_admm_stability, resolve_method

EPS = 2.0**-6  # exact in binary; the points below stay exact when moved by it


class Linear:
    """``f(x) = x A^T`` on flat float64 samples; records the batch sizes it is called with."""

    def __init__(self, A):
        self.A = np.asarray(A, dtype=np.float64)
        self.batches: list[int] = []

    def __call__(self, x):
        self.batches.append(int(x.shape[0]))
        return x @ self.A.T


class TwoSlopes:
    """``2 x`` where ``sum(x) > 0``, ``x / 2`` elsewhere (per sample): Jacobian ``2 I`` (an
    expansive map, not a prox) on one side, ``I / 2`` (a prox) on the other."""

    def __call__(self, x):
        s = np.where(x.sum(axis=1, keepdims=True) > 0, 2.0, 0.5)
        return x * s


POINTS = np.array([[0.5, 0.25], [-0.75, 0.125]])  # dyadic


def test_the_jacobian_of_a_dyadic_linear_model_is_exact():
    A = np.array([[0.25, 0.125], [0.0, 0.25]])
    J = model_jacobian(Linear(A), POINTS, eps=EPS)
    assert np.array_equal(J[0], A) and np.array_equal(J[1], A)


def test_asymmetry_is_relative_and_hand_computed():
    """A = s [[1, 1/2], [0, 1]]: ||A - A^T||_F = s sqrt(1/2), ||A||_F = s * 3/2, so the
    asymmetry is sqrt(1/2) / (3/2) = 0.4714... whatever the scale s."""
    want = math.sqrt(0.5) / 1.5
    for s in (0.25, 1.0, 8.0):
        A = s * np.array([[1.0, 0.5], [0.0, 1.0]])
        assert jacobian_prox_stats(A)["asymmetry"] == pytest.approx(want, rel=1e-12)
        r = prox_check(Linear(A), POINTS, eps=EPS, sym_tol=1.0)
        assert r["max_asymmetry"] == pytest.approx(want, rel=1e-12)
        assert [p["asymmetry"] for p in r["points"]] == pytest.approx([want, want], rel=1e-12)
    assert jacobian_prox_stats(np.zeros((2, 2)))["asymmetry"] == 0.0


def test_asymmetry_equal_to_sym_tol_counts_as_symmetric():
    """The documented rule is ``asymmetry <= sym_tol``: at the boundary, symmetric."""
    A = 0.25 * np.array([[1.0, 0.5], [0.0, 1.0]])  # symmetric part's eigenvalues 3/16, 5/16
    asym = prox_check(Linear(A), POINTS[:1], eps=EPS, sym_tol=1.0)["max_asymmetry"]
    at = prox_check(Linear(A), POINTS[:1], eps=EPS, sym_tol=asym)
    assert at["points"][0]["symmetric"] and at["is_prox"]
    # the eigenvalues are those of the symmetric part [[1/4, 1/16], [1/16, 1/4]]: 3/16, 5/16
    assert at["eig_min"] == pytest.approx(3 / 16, abs=1e-15)
    assert at["eig_max"] == pytest.approx(5 / 16, abs=1e-15)
    below = prox_check(Linear(A), POINTS[:1], eps=EPS, sym_tol=float(np.nextafter(asym, 0)))
    assert not below["points"][0]["symmetric"] and not below["is_prox"]
    # a symmetric Jacobian has asymmetry exactly 0, symmetric even with sym_tol = 0
    S = np.array([[0.5, 0.125], [0.125, 0.25]])
    assert prox_check(Linear(S), POINTS, eps=EPS, sym_tol=0.0)["is_prox"]


@pytest.mark.parametrize(
    "diag, eig_tol, ok",
    [
        ((1 + 2.0**-11, 0.5), 1e-3, True),  # 1.00049 <= 1 + 1e-3
        ((0.5, -(2.0**-11)), 1e-3, True),  # -0.00049 >= -1e-3
        ((1 + 2.0**-11, 0.5), 0.0, False),  # no slack: 1.00049 > 1
        ((0.5, -(2.0**-11)), 0.0, False),
        ((1 + 2.0**-9, 0.5), 1e-3, False),  # 1.00195 > 1 + 1e-3
        ((0.5, -(2.0**-9)), 1e-3, False),
        ((1.0, 0.0), 0.0, True),  # the closed interval [0, 1]
    ],
)
def test_eigenvalue_range_uses_eig_tol(diag, eig_tol, ok):
    r = prox_check(Linear(np.diag(diag)), POINTS, eps=EPS, eig_tol=eig_tol)
    assert r["eig_max"] == max(diag) and r["eig_min"] == min(diag)
    assert [p["eigs_in_0_1"] for p in r["points"]] == [ok, ok]
    assert r["is_prox"] is ok and r["fraction_prox"] == float(ok)


def test_is_prox_needs_every_point():
    """One point where the map is 2x (eigenvalue 2), one where it is x/2: half the points
    pass, and the model is not a proximal map."""
    r = prox_check(TwoSlopes(), POINTS, eps=EPS)
    assert [p["prox"] for p in r["points"]] == [False, True]
    assert [p["eig_max"] for p in r["points"]] == [2.0, 0.5]
    assert r["fraction_prox"] == 0.5 and r["is_prox"] is False
    assert prox_check(TwoSlopes(), POINTS[1:], eps=EPS)["is_prox"] is True


@pytest.mark.parametrize("n, max_dim, want", [(12, 12, "dense"), (13, 12, "arnoldi"),
                                              (1, 1, "dense"), (2, 1, "arnoldi")])  # fmt: skip
def test_auto_method_is_dense_up_to_max_dim_inclusive(n, max_dim, want):
    assert resolve_method("auto", n, max_dim) == want


def test_dense_method_is_allowed_at_max_dim():
    assert resolve_method("dense", 12, 12) == "dense"
    assert resolve_method("arnoldi", 2, 12) == "arnoldi"


def test_only_the_first_n_points_are_checked():
    f = TwoSlopes()
    r = prox_check(f, POINTS[::-1], eps=EPS, n=1)
    assert r["n"] == 1 and len(r["points"]) == 1 and r["is_prox"]
    assert prox_check(f, POINTS, eps=EPS, n=5)["n"] == 2


def test_auto_method_at_max_dim_runs_the_dense_jacobian():
    """n = max_dim: one batch of 2n perturbed copies (the dense Jacobian), no ARPACK calls on
    batches of 2; one value more than max_dim: only batches of 2 (matrix-free)."""
    A = 0.25 * np.eye(4)
    x = np.full((1, 4), 0.5)
    h = np.array([[1.0, 0.0, 1.0, 0.0]])
    f = Linear(A)
    dense = pnp_admm_stability(f, x, h, max_dim=4, eps=EPS)
    assert f.batches == [8]
    # J = I/4; D = rho/(h + rho) = 1/3 where observed, 1 where erased: the reduced matrix
    # (I - D) + (2D - I) J is diagonal, 2/3 - 1/12 = 7/12 and 0 + 1/4: radius 7/12
    assert dense[0] == pytest.approx(7 / 12, rel=1e-12)
    g = Linear(A)
    arn = pnp_admm_stability(g, x, h, max_dim=3, eps=EPS)
    assert g.batches and set(g.batches) == {2}
    np.testing.assert_allclose(arn, dense, rtol=1e-5)
