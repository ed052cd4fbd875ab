"""Solvers: one shared loop (:func:`run_loop`), one result type (:class:`SolverResult`)."""

from ._loop import SolverResult, StopReason, relative_change, run_loop

__all__ = ["SolverResult", "StopReason", "run_loop", "relative_change"]
