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


CU12 = ['nvidia-cuda-runtime-cu12~=12.0; extra == "cuda"']  # onnxruntime-gpu 1.18-1.26
CU13 = ['nvidia-cuda-runtime~=13.0; extra == "cuda"']  # 1.28+


def _fake_install(monkeypatch, providers, dists: dict[str, str], requires=None):
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(providers))
    real = metadata.version
    real_requires = metadata.requires

    def reqs(name):
        if name == "onnxruntime-gpu":
            if name not in dists:
                raise metadata.PackageNotFoundError(name)
            return list(requires or [])
        return real_requires(name)

    monkeypatch.setattr(metadata, "requires", reqs)

    def version(name):
        if name in ("onnxruntime", "onnxruntime-gpu"):
            if name not in dists:
                raise metadata.PackageNotFoundError(name)
            return dists[name]
        return real(name)

    monkeypatch.setattr(metadata, "version", version)


def test_mixed_install_detected_with_the_exact_fix(monkeypatch):
    _fake_install(monkeypatch, CPU_ONLY, {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"},
                  CU13)  # fmt: skip
    with pytest.raises(BackendError) as e:
        OnnxModel(_identity_model(), provider="cuda")
    msg = str(e.value)
    assert "both onnxruntime 1.31.1 (CPU) and onnxruntime-gpu 1.31.1" in msg
    assert session_mod.GPU_INSTALL in msg
    assert session_mod.GPU_INSTALL == (  # the gpu extra's CUDA major (13)
        "pip uninstall -y onnxruntime onnxruntime-gpu && pip install "
        "'onnxruntime-gpu[cuda,cudnn]>=1.27'"
    )
    assert "refinv[gpu]" not in msg  # not the command that produced the broken install


def test_the_fix_keeps_the_cuda_major_of_the_installed_gpu_runtime(monkeypatch):
    """A CUDA 12 onnxruntime-gpu (1.26) mixed with the CPU build: the fix reinstalls a CUDA 12
    build (the gpu-cuda12 route), not the CUDA 13 one."""
    _fake_install(monkeypatch, CPU_ONLY, {"onnxruntime": "1.26.0", "onnxruntime-gpu": "1.26.0"},
                  CU12)  # fmt: skip
    with pytest.raises(BackendError) as e:
        OnnxModel(_identity_model(), provider="cuda")
    assert "pip install 'onnxruntime-gpu[cuda,cudnn]>=1.18,<1.27'" in str(e.value)


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


@pytest.mark.parametrize("requires, major", [(CU13, 13), (CU12, 12)])
def test_listed_cuda_provider_that_falls_back_is_refused(monkeypatch, capfd, caplog, requires,
                                                         major):  # fmt: skip
    """onnxruntime-gpu lists CUDA but falls back to the CPU when no GPU / CUDA libraries: the
    error names the CUDA major the installed onnxruntime-gpu needs (not a fixed "CUDA 12") and
    what onnxruntime said; onnxruntime's raw coloured line does not reach the terminal, it
    goes to the refinv.onnx logger."""
    import logging
    import os

    _fake_install(
        monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"],
        {"onnxruntime-gpu": "1.31.1"}, requires,
    )  # fmt: skip
    real = ort.InferenceSession
    raw = (f"\x1b[0;93m2026-12-07 14:00:00 [W:onnxruntime:Default, provider_bridge_ort.cc:2251 "
           f"TryGetProviderInfo_CUDA] Require cuDNN 9.* and CUDA {major}.*\x1b[m\n")  # fmt: skip

    def session(data, sess_options=None, providers=None, **kw):  # what the fallback looks like
        os.write(2, raw.encode())  # onnxruntime's C++ logger writes to fd 2
        return real(data, sess_options=sess_options, providers=["CPUExecutionProvider"], **kw)

    monkeypatch.setattr(ort, "InferenceSession", session)
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="refinv.onnx"):
        with pytest.raises(BackendError, match="could not start its CUDA provider") as e:
            OnnxModel(_identity_model(), provider="cuda")
    msg = str(e.value)
    assert f"the CUDA {major} and cuDNN 9 libraries it needs" in msg
    assert f"onnxruntime said: Require cuDNN 9.* and CUDA {major}.*" in msg
    want = ">=1.27" if major == 13 else ">=1.18,<1.27"
    assert f"pip install 'onnxruntime-gpu[cuda,cudnn]{want}'" in msg
    assert "Require cuDNN" not in capfd.readouterr().err  # nothing raw on the terminal
    assert any("Require cuDNN 9.*" in r.getMessage() for r in caplog.records)


