"""One error hierarchy for refinv.

Every error raised on purpose by refinv derives from :class:`RefinvError`.
Subclasses also derive from the built-in exception a caller would naturally
catch (``ValueError`` for bad values and shapes, ``TypeError`` for wrong
array types and dtypes), so ``except ValueError`` keeps working.

Messages say what was expected and what came, e.g.::

    ShapeError: y: expected shape (batch, 1, 8, 8) matching the model's sample
    shape (1, 8, 8), got (4, 64)
"""

from __future__ import annotations

__all__ = [
    "RefinvError",
    "ShapeError",
    "DTypeError",
    "NonFiniteError",
    "MaskError",
    "MaskSpecError",
    "BackendError",
    "OnnxModelError",
    "UnsafeModelError",
    "UnsupportedGraphError",
    "ConfigError",
    "DivergenceWarning",
]


class RefinvError(Exception):
    """Base class of every error refinv raises on purpose."""


class ShapeError(RefinvError, ValueError):
    """An array has the wrong shape."""


class DTypeError(RefinvError, TypeError):
    """An array has the wrong dtype (e.g. integer where floating was expected)."""


class NonFiniteError(RefinvError, ValueError):
    """An input holds NaN or Inf where finite values are required."""


class MaskError(RefinvError, ValueError):
    """A mask is not a 0/1 array of the expected shape."""


class BackendError(RefinvError, TypeError):
    """Arrays from different namespaces or devices were mixed, or a backend is missing."""


class OnnxModelError(RefinvError, ValueError):
    """A file or object is not a usable ONNX model (not ONNX, truncated, bad opset, ...)."""


class UnsafeModelError(OnnxModelError):
    """An ONNX model references data outside its own folder (path traversal)."""


class UnsupportedGraphError(OnnxModelError):
    """An ONNX graph uses an operator or a topology a method cannot handle."""


class ConfigError(RefinvError, ValueError):
    """A configuration value (CLI option, sweep file, solver parameter) is invalid."""


class MaskSpecError(MaskError, ConfigError):
    """A mask spec's count or size does not fit the image (e.g. ``grid:K`` with K > H, W)."""


class DivergenceWarning(RuntimeWarning):
    """Some samples of a batch diverged (NaN/Inf or blow-up) and were stopped."""
