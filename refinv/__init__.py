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
from .evaluation import diagnose, memorization_report, mse, psnr
from .onnx import LayerChain, OnnxModel, dense_chain, read_chain
from .operators import draw_masks, erase, parse_mask
from .solvers import (
    SolverResult,
    ae_iterations,
    blind_recovery,
    gradient_descent,
    invert_chain,
    known_mask_recovery,
    latent_pursuit,
    layered_basis_pursuit,
    multilayer_cd,
    oracle,
    perceptron_landweber,
    perceptron_pdhg,
    plugin,
    run_loop,
)

__version__ = "0.1.0"

logging.getLogger("refinv").addHandler(logging.NullHandler())


def __getattr__(name: str):
    # refinv.audit (a callable package) is imported on first use: its report code is not
    # needed by `import refinv`
    if name == "audit":
        import importlib

        return importlib.import_module(".audit", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "__version__",
    "backend",
    "errors",
    "RefinvError",
    "OnnxModel",
    "read_chain",
    "dense_chain",
    "LayerChain",
    "SolverResult",
    "run_loop",
    "blind_recovery",
    "known_mask_recovery",
    "ae_iterations",
    "draw_masks",
    "erase",
    "parse_mask",
    "memorization_report",
    "mse",
    "psnr",
    "plugin",
    "gradient_descent",
    "layered_basis_pursuit",
    "latent_pursuit",
    "oracle",
    "diagnose",
    "perceptron_pdhg",
    "perceptron_landweber",
    "multilayer_cd",
    "invert_chain",
    "audit",
]
