"""The GPU training script of models/ (models/train_unet_gpu.py) measures what refinv measures.

It runs where refinv cannot be imported (the GPU image lacks array-api-compat), so it
carries its own copy of the random:P mask draw and an exact-Jacobian version of the
linearized PnP-ADMM radius; these tests hold both to refinv's own code. They need torch
(the ``train`` extra) and are skipped without it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

MODELS = Path(__file__).resolve().parents[1] / "models"
sys.path.insert(0, str(MODELS))

import train_unet_gpu  # noqa: E402
from train_unet import build  # noqa: E402

from refinv.evaluation.stability import pnp_admm_stability  # noqa: E402
from refinv.operators.masks import draw_masks  # noqa: E402


@pytest.mark.parametrize(("shape", "p", "n", "seed"), [((32, 32), 0.5, 5, 0), ((5, 7), 0.3, 3, 11)])
def test_mask_replica_equals_refinv(shape, p, n, seed):
    ours = train_unet_gpu.random_pixel_masks_np(shape, p, n, seed)
    ref = draw_masks(f"random:{p}", (3, *shape), n, seed)
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours, np.asarray(ref, dtype=bool))


def test_exact_jvp_radius_equals_refinv_dense_radius():
    """The n x n reduced matrix with exact Jacobian-vector products (ARPACK) gives the radius
    of refinv's dense 2n x 2n linearization from central differences, on a small random
    U-Net at random images (float64 model: the differences are then accurate to ~1e-8)."""
    torch.manual_seed(0)
    m = build(torch, "lrelu", widths=(4, 8)).double().eval()
    rng = np.random.default_rng(1)
    x = rng.random((2, 3, 4, 4))
    h = draw_masks("random:0.5", x.shape[1:], 2, seed=0)

    def f(z):
        with torch.no_grad():
            return m(torch.from_numpy(np.asarray(z, dtype=np.float64))).numpy()

    ref = pnp_admm_stability(f, x, h, rho=0.5, method="dense", eps=1e-6)
    ours = [train_unet_gpu.admm_radius(torch, m, x[i], np.asarray(h[i], float)) for i in range(2)]
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
