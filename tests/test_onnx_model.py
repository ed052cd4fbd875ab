"""The ONNX layer: loading, validation, security, calling on array-API batches."""

from __future__ import annotations

import os

import array_api_strict as xps
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from refinv import OnnxModel
from refinv.errors import (
    BackendError,
    DTypeError,
    OnnxModelError,
    RefinvError,
    ShapeError,
    UnsafeModelError,
)
from refinv.onnx import load_onnx

OPSET = 17


def _model(nodes, inits, in_shape, out_shape, elem=TensorProto.FLOAT, name="g"):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", elem, in_shape)],
        [helper.make_tensor_value_info("y", elem, out_shape)],
        initializer=inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def mlp(widths, dtype=np.float32, seed=0, batch="N"):
    """Gemm + Relu chain on flat inputs, and its NumPy evaluation."""
    rng = np.random.default_rng(seed)
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    nodes, inits, ws = [], [], []
    cur = "x"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        w = (rng.standard_normal((b, a)) / np.sqrt(a)).astype(dtype)
        c = (rng.standard_normal(b) * 0.1).astype(dtype)
        ws.append((w, c))
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(c, f"b{i}")]
        out = "y" if i == len(widths) - 2 else f"h{i}"
        g = f"g{i}" if out != "y" else "y"
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [g], transB=1))
        if out != "y":
            nodes.append(helper.make_node("Relu", [g], [out]))
        cur = out
    m = _model(nodes, inits, [batch, widths[0]], [batch, widths[-1]], elem)

    def ref(x):
        h = x.astype(np.float64)
        for j, (w, c) in enumerate(ws):
            h = h @ w.T.astype(np.float64) + c
            if j < len(ws) - 1:
                h = np.maximum(h, 0)
        return h

    return m, ref


def conv_model(cin=2, cout=3, h=7, w=5, seed=1):
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "k", "b"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    inits = [numpy_helper.from_array(k, "k"), numpy_helper.from_array(b, "b")]
    m = _model(nodes, inits, ["N", cin, h, w], ["N", cout, h, w])

    def ref(x):
        xpad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros((x.shape[0], cout, h, w))
        for i in range(3):
            for j in range(3):
                patch = xpad[:, :, i : i + h, j : j + w]
                out += np.einsum("nchw,oc->nohw", patch, k[:, :, i, j].astype(np.float64))
        return np.maximum(out + b[None, :, None, None], 0)

    return m, ref


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("widths", [(5, 7, 3), (13, 11, 17, 2), (1, 4, 1)])
def test_mlp_matches_numpy(dtype, widths):
    m, ref = mlp(widths, dtype=dtype)
    f = OnnxModel(m)
    assert f.sample_shape == (widths[0],)
    assert f.dtype == np.dtype(dtype)
    x = np.random.default_rng(2).standard_normal((9, widths[0])).astype(dtype)
    y = f(x)
    assert isinstance(y, np.ndarray) and y.dtype == dtype and y.shape == (9, widths[-1])
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref(x), rtol=tol, atol=tol)


