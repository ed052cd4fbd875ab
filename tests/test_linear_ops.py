"""Linear operators: adjointness, ONNX Conv/ConvTranspose semantics, operator norms."""

from __future__ import annotations

import array_api_strict
import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from refinv.errors import ShapeError, UnsupportedGraphError
from refinv.onnx.graph import Activation, Layer
from refinv.operators.linear import (
    Conv2d,
    ConvTranspose2d,
    Dense,
    Gradient2d,
    from_layer,
    operator_norm,
)

BACKENDS = [np, array_api_strict]
DTYPES = ["float32", "float64"]
SETTINGS = settings(max_examples=25, deadline=None)


def _to(xp, a, dtype):
    return xp.asarray(np.asarray(a, dtype=dtype))


def _check_adjoint(xp, op, dtype, rng):
    u = _to(xp, rng.standard_normal((2, *op.in_shape)), dtype)
    v = _to(xp, rng.standard_normal((2, *op.out_shape)), dtype)
    au = op.forward(u)
    atv = op.adjoint(v)
    assert tuple(au.shape) == (2, *op.out_shape)
    assert tuple(atv.shape) == (2, *op.in_shape)
    assert type(au) is type(u) and au.dtype == u.dtype
    lhs = np.sum(np.asarray(au, dtype=np.float64) * np.asarray(v, dtype=np.float64))
    rhs = np.sum(np.asarray(u, dtype=np.float64) * np.asarray(atv, dtype=np.float64))
    scale = np.linalg.norm(np.asarray(au, dtype=np.float64)) * np.linalg.norm(
        np.asarray(v, dtype=np.float64)
    )
    tol = (1e-5 if dtype == "float32" else 1e-12) * max(scale, 1.0)
    assert abs(lhs - rhs) <= tol, (lhs, rhs)


conv_cases = st.fixed_dictionaries(
    {
        "g": st.sampled_from([1, 2]),
        "cg": st.integers(1, 2),
        "mg": st.integers(1, 2),
        "kh": st.integers(1, 4),
        "kw": st.integers(1, 3),
        "h": st.integers(5, 9),
        "w": st.integers(4, 8),
        "s": st.tuples(st.integers(1, 3), st.integers(1, 2)),
        "d": st.tuples(st.integers(1, 2), st.integers(1, 2)),
        "pads": st.tuples(*[st.integers(0, 2)] * 4),
        "seed": st.integers(0, 2**16),
    }
)


