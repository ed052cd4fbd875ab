"""Lifted Bregman inversion of perceptrons and feed-forward networks (Wang and Benning, 2023).

Problem (Wang and Benning, 2023, eq. 3/11): given a layer ``y = s(A x + b)`` with a proximal
activation ``s = prox_Psi`` (see :mod:`refinv.operators.activations`) and
noisy data ``y^delta``, find::

    x_alpha in argmin_x  B_Psi(y^delta, A x + b) + alpha TV(x)

with the Bregman loss ``B_Psi`` of eq. (4) (convex in ``x``, gradient
``A^T (s(A x + b) - y)``) and the discrete total variation
:class:`refinv.regularizers.tv.TotalVariation` (isotropic ``p = 2`` by
default, anisotropic ``p = 1`` as an option).

Solvers (all batched over samples, all on :func:`refinv.solvers.run_loop`):

* :func:`perceptron_pdhg` - the generalized PDHG of eq. (14);
* :func:`perceptron_landweber` - Landweber iteration stopped by Morozov's
  discrepancy principle (the baseline of Section 5.1.1);
* :func:`multilayer_cd` - coordinate descent over the input and the hidden
  variables, eqs. (15)-(17);
* :func:`invert_chain` - the above for a :class:`refinv.onnx.chain.LayerChain`.

Stopping follows the paper: a sample stops when the Euclidean norms of the
changes of all its variables (``x`` and ``z``, and the hidden ``x_l``) are
below ``tol`` (absolute, not relative), or at ``max_iter``.
"""

from __future__ import annotations

import collections
import math
from typing import Any, NamedTuple

import numpy as np

from ..backend import device_of as _device
from ..backend import from_numpy, namespace, require_finite, require_floating
from ..errors import ConfigError, ShapeError
from ..operators.activations import ProxActivation, activation_from_graph
from ..operators.linear import LinearOperator, from_layer, operator_norm
from ..regularizers.tv import TotalVariation
from ._loop import SolverResult, run_loop

__all__ = [
    "BregmanLayer",
    "PDHGState",
    "LandweberState",
    "perceptron_pdhg",
    "perceptron_landweber",
    "multilayer_cd",
    "layers_from_chain",
    "invert_chain",
]


def _norm(xp: Any, d: Any) -> Any:
    """Per-sample Euclidean norm over all non-batch axes."""
    return xp.linalg.vector_norm(xp.reshape(d, (d.shape[0], -1)), axis=1)


class _Reshaped(LinearOperator):
    """``op`` seen with another input sample shape of the same size (a Flatten)."""

    def __init__(self, op: LinearOperator, in_shape):
        self.op = op
        self.in_shape = tuple(in_shape)
        self.out_shape = op.out_shape
        if math.prod(self.in_shape) != math.prod(op.in_shape):
            raise ShapeError(
                f"cannot view an operator on {op.in_shape} as acting on {self.in_shape}"
            )

    def forward(self, x: Any) -> Any:
        xp = namespace(x)
        return self.op.forward(xp.reshape(x, (x.shape[0], *self.op.in_shape)))

    def adjoint(self, y: Any) -> Any:
        xp = namespace(y)
        return xp.reshape(self.op.adjoint(y), (y.shape[0], *self.in_shape))


class BregmanLayer(NamedTuple):
    """One layer ``x -> act(A x + b)`` for the Bregman solvers.

    ``A`` is a :class:`~refinv.operators.linear.LinearOperator`, ``b`` an array
    broadcastable to ``(batch, *A.out_shape)`` or ``None``, ``act`` a
    :class:`~refinv.operators.activations.ProxActivation`.
    """

    A: LinearOperator
    b: Any
    act: ProxActivation

    def affine(self, x: Any) -> Any:
        ax = self.A.forward(x)
        return ax if self.b is None else ax + self.b


