"""provider='cuda' on a broken GPU install: the mixed onnxruntime / onnxruntime-gpu install is
detected (both distributions per importlib.metadata, no CUDA provider) and the message gives
the exact command that fixes it. The provider list and the installed distributions are faked."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from refinv import OnnxModel
from refinv.errors import BackendError
from refinv.onnx import session as session_mod

CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]


def _identity_model():
    w = numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [w],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _fake_install(monkeypatch, providers, dists: dict[str, str]):
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(providers))
    real = metadata.version

    def version(name):
        if name in ("onnxruntime", "onnxruntime-gpu"):
            if name not in dists:
                raise metadata.PackageNotFoundError(name)
            return dists[name]
        return real(name)

    monkeypatch.setattr(metadata, "version", version)


def test_mixed_install_detected_with_the_exact_fix(monkeypatch):
    _fake_install(monkeypatch, CPU_ONLY, {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.0"})
    with pytest.raises(BackendError) as e:
        OnnxModel(_identity_model(), provider="cuda")
    msg = str(e.value)
    assert "both onnxruntime 1.22.0 (CPU) and onnxruntime-gpu 1.22.0" in msg
    assert session_mod.GPU_INSTALL in msg
    assert session_mod.GPU_INSTALL == (
        "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu>=1.18'"
    )
    assert "refinv[gpu]" not in msg  # not the command that produced the broken install


def test_cpu_runtime_only(monkeypatch):
    _fake_install(monkeypatch, CPU_ONLY, {"onnxruntime": "1.22.0"})
    with pytest.raises(BackendError, match="needs onnxruntime-gpu instead of the CPU") as e:
        OnnxModel(_identity_model(), provider="cuda")
    assert session_mod.GPU_INSTALL in str(e.value)


def test_gpu_runtime_without_cuda_provider(monkeypatch):
    _fake_install(monkeypatch, CPU_ONLY, {"onnxruntime-gpu": "1.22.0"})
    with pytest.raises(BackendError, match="onnxruntime-gpu 1.22.0 is installed but reports no"):
        OnnxModel(_identity_model(), provider="cuda")


def test_cpu_provider_unaffected(monkeypatch):
    _fake_install(monkeypatch, CPU_ONLY, {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.0"})
    f = OnnxModel(_identity_model(), provider="cpu")
    x = np.ones((2, 3), dtype=np.float32)
    assert np.array_equal(f(x), x)


def test_listed_cuda_provider_that_falls_back_is_refused(monkeypatch):
    """onnxruntime-gpu lists CUDA but falls back to the CPU when no GPU / CUDA libraries."""
    _fake_install(
        monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"], {"onnxruntime-gpu": "1"}
    )
    real = ort.InferenceSession

    def session(data, sess_options=None, providers=None, **kw):  # what the fallback looks like
        return real(data, sess_options=sess_options, providers=["CPUExecutionProvider"], **kw)

    monkeypatch.setattr(ort, "InferenceSession", session)
    with pytest.raises(BackendError, match="could not start its CUDA provider"):
        OnnxModel(_identity_model(), provider="cuda")


def test_real_install_is_not_mixed():
    """This environment (CI's) has exactly one onnxruntime distribution."""
    have = [d for d in ("onnxruntime", "onnxruntime-gpu") if session_mod._dist_version(d)]
    assert len(have) == 1, have
