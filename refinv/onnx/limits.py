"""The resource limits on untrusted ONNX models: defaults, environment variables, checks.

Every limit is resolved the same way (:func:`resolve_limit`): the value given to the
function or class, else the environment variable, else the default; ``0`` means no limit.
The limits themselves are described in the documentation's "Security model" page and in
:class:`~refinv.onnx.OnnxModel`.
"""

from __future__ import annotations

import numbers
import os

from ..errors import ConfigError

__all__ = [
    "GiB",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIME_LIMIT",
    "DEFAULT_MEMORY_LIMIT",
    "DEFAULT_MAX_NODES",
    "DEFAULT_MAX_SPARSE_BYTES",
    "DEFAULT_MAX_INITIALIZERS",
    "DEFAULT_MAX_TEXT_BYTES",
    "resolve_limit",
    "max_threads",
    "check_threads",
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
#: Most initializers in all graphs; ``REFINV_MAX_INITIALIZERS``. onnxruntime's session
#: creation grows about quadratically with them (10^4 one-value initializers: 0.7 s; 2 x 10^4:
#: 1.9 s; 10^5: minutes, on the shared 2-core machine).
DEFAULT_MAX_INITIALIZERS = 10_000
#: Largest total size of the model's text (names, doc strings, metadata) and string tensors,
#: bytes; ``REFINV_MAX_TEXT_BYTES``. Each copy of the model (parsed, checked, serialized,
#: onnxruntime's) repeats it; no autoencoder needs megabytes of text.
DEFAULT_MAX_TEXT_BYTES = 16 * 2**20


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


def max_threads() -> int:
    """The most onnxruntime intra-op threads refinv asks for: 4 per CPU core this process may
    run on (onnxruntime starts every thread it is asked for; 10^5 of them hang the machine)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return 4 * max(cores, 1)


def check_threads(value: object, what: str = "intra_op_threads") -> int | None:
    """``value`` as a thread count: None (1 thread), 0 (onnxruntime's default) up to
    :func:`max_threads`; anything else is a :class:`~refinv.errors.ConfigError`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{what}: expected None or an integer from 0 to {max_threads()}, "
                          f"got {value!r}")  # fmt: skip
    if not 0 <= int(value) <= max_threads():
        raise ConfigError(
            f"{what}: expected 0 (onnxruntime's default) to {max_threads()} (4 per CPU core "
            f"available), got {value}"
        )
    return int(value)
