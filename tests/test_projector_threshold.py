"""The projector model of docs/theory/recovery.md (docs/experiments/projector_radius.py):
the linearized known-mask ADMM at a fixed point whose Jacobian is a rank-k orthogonal
projector has an eigenvalue 1 once k exceeds the number of OBSERVED values, not the number
of erased ones (the two are equal at random:0.5, which hid the difference)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from refinv.evaluation.stability import pnp_admm_iteration_matrix

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "experiments" / "projector_radius.py"
SHAPE = (1, 10, 10)  # 100 values: fast dense eigenvalues


@pytest.fixture(scope="module")
def pr():
    spec = importlib.util.spec_from_file_location("projector_radius", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("mask", ["random:0.75", "random:0.25"])
def test_radius_reaches_one_when_rank_exceeds_the_observed_values(pr, mask):
    h = pr.value_mask(mask, SHAPE, seed=0)
    n_obs, n_erased = int(h.sum()), int((h == 0).sum())
    assert n_obs != n_erased
    rng = np.random.default_rng(1)
    below = [pr.projector_radius(k, h, rng) for k in (n_obs - 8, n_obs - 2)]
    above = [pr.projector_radius(k, h, rng) for k in (n_obs + 2, n_obs + 8)]
    for r in below:
        assert r["admm_radius"] < 1 - 1e-6, r
        assert r["max_cos2_subspace_erased"] < 1 - 1e-9, r
    for r in above:
        assert r["admm_radius"] == pytest.approx(1.0, abs=1e-9), r
        assert r["max_cos2_subspace_erased"] == pytest.approx(1.0, abs=1e-9), r
    # the old claim ("1 once k reaches the number of erased values") fails on one side:
    if n_erased > n_obs:  # random:0.75: already 1 far below n_erased
        assert above[0]["k"] < n_erased and above[0]["admm_radius"] > 1 - 1e-9
    else:  # random:0.25: still below 1 far above n_erased
        assert below[0]["k"] > n_erased and below[0]["admm_radius"] < 1 - 1e-6


def test_the_eigenvector_is_a_subspace_vector_on_the_erased_values(pr):
    """The mechanism: a v in range(P) with v = 0 on every observed value satisfies
    ((I - D) + (2D - I) P) v = v, so (v_z, v_u) = (v, 0) is a fixed direction of the step."""
    h = pr.value_mask("random:0.75", SHAPE, seed=0)
    n = h.size
    k = int(h.sum()) + 3
    Q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((n, k)))
    obs = np.flatnonzero(h == 1)
    # null space of Q[obs]: coefficients c with (Q c)[obs] = 0
    _, s, vt = np.linalg.svd(Q[obs])
    c = vt[-1]
    v = Q @ c
    assert np.abs(v[obs]).max() < 1e-10 and np.linalg.norm(v) > 0.5
    M = pnp_admm_iteration_matrix(Q @ Q.T, h, 0.5)
    w = np.concatenate([v, np.zeros(n)])
    np.testing.assert_allclose(M @ w, w, atol=1e-10)


def test_a_projector_never_repels(pr):
    """An orthogonal projector is the proximal map of a subspace's indicator: the ADMM is
    that of a convex problem, so its linearization is nonexpansive (radius <= 1) for every
    rank and mask; the identity (k = n) gives exactly 1. (The U-Nets' 1.1-1.4 is therefore
    not a projector's.)"""
    rng = np.random.default_rng(3)
    n = int(np.prod(SHAPE))
    for mask in ("random:0.75", "random:0.5", "random:0.25", "center:4", "rows:2"):
        h = pr.value_mask(mask, SHAPE, seed=1)
        for k in (1, 10, 40, 70, 99):
            assert pr.projector_radius(k, h, rng)["admm_radius"] <= 1 + 1e-9, (mask, k)
    M = pnp_admm_iteration_matrix(np.eye(n), h, 0.5)
    assert float(np.abs(np.linalg.eigvals(M)).max()) == pytest.approx(1.0, abs=1e-12)
