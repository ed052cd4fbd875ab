"""Is this autoencoder a proximal operator? Theorem 1's conditions, checked on any model.

Moreau's characterization (J.-J. Moreau, "Proximité et dualité dans un espace
hilbertien", 1965; for differentiable maps see R. Gribonval and M. Nikolova,
"A characterization of proximity operators", 2020): a map ``f`` is the
proximity operator of a convex function iff it is the gradient of a convex
function and non-expansive. For a differentiable ``f`` this says that its
Jacobian ``J = Df(x)`` is symmetric (a gradient field) with eigenvalues in
``[0, 1]`` (positive semidefinite: the potential is convex; at most 1: ``f``
is non-expansive), at every ``x``. Theorem 1 of Abitbul & Dar ("Recovery of
training data from overparameterized autoencoders: an inverse problem
perspective", 2023) gives a family of autoencoders that satisfy it by
construction: ``f(x) = W^T s(W x + b)`` with ``s' in [0, 1]`` and the singular
values of ``W`` in ``[0, 1]``, whose Jacobian is ``W^T diag(s') W``.

:func:`prox_check` measures the two conditions at given points (e.g. the
training images) from the black-box model: the Jacobian by central finite
differences (:func:`~refinv.evaluation.stability.model_jacobian`), then

* its asymmetry ``||J - J^T||_F / ||J||_F`` (0 for a symmetric Jacobian);
* the eigenvalue range of its symmetric part ``(J + J^T) / 2``;
* the verdict at that point: asymmetry ``<= sym_tol`` and eigenvalues in
  ``[-eig_tol, 1 + eig_tol]``.

A check at finitely many points: "is a Moreau proximal map at these points"
is necessary for being one, not sufficient (the conditions must hold
everywhere). The tolerances absorb the finite-difference error: about
``1e-7 / eps`` relative for float32 models, exact up to rounding for
piecewise-linear ones unless a step crosses an activation kink.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import to_numpy
from ..errors import ConfigError, ShapeError
from .stability import model_jacobian

__all__ = ["prox_check", "jacobian_prox_stats"]


def jacobian_prox_stats(J: np.ndarray) -> dict:
    """``{"asymmetry", "eig_min", "eig_max"}`` of one square Jacobian (module docstring);
    the asymmetry of a zero Jacobian is 0."""
    J = np.asarray(J, dtype=np.float64)
    if J.ndim != 2 or J.shape[0] != J.shape[1]:
        raise ShapeError(f"J: expected a square matrix, got shape {J.shape}")
    nrm = float(np.linalg.norm(J))
    asym = float(np.linalg.norm(J - J.T)) / nrm if nrm > 0 else 0.0
    ev = np.linalg.eigvalsh(0.5 * (J + J.T))
    return {"asymmetry": asym, "eig_min": float(ev[0]), "eig_max": float(ev[-1])}


def prox_check(
    f: Any,
    x: Any,
    *,
    n: int | None = None,
    eps: float = 1e-3,
    sym_tol: float = 1e-3,
    eig_tol: float = 1e-3,
) -> dict:
    """Theorem 1's conditions (a Moreau proximal map: symmetric Jacobian, eigenvalues in
    [0, 1]) at the first ``n`` points of ``x``.

    Parameters
    ----------
    f : the model (:class:`~refinv.onnx.OnnxModel` or any callable on batches); its
        output must have the input's shape.
    x : ``(batch, *sample_shape)`` points (e.g. training images).
    n : how many of them (default all).
    eps : finite-difference step.
    sym_tol : largest relative asymmetry ``||J - J^T||_F / ||J||_F`` counted as symmetric.
    eig_tol : slack on the eigenvalue range ``[0, 1]`` of the symmetric part.

    Returns
    -------
    dict
        JSON-ready: ``points`` (per point ``asymmetry``, ``eig_min``, ``eig_max``,
        ``symmetric``, ``eigs_in_0_1``, ``prox``), the aggregates ``max_asymmetry``,
        ``eig_min``, ``eig_max`` (over all points), ``fraction_prox`` and
        ``is_prox`` (every point passes), and the settings.
    """
    if not (sym_tol >= 0 and eig_tol >= 0):
        raise ConfigError(f"sym_tol, eig_tol: expected >= 0, got {sym_tol}, {eig_tol}")
    if getattr(x, "ndim", 0) < 2:
        raise ShapeError(f"x: expected a batch (batch, *sample_shape), got {np.shape(x)}")
    total = int(x.shape[0])
    if total == 0:
        raise ShapeError("x: expected at least one point, got an empty batch")
    n = total if n is None else int(n)
    if n < 1:
        raise ConfigError(f"n: expected >= 1 point, got {n}")
    n = min(n, total)
    x = x[:n]
    probe = to_numpy(f(x[:1]))
    if tuple(probe.shape[1:]) != tuple(x.shape[1:]):
        raise ShapeError(
            f"prox_check: expected a model whose output has its input's shape "
            f"{tuple(x.shape[1:])}, got output {tuple(probe.shape[1:])}"
        )
    J = model_jacobian(f, x, eps=eps)
    points = []
    for b in range(n):
        st = jacobian_prox_stats(J[b])
        st["symmetric"] = st["asymmetry"] <= sym_tol
        st["eigs_in_0_1"] = st["eig_min"] >= -eig_tol and st["eig_max"] <= 1.0 + eig_tol
        st["prox"] = st["symmetric"] and st["eigs_in_0_1"]
        points.append(st)
    ok = [p["prox"] for p in points]
    return {
        "n": n,
        "eps": float(eps),
        "sym_tol": float(sym_tol),
        "eig_tol": float(eig_tol),
        "max_asymmetry": max(p["asymmetry"] for p in points),
        "eig_min": min(p["eig_min"] for p in points),
        "eig_max": max(p["eig_max"] for p in points),
        "fraction_prox": float(np.mean(ok)),
        "is_prox": bool(all(ok)),
        "points": points,
    }