def _as_image_op(A: LinearOperator, x_shape) -> LinearOperator:
    if x_shape is None:
        x_shape = A.in_shape
    x_shape = tuple(x_shape)
    if len(x_shape) < 2:
        raise ShapeError(
            f"TV needs an image: expected x_shape with >= 2 axes (e.g. (1, 28, 28)), got {x_shape}"
        )
    return A if x_shape == tuple(A.in_shape) else _Reshaped(A, x_shape)


def _check_data(y: Any, A: LinearOperator) -> Any:
    xp = namespace(y)
    require_floating(y, "y")
    require_finite(y, "y")
    if tuple(y.shape[1:]) != tuple(A.out_shape):
        if math.prod(y.shape[1:]) == math.prod(A.out_shape):
            return xp.reshape(y, (y.shape[0], *A.out_shape))
        raise ShapeError(
            f"y: expected shape (batch, {', '.join(map(str, A.out_shape))}) matching the "
            f"layer's output, got {tuple(y.shape)}"
        )
    return y


# --------------------------------------------------------------------------- PDHG


class PDHGState(NamedTuple):
    """State of the perceptron PDHG: primal ``x``, dual ``z`` (``(batch, *x_shape, 2)``),
    data ``y``, and ``gx = grad x`` (kept so each iteration computes one gradient)."""

    x: Any
    z: Any
    y: Any
    gx: Any


def _pdhg_steps(steps: str, op_norm, alpha: float, tau_x, tau_z) -> tuple[float, float]:
    """Default PDHG steps (eq. 14): ``"paper"`` or ``"safe"`` (Condat-Vu), see perceptron_pdhg."""
    if steps not in ("paper", "safe"):
        raise ConfigError(f"steps: expected 'paper' or 'safe', got {steps!r}")
    if tau_z is None:
        tau_z = 1.0 / (8.0 * alpha)
    if tau_x is None:
        if steps == "paper":
            tau_x = 1.99 / op_norm**2
        else:  # Condat-Vu: 1/tau_x - tau_z ||alpha grad||^2 >= L/2, ||grad||^2 <= 8
            tau_x = 0.99 / (op_norm**2 / 2 + 8.0 * tau_z * alpha**2)
    return tau_x, tau_z


def _tv_pdhg_step(tvr: TotalVariation, x, z, gx, data_grad, tau_x, tau_z, alpha):
    """One PDHG step of eq. (14) (= (16) inside the coordinate descent).

    ``data_grad = A^T (s(A x + b) - y)`` at ``x``; ``gx = grad x`` from the
    previous step, so each step computes one gradient. Returns ``x, z, grad x``.
    """
    G = tvr.grad
    x_new = x - tau_x * (data_grad - alpha * G.div(z))  # (14a)
    gx_new = G.forward(x_new)
    z_new = tvr.project(z + (tau_z * alpha) * (2.0 * gx_new - gx))  # (14b)
    return x_new, z_new, gx_new


