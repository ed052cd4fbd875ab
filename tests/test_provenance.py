import hashlib
import sys

from refinv.provenance import environment, file_sha256, provenance


def test_sha256_and_inputs(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(b"abc" * 1000)
    assert file_sha256(p) == hashlib.sha256(b"abc" * 1000).hexdigest()
    doc = provenance({"model": p, "data": None, "missing": tmp_path / "nope"}, argv=["x", "y"])
    assert doc["argv"] == ["x", "y"]
    assert doc["inputs"]["model"]["sha256"] == file_sha256(p)
    assert "data" not in doc["inputs"]
    assert doc["inputs"]["missing"]["sha256"] is None


def test_environment_lists_core_versions_without_importing_onnx():
    env = environment()
    for dist in ("numpy", "scipy", "onnx", "onnxruntime", "array-api-compat"):
        assert env["dependencies"][dist]
    assert "torch" not in sys.modules
