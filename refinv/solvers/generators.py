"""Inverting a generator from its weights: PLUGIn (Joshi et al., 2021) and gradient descent.

Setting: ``y = G(x*) + e`` with a dense generator
``G(x) = s_d(A_d ... s_1(A_1 x + b_1) ... + b_d)`` given as a
:class:`~refinv.onnx.chain.LayerChain` (read from ONNX by
:func:`refinv.onnx.graph.read_chain`, or built with
:func:`refinv.onnx.chain.dense_chain`). Both solvers are batched over
observations and run on the shared :func:`~refinv.solvers.run_loop`
(per-sample stopping); an optional observation ``mask`` (1 = observed) keeps
only the observed entries in the fit (inpainting).

PLUGIn (eq. 5 of Joshi et al., 2021)::

    x^{k+1} = x^k - eta A_1^T A_2^T ... A_d^T (G(x^k) - y)

with the *static* matrix ``A_1^T ... A_d^T`` multiplied once. Step sizes:
``"gaussian"``: ``2**d`` (i.i.d. ``N(0, 1/n_i)`` weights and ReLU, Theorem 1);
``"leaky"``: ``prod_i 1/lambda_i``, ``lambda_i = E[g s_i(g)]``, ``g ~ N(0, 1)``
(Section 5 of Joshi et al. (2021); ``(1 + c)/2`` for a leaky ReLU of slope ``c``, 1/2 for
ReLU, so it equals ``2**d`` on ReLU networks); ``"norm"``:
``1 / prod_i ||A_i||_2`` (the paper's heuristic for trained weights); or a
number. **Extension** (not in the theory): biases enter ``G`` but not the
static matrix; output activations other than ReLU (tanh, sigmoid) are simply
part of ``G``.

Gradient descent (eq. 4 of Joshi et al., 2021) on ``1/2 ||m (G(x) - y)||^2``::

    x^{k+1} = x^k - eta (D_1 A_1)^T ... (D_d A_d)^T (G(x^k) - y)

where ``D_i = diag(s_i'(A_i x_i + b_i))`` (the ReLU sub-gradient: 1 where the
pre-activation is positive). Fixed step, or a parallel Armijo backtracking
(``backtracking=True``: the trial steps ``eta 2^-j``, ``j < n_trials``, are
evaluated in one batched forward pass, no host sync), optional heavy-ball
momentum.

Random restarts (both solvers): ``restarts`` extra starts drawn
``N(0, init_scale^2 I)``; all starts run in one batch and each observation
keeps the start with the lowest measurement error ``||m (G(x) - y)||``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..backend import (
    as_generator,
    from_numpy,
    namespace,
    require_finite,
    require_floating,
    to_numpy,
)
from ..backend import device_of as _device
from ..errors import ConfigError, ShapeError, UnsupportedGraphError
from ..onnx.graph import (
    Activation,
    LayerChain,
    activation_derivative,
    apply_activation,
    dense_chain,
)
from ._loop import SolverResult, relative_change, run_loop, take_batch

__all__ = [
    "DenseNet",
    "plugin",
    "gradient_descent",
    "plugin_step_size",
    "leaky_constant",
]


# --------------------------------------------------------------------------- network


class DenseNet:
    """A dense :class:`LayerChain` with its weights moved to one namespace/dtype.

    Works on flattened samples ``(batch, n_i)``. ``weights[i]`` is ``(n_{i+1}, n_i)``.
    """

    def __init__(self, chain: LayerChain | list, like: Any):
        if not isinstance(chain, LayerChain):
            chain = dense_chain(list(chain), "relu")
        if not chain.is_dense:
            kinds = sorted({lay.kind for lay in chain.layers})
            raise UnsupportedGraphError(
                f"explicit-weight generator inversion needs dense layers only, got {kinds}"
            )
        self.chain = chain
        self.xp = namespace(like)
        dt = like.dtype
        self.weights = [from_numpy(np.asarray(lay.weight), like=like, dtype=dt) for lay in chain]
        # contiguous transposes, made once on the host: ``h @ W.T`` on a strided view is up to
        # 100x slower with multithreaded OpenBLAS on a loaded machine (measured)
        self.weights_t = [
            from_numpy(np.ascontiguousarray(np.asarray(lay.weight).T), like=like, dtype=dt)
            for lay in chain
        ]
        self.biases = [
            None
            if lay.bias is None
            else from_numpy(np.asarray(lay.bias).reshape(-1), like=like, dtype=dt)
            for lay in chain
        ]
        self.acts: list[Activation] = [lay.activation for lay in chain]
        self.widths = [int(chain.layers[0].weight.shape[1])] + [
            int(lay.weight.shape[0]) for lay in chain
        ]

    @property
    def depth(self) -> int:
        return len(self.weights)

    def pre(self, i: int, h: Any) -> Any:
        """``A_i h + b_i`` on a batch of flattened inputs."""
        out = h @ self.weights_t[i]
        return out if self.biases[i] is None else out + self.biases[i]

    def forward(self, x: Any, keep: bool = False):
        """``G(x)``; with ``keep=True`` also the list of pre-activations."""
        h = x
        pres = []
        for i in range(self.depth):
            p = self.pre(i, h)
            if keep:
                pres.append(p)
            h = apply_activation(self.acts[i], p)
        return (h, pres) if keep else h

    def backward(self, pres: list, r: Any) -> Any:
        """``(D_1 A_1)^T ... (D_d A_d)^T r`` with ``D_i = diag(s_i'(pre_i))``."""
        g = r
        for i in reversed(range(self.depth)):
            g = (g * activation_derivative(self.acts[i], pres[i])) @ self.weights[i]
        return g

    def static_matrix(self) -> Any:
        """``A_d ... A_1`` (shape ``(n_d, n_0)``): the transpose of PLUGIn's static matrix."""
        m = self.weights[0]
        for w in self.weights[1:]:
            m = w @ m
        return m


def _prep(chain, y, mask, name):
    """Validate ``y`` (and ``mask``) and flatten them to ``(batch, n_d)``."""
    require_floating(y, f"{name}: y")
    xp = namespace(y, mask)
    net = DenseNet(chain, like=y)
    n = y.shape[0]
    nd = net.widths[-1]
    if math.prod(y.shape[1:]) != nd:
        raise ShapeError(
            f"{name}: y: expected (batch, {', '.join(map(str, net.chain.out_shape))}) "
            f"({nd} values per sample), got {tuple(y.shape)}"
        )
    require_finite(y, f"{name}: y")
    yf = xp.reshape(y, (n, nd))
    m = None
    if mask is not None:
        m = xp.astype(mask, y.dtype)
        try:
            if tuple(m.shape) != (n, nd):  # broadcast against y's shape (per-pixel masks too)
                m = xp.reshape(xp.broadcast_to(m, tuple(y.shape)), (n, nd))
        except Exception as exc:
            raise ShapeError(
                f"{name}: mask: expected a shape broadcastable to y {tuple(y.shape)} or "
                f"({n}, {nd}), got {tuple(mask.shape)}"
            ) from exc
        m = m + xp.zeros_like(yf)  # materialize per sample (the loop drops finished rows)
    return xp, net, yf, m


def _starts(xp, net, yf, x0, restarts, rng, init_scale, like, zero_first=True):
    """Initial points ``(R*batch, n_0)``: ``x0`` (or zeros, or a random draw when
    ``zero_first`` is False) then random restarts."""
    n, n0 = yf.shape[0], net.widths[0]
    gen = as_generator(rng)
    scale = 1.0 if init_scale is None else float(init_scale)
    if x0 is None and zero_first:
        first = xp.zeros((n, n0), dtype=like.dtype, device=_device(like))
    elif x0 is None:
        first = from_numpy(scale * gen.standard_normal((n, n0)), like=like, dtype=like.dtype)
    else:
        if math.prod(x0.shape[1:]) != n0 or x0.shape[0] != n:
            raise ShapeError(f"x0: expected ({n}, {n0}) values, got {tuple(x0.shape)}")
        first = xp.astype(xp.reshape(x0, (n, n0)), like.dtype)
    parts = [first]
    if restarts:
        for _ in range(restarts):
            parts.append(
                from_numpy(scale * gen.standard_normal((n, n0)), like=like, dtype=like.dtype)
            )
    return xp.concat(parts, axis=0) if len(parts) > 1 else first


def _tile(xp, a, r):
    return None if a is None else xp.concat([a] * r, axis=0) if r > 1 else a


def _pick_best(res: SolverResult, net: DenseNet, yf, m, n: int, r: int, in_shape) -> SolverResult:
    """Keep, per observation, the start with the lowest measurement error."""
    xp = net.xp
    x = res.x
    if r == 1:
        best = np.zeros(n, dtype=np.int64)
        idx = np.arange(n)
    else:
        resid = net.forward(x) - _tile(xp, yf, r)
        if m is not None:
            resid = resid * _tile(xp, m, r)
        err = np.asarray(to_numpy(xp.linalg.vector_norm(resid, axis=1))).reshape(r, n)
        err = np.where(np.isfinite(err), err, np.inf)
        best = np.argmin(err, axis=0)
        idx = best * n + np.arange(n)
        res.info["restart_errors"] = err.T.tolist()
    state = take_batch(res.state, idx)
    xb = xp.reshape(state.x, (n, *in_shape))
    res.info["best_start"] = best.tolist()
    return SolverResult(
        x=xb,
        state=state,
        iterations=res.iterations[idx],
        converged=res.converged[idx],
        diverged=res.diverged[idx],
        residual=res.residual[idx],
        stop_reason=[res.stop_reason[i] for i in idx],
        history=None if res.history is None else res.history[:, idx],
        seconds=res.seconds,
        method=res.method,
        info=res.info,
    )


# --------------------------------------------------------------------------- step sizes


def leaky_constant(act: Activation) -> float:
    """``lambda = E[g s(g)]``, ``g ~ N(0, 1)``: 1/2 for ReLU, ``(1 + c)/2`` for leaky ReLU
    of slope ``c`` (mean slope for PReLU), 1 for the identity; tanh, sigmoid, clip and
    plu by Gauss-Hermite quadrature (80 nodes)."""
    name = act.name
    if name == "relu":
        return 0.5
    if name == "identity":
        return 1.0
    if name in ("leaky_relu", "prelu"):
        return 0.5 * (1.0 + float(np.mean(act.slope)))
    if name not in ("tanh", "sigmoid", "clip", "plu"):
        raise ConfigError(f"no leaky constant for activation {name!r}")
    t, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    return float(np.sum(w * t * np.asarray(apply_activation(act, t))))


def plugin_step_size(chain: LayerChain | DenseNet, step: str | float) -> float:
    """PLUGIn's ``eta``: ``"gaussian"`` (``2**d``), ``"leaky"`` (``prod 1/lambda_i``),
    ``"norm"`` (``1/prod ||A_i||_2``) or a positive number."""
    ch = chain.chain if isinstance(chain, DenseNet) else chain
    if not isinstance(ch, LayerChain):
        ch = dense_chain(list(ch), "relu")
    d = len(ch)
    if isinstance(step, (int, float)) and not isinstance(step, bool):
        if not step > 0:
            raise ConfigError(f"step: expected a positive number, got {step}")
        return float(step)
    if step == "gaussian":
        return float(2**d)
    if step == "leaky":
        return float(np.prod([1.0 / leaky_constant(lay.activation) for lay in ch]))
    if step == "norm":
        return float(1.0 / np.prod([np.linalg.norm(lay.weight, 2) for lay in ch]))
    raise ConfigError(f"step: expected 'gaussian', 'leaky', 'norm' or a number, got {step!r}")


# --------------------------------------------------------------------------- PLUGIn


class PluginState(NamedTuple):
    x: Any  # (batch, n_0) current estimate
    y: Any  # (batch, n_d) observation
    m: Any  # (batch, n_d) observation mask or None


def plugin(
    chain: LayerChain | list,
    y: Any,
    *,
    step: str | float = "gaussian",
    mask: Any = None,
    x0: Any = None,
    restarts: int = 0,
    init_scale: float | None = None,
    rng: int | np.random.Generator | None = 0,
    max_iter: int = 10_000,
    tol: float = 1e-13,
    check_every: int = 1,
    callback=None,
    record_history: bool = False,
    progress: bool | None = None,
) -> SolverResult:
    """PLUGIn: invert a dense generator by the partially linearized update (eq. 5, Joshi et al., 2021).

    Parameters
    ----------
    chain : LayerChain or list of weight matrices
        The generator (a list of ``(n_i, n_{i-1})`` matrices means ReLU layers, no bias).
    y : array, shape (batch, *out_shape)
        Observations.
    step : {"gaussian", "leaky", "norm"} or float
        See :func:`plugin_step_size`. Measured (docs/experiments/generators_plugin.py):
        on Gaussian 3-layer ReLU networks the theoretical ``2**d = 8`` often
        oscillates at these finite sizes (n_0 = 10, widths 441: 7/10 recovered),
        the paper's experimental ``eta = 3`` recovered 10/10; Theorem 1 allows
        ``eta = theta 2**d`` for any ``theta`` in (0, 4/3).
    mask : array, optional
        1 where ``y`` is observed, broadcastable to ``y``.
    x0 : array, optional
        First start (default zeros: then the first iterate ``eta M y`` is the paper's
        unbiased estimate); ``restarts`` more are random ``N(0, init_scale^2 I)``
        (``init_scale`` default 1).
    max_iter, tol
        Stop at ``||x^{k+1} - x^k|| < tol ||x^k||`` (paper: 1e-13) or ``max_iter``.

    Returns
    -------
    SolverResult
        ``x`` of shape ``(batch, *in_shape)``; ``info["step"]`` the step used.
    """
    xp, net, yf, m = _prep(chain, y, mask, "plugin")
    n = yf.shape[0]
    eta = plugin_step_size(net, step)
    # the static matrix M = A_1^T ... A_d^T, computed once (eq. 5); rows of the batch are
    # updated by r M^T, so we keep M^T = A_d ... A_1 (n_d, n_0)
    Pt = net.static_matrix()
    r = 1 + int(restarts)
    xs = _starts(xp, net, yf, x0, restarts, rng, init_scale, y)

    def step_fn(s: PluginState):
        resid = net.forward(s.x) - s.y  # G(x^k) - y
        if s.m is not None:
            resid = resid * s.m
        x_new = s.x - eta * (resid @ Pt)  # x^k - eta A_1^T ... A_d^T (G(x^k) - y)   (5)
        return s._replace(x=x_new), relative_change(xp, x_new, s.x)

    state = PluginState(x=xs, y=_tile(xp, yf, r), m=_tile(xp, m, r))
    res = run_loop(
        step_fn,
        state,
        max_iter=max_iter,
        tol=tol,
        check_every=check_every,
        callback=callback,
        record_history=record_history,
        method="plugin",
        info={"step": eta, "step_rule": str(step), "restarts": int(restarts), "depth": net.depth},
        progress=progress,
    )
    return _pick_best(res, net, yf, m, n, r, net.chain.in_shape)


# --------------------------------------------------------------------------- gradient descent


class GDState(NamedTuple):
    x: Any  # (batch, n_0)
    x_prev: Any  # (batch, n_0) previous iterate (momentum)
    eta: Any  # (batch,) current step (backtracking adapts it per sample)
    y: Any
    m: Any


def gradient_descent(
    chain: LayerChain | list,
    y: Any,
    *,
    step: float | None = None,
    backtracking: bool = False,
    n_trials: int = 12,
    armijo: float = 1e-4,
    momentum: float = 0.0,
    mask: Any = None,
    x0: Any = None,
    restarts: int = 0,
    init_scale: float | None = None,
    rng: int | np.random.Generator | None = 0,
    max_iter: int = 10_000,
    tol: float = 1e-13,
    check_every: int = 1,
    callback=None,
    record_history: bool = False,
    progress: bool | None = None,
) -> SolverResult:
    """(Sub)gradient descent on ``1/2 ||m (G(x) - y)||^2`` (eq. 4 of Joshi et al., 2021).

    ``step`` defaults to ``1 / prod_i ||A_i||_2^2`` (a Lipschitz bound of the
    gradient for 1-Lipschitz activations). With ``backtracking=True`` it is the
    initial trial step, halved up to ``n_trials - 1`` times until the Armijo
    condition ``f(x - eta g) <= f(x) - armijo eta ||g||^2`` holds (all trials in
    one batched forward pass; with momentum the trials are
    ``x + momentum (x - x_prev) - eta 2^-j g``; if none holds the smallest step is
    taken without momentum), then doubled for the next iteration. ``momentum``: heavy ball,
    ``x^{k+1} = x^k - eta g + momentum (x^k - x^{k-1})``.
    """
    xp, net, yf, m = _prep(chain, y, mask, "gradient_descent")
    n = yf.shape[0]
    if step is None:
        step = float(1.0 / np.prod([np.linalg.norm(lay.weight, 2) ** 2 for lay in net.chain]))
    if not step > 0:
        raise ConfigError(f"step: expected a positive number, got {step}")
    if not 0 <= momentum < 1:
        raise ConfigError(f"momentum: expected a number in [0, 1), got {momentum}")
    r = 1 + int(restarts)
    # x = 0 is a stationary point of a bias-free ReLU generator: GD starts at random
    xs = _starts(xp, net, yf, x0, restarts, rng, init_scale, y, zero_first=False)
    dt = y.dtype
    dev = _device(y)
    fracs = from_numpy(0.5 ** np.arange(n_trials), like=y, dtype=dt)

    def loss(x, yy, mm):
        res = net.forward(x) - yy
        if mm is not None:
            res = res * mm
        return res

    def step_fn(s: GDState):
        g_out, pres = net.forward(s.x, keep=True)
        resid = g_out - s.y
        if s.m is not None:
            resid = resid * s.m
        g = net.backward(pres, resid)  # (D_1 A_1)^T ... (D_d A_d)^T (G(x^k) - y)   (4)
        eta = s.eta
        mom = momentum * (s.x - s.x_prev) if momentum else None
        if backtracking:
            b, n0 = s.x.shape
            f0 = 0.5 * xp.sum(resid * resid, axis=1)
            gg = xp.sum(g * g, axis=1)
            etas = eta[:, None] * fracs[None, :]  # (b, T)
            base = s.x if mom is None else s.x + mom  # the momentum step is part of each trial
            trial = base[:, None, :] - etas[:, :, None] * g[:, None, :]
            tr = xp.reshape(trial, (b * n_trials, n0))
            yy = xp.reshape(
                xp.broadcast_to(s.y[:, None, :], (b, n_trials, s.y.shape[1])), (b * n_trials, -1)
            )
            mm = None
            if s.m is not None:
                mm = xp.reshape(
                    xp.broadcast_to(s.m[:, None, :], (b, n_trials, s.m.shape[1])),
                    (b * n_trials, -1),
                )
            rt = loss(tr, yy, mm)
            ft = xp.reshape(0.5 * xp.sum(rt * rt, axis=1), (b, n_trials))
            ok = ft <= f0[:, None] - armijo * etas * gg[:, None]
            any_ok = xp.any(ok, axis=1)
            # first accepted trial; if none is accepted: the smallest step, momentum dropped
            first = xp.argmax(xp.astype(ok, dt), axis=1)
            first = xp.where(any_ok, first, xp.full_like(first, n_trials - 1))
            eta = xp.take_along_axis(etas, first[:, None], axis=1)[:, 0]
            if mom is not None:
                mom = xp.where(any_ok[:, None], mom, xp.zeros_like(mom))
        x_new = s.x - eta[:, None] * g
        if mom is not None:
            x_new = x_new + mom
        eta_next = 2.0 * eta if backtracking else eta
        return (
            s._replace(x=x_new, x_prev=s.x, eta=eta_next),
            relative_change(xp, x_new, s.x),
        )

    nb = xs.shape[0]
    state = GDState(
        x=xs,
        x_prev=xs,
        eta=xp.full((nb,), step, dtype=dt, device=dev),
        y=_tile(xp, yf, r),
        m=_tile(xp, m, r),
    )
    res = run_loop(
        step_fn,
        state,
        max_iter=max_iter,
        tol=tol,
        check_every=check_every,
        callback=callback,
        record_history=record_history,
        method="gradient_descent",
        info={
            "step": float(step),
            "backtracking": bool(backtracking),
            "momentum": float(momentum),
            "restarts": int(restarts),
        },
        progress=progress,
    )
    return _pick_best(res, net, yf, m, n, r, net.chain.in_shape)