def perceptron_pdhg(
    y: Any,
    layer: BregmanLayer,
    *,
    alpha: float,
    p: int = 2,
    x_shape=None,
    tau_x: float | None = None,
    tau_z: float | None = None,
    steps: str = "paper",
    x0: Any = None,
    z0: Any = None,
    max_iter: int = 10_000,
    tol: float = 1e-5,
    check_every: int = 1,
    callback=None,
    record_history: bool = False,
    progress: bool | None = None,
    rng: int | np.random.Generator | None = 0,
) -> SolverResult:
    """Invert ``y = act(A x + b)`` with TV regularization by the PDHG of eq. (14).

    Parameters
    ----------
    y : array, shape (batch, *A.out_shape)
        Data (the perceptron's noisy output), in ``dom(Psi)``.
    layer : BregmanLayer
    alpha : float
        Regularization parameter (``alpha > 0``).
    p : {2, 1}
        TV pixel norm: 2 isotropic (the paper's), 1 anisotropic.
    x_shape : tuple, optional
        Image shape of ``x`` when ``A`` acts on a flattened vector.
    tau_x, tau_z : float, optional
        Steps; defaults set by ``steps``.
    steps : {"paper", "safe"}
        Default steps when ``tau_x``/``tau_z`` are not given. ``"paper"``
        (Wang and Benning, 2023): ``tau_x = 1.99 / ||A||_2^2`` (power iteration, seeded by
        ``rng``) and ``tau_z = 1 / (8 alpha)``. These lie outside the
        Condat-Vu sufficient condition ``1/tau_x - 8 tau_z alpha^2 >=
        ||A||_2^2 / 2`` for every ``alpha > 0`` and can diverge (a diverging
        sample is stopped and flagged). ``"safe"``: the same ``tau_z`` and
        ``tau_x = 0.99 / (||A||_2^2 / 2 + 8 tau_z alpha^2)``, which satisfies it.
    x0, z0 : arrays, optional
        Starting points (default zero, as in the paper).
    max_iter, tol : stop when ``||x^{k+1} - x^k||`` and ``||z^{k+1} - z^k||`` are both
        ``< tol`` (per sample), or after ``max_iter`` iterations.

    Returns
    -------
    SolverResult
        ``x`` of shape ``(batch, *x_shape)``; ``state.z`` the dual variable;
        ``info`` holds ``tau_x``, ``tau_z``, ``alpha``, ``op_norm``.

    Notes
    -----
    Eq. (14), with ``div = -grad^T``::

        x^{k+1} = x^k - tau_x ( A^T (s(A x^k + b) - y) - alpha div z^k )
        z^{k+1} = proj_{|z_ij| <= 1} ( z^k + tau_z alpha (2 grad x^{k+1} - grad x^k) )
    """
    xp = namespace(y)
    if not alpha > 0:
        raise ConfigError(f"alpha: expected a positive number, got {alpha}")
    A = _as_image_op(layer.A, x_shape)
    y = _check_data(y, A)
    tvr = TotalVariation(A.in_shape, p=p)
    G = tvr.grad
    op_norm = None if tau_x is not None else operator_norm(A, like=y, rng=rng)
    tau_x, tau_z = _pdhg_steps(steps, op_norm, alpha, tau_x, tau_z)
    if tau_x <= 0 or tau_z <= 0:
        raise ConfigError(f"steps: expected tau_x > 0 and tau_z > 0, got {tau_x}, {tau_z}")
    n = y.shape[0]
    dt, dev = y.dtype, _device(y)
    if x0 is None:
        x0 = xp.zeros((n, *A.in_shape), dtype=dt, device=dev)
    if z0 is None:
        z0 = xp.zeros((n, *G.out_shape), dtype=dt, device=dev)
    s, b = layer.act, layer.b

    def step(st: PDHGState):
        x, z, yy, gx = st
        r = s(A.forward(x) + b if b is not None else A.forward(x)) - yy
        x_new, z_new, gx_new = _tv_pdhg_step(tvr, x, z, gx, A.adjoint(r), tau_x, tau_z, alpha)
        res = xp.maximum(_norm(xp, x_new - x), _norm(xp, z_new - z))  # both changes < tol
        return PDHGState(x_new, z_new, yy, gx_new), res

    info = {
        "alpha": alpha, "p": p, "tau_x": tau_x, "tau_z": tau_z, "op_norm": op_norm, "steps": steps,
    }  # fmt: skip
    return run_loop(
        step,
        PDHGState(x0, z0, y, G.forward(x0)),
        max_iter=max_iter,
        tol=tol,
        check_every=check_every,
        callback=callback,
        record_history=record_history,
        method="bregman-pdhg",
        info=info,
        progress=progress,
    )


# --------------------------------------------------------------------------- Landweber


class LandweberState(NamedTuple):
    """State of the Landweber iteration: ``x``, the current residual ``r = s(A x + b) - y``,
    the data ``y`` and the per-sample stopping level ``level = tau_D * delta``."""

    x: Any
    r: Any
    y: Any
    level: Any


