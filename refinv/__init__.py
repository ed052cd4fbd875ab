"""refinv: regularized inversion of neural networks.

Measure how much of its training data an autoencoder memorized (blind
recovery by plug-and-play ADMM with a closed-form mask step), invert
generators from their weights (PLUGIn, Latent-Pursuit), and invert layers
with lifted Bregman losses and total variation. Networks are ONNX graphs;
solvers are written against the Python array API (NumPy, CuPy, ...).
"""

import logging

from . import backend, errors
from .errors import RefinvError
from .onnx import OnnxModel
from .solvers import SolverResult, run_loop

__version__ = "0.1.0"

logging.getLogger("refinv").addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "backend",
    "errors",
    "RefinvError",
    "OnnxModel",
    "SolverResult",
    "run_loop",
]
