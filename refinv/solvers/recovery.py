"""Training-data recovery from an autoencoder: blind, known-mask, AE iterations.

Given a trained autoencoder ``f`` (any callable on batches, usually a
:class:`refinv.onnx.OnnxModel`) and degraded samples ``y = H x + e`` with
``H = diag(h)`` a pixel erasure, the solvers estimate ``x`` (Abitbul and
Dar, 2023). All three run the whole batch at once on the shared
:func:`~refinv.solvers.run_loop`, stop per sample, and return a
:class:`~refinv.solvers.SolverResult` with per-sample ``iterations``,
``converged``, ``diverged`` and ``residual``.

Conventions
-----------
* **Fidelity**: ``1/2 ||y - H x||^2`` (with the 1/2). A paper written with
  ``||y - H x||^2`` uses ``rho_paper = 2 * rho_ours``.
* **Masks are per pixel**: for ``(batch, C, H, W)`` samples ``h`` has shape
  ``(batch, 1, H, W)`` and applies to every channel; for other sample ranks
  ``h`` has the sample's shape. The mask step combines channels by SUMMING
  the squared errors over the channels of a pixel (eq. 20 on the pixel's
  channel vector): ``h = 1 iff sum_c (y_c - x_c)^2 <= sum_c y_c^2 + tau``.
* **Outer iteration = one loop step**: ``inner_iter`` PnP-ADMM iterations
  (eqs. 12-17) then, for the blind solver, one mask step (eq. 20). ``z`` and
  ``u`` are warm-started across outer iterations; ``z^0 = y``, ``u^0 = 0``.
* **Stopping**, per sample, at each check (every outer iteration; every
  ``check_every`` calls for the AE iterations), ``x^0 = y``. ``tol="auto"``
  (default): :class:`~refinv.solvers.FloorRule` stops a sample as converged when
  the relative change ``||x^t - x^{t-1}|| / ||x^{t-1}||`` has reached the
  floating-point floor of the iteration (a change of at most ``16 eps`` of the
  data's dtype, a contraction estimate of the distance to the limit of at most
  ``64 eps``, or changes and misfit that no longer decrease at most ``1024 eps``),
  and as ``"stalled"`` when for ``patience`` checks its data
  misfit has not decreased far above that floor (blind: while its mask does not
  move) and the iterate wanders or converges to a point that does not fit the
  data; the misfits are eq. (7)'s fidelity at the estimated mask (blind), the
  fidelity of the network's output with the true mask (known) and the blind one
  of the iterate (AE iterations). A number ``tol``: relative change ``< tol``
  (``patience=None`` then gives exactly the plain rule; ``tol=0`` runs every
  iteration). Otherwise ``max_iter``. A sample whose iterate becomes NaN/Inf or
  exceeds ``blowup`` in absolute value is stopped as diverged (with a
  :class:`~refinv.errors.DivergenceWarning`); the others continue. ``blowup``
  must be > 0 (``inf``: stop on NaN/Inf only). ``result.stop_reason`` says why
  each sample stopped. The rule and its measurement: docs/theory/recovery.md.
* **Bad input** raises before any work: an empty batch (0 samples) a
  :class:`~refinv.errors.ShapeError` (there is nothing to recover: an empty
  result would hide an empty data file), ``max_iter`` / ``inner_iter`` not
  a positive whole number (NaN, inf, 0, 2.5) or ``tol`` / ``patience`` /
  ``rho`` / ``blowup`` out of range a :class:`~refinv.errors.ConfigError`.
* **Clipping** (``clip``), off by default: when on, the autoencoder's output
  is projected onto the data range, ``z^k = clip(f(v^k + u^{k-1}))`` (and
  ``x^{j+1} = clip(f(x^j))`` for the baseline). ``clip=True`` means
  ``(0.0, 1.0)``; a pair ``(lo, hi)`` sets the range.

Defaults (``DEFAULTS``) were chosen by measurement with ``refinv evaluate``
on the shipped perfect-fit MLP autoencoders (faces25 LeakyReLU and PReLU) at
50% random pixels erased: ``rho = 0.5`` (= 1 in the paper's convention; blind
accurate recovery 87% / 40% vs 76% / 23% at rho = 1 and 33% / 2% at rho = 2;
known mask 98% / 58% vs 90% / 39% at rho = 1), ``mask_init = "ones"`` (87% /
40% vs 84% / 34% with Bernoulli(0.5), the paper's choice for fully connected
models), ``inner_iter = 10``, ``max_iter = 100`` (those rates were measured with
the earlier stopping rule, ``tol = 1e-6``; ``tol="auto"`` with ``patience = 40`` makes
55% of those calls and changes 37 of 26,100 per-image verdicts, 6 for the worse:
docs/benchmarks.md, "Calls to a verdict"). Clipping raised blind
recovery further (94% / 54%) but stays off by default.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..backend import as_generator, device_of, namespace, require_finite, require_floating
from ..errors import ConfigError, MaskError, ShapeError
from ..operators.masks import expand_mask, pixel_shape, validate_mask
from ._loop import Check, SolverResult, relative_change, run_loop
from ._stopping import FloorRule

__all__ = [
    "blind_recovery",
    "known_mask_recovery",
    "ae_iterations",
    "v_update",
    "mask_step",
    "initial_mask",
    "RecoveryState",
    "AEState",
    "DEFAULTS",
]

from .._constants import RECOVERY_DEFAULTS as DEFAULTS  # noqa: E402  (refinv --help reads it)

Model = Callable[[Any], Any]


class RecoveryState(NamedTuple):
    """State of the PnP-ADMM solvers; every field carries the batch on axis 0.

    ``x``: current estimate ``x^t``; ``z``, ``u``: ADMM variables (warm
    started); ``h``: the mask (estimated, or the true one for the known-mask
    solver), 0/1 floats broadcastable against ``x``; ``y``: the data.
    """

    x: Any
    z: Any
    u: Any
    h: Any
    y: Any


class AEState(NamedTuple):
    """State of the AE-iterations baseline: the iterate ``x`` (and the data ``y``, which the
    stopping rule's data misfit reads; ``None`` when no rule needs it)."""

    x: Any
    y: Any = None


# ------------------------------------------------------------------ pieces
def v_update(y: Any, h: Any, w: Any, rho: float) -> Any:
    """Closed-form v-step (eq. 12, solved by eq. 17): ``argmin_v 1/2||y - Hv||^2 + rho/2 ||v - w||^2``.

    Per pixel ``v_i = (h_i y_i + rho w_i) / (h_i + rho)``: an observed pixel
    gets ``(y_i + rho w_i)/(1 + rho)``, an erased one ``w_i``. ``h`` (0/1)
    broadcasts against ``y`` and ``w`` (``h^2 = h``).
    """
    return (h * y + rho * w) / (h + rho)


def mask_step(y: Any, x: Any, tau: float = 0.0) -> Any:
    """Closed-form mask step (eq. 20): ``h = 1 iff (y - x)^2 <= y^2 + tau``, per pixel.

    For ``(batch, C, H, W)`` arrays the squared errors are summed over the
    channel axis and the result has shape ``(batch, 1, H, W)``; otherwise it
    has the shape of ``x``. Returns 0/1 in ``x``'s dtype. ``tau >= 0`` is our
    tolerance for noisy data (0 in the paper).
    """
    xp = namespace(y, x)
    lhs = (y - x) ** 2
    rhs = y**2
    if x.ndim == 4:
        lhs = xp.sum(lhs, axis=1, keepdims=True)
        rhs = xp.sum(rhs, axis=1, keepdims=True)
    return xp.astype(lhs <= rhs + tau, x.dtype)


def initial_mask(mask_init: Any, y: Any, *, rng: int | np.random.Generator | None = 0) -> Any:
    """The mask ``h^0`` of the blind solver, as 0/1 floats broadcastable against ``y``.

    ``mask_init``: ``"ones"`` (everything observed; the paper's U-Net choice),
    ``"bernoulli"`` or ``"bernoulli:P"`` (i.i.d. ``h_i ~ Bernoulli(P)``,
    P = 0.5 by default, one draw per sample in batch order from ``rng``; the
    paper's fully connected choice), ``"nonzero"`` (``h_i = 1[y_i != 0]``,
    any channel), or an explicit 0/1 array of shape ``pixel_shape`` or
    ``(batch, *pixel_shape)``.
    """
    xp = namespace(y)
    b, sshape = int(y.shape[0]), tuple(y.shape[1:])
    pshape = pixel_shape(sshape)
    if isinstance(mask_init, str):
        name, _, arg = mask_init.partition(":")
        if name == "ones" and not arg:
            return expand_mask(np.ones(pshape, dtype=bool), sshape, b, like=y)
        if name == "nonzero" and not arg:
            nz = y != 0
            if y.ndim == 4:
                nz = xp.any(nz, axis=1, keepdims=True)
            return xp.astype(nz, y.dtype)
        if name == "bernoulli":
            try:
                p = float(arg) if arg else 0.5
            except ValueError:
                p = float("nan")
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"mask_init: expected bernoulli:P with P in [0, 1], got {arg!r}")
            draw = as_generator(rng).random((b, *pshape)) < p
            return expand_mask(draw, sshape, b, like=y)
        raise ConfigError(
            f"mask_init: expected 'ones', 'bernoulli', 'bernoulli:P', 'nonzero' or a 0/1 array, "
            f"got {mask_init!r}"
        )
    return expand_mask(mask_init, sshape, b, like=y)