def perceptron_landweber(
    y: Any,
    layer: BregmanLayer,
    *,
    delta: Any,
    tau_d: float = 1.0,
    tau: float | None = None,
    x_shape=None,
    x0: Any = None,
    max_iter: int = 10_000,
    callback=None,
    record_history: bool = False,
    progress: bool | None = None,
    rng: int | np.random.Generator | None = 0,
) -> SolverResult:
    """Landweber iteration for ``y = act(A x + b)``, stopped by the discrepancy principle.

    ``x^{k+1} = x^k - tau A^T (s(A x^k + b) - y)``, stopping at the first ``k``
    with ``||s(A x^k + b) - y|| <= tau_d * delta`` (Morozov). ``delta`` is the
    noise norm ``||y^delta - y||`` (a float or one value per sample; for
    i.i.d. noise of standard deviation ``sigma`` on ``m`` outputs,
    ``sigma * sqrt(m)``). ``tau`` defaults to ``1.99 / ||A||_2^2``.

    The residual recorded by the loop is ``||s(A x^k + b) - y|| / (tau_d delta)``:
    a sample converged when it fell below 1.
    """
    xp = namespace(y)
    A = _as_image_op(layer.A, x_shape) if x_shape is not None else layer.A
    layer = BregmanLayer(A, layer.b, layer.act)
    y = _check_data(y, A)
    n = y.shape[0]
    d = np.broadcast_to(np.asarray(delta, dtype=np.float64), (n,))
    if not np.all(d > 0) or tau_d <= 0:
        raise ConfigError(f"delta and tau_d: expected positive numbers, got {delta}, {tau_d}")
    op_norm = None
    if tau is None:
        op_norm = operator_norm(A, like=y, rng=rng)
        tau = 1.99 / op_norm**2
    dt, dev = y.dtype, _device(y)
    if x0 is None:
        x0 = xp.zeros((n, *A.in_shape), dtype=dt, device=dev)
    r0 = layer.act(layer.affine(x0)) - y
    level = from_numpy(tau_d * d, like=y, dtype=dt)

    def step(st: LandweberState):
        x, r, yy, lev = st
        x_new = x - tau * A.adjoint(r)  # Landweber step on B_Psi(y, A x + b), grad (5)
        r_new = layer.act(layer.affine(x_new)) - yy
        return LandweberState(x_new, r_new, yy, lev), _norm(xp, r_new) / lev  # Morozov

    info = {"tau": tau, "tau_d": tau_d, "delta": d.tolist(), "op_norm": op_norm}
    return run_loop(
        step,
        LandweberState(x0, r0, y, level),
        max_iter=max_iter,
        tol=1.0,
        callback=callback,
        record_history=record_history,
        method="bregman-landweber",
        info=info,
        progress=progress,
    )


# --------------------------------------------------------------------------- multi-layer