def test_real_install_is_not_mixed():
    """This environment (CI's) has exactly one onnxruntime distribution."""
    have = [d for d in ("onnxruntime", "onnxruntime-gpu") if session_mod._dist_version(d)]
    assert len(have) == 1, have


# ------------------------------------------------------------------ one CUDA major
def _extras() -> dict[str, list[str]]:
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with open(root / "pyproject.toml", "rb") as fp:
        return tomllib.load(fp)["project"]["optional-dependencies"]


def _cupy_major(requirement: str) -> int:
    import re

    m = re.match(r"cupy-cuda(\d+)x", requirement)
    assert m, f"expected a cupy-cudaNNx requirement, got {requirement!r}"
    return int(m.group(1))


def test_the_gpu_extras_name_the_cupy_of_their_route():
    """pyproject's gpu extras and refinv.backend.GPU_ROUTES (what the docs and errors say)
    name the same CuPy package, built for the route's CUDA major."""
    from refinv.backend import GPU_DEFAULT, GPU_ROUTES

    extras = _extras()
    assert GPU_DEFAULT.extra == "gpu"
    for major, route in GPU_ROUTES.items():
        (req,) = extras[route.extra]
        assert req.startswith(route.cupy) and _cupy_major(req) == major == route.cuda_major


def test_cuda_major_of_requirements():
    from refinv.backend import cuda_major_of_requirements as major

    assert major(['nvidia-cuda-runtime~=13.0; extra == "cuda"']) == 13  # 1.28+
    assert major(['nvidia-cuda-runtime-cu13~=13.0; extra == "cuda"']) == 13  # 1.27
    assert major(["numpy", 'nvidia-cuda-runtime-cu12~=12.0; extra == "cuda"']) == 12
    assert major(["numpy>=1.21", "protobuf"]) is None and major(None) is None


def _resolve(spec: str) -> dict:
    """``pip install --dry-run --report`` of ``spec`` (metadata only, nothing installed);
    skips when the package index cannot be reached."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = f"{tmp}/report.json"
        res = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
             "--no-deps", "--quiet", "--retries", "0", "--timeout", "15", "--report", report,
             spec],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if res.returncode != 0:
            pytest.skip(f"pip cannot resolve {spec} here (offline?): {res.stderr[-300:]}")
        with open(report) as fp:
            (item,) = json.load(fp)["install"]
    return item["metadata"]


@pytest.mark.parametrize("major", [13, 12])
def test_resolved_onnxruntime_gpu_is_built_for_the_cupy_of_its_extra(major):
    """What pip resolves TODAY for each route's install command is an onnxruntime-gpu built
    for the CUDA major of the CuPy the extra names (its `cuda` extra's nvidia-cuda-runtime);
    skips offline."""
    from refinv.backend import GPU_ROUTES, cuda_major_of_requirements

    route = GPU_ROUTES[major]
    meta = _resolve(f"onnxruntime-gpu[cuda,cudnn]{route.onnxruntime_gpu}")
    assert cuda_major_of_requirements(meta.get("requires_dist")) == major, (
        meta["version"],
        [r for r in meta.get("requires_dist", []) if "nvidia" in r],
    )
    (req,) = _extras()[route.extra]
    assert _cupy_major(req) == major


@pytest.mark.slow
@pytest.mark.parametrize("major", [13, 12])
def test_resolved_cuda_provider_links_the_cuda_major_of_the_extra(major, tmp_path):
    """The CUDA libraries the resolved wheel's CUDA provider LINKS (readelf -d: libcudart.so.N,
    libcublas.so.N) are those of the extra's CuPy (downloads the ~270 MB wheel; slow)."""
    import re
    import shutil
    import subprocess
    import sys
    import zipfile

    from refinv.backend import GPU_ROUTES

    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) not installed")
    route = GPU_ROUTES[major]
    res = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--retries", "0",
         "-d", str(tmp_path), f"onnxruntime-gpu{route.onnxruntime_gpu}"],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    if res.returncode != 0:
        pytest.skip(f"pip cannot download onnxruntime-gpu here (offline?): {res.stderr[-300:]}")
    (wheel,) = tmp_path.glob("onnxruntime_gpu-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extract("onnxruntime/capi/libonnxruntime_providers_cuda.so", tmp_path)
    so = tmp_path / "onnxruntime/capi/libonnxruntime_providers_cuda.so"
    needed = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True).stdout
    libs = dict(re.findall(r"\[(libcudart|libcublas)\.so\.(\d+)\]", needed))
    assert libs == {"libcudart": str(major), "libcublas": str(major)}, needed
