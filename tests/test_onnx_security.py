"""Untrusted ONNX models: external-data escapes, validation, verification, resource limits."""

from __future__ import annotations

import os
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _hostile import (
    EXTERNAL_KINDS,
    OPSET,
    SECRET,
    expected_c,
    external_model,
    identity_loop_body,
)
from onnx import TensorProto, helper, numpy_helper

from refinv import OnnxModel
from refinv.errors import (
    OnnxModelError,
    RefinvError,
    ResourceLimitError,
    UnsafeModelError,
    UnsupportedGraphError,
)
from refinv.onnx import load_onnx, read_chain
from refinv.onnx import loading as loading_mod
from refinv.onnx import session as session_mod

LEAKS_WITH_PLAIN_ORT = [
    "sparse_initializer_values",
    "constant_sparse_values",
    "if_subgraph",
    "loop_body",
]


@pytest.fixture
def secret_cwd(tmp_path, monkeypatch):
    """A working directory holding ``secret.bin``; the model folder is ``model/`` below it."""
    (tmp_path / "secret.bin").write_bytes(SECRET)
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _save(m, folder, name="m.onnx"):
    p = folder / name
    p.write_bytes(m.SerializeToString())
    return p


@pytest.mark.parametrize("kind", LEAKS_WITH_PLAIN_ORT)
def test_attack_models_really_leak_through_plain_onnxruntime(secret_cwd, kind):
    """The hostile models are real attacks: onnxruntime given their bytes resolves the
    external reference against the cwd and the secret comes out."""
    m = external_model(kind, "secret.bin")
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    y = s.run(None, {"x": np.zeros((1, 4), np.float32)})[0]
    assert y.tobytes() == SECRET[:16]


@pytest.mark.parametrize("kind", EXTERNAL_KINDS)
@pytest.mark.parametrize("location", ["secret.bin", "../secret.bin", "ABS", "link.bin"])
@pytest.mark.parametrize("source", ["path", "bytes"])
def test_external_reference_never_leaves_the_model_folder(secret_cwd, kind, location, source):
    if location == "ABS":
        location = str(secret_cwd / "secret.bin")
    if location == "link.bin":
        os.symlink(secret_cwd / "secret.bin", secret_cwd / "model" / "link.bin")
    m = external_model(kind, location)
    p = _save(m, secret_cwd / "model")
    src = p if source == "path" else p.read_bytes()
    with pytest.raises(UnsafeModelError) as ei:
        OnnxModel(src, allow_control_flow=True)
    assert "TOPSECRET" not in str(ei.value)
    with pytest.raises(UnsafeModelError):
        read_chain(src)


@pytest.mark.parametrize("kind", EXTERNAL_KINDS)
def test_external_data_inside_the_folder_is_loaded_by_refinv(secret_cwd, kind):
    """Every kind of reference works when the file is inside the folder, and the model
    onnxruntime gets has no external reference left (it never resolves a path)."""
    data = expected_c(kind).tobytes() if "indices" not in kind else np.arange(4).tobytes()
    (secret_cwd / "model" / "c.bin").write_bytes(data)
    p = _save(external_model(kind, "c.bin"), secret_cwd / "model")
    f = OnnxModel(p, allow_control_flow=True)
    x = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    np.testing.assert_allclose(f(x), x + expected_c(kind), rtol=1e-6)
    tensors, _, _ = loading_mod._scan(onnx.load_from_string(f._bytes), "m")
    assert tensors and all(t.data_location != TensorProto.EXTERNAL for t in tensors)


def test_control_flow_refused_by_default(secret_cwd):
    p = _save(external_model("if_subgraph", None), secret_cwd / "model")
    with pytest.raises(UnsupportedGraphError, match="allow_control_flow=True"):
        OnnxModel(p)
    np.testing.assert_allclose(
        OnnxModel(p, allow_control_flow=True)(np.zeros((1, 4), np.float32))[0], np.arange(4)
    )