def multilayer_cd(
    y: Any,
    layers: list[BregmanLayer],
    *,
    alpha: float,
    p: int = 2,
    x_shape=None,
    inner_iter: int = 10,
    tau_x: float | None = None,
    tau_z: float | None = None,
    tau_hidden: list[float] | None = None,
    steps: str = "paper",
    x0: Any = None,
    z0: Any = None,
    hidden0: list[Any] | None = None,
    max_iter: int = 1_500,
    tol: float = 1e-5,
    check_every: int = 1,
    callback=None,
    record_history: bool = False,
    progress: bool | None = None,
    rng: int | np.random.Generator | None = 0,
) -> SolverResult:
    """Invert ``y = s_L(A_L ... s_1(A_1 x + b_1) ... + b_L)`` by coordinate descent (15)-(17).

    Variables: the input ``x_0`` (state field ``x``), its TV dual ``z`` and the
    hidden ``x_1 .. x_{L-1}`` (fields ``h1 .. h{L-1}``); ``x_L = y``. One outer
    iteration:

    * ``x_0``: ``inner_iter`` PDHG steps (16) with data ``x_1`` (warm-started ``z``),
      steps ``tau_x``, ``tau_z`` as in :func:`perceptron_pdhg` (``steps="paper"`` or
      ``"safe"``, with ``||A_1||``);
    * ``x_l``, ``l = 1 .. L-1`` in order: one proximal-gradient step (17) with
      ``tau_l = 1.99 / ||A_{l+1}||_2^2``.

    ``hidden0`` defaults to the forward pass of ``x0`` (zero by default); ``z0``
    (the TV dual, default zero) and both allow a warm restart.
    Stops when the norms of the changes of all variables are ``< tol``.
    ``SolverResult.state`` holds every variable; ``info`` the steps.
    """
    xp = namespace(y)
    if not layers:
        raise ConfigError("layers: expected at least one layer, got none")
    if not alpha > 0:
        raise ConfigError(f"alpha: expected a positive number, got {alpha}")
    if inner_iter < 1:
        raise ConfigError(f"inner_iter: expected a positive integer, got {inner_iter}")
    L = len(layers)
    ops = [_as_image_op(layers[0].A, x_shape)]
    for lo in range(1, L):
        prev = layers[lo - 1].A.out_shape
        A = layers[lo].A
        ops.append(A if tuple(A.in_shape) == tuple(prev) else _Reshaped(A, prev))
    lays = [BregmanLayer(ops[i], layers[i].b, layers[i].act) for i in range(L)]
    y = _check_data(y, ops[-1])
    tvr = TotalVariation(ops[0].in_shape, p=p)
    G = tvr.grad
    norms = [operator_norm(op, like=y, rng=rng) for op in ops]
    tau_x, tau_z = _pdhg_steps(steps, norms[0], alpha, tau_x, tau_z)  # the x_0 sub-problem
    if tau_hidden is None:
        tau_hidden = [1.99 / norms[lo + 1] ** 2 for lo in range(L - 1)]
    if len(tau_hidden) != L - 1:
        raise ConfigError(f"tau_hidden: expected {L - 1} values, got {len(tau_hidden)}")
    n = y.shape[0]
    dt, dev = y.dtype, _device(y)
    if x0 is None:
        x0 = xp.zeros((n, *ops[0].in_shape), dtype=dt, device=dev)
    if hidden0 is None:
        hidden0, h = [], x0
        for lay in lays[:-1]:
            h = lay.act(lay.affine(h))
            hidden0.append(h)
    if len(hidden0) != L - 1:
        raise ConfigError(f"hidden0: expected {L - 1} arrays, got {len(hidden0)}")
    fields = ["x", "z"] + [f"h{lo}" for lo in range(1, L)] + ["y"]
    State = collections.namedtuple("CDState", fields)
    if z0 is None:
        z0 = xp.zeros((n, *G.out_shape), dtype=dt, device=dev)

    def step(st):
        x, z = st[0], st[1]
        hs = list(st[2 : 2 + L - 1])
        yy = st[-1]
        data1 = hs[0] if L > 1 else yy
        s1, l1 = lays[0].act, lays[0]
        xk, zk = x, z
        gk = G.forward(xk)
        for _ in range(inner_iter):  # x_0 sub-problem (15a) by PDHG (16)
            r = s1(l1.affine(xk)) - data1
            xk, zk, gk = _tv_pdhg_step(tvr, xk, zk, gk, l1.A.adjoint(r), tau_x, tau_z, alpha)
        res = xp.maximum(_norm(xp, xk - x), _norm(xp, zk - z))
        below = xk
        new_hs = []
        for lo in range(1, L):  # hidden variables x_l, (15b) by the prox-gradient step (17)
            h = hs[lo - 1]
            nxt = hs[lo] if lo < L - 1 else yy
            up = lays[lo]
            grad = up.A.adjoint(up.act(up.affine(h)) - nxt)
            f = lays[lo - 1].affine(below)
            t = tau_hidden[lo - 1]
            h_new = lays[lo - 1].act.prox((h - t * (grad - f)) / (1.0 + t), t / (1.0 + t))  # (17)
            res = xp.maximum(res, _norm(xp, h_new - h))
            new_hs.append(h_new)
            below = h_new
        return State(xk, zk, *new_hs, yy), res

    info = {
        "alpha": alpha,
        "p": p,
        "inner_iter": inner_iter,
        "tau_x": tau_x,
        "tau_z": tau_z,
        "tau_hidden": list(tau_hidden),
        "op_norms": norms,
    }
    return run_loop(
        step,
        State(x0, z0, *hidden0, y),
        max_iter=max_iter,
        tol=tol,
        check_every=check_every,
        callback=callback,
        record_history=record_history,
        method="bregman-cd",
        info=info,
        progress=progress,
    )


