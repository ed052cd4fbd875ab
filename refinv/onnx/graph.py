"""The layer chain of a feed-forward ONNX graph: :func:`read_chain`.

Explicit-weight methods (PLUGIn, Latent-Pursuit, layered basis pursuit, the
lifted Bregman inversion) need the network as a chain of layers
``x_{i+1} = act_i(A_i x_i + b_i)`` (:mod:`refinv.onnx.chain`); :func:`read_chain`
walks a feed-forward ONNX graph in topological order and builds it, each operator
folded by its rule (:mod:`refinv.onnx._chain_rules`). The chain's types are importable
from here too (``from refinv.onnx.graph import LayerChain``).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, RefinvError, UnsupportedGraphError

# the chain's types, importable from this module as before (documented in refinv.onnx.chain)
from .chain import Activation as Activation
from .chain import Layer as Layer
from .chain import LayerChain as LayerChain
from .chain import activation_derivative as activation_derivative
from .chain import apply_activation as apply_activation
from .chain import dense_chain as dense_chain
from .chain import inverse_activation as inverse_activation
from .loading import load_onnx, onnx

__all__ = ["read_chain"]


def read_chain(source: Any, *, layout: str | None = None) -> LayerChain:
    """Read the layer chain ``x_{i+1} = act_i(A_i x_i + b_i)`` of a feed-forward ONNX model.

    Parameters
    ----------
    source : path, bytes, onnx.ModelProto or OnnxModel
        The model (loaded safely through :func:`refinv.onnx.loading.load_onnx`).
    layout : {"NHWC", "NCHW", "flat", "graph"}, optional
        Read a channels-last model in refinv's channels-first coordinates: the chain
        takes and returns ``(N, C, H, W)`` like :class:`~refinv.onnx.OnnxModel`, the
        input/output transposes being absorbed (a leading ``Transpose`` to NCHW cancels,
        a dense layer takes the permutation into its columns). Default: the layout of an
        ``OnnxModel`` source, else the layout that ``OnnxModel`` would detect from the graph
        (so a chain read from a path and the model agree); where the graph does not decide
        it (an ambiguous input), and with ``"graph"``, the graph's own coordinates.

    Returns
    -------
    LayerChain
        Layers in float64, input layer first; ``info`` holds the model label,
        the exporter (``producer_name``) and the list of skipped shape nodes.

    Raises
    ------
    UnsupportedGraphError
        For an operator outside the supported list, a skip connection (a data
        tensor consumed twice or a node with two data inputs), a transposed
        data input, a batch-norm or bias with no linear layer to fold into.
    """
    from ._chain_reader import read_layer_chain

    proto = getattr(source, "proto", None)
    if isinstance(proto, onnx.ModelProto):
        model, label, _ = load_onnx(proto)
        label = getattr(source, "label", label)
    else:
        model, label, _ = load_onnx(source)
    layout = layout if layout is not None else getattr(source, "layout", None)
    if layout is not None and layout not in ("NHWC", "NCHW", "flat", "NHW", "graph"):
        raise ConfigError(
            f"layout: expected NHWC, NCHW, flat or 'graph' (the graph's own coordinates), "
            f"got {layout!r}"
        )
    try:
        return read_layer_chain(model, label, layout)
    except RefinvError:
        raise
    except Exception as exc:  # a malformed graph the walk did not anticipate
        raise UnsupportedGraphError(
            f"{label}: cannot read the layer chain: {type(exc).__name__}: {exc}"
        ) from exc
