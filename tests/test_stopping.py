"""The float-floor stopping rule (refinv.solvers.FloorRule) and the recovery solvers' use of it.

The mathematics: a linear contraction with a known rate stops at the iteration the
contraction estimate predicts, with the a posteriori error bound holding; an iteration
stuck at its rounding floor stops as converged at float32's and float64's floors alike,
one stuck far above it as stalled; a wandering and a diverging image get their reasons;
a slow but steady contraction is never given up on; compacting the batch (stopped
samples leave it) gives every image bitwise the result it gets alone.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refinv.errors import ConfigError
from refinv.solvers import Check, FloorRule, run_loop
from refinv.solvers._stopping import CONTRACT_C, FIXED_C, FLOOR_C
from refinv.solvers.recovery import (
    ae_iterations,
    blind_recovery,
    known_mask_recovery,
    mask_step,
)


class Lin(NamedTuple):
    x: Any  # (batch, n) iterate
    xs: Any  # (batch, n) limit
    r: Any  # (batch, 1) contraction factor


def lin_step(s: Lin):
    """x <- xs + r (x - xs): a contraction with factor r towards xs; reports the relative
    change (the quantity the recovery solvers report)."""
    x = s.xs + s.r * (s.x - s.xs)
    d = np.linalg.norm(x - s.x, axis=1) / np.linalg.norm(s.x, axis=1)
    return Lin(x, s.xs, s.r), Check(d)


def predicted_stop(r: float, x0: np.ndarray, xs: np.ndarray, tau: float, tau0: float) -> int:
    """The first iteration t at which delta_t <= tau0 (a fixed point to rounding), or, from
    t >= 3 (three changes seen), delta_t <= tau and delta_t r / (1 - r) <= tau, in exact
    arithmetic (the measured ratio is r exactly)."""
    e0 = x0 - xs
    for t in range(1, 10_000):
        prev = xs + r ** (t - 1) * e0
        delta = np.linalg.norm(r ** (t - 1) * (r - 1) * e0) / np.linalg.norm(prev)
        if delta <= tau0 or (t >= 3 and delta <= tau and delta * r / (1 - r) <= tau):
            return t
    raise AssertionError("no stop predicted")


@settings(max_examples=40, deadline=None)
@given(
    rates=st.lists(st.floats(0.05, 0.9), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_a_contraction_stops_where_the_estimate_predicts(rates, seed, dtype):
    rng = np.random.default_rng(seed)
    n = len(rates)
    xs = rng.uniform(0.5, 1.0, (n, 8)).astype(dtype)
    x0 = (xs + rng.uniform(-0.5, 0.5, (n, 8))).astype(dtype)
    r = np.asarray(rates, dtype)[:, None]
    eps = float(np.finfo(dtype).eps)
    rule = FloorRule(n, eps, patience=None)
    res = run_loop(lin_step, Lin(x0, xs, r), max_iter=2000, tol=0.0, rule=rule)
    tau = CONTRACT_C * eps  # the contraction estimate's target
    for i in range(n):
        want = predicted_stop(
            float(r[i, 0]), x0[i].astype(np.float64), xs[i].astype(np.float64), tau, FIXED_C * eps
        )
        assert res.stop_reason[i] == "converged"
        # rounding of the float iterate moves the measured ratio by ~eps / delta: one step
        assert abs(int(res.iterations[i]) - want) <= 1, (i, res.iterations[i], want)
        # the a posteriori bound ||x_t - x*|| <= r/(1-r) ||x_t - x_{t-1}||: at most tau_c when
        # the estimate stopped it, 16 eps r/(1-r) when the fixed-point test did (x2: rounding)
        q = float(r[i, 0])
        err = np.linalg.norm(res.x[i].astype(np.float64) - xs[i]) / np.linalg.norm(xs[i])
        assert err <= 2 * max(tau, FIXED_C * eps * q / (1 - q))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_fixed_point_to_rounding_stops_at_the_first_check(dtype):
    """An iterate the first step leaves where it was (changes <= 16 eps) stops at once, before
    any rate can be measured; 17 eps does not (it needs the contraction estimate)."""
    eps = float(np.finfo(dtype).eps)
    for level, want in ((16 * eps, "converged"), (0.0, "converged")):
        s0 = Geo(np.ones((1, 1)), np.zeros(1), np.full(1, 1.0), np.full(1, 0.3), np.ones(1))

        def step(s, level=level):
            return Geo(s.x, s.t + 1, s.q, s.m, s.g), Check(np.full(1, level), s.m)

        res = run_loop(step, s0, max_iter=50, tol=0.0, rule=FloorRule(1, eps, patience=20))
        assert res.stop_reason == [want] and res.iterations.tolist() == [1]
    res = run_loop(
        lambda s: (s, Check(np.full(1, 17 * eps), np.full(1, 1e-30))),
        Geo(np.ones((1, 1)), np.zeros(1), np.ones(1), np.ones(1), np.ones(1)),
        max_iter=50, tol=0.0, rule=FloorRule(1, eps, patience=20),
    )  # fmt: skip
    assert res.iterations.tolist() == [20]  # constant changes: at the floor after the window


class Noisy(NamedTuple):
    x: Any
    k: Any  # (batch,) step counter


def floor_step(level: float, dtype: str, misfit: float | None = None):
    """An iterate at its rounding floor: x_t = 1 + level * xi_t (xi_t uniform in [-1, 1]),
    so the relative change fluctuates around `level` and never decreases."""
    rng = np.random.default_rng(0)

    def step(s: Noisy):
        x = (1.0 + level * rng.uniform(-1, 1, s.x.shape)).astype(dtype)
        d = np.linalg.norm(x - s.x, axis=1) / np.linalg.norm(s.x, axis=1)
        mis = None if misfit is None else np.full(d.shape, misfit)
        return Noisy(x, s.k + 1), Check(d, mis)

    return step


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_iterate_at_its_float_floor_stops_as_converged(dtype):
    """An iterate whose changes stay at 30 eps (the measured float32 floors of the shipped
    MLPs are 5-150 eps) stops as converged once the window of `patience` checks shows the
    changes no longer decrease; float64's floor is 2^29 times smaller, the rule the same."""
    eps = float(np.finfo(dtype).eps)
    W = 12
    step = floor_step(30 * eps, dtype, misfit=30 * eps)
    s0 = Noisy(np.ones((3, 64), dtype), np.zeros(3, np.int64))
    res = run_loop(step, s0, max_iter=500, tol=0.0, rule=FloorRule(3, eps, patience=W))
    assert res.stop_reason == ["converged"] * 3
    # at the latest with the first full window (two chance decreases in a row can pass the
    # contraction test earlier: at the floor either stop is right)
    assert np.all(res.iterations <= W) and np.all(res.iterations >= 3)
    assert np.all(res.residual < FLOOR_C * eps)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_stagnation_far_above_the_floor_is_stalled(dtype):
    """Changes and misfit both flat at 1e-2 (relative): no progress, far above the floor:
    stalled after `patience` checks; without a misfit the rule cannot say it failed and
    the budget runs out."""
    eps = float(np.finfo(dtype).eps)
    W = 10
    s0 = Noisy(np.ones((2, 64), dtype), np.zeros(2, np.int64))
    res = run_loop(
        floor_step(1e-2, dtype, misfit=0.3), s0, max_iter=300, tol=0.0,
        rule=FloorRule(2, eps, patience=W),
    )  # fmt: skip
    assert res.stop_reason == ["stalled"] * 2 and res.iterations.tolist() == [W] * 2
    res = run_loop(
        floor_step(1e-2, dtype), s0, max_iter=50, tol=0.0, rule=FloorRule(2, eps, patience=W)
    )
    assert res.stop_reason == ["max_iter"] * 2


