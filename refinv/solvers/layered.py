"""Layer-wise inversion of dense generators (Aberdam et al., 2020): layered basis pursuit,
Latent-Pursuit and the layer-wise oracle.

Generator: ``h_0 = z``, ``h_{j+1} = s_j(W_j h_j + b_j)``
for chain layers ``j = 0..L``, image ``y = h_{L+1}``. The paper's setting is
ReLU hidden layers, an invertible output activation ``phi`` (identity, tanh,
sigmoid, leaky ReLU) and no biases; biases are carried through every step
(``h_S = W_S h + b_S``, ``W_{S^c} h + b_{S^c} <= 0``).

Supports. For a ReLU layer ``j`` the rows of ``W_j`` where ``h_{j+1} > 0`` (the
support ``S``, found as ``h > support_tol * max h`` per sample) give equations,
the others (``S^c``) inequalities. Every layer problem is batched with a
per-sample 0/1 row mask, so samples with different supports share one
iteration (no per-sample loop). Extensions beyond the paper, documented:

* an *invertible* hidden activation (leaky ReLU, PReLU, tanh, sigmoid,
  identity) has no support: the layer is inverted exactly
  (``W h + b = s^{-1}(h_{j+1})`` on all rows) and the previous layer is
  unconstrained (no ``x >= 0``, no l1);
* the output activation may also be the piecewise linear unit
  ``plu(u) = a u + b clip(u, lo, hi)`` (invertible for ``a, a + b > 0``), used by
  Aberdam et al.'s (2020) trained generator;
* a ReLU output activation: observed pixels with ``y > 0`` are equations
  (``phi^{-1} = identity`` there), pixels with ``y = 0`` are dropped
  (layered basis pursuit, oracle) or are the inequalities of Algorithm 2
  (Latent-Pursuit treats the image layer as one more ReLU layer).

Inpainting: ``mask`` (1 = observed) removes rows of the image layer.

Debiasing (optional, both pursuits): the supports (activation patterns) are
frozen at the estimated ones and ``z`` is the least-squares solution of the
now affine end-to-end map ``phi^{-1}(y) = E z + c`` on observed pixels
(the end-to-end least squares for ``z``; we linearize through
``phi^{-1}``, exact in the noiseless case). Not available with tanh/sigmoid
hidden layers.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np

from ..backend import device_of as _device
from ..backend import namespace, to_numpy
from ..errors import ConfigError
from ..onnx.graph import (
    Activation,
    LayerChain,
    activation_derivative,
    apply_activation,
    inverse_activation,
)
from ._loop import SolverResult, StopReason, relative_change, run_loop
from .fista import fista, lasso, power_lmax, soft_threshold
from .generators import DenseNet, _prep

__all__ = [
    "layered_basis_pursuit",
    "latent_pursuit",
    "oracle",
    "supports_from_latent",
    "debias",
    "refit_on_support",
    "LayeredState",
]

_PIECEWISE_LINEAR = ("relu", "leaky_relu", "prelu", "identity")


class LayeredState(NamedTuple):
    """Final state of a layer-wise inversion: the latent and every hidden layer estimate
    (flattened, ``hidden[j]`` is ``h_{j+1}``, first hidden layer first)."""

    x: Any
    hidden: tuple


def _norm_rows(xp, a):
    return xp.linalg.vector_norm(a, axis=1)


def _support(xp, h, support_tol):
    """Per-sample support ``h > support_tol * max(h)`` as a 0/1 float array."""
    mx = xp.max(h, axis=1, keepdims=True)
    thr = support_tol * xp.maximum(mx, xp.zeros_like(mx))
    return xp.astype(h > thr, h.dtype)


def _observed_rows(xp, net: DenseNet, yf, m):
    """Image-layer target ``phi^{-1}(y)`` and its row weights (mask, ReLU output rows)."""
    act = net.acts[-1]
    if act.name == "relu":
        rows = xp.astype(yf > 0, yf.dtype)
        target = yf
    else:
        rows = xp.ones_like(yf)
        target = inverse_activation(act, yf)
    if m is not None:
        rows = rows * m
    return target, rows


def _lstsq_rows(xp, W, target, rows, cols=None, chunk: int = 16):
    """Per sample ``argmin_x ||r (t - W (c x))||`` (minimum norm; zero off ``c``).

    Batched pseudo-inverse of the masked matrices, ``chunk`` samples at a time.
    """
    b = target.shape[0]
    outs = []
    for s in range(0, b, chunk):
        r = rows[s : min(s + chunk, b), ...]
        Wb = r[:, :, None] * W[None, :, :]
        if cols is not None:
            Wb = Wb * cols[s : min(s + chunk, b), ...][:, None, :]
        rhs = (r * target[s : min(s + chunk, b), ...])[:, :, None]
        outs.append((xp.linalg.pinv(Wb) @ rhs)[:, :, 0])
    return xp.concat(outs, axis=0) if len(outs) > 1 else outs[0]


def refit_on_support(xp, W, target, rows, h, chunk: int = 16):
    """Least squares on the nonzeros ``T`` of a Lasso estimate ``h`` (post-Lasso refit).

    Per sample ``argmin_{x, x_{T^c} = 0} ||r (t - W x)||`` with ``T = {h != 0}``.
    Noiseless ``t = W x*`` with ``supp(x*) in T`` and ``W[r, T]`` of full column
    rank: the refit is ``x*`` exactly. Samples with ``|T| > sum(r)`` (no unique
    refit) keep ``h``.
    """
    T = xp.astype(h != 0, h.dtype)
    x = _lstsq_rows(xp, W, target, rows, T, chunk=chunk) * T  # exact zeros off T
    ok = xp.sum(T, axis=1, keepdims=True) <= xp.sum(rows, axis=1, keepdims=True)
    return xp.where(ok, x, h)


def _stage_summary(res: SolverResult, layer: int, kind: str) -> dict:
    return {
        "layer": layer,
        "kind": kind,
        "iterations_max": int(res.iterations.max()) if res.n else 0,
        "converged": int(res.converged.sum()),
        "seconds": res.seconds,
    }


def _combine(
    net: DenseNet,
    z,
    hidden: list,
    stages: list[SolverResult],
    method: str,
    info: dict,
    t0: float,
    n: int,
):
    xp = net.xp
    iters = np.zeros(n, dtype=np.int64)
    conv = np.ones(n, dtype=bool)
    div = np.zeros(n, dtype=bool)
    resid = np.zeros(n)
    for r in stages:
        iters += r.iterations
        conv &= r.converged
        div |= r.diverged
        resid = r.residual
    reasons = [
        StopReason.DIVERGED if d else StopReason.CONVERGED if c else StopReason.MAX_ITER
        for c, d in zip(conv, div, strict=True)
    ]
    x = xp.reshape(z, (n, *net.chain.in_shape))
    return SolverResult(
        x=x,
        state=LayeredState(x=x, hidden=tuple(hidden)),
        iterations=iters,
        converged=conv,
        diverged=div,
        residual=resid,
        stop_reason=reasons,
        history=None,
        seconds=time.perf_counter() - t0,
        method=method,
        info=info,
    )


def _trivial_result(n: int) -> SolverResult:
    """A stage that is a closed-form solve (converged in one step)."""
    return SolverResult(
        x=None,
        state=None,
        iterations=np.ones(n, dtype=np.int64),
        converged=np.ones(n, dtype=bool),
        diverged=np.zeros(n, dtype=bool),
        residual=np.zeros(n),
        stop_reason=[StopReason.CONVERGED] * n,
    )


def _per_layer(value, n_layers: int, name: str) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * n_layers
    vals = [float(v) for v in value]
    if len(vals) != n_layers:
        raise ConfigError(
            f"{name}: expected one value or {n_layers} (one per layer), got {len(vals)}"
        )
    return vals


def _check_hidden(net: DenseNet, method: str) -> None:
    for j, act in enumerate(net.acts[:-1]):
        if act.name not in ("relu", "leaky_relu", "prelu", "identity", "tanh", "sigmoid", "plu"):
            raise ConfigError(f"{method}: hidden layer {j} has activation {act.name!r}")
        if act.name in ("leaky_relu", "prelu") and np.any(np.asarray(act.slope) <= 0):
            raise ConfigError(
                f"{method}: hidden layer {j}: {act.name} with slope <= 0 is not invertible"
            )


def _layer_target(net: DenseNet, j: int, h_next, support_tol):
    """Rows and target of layer ``j`` given its (estimated) output ``h_{j+1}``."""
    xp = net.xp
    act = net.acts[j]
    if act.name == "relu":
        S = _support(xp, h_next, support_tol)
        return h_next, S, 1.0 - S
    return inverse_activation(act, h_next), xp.ones_like(h_next), None


def _minus_bias(net, j, t):
    return t if net.biases[j] is None else t - net.biases[j]


# --------------------------------------------------------------------------- debiasing


def debias(net: DenseNet, yf, m, hidden: list, *, support_tol: float = 1e-4, chunk: int = 16):
    """End-to-end least squares for ``z`` with the activation patterns frozen at those of
    the estimated hidden layers ``hidden`` (``h_1 .. h_L``)."""
    xp = net.xp
    for act in net.acts[:-1]:
        if act.name not in _PIECEWISE_LINEAR:
            raise ConfigError(f"debias needs piecewise-linear hidden activations, got {act.name!r}")
    target, rows = _observed_rows(xp, net, yf, m)
    n = yf.shape[0]
    outs = []
    for s in range(0, n, chunk):
        sl = slice(s, min(s + chunk, n))
        nb = min(chunk, n - s)
        E = xp.broadcast_to(net.weights[0][None, ...], (nb, *net.weights[0].shape))
        c = (
            None
            if net.biases[0] is None
            else xp.broadcast_to(net.biases[0][None, ...], (nb, net.widths[1]))
        )
        for j in range(1, net.depth):
            act = net.acts[j - 1]
            h = hidden[j - 1][sl, ...]
            if act.name == "relu":
                D = _support(xp, h, support_tol)
            else:
                D = activation_derivative(act, h)  # leaky: the slope where h < 0 (sign kept)
            E = D[:, :, None] * E
            c = None if c is None else D * c
            E = net.weights[j][None, ...] @ E
            c = None if c is None else c @ net.weights_t[j]
            if net.biases[j] is not None:
                c = net.biases[j][None, ...] + (0.0 if c is None else c)
        t = target[sl, ...] if c is None else target[sl, ...] - c
        r = rows[sl, ...]
        outs.append((xp.linalg.pinv(r[:, :, None] * E) @ (r * t)[:, :, None])[:, :, 0])
    return xp.concat(outs, axis=0) if len(outs) > 1 else outs[0]


# --------------------------------------------------------------------------- Algorithm 1


def layered_basis_pursuit(
    chain: LayerChain | list,
    y: Any,
    *,
    lam: float | list[float] = 1e-5,
    mask: Any = None,
    support_tol: float = 1e-4,
    refit: bool = True,
    debias_result: bool = True,
    max_iter: int = 5000,
    tol: float = 1e-10,
    progress: bool | None = None,
) -> SolverResult:
    """Layered basis pursuit (Algorithm 1 of Aberdam et al., 2020).

    From the image layer down: ``h_L = argmin 1/2 ||phi^{-1}(y) - W_L h||^2 + lam_L ||h||_1``,
    then ``h_j = argmin 1/2 ||h_{j+1}[S] - W_j[S, :] h||^2 + lam_j ||h||_1``,
    ``S = support(h_{j+1})``; ``z`` = least squares on the first layer's support.
    Each Lasso by batched FISTA (``max_iter``, ``tol``). ``lam``: one value or
    one per hidden layer, image layer first (the paper: best of 1e-5 .. 0).
    ``refit`` (default on): each Lasso estimate is replaced by the least squares
    on its own nonzeros ``T`` (:func:`refit_on_support`) before the support
    ``S`` is read off it. Algorithm 1's noiseless ``lam = 2 eps = 0`` is basis
    pursuit; a Lasso with ``lam > 0`` near the l1 phase transition keeps
    hundreds of spurious ``O(lam)`` nonzeros (at ``n_1 = 700`` of the paper's
    experiment: ~500 nonzeros for ``s_1 ~ 350``, KKT exact), some above
    ``support_tol``, and one false row of ``S`` corrupts ``z``. If
    ``T`` contains the true support and ``W[rows, T]`` has full column rank the
    refit is exact (zeros on the spurious entries); samples with ``|T|`` above
    the number of rows keep the Lasso estimate.
    ``debias_result``: replace ``z`` by the end-to-end least squares on the
    estimated supports (the paper's experiments do).

    Returns a :class:`SolverResult` with ``x = z`` and ``state.hidden`` the
    estimated hidden layers; ``info["stages"]`` per layer.
    """
    t0 = time.perf_counter()
    xp, net, yf, m = _prep(chain, y, mask, "layered_basis_pursuit")
    _check_hidden(net, "layered_basis_pursuit")
    n, L = yf.shape[0], net.depth - 1
    lams = _per_layer(lam, max(L, 1), "lam")
    stages: list[SolverResult] = []
    hidden: list = [None] * L
    t, rows = _observed_rows(xp, net, yf, m)
    for j in range(L, 0, -1):  # layers L .. 1 estimate h_j
        tgt = _minus_bias(net, j, t)
        sparse = net.acts[j - 1].name == "relu"
        if sparse:
            res = lasso(
                net.weights[j],
                tgt,
                lam=lams[L - j],
                mask=rows,
                max_iter=max_iter,
                tol=tol,
                progress=progress,
                Wt=net.weights_t[j],
            )
            h = res.x
            if refit:
                h = refit_on_support(xp, net.weights[j], tgt, rows, h)
        else:
            h = _lstsq_rows(xp, net.weights[j], tgt, rows)
            res = _trivial_result(n)
        stages.append(res)
        hidden[j - 1] = h
        t, rows, _ = _layer_target(net, j - 1, h, support_tol)
    # final step: z = least squares on the first layer's support
    z = _lstsq_rows(xp, net.weights[0], _minus_bias(net, 0, t), rows)
    stages.append(_trivial_result(n))
    if debias_result and L > 0:
        z = debias(net, yf, m, hidden, support_tol=support_tol)
    info = {
        "lam": lams,
        "support_tol": support_tol,
        "refit": bool(refit),
        "debias": bool(debias_result),
        "stages": [_stage_summary(r, L - i, "lasso") for i, r in enumerate(stages)],
        "cardinalities": [
            to_numpy(xp.sum(xp.astype(h > 0, h.dtype), axis=1)).tolist() for h in hidden
        ],
    }
    return _combine(net, z, hidden, stages, "layered_basis_pursuit", info, t0, n)


# --------------------------------------------------------------------------- Algorithms 2, 3, 5


class AdmmState(NamedTuple):
    x: Any  # (b, n_j) estimate of h_j (or z)
    a: Any  # (b, n_{j+1}) auxiliary a = W_{S^c} x + b_{S^c} (<= 0)
    u: Any  # (b, n_{j+1}) scaled dual
    t: Any  # (b, n_{j+1}) target h_{j+1} (pre-activation target for invertible s_j)
    S: Any  # (b, n_{j+1}) rows with equations
    Sc: Any  # (b, n_{j+1}) rows with inequalities
    c: Any  # (b,) alpha + beta


def _admm_layer(
    net: DenseNet,
    j: int,
    t,
    S,
    Sc,
    *,
    lam: float,
    rho: float,
    gamma: float,
    nonneg: bool,
    latent: bool,
    max_iter: int,
    tol: float,
    progress,
) -> SolverResult:
    """Algorithm 2 (linearized ADMM) for layer ``j``; with ``latent`` the x-step is eq. 10."""
    xp = net.xp
    W, Wt = net.weights[j], net.weights_t[j]
    bias = net.biases[j]
    b = t.shape[0]
    nj = W.shape[1]
    if Sc is None:
        Sc = xp.zeros_like(S)
    wgt = S + rho * Sc

    def normal_op(v):
        return ((v @ Wt) * wgt) @ W

    c = power_lmax(normal_op, t, nj)  # alpha + beta >= lambda_max(W_S^T W_S + rho W_Sc^T W_Sc) (8)
    c = xp.maximum(c, xp.asarray(1e-30, dtype=t.dtype))

    def pre(x):
        p = x @ Wt
        return p if bias is None else p + bias

    def step_fn(s: AdmmState):
        p = pre(s.x)
        g = ((p - s.t) * s.S) @ W + rho * (((p - s.a - s.u) * s.Sc) @ W)
        cc = s.c[:, None]
        if latent:  # eq. 10: z = ((a+b) z - W_S^T(..) - rho W_Sc^T(..)) / (a + b + gamma)
            x_new = (cc * s.x - g) / (cc + gamma)
        else:  # Algorithm 2, step 1
            x_new = s.x - g / cc
            x_new = soft_threshold(xp, x_new, lam / cc, nonneg) if (lam or nonneg) else x_new
        p_new = pre(x_new)
        a = -xp.maximum(s.u - p_new, xp.zeros_like(p_new)) * s.Sc  # step 2: a = -ReLU(u - W x)
        u = s.u + (a - p_new) * s.Sc  # step 3
        prim = _norm_rows(xp, (a - p_new) * s.Sc) / xp.maximum(
            _norm_rows(xp, s.t * s.S), xp.asarray(1e-30, dtype=s.x.dtype)
        )
        res = xp.maximum(relative_change(xp, x_new, s.x), prim)
        return s._replace(x=x_new, a=a, u=u), res

    x0 = xp.zeros((b, nj), dtype=t.dtype, device=_device(t))
    p0 = pre(x0)
    state = AdmmState(
        x=x0, a=xp.minimum(p0, xp.zeros_like(p0)) * Sc, u=xp.zeros_like(p0), t=t, S=S, Sc=Sc, c=c
    )
    return run_loop(
        step_fn,
        state,
        max_iter=max_iter,
        tol=tol,
        method="latent_pursuit_admm",
        info={"layer": j, "rho": rho, "lam": lam, "gamma": gamma},
        progress=progress,
    )


def _image_layer(net: DenseNet, yf, rows, *, lam, gamma, nonneg, latent, max_iter, tol, progress):
    """Algorithm 5: FISTA on ``1/2 ||r (y - phi(W x + b))||^2 + lam 1^T x``, ``x >= 0``."""
    xp = net.xp
    L = net.depth - 1
    W, Wt, bias = net.weights[L], net.weights_t[L], net.biases[L]
    act: Activation = net.acts[L]
    nL = W.shape[1]
    b = yf.shape[0]
    lip = 0.25 if act.name == "sigmoid" else 1.0
    if act.name in ("leaky_relu", "prelu"):
        lip = max(1.0, float(np.max(np.abs(act.slope))))
    if act.name == "plu":
        a, b_, _, _ = act.slope
        lip = max(abs(a), abs(a + b_))

    def normal_op(v):
        return ((v @ Wt) * rows) @ W

    Lc = power_lmax(normal_op, yf, nL) * lip**2 + gamma
    step = 1.0 / xp.maximum(Lc, xp.asarray(1e-30, dtype=yf.dtype))

    def grad(v, y, r):
        p = v @ Wt
        if bias is not None:
            p = p + bias
        e = (apply_activation(act, p) - y) * activation_derivative(act, p) * r
        g = e @ W
        return g + gamma * v if latent and gamma else g

    def prox(u, st):
        if latent:
            return u
        return soft_threshold(xp, u, lam * st, nonneg) if (lam or nonneg) else u

    x0 = xp.zeros((b, nL), dtype=yf.dtype, device=_device(yf))
    res = fista(
        grad,
        prox,
        x0,
        step=step,
        target=yf,
        mask=rows,
        max_iter=max_iter,
        tol=tol,
        method="latent_pursuit_image",
        info={"lam": lam},
        progress=progress,
    )
    return res


def latent_pursuit(
    chain: LayerChain | list,
    y: Any,
    *,
    lam: float | list[float] = 0.0,
    rho: float | list[float] = 1e-2,
    gamma: float = 0.0,
    mask: Any = None,
    support_tol: float = 1e-4,
    debias_result: bool = True,
    max_iter: int = 5000,
    tol: float = 1e-10,
    progress: bool | None = None,
) -> SolverResult:
    """Latent-Pursuit (Algorithm 3 of Aberdam et al., 2020).

    1. Image layer (Algorithm 5): FISTA on ``1/2 ||y - phi(W_L x + b_L)||^2 + lam_L 1^T x``,
       ``x >= 0`` (through ``phi``, no ``phi^{-1}``).
    2. Middle layers ``j = L-1 .. 1`` (Algorithm 2): linearized ADMM on
       ``1/2 ||h_{j+1}[S] - W_S x||^2 + lam_j 1^T x``, ``x >= 0``, ``W_{S^c} x <= 0``,
       ``alpha + beta`` from a power iteration (eq. 8).
    3. Latent layer: the same ADMM with the MAP x-step (eq. 10, ``gamma``).
    4. Optional debiasing (:func:`debias`).

    ``lam``/``rho``: one value or one per layer (image layer first; ``rho`` for the
    ADMM layers ``L-1 .. 0``; a ReLU image layer is solved by the same ADMM with the
    first ``rho``). Defaults are the paper's random-weight experiment:
    ``lam = 0``, ``rho = 1e-2``, ``gamma = 0``.
    """
    t0 = time.perf_counter()
    xp, net, yf, m = _prep(chain, y, mask, "latent_pursuit")
    _check_hidden(net, "latent_pursuit")
    n, L = yf.shape[0], net.depth - 1
    lams = _per_layer(lam, L + 1, "lam")
    rhos = _per_layer(rho, max(L, 1), "rho")
    _, rows = _observed_rows(xp, net, yf, m)
    stages: list[SolverResult] = []
    hidden: list = [None] * L
    latent_top = L == 0
    nonneg = (not latent_top) and net.acts[L - 1].name == "relu"
    if net.acts[-1].name == "relu":
        # a ReLU image layer is one more ReLU layer: Algorithm 2 with S = {y > 0},
        # S^c = {y = 0} (observed pixels only); Algorithm 5 needs a strictly monotone phi
        obs = xp.ones_like(yf) if m is None else m
        S = xp.astype(yf > 0, yf.dtype) * obs
        res = _admm_layer(
            net,
            L,
            yf,
            S,
            obs - S,
            lam=0.0 if latent_top else lams[0],
            rho=rhos[0],
            gamma=gamma,
            nonneg=nonneg,
            latent=latent_top,
            max_iter=max_iter,
            tol=tol,
            progress=progress,
        )
    else:
        res = _image_layer(
            net,
            yf,
            rows,
            lam=lams[0],
            gamma=gamma,
            nonneg=nonneg,
            latent=latent_top,
            max_iter=max_iter,
            tol=tol,
            progress=progress,
        )
    stages.append(res)
    h = res.x
    for j in range(L - 1, -1, -1):  # ADMM for layers L-1 .. 0 (estimating h_j; h_0 = z)
        hidden[j] = h
        t, S, Sc = _layer_target(net, j, h, support_tol)
        latent = j == 0
        nonneg = (not latent) and net.acts[j - 1].name == "relu"
        res = _admm_layer(
            net,
            j,
            t,
            S,
            Sc,
            lam=0.0 if latent else lams[L - j],
            rho=rhos[L - 1 - j],
            gamma=gamma,
            nonneg=nonneg,
            latent=latent,
            max_iter=max_iter,
            tol=tol,
            progress=progress,
        )
        stages.append(res)
        h = res.x
    z = h
    if debias_result and L > 0:
        z = debias(net, yf, m, hidden, support_tol=support_tol)
    info = {
        "lam": lams,
        "rho": rhos,
        "gamma": gamma,
        "support_tol": support_tol,
        "debias": bool(debias_result),
        "stages": [
            _stage_summary(r, L - i, "fista" if i == 0 else "admm") for i, r in enumerate(stages)
        ],
        "cardinalities": [
            to_numpy(xp.sum(xp.astype(hh > 0, hh.dtype), axis=1)).tolist() for hh in hidden
        ],
    }
    return _combine(net, z, hidden, stages, "latent_pursuit", info, t0, n)


# --------------------------------------------------------------------------- Algorithm 4


def supports_from_latent(chain: LayerChain | list, z: Any) -> list:
    """The true activation patterns of ``G(z)``: the hidden layers ``h_1 .. h_L`` (flattened);
    pass them to :func:`oracle` (a ReLU layer's support is where ``h > 0``)."""
    xp = namespace(z)
    net = DenseNet(chain, like=z)
    h = xp.reshape(z, (z.shape[0], -1))
    hidden = []
    for i in range(net.depth - 1):
        h = apply_activation(net.acts[i], net.pre(i, h))
        hidden.append(h)
    return hidden


def oracle(
    chain: LayerChain | list,
    y: Any,
    *,
    hidden: list | None = None,
    z_true: Any = None,
    mask: Any = None,
) -> SolverResult:
    """The layer-wise oracle (Algorithm 4 of Aberdam et al., 2020): the supports are known.

    ``h_L = argmin ||phi^{-1}(y) - W_L[:, S_L] h||``, then
    ``h_j = argmin ||h_{j+1}[S_{j+1}] - W_j[S_{j+1}, S_j] h||``, finally
    ``z = argmin ||h_1[S_1] - W_0[S_1, :] z||``: linear projections only.
    The supports come from ``hidden`` (the true hidden layers, e.g. from
    :func:`supports_from_latent`) or from ``z_true``.
    """
    t0 = time.perf_counter()
    xp, net, yf, m = _prep(chain, y, mask, "oracle")
    _check_hidden(net, "oracle")
    n, L = yf.shape[0], net.depth - 1
    if hidden is None:
        if z_true is None:
            raise ConfigError(
                "oracle: pass the true supports (hidden=...) or the true latent z_true"
            )
        hidden = supports_from_latent(net.chain, z_true)
    if len(hidden) != L:
        raise ConfigError(f"oracle: expected {L} hidden layers, got {len(hidden)}")
    cols = [
        (_support(xp, h, 0.0) if net.acts[j].name == "relu" else None) for j, h in enumerate(hidden)
    ]
    t, rows = _observed_rows(xp, net, yf, m)
    est: list = [None] * L
    for j in range(L, 0, -1):
        h = _lstsq_rows(xp, net.weights[j], _minus_bias(net, j, t), rows, cols[j - 1])
        est[j - 1] = h
        t, rows, _ = _layer_target(net, j - 1, h, 0.0)
        if cols[j - 1] is not None:
            rows = cols[j - 1]  # the known support, not the estimated one
    z = _lstsq_rows(xp, net.weights[0], _minus_bias(net, 0, t), rows)
    return _combine(net, z, est, [_trivial_result(n)], "oracle", {"layers": L + 1}, t0, n)
