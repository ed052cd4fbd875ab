"""Weight extraction: ONNX graph -> explicit layer chain, checked against onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from _graphs import graph_model as _model
from _graphs import ort_run as _ort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper as oh

from refinv.errors import UnsupportedGraphError
from refinv.onnx.graph import dense_chain, read_chain

MODELS = Path(__file__).resolve().parents[1] / "models"


def build_mlp(rng, widths, acts, trans_b, bias, bn, matmul_add=False):
    """A random MLP as an ONNX graph: linear (+ BN) + activation per layer."""
    nodes, inits = [], {}
    cur = "x"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        w = (rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32)
        out = f"lin{i}"
        if matmul_add and not trans_b:
            inits[f"W{i}"] = w.T.copy()
            nodes.append(oh.make_node("MatMul", [cur, f"W{i}"], [out + "m"]))
            if bias[i]:
                inits[f"b{i}"] = rng.standard_normal(b).astype(np.float32) * 0.1
                nodes.append(oh.make_node("Add", [out + "m", f"b{i}"], [out]))
            else:
                nodes.append(oh.make_node("Identity", [out + "m"], [out]))
        else:
            inits[f"W{i}"] = w if trans_b else w.T.copy()
            ins = [cur, f"W{i}"]
            if bias[i]:
                inits[f"b{i}"] = rng.standard_normal(b).astype(np.float32) * 0.1
                ins.append(f"b{i}")
            nodes.append(oh.make_node("Gemm", ins, [out], transB=int(trans_b), alpha=1.3, beta=0.7))
        if bn[i]:
            for k, v in {
                "s": rng.uniform(0.5, 1.5, b),
                "B": rng.standard_normal(b) * 0.1,
                "m": rng.standard_normal(b) * 0.1,
                "v": rng.uniform(0.5, 1.5, b),
            }.items():
                inits[f"bn{k}{i}"] = v.astype(np.float32)
            nodes.append(
                oh.make_node(
                    "BatchNormalization",
                    [out, f"bns{i}", f"bnB{i}", f"bnm{i}", f"bnv{i}"],
                    [out + "bn"],
                    epsilon=1e-3,
                )
            )
            out = out + "bn"
        nxt = "y" if i == len(widths) - 2 else f"h{i}"
        act = acts[i]
        if act == "identity":
            nodes.append(oh.make_node("Identity", [out], [nxt]))
        elif act == "leaky_relu":
            nodes.append(oh.make_node("LeakyRelu", [out], [nxt], alpha=0.1))
        elif act == "prelu":
            inits[f"p{i}"] = rng.uniform(0.05, 0.3, b).astype(np.float32)
            nodes.append(oh.make_node("PRelu", [out, f"p{i}"], [nxt]))
        else:
            op = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}[act]
            nodes.append(oh.make_node(op, [out], [nxt]))
        cur = nxt
    return _model(nodes, inits, [widths[0]], [widths[-1]])


ACTS = ["relu", "leaky_relu", "prelu", "tanh", "sigmoid", "identity"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    depth=st.integers(1, 3),
    data=st.data(),
)
def test_random_mlp_matches_onnxruntime(seed, depth, data):
    rng = np.random.default_rng(seed)
    widths = data.draw(st.lists(st.integers(1, 9), min_size=depth + 1, max_size=depth + 1))
    acts = data.draw(st.lists(st.sampled_from(ACTS), min_size=depth, max_size=depth))
    bias = data.draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    bn = data.draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    trans_b = data.draw(st.booleans())
    matmul_add = data.draw(st.booleans())
    m = build_mlp(rng, widths, acts, trans_b, bias, bn, matmul_add)
    chain = read_chain(m)
    assert len(chain) == depth
    assert [lay.activation.name for lay in chain] == acts
    x = rng.standard_normal((5, widths[0])).astype(np.float32)
    ref = _ort(m, x).astype(np.float64)
    got = chain.forward(x.astype(np.float64))
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale)


def test_flatten_unflatten_legacy_shape_chain():
    """Flatten on an image input and an Unflatten computed by Shape/Gather/Concat."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 12)).astype(np.float32)
    w2 = rng.standard_normal((12, 6)).astype(np.float32)
    nodes = [
        oh.make_node("Flatten", ["x"], ["f"], axis=1),
        oh.make_node("Gemm", ["f", "W1"], ["a"], transB=1),
        oh.make_node("Relu", ["a"], ["r"]),
        oh.make_node("Gemm", ["r", "W2"], ["b"], transB=1),
        oh.make_node("Shape", ["b"], ["sh"]),
        oh.make_node("Gather", ["sh", "zero"], ["n"], axis=0),
        oh.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        oh.make_node("Concat", ["n1", "rest"], ["shape"], axis=0),
        oh.make_node("Reshape", ["b", "shape"], ["c"]),
        oh.make_node("Sigmoid", ["c"], ["y"]),
    ]
    inits = {
        "W1": w1,
        "W2": w2,
        "zero": np.array(0, np.int64),
        "ax0": np.array([0], np.int64),
        "rest": np.array([1, 3, 4], np.int64),
    }
    m = _model(nodes, inits, [1, 3, 4], [1, 3, 4])
    chain = read_chain(m)
    assert chain.in_shape == (1, 3, 4) and chain.out_shape == (1, 3, 4)
    assert [lay.activation.name for lay in chain] == ["relu", "sigmoid"]
    x = rng.standard_normal((3, 1, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(
        chain.forward(x.astype(np.float64)), _ort(m, x), rtol=1e-5, atol=1e-6
    )


def test_conv_layers_have_shapes_and_attributes():
    rng = np.random.default_rng(1)
    wc = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    wt = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    nodes = [
        oh.make_node("Conv", ["x", "Wc", "bc"], ["a"], strides=[2, 2], pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["a"], ["r"]),
        oh.make_node(
            "ConvTranspose",
            ["r", "Wt"],
            ["b"],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            output_padding=[1, 1],
        ),
        oh.make_node("Tanh", ["b"], ["y"]),
    ]
    inits = {"Wc": wc, "bc": rng.standard_normal(4).astype(np.float32), "Wt": wt}
    m = _model(nodes, inits, [2, 8, 8], [2, 8, 8])
    chain = read_chain(m)
    c, t = chain.layers
    assert (c.kind, t.kind) == ("conv", "conv_transpose")
    assert c.in_shape == (2, 8, 8) and c.out_shape == (4, 4, 4)
    assert t.in_shape == (4, 4, 4) and t.out_shape == (2, 8, 8)
    assert c.strides == (2, 2) and c.pads == (1, 1, 1, 1) and t.output_padding == (1, 1)
    x = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(
        chain.forward(x.astype(np.float64)), _ort(m, x), rtol=1e-5, atol=1e-5
    )


def test_skip_connection_raises_naming_the_node():
    rng = np.random.default_rng(2)
    nodes = [
        oh.make_node("Gemm", ["x", "W"], ["a"], transB=1, name="fc"),
        oh.make_node("Relu", ["a"], ["r"], name="act"),
        oh.make_node("Add", ["r", "x"], ["y"], name="skip_add"),
    ]
    m = _model(nodes, {"W": rng.standard_normal((3, 3)).astype(np.float32)}, [3], [3])
    with pytest.raises(UnsupportedGraphError, match="skip_add"):
        read_chain(m)


def test_unsupported_op_raises_naming_node_and_op():
    rng = np.random.default_rng(3)
    nodes = [
        oh.make_node("Gemm", ["x", "W"], ["a"], transB=1, name="fc"),
        oh.make_node("Softmax", ["a"], ["y"], name="soft", axis=1),
    ]
    m = _model(nodes, {"W": rng.standard_normal((3, 3)).astype(np.float32)}, [3], [3])
    with pytest.raises(UnsupportedGraphError, match="soft.*Softmax"):
        read_chain(m)


def test_activation_without_linear_layer_raises():
    nodes = [oh.make_node("Relu", ["x"], ["y"], name="r0")]
    with pytest.raises(UnsupportedGraphError, match="r0"):
        read_chain(_model(nodes, {}, [3], [3]))


def test_dense_chain_forward_matches_numpy():
    rng = np.random.default_rng(4)
    w1, w2 = rng.standard_normal((7, 3)), rng.standard_normal((5, 7))
    ch = dense_chain([w1, w2], ["relu", "tanh"])
    z = rng.standard_normal((4, 3))
    np.testing.assert_allclose(ch.forward(z), np.tanh(np.maximum(z @ w1.T, 0) @ w2.T))
    y, hidden = ch.forward(z, return_hidden=True)
    np.testing.assert_allclose(hidden[0], np.maximum(z @ w1.T, 0))


def test_forward_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(5)
    ch = dense_chain([rng.standard_normal((4, 2)), rng.standard_normal((3, 4))], "leaky_relu:0.2")
    z = rng.standard_normal((2, 2))
    out = ch.forward(xps.asarray(z))
    assert type(out).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(out), ch.forward(z))


def _shipped_models():
    if not (MODELS / "onnx").is_dir():
        return []
    return sorted((MODELS / "onnx").glob("*.onnx"))


@pytest.mark.parametrize(
    "path", _shipped_models() or [None], ids=lambda p: getattr(p, "name", "none")
)
def test_shipped_models_match_onnxruntime(path):
    if path is None:
        pytest.skip("no shipped ONNX models in models/onnx")
    if path.name.startswith(("colour32_unet", "colour16_unet", "colour16_convae")):
        # U-Nets have skip connections and pooling, the conv autoencoder an upsampling Resize
        # and a locally connected read-out: they must be refused, naming the node
        with pytest.raises(UnsupportedGraphError, match=r"node .* \(op "):
            read_chain(path)
        return
    chain = read_chain(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    rng = np.random.default_rng(6)
    x = rng.uniform(0, 1, (3, *chain.in_shape)).astype(np.float32)
    ref = sess.run(None, {inp.name: x})[0]
    got = chain.forward(x.astype(np.float64))
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * scale)
    assert json.dumps(chain.info)  # JSON-ready


@pytest.mark.parametrize("order", ["mul_first", "clip_first"])
def test_piecewise_linear_unit_is_fused_into_one_activation(order):
    """Add(0.1 * u, 0.9 * Clip(u, 0, 1)) (the legacy export of PLU) is one activation."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    mul = oh.make_node("Mul", ["u", "a"], ["au"])
    clip = oh.make_node("Clip", ["u", "lo", "hi"], ["cu"])
    mul2 = oh.make_node("Mul", ["b", "cu"], ["bcu"])
    branch = [mul, clip, mul2] if order == "mul_first" else [clip, mul2, mul]
    nodes = [
        oh.make_node("Gemm", ["x", "W"], ["u"], transB=1),
        *branch,
        oh.make_node("Add", ["bcu", "au"], ["y"], name="plu_add"),
    ]
    inits = {
        "W": w,
        "a": np.array(0.1, np.float32),
        "b": np.array(0.9, np.float32),
        "lo": np.array(0.0, np.float32),
        "hi": np.array(1.0, np.float32),
    }
    m = _model(nodes, inits, [4], [6])
    chain = read_chain(m)
    (lay,) = chain.layers
    assert lay.activation.name == "plu"
    np.testing.assert_allclose(lay.activation.slope, (0.1, 0.9, 0.0, 1.0), rtol=1e-6)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    np.testing.assert_allclose(
        chain.forward(x.astype(np.float64)), _ort(m, x), rtol=1e-5, atol=1e-6
    )
    from refinv.onnx.graph import inverse_activation

    a, b, lo, hi = lay.activation.slope  # the model's float32 constants, exactly
    u = np.linspace(-3, 3, 61)
    np.testing.assert_allclose(
        inverse_activation(lay.activation, a * u + b * np.clip(u, lo, hi)), u, atol=1e-12
    )


def test_branch_that_is_not_a_plu_still_raises():
    rng = np.random.default_rng(8)
    nodes = [
        oh.make_node("Gemm", ["x", "W"], ["u"], transB=1),
        oh.make_node("Clip", ["u", "lo", "hi"], ["cu"]),
        oh.make_node("Mul", ["cu", "u"], ["y"], name="square_ish"),
    ]
    inits = {
        "W": rng.standard_normal((3, 3)).astype(np.float32),
        "lo": np.array(0.0, np.float32),
        "hi": np.array(1.0, np.float32),
    }
    with pytest.raises(UnsupportedGraphError, match="square_ish"):
        read_chain(_model(nodes, inits, [3], [3]))


def test_matmul_add_bias_path_matches_onnxruntime():
    """The MatMul + Add exporters' bias (deterministic; the random-MLP test reaches it only
    when it draws matmul_add, bias and trans_b=False together)."""
    rng = np.random.default_rng(11)
    m = build_mlp(rng, [5, 7, 3], ["relu", "identity"], False, [True, True], [False, True],
                  matmul_add=True)  # fmt: skip
    assert [n.op_type for n in m.graph.node][:2] == ["MatMul", "Add"]
    chain = read_chain(m)
    assert all(lay.bias is not None for lay in chain)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    np.testing.assert_allclose(
        chain.forward(x.astype(np.float64)), _ort(m, x), rtol=1e-5, atol=1e-5
    )


def test_sub_bias_is_folded_with_its_sign():
    """Exporters write some biases as Sub(data, c): the chain must compute data - c."""
    rng = np.random.default_rng(12)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    c = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    nodes = [
        oh.make_node("Gemm", ["x", "W"], ["a"], transB=1),
        oh.make_node("Sub", ["a", "c"], ["y"]),
    ]
    m = _model(nodes, {"W": w, "c": c}, [3], [4])
    (lay,) = read_chain(m).layers
    np.testing.assert_allclose(lay.bias, -c.astype(np.float64))
    x = rng.standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(
        read_chain(m).forward(x.astype(np.float64)), _ort(m, x), rtol=1e-5, atol=1e-6
    )
    # a Gemm's own bias and a following Sub/Add accumulate: b0 - c + d
    b0 = rng.standard_normal(4).astype(np.float32)
    d = rng.standard_normal(4).astype(np.float32)
    both = [
        oh.make_node("Gemm", ["x", "W", "b0"], ["a"], transB=1),
        oh.make_node("Sub", ["a", "c"], ["s"]),
        oh.make_node("Add", ["s", "d"], ["y"]),
    ]
    mb = _model(both, {"W": w, "b0": b0, "c": c, "d": d}, [3], [4])
    (lay,) = read_chain(mb).layers
    np.testing.assert_allclose(lay.bias, (b0 - c + d).astype(np.float64), rtol=1e-6)
    np.testing.assert_allclose(
        read_chain(mb).forward(x.astype(np.float64)), _ort(mb, x), rtol=1e-5, atol=1e-6
    )
    minus = [
        oh.make_node("Gemm", ["x", "W"], ["a"], transB=1),
        oh.make_node("Sub", ["c", "a"], ["y"]),
    ]
    # c - data is folded too (a scale of -1 and a shift): equal to onnxruntime
    mm = _model(minus, {"W": w, "c": c}, [3], [4])
    np.testing.assert_allclose(
        read_chain(mm).forward(x.astype(np.float64)), _ort(mm, x), rtol=1e-5, atol=1e-6
    )


def test_leaky_relu_without_alpha_is_onnx_default():
    """A LeakyRelu node that omits its attribute means alpha = 0.01 (the ONNX default)."""
    rng = np.random.default_rng(13)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    nodes = [
        oh.make_node("Gemm", ["x", "W"], ["a"], transB=1),
        oh.make_node("LeakyRelu", ["a"], ["y"]),
    ]
    m = _model(nodes, {"W": w}, [3], [6])
    (lay,) = read_chain(m).layers
    assert lay.activation.name == "leaky_relu" and lay.activation.slope == pytest.approx(0.01)
    x = 3.0 * rng.standard_normal((8, 3)).astype(np.float32)
    ref = _ort(m, x)
    assert (ref < 0).any()
    np.testing.assert_allclose(
        read_chain(m).forward(x.astype(np.float64)), ref, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("group", [1, 2])
def test_batchnorm_after_conv_transpose_matches_onnxruntime(group):
    """BatchNormalization folded into a ConvTranspose scales the OUTPUT channels (weight axis
    1 within each group), unlike after a Conv; compared with onnxruntime for 1 and 2 groups."""
    rng = np.random.default_rng(14 + group)
    cin, cout = 4, 6
    wt = rng.standard_normal((cin, cout // group, 3, 3)).astype(np.float32)
    bn = {
        "s": rng.uniform(0.5, 2.0, cout), "B": rng.standard_normal(cout) * 0.3,
        "m": rng.standard_normal(cout) * 0.3, "v": rng.uniform(0.5, 2.0, cout),
    }  # fmt: skip
    inits = {"Wt": wt, "bt": rng.standard_normal(cout).astype(np.float32)}
    inits.update({f"bn{k}": v.astype(np.float32) for k, v in bn.items()})
    nodes = [
        oh.make_node("ConvTranspose", ["x", "Wt", "bt"], ["a"], strides=[2, 2], pads=[1, 1, 1, 1],
                     output_padding=[1, 1], group=group),
        oh.make_node("BatchNormalization", ["a", "bns", "bnB", "bnm", "bnv"], ["b"], epsilon=1e-3),
        oh.make_node("Relu", ["b"], ["y"]),
    ]  # fmt: skip
    m = _model(nodes, inits, [cin, 4, 4], [cout, 8, 8])
    chain = read_chain(m)
    (lay,) = chain.layers
    assert lay.kind == "conv_transpose" and lay.group == group
    x = rng.standard_normal((3, cin, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(
        chain.forward(x.astype(np.float64)), _ort(m, x), rtol=1e-5, atol=1e-5
    )