class Geo(NamedTuple):
    x: Any  # (batch, 1)
    t: Any  # (batch,) step counter
    q: Any  # (batch,) rate of the change
    m: Any  # (batch,) misfit level
    g: Any  # (batch,) rate of the misfit


def geo_step(s: Geo):
    t = s.t + 1
    return Geo(s.x, t, s.q, s.m, s.g), Check(s.q**t, s.m * s.g**t)


def test_a_slow_steady_contraction_is_never_given_up():
    """Change and misfit both shrinking by 0.97 per check (the slowest training-image
    recoveries measured on the shipped models) are progress: converged, not stalled."""
    n = 3
    s0 = Geo(np.ones((n, 1)), np.zeros(n), np.full(n, 0.97), np.full(n, 0.3), np.full(n, 0.97))
    eps = float(np.finfo(np.float32).eps)
    res = run_loop(geo_step, s0, max_iter=2000, tol=0.0, rule=FloorRule(n, eps, patience=20))
    assert res.stop_reason == ["converged"] * n
    # delta_t = 0.97^t: the estimate 0.97/0.03 delta_t <= tau_c = 64 eps, or sooner a change
    # of at most 16 eps (a fixed point to rounding; remaining error 32 x 16 eps < 1024 eps)
    want = min(
        math.ceil(math.log(CONTRACT_C * eps * 0.03 / 0.97) / math.log(0.97)),
        math.ceil(math.log(FIXED_C * eps) / math.log(0.97)),
    )
    assert abs(int(res.iterations[0]) - want) <= 1


