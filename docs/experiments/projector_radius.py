"""The ADMM radius of a projector: a model of a memorizing autoencoder's Jacobian.

Model the Jacobian of a memorizing autoencoder at a training image as the orthogonal
projector P onto a k-dimensional subspace S (the tangent space of the set the decoder can
produce; rank k <= the bottleneck's size). The radius of the linearized known-mask
PnP-ADMM (refinv.evaluation.stability.pnp_admm_iteration_matrix, rho 0.5) then depends
only on how S meets the erased coordinates. Its non-zero eigenvalues are those of
(I - D) + (2D - I) P with D = rho / (h + rho): on a vector v of S that vanishes on every
OBSERVED coordinate this matrix is the identity, so an eigenvalue 1 appears as soon as S
contains such a vector, which a random S does once k exceeds the number of observed values
(k + #erased > n). The image is then no longer an isolated fixed point (a family of
images consistent with the observed pixels passes through it). Below that the radius
grows with k from about 2/3 towards 1. Printed next to it: the largest squared cosine
between S and the erased coordinates (1 when S contains a vector supported on them).

Random subspaces of R^768 (3x16x16 images), one pixel mask per mask spec (the same erased
pixels in the three channels), seed 0:

    OPENBLAS_NUM_THREADS=1 python docs/experiments/projector_radius.py \\
        [--masks random:0.5,random:0.75,random:0.25]

(random:0.5 erases 384 of 768 values, so the observed and the erased counts are equal
there and cannot be told apart; random:0.75 leaves 192 observed values, random:0.25 576.)
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from refinv.evaluation.stability import pnp_admm_iteration_matrix
from refinv.operators.masks import draw_masks, expand_mask

KS = {
    "random:0.5": (16, 32, 64, 128, 256, 320, 384, 400),
    "random:0.75": (16, 64, 128, 180, 190, 200, 256, 384),
    "random:0.25": (64, 192, 256, 384, 500, 570, 580, 600),
}


def value_mask(mask: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """The 0/1 mask (1 = observed) of one image of ``shape`` as a flat float vector, drawn as
    ``refinv evaluate`` draws it (one pixel mask, expanded over the channels)."""
    h = np.asarray(expand_mask(draw_masks(mask, shape, 1, seed=seed), shape, 1, like=np.ones(1)))
    return np.broadcast_to(h, (1, *shape)).reshape(-1).astype(np.float64)


def projector_radius(k: int, h: np.ndarray, rng: np.random.Generator, rho: float = 0.5) -> dict:
    """Radius of the linearized known-mask ADMM at a fixed point whose Jacobian is the
    orthogonal projector onto a random k-dimensional subspace, for the value mask ``h``."""
    n = h.shape[0]
    Q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    M = pnp_admm_iteration_matrix(Q @ Q.T, h, rho)
    erased = np.flatnonzero(h == 0)
    return dict(
        k=int(k),
        n_observed=int(n - erased.size),
        n_erased=int(erased.size),
        admm_radius=float(np.abs(np.linalg.eigvals(M)).max()),
        max_cos2_subspace_erased=float(np.linalg.svd(Q[erased], compute_uv=False)[0] ** 2),
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--masks", default="random:0.5,random:0.75,random:0.25")
    a = ap.parse_args(argv)
    shape = (3, 16, 16)
    for mask in a.masks.split(","):
        h = value_mask(mask, shape)
        rng = np.random.default_rng(0)
        for k in KS.get(mask, (16, 64, 256)):
            r = projector_radius(k, h, rng)
            r = {key: round(v, 4) if isinstance(v, float) else v for key, v in r.items()}
            print(json.dumps(dict(mask=mask, **r)), flush=True)


if __name__ == "__main__":
    main()