def test_conv_matches_numpy_odd_shape():
    m, ref = conv_model()
    f = OnnxModel(m, layout="NCHW")  # 2 channels: an ambiguous layout, named here
    assert f.sample_shape == (2, 7, 5)
    assert f.output_sample_shape == (3, 7, 5)
    x = np.random.default_rng(3).standard_normal((4, 2, 7, 5)).astype(np.float32)
    np.testing.assert_allclose(f(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_array_api_strict_in_same_type_out(dtype):
    m, ref = mlp((6, 8, 6))
    f = OnnxModel(m)
    xn = np.random.default_rng(4).standard_normal((5, 6)).astype(dtype)
    x = xps.asarray(xn)
    y = f(x)
    assert type(y) is type(x)
    assert y.dtype == getattr(xps, dtype)  # float64 in -> cast at the boundary -> float64 out
    np.testing.assert_allclose(np.asarray(y), ref(xn), rtol=1e-5, atol=1e-5)


def test_float64_into_float32_model_is_cast_at_boundary():
    m, ref = mlp((4, 4))
    f = OnnxModel(m)
    x = np.random.default_rng(5).standard_normal((3, 4))
    y = f(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 100])
def test_chunking_gives_same_result(batch_size):
    m, _ = mlp((6, 9, 6), dtype=np.float64)
    x = np.random.default_rng(6).standard_normal((7, 6))
    full = OnnxModel(m)(x)
    f = OnnxModel(m, batch_size=batch_size)
    np.testing.assert_allclose(f(x), full, rtol=1e-12, atol=1e-12)
    assert f.stats.calls == -(-7 // batch_size)  # ceil(7 / batch_size) chunks


def test_fixed_batch_of_one_is_looped():
    m, ref = mlp((3, 5, 2), batch=1)
    f = OnnxModel(m)
    assert f.fixed_batch == 1
    x = np.random.default_rng(7).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(f(x), ref(x), rtol=1e-5, atol=1e-5)
    assert f.stats.calls == 4


def test_fixed_batch_larger_than_one_pads_the_last_chunk():
    m, ref = mlp((3, 5, 2), batch=4)
    f = OnnxModel(m)
    x = np.random.default_rng(8).standard_normal((6, 3)).astype(np.float32)
    np.testing.assert_allclose(f(x), ref(x), rtol=1e-5, atol=1e-5)


def test_load_from_path_and_bytes(tmp_path):
    m, ref = mlp((3, 4))
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    x = np.ones((2, 3), np.float32)
    a = OnnxModel(p)(x)
    b = OnnxModel(p.read_bytes())(x)
    c = OnnxModel(str(p))(x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert OnnxModel(p).sha256 == OnnxModel(m).sha256


# --------------------------------------------------------------- bad input
def test_wrong_sample_shape():
    f = OnnxModel(mlp((6, 8, 6))[0])
    with pytest.raises(ShapeError, match=r"expected input of shape \(batch, 6\), got \(2, 5\)"):
        f(np.zeros((2, 5), np.float32))
    with pytest.raises(ShapeError):
        f(np.zeros((6,), np.float32))


def test_wrong_dtype():
    f = OnnxModel(mlp((6, 8, 6))[0])
    with pytest.raises(DTypeError, match="got dtype int64"):
        f(np.zeros((2, 6), np.int64))
    assert issubclass(DTypeError, TypeError) and issubclass(DTypeError, RefinvError)


def test_nan_input_propagates_documented():
    """Documented: the forward pass does not scan its input; NaN propagates."""
    f = OnnxModel(mlp((3, 3))[0])
    x = np.zeros((2, 3), np.float32)
    x[1, 0] = np.nan
    y = f(x)
    assert np.all(np.isfinite(y[0])) and np.isnan(y[1]).any()


def test_not_onnx_file(tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a model\n" * 10)
    with pytest.raises(OnnxModelError, match="notes.onnx"):
        OnnxModel(p)


def test_truncated_file(tmp_path):
    m, _ = mlp((30, 40, 30))
    data = m.SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(OnnxModelError, match="cut.onnx"):
        OnnxModel(p)


def test_empty_and_missing_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(OnnxModelError, match="empty"):
        OnnxModel(p)
    with pytest.raises(OnnxModelError, match="no such ONNX file"):
        OnnxModel(tmp_path / "missing.onnx")


def test_unsupported_opset():
    m, _ = mlp((3, 3))
    m.opset_import[0].version = 999
    with pytest.raises(OnnxModelError, match="unsupported opset 999"):
        OnnxModel(m)


def test_two_inputs_refused():
    nodes = [helper.make_node("Add", ["x", "x2"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    with pytest.raises(OnnxModelError, match="exactly one input and one output"):
        OnnxModel(m)


def test_integer_input_refused():
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    m = _model(nodes, [], ["N", 3], ["N", 3], elem=TensorProto.INT64)
    with pytest.raises(OnnxModelError, match="floating-point input"):
        OnnxModel(m)


def test_cuda_provider_unavailable_is_clear():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(BackendError, match="onnxruntime-gpu"):
        OnnxModel(mlp((3, 3))[0], provider="cuda")


def _external_model(tmp_path, location):
    """A model whose weight is stored externally at ``location``."""
    m, _ = mlp((4, 4))
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    del w.external_data[:]
    e = w.external_data.add()
    e.key, e.value = "location", location
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    p = d / "m.onnx"
    p.write_bytes(m.SerializeToString())
    return p


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_escaping_folder_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    p = _external_model(tmp_path, location)
    with pytest.raises(UnsafeModelError, match="external data path"):
        OnnxModel(p)


def test_external_data_dotdot_refused_even_inside_the_folder(tmp_path):
    """The '..' guard on its own: 'sub/../w.bin' resolves INSIDE the model's folder (the
    resolve() check would let it through) and the file exists, yet it is refused."""
    p = _external_model(tmp_path, "sub/../w.bin")
    (p.parent / "sub").mkdir()
    (p.parent / "w.bin").write_bytes(np.ones(16, np.float32).tobytes())
    with pytest.raises(UnsafeModelError, match=r"contains '\.\.'"):
        OnnxModel(p)


def test_external_data_absolute_path_refused_even_inside_the_folder(tmp_path):
    """The absolute-path guard on its own: an absolute location that points INTO the
    model's folder (the resolve() check would accept it) is refused."""
    p = _external_model(tmp_path, "placeholder")
    (p.parent / "w.bin").write_bytes(np.ones(16, np.float32).tobytes())
    p = _external_model(tmp_path, str((p.parent / "w.bin").resolve()))
    with pytest.raises(UnsafeModelError, match="is absolute"):
        OnnxModel(p)


def test_external_data_symlink_escape_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    p = _external_model(tmp_path, "link.bin")
    os.symlink(tmp_path / "secret.bin", p.parent / "link.bin")
    with pytest.raises(UnsafeModelError, match="outside the model's folder"):
        OnnxModel(p)


def test_external_data_inside_folder_works(tmp_path):
    m, ref = mlp((4, 5, 3))
    d = tmp_path / "ok"
    d.mkdir()
    onnx.save(m, d / "m.onnx", save_as_external_data=True, location="w.data", size_threshold=0)
    assert (d / "w.data").is_file()
    f = OnnxModel(d / "m.onnx")
    x = np.random.default_rng(9).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(f(x), ref(x), rtol=1e-5, atol=1e-5)
    # from bytes the external file cannot be located: clear error
    with pytest.raises(OnnxModelError, match="external data"):
        load_onnx((d / "m.onnx").read_bytes())


def test_initializers_read_only_numpy():
    m, _ = mlp((3, 4))
    inits = OnnxModel(m).initializers()
    assert set(inits) == {"w0", "b0"} and inits["w0"].shape == (4, 3)