def test_a_limit_that_does_not_fit_the_data_is_stalled():
    """The iterate converges (change shrinking by 0.9 per check) but the misfit stays at
    0.3: once the window is full and the distance to the limit, delta q/(1-q), is below a
    tenth of the misfit, the limit cannot fit the data: stalled, long before convergence.
    With a numeric tol the rule lets it converge (the user asked for that precision)."""
    s0 = Geo(np.ones((1, 1)), np.zeros(1), np.full(1, 0.9), np.full(1, 0.3), np.ones(1))
    eps = float(np.finfo(np.float32).eps)
    W = 20
    res = run_loop(geo_step, s0, max_iter=2000, tol=0.0, rule=FloorRule(1, eps, patience=W))
    assert res.stop_reason == ["stalled"]
    # first t >= W with 0.9^t * 0.9 / 0.1 <= 0.1 * 0.3
    want = max(W, math.ceil(math.log(0.03 / 9) / math.log(0.9)))
    assert int(res.iterations[0]) == want
    rule = FloorRule(1, eps, patience=W, tol=1e-6)
    res = run_loop(geo_step, s0, max_iter=2000, tol=0.0, rule=rule)
    assert res.stop_reason == ["converged"]
    assert int(res.iterations[0]) == math.ceil(math.log(1e-6) / math.log(0.9)) + (
        0.9 ** math.ceil(math.log(1e-6) / math.log(0.9)) >= 1e-6
    )


# ------------------------------------------------------------------ the recovery solvers
def _projector(train: np.ndarray):
    """A linear 'autoencoder' that memorizes exactly: the orthogonal projector onto the span
    of the training images (applied per sample, so batch composition cannot matter)."""
    n = train.shape[0]
    B = train.reshape(n, -1).astype(np.float64).T
    P = B @ np.linalg.pinv(B)

    def f(a):
        flat = a.reshape(a.shape[0], -1)
        out = np.stack([(P @ v.astype(np.float64)).astype(a.dtype) for v in flat])
        return out.reshape(a.shape)

    return f


def _images(n=6, k=3, side=6, seed=1):
    rng = np.random.default_rng(seed)
    train = rng.uniform(0.2, 1.0, (k, 1, side, side))
    return train, rng


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_known_mask_recovery_stops_at_the_floor_of_its_dtype(dtype):
    """Known-mask recovery of a memorized image through an exact projector: the default
    rule stops every image as converged, float64 later than float32 (its floor is lower)
    and with an error near float64's rounding rather than float32's; the fixed budget is
    not spent."""
    train, rng = _images()
    f = _projector(train)
    x = train.astype(dtype)
    mask = rng.uniform(size=(3, 6, 6)) < 0.7
    y = x * mask[:, None]
    res = known_mask_recovery(f, y, mask, max_iter=400)
    assert res.stop_reason == ["converged"] * 3
    assert res.iterations.max() < 400
    err = np.max(np.abs(res.x.astype(np.float64) - train))
    assert err < (1e-4 if dtype == "float32" else 1e-10)
    assert res.info["tol"] == "auto"


def test_float64_runs_longer_than_float32_to_its_lower_floor():
    train, rng = _images()
    f = _projector(train)
    mask = rng.uniform(size=(3, 6, 6)) < 0.7
    its = {}
    for dtype in ("float32", "float64"):
        y = train.astype(dtype) * mask[:, None]
        its[dtype] = known_mask_recovery(f, y, mask, max_iter=400).iterations
    assert np.all(its["float64"] > its["float32"])


def _rotate(a, angle=0.3):
    """Rotate each pixel pair of every image by ``angle``: an isometry, so the iterate
    wanders on a circle at a constant change forever."""
    flat = a.reshape(a.shape[0], -1, 2)
    c, s = math.cos(angle), math.sin(angle)
    out = np.stack([c * flat[..., 0] - s * flat[..., 1], s * flat[..., 0] + c * flat[..., 1]], -1)
    return out.reshape(a.shape)