def _clip_range(clip: Any) -> tuple[float, float] | None:
    if clip is None or clip is False:
        return None
    if clip is True:
        return (0.0, 1.0)
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError):
        raise ConfigError(f"clip: expected None, True or a pair (lo, hi), got {clip!r}") from None
    if not lo < hi:
        raise ConfigError(f"clip: expected lo < hi, got {clip!r}")
    return (lo, hi)


def _check(f: Model, y: Any, name: str = "y") -> Any:
    """Validate y (float, finite, batched) against the model; check f maps shape to shape."""
    xp = namespace(y)
    require_floating(y, name)
    if y.ndim < 2:
        raise ShapeError(f"{name}: expected a batch (batch, *sample_shape), got shape {y.shape}")
    if y.shape[0] == 0:
        raise ShapeError(
            f"{name}: expected a batch of at least one sample, got an empty batch {tuple(y.shape)}"
        )
    sshape = tuple(y.shape[1:])
    model_in = getattr(f, "sample_shape", None)
    if model_in is not None and tuple(model_in) != sshape:
        raise ShapeError(
            f"{name}: expected shape (batch, {', '.join(map(str, model_in))}) matching the "
            f"model's sample shape {tuple(model_in)}, got {tuple(y.shape)}"
        )
    model_out = getattr(f, "output_sample_shape", None)
    if model_out is None:
        model_out = tuple(f(y[:1, ...]).shape[1:]) if y.shape[0] else sshape
    if tuple(model_out) != sshape:
        raise ShapeError(
            f"the model is not an autoencoder: it maps samples of shape {sshape} to "
            f"{tuple(model_out)}; recovery needs output shape == input shape"
        )
    require_finite(y, name)
    return xp


