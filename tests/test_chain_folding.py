"""The chain reader folds the linear and no-op nodes that real exporters write (a no-op
Cast, Max(x, 0), Mul/Add/Sub/Div/Neg by constants, Identity, Gemm with transB=0 and
alpha/beta, layout Transpose/Reshape pairs, nearest Resize): every folding is checked
against onnxruntime on random inputs; what it cannot fold is refused naming the node."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from _graphs import graph_model as _model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx import helper as oh

from refinv.errors import UnsupportedGraphError
from refinv.onnx.graph import read_chain


def _f32(a):
    return np.asarray(a, dtype=np.float32)


def _check(m, in_shape, seed=0, n=4):
    """The chain equals onnxruntime on random inputs; returns the chain."""
    rng = np.random.default_rng(seed)
    x = _f32(rng.standard_normal((n, *in_shape)))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = s.run(None, {"x": x})[0]
    chain = read_chain(m)
    got = chain.forward(x.astype(np.float64))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    return chain


def _dense(rng, o, i):
    return _f32(rng.standard_normal((o, i)) / np.sqrt(i))


def test_cast_to_own_dtype_and_gemm_transb0_alpha_beta():
    """skl2onnx: Cast(float) then Gemm with transB=0 (weight (in, out)), alpha, beta."""
    rng = np.random.default_rng(1)
    w0, w1 = _dense(rng, 6, 5).T.copy(), _dense(rng, 3, 6).T.copy()
    nodes = [
        oh.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT, name="cast_in"),
        oh.make_node("Gemm", ["c", "W0", "b0"], ["g0"], alpha=1.7, beta=0.3),
        oh.make_node("Relu", ["g0"], ["r0"]),
        oh.make_node("Gemm", ["r0", "W1", "b1"], ["g1"], transB=0, alpha=0.5, beta=2.0),
        oh.make_node("Identity", ["g1"], ["y"]),
    ]
    inits = {"W0": w0, "b0": _f32(rng.standard_normal(6)), "W1": w1, "b1": _f32([0.1, -0.2, 0.3])}
    chain = _check(_model(nodes, inits, [5], [3]), (5,))
    assert len(chain) == 2 and chain.layers[0].activation.name == "relu"


def test_cast_to_another_dtype_is_refused_naming_the_node():
    rng = np.random.default_rng(2)
    nodes = [
        oh.make_node("Gemm", ["x", "W"], ["g"], transB=1),
        oh.make_node("Cast", ["g"], ["c"], to=TensorProto.DOUBLE, name="to_double"),
        oh.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT),
    ]
    m = _model(nodes, {"W": _dense(rng, 3, 4)}, [4], [3])
    with pytest.raises(UnsupportedGraphError, match=r"to_double \(op Cast\).*DOUBLE"):
        read_chain(m)


@pytest.mark.parametrize("zero_first", [False, True])
@pytest.mark.parametrize("c0", [0.0, 0.25])
def test_max_with_a_scalar_is_relu_or_clip(zero_first, c0):
    """jax2onnx writes ReLU as Max(x, 0) (the constant on either side); Max(x, c) is a clip."""
    rng = np.random.default_rng(3)
    ins = ["z", "g"] if zero_first else ["g", "z"]
    nodes = [
        oh.make_node("Gemm", ["x", "W0"], ["g"], transB=1),
        oh.make_node("Max", ins, ["h"], name="jax_relu"),
        oh.make_node("Gemm", ["h", "W1"], ["g1"], transB=1),
        oh.make_node("Min", ["g1", "one"], ["y"]),
    ]
    inits = {"W0": _dense(rng, 8, 4), "W1": _dense(rng, 3, 8), "z": _f32(c0), "one": _f32(0.5)}
    chain = _check(_model(nodes, inits, [4], [3]), (4,))
    assert chain.layers[0].activation.name == ("relu" if c0 == 0 else "clip")
    assert chain.layers[1].activation.name == "clip"
    assert chain.layers[1].activation.slope == (-np.inf, 0.5)


def test_max_with_a_tensor_is_refused_naming_the_node():
    rng = np.random.default_rng(4)
    nodes = [
        oh.make_node("Gemm", ["x", "W0"], ["g"], transB=1),
        oh.make_node("Max", ["g", "v"], ["y"], name="vmax"),
    ]
    m = _model(nodes, {"W0": _dense(rng, 3, 4), "v": _f32([0, 1, 2])}, [4], [3])
    with pytest.raises(UnsupportedGraphError, match=r"vmax \(op Max\)"):
        read_chain(m)


ELEMENTWISE = ["mul_s", "mul_v", "add_v", "sub_v", "rsub_v", "div_v", "neg"]


def _elementwise(kind, cur, out, rng, n, inits, tag):
    v = _f32(rng.uniform(0.5, 1.5, n) * rng.choice([-1, 1], n))
    name = f"{tag}_{kind}"
    if kind == "neg":
        return oh.make_node("Neg", [cur], [out], name=name)
    inits[name] = _f32(1.3) if kind == "mul_s" else v
    op = {"mul": "Mul", "add": "Add", "sub": "Sub", "rsub": "Sub", "div": "Div"}[kind.split("_")[0]]
    ins = [name, cur] if kind == "rsub_v" else [cur, name]
    return oh.make_node(op, ins, [out], name=name)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    where=st.lists(
        st.tuples(
            st.sampled_from(["input", "post", "pre", "output"]), st.sampled_from(ELEMENTWISE)
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_elementwise_constants_fold_anywhere_in_a_dense_chain(seed, where):
    """Mul/Add/Sub/Div/Neg by constants on the input (normalization), after a linear layer
    (a BatchNorm or scale written as Mul/Add), after an activation and after the last
    activation: the chain equals onnxruntime."""
    rng = np.random.default_rng(seed)
    widths = [5, 7, 4]
    inits, nodes, cur, k = {}, [], "x", 0

    def insert(at, n):
        nonlocal cur, k
        for w, kind in where:
            if w == at:
                nodes.append(_elementwise(kind, cur, f"e{k}", rng, n, inits, f"{at}{k}"))
                cur = f"e{k}"
                k += 1

    insert("input", widths[0])
    for i in range(2):
        inits[f"W{i}"] = _dense(rng, widths[i + 1], widths[i])
        nodes.append(oh.make_node("Gemm", [cur, f"W{i}"], [f"g{i}"], transB=1))
        cur = f"g{i}"
        insert("post", widths[i + 1])
        nodes.append(oh.make_node("Tanh", [cur], [f"t{i}"]))
        cur = f"t{i}"
        if i == 0:
            insert("pre", widths[1])
    insert("output", widths[-1])
    nodes.append(oh.make_node("Identity", [cur], ["y"]))
    chain = _check(_model(nodes, inits, [widths[0]], [widths[-1]]), (5,), seed=seed % 1000)
    # scales on the input, after a linear layer or before one are absorbed; only a scale
    # after the LAST activation needs a diagonal layer of its own
    assert len(chain) == 2 + any(w == "output" for w, _ in where)


def _conv_w(rng, m, c, k=3):
    return _f32(rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k))


@pytest.mark.parametrize("pads", [0, 1])
def test_per_channel_mul_add_around_convolutions(pads):
    """Conv -> Mul/Add per channel (a BatchNorm exported as scale and shift) -> ReLU ->
    Mul/Add per channel -> Conv. A shift before a padded conv is not a per-channel bias of
    the conv (the border sees zeros): it stays a diagonal layer, still equal."""
    rng = np.random.default_rng(5)
    p = [pads] * 4
    inits = {
        "W0": _conv_w(rng, 4, 2),
        "s0": _f32(rng.uniform(0.5, 1.5, (4, 1, 1))),
        "c0": _f32(rng.standard_normal((1, 4, 1, 1))),
        "s1": _f32(rng.uniform(0.5, 1.5, (4, 1, 1))),
        "c1": _f32(rng.standard_normal((4, 1, 1))),
        "W1": _conv_w(rng, 3, 4),
    }
    nodes = [
        oh.make_node("Conv", ["x", "W0"], ["a"], pads=p),
        oh.make_node("Mul", ["a", "s0"], ["b"]),
        oh.make_node("Add", ["c0", "b"], ["c"]),
        oh.make_node("Relu", ["c"], ["r"]),
        oh.make_node("Mul", ["r", "s1"], ["d"]),
        oh.make_node("Sub", ["d", "c1"], ["e"]),
        oh.make_node("Conv", ["e", "W1"], ["y"], pads=p),
    ]
    h = 8 - 4 * (1 - pads)
    chain = _check(_model(nodes, inits, [2, 8, 8], [3, h, h]), (2, 8, 8))
    assert [lay.kind for lay in chain] == (
        ["conv", "conv"] if pads == 0 else ["conv", "dense", "conv"]
    )


def test_keras_style_transpose_flatten_is_absorbed_by_the_next_dense_layer():
    """Conv (NCHW) -> ReLU -> Transpose to NHWC -> Reshape flat -> MatMul: the permutation
    goes into the columns of the dense weight; dense -> ReLU -> Reshape (H, W, C) ->
    Transpose to NCHW -> Conv: into the rows of the dense weight before it."""
    rng = np.random.default_rng(6)
    inits = {
        "W0": _conv_w(rng, 3, 1),
        "Wd": _dense(rng, 10, 3 * 4 * 4).T.copy(),
        "bd": _f32(rng.standard_normal(10)),
        "We": _dense(rng, 2 * 4 * 4, 10).T.copy(),
        "sh_flat": np.asarray([-1, 48], np.int64),
        "sh_img": np.asarray([-1, 4, 4, 2], np.int64),
        "pr": _f32(rng.uniform(0.1, 0.3, (2, 1, 1))),
        "W1": _conv_w(rng, 1, 2),
    }
    nodes = [
        oh.make_node("Conv", ["x", "W0"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
        oh.make_node("Relu", ["a"], ["r"]),
        oh.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
        oh.make_node("Reshape", ["t", "sh_flat"], ["f"]),
        oh.make_node("MatMul", ["f", "Wd"], ["m"]),
        oh.make_node("Add", ["m", "bd"], ["md"]),
        oh.make_node("Relu", ["md"], ["rd"]),
        oh.make_node("MatMul", ["rd", "We"], ["e"]),
        oh.make_node("Reshape", ["e", "sh_img"], ["img"]),
        oh.make_node("Transpose", ["img"], ["nchw"], perm=[0, 3, 1, 2]),
        oh.make_node("PRelu", ["nchw", "pr"], ["p"]),
        oh.make_node("Conv", ["p", "W1"], ["y"], pads=[1, 1, 1, 1]),
    ]
    chain = _check(_model(nodes, inits, [1, 8, 8], [1, 4, 4]), (1, 8, 8))
    assert [lay.kind for lay in chain] == ["conv", "dense", "dense", "conv"]


def test_transpose_pairs_around_elementwise_nodes_cancel():
    """jax2onnx/tf2onnx write NHWC <-> NCHW Transposes around each convolution: a pair
    that cancels (with activations and per-channel constants in between) is a no-op."""
    rng = np.random.default_rng(7)
    inits = {
        "W0": _conv_w(rng, 3, 2),
        "b_nhwc": _f32(rng.standard_normal(3)),  # a per-channel bias in channels-last
        "W1": _conv_w(rng, 2, 3),
    }
    nodes = [
        oh.make_node("Conv", ["x", "W0"], ["a"], pads=[1, 1, 1, 1]),
        oh.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 3, 1], name="to_nhwc"),
        oh.make_node("Add", ["t", "b_nhwc"], ["tb"]),
        oh.make_node("Max", ["tb", "zero"], ["r"]),
        oh.make_node("Transpose", ["r"], ["back"], perm=[0, 3, 1, 2], name="to_nchw"),
        oh.make_node("Conv", ["back", "W1"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits["zero"] = _f32(0.0)
    chain = _check(_model(nodes, inits, [2, 6, 6], [2, 6, 6]), (2, 6, 6))
    assert [lay.kind for lay in chain] == ["conv", "conv"]


def test_transpose_a_convolution_cannot_absorb_is_refused_naming_it():
    """A channels-last input transposed in front of a convolution, or an output left
    transposed after one: refused, naming the Transpose."""
    rng = np.random.default_rng(8)
    nodes = [
        oh.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2], name="nhwc_in"),
        oh.make_node("Conv", ["t", "W0"], ["y"], pads=[1, 1, 1, 1]),
    ]
    m = _model(nodes, {"W0": _conv_w(rng, 2, 3)}, [5, 5, 3], [2, 5, 5])
    # (read in channels-first coordinates, the layout OnnxModel detects, it cancels: see
    # test_channels_last_conv_input_read_from_the_path; in the graph's own it cannot)
    with pytest.raises(UnsupportedGraphError, match=r"nhwc_in \(op Transpose\).*Conv"):
        read_chain(m, layout="graph")
    nodes = [
        oh.make_node("Conv", ["x", "W0"], ["a"], pads=[1, 1, 1, 1]),
        oh.make_node("Transpose", ["a"], ["y"], perm=[0, 2, 3, 1], name="nhwc_out"),
    ]
    m = _model(nodes, {"W0": _conv_w(rng, 2, 3)}, [3, 5, 5], [5, 5, 2])
    with pytest.raises(UnsupportedGraphError, match=r"nhwc_out \(op Transpose\).*end"):
        read_chain(m)
    nodes = [
        oh.make_node("Gemm", ["x", "W"], ["a"], transB=1),
        oh.make_node("Transpose", ["a"], ["y"], perm=[1, 0], name="batch_swap"),
    ]
    m = _model(nodes, {"W": _dense(rng, 3, 3)}, [3], [3])
    with pytest.raises(UnsupportedGraphError, match=r"batch_swap \(op Transpose\).*batch"):
        read_chain(m)


def test_channels_last_conv_input_read_from_the_path():
    """A leading Transpose perm [0, 3, 1, 2] in front of a convolution (what tf2onnx writes):
    read from the graph alone, the chain takes refinv's (N, C, H, W) like OnnxModel, and the
    Transpose cancels."""
    rng = np.random.default_rng(8)
    nodes = [
        oh.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2], name="nhwc_in"),
        oh.make_node("Conv", ["t", "W0"], ["y"], pads=[1, 1, 1, 1]),
    ]
    m = _model(nodes, {"W0": _conv_w(rng, 2, 3)}, [5, 5, 3], [2, 5, 5])
    chain = read_chain(m)
    assert chain.in_shape == (3, 5, 5)
    x = rng.standard_normal((2, 3, 5, 5))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = s.run(None, {"x": _f32(x.transpose(0, 2, 3, 1))})[0]
    np.testing.assert_allclose(chain.forward(x), want, rtol=2e-5, atol=2e-5)


def test_sub_constant_minus_data_is_folded():
    rng = np.random.default_rng(9)
    nodes = [
        oh.make_node("Gemm", ["x", "W"], ["a"], transB=1),
        oh.make_node("Sub", ["c", "a"], ["y"]),
    ]
    m = _model(nodes, {"W": _dense(rng, 4, 3), "c": _f32(rng.standard_normal(4))}, [3], [4])
    (lay,) = _check(m, (3,)).layers
    assert lay.kind == "dense"


def test_expand_replication_becomes_columns_or_a_resize_layer():
    """jnp.repeat exports as Reshape -> Expand -> Reshape: in front of a dense layer the copies
    sum into its columns; in front of a convolution a pixel repetition is a resize layer."""
    rng = np.random.default_rng(10)
    i64 = lambda v: np.asarray(v, np.int64)  # noqa: E731
    inits = {
        "W0": _conv_w(rng, 3, 1),
        "s5": i64([-1, 3, 4, 1, 4]),
        "e5": i64([1, 3, 4, 2, 4]),
        "s4": i64([-1, 3, 8, 4]),
        "s5b": i64([-1, 3, 8, 4, 1]),
        "e5b": i64([1, 3, 8, 4, 2]),
        "s4b": i64([-1, 3, 8, 8]),
        "W1": _conv_w(rng, 2, 3),
        "flat": i64([-1, 128]),
        "rep": i64([-1, 128, 1]),
        "e3": i64([1, 128, 2]),
        "flat2": i64([-1, 256]),
        "Wd": _dense(rng, 5, 256).T.copy(),
    }
    nodes = [
        oh.make_node("Conv", ["x", "W0"], ["a"], pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["a"], ["r"]),
        oh.make_node("Reshape", ["r", "s5"], ["r5"]),  # rows: (3, 4, 1, 4) -> (3, 4, 2, 4)
        oh.make_node("Expand", ["r5", "e5"], ["x5"], name="rep_rows"),
        oh.make_node("Reshape", ["x5", "s4"], ["h2"]),
        oh.make_node("Reshape", ["h2", "s5b"], ["c5"]),  # repeat columns
        oh.make_node("Expand", ["c5", "e5b"], ["y5"], name="rep_cols"),
        oh.make_node("Reshape", ["y5", "s4b"], ["up"]),
        oh.make_node("Conv", ["up", "W1"], ["b1"], pads=[1, 1, 1, 1]),
        oh.make_node("Tanh", ["b1"], ["t"]),
        oh.make_node("Reshape", ["t", "flat"], ["f"]),
        oh.make_node("Reshape", ["f", "rep"], ["f3"]),
        oh.make_node("Expand", ["f3", "e3"], ["fx"], name="dup"),
        oh.make_node("Reshape", ["fx", "flat2"], ["f2"]),
        oh.make_node("MatMul", ["f2", "Wd"], ["y"]),
    ]
    chain = _check(_model(nodes, inits, [1, 4, 4], [5]), (1, 4, 4))
    assert [lay.kind for lay in chain] == ["conv", "resize", "conv", "dense"]
    assert chain.layers[1].strides == (2, 2) and chain.layers[-1].weight.shape == (5, 128)


def test_channels_last_dense_model_read_in_channels_first_coordinates():
    """layout="NHWC": a dense model on (H, W, C) = (4, 4, 3) images, its output reshaped to
    (4, 4, 3), is read as a chain on (C, H, W): the permutations go into the first layer's
    columns and the last layer's rows."""
    rng = np.random.default_rng(11)
    i64 = lambda v: np.asarray(v, np.int64)  # noqa: E731
    inits = {"W0": _dense(rng, 10, 48), "W1": _dense(rng, 48, 10), "img": i64([-1, 4, 4, 3])}
    nodes = [
        oh.make_node("Flatten", ["x"], ["f"]),
        oh.make_node("Gemm", ["f", "W0"], ["g"], transB=1),
        oh.make_node("Relu", ["g"], ["r"]),
        oh.make_node("Gemm", ["r", "W1"], ["h"], transB=1),
        oh.make_node("Reshape", ["h", "img"], ["y"]),
    ]
    m = _model(nodes, inits, [4, 4, 3], [4, 4, 3])
    chain = read_chain(m, layout="NHWC")
    assert chain.in_shape == (3, 4, 4) and chain.out_shape == (3, 4, 4)
    x = rng.standard_normal((2, 3, 4, 4))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = s.run(None, {"x": _f32(x.transpose(0, 2, 3, 1))})[0].transpose(0, 3, 1, 2)
    np.testing.assert_allclose(chain.forward(x), want, rtol=2e-5, atol=2e-5)
    # without a layout: the one OnnxModel detects from the graph (declared (4, 4, 3): NHWC)
    assert read_chain(m).in_shape == (3, 4, 4)
    np.testing.assert_allclose(read_chain(m).forward(x), want, rtol=2e-5, atol=2e-5)
