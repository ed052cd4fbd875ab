"""Regularizers: total variation (value and prox), the autoencoder as an implicit prior."""

from .tv import TotalVariation, project_dual_ball, tv

__all__ = ["TotalVariation", "project_dual_ball", "tv"]
