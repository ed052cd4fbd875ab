"""The ``audit`` extra: which optional packages an audit needs, and a clear error when one
is missing."""

from __future__ import annotations

import importlib

from ..errors import ConfigError

__all__ = ["AUDIT_DEPENDENCIES", "require_audit_dependencies"]

# (module imported, distribution to install)
AUDIT_DEPENDENCIES = (
    ("jinja2", "jinja2"),
    ("matplotlib", "matplotlib"),
    ("sklearn", "scikit-learn"),
    ("skimage", "scikit-image"),
)


def require_audit_dependencies() -> None:
    """Import the audit's optional packages; a :class:`~refinv.errors.ConfigError` naming the
    ``audit`` extra when any is missing."""
    missing = []
    for module, dist in AUDIT_DEPENDENCIES:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(dist)
    if missing:
        raise ConfigError(
            f"the audit expected the packages of the 'audit' extra, missing "
            f"{', '.join(missing)}; install them with: pip install 'refinv[audit]'"
        )