# ------------------------------------------------------------- validation
def _plus_c(c: TensorProto, in_elem=TensorProto.FLOAT, out_elem=None, out_shape=("N", 4)):
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", in_elem, ["N", 4])],
        [helper.make_tensor_value_info("y", out_elem or in_elem, list(out_shape))],
        initializer=[c],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    return m


def test_raw_data_length_must_match_dims():
    c = numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")
    c.raw_data = c.raw_data[:12]
    with pytest.raises(OnnxModelError, match="need 16 bytes of raw data, got 12"):
        OnnxModel(_plus_c(c))
    c2 = numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")
    c2.ClearField("raw_data")
    c2.float_data.extend([1.0, 2.0])
    with pytest.raises(OnnxModelError, match="need 4 values in float_data, got 2"):
        OnnxModel(_plus_c(c2))


def test_unknown_data_type_enum():
    c = numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")
    c.data_type = 99
    with pytest.raises(OnnxModelError, match="unsupported data type 99"):
        OnnxModel(_plus_c(c))


def test_non_utf8_name_is_refused():
    c = numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")
    data = _plus_c(c).SerializeToString().replace(b"\x12\x01g", b"\x12\x01\xff")  # graph name
    assert b"\xff" in data
    with pytest.raises(OnnxModelError, match="UTF-8"):
        OnnxModel(data)


def test_external_offset_beyond_file_size(tmp_path):
    (tmp_path / "c.bin").write_bytes(b"\0" * 16)
    m = external_model("initializer", "c.bin")
    m.graph.initializer[0].external_data[1].value = "64"  # offset
    p = _save(m, tmp_path)
    with pytest.raises(OnnxModelError, match="do not fit in 'c.bin' \\(16 bytes\\)"):
        OnnxModel(p)


def test_onnxruntime_format_magic_in_producer_name_is_still_parsed_as_onnx():
    """Bytes 4..8 == b'ORTM' would make onnxruntime parse the model as its own format."""
    c = numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")
    m = _plus_c(c)
    m.producer_name = "ORTM-looking"
    data = m.SerializeToString()
    assert data[4:8] == b"ORTM"
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(OnnxModel(data)(x), x + np.arange(4))


# ------------------------------------------------------------ verification
def _graph(nodes, inits, in_elem, out_elem, out_shape, in_shape=("N", 4), opset=OPSET):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", in_elem, list(in_shape))],
        [helper.make_tensor_value_info("y", out_elem, out_shape)],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_declared_shape_that_is_not_computed_is_refused():
    """Declared (N, 4) but computes (N, 2): not an autoencoder, whatever it says."""
    sl = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in
          (("s", [0]), ("e", [2]), ("a", [1]))]  # fmt: skip
    m = _graph([helper.make_node("Slice", ["x", "s", "e", "a"], ["y"])], sl,
               TensorProto.FLOAT, TensorProto.FLOAT, ["N", 4])  # fmt: skip
    with pytest.raises(OnnxModelError, match=r"declares output shape \['N', 4\] but computes"):
        OnnxModel(m)


@pytest.mark.parametrize("to", [TensorProto.INT64, TensorProto.BOOL, TensorProto.DOUBLE])
def test_non_matching_output_dtype_is_refused(to):
    m = _graph([helper.make_node("Cast", ["x"], ["y"], to=to)], [], TensorProto.FLOAT, to,
               ["N", 4])  # fmt: skip
    with pytest.raises(OnnxModelError, match="probe run"):
        OnnxModel(m)


def test_float16_input_returning_float32_is_refused():
    m = _graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], [],
               TensorProto.FLOAT16, TensorProto.FLOAT, ["N", 4])  # fmt: skip
    with pytest.raises(OnnxModelError, match="expected the output in the input's dtype float16"):
        OnnxModel(m)


def test_output_that_ignores_the_batch_is_refused():
    """A graph that returns one constant row whatever the batch: caught by the batch-2 probe."""
    c = numpy_helper.from_array(np.zeros((1, 4), np.float32), "c")
    m = _graph([helper.make_node("Identity", ["c"], ["y"])], [c], TensorProto.FLOAT,
               TensorProto.FLOAT, ["N", 4])  # fmt: skip
    with pytest.raises(OnnxModelError, match="one output sample per input sample"):
        OnnxModel(m)


