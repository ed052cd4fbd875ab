import hashlib
import subprocess
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
    # in a fresh interpreter: other tests of this session (models/ scripts) import torch
    code = (
        "import sys; from refinv.provenance import environment; environment(); "
        "sys.exit(int(any(m in sys.modules for m in ('torch', 'onnx', 'onnxruntime'))))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_library_memorization_report_carries_the_cli_provenance_block(tmp_path):
    """``memorization_report()`` returns the schema name and the provenance block that
    ``refinv evaluate --json`` writes: the same keys, the model file with its sha256."""
    import json

    import numpy as np
    import onnx
    from test_recovery import onnx_ae, projection

    from refinv import OnnxModel
    from refinv.cli import main
    from refinv.evaluation.report import memorization_report
    from refinv.schemas import validate

    rng = np.random.default_rng(0)
    train, test = rng.random((3, 1, 4, 5)), rng.random((2, 1, 4, 5))
    onnx.save(onnx_ae([(projection(train), np.zeros(20), False)], (1, 4, 5)), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", train=train, test=test)
    f = OnnxModel(tmp_path / "m.onnx")
    doc = memorization_report(f, train.astype(np.float32), test.astype(np.float32),
                              solver={"max_iter": 3}, argv=["lib"])  # fmt: skip
    validate(doc, "report")
    assert doc["schema"] == "refinv.report"
    prov = doc["provenance"]
    assert prov["argv"] == ["lib"]
    assert prov["inputs"]["model"]["sha256"] == file_sha256(tmp_path / "m.onnx") == f.sha256
    assert main(["evaluate", str(tmp_path / "m.onnx"), "--train", f"{tmp_path / 'd.npz'}:train",
                 "--test", f"{tmp_path / 'd.npz'}:test", "--max-iter", "3", "--quiet",
                 "--json", str(tmp_path / "e.json")]) == 0  # fmt: skip
    cli = json.loads((tmp_path / "e.json").read_text())["provenance"]
    assert set(cli) == set(prov)
    assert cli["inputs"]["model"]["sha256"] == prov["inputs"]["model"]["sha256"]
    assert set(cli["environment"]) == set(prov["environment"])