def _positive_int(value: Any, name: str) -> None:
    """``value`` must be a whole number >= 1 (an int, or a float equal to one; not bool)."""
    ok = False
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            v = float(value)
            ok = math.isfinite(v) and v >= 1 and v == int(v)
        except (TypeError, ValueError, OverflowError):
            ok = False
    if not ok:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")


def _real(value: Any, name: str, what: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ConfigError(f"{name}: expected {what}, got {value!r}")
    return float(value)


def _check_common(
    max_iter: int,
    tol: float | str,
    rho: float | None,
    inner_iter: int | None,
    blowup: float = 1e6,
    patience: int | None = None,
) -> None:
    _positive_int(max_iter, "max_iter")
    if not (isinstance(tol, str) and tol == "auto"):
        t = _real(tol, "tol", "'auto' or a finite number >= 0")
        if not (t >= 0 and math.isfinite(t)):
            raise ConfigError(f"tol: expected 'auto' or a finite number >= 0, got {tol}")
    if patience is not None and not (isinstance(patience, numbers.Integral) and patience == 0):
        _positive_int(patience, "patience")
    if rho is not None:
        r = _real(rho, "rho", "a finite number > 0")
        if not (r > 0 and math.isfinite(r)):
            raise ConfigError(f"rho: expected a finite number > 0, got {rho}")
    if inner_iter is not None:
        _positive_int(inner_iter, "inner_iter")
    b = _real(blowup, "blowup", "a number > 0 (inf: stop on NaN/Inf only)")
    if not b > 0:  # NaN, 0 and negatives would stop every sample as diverged at once
        raise ConfigError(
            f"blowup: expected a number > 0 (inf: stop on NaN/Inf only), got {blowup}"
        )


def _stopping(
    y: Any, tol: float | str, patience: int | None, every: int = 1, search: int | None = None
) -> tuple[FloorRule | None, float]:
    """``(rule, tol for run_loop)``: the float-floor rule for ``tol="auto"`` (and for a
    number with ``patience``), the plain ``delta < tol`` test otherwise; ``tol=0`` runs
    every iteration (no early stop of any kind)."""
    auto = isinstance(tol, str)
    if not auto and (float(tol) == 0.0 or not patience):
        return None, float(tol)
    rule = FloorRule(
        int(y.shape[0]),
        float(namespace(y).finfo(y.dtype).eps),
        patience=int(patience or 0),
        search_patience=int(search or 0),
        every=every,
        tol=None if auto else float(tol),
    )
    return rule, 0.0


def _channel_sum(xp: Any, a: Any) -> Any:
    """Sum ``(batch, C, H, W)`` over the channels (keepdims; a single channel as it is, the
    same numbers); other ranks unchanged."""
    if a.ndim != 4 or a.shape[1] == 1:
        return a
    return xp.sum(a, axis=1, keepdims=True)


def _per_sample_sum(xp: Any, a: Any) -> Any:
    if type(a) is np.ndarray:
        return np.add.reduce(a.reshape(a.shape[0], -1), axis=1)
    return xp.sum(xp.reshape(a, (a.shape[0], -1)), axis=1)


class _Norms:
    """``||y||`` per sample, computed once per batch (``y`` changes only when samples leave)."""

    def __init__(self, xp: Any) -> None:
        self.xp, self.y, self.ny = xp, None, None

    def misfit(self, r2: Any, x: Any, y: Any) -> tuple[Any, Any]:
        """``(sqrt(sum r2) / ||y||, ||x|| / ||y||)`` per sample (``r2``: squared residuals)."""
        xp = self.xp
        # a diverging iterate or an all-black image (||y|| = 0) overflows to inf here, which
        # is what the rule should read (no progress); NumPy's warning about it is not news
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            if self.y is not y:
                self.y, self.ny = y, xp.sqrt(_per_sample_sum(xp, y * y))
            num = xp.sqrt(_per_sample_sum(xp, r2))
            nx = xp.sqrt(_per_sample_sum(xp, x * x))
            if type(num) is np.ndarray:
                den = np.maximum(self.ny, np.finfo(x.dtype).tiny)
            else:
                tiny = xp.finfo(x.dtype).smallest_normal
                den = xp.maximum(self.ny, xp.asarray(tiny, dtype=x.dtype, device=device_of(x)))
            return num / den, nx / den


def _tol_info(tol: float | str) -> float | str:
    return tol if isinstance(tol, str) else float(tol)


def _pnp_admm(
    f: Model,
    y: Any,
    h0: Any,
    *,
    estimate_mask: bool,
    reinsert: bool,
    max_iter: int,
    tol: float | str,
    patience: int | None,
    search_patience: int | None,
    rho: float,
    inner_iter: int,
    tau: float,
    clip: tuple[float, float] | None,
    callback: Any,
    record_history: bool,
    blowup: float,
    progress: bool | None,
    method: str,
    info: dict,
) -> SolverResult:
    """Outer loop of eqs. (6)-(7): K PnP-ADMM iterations, then (blind) the mask step."""
    xp = namespace(y, h0)
    lo_hi = clip
    rule, loop_tol = _stopping(y, tol, patience, search=search_patience)
    norms = _Norms(xp)
    rhs_of: list = [None, None, None]  # (y, sum_c y_c^2, the right side of eq. 20 for y):
    # y changes only when samples leave the batch, so sum_c y_c^2 + tau is computed once
    # per batch, not per step

    def mask_rhs(y_: Any) -> Any:
        if rhs_of[0] is not y_:
            r = _channel_sum(xp, y_**2)
            rhs_of[0], rhs_of[1], rhs_of[2] = y_, r, r + tau
        return rhs_of[2]

    coef: list = [None, None, None, None]  # (h, y, a, b): the v-step's a, b while h and y stay

    def prox(a: Any) -> Any:  # the autoencoder replaces the prox of s_f, eq. (13) -> (16)
        z = f(a)
        if lo_hi is not None:
            z = xp.clip(z, lo_hi[0], lo_hi[1])
        return z

    def step(s: RecoveryState) -> tuple[RecoveryState, Any]:
        z, u, h, y_ = s.z, s.u, s.h, s.y
        # v_update(y, h, w, rho) = (h*y + rho*w)/(h + rho) = a + b*w with a, b fixed while h is
        if coef[0] is h and coef[1] is y_:  # the known mask: computed once per batch
            a, b = coef[2], coef[3]
        else:
            inv = 1.0 / (h + rho)
            a, b = (h * y_) * inv, rho * inv
            coef[:] = [h, y_, a, b]
        for _ in range(inner_iter):
            v = a + b * (z - u)  # eq. (12) in closed form (17), w = z^{k-1} - u^{k-1}
            vu = v + u
            z = prox(vu)  # eq. (13) replaced by (16): z^k = f(v^k + u^{k-1})
            u = vu - z  # eq. (14): u^k = u^{k-1} + v^k - z^k
        x = z  # x^t = z^K (eq. 6)
        if reinsert:
            x = h * y_ + (1 - h) * z  # eq. (31): re-insert the observed pixels
        if estimate_mask:  # eq. (20), H^t from x^t (eq. 7): mask_step(y_, x, tau)
            lhs = _channel_sum(xp, (y_ - x) ** 2)
            keep = lhs <= mask_rhs(y_)
            h = keep.astype(x.dtype) if type(keep) is np.ndarray else xp.astype(keep, x.dtype)
        change = relative_change(xp, x, s.x)
        if rule is None:
            return RecoveryState(x, z, u, h, y_), change
        if estimate_mask:
            # the fidelity of eq. (7) at its optimal mask: sum_i min((y_i - x_i)^2, y_i^2)
            # (tau = 0), and whether the mask moved at this step (still searching)
            misfit, scale = norms.misfit(xp.minimum(lhs, rhs_of[1]), x, y_)
            moving = _per_sample_sum(xp, xp.abs(h - s.h)) > 0
        else:  # the known mask: the fidelity of the network's output, ||H (y - z)||
            misfit, scale = norms.misfit((h * (y_ - z)) ** 2, x, y_)
            moving = None
        return RecoveryState(x, z, u, h, y_), Check(change, misfit, moving, scale)

    state = RecoveryState(x=y, z=y, u=xp.zeros_like(y), h=h0, y=y)
    return run_loop(
        step,
        state,
        max_iter=int(max_iter),
        tol=loop_tol,
        rule=rule,
        primary="x",
        callback=callback,
        record_history=record_history,
        blowup=blowup,
        method=method,
        info=info,
        progress=progress,
    )


# ------------------------------------------------------------------ solvers
def blind_recovery(
    f: Model,
    y: Any,
    *,
    max_iter: int = DEFAULTS["max_iter"],
    tol: float | str = DEFAULTS["tol"],
    patience: int | None = DEFAULTS["patience"],
    rho: float = DEFAULTS["rho"],
    inner_iter: int = DEFAULTS["inner_iter"],
    mask_init: Any = DEFAULTS["mask_init"],
    tau: float = DEFAULTS["tau"],
    search_patience: int | None = None,
    rng: int | np.random.Generator | None = 0,
    clip: Any = None,
    callback: Callable | None = None,
    record_history: bool = False,
    blowup: float = 1e6,
    progress: bool | None = None,
) -> SolverResult:
    """Blind recovery: the mask is unknown (alternating minimization, eqs. 5-7, 12-20).

    Solves ``min_{x, h in {0,1}^n} 1/2 ||y - diag(h) x||^2 + beta s_f(x)`` by
    alternating an x-step (``inner_iter`` PnP-ADMM iterations with the
    autoencoder ``f`` as the prox, warm started) and the closed-form mask step.

    Parameters
    ----------
    f : callable
        The autoencoder, ``f(batch) -> batch`` of the same shape
        (:class:`refinv.onnx.OnnxModel` or any array function).
    y : array, shape (batch, *sample_shape)
        Degraded samples, float32/float64, finite (NumPy or array-API).
    max_iter : int
        Outer iterations ``T`` (each = ``inner_iter`` calls of ``f``).
    tol : "auto" or float
        Per-sample stopping. ``"auto"`` (default): stop when the relative change of
        ``x`` between outer iterations has reached the floating-point floor of the
        iteration (:class:`~refinv.solvers.FloorRule`: a fixed point to rounding, the
        contraction estimate of the distance to the limit, or the changes no longer
        decreasing, in units of ``y``'s dtype's eps); a number: stop when the relative
        change is ``< tol`` (``0``: every iteration runs, no early stop of any kind).
    patience : int or None
        Outer iterations without progress after which a sample is stopped as
        ``"stalled"`` (its data misfit, eq. 7's fidelity at the estimated mask, no
        longer decreases far above the floor while the mask does not move); ``None``:
        never (with a numeric ``tol``: exactly the plain ``< tol`` rule).
    rho : float
        ADMM penalty with the 1/2-fidelity convention (``rho_paper = 2 rho``).
    inner_iter : int
        PnP-ADMM iterations ``K`` per outer iteration.
    mask_init : str or array
        ``"ones"`` (default), ``"bernoulli"`` (p = 0.5), ``"bernoulli:P"``,
        ``"nonzero"`` or an explicit 0/1 array (see :func:`initial_mask`).
    tau : float
        Mask-step tolerance, ``h_i = 1 iff (y_i - x_i)^2 <= y_i^2 + tau`` (0 = paper).
    search_patience : int or None
        Also stop, as ``"stalled"``, a sample whose mask still moves when its misfit has
        made no progress for this many outer iterations (``None``, default: a searching
        sample runs on). Fewer calls, but a training image whose search would have found
        its basin later is lost: measured in docs/benchmarks.md ("Calls to a verdict").
    rng : int or numpy.random.Generator
        Seed/generator of the Bernoulli initial mask (default seed 0, reproducible).
    clip : None, True or (lo, hi)
        Project the autoencoder's output onto the data range (off by default).
    callback, record_history, blowup, progress
        Passed to :func:`~refinv.solvers.run_loop`.

    Returns
    -------
    SolverResult
        ``x`` the estimates; ``state.h`` the estimated masks ``(batch, 1, H, W)``
        (or the sample shape); per-sample iterations/convergence.

    Notes
    -----
    Outer iteration ``t`` (Abitbul and Dar, 2023)::

        repeat K times:                          # PnP-ADMM, eqs. (12)-(17)
            v = (h*y + rho*(z - u)) / (h + rho)
            z = f(v + u)
            u = u + v - z
        x^t = z
        h^t = 1[(y - x^t)^2 <= y^2 + tau]          # eq. (20), per pixel

    Pixels with ``y_i = 0`` can never be marked observed unless ``x_i = 0``
    exactly, so near-black images are hard to recover blind (inherent to eq. 20).
    """
    _check_common(max_iter, tol, rho, inner_iter, blowup, patience)
    if search_patience is not None and search_patience != 0:
        _positive_int(search_patience, "search_patience")
    _check(f, y)
    if not (tau >= 0 and math.isfinite(tau)):
        raise ConfigError(f"tau: expected a finite number >= 0, got {tau}")
    h0 = initial_mask(mask_init, y, rng=rng)
    init_name = mask_init if isinstance(mask_init, str) else "array"
    info = dict(
        rho=float(rho),
        inner_iter=int(inner_iter),
        max_iter=int(max_iter),
        tol=_tol_info(tol),
        patience=patience,
        search_patience=search_patience,
        tau=float(tau),
        mask_init=init_name,
        clip=_clip_range(clip),
        fidelity="1/2||y-Hx||^2 (rho_paper = 2 rho)",
    )
    return _pnp_admm(
        f,
        y,
        h0,
        estimate_mask=True,
        reinsert=False,
        max_iter=max_iter,
        tol=tol,
        patience=patience,
        search_patience=search_patience,
        rho=rho,
        inner_iter=inner_iter,
        tau=tau,
        clip=_clip_range(clip),
        callback=callback,
        record_history=record_history,
        blowup=blowup,
        progress=progress,
        method="blind",
        info=info,
    )


def known_mask_recovery(
    f: Model,
    y: Any,
    mask: Any,
    *,
    max_iter: int = DEFAULTS["max_iter"],
    tol: float | str = DEFAULTS["tol"],
    patience: int | None = DEFAULTS["patience"],
    rho: float = DEFAULTS["rho"],
    inner_iter: int = DEFAULTS["inner_iter"],
    reinsert: bool = True,
    clip: Any = None,
    callback: Callable | None = None,
    record_history: bool = False,
    blowup: float = 1e6,
    progress: bool | None = None,
) -> SolverResult:
    """Recovery with the true mask known (Appendix E, eqs. 30-31).

    The same outer loop as :func:`blind_recovery` with ``h`` fixed to the
    true mask and no mask step. With ``reinsert=True`` (default) the
    observed pixels of ``y`` are put back into the estimate each outer
    iteration, ``x = h*y + (1-h)*z`` (eq. 31); this is only right for
    noiseless erasure: pass ``reinsert=False`` when ``y`` is noisy (the CLI
    does so whenever ``--noise > 0``). ``mask``: 0/1, shape ``pixel_shape`` or
    ``(batch, *pixel_shape)``, host NumPy or an array of ``y``'s namespace.
    Other parameters as in :func:`blind_recovery` (1/2-fidelity convention); the data
    misfit of ``patience`` is the fidelity of the network's output with the true
    mask, ``||H (y - z)|| / ||x||``.
    """
    _check_common(max_iter, tol, rho, inner_iter, blowup, patience)
    _check(f, y)
    b, sshape = int(y.shape[0]), tuple(y.shape[1:])
    if isinstance(mask, np.ndarray) or not hasattr(mask, "__array_namespace__"):
        validate_mask(mask, pixel_shape(sshape), batch=b)
    h = expand_mask(mask, sshape, b, like=y)
    if not isinstance(mask, np.ndarray) and hasattr(mask, "__array_namespace__"):
        xp = namespace(h)
        if not bool(xp.all((h == 0) | (h == 1))):
            raise MaskError("mask: expected only the values 0 (erased) and 1 (observed)")
    info = dict(
        rho=float(rho),
        inner_iter=int(inner_iter),
        max_iter=int(max_iter),
        tol=_tol_info(tol),
        patience=patience,
        reinsert=bool(reinsert),
        clip=_clip_range(clip),
        fidelity="1/2||y-Hx||^2 (rho_paper = 2 rho)",
    )
    return _pnp_admm(
        f,
        y,
        h,
        estimate_mask=False,
        reinsert=bool(reinsert),
        max_iter=max_iter,
        tol=tol,
        patience=patience,
        search_patience=None,
        rho=rho,
        inner_iter=inner_iter,
        tau=0.0,
        clip=_clip_range(clip),
        callback=callback,
        record_history=record_history,
        blowup=blowup,
        progress=progress,
        method="known",
        info=info,
    )


def ae_iterations(
    f: Model,
    y: Any,
    *,
    max_iter: int = DEFAULTS["max_iter"] * DEFAULTS["inner_iter"],
    tol: float | str = DEFAULTS["tol"],
    patience: int | None = DEFAULTS["patience"],
    clip: Any = None,
    callback: Callable | None = None,
    record_history: bool = False,
    blowup: float = 1e6,
    progress: bool | None = None,
    check_every: int = 10,
) -> SolverResult:
    """Baseline "autoencoder iterations only" (Radhakrishnan et al.): ``x^{j+1} = f(x^j)``.

    ``x^0 = y``; per-sample stopping on the relative change of ``x``. The
    default ``max_iter`` (1000) equals the blind solver's default number of
    calls of ``f`` (100 outer x 10 inner), so the comparison is at equal cost.

    ``check_every`` (K, default 10 = the blind solver's calls of ``f`` per
    outer iteration, where it checks): the stopping test (and the divergence
    test, the callback, the history) runs after calls K, 2K, ... and after
    ``max_iter`` only, on the relative change of that call,
    ``||x^k - x^{k-1}|| / ||x^{k-1}||``; between checks no residual is
    computed. Exact relation to ``check_every=1``: the iterates are the same
    sequence; a sample stops at the first checked ``k`` whose relative change
    is ``< tol``, so its ``iterations`` is that ``k`` (>= the every-call
    stop ``j``, at most the next multiple of K when the relative change stays
    below ``tol`` after ``j``) and its ``x`` is ``x^k`` of the same sequence.

    ``tol="auto"`` and ``patience`` as in :func:`blind_recovery`, counted in checks
    (``patience`` checks = ``patience * check_every`` calls) with rates per call; the
    data misfit is the blind one, ``sqrt(sum_i min((y_i - x_i)^2, y_i^2)) / ||x||``
    (the iterate's fit to the observed pixels of ``y`` at the best mask: the baseline
    uses ``y`` only as its start, the stopping rule reads it to see a fixed point that
    does not fit the data).
    """
    _check_common(max_iter, tol, None, None, blowup, patience)
    xp = _check(f, y)
    lo_hi = _clip_range(clip)
    if int(check_every) != check_every or check_every < 1:
        raise ConfigError(f"check_every: expected a positive integer, got {check_every}")
    every, last = int(check_every), int(max_iter)
    rule, loop_tol = _stopping(y, tol, patience, every)
    calls = [0]  # the loop calls step once per iteration k, for every active sample at once
    ysq: list = [None, None]  # (y, sum_c y_c^2), once per batch
    norms = _Norms(xp)

    def step(s: AEState) -> tuple[AEState, Any]:
        x = f(s.x)  # x^{j+1} = f(x^j)
        if lo_hi is not None:
            x = xp.clip(x, lo_hi[0], lo_hi[1])
        calls[0] += 1
        if calls[0] % every and calls[0] != last:
            return AEState(x, s.y), None  # run_loop does not look at the residual here
        change = relative_change(xp, x, s.x)
        if rule is None:
            return AEState(x, s.y), change
        y_ = s.y
        if ysq[0] is not y_:
            ysq[0], ysq[1] = y_, _channel_sum(xp, y_**2)
        lhs = _channel_sum(xp, (y_ - x) ** 2)
        misfit, scale = norms.misfit(xp.minimum(lhs, ysq[1]), x, y_)
        return AEState(x, y_), Check(change, misfit, None, scale)

    info = dict(
        max_iter=int(max_iter), tol=_tol_info(tol), patience=patience, clip=lo_hi,
        check_every=every,
    )  # fmt: skip
    return run_loop(
        step,
        AEState(y, y if rule is not None else None),
        max_iter=int(max_iter),
        tol=loop_tol,
        rule=rule,
        check_every=every,
        primary="x",
        callback=callback,
        record_history=record_history,
        blowup=blowup,
        method="ae-iterations",
        info=info,
        progress=progress,
    )
