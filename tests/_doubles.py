"""Test doubles shared by the solver and report tests."""

from __future__ import annotations


class CountingModel:
    """Counts the calls of ``f``; states its shapes so the solvers do not probe it."""

    def __init__(self, f, shape):
        self.f, self.calls = f, 0
        self.sample_shape = self.output_sample_shape = shape

    def __call__(self, a):
        self.calls += 1
        return self.f(a)
