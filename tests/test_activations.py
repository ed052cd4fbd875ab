"""Proximal activations: prox of Psi (brute force), Bregman identities, refusals."""

from __future__ import annotations

import math

import array_api_strict
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from refinv.errors import UnsupportedGraphError
from refinv.onnx.graph import Activation
from refinv.operators.activations import (
    Clip,
    Identity,
    LeakyReLU,
    ReLU,
    activation_from_graph,
)

ACTS = [Identity(), ReLU(), LeakyReLU(0.1), LeakyReLU(0.7), LeakyReLU(1.0), Clip(-0.5, 2.0)]
IDS = [repr(a) for a in ACTS]
finite = st.floats(-5, 5, allow_nan=False)


def _domain(act):
    if isinstance(act, ReLU):
        return (0.0, 50.0)
    if isinstance(act, Clip):
        return (act.lo, act.hi)
    return (-50.0, 50.0)


def _brute_min(f, lo, hi):
    """argmin and min of a 1-D convex f on [lo, hi] (bounded Brent, plus the end points)."""
    r = minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
    return min(((r.x, r.fun), (lo, f(lo)), (hi, f(hi))), key=lambda t: t[1])


def _psi1(act, v):
    return float(act.psi(np.asarray([[v]]))[0])


@pytest.mark.parametrize("act", ACTS, ids=IDS)
@pytest.mark.parametrize("c", [1.0, 0.3])
@settings(max_examples=20, deadline=None)
@given(z=finite)
def test_activation_is_prox_of_psi(act, c, z):
    """s(z) = argmin_y 1/2 (y - z)^2 + Psi(y); prox(v, c) for c * Psi (step 17)."""
    lo, hi = _domain(act)
    t_min, _ = _brute_min(lambda t: 0.5 * (t - z) ** 2 + c * _psi1(act, t), lo, hi)
    got = act.prox(np.asarray([[z]]), c)[0, 0] if c != 1.0 else act(np.asarray([[z]]))[0, 0]
    assert got == pytest.approx(t_min, abs=1e-6)


@pytest.mark.parametrize("act", ACTS, ids=IDS)
@settings(max_examples=20, deadline=None)
@given(z=finite)
def test_conjugate_term_is_the_fenchel_conjugate(act, z):
    """Phi^*(z) = sup_y z y - 1/2 y^2 - Psi(y), by brute force."""
    lo, hi = _domain(act)
    _, f_min = _brute_min(lambda t: -(z * t - 0.5 * t * t - _psi1(act, t)), lo, hi)
    assert float(act.conj(np.asarray([[z]]))[0]) == pytest.approx(-f_min, abs=1e-7)


@pytest.mark.parametrize("act", ACTS, ids=IDS)
@pytest.mark.parametrize("xp", [np, array_api_strict])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_bregman_identities(act, xp, dtype, seed):
    """B(s(z), z) = 0; B(x, z) >= 1/2 ||s(z) - x||^2 on dom(Psi); grad_z B = s(z) - x."""
    rng = np.random.default_rng(seed)
    z = xp.asarray(rng.normal(0, 2, (3, 2, 4)).astype(dtype))
    x = act(xp.asarray(rng.normal(0, 2, (3, 2, 4)).astype(dtype)))  # x in dom(Psi)
    eps = 1e-4 if dtype == "float32" else 1e-10
    b0 = np.asarray(act.bregman(act(z), z))
    assert b0.shape == (3,)
    np.testing.assert_allclose(b0, 0.0, atol=eps * 10)
    lower = 0.5 * np.sum(np.asarray(act(z) - x, dtype=np.float64) ** 2, axis=(1, 2))
    assert np.all(np.asarray(act.bregman(x, z)) >= lower - eps * 10 * (1 + lower))
    g = act.bregman_grad(x, z)
    assert type(g) is type(z) and g.dtype == z.dtype
    if dtype == "float64" and xp is np:  # finite-difference check of eq. (5)
        h = 1e-6
        e = np.zeros((3, 2, 4))
        e[:, 1, 2] = h
        fd = (act.bregman(x, z + e) - act.bregman(x, z - e)) / (2 * h)
        np.testing.assert_allclose(fd, np.asarray(g)[:, 1, 2], atol=1e-5)


def test_bregman_infinite_outside_domain():
    z = np.zeros((1, 2))
    assert math.isinf(float(ReLU().bregman(np.asarray([[-1.0, 0.0]]), z)[0]))
    assert math.isinf(float(Clip(0, 1).bregman(np.asarray([[2.0, 0.0]]), z)[0]))


def test_prelu_slope_array_broadcasts():
    act = LeakyReLU(np.asarray([0.1, 0.5]).reshape(2, 1, 1))
    z = -np.ones((1, 2, 2, 2))
    out = act(z)
    assert np.allclose(out[0, 0], -0.1) and np.allclose(out[0, 1], -0.5)


@pytest.mark.parametrize(
    ("act", "cls"),
    [
        (Activation("identity"), Identity),
        (Activation("relu"), ReLU),
        (Activation("leaky_relu", 0.2), LeakyReLU),
        (Activation("leaky_relu", 0.0), ReLU),
        (Activation("prelu", np.asarray([0.3])), LeakyReLU),
    ],
)
def test_factory(act, cls):
    assert isinstance(activation_from_graph(act), cls)


@pytest.mark.parametrize(
    ("act", "match"),
    [
        (Activation("leaky_relu", -0.1), "not a proximal map"),
        (Activation("leaky_relu", 1.5), "not a proximal map"),
        (Activation("gelu"), "not a proximal map"),
        (Activation("tanh"), "is a proximal map .* not implemented"),
        (Activation("sigmoid"), "is a proximal map .* not implemented"),
    ],
)
def test_factory_refuses(act, match):
    with pytest.raises(UnsupportedGraphError, match=match):
        activation_from_graph(act)
