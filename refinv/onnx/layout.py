"""The layout of a model's input: channels-first, channels-last or flat.

refinv's arrays are always ``(N, C, H, W)``; :func:`detect_layout` reads from the graph how
the model's own input is laid out (where that is unambiguous), :func:`resolve_layout` applies
a layout given by the user, and :func:`parse_image_shape` reads the image shape of a flat
model's samples. The conversion at the onnxruntime boundary is :class:`~refinv.onnx.OnnxModel`'s.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, OnnxModelError

__all__ = ["LAYOUTS", "detect_layout", "resolve_layout", "parse_image_shape", "declared_dims"]


def declared_dims(vi: Any) -> list[int | str | None]:
    """The declared dims of a value (``onnx.ValueInfoProto``): ints, symbolic names or None."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    out: list[int | str | None] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


#: The layouts a model input can have (``OnnxModel(layout=...)``, ``--layout``).
LAYOUTS = ("NCHW", "NHWC", "flat")
_CHANNELS = (1, 3)  # channel counts the declared-shape rules recognize (grey, RGB)
_PERM_NHWC_TO_NCHW = [0, 3, 1, 2]
_PERM_NCHW_TO_NHWC = [0, 2, 3, 1]
_LAYOUT_HINT = (
    "choose it with OnnxModel(..., layout='NCHW'|'NHWC') or the CLI's --layout NCHW|NHWC "
    "(NCHW: (batch, channels, height, width); NHWC: (batch, height, width, channels))"
)


def _input_transpose_perm(graph: Any, input_name: str) -> list[int] | None:
    """The ``perm`` of the Transpose that is the only consumer of the graph input, if any."""
    users = [n for n in graph.node if input_name in n.input]
    if len(users) != 1 or users[0].op_type != "Transpose":
        return None
    for a in users[0].attribute:
        if a.name == "perm":
            return [int(v) for v in a.ints]
    return None


def detect_layout(
    graph: Any, input_name: str, sample_dims: tuple[int, ...], label: str
) -> tuple[str | None, str]:
    """``(layout, how)`` of a model input from its graph: ``how`` says what decided it.

    Rules (only where unambiguous):

    * a 2-D input ``(batch, D)`` is ``"flat"``; a 3-D input ``(batch, H, W)`` is ``"NHW"``
      (images without a channel axis); other ranks but 4 have no layout (``None``);
    * a 4-D input whose only consumer is a ``Transpose`` with ``perm=[0, 3, 1, 2]`` (what
      tf2onnx and Keras write for a channels-last model) is ``"NHWC"``; one with
      ``perm=[0, 2, 3, 1]`` (a channels-first input to a channels-last graph) is ``"NCHW"``;
    * otherwise from the declared ``(batch, a, b, c)``: ``"NCHW"`` when ``a`` is 1 or 3 and
      neither ``b`` nor ``c`` is; ``"NHWC"`` when ``c`` is 1 or 3 and neither ``a`` nor ``b``
      is. Anything else (``(N, 3, 3, 3)``, ``(N, 1, 28, 1)``, ``(N, 2, 7, 5)``, ...) is
      ambiguous and raises :class:`~refinv.errors.OnnxModelError` saying how to choose.
    """
    rank = len(sample_dims)
    if rank == 1:
        return "flat", "declared 2-D input (batch, D)"
    if rank == 2:
        return "NHW", "declared 3-D input (batch, H, W)"
    if rank != 3:
        return None, f"declared {rank + 1}-D input: no image layout"
    perm = _input_transpose_perm(graph, input_name)
    if perm == _PERM_NHWC_TO_NCHW:
        return "NHWC", "the input feeds a Transpose perm=[0, 3, 1, 2] (channels-last input)"
    if perm == _PERM_NCHW_TO_NHWC:
        return "NCHW", "the input feeds a Transpose perm=[0, 2, 3, 1] (channels-first input)"
    a, b, c = sample_dims
    if a in _CHANNELS and b not in _CHANNELS and c not in _CHANNELS:
        return "NCHW", f"declared input (batch, {a}, {b}, {c}): channels first, C = {a}"
    if c in _CHANNELS and a not in _CHANNELS and b not in _CHANNELS:
        return "NHWC", f"declared input (batch, {a}, {b}, {c}): channels last, C = {c}"
    raise OnnxModelError(
        f"{label}: cannot tell the layout of the input (batch, {a}, {b}, {c}) from the graph: "
        f"channels-first ({a} channels of {b}x{c}) and channels-last ({c} channels of {a}x{b}) "
        f"both fit (refinv decides only when exactly one of the axes 1 and 3 is 1 or 3, or the "
        f"input feeds a layout Transpose); {_LAYOUT_HINT}"
    )


def parse_image_shape(value: Any, what: str = "image_shape") -> tuple[int, int, int]:
    """``(C, H, W)`` from ``(C, H, W)``, ``(H, W)`` (one channel) or text ``CxHxW`` / ``HxW``."""
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(
                f"{what}: expected CxHxW or HxW (e.g. 1x28x28), got {value!r}"
            ) from None
    else:
        try:
            dims = [int(d) for d in value]
        except (TypeError, ValueError):
            raise ConfigError(f"{what}: expected (C, H, W) or (H, W), got {value!r}") from None
    if len(dims) == 2:
        dims = [1, *dims]
    if len(dims) != 3 or any(d < 1 for d in dims):
        raise ConfigError(f"{what}: expected (C, H, W) or (H, W) of positive sizes, got {value!r}")
    return (dims[0], dims[1], dims[2])


def resolve_layout(
    layout: str | None, graph: Any, input_name: str, native: tuple[int, ...], label: str
) -> tuple[str | None, str]:
    """``(layout, layout_source)`` of an input whose graph sample shape is ``native``: the
    ``layout`` given (checked against the input's rank), else :func:`detect_layout`."""
    if layout is None:
        return detect_layout(graph, input_name, native, label)
    names = {v.lower(): v for v in (*LAYOUTS, "NHW")}
    if not isinstance(layout, str) or layout.lower() not in names:
        raise ConfigError(f"layout: expected one of {', '.join(LAYOUTS)} or None, got {layout!r}")
    layout = names[layout.lower()]
    need = {"NCHW": 3, "NHWC": 3, "flat": 1, "NHW": 2}[layout]
    if len(native) != need:
        raise ConfigError(
            f"{label}: layout={layout!r} needs a {need + 1}-D input, the model declares "
            f"(batch, {', '.join(map(str, native))})"
        )
    try:  # a layout the graph decides otherwise would transpose every image silently
        found, how = detect_layout(graph, input_name, native, label)
    except OnnxModelError:  # ambiguous: the given layout is the answer
        return layout, "given (layout=)"
    if found != layout:
        raise ConfigError(
            f"{label}: layout={layout!r} contradicts the graph: {how}, so the input is "
            f"{found}; with {layout} every image would reach the model transposed. Leave the "
            f"layout to refinv (or give layout={found!r})"
        )
    return layout, "given (layout=)"