@pytest.mark.parametrize("xp", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(m=st.integers(1, 6), n=st.integers(1, 7), seed=st.integers(0, 2**16), image=st.booleans())
def test_dense_adjoint(xp, dtype, m, n, seed, image):
    rng = np.random.default_rng(seed)
    W = _to(xp, rng.standard_normal((m, 2 * n)), dtype)
    op = Dense(W, in_shape=(1, 2, n)) if image else Dense(W)
    _check_adjoint(xp, op, dtype, rng)


@pytest.mark.parametrize("xp", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(c=conv_cases)
def test_conv_adjoint(xp, dtype, c):
    rng = np.random.default_rng(c["seed"])
    w = _to(xp, rng.standard_normal((c["g"] * c["mg"], c["cg"], c["kh"], c["kw"])), dtype)
    try:
        op = Conv2d(
            w,
            (c["g"] * c["cg"], c["h"], c["w"]),
            strides=c["s"],
            pads=c["pads"],
            dilations=c["d"],
            group=c["g"],
        )
    except ShapeError:  # kernel larger than the padded input
        return
    _check_adjoint(xp, op, dtype, rng)


@pytest.mark.parametrize("xp", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(c=conv_cases, op_pad=st.integers(0, 2))
def test_conv_transpose_adjoint(xp, dtype, c, op_pad):
    rng = np.random.default_rng(c["seed"])
    w = _to(xp, rng.standard_normal((c["g"] * c["cg"], c["mg"], c["kh"], c["kw"])), dtype)
    opad = (min(op_pad, c["s"][0] - 1), min(op_pad, c["s"][1] - 1))
    try:
        op = ConvTranspose2d(
            w,
            (c["g"] * c["cg"], c["h"], c["w"]),
            strides=c["s"],
            pads=c["pads"],
            dilations=c["d"],
            group=c["g"],
            output_padding=opad,
        )
    except (ShapeError, UnsupportedGraphError):  # pads larger than the output
        return
    _check_adjoint(xp, op, dtype, rng)


@pytest.mark.parametrize("xp", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 7)),
    seed=st.integers(0, 2**16),
)
def test_gradient_adjoint_and_div(xp, dtype, shape, seed):
    rng = np.random.default_rng(seed)
    op = Gradient2d(shape)
    _check_adjoint(xp, op, dtype, rng)
    p = _to(xp, rng.standard_normal((2, *op.out_shape)), dtype)
    np.testing.assert_allclose(np.asarray(op.div(p)), -np.asarray(op.adjoint(p)))


def test_gradient_forward_differences_and_boundary():
    x = np.arange(12.0).reshape(1, 3, 4) ** 2
    g = Gradient2d((3, 4)).forward(x)
    np.testing.assert_array_equal(g[0, :2, :, 0], x[0, 1:] - x[0, :-1])
    np.testing.assert_array_equal(g[0, :, :3, 1], x[0, :, 1:] - x[0, :, :-1])
    assert np.all(g[0, 2, :, 0] == 0) and np.all(g[0, :, 3, 1] == 0)


def _onnx_session(op_type, x_shape, W, **attrs):
    node = helper.make_node(op_type, ["x", "W"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(W.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@settings(max_examples=15, deadline=None)
@given(c=conv_cases, transpose=st.booleans(), op_pad=st.integers(0, 1))
def test_conv_matches_onnxruntime(c, transpose, op_pad):
    rng = np.random.default_rng(c["seed"])
    cin = c["g"] * c["cg"]
    x = rng.standard_normal((2, cin, c["h"], c["w"])).astype(np.float32)
    attrs = dict(strides=list(c["s"]), pads=list(c["pads"]), dilations=list(c["d"]), group=c["g"])
    if transpose:
        W = rng.standard_normal((cin, c["mg"], c["kh"], c["kw"])).astype(np.float32)
        opad = [min(op_pad, c["s"][0] - 1), min(op_pad, c["s"][1] - 1)]
        layer = Layer(
            "conv_transpose",
            W,
            None,
            Activation("identity"),
            (cin, c["h"], c["w"]),
            (),
            strides=c["s"],
            pads=c["pads"],
            dilations=c["d"],
            group=c["g"],
            output_padding=tuple(opad),
        )
        attrs["output_padding"] = opad
        op_type = "ConvTranspose"
    else:
        W = rng.standard_normal((c["g"] * c["mg"], c["cg"], c["kh"], c["kw"])).astype(np.float32)
        layer = Layer(
            "conv",
            W,
            None,
            Activation("identity"),
            (cin, c["h"], c["w"]),
            (),
            strides=c["s"],
            pads=c["pads"],
            dilations=c["d"],
            group=c["g"],
        )
        op_type = "Conv"
    try:
        op = from_layer(layer)
    except (ShapeError, UnsupportedGraphError):
        return
    ref = _onnx_session(op_type, x.shape, W, **attrs).run(None, {"x": x})[0]
    out = op.forward(x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_conv_refuses_empty_outputs_and_inputs():
    """Found by test_conv_matches_onnxruntime: a transposed conv whose pads remove its whole
    output (onnxruntime: "Computed output dimension is <= 0") must be refused, not built."""
    W = np.ones((1, 1, 1, 1))
    with pytest.raises(ShapeError, match="positive output size"):
        ConvTranspose2d(W, (1, 5, 4), pads=(0, 2, 0, 2))
    with pytest.raises(ShapeError, match="positive sizes"):
        Conv2d(W, (1, 5, 0), pads=(0, 2, 0, 2))


def test_from_layer_dense_and_errors():
    W = np.arange(12.0).reshape(3, 4)
    op = from_layer(Layer("dense", W, None, Activation("relu"), (1, 2, 2), (3,)))
    np.testing.assert_allclose(op.forward(np.ones((1, 1, 2, 2))), W.sum(axis=1)[None])
    with pytest.raises(UnsupportedGraphError, match="kind 'pool'"):
        from_layer(Layer("pool", W, None, Activation(), (4,), (3,)))
    with pytest.raises(ShapeError, match="declares"):
        from_layer(Layer("conv", np.ones((2, 1, 3, 3)), None, Activation(), (1, 5, 5), (2, 5, 5)))


@pytest.mark.parametrize("xp", BACKENDS)
def test_operator_norm_power_iteration(xp):
    rng = np.random.default_rng(3)
    W = rng.standard_normal((20, 30))
    est = operator_norm(Dense(xp.asarray(W)), max_iter=2000, tol=1e-12)
    assert est == pytest.approx(np.linalg.norm(W, 2), rel=1e-6)
    # ||grad||^2 <= 8 for the forward-difference gradient
    g = operator_norm(Gradient2d((16, 16)), max_iter=500)
    assert 7.5 < g**2 <= 8.0
    # the same seed gives the same estimate
    assert operator_norm(Dense(W), max_iter=5, rng=1) == operator_norm(Dense(W), max_iter=5, rng=1)


def test_chain_read_from_onnx_reproduces_onnxruntime():
    """Conv(+bias, stride 2, pad 1)-Relu-ConvTranspose-Relu-Flatten-Gemm through read_chain."""
    from refinv.onnx.graph import read_chain
    from refinv.solvers.bregman import layers_from_chain

    rng = np.random.default_rng(11)
    w1 = rng.standard_normal((4, 1, 4, 4)).astype(np.float32) / 4
    b1 = rng.standard_normal(4).astype(np.float32) / 10
    w2 = rng.standard_normal((4, 2, 3, 3)).astype(np.float32) / 4
    b2 = rng.standard_normal(2).astype(np.float32) / 10
    w3 = rng.standard_normal((5, 2 * 9 * 9)).astype(np.float32) / 10
    b3 = np.zeros(5, dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("ConvTranspose", ["r1", "w2", "b2"], ["c2"], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"), (b3, "b3"))
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0]
    chain = read_chain(model)
    assert [lay.kind for lay in chain.layers] == ["conv", "conv_transpose", "dense"]
    h = x.astype(np.float64)
    for lay in layers_from_chain(chain, like=h):
        h = lay.act(lay.affine(np.reshape(h, (h.shape[0], *lay.A.in_shape))))
    np.testing.assert_allclose(h, ref, rtol=1e-4, atol=1e-5)
