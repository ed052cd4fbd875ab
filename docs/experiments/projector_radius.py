"""Why a narrow bottleneck makes training images recoverable: the ADMM radius of a projector.

Model the Jacobian of a memorizing autoencoder at a training image as the orthogonal
projector onto a k-dimensional subspace (the tangent space of the set the decoder can
produce; rank k <= the bottleneck's size). The radius of the linearized known-mask
PnP-ADMM (refinv.evaluation.stability.pnp_admm_iteration_matrix, rho 0.5) then depends
only on how that subspace meets the erased coordinates: it grows with k, from about 2/3
for small k to 1 when k reaches the number of erased values (a 1-dimensional family of
fixed points consistent with the observed pixels appears, and the image is no longer
isolated). Printed next to it: the largest squared cosine between the subspace and the
erased coordinates. Random subspaces of R^768 (3x16x16 images), random:0.5 pixel masks
(384 erased values).

    OPENBLAS_NUM_THREADS=1 python docs/experiments/projector_radius.py
"""

from __future__ import annotations

import json

import numpy as np

from refinv.evaluation.stability import pnp_admm_iteration_matrix
from refinv.operators.masks import draw_masks, expand_mask


def main() -> None:
    rng = np.random.default_rng(0)
    shape = (3, 16, 16)
    n = int(np.prod(shape))
    h = np.asarray(
        expand_mask(draw_masks("random:0.5", shape, 1, seed=0), shape, 1, like=np.ones(1))
    )
    h = np.broadcast_to(h, (1, *shape)).reshape(n).astype(np.float64)
    erased = np.flatnonzero(h == 0)
    for k in (16, 32, 64, 128, 256, 320, 384):
        Q, _ = np.linalg.qr(rng.standard_normal((n, k)))
        M = pnp_admm_iteration_matrix(Q @ Q.T, h, 0.5)
        radius = float(np.abs(np.linalg.eigvals(M)).max())
        cos2 = float(np.linalg.svd(Q[erased], compute_uv=False)[0] ** 2)
        print(json.dumps(dict(k=k, n_erased=int(erased.size), admm_radius=round(radius, 4),
                              max_cos2_subspace_erased=round(cos2, 4))))  # fmt: skip


if __name__ == "__main__":
    main()
