"""The resource limits on untrusted ONNX models: defaults, environment variables, checks.

Every limit is resolved the same way (:func:`resolve_limit`): the value given to the
function or class, else the environment variable, else the default; ``0`` means no limit.
The limits themselves are described in the documentation's "Security model" page and in
:class:`~refinv.onnx.OnnxModel`.
"""

from __future__ import annotations

import os

from ..errors import ConfigError

__all__ = [
    "GiB",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIME_LIMIT",
    "DEFAULT_MEMORY_LIMIT",
    "DEFAULT_MAX_NODES",
    "DEFAULT_MAX_SPARSE_BYTES",
    "resolve_limit",
]

GiB = 2**30
#: Largest model read (file plus external data), bytes; ``max_bytes=``/``REFINV_MAX_MODEL_BYTES``.
DEFAULT_MAX_BYTES = 2 * GiB
#: Wall-time limit of one onnxruntime call, seconds; ``time_limit=``/``REFINV_ORT_TIME_LIMIT``.
DEFAULT_TIME_LIMIT = 600.0
#: onnxruntime arena ceiling per session, bytes; ``memory_limit=``/``REFINV_ORT_MEMORY_LIMIT``.
DEFAULT_MEMORY_LIMIT = 4 * GiB
#: Most nodes in all graphs of a model (subgraphs, functions); ``REFINV_MAX_NODES``.
DEFAULT_MAX_NODES = 5000
#: Largest total dense size of the sparse tensors, bytes; ``REFINV_MAX_SPARSE_BYTES``.
DEFAULT_MAX_SPARSE_BYTES = 256 * 2**20


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if not v >= 0:
        raise ConfigError(f"{name}: expected a non-negative number, got {raw!r}")
    return v


def resolve_limit(value: float | None, env: str, default: float, what: str) -> float:
    """An explicit limit, else the environment's, else the default; 0 means no limit."""
    v = _env_number(env, default) if value is None else value
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: expected a non-negative number, got {value!r}") from None
    if not v >= 0:
        raise ConfigError(f"{what}: expected a non-negative number, got {value!r}")
    return v