# --------------------------------------------------------------------------- chains


def layers_from_chain(chain: Any, *, like: Any) -> list[BregmanLayer]:
    """Bregman layers from a :class:`refinv.onnx.chain.LayerChain` (weights moved to the
    namespace/device/dtype of ``like``). Refuses non-proximal activations."""
    out = []
    for layer in chain.layers:
        act = activation_from_graph(layer.activation)
        op = from_layer(layer, like=like)
        b = None
        if layer.bias is not None:
            bias = np.asarray(layer.bias)
            if layer.kind == "dense":
                bias = bias.reshape((1, *op.out_shape))
            else:
                bias = bias.reshape((1, -1) + (1,) * (len(op.out_shape) - 1))
            b = from_numpy(bias, like=like, dtype=like.dtype)
        out.append(BregmanLayer(op, b, act))
    return out


def default_max_iter(method: str, n_layers: int) -> int:
    """The iterations :func:`invert_chain` runs when ``max_iter`` is None: 10000 for one
    layer (PDHG, Landweber), 1500 coordinate-descent sweeps for several."""
    return 10_000 if method == "landweber" or n_layers == 1 else 1_500


def invert_chain(
    y: Any,
    chain: Any,
    *,
    alpha: float,
    method: str = "pdhg",
    delta: Any = None,
    tau_d: float = 1.0,
    p: int = 2,
    max_iter: int | None = None,
    tol: float = 1e-5,
    inner_iter: int = 10,
    steps: str = "paper",
    progress: bool | None = None,
) -> SolverResult:
    """Invert an encoder given as a :class:`~refinv.onnx.chain.LayerChain`.

    ``method="pdhg"``: TV-regularized inversion (eq. 14 for one layer, the
    coordinate descent (15)-(17) for several); ``method="landweber"``: the
    discrepancy-principle baseline (one layer only; needs ``delta``).
    """
    layers = layers_from_chain(chain, like=y)
    x_shape = tuple(chain.in_shape)
    if method == "landweber":
        if len(layers) != 1:
            raise ConfigError(
                f"method 'landweber' inverts a single layer; the model has {len(layers)}"
            )
        if delta is None:
            raise ConfigError("method 'landweber' needs the noise level delta")
        return perceptron_landweber(
            y,
            layers[0],
            delta=delta,
            tau_d=tau_d,
            x_shape=x_shape,
            max_iter=max_iter or default_max_iter(method, len(layers)),
            progress=progress,
        )
    if method != "pdhg":
        raise ConfigError(f"method: expected 'pdhg' or 'landweber', got {method!r}")
    if len(layers) == 1:
        return perceptron_pdhg(
            y,
            layers[0],
            alpha=alpha,
            p=p,
            x_shape=x_shape,
            max_iter=max_iter or default_max_iter(method, len(layers)),
            tol=tol,
            steps=steps,
            progress=progress,
        )
    return multilayer_cd(
        y,
        layers,
        alpha=alpha,
        p=p,
        x_shape=x_shape,
        inner_iter=inner_iter,
        steps=steps,
        max_iter=max_iter or default_max_iter(method, len(layers)),
        tol=tol,
        progress=progress,
    )
