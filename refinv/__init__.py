"""refinv: regularized inversion of neural networks.

Measure how much of its training data an autoencoder memorized (blind
recovery by plug-and-play ADMM with a closed-form mask step), invert
generators from their weights (PLUGIn, Latent-Pursuit), and invert layers
with lifted Bregman losses and total variation. Networks are ONNX graphs;
solvers are written against the Python array API (NumPy, CuPy, ...).
"""

import importlib
import logging
from typing import TYPE_CHECKING

from . import errors
from .errors import RefinvError

__version__ = "0.1.0"

logging.getLogger("refinv").addHandler(logging.NullHandler())

# The public names, imported on first use (PEP 562): `import refinv` and `refinv --help`
# load no NumPy, array-api-compat, onnx or onnxruntime until something needs them.
_LAZY = {
    "demo_files": ".io",
    **dict.fromkeys(("diagnose", "memorization_report", "mse", "psnr"), ".evaluation"),
    **dict.fromkeys(("LayerChain", "OnnxModel", "dense_chain", "read_chain"), ".onnx"),
    **dict.fromkeys(("draw_masks", "erase", "parse_mask"), ".operators"),
    **dict.fromkeys(
        (
            "SolverResult", "ae_iterations", "blind_recovery", "gradient_descent",
            "invert_chain", "known_mask_recovery", "latent_pursuit", "layered_basis_pursuit",
            "multilayer_cd", "oracle", "perceptron_landweber", "perceptron_pdhg", "plugin",
            "run_loop",
        ),
        ".solvers",
    ),
}  # fmt: skip
_SUBMODULES = ("backend", "audit", "evaluation", "io", "onnx", "operators", "provenance",
               "regularizers", "schemas", "solvers", "sweep")  # fmt: skip

if TYPE_CHECKING:  # for type checkers and IDEs: the names as if imported eagerly
    from . import audit, backend
    from .evaluation import diagnose, memorization_report, mse, psnr
    from .io import demo_files
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


def __getattr__(name: str):
    # refinv.audit (a callable package) is imported on first use, like every other name
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "__version__",
    "backend",
    "errors",
    "RefinvError",
    "demo_files",
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
