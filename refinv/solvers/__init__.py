"""Solvers: one shared loop (:func:`run_loop`), one result type (:class:`SolverResult`)."""

from ._loop import Check, SolverResult, StopReason, relative_change, run_loop
from ._stopping import FloorRule

__all__ = ["SolverResult", "StopReason", "Check", "FloorRule", "run_loop", "relative_change"]

from .recovery import ae_iterations, blind_recovery, known_mask_recovery  # noqa: E402

__all__ += ["blind_recovery", "known_mask_recovery", "ae_iterations"]

from .generators import gradient_descent, plugin  # noqa: E402
from .layered import latent_pursuit, layered_basis_pursuit, oracle  # noqa: E402

__all__ += ["plugin", "gradient_descent", "layered_basis_pursuit", "latent_pursuit", "oracle"]

from .bregman import (  # noqa: E402
    BregmanLayer,
    invert_chain,
    multilayer_cd,
    perceptron_landweber,
    perceptron_pdhg,
)

__all__ += [
    "BregmanLayer",
    "perceptron_pdhg",
    "perceptron_landweber",
    "multilayer_cd",
    "invert_chain",
]
