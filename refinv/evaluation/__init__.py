"""Evaluation: metrics (MSE, PSNR, SNR), the memorization report, diagnostics, the local
stability of recovery and the Theorem 1 (proximal map) check."""

from .diagnostics import diagnose, layer_cardinalities, mutual_coherence
from .metrics import mse, psnr
from .prox import prox_check
from .report import format_table, memorization_report
from .stability import pnp_admm_stability

__all__ = [
    "mse",
    "psnr",
    "memorization_report",
    "format_table",
    "diagnose",
    "layer_cardinalities",
    "mutual_coherence",
    "pnp_admm_stability",
    "prox_check",
]
