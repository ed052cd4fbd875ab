"""Operators: degradations (pixel erasure and mask families), linear operators
with adjoints (dense, convolution, transposed convolution, discrete gradient)
and proximal activations."""