def test_data_dependent_output_shape_is_refused_at_call():
    """Output width 1 + floor(4 * max(x)): the probe (values < 1) sees some width, a later
    call with other values another one; the call raises instead of passing it on."""
    k = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("four", 4.0),
         ("one", 1.0))]  # fmt: skip
    k += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("s", [0]), ("a", [1]))]
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["mx"], keepdims=0),
        helper.make_node("Mul", ["mx", "four"], ["m4"]),
        helper.make_node("Floor", ["m4"], ["fl"]),
        helper.make_node("Add", ["fl", "one"], ["e1"]),
        helper.make_node("Cast", ["e1"], ["e"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["e", "s"], ["ee"]),
        helper.make_node("Slice", ["x", "s", "ee", "a"], ["y"]),
    ]
    m = _graph(nodes, k, TensorProto.FLOAT, TensorProto.FLOAT, ["N", None])
    m.graph.output[0].type.tensor_type.shape.dim[1].Clear()
    f = OnnxModel(m)
    w = f.output_sample_shape[0]
    x = np.full((2, 4), (w - 1) / 4 + 0.01, np.float32)  # same width: fine
    assert f(x).shape == (2, w)
    with pytest.raises(OnnxModelError, match="as in the probe run at load"):
        f(np.full((2, 4), 0.99 if w < 4 else 0.0, np.float32))


# --------------------------------------------------------- resource limits
def _bomb(n: int) -> onnx.ModelProto:
    """A few hundred bytes whose forward pass allocates ``n`` floats (ConstantOfShape)."""
    one = numpy_helper.from_array(np.array([1.0], np.float32))
    nodes = [
        helper.make_node("ConstantOfShape", ["shp"], ["big"], value=one),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Add", ["x", "z"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([n], np.int64), "shp"),
             numpy_helper.from_array(np.array(0, np.float32), "zero")]  # fmt: skip
    return _graph(nodes, inits, TensorProto.FLOAT, TensorProto.FLOAT, ["N", 4])


def test_allocation_bomb_fails_fast():
    """2^31 floats (8 GiB) from a ~200-byte model: refused at load, at the probe, within
    a second, without allocating (the arena's ceiling refuses the request)."""
    m = _bomb(2**31)
    assert len(m.SerializeToString()) < 300
    t = time.perf_counter()
    with pytest.raises(ResourceLimitError, match="memory_limit"):
        OnnxModel(m)
    assert time.perf_counter() - t < 5
    with pytest.raises(ResourceLimitError, match="memory_limit"):
        read_chain(m)


def test_memory_limit_is_a_real_ceiling():
    """2^22 floats (16 MiB): fine under the default ceiling, refused under 8 MiB."""
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(OnnxModel(_bomb(2**22))(x), x)
    with pytest.raises(ResourceLimitError, match="ceiling of 8388608 bytes"):
        OnnxModel(_bomb(2**22), memory_limit=8 * 2**20)


def _endless_loop() -> onnx.ModelProto:
    body = identity_loop_body()
    inits = [numpy_helper.from_array(np.array(10**12, np.int64), "M"),
             numpy_helper.from_array(np.array(True), "cond")]  # fmt: skip
    loop = helper.make_node("Loop", ["M", "cond", "x"], ["y"], body=body)
    return _graph([loop], inits, TensorProto.FLOAT, TensorProto.FLOAT, ["N", 4])


def test_endless_loop_is_refused_then_stopped_by_the_time_limit():
    m = _endless_loop()
    with pytest.raises(UnsupportedGraphError, match="control flow"):
        OnnxModel(m)
    t = time.perf_counter()
    with pytest.raises(ResourceLimitError, match="time limit of 0.5 s"):
        OnnxModel(m, allow_control_flow=True, time_limit=0.5)
    assert time.perf_counter() - t < 5


