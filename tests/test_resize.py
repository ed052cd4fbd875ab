"""Nearest-neighbour Resize: the linear operator (adjoint identity, norm, onnxruntime) and
the chain reader reading it in a convolutional decoder (the Bregman conv path)."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest
from _graphs import graph_model as _model
from _graphs import ort_run as _ort
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper as oh

from refinv.errors import ShapeError, UnsupportedGraphError
from refinv.onnx.graph import read_chain
from refinv.operators import NearestUpsample2d
from refinv.operators.linear import operator_norm


@settings(max_examples=30, deadline=None)
@given(
    xp=st.sampled_from([np, array_api_strict]),
    dtype=st.sampled_from(["float32", "float64"]),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
    factors=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    seed=st.integers(0, 2**31 - 1),
)
def test_nearest_upsample_adjoint_identity(xp, dtype, shape, factors, seed):
    """<A u, v> = <u, A^T v> per batch, in the namespace and dtype of the input."""
    rng = np.random.default_rng(seed)
    op = NearestUpsample2d(shape, factors)
    u = xp.asarray(rng.standard_normal((2, *shape)).astype(dtype))
    v = xp.asarray(rng.standard_normal((2, *op.out_shape)).astype(dtype))
    au, atv = op.forward(u), op.adjoint(v)
    assert type(au) is type(u) and au.dtype == u.dtype and tuple(atv.shape) == (2, *shape)
    lhs = np.sum(np.asarray(au, dtype=np.float64) * np.asarray(v, dtype=np.float64))
    rhs = np.sum(np.asarray(u, dtype=np.float64) * np.asarray(atv, dtype=np.float64))
    tol = (1e-4 if dtype == "float32" else 1e-11) * max(1.0, abs(lhs))
    assert abs(lhs - rhs) <= tol


def test_nearest_upsample_norm_and_repeat():
    """Each pixel repeated fH x fW times (np.repeat); A^T A = fH fW I, ||A|| = sqrt(fH fW)."""
    rng = np.random.default_rng(0)
    op = NearestUpsample2d((2, 3, 4), (2, 3))
    x = rng.standard_normal((1, 2, 3, 4))
    np.testing.assert_array_equal(op.forward(x), np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))
    np.testing.assert_allclose(op.adjoint(op.forward(x)), 6 * x)
    assert operator_norm(op) == pytest.approx(np.sqrt(6), rel=1e-6)
    with pytest.raises(ShapeError, match="factors"):
        NearestUpsample2d((2, 3, 4), (0, 2))
    with pytest.raises(ShapeError, match=r"expected shape \(batch, 2, 3, 4\)"):
        op.forward(np.zeros((1, 2, 4, 3)))


def _resize_node(x, y, use_sizes, **attrs):
    ins = [x, "roi", "", "sizes"] if use_sizes else [x, "roi", "scales"]
    return oh.make_node("Resize", ins, [y], name="up", mode="nearest", **attrs)


MODES = [
    ("asymmetric", "floor", 2),  # PyTorch nn.Upsample(mode="nearest")
    ("asymmetric", "floor", 3),
    ("half_pixel", "round_prefer_floor", 2),  # the ONNX defaults
    ("half_pixel", "round_prefer_ceil", 3),
    ("pytorch_half_pixel", "round_prefer_floor", 2),
    ("tf_half_pixel_for_nn", "floor", 2),
    ("asymmetric", "round_prefer_floor", 2),
]


@pytest.mark.parametrize("use_sizes", [False, True])
@pytest.mark.parametrize(("ctm", "nm", "f"), MODES)
def test_resize_operator_matches_onnxruntime(ctm, nm, f, use_sizes):
    rng = np.random.default_rng(1)
    c, h, w = 2, 3, 4
    inits = {
        "roi": np.zeros(0, np.float32),
        "scales": np.asarray([1, 1, f, f], np.float32),
        "sizes": np.asarray([3, c, f * h, f * w], np.int64),
    }
    node = _resize_node("x", "y", use_sizes, coordinate_transformation_mode=ctm, nearest_mode=nm)
    m = _model([node], inits, [c, h, w], [c, f * h, f * w])
    x = rng.standard_normal((3, c, h, w)).astype(np.float32)
    np.testing.assert_array_equal(NearestUpsample2d((c, h, w), (f, f)).forward(x), _ort(m, x))


@pytest.mark.parametrize(
    ("attrs", "match"),
    [
        ({"coordinate_transformation_mode": "align_corners"}, "align_corners"),
        (
            {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "round_prefer_floor"},
            "round_prefer_floor",
        ),
        ({"mode": "linear"}, "linear"),
    ],
)
def test_resize_that_does_not_repeat_pixels_is_refused_naming_it(attrs, match):
    """align_corners and round-to-nearest at factor 3 read other pixels than o // 3; a
    linear Resize is not a pixel repetition: refused, naming the node."""
    rng = np.random.default_rng(2)
    inits = {
        "W": (rng.standard_normal((2, 1, 3, 3)) / 3).astype(np.float32),
        "roi": np.zeros(0, np.float32),
        "scales": np.asarray([1, 1, 3, 3], np.float32),
    }
    attrs = {"mode": "nearest", **attrs}
    nodes = [
        oh.make_node("Conv", ["x", "W"], ["a"], pads=[1, 1, 1, 1]),
        oh.make_node("Resize", ["a", "roi", "scales"], ["y"], name="up3", **attrs),
    ]
    m = _model(nodes, inits, [1, 4, 4], [2, 12, 12])
    with pytest.raises(UnsupportedGraphError, match=rf"up3 \(op Resize\).*{match}"):
        read_chain(m)


def _decoder(rng, scaled_before):
    """A conv decoder: Conv -> ReLU -> (Mul per channel) -> Resize x2 -> Conv -> ReLU ->
    Resize x2 -> Conv, as PyTorch exports Upsample(scale_factor=2) at opset 13."""
    inits = {
        "W0": (rng.standard_normal((4, 2, 3, 3)) / 4).astype(np.float32),
        "b0": rng.standard_normal(4).astype(np.float32),
        "W1": (rng.standard_normal((3, 4, 3, 3)) / 6).astype(np.float32),
        "b1": rng.standard_normal(3).astype(np.float32),
        "W2": (rng.standard_normal((1, 3, 3, 3)) / 5).astype(np.float32),
        "roi": np.zeros(0, np.float32),
        "scales": np.asarray([1, 1, 2, 2], np.float32),
        "s": rng.uniform(0.5, 2, (4, 1, 1)).astype(np.float32),
    }
    up = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    a = "r0s" if scaled_before else "r0"
    nodes = [
        oh.make_node("Conv", ["x", "W0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c0"], ["r0"]),
        oh.make_node("Mul", ["r0", "s"], ["r0s"]),
        oh.make_node("Resize", [a, "roi", "scales"], ["u0"], mode="nearest", **up),
        oh.make_node("Conv", ["u0", "W1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c1"], ["r1"]),
        oh.make_node("Resize", ["r1", "roi", "scales"], ["u1"], mode="nearest", **up),
        oh.make_node("Conv", ["u1", "W2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    if not scaled_before:
        nodes.pop(2)
    return _model(nodes, inits, [2, 3, 3], [1, 12, 12], opset=13)


@pytest.mark.parametrize("scaled_before", [False, True])
def test_conv_decoder_with_resize_reads_as_a_chain(scaled_before):
    rng = np.random.default_rng(3)
    m = _decoder(rng, scaled_before)
    chain = read_chain(m)
    kinds = ["conv", "resize", "conv", "resize", "conv"]
    if scaled_before:  # a scale the resize layer (no weight) cannot carry: a diagonal layer
        kinds.insert(2, "dense")
    assert [lay.kind for lay in chain] == kinds
    assert chain.layers[1].strides == (2, 2) and chain.layers[1].weight.size == 0
    x = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(chain.forward(x.astype(np.float64)), _ort(m, x), atol=1e-5)


def test_bregman_accepts_a_chain_with_resize():
    """The lifted Bregman inversion builds its layers from a chain with Resize layers and
    recovers the input of a (non-expansive, injective) upsampling encoder."""
    from refinv.solvers.bregman import invert_chain, layers_from_chain

    rng = np.random.default_rng(4)
    m = _decoder(rng, True)
    chain = read_chain(m)
    x = rng.standard_normal((1, 2, 3, 3))
    layers = layers_from_chain(chain, like=x)
    assert type(layers[1].A).__name__ == "NearestUpsample2d"
    # a one-layer chain: Resize alone (identity activation) is inverted by TV-PDHG
    inits = {"roi": np.zeros(0, np.float32), "scales": np.asarray([1, 1, 2, 2], np.float32)}
    up = _model(
        [
            _resize_node(
                "x", "y", False, coordinate_transformation_mode="asymmetric", nearest_mode="floor"
            )
        ],
        inits,
        [1, 4, 4],
        [1, 8, 8],
    )
    ch = read_chain(up)
    img = np.zeros((1, 1, 4, 4))
    img[0, 0, 1:3, 1:3] = 1.0
    res = invert_chain(ch.forward(img), ch, alpha=1e-4, max_iter=600, tol=1e-8)
    np.testing.assert_allclose(np.asarray(res.x), img, atol=1e-2)
