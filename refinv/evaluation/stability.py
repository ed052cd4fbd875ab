"""Why a training image is (or is not) recoverable: local stability of PnP-ADMM.

A memorized training image ``x*`` is a fixed point of the known-mask PnP-ADMM
of :mod:`refinv.solvers.recovery` (``f(x*) = x*``, ``y = h x*``: then
``v = z = x*``, ``u = 0`` solve eqs. (12), (16), (14)). Whether the iteration
*converges* to it from a degraded start is decided, locally, by the spectral
radius of its linearization there. With ``J = Df(x*)`` and
``D = diag(rho / (h + rho))`` (eq. 17 differentiated in ``w = z - u``), one
inner iteration maps the perturbation ``(dz, du)`` to::

    dv  = D (dz - du)                      # eq. (12) / (17)
    dz' = J (dv + du)                      # eq. (16)
    du' = du + dv - dz'                    # eq. (14)

a linear map ``M`` of size ``2n x 2n``. It factors as ``M = B C`` with
``C = [D, I - D]`` (``s = dv + du = C (dz, du)``) and ``B = [J; I - J]``, so its
non-zero eigenvalues are those of the ``n x n`` matrix
``C B = (I - D) + (2 D - I) J``, which the dense method diagonalizes.

What the radius says is LOCAL: it is the stability of the fixed point ``x*``
under the linearized iteration. Radius < 1: ``x*`` is an attracting fixed
point, and an iterate close enough to it converges to it (the error shrinks
like radius^k). Radius > 1: ``x*`` is a repelling fixed point of the
linearized iteration, and recovery from a nearby start is unlikely; it is
not impossible: an iteration that lands on ``x*`` exactly stays there (the
perturbation is then exactly zero), and the radius says nothing about where
the iteration goes from a start far from ``x*`` (the degraded image), or
about blind recovery, whose mask step changes the iteration. How often the
verdict matches the actual outcomes of known-mask and blind recovery is
measured in docs/theory/recovery.md (``docs/experiments/stability_agreement.py``).
The radius is a property of the autoencoder at its training images,
measured here by central finite differences of the black-box model. Two ways:

* ``method="dense"``: the whole Jacobian (``2 n`` evaluations per image,
  batched) and all eigenvalues of ``C B`` (``n x n``; the same radius as
  ``M``, a quarter of the size: 0.29 s of CPU instead of 1.32 s for n = 625);
  exact up to the differences, for small images (``n <= max_dim``);
* ``method="arnoldi"``: matrix-free, ARPACK on ``M`` whose products need one
  Jacobian-vector product each (two evaluations, one batch of 2), for images
  of any size: a few hundred model calls on batches of 2 per image (205 for
  the faces MLP, 315 for the 3x32x32 U-Net, tol 1e-6) instead of ``2 n``
  evaluations and an ``O(n^3)`` eigensolve (timings in docs/cli.md). ARPACK is
  sequential, so images are done one after the other.

``method="auto"`` (default) takes the dense one up to :data:`AUTO_DENSE_MAX` (256)
values and ARPACK above. Measured on the shipped faces MLP (625 values, 20
training images, masks random:0.5, rho 0.2 / 0.5 / 2, one thread;
``bench/stability_solvers.py``, ``bench/results/stability_solvers.json``): ARPACK took
0.2-1.0 s of CPU per rho for the 20 images, the dense method 2.9-3.1 s; the radii
differed by 0.3-1.0% (median) and at most 1.4%, 1.6%, 5.3% (rho 0.2, 0.5, 2; the
size of the dense radius's own movement with ``eps``, activation kinks), and the
verdict (radius < 1) agreed on 59 of the 60 (image, rho) pairs (the one
disagreement: 0.997 dense, 1.011 ARPACK). On the 8x8 digits MLP (64 values) the
dense method is the faster (0.04-0.05 s against 0.15-0.20 s of CPU for 20 images
per rho; verdicts 60 of 60 equal). :func:`stability_radii` computes the dense
Jacobian once per image for every rho.

Measured on the shipped models (``docs/experiments/recovery_stability.py``;
random:0.5 masks, rho = 0.5, first 20 training images): faces25_lrelu_6x256
median radius 0.75, all 20 below 1 (blind recovery 87%); digits8_lrelu_6x320
median 1.23, none below 1 (recovery 0%). Table in docs/theory/recovery.md.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..backend import from_numpy, namespace, to_numpy
from ..errors import ConfigError, NonFiniteError, ShapeError
from ..operators.masks import expand_mask

log = logging.getLogger(__name__)
from .._constants import STABILITY_METHODS as METHODS  # noqa: E402  (refinv --help reads it)

__all__ = [
    "METHODS",
    "AUTO_DENSE_MAX",
    "stability_radii",
    "model_jacobian",
    "pnp_admm_iteration_matrix",
    "pnp_admm_radius",
    "pnp_admm_stability",
    "radius_rtol",
    "resolve_method",
    "tie_radii",
]


def model_jacobian(f: Any, x: Any, *, eps: float = 1e-3) -> np.ndarray:
    """Jacobians ``J[b] = Df(x[b])`` (``(batch, n, n)``, float64, host) by central differences.

    ``f`` is called on ``2 n`` perturbed copies of each sample (one batch per
    sample; the ONNX layer chunks it). For piecewise-linear networks the
    result is exact unless a perturbation crosses an activation kink; for
    float32 models the error is about ``1e-7 / eps``.
    """
    namespace(x)  # validates the array type
    if x.ndim < 2:
        raise ShapeError(f"x: expected a batch (batch, *sample_shape), got shape {x.shape}")
    if not eps > 0:
        raise ConfigError(f"eps: expected a positive step, got {eps}")
    xs = to_numpy(x)
    shape = xs.shape[1:]
    n = int(np.prod(shape))
    E = np.eye(n, dtype=xs.dtype) * xs.dtype.type(eps)
    out = np.empty((xs.shape[0], n, n))
    for b in range(xs.shape[0]):
        xb = xs[b].reshape(1, n)
        P = np.concatenate([xb + E, xb - E]).reshape(2 * n, *shape)
        fp = to_numpy(f(from_numpy(P, like=x))).reshape(2 * n, n).astype(np.float64)
        _finite_outputs(fp, b)
        out[b] = ((fp[:n] - fp[n:]) / (2.0 * eps)).T  # column j = df/dx_j
    return out


def _finite_outputs(fp: np.ndarray, b: int | None) -> None:
    """The Jacobian needs finite outputs around the image (NaN/Inf would reach LAPACK or
    ARPACK as a crash, not a verdict)."""
    if not np.isfinite(fp).all():
        at = "" if b is None else f" {b}"
        raise NonFiniteError(
            f"stability: the model's outputs next to image{at} are NaN/Inf, so its Jacobian "
            "is undefined there; expected a model with finite weights and outputs (refinv "
            "inspect lists the layers that hold NaN/Inf)"
        )


def _damping(J: np.ndarray, h: np.ndarray, rho: float) -> np.ndarray:
    """``D = rho / (h + rho)`` of the linearized step (module docstring), after checking
    ``J`` (n, n), ``h`` (n,) and ``rho > 0``."""
    n = J.shape[0]
    if J.shape != (n, n) or np.shape(h) != (n,):
        raise ShapeError(f"expected J (n, n) and h (n,), got {J.shape} and {np.shape(h)}")
    if not rho > 0:
        raise ConfigError(f"rho: expected a positive number, got {rho}")
    return rho / (np.asarray(h, dtype=np.float64) + rho)


def pnp_admm_iteration_matrix(J: np.ndarray, h: np.ndarray, rho: float) -> np.ndarray:
    """The ``2n x 2n`` linearization ``M`` of one inner PnP-ADMM step (module docstring).

    ``J``: ``(n, n)`` Jacobian of the autoencoder at the fixed point; ``h``:
    ``(n,)`` 0/1 mask (1 = observed); state ordering ``(dz, du)``.
    """
    n = J.shape[0]
    d = _damping(J, h, rho)
    return _linearized_step(lambda s: J @ s, d, np.eye(2 * n))  # the step on each unit vector


def _linearized_step(J_times, d: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``M w``: one inner ADMM step linearized at the fixed point (module docstring), on
    ``w = (dz, du)`` stacked along axis 0 (a vector, or the columns of a matrix);
    ``J_times(s) = J s``, ``d = rho / (h + rho)``."""
    n = d.shape[0]
    dz, du = w[:n], w[n:]
    dv = (d if w.ndim == 1 else d[:, None]) * (dz - du)  # eq. (12) / (17)
    dz2 = J_times(dv + du)  # eq. (16)
    return np.concatenate([dz2, du + dv - dz2])  # eq. (14)


