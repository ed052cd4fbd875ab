"""Chain folding and Resize through the public ``read_chain``, each against onnxruntime on
random inputs, on the inputs where a slip shows: Tile with a different repeat count per axis,
a permutation pushed into a dense layer WITH a bias, a per-channel scale in front of a
GROUPED convolution with several output channels per group, ONNX's ``round_prefer_floor``
exactly at a half (asymmetric coordinates, factor 2), and a per-pixel scale in front of a
Resize with DIFFERENT height and width factors."""

from __future__ import annotations

import numpy as np
import pytest
from _graphs import graph_model as _model
from _graphs import ort_run as _ort
from onnx import helper as oh

from refinv.errors import UnsupportedGraphError
from refinv.onnx import read_chain

i64 = lambda v: np.asarray(v, np.int64)  # noqa: E731


def _f32(a):
    return np.asarray(a, dtype=np.float32)


def _same(m, in_shape, n=3, seed=0):
    """read_chain(m) computes what onnxruntime computes; returns the chain."""
    x = _f32(np.random.default_rng(seed).standard_normal((n, *in_shape)))
    chain = read_chain(m)
    want = _ort(m, x)
    got = chain.forward(x.astype(np.float64))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return chain


# ------------------------------------------------------------------ Tile
@pytest.mark.parametrize("after", ["identity", "dense"])
@pytest.mark.parametrize("reps", [[1, 2, 3], [1, 3, 1], [1, 1, 2]])
def test_tile_with_a_different_repeat_per_axis(reps, after):
    """(N, 2, 3) tiled to (N, 2 r1, 3 r2), flattened, then a dense layer. After an Identity
    the copies sum into the dense layer's columns; after a dense layer (Gemm with a bias)
    they replicate its rows."""
    rng = np.random.default_rng(1)
    k = 6 * reps[1] * reps[2]
    inits = {
        "reps": i64(reps),
        "s": i64([-1, 2, 3]),
        "W0": _f32(rng.standard_normal((6, 6)) / 2),
        "b0": _f32(rng.standard_normal(6)),
        "W": _f32(rng.standard_normal((k, 4)) / np.sqrt(k)),
    }
    first = (
        oh.make_node("Identity", ["x"], ["a"])
        if after == "identity"
        else oh.make_node("Gemm", ["x", "W0", "b0"], ["a"], transB=1)
    )
    nodes = [
        first,
        oh.make_node("Reshape", ["a", "s"], ["r"]),
        oh.make_node("Tile", ["r", "reps"], ["t"], name="tile"),
        oh.make_node("Flatten", ["t"], ["f"], axis=1),
        oh.make_node("MatMul", ["f", "W"], ["y"]),
    ]
    chain = _same(_model(nodes, inits, [6], [4]), (6,))
    src = np.tile(np.arange(6).reshape(2, 3), reps[1:]).reshape(-1)
    if after == "identity":  # one dense layer: each value weighted by its copies' rows of W
        cols = np.zeros((4, 6))
        np.add.at(cols, (slice(None), src), inits["W"].T.astype(np.float64))
        (lay,) = chain.layers
        np.testing.assert_allclose(lay.weight, cols, rtol=1e-6)
    else:  # the Gemm's rows (and bias) replicated as the Tile replicates its outputs
        np.testing.assert_allclose(chain.layers[0].weight, inits["W0"][src], rtol=1e-7)
        np.testing.assert_allclose(chain.layers[0].bias, inits["b0"][src], rtol=1e-7)


# ------------------------------------------------------------------ a gather into a dense layer
@pytest.mark.parametrize("act_before", [False, True])
def test_permutation_after_a_dense_layer_permutes_its_bias(act_before):
    """Gemm (with a bias) -> [Relu] -> Reshape (3, 2, 2) -> Transpose (channels last) ->
    [Relu] -> Flatten: the permutation is pushed into the dense layer's rows, and its bias
    must move with them."""
    rng = np.random.default_rng(2)
    inits = {
        "W": _f32(rng.standard_normal((12, 5)) / 3),
        "b": _f32(rng.uniform(-2, 2, 12)),
        "s3": i64([-1, 3, 2, 2]),
        "s1": i64([-1, 12]),
    }
    nodes = [oh.make_node("Gemm", ["x", "W", "b"], ["g"], transB=1)]
    a = "g"
    if act_before:
        nodes.append(oh.make_node("Relu", ["g"], ["ga"]))
        a = "ga"
    nodes += [
        oh.make_node("Reshape", [a, "s3"], ["r"]),
        oh.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
    ]
    b = "t"
    if not act_before:
        nodes.append(oh.make_node("Relu", ["t"], ["ta"]))
        b = "ta"
    nodes.append(oh.make_node("Reshape", [b, "s1"], ["y"]))
    chain = _same(_model(nodes, inits, [5], [12]), (5,))
    (lay,) = chain.layers
    perm = np.arange(12).reshape(3, 2, 2).transpose(1, 2, 0).reshape(-1)
    np.testing.assert_allclose(lay.bias, inits["b"][perm], rtol=1e-7)
    np.testing.assert_allclose(lay.weight, inits["W"][perm], rtol=1e-7)


