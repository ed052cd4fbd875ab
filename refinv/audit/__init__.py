"""``refinv.audit``: a memorization audit a privacy reviewer can act on.

``refinv.audit(model, train, test, out=DIR)`` runs the memorization report of
:mod:`refinv.evaluation.report` (the numbers of ``refinv evaluate`` for the same
settings), adds per-image exposure, membership inference (ROC, AUC, TPR at low
FPR with bootstrap intervals for three scores), a generic-inpainting control
that uses no model, and writes ``report.json``, ``per_image.csv`` and a
self-contained ``report.html`` into ``out`` (schema in docs/cli.md).

This package is callable: ``refinv.audit(...)`` is :func:`refinv.audit.core.audit`.
Its optional dependencies (Jinja2, matplotlib, scikit-learn, scikit-image) come
with the ``audit`` extra (``pip install 'refinv[audit]'``) and are imported
only when an audit runs.
"""

from __future__ import annotations

import sys
import types

from ._deps import AUDIT_DEPENDENCIES, require_audit_dependencies
from .core import AUDIT_SCHEMA_VERSION, audit

__all__ = ["audit", "AUDIT_SCHEMA_VERSION", "AUDIT_DEPENDENCIES", "require_audit_dependencies"]


class _CallableModule(types.ModuleType):
    """``refinv.audit`` is both this package and the function: importing the package
    binds it as the attribute ``refinv.audit``, so the package calls :func:`audit`."""

    def __call__(self, *args, **kwargs):
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