def _arnoldi_radius(
    f: Any,
    x: Any,
    xb: np.ndarray,
    h: np.ndarray,
    rho: float,
    eps: float,
    tol: float,
    max_restarts: int,
    index: int | None = None,
) -> float:
    """Largest |eigenvalue| of ``M`` at one image, matrix-free (ARPACK, implicitly restarted
    Arnoldi). ``Ms`` needs ``J s`` for one ``s``: central differences along ``s`` scaled so
    that its largest entry is ``eps`` (the dense Jacobian's per-value step)."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigs

    shape, n = xb.shape, xb.size
    x0 = xb.reshape(n)
    d = rho / (h + rho)

    def jvp(s: np.ndarray) -> np.ndarray:
        scale = float(np.max(np.abs(s)))
        if scale == 0.0:
            return np.zeros(n)
        step = (eps / scale) * s
        P = np.stack([x0 + step, x0 - step]).astype(xb.dtype, copy=False)
        fp = to_numpy(f(from_numpy(P.reshape(2, *shape), like=x))).reshape(2, n)
        _finite_outputs(fp, index)
        return (fp[0].astype(np.float64) - fp[1]) * (scale / (2.0 * eps))

    def matvec(w: np.ndarray) -> np.ndarray:
        return _linearized_step(jvp, d, np.asarray(w, dtype=np.float64).reshape(2 * n))

    op = LinearOperator((2 * n, 2 * n), matvec=matvec, dtype=np.float64)
    k = min(6, 2 * n - 2)
    v0 = np.random.default_rng(0).standard_normal(2 * n)  # deterministic start
    try:
        vals = eigs(op, k=k, which="LM", tol=tol, ncv=min(2 * n, max(2 * k + 1, 24)),
                    maxiter=max_restarts, v0=v0, return_eigenvectors=False)  # fmt: skip
    except ArpackNoConvergence as exc:
        vals = exc.eigenvalues
        if len(vals) == 0:
            log.warning("stability: ARPACK found no eigenvalue in %d restarts", max_restarts)
            return float("nan")
        log.warning(
            "stability: ARPACK converged %d of %d eigenvalues in %d restarts; the radius "
            "is the largest of those (a lower bound)", len(vals), k, max_restarts,
        )  # fmt: skip
    return float(np.abs(vals).max())


#: ``method="auto"`` is dense up to this many values per image, ARPACK above (module doc)
AUTO_DENSE_MAX = 256


def resolve_method(method: str, n: int, max_dim: int) -> str:
    """The eigensolver ``pnp_admm_stability`` uses for images of ``n`` values: ``"auto"`` is
    ``"dense"`` up to ``min(max_dim, AUTO_DENSE_MAX)`` values and ``"arnoldi"`` above (the
    faster where they agree, module docstring); a ``"dense"`` request above ``max_dim`` is
    refused."""
    if method not in METHODS:
        raise ConfigError(f"method: expected one of {METHODS}, got {method!r}")
    if method == "auto":
        return "dense" if n <= min(max_dim, AUTO_DENSE_MAX) else "arnoldi"
    if method == "dense" and n > max_dim:
        raise ConfigError(
            f"pnp_admm_stability: images of {n} values need a {2 * n}x{2 * n} eigenproblem "
            f"each; expected at most max_dim={max_dim} for method='dense' (raise it "
            "knowingly, or use method='arnoldi')"
        )
    return method


def pnp_admm_stability(
    f: Any,
    x: Any,
    mask: Any,
    *,
    rho: float = 0.5,
    eps: float = 1e-3,
    max_dim: int = 2048,
    method: str = "auto",
    tol: float = 1e-6,
    max_restarts: int = 300,
) -> np.ndarray:
    """Spectral radius of the linearized known-mask PnP-ADMM at each training image.

    Parameters
    ----------
    f : the autoencoder (:class:`~refinv.onnx.OnnxModel` or any callable on batches).
    x : ``(batch, *sample_shape)`` training images (fixed points, ``f(x) ~ x``).
    mask : 0/1 masks, ``(batch, *sample_shape)`` or per pixel ``(batch, H, W)``
        as in :func:`~refinv.solvers.recovery.known_mask_recovery`.
    rho : the ADMM parameter of the recovery run.
    eps : finite-difference step (per value).
    max_dim : largest number of values per image for the dense method (its
        eigenproblem is ``2n x 2n``); ``method="auto"`` goes matrix-free above it.
    method : ``"auto"``, ``"dense"`` or ``"arnoldi"`` (module docstring).
    tol, max_restarts : ARPACK's relative tolerance and restart limit
        (``"arnoldi"`` only). If ARPACK does not converge, the largest converged
        eigenvalue is used (a lower bound, logged as a warning), NaN if none.

    Returns
    -------
    numpy.ndarray
        ``(batch,)`` radii. A local verdict on the fixed point: < 1, the image
        attracts the linearized iteration (an iterate close enough converges to
        it); > 1, it repels it (recovery from a nearby start is unlikely, but an
        iteration that lands on it exactly stays there). Agreement with actual
        known-mask and blind outcomes: docs/theory/recovery.md.
    """
    n = int(np.prod(x.shape[1:]))
    method = resolve_method(method, n, max_dim)
    if not rho > 0:
        raise ConfigError(f"rho: expected a positive number, got {rho}")
    xs = to_numpy(x)
    h = expand_mask(mask, tuple(xs.shape[1:]), xs.shape[0], like=xs)
    h = np.broadcast_to(to_numpy(h), xs.shape).reshape(xs.shape[0], n)
    if method == "arnoldi":
        if not eps > 0:
            raise ConfigError(f"eps: expected a positive step, got {eps}")
        hd = h.astype(np.float64)
        return np.asarray(
            [_arnoldi_radius(f, x, xs[b], hd[b], rho, eps, tol, max_restarts, b)
             for b in range(xs.shape[0])]
        )  # fmt: skip
    J = model_jacobian(f, x, eps=eps)
    return np.asarray([pnp_admm_radius(J[b], h[b], rho) for b in range(len(J))])


def stability_radii(
    f: Any,
    x: Any,
    mask: Any,
    rhos: Any,
    *,
    eps: float = 1e-3,
    max_dim: int = 2048,
    method: str = "auto",
    tol: float = 1e-6,
    max_restarts: int = 300,
    progress: bool | None = None,
) -> np.ndarray:
    """:func:`pnp_admm_stability` for several ``rhos`` at once: ``(len(rhos), batch)`` radii.

    The dense method computes each image's Jacobian once for every rho (the model calls
    do not depend on rho); ARPACK runs once per (image, rho). A progress bar (stderr,
    :class:`refinv._progress.Progress`; ``progress=None``: on in a terminal) counts the
    (image, rho) pairs.
    """
    from .._progress import Progress

    rhos = [float(r) for r in rhos]
    if not rhos or any(not r > 0 for r in rhos):
        raise ConfigError(f"rho: expected positive numbers, got {rhos}")
    xs = to_numpy(x)
    batch, n = xs.shape[0], int(np.prod(xs.shape[1:]))
    method = resolve_method(method, n, max_dim)
    out = np.empty((len(rhos), batch))
    bar = Progress(batch * len(rhos), desc=f"stability ({method})", enabled=progress)
    try:
        for b in range(batch):
            xb, hb = x[b : b + 1], mask[b : b + 1]
            if method == "dense":
                J = model_jacobian(f, xb, eps=eps)[0]
                h = expand_mask(hb, tuple(xs.shape[1:]), 1, like=xs)
                h = np.broadcast_to(to_numpy(h), xs[:1].shape).reshape(n)
                for i, rho in enumerate(rhos):
                    out[i, b] = pnp_admm_radius(J, h, rho)
                    bar.update(b * len(rhos) + i + 1)
            else:
                for i, rho in enumerate(rhos):
                    out[i, b] = pnp_admm_stability(
                        f, xb, hb, rho=rho, eps=eps, max_dim=max_dim, method=method, tol=tol,
                        max_restarts=max_restarts,
                    )[0]  # fmt: skip
                    bar.update(b * len(rhos) + i + 1)
    finally:
        bar.close()
    return out


def pnp_admm_radius(J: np.ndarray, h: np.ndarray, rho: float) -> float:
    """Spectral radius of :func:`pnp_admm_iteration_matrix` ``(J, h, rho)``, from the
    ``n x n`` matrix ``(I - D) + (2 D - I) J`` that has its non-zero eigenvalues
    (module docstring)."""
    n = J.shape[0]
    d = _damping(J, h, rho)
    N = (2.0 * d - 1.0)[:, None] * np.asarray(J, dtype=np.float64)
    N[np.diag_indices(n)] += 1.0 - d
    return float(np.abs(np.linalg.eigvals(N)).max())


def radius_rtol(
    method: str, *, tol: float = 1e-6, eps: float = 1e-3, dtype: Any = np.float32
) -> float:
    """Relative accuracy of the radii :func:`pnp_admm_stability` returns: radii closer than this
    are indistinguishable (:func:`tie_radii`).

    The eigensolver's tolerance (ARPACK's ``tol`` for ``"arnoldi"``; for ``"dense"``,
    ``sqrt(machine epsilon)`` ~ 1.5e-8, the accuracy of a nearly defective eigenvalue of a
    non-symmetric matrix), and no less than the rounding of the finite differences,
    ``finfo(dtype).eps / eps`` (1.2e-4 for a float32 model at ``eps = 1e-3``)."""
    method = "arnoldi" if method == "arnoldi" else "dense"
    solver = float(tol) if method == "arnoldi" else float(np.sqrt(np.finfo(np.float64).eps))
    return max(solver, float(np.finfo(np.dtype(dtype)).eps) / float(eps))


def tie_radii(radii: Any, rtol: float) -> np.ndarray:
    """``radii`` (float64) with the values that agree within ``rtol`` made equal.

    Sorted, the values are grouped from the smallest: a value within ``rtol`` (relative) of
    its group's first value joins the group, and every value of a group becomes that first
    value. A non-decreasing map that moves no value by more than ``rtol`` of it, so a ranking
    (an ROC, its AUC) keeps every difference larger than the radii's accuracy
    (:func:`radius_rtol`) and sees the rest as ties. NaNs are kept."""
    r = np.array(radii, dtype=np.float64)
    if not rtol >= 0:
        raise ConfigError(f"rtol: expected >= 0, got {rtol}")
    flat = r.reshape(-1)
    idx = np.flatnonzero(~np.isnan(flat))
    order = idx[np.argsort(flat[idx], kind="stable")]
    start = None
    for i in order:
        v = flat[i]
        if start is None or abs(v - start) > rtol * max(abs(start), abs(v)):
            start = v
        flat[i] = start
    return r