def test_a_diverging_and_a_wandering_image_get_their_reasons():
    """AE iterations through x -> 2x diverge (|x| passes blowup): diverged; through a
    rotation of pixel pairs the iterate wanders at a constant change, its data misfit flat
    far above the floor: stalled after `patience` checks (of 10 calls each)."""
    import warnings

    from refinv.errors import DivergenceWarning

    y = np.random.default_rng(0).uniform(0.1, 1.0, (2, 1, 4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        res = ae_iterations(lambda a: 2.0 * a, y, max_iter=1000, patience=10)
    assert res.stop_reason == ["diverged"] * 2
    res = ae_iterations(_rotate, y, max_iter=1000, patience=10)
    assert res.stop_reason == ["stalled"] * 2
    assert res.iterations.tolist() == [10 * 10] * 2


def test_tol_number_and_patience_none_is_the_plain_rule():
    """tol=1e-6 with patience=None: exactly the old rule (relative change < tol)."""
    train, rng = _images()
    f = _projector(train)
    mask = rng.uniform(size=(3, 6, 6)) < 0.7
    y = train * mask[:, None]
    r = known_mask_recovery(f, y, mask, tol=1e-6, patience=None, record_history=True)
    for i in range(3):
        col = r.history[:, i]
        first = int(np.flatnonzero(col < 1e-6)[0]) + 1
        assert r.iterations[i] == first and r.stop_reason[i] == "converged"


def test_tol_zero_runs_every_iteration():
    train, rng = _images()
    y = train * (rng.uniform(size=(3, 1, 6, 6)) < 0.7)
    r = blind_recovery(_projector(train), y, max_iter=7, inner_iter=2, tol=0.0)
    assert r.iterations.tolist() == [7] * 3 and r.stop_reason == ["max_iter"] * 3


@pytest.mark.parametrize("bad", [-1, 2.5, "auto", float("nan")])
def test_bad_patience_and_tol(bad):
    y = np.ones((1, 1, 2, 2))
    with pytest.raises(ConfigError, match="patience"):
        known_mask_recovery(lambda a: a, y, np.ones((2, 2)), patience=bad)
    if bad != "auto":
        with pytest.raises(ConfigError, match="tol"):
            known_mask_recovery(lambda a: a, y, np.ones((2, 2)), tol="fast" if bad == 2.5 else bad)


def test_blind_misfit_is_the_mask_steps_objective():
    """The blind solver's misfit (what `patience` watches) is eq. (7)'s fidelity at the
    optimal mask: sqrt(sum_i min((y_i - x_i)^2, y_i^2)) / ||y||, i.e. ||y - H x|| / ||y||
    with H = mask_step(y, x)."""
    rng = np.random.default_rng(3)
    y = rng.uniform(0, 1, (4, 1, 5, 5)) * (rng.uniform(size=(4, 1, 5, 5)) < 0.6)
    seen = {}

    def cb(k, state, res):
        seen["x"], seen["y"] = np.asarray(state.x), np.asarray(state.y)

    from refinv.solvers import _loop

    got = {}
    orig = FloorRule.update

    def spy(self, idx, change, misfit=None, moving=None, scale=None):
        got["misfit"], got["scale"] = misfit, scale
        return orig(self, idx, change, misfit, moving, scale)

    FloorRule.update = spy
    try:
        blind_recovery(lambda a: 0.9 * a + 0.05, y, max_iter=1, inner_iter=1, callback=cb)
    finally:
        FloorRule.update = orig
    x, yy = seen["x"], seen["y"]
    h = mask_step(yy, x)
    want = np.linalg.norm((yy - h * x).reshape(4, -1), axis=1) / np.linalg.norm(
        yy.reshape(4, -1), axis=1
    )
    np.testing.assert_allclose(got["misfit"], want, rtol=1e-12)
    np.testing.assert_allclose(
        got["scale"],
        np.linalg.norm(x.reshape(4, -1), axis=1) / np.linalg.norm(yy.reshape(4, -1), axis=1),
        rtol=1e-12,
    )
    assert _loop.StopReason.STALLED == "stalled"


# ------------------------------------------------------------------ compaction
def _per_sample_ae(centers: np.ndarray):
    """A nonlinear per-pixel map pulling each image towards its nearest center (a stand-in
    autoencoder whose output for one image never depends on the others in the batch)."""

    def f(a):
        flat = a.reshape(a.shape[0], -1)
        out = np.empty_like(flat)
        for i, v in enumerate(flat):
            c = centers[np.argmin(((centers - v) ** 2).sum(1))]
            out[i] = c + 0.6 * np.tanh(v - c)
        return out.reshape(a.shape)

    return f


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 7), method=st.sampled_from(
    ["blind", "known", "ae-iterations"]))  # fmt: skip