def test_file_size_is_checked_before_reading(tmp_path, monkeypatch):
    p = tmp_path / "big.onnx"
    with open(p, "wb") as fh:  # sparse file: 3 GB announced, nothing written
        fh.truncate(3 * 2**30)
    read = []
    real_open = open

    def spy(path, mode="r", *a, **k):
        read.append((str(path), mode))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", spy)
    t = time.perf_counter()
    with pytest.raises(ResourceLimitError, match="more than the limit of 2147483648"):
        OnnxModel(p)
    assert time.perf_counter() - t < 1 and not any(r[0] == str(p) for r in read)
    c = numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")
    small = _save(_plus_c(c), tmp_path, "small.onnx")
    half = small.stat().st_size // 2
    with pytest.raises(ResourceLimitError, match="max_bytes"):
        OnnxModel(small, max_bytes=half)
    monkeypatch.setenv("REFINV_MAX_MODEL_BYTES", str(half))
    with pytest.raises(ResourceLimitError):
        load_onnx(small)
    assert OnnxModel(small, max_bytes=0).sample_shape == (4,)


def test_bad_limit_values_are_config_errors(monkeypatch):
    c = numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")
    with pytest.raises(RefinvError, match="time_limit"):
        OnnxModel(_plus_c(c), time_limit=-1)
    monkeypatch.setenv("REFINV_ORT_MEMORY_LIMIT", "lots")
    with pytest.raises(RefinvError, match="REFINV_ORT_MEMORY_LIMIT"):
        OnnxModel(_plus_c(c))


def test_run_errors_are_wrapped_with_the_node_name():
    """A Conv whose weight does not fit the input: onnxruntime fails at run; the error is an
    OnnxModelError that names the node (as onnxruntime's optimizer renamed it) and its op."""
    w = numpy_helper.from_array(np.ones((1, 3, 3, 3), np.float32), "w")
    m = _graph([helper.make_node("Conv", ["x", "w"], ["y"], name="bad_conv")], [w],
               TensorProto.FLOAT, TensorProto.FLOAT, ["N", 1, 4, 4],
               in_shape=["N", 1, 6, 6])  # fmt: skip
    with pytest.raises(OnnxModelError, match=r"node \S+ \(op Conv\): Input channels"):
        OnnxModel(m, memory_limit=0)


def test_telemetry_is_disabled_unless_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(ort, "disable_telemetry_events", lambda: calls.append("off"))
    monkeypatch.setattr(ort, "enable_telemetry_events", lambda: calls.append("on"))
    c = numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")
    monkeypatch.setattr(session_mod, "_TELEMETRY_DONE", False)
    OnnxModel(_plus_c(c))
    OnnxModel(_plus_c(c))
    monkeypatch.setattr(session_mod, "_TELEMETRY_DONE", False)
    monkeypatch.setenv("REFINV_ORT_TELEMETRY", "1")
    OnnxModel(_plus_c(c))
    assert calls == ["off", "on"]


def test_node_count_and_sparse_dense_size_are_capped(monkeypatch):
    nodes = [
        helper.make_node("Identity", ["x" if i == 0 else f"t{i - 1}"], ["y" if i == 5 else f"t{i}"])
        for i in range(6)
    ]
    m = _graph(nodes, [], TensorProto.FLOAT, TensorProto.FLOAT, ["N", 4])
    assert OnnxModel(m).sample_shape == (4,)
    monkeypatch.setenv("REFINV_MAX_NODES", "5")
    with pytest.raises(ResourceLimitError, match="6 nodes .* more than the limit of 5"):
        OnnxModel(m)
    monkeypatch.delenv("REFINV_MAX_NODES")
    g = external_model("sparse_initializer_values", None)
    g.graph.sparse_initializer[0].dims[0] = 2**27  # 512 MiB once dense
    with pytest.raises(ResourceLimitError, match="sparse tensors make 536870912 bytes"):
        load_onnx(g)
