"""Regularizers: total variation (value and prox), the autoencoder as an implicit prior."""
