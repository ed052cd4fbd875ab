"""The untrusted-model guards and the input layouts at their exact edges, through the public
loaders (``OnnxModel``, ``refinv.onnx.load_onnx``) with onnxruntime as the reference:

* external data: a symlink into a SIBLING folder whose name extends the model folder's
  (``model2`` beside ``model``) is outside; the external bytes count against ``max_bytes``;
* a model given as bytes is refused one byte over ``max_bytes`` and accepted at it;
* the node limit counts the nodes of every graph (subgraphs, functions) and accepts a model
  with exactly the limit; the sparse dense-size limit is on the TOTAL of all sparse tensors;
* the probe compares the output sample shape of its batches of 2 and 3;
* an NHWC model's output is transposed back only when it is shaped like the input;
* a layout Transpose decides the layout only when it is the input's ONLY consumer.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _hostile import OPSET, external_model
from onnx import TensorProto, helper, numpy_helper

from refinv import OnnxModel
from refinv.errors import OnnxModelError, ResourceLimitError, UnsafeModelError
from refinv.onnx import load_onnx

C = np.arange(4, dtype=np.float32)  # the inline value of the hostile models' c


def _ort(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _graph(nodes, inits, in_shape, out_shape, sparse=()):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
        sparse_initializer=list(sparse),
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _save_external(tmp_path, folder: str = "model"):
    """``folder/m.onnx`` whose c (16 bytes) is the external file ``folder/c.bin``."""
    d = tmp_path / folder
    d.mkdir()
    p = d / "m.onnx"
    p.write_bytes(external_model("initializer", "c.bin").SerializeToString())
    return d, p


# ------------------------------------------------------------------ external data
def test_symlink_into_a_sibling_folder_with_a_longer_name_is_outside(tmp_path):
    """model/c.bin -> ../model2/c.bin: '/.../model2/c.bin' starts with the text '/.../model'
    but is not inside the folder 'model'."""
    d, p = _save_external(tmp_path)
    sib = tmp_path / "model2"
    sib.mkdir()
    (sib / "c.bin").write_bytes(C.tobytes())
    (d / "c.bin").symlink_to(sib / "c.bin")
    with pytest.raises(UnsafeModelError, match="outside the model's folder"):
        OnnxModel(p)
    with pytest.raises(UnsafeModelError, match="outside the model's folder"):
        load_onnx(p)
    # the same bytes inside the folder are read
    (d / "c.bin").unlink()
    (d / "c.bin").write_bytes(C.tobytes())
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(OnnxModel(p)(x), x + C)


def test_external_bytes_count_against_max_bytes(tmp_path):
    """File of S bytes plus 16 external bytes: S + 16 is enough, S + 15 is not (the file
    alone fits both)."""
    d, p = _save_external(tmp_path)
    (d / "c.bin").write_bytes(C.tobytes())
    size = p.stat().st_size
    assert load_onnx(p, max_bytes=size + 16)[0].graph.initializer[0].raw_data == C.tobytes()
    with pytest.raises(ResourceLimitError, match=f"exceed the limit of {size + 15} bytes"):
        load_onnx(p, max_bytes=size + 15)
    with pytest.raises(ResourceLimitError):
        OnnxModel(p, max_bytes=size + 15)


def test_a_model_given_as_bytes_is_checked_against_max_bytes():
    m = _graph([helper.make_node("Add", ["x", "c"], ["y"])], {"c": C}, ["N", 4], ["N", 4])
    data = m.SerializeToString()
    n = len(data)
    assert 16 < n - 1  # every tensor alone is far below the limit: only the size check bites
    with pytest.raises(
        ResourceLimitError, match=f"<bytes>: {n} bytes, more than the limit of {n - 1}"
    ):
        load_onnx(data, max_bytes=n - 1)
    with pytest.raises(ResourceLimitError, match=f"{n} bytes"):
        OnnxModel(data, max_bytes=n - 1)
    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(OnnxModel(data, max_bytes=n)(x), x + C)
    np.testing.assert_array_equal(OnnxModel(bytearray(data), max_bytes=n)(x), x + C)


# ------------------------------------------------------------------ node and sparse limits
def _chain(k: int) -> onnx.ModelProto:
    nodes = [
        helper.make_node(
            "Identity", ["x" if i == 0 else f"t{i - 1}"], ["y" if i == k - 1 else f"t{i}"]
        )
        for i in range(k)
    ]
    return _graph(nodes, {}, ["N", 4], ["N", 4])


def test_node_limit_accepts_exactly_the_limit(monkeypatch):
    monkeypatch.setenv("REFINV_MAX_NODES", "6")
    assert OnnxModel(_chain(6)).sample_shape == (4,)
    with pytest.raises(ResourceLimitError, match="7 nodes .*more than the limit of 6"):
        OnnxModel(_chain(7))


@pytest.mark.parametrize(
    "kind, total, main",
    [
        ("if_subgraph", 4, 2),  # If + Add; a Constant in each branch
        ("loop_body", 4, 2),  # Loop + Add; Identity + Add in the body
        ("function_body", 3, 1),  # the call; Constant + Add in the function
    ],
)
def test_node_limit_counts_subgraph_and_function_nodes(monkeypatch, kind, total, main):
    m = external_model(kind, None)
    assert len(m.graph.node) == main
    monkeypatch.setenv("REFINV_MAX_NODES", str(total - 1))
    with pytest.raises(ResourceLimitError, match=f"{total} nodes \\(all graphs\\)"):
        load_onnx(m, allow_control_flow=True)
    monkeypatch.setenv("REFINV_MAX_NODES", str(total))
    load_onnx(m, allow_control_flow=True)


def _sparse(name: str, n: int) -> onnx.SparseTensorProto:
    vals = numpy_helper.from_array(np.ones(1, np.float32), name)
    idx = numpy_helper.from_array(np.array([n - 1], np.int64), name + "_idx")
    return helper.make_sparse_tensor(vals, idx, [n])


def test_sparse_limit_is_on_the_total_of_all_sparse_tensors(monkeypatch):
    """Two sparse tensors of 4 float32 values: 16 bytes each once dense, 32 in all."""
    nodes = [
        helper.make_node("Add", ["x", "s1"], ["t"]),
        helper.make_node("Add", ["t", "s2"], ["y"]),
    ]
    m = _graph(nodes, {}, ["N", 4], ["N", 4], sparse=[_sparse("s1", 4), _sparse("s2", 4)])
    monkeypatch.setenv("REFINV_MAX_SPARSE_BYTES", "24")  # each alone fits
    with pytest.raises(ResourceLimitError, match="sparse tensors make 32 bytes once dense"):
        load_onnx(m)
    monkeypatch.setenv("REFINV_MAX_SPARSE_BYTES", "32")
    x = np.zeros((2, 4), np.float32)
    np.testing.assert_array_equal(OnnxModel(m)(x), np.tile([0, 0, 0, 2], (2, 1)))


# ------------------------------------------------------------------ the probe's batches
def test_output_sample_shape_that_depends_on_the_batch_is_refused():
    """y = x x^T: (2, 2) for a batch of 2, (3, 3) for a batch of 3. Both keep the batch on
    the leading axis; only comparing the two sample shapes catches it."""
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "xt"], ["y"])]  # fmt: skip
    m = _graph(nodes, {}, ["N", 4], ["N", "M"])
    assert _ort(m, np.ones((3, 4), np.float32)).shape == (3, 3)
    with pytest.raises(OnnxModelError, match="output sample shape depends on the batch size"):
        OnnxModel(m)


# ------------------------------------------------------------------ NHWC outputs
def _nhwc_encoder(out: str) -> tuple[onnx.ModelProto, tuple]:
    """Input (N, 4, 4, 3) channels-last (a leading Transpose to NCHW). ``flat``: a dense code
    (N, 5); ``pooled``: a 2x2 max-pool back in channels-last, (N, 2, 2, 3)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2])]
    if out == "flat":
        nodes += [helper.make_node("Flatten", ["t"], ["f"], axis=1),
                  helper.make_node("MatMul", ["f", "W"], ["y"])]  # fmt: skip
        return _graph(nodes, {"W": rng.standard_normal((48, 5)).astype(np.float32)},
                      ["N", 4, 4, 3], ["N", 5]), (5,)  # fmt: skip
    nodes += [helper.make_node("MaxPool", ["t"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Transpose", ["p"], ["y"], perm=[0, 2, 3, 1])]  # fmt: skip
    return _graph(nodes, {}, ["N", 4, 4, 3], ["N", 2, 2, 3]), (2, 2, 3)


@pytest.mark.parametrize("out", ["flat", "pooled"])
def test_nhwc_output_not_shaped_like_the_input_is_returned_as_computed(out):
    m, shape = _nhwc_encoder(out)
    f = OnnxModel(m)
    assert f.layout == "NHWC" and f.sample_shape == (3, 4, 4)
    assert f.output_sample_shape == shape and not f.is_autoencoder
    x = np.random.default_rng(1).random((2, 3, 4, 4)).astype(np.float32)  # refinv: NCHW
    want = _ort(m, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    got = f(x)
    assert got.shape == (2, *shape)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_nhwc_output_shaped_like_the_input_is_transposed_back():
    """The control: an NHWC autoencoder (y = 2 x in the graph's layout) returns NCHW."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Mul", ["t", "two"], ["u"]),
             helper.make_node("Transpose", ["u"], ["y"], perm=[0, 2, 3, 1])]  # fmt: skip
    m = _graph(nodes, {"two": np.float32(2)}, ["N", 4, 4, 3], ["N", 4, 4, 3])
    f = OnnxModel(m)
    x = np.random.default_rng(2).random((2, 3, 4, 4)).astype(np.float32)
    assert f.output_sample_shape == (3, 4, 4)
    np.testing.assert_array_equal(f(x), 2 * x)


# ------------------------------------------------------------------ layout Transpose
@pytest.mark.parametrize(
    "declared, perm, layout",
    [
        ((8, 8, 3), [0, 2, 3, 1], "NHWC"),  # the Transpose alone would say NCHW
        ((3, 8, 8), [0, 3, 1, 2], "NCHW"),  # the Transpose alone would say NHWC
    ],
)
def test_layout_transpose_decides_only_as_the_only_consumer(declared, perm, layout):
    """The input feeds a Transpose (first in node order) AND an Add: the Transpose is not a
    layout change of the whole input, so the declared shape decides."""
    inv = [int(i) for i in np.argsort(perm)]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=perm),
             helper.make_node("Transpose", ["t"], ["u"], perm=inv),
             helper.make_node("Add", ["u", "x"], ["y"])]  # fmt: skip
    m = _graph(nodes, {}, ["N", *declared], ["N", *declared])
    f = OnnxModel(m)
    assert f.layout == layout and "declared" in f.layout_source
    assert f.sample_shape == (3, 8, 8)
    x = np.random.default_rng(3).random((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(f(x), 2 * x, rtol=1e-6)
    # the only consumer: the Transpose decides (what tf2onnx writes)
    lone = [helper.make_node("Transpose", ["x"], ["t"], perm=perm),
            helper.make_node("Transpose", ["t"], ["y"], perm=inv)]  # fmt: skip
    g = OnnxModel(_graph(lone, {}, ["N", *declared], ["N", *declared]))
    assert "Transpose" in g.layout_source


def test_sparse_index_equal_to_the_dimension_is_out_of_range():
    """Without onnx.checker (``check=False``) refinv's own check refuses an index == dim (the
    last valid one is dim - 1, which loads)."""
    nodes = [helper.make_node("Add", ["x", "s1"], ["y"])]
    ok = _graph(nodes, {}, ["N", 4], ["N", 4], sparse=[_sparse("s1", 4)])
    load_onnx(ok, check=False)
    bad = onnx.ModelProto()
    bad.CopyFrom(ok)
    idx = bad.graph.sparse_initializer[0].indices
    idx.CopyFrom(numpy_helper.from_array(np.array([4], np.int64), idx.name))
    with pytest.raises(OnnxModelError, match="indices out of range for dims \\[4\\]"):
        load_onnx(bad, check=False)
