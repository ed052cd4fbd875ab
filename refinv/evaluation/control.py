"""The generic-inpainting control: fill the erased pixels without the model.

scikit-image's biharmonic inpainting (``skimage.restoration.inpaint_biharmonic``)
sees the same degraded image and the TRUE mask, and knows nothing of the
training set: its PSNR is what a generic prior recovers. Recovery through the
model far above it on training images, and near it on held-out images, is
memorization. The paper this follows (Abitbul & Dar) used a diffusion inpainter
for this role; this control is classical and runs offline, so it is a weaker
baseline than a modern generative inpainter.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CONTROL_METHOD", "biharmonic_inpaint"]

CONTROL_METHOD = "biharmonic inpainting (scikit-image inpaint_biharmonic), true mask, no model"


def biharmonic_inpaint(x_degraded: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Inpaint each image of ``x_degraded`` ``(N, *sample_shape)`` where the per-pixel
    ``mask`` (``(N, H, W)`` for ``(N, C, H, W)`` images, else the sample's shape; 1 =
    observed) is 0. Returns float64 images clipped to [0, 1]."""
    from skimage.restoration import inpaint_biharmonic

    x = np.asarray(x_degraded, dtype=np.float64)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        hole = np.asarray(mask[i]).reshape(x.shape[2:] if x.ndim == 4 else x.shape[1:]) == 0
        if not hole.any():
            out[i] = x[i]
            continue
        if hole.all():
            out[i] = 0.5  # nothing observed: the middle of the data range
            continue
        if x.ndim == 4:
            img = np.moveaxis(x[i], 0, -1)
            res = inpaint_biharmonic(img, hole, channel_axis=-1)
            out[i] = np.moveaxis(res, -1, 0)
        else:
            out[i] = inpaint_biharmonic(x[i], hole)
    return np.clip(out, 0.0, 1.0)