def test_compaction_gives_each_image_what_it_gets_alone(seed, n, method):
    """Stopped images leave the batch (fewer rows per call); every image's estimate,
    iteration count, stop reason and state are bitwise those of the image solved alone."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0, 1, (3, 16)).astype(np.float32)
    f = _per_sample_ae(centers)
    x = centers[rng.integers(0, 3, n)] + rng.normal(0, 0.2, (n, 16)).astype(np.float32)
    x = np.clip(x, 0, 1).reshape(n, 1, 4, 4)
    mask = rng.uniform(size=(n, 4, 4)) < 0.6
    y = (x * mask[:, None]).astype(np.float32)

    def solve(yy, mm):
        if method == "blind":
            return blind_recovery(f, yy, max_iter=60, patience=5)
        if method == "known":
            return known_mask_recovery(f, yy, mm, max_iter=60, patience=5)
        return ae_iterations(f, yy, max_iter=600, patience=5)

    full = solve(y, mask)
    assert len(set(full.iterations.tolist())) >= 1
    for i in range(n):
        one = solve(y[i : i + 1], mask[i : i + 1])
        assert np.array_equal(one.x[0], full.x[i])
        assert one.iterations[0] == full.iterations[i]
        assert one.stop_reason[0] == full.stop_reason[i]
        for a, b in zip(one.state, full.state, strict=True):
            if a is not None:
                assert np.array_equal(a[0], b[i])


class Search(NamedTuple):
    x: Any
    k: Any


def search_step(s: Search):
    """Changes and misfit flat far above the floor, the discrete state moving every step
    (a blind search that never finds anything)."""
    n = s.x.shape[0]
    return Search(s.x, s.k + 1), Check(np.full(n, 0.05), np.full(n, 0.3), np.ones(n, bool))


def test_search_patience_stops_a_search_that_makes_no_progress():
    """A sample whose discrete state keeps moving is searching: `patience` never gives up
    on it (the budget runs out); `search_patience` does, after that many checks."""
    eps = float(np.finfo(np.float32).eps)
    s0 = Search(np.ones((2, 1)), np.zeros(2))
    res = run_loop(search_step, s0, max_iter=60, tol=0.0, rule=FloorRule(2, eps, patience=5))
    assert res.stop_reason == ["max_iter"] * 2
    rule = FloorRule(2, eps, patience=5, search_patience=12)
    res = run_loop(search_step, s0, max_iter=60, tol=0.0, rule=rule)
    assert res.stop_reason == ["stalled"] * 2 and res.iterations.tolist() == [12, 12]
    y = np.ones((1, 1, 2, 2))
    with pytest.raises(ConfigError, match="search_patience"):
        blind_recovery(lambda a: a, y, search_patience=-2)
    assert blind_recovery(lambda a: a, y, search_patience=4).info["search_patience"] == 4


def test_the_misfit_of_a_black_image_or_a_huge_iterate_warns_nothing():
    """A diverging iterate or an all-black degraded image (||y|| = 0) makes the misfit overflow
    to inf (no progress, as the rule should read it) without a NumPy RuntimeWarning reaching
    the user (it leaked into `refinv audit`'s output before)."""
    import warnings

    from refinv.solvers.recovery import _Norms

    y = np.zeros((2, 1, 3, 3), dtype=np.float32)
    y[1] = 0.5
    x = np.full_like(y, 1e30)  # x * x overflows float32 inside the misfit
    r2 = np.minimum((x - y) / 1e20, 1.0) ** 2  # finite squared residuals, some nonzero
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mis, scale = _Norms(np).misfit(r2, x, y)
    assert mis[0] > 1e30 and np.isfinite(mis[1]) and np.isinf(scale).all()


def test_a_divergence_warning_points_at_the_users_line():
    """The DivergenceWarning names the caller's file and line, not refinv's internals (the
    README's snippet showed 'refinv/solvers/recovery.py:542: DivergenceWarning')."""
    from refinv.errors import DivergenceWarning
    from refinv.solvers import blind_recovery

    y = np.full((2, 1, 2, 2), 0.5)
    with pytest.warns(DivergenceWarning) as rec:
        blind_recovery(lambda a: 10.0 * a, y, max_iter=50)  # grows without bound
    assert rec[0].filename == __file__, rec[0].filename