# ------------------------------------------------------------------ grouped convolution
@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("group, m_out", [(2, 4), (2, 6), (3, 6)])
def test_per_channel_scale_before_a_grouped_conv(group, m_out, shift):
    """x * s (+ c) per input channel, then Conv with ``group`` groups and several output
    channels per group: output channel o belongs to group o // (M / group) (blocked)."""
    rng = np.random.default_rng(3)
    c_in = 2 * group
    inits = {
        "s": _f32(rng.uniform(0.5, 3.0, (c_in, 1, 1))),
        "c": _f32(rng.uniform(-1, 1, (c_in, 1, 1))),
        "W": _f32(rng.standard_normal((m_out, c_in // group, 3, 3)) / 3),
        "b": _f32(rng.standard_normal(m_out)),
    }
    nodes = [oh.make_node("Mul", ["x", "s"], ["a"])]
    a = "a"
    if shift:
        nodes.append(oh.make_node("Add", ["a", "c"], ["ac"]))
        a = "ac"
    nodes.append(oh.make_node("Conv", [a, "W", "b"], ["y"], group=group))  # no padding
    chain = _same(_model(nodes, inits, [c_in, 5, 5], [m_out, 3, 3]), (c_in, 5, 5))
    if not shift:  # the scale is absorbed into the weight: no diagonal layer left
        assert [lay.kind for lay in chain] == ["conv"]


# ------------------------------------------------------------------ Resize rounding
def _resize_model(ctm, nm, scales, in_shape, pre=None):
    c, h, w = in_shape
    inits = {"roi": np.zeros(0, np.float32), "scales": _f32([1, 1, *scales])}
    nodes, a = [], "x"
    if pre is not None:
        inits["s"] = pre
        nodes.append(oh.make_node("Mul", ["x", "s"], ["xs"]))
        a = "xs"
    nodes.append(
        oh.make_node(
            "Resize",
            [a, "roi", "scales"],
            ["y"],
            name="up",
            mode="nearest",
            coordinate_transformation_mode=ctm,
            nearest_mode=nm,
        )  # fmt: skip
    )
    out = [c, int(h * scales[0]), int(w * scales[1])]
    return _model(nodes, inits, list(in_shape), out)


def test_round_prefer_floor_at_a_half_repeats_pixels():
    """Asymmetric coordinates at factor 2: output o reads x = o / 2; at the halves (o odd)
    ``round_prefer_floor`` goes down, so o reads o // 2: a pixel repetition."""
    m = _resize_model("asymmetric", "round_prefer_floor", (2, 2), (2, 3, 4))
    x = _f32(np.arange(24).reshape(1, 2, 3, 4))
    np.testing.assert_array_equal(_ort(m, x), x.repeat(2, axis=2).repeat(2, axis=3))
    chain = _same(m, (2, 3, 4))
    assert [lay.kind for lay in chain] == ["resize"] and chain.layers[0].strides == (2, 2)


def test_round_prefer_ceil_at_a_half_is_refused():
    """The same at ``round_prefer_ceil``: o = 1 reads pixel 1, not 0 (onnxruntime agrees):
    not a pixel repetition, refused naming the node."""
    m = _resize_model("asymmetric", "round_prefer_ceil", (2, 2), (1, 2, 2))
    x = _f32([[[[1, 2], [3, 4]]]])
    assert _ort(m, x)[0, 0, 0].tolist() == [1, 2, 2, 2]
    with pytest.raises(UnsupportedGraphError, match=r"up \(op Resize\).*round_prefer_ceil"):
        read_chain(m)


# ------------------------------------------------------------------ a pending scale, H != W
@pytest.mark.parametrize("scales", [(2, 3), (3, 1), (1, 2)])
def test_per_pixel_scale_before_a_non_square_resize(scales):
    """A per-pixel Mul in front of a Resize by (fH, fW): the scale is upsampled with the
    image, height by fH and width by fW."""
    rng = np.random.default_rng(4)
    s = _f32(rng.uniform(0.5, 2.0, (1, 2, 3)))
    m = _resize_model("half_pixel", "round_prefer_floor", scales, (1, 2, 3), pre=s)
    _same(m, (1, 2, 3))
