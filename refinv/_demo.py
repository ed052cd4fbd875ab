"""The demo's model and data set, shipped inside the package (every install has them)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

__all__ = ["DemoFiles", "demo_files"]


class DemoFiles(NamedTuple):
    """Paths of the packaged demo files."""

    model: Path  #: the faces MLP autoencoder (ONNX), a perfect fit of its training images
    data: Path  #: its data set (.npz): ``train`` (100 images 1x25x25) and ``test`` (100)


def demo_files() -> DemoFiles:
    """The shipped faces autoencoder and its data set, packaged in refinv itself
    (``refinv/_data``), so they exist in a wheel as in a checkout: ``model`` is
    ``faces25_lrelu_6x256.onnx`` (a 6-layer LeakyReLU MLP trained to train MSE ~1e-13 on
    100 face crops), ``data`` is ``faces25.npz`` with ``train`` and ``test`` arrays
    ``(100, 1, 25, 25)`` in [0, 1]. The rest of the model zoo lives in the repository's
    ``models/`` folder (not in the wheel).

    >>> import refinv
    >>> model, data = refinv.demo_files()
    >>> model.name, data.name
    ('faces25_lrelu_6x256.onnx', 'faces25.npz')
    """
    root = Path(__file__).resolve().parent / "_data"
    return DemoFiles(root / "onnx" / "faces25_lrelu_6x256.onnx", root / "data" / "faces25.npz")
