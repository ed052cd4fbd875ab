"""Input checks at their edges: chunked images with +-Inf (not only NaN), a folder given as an
input of a provenance block (no hash, not an error), a provenance block whose input lacks its
sha256 (invalid)."""

from __future__ import annotations

import copy
import hashlib

import jsonschema
import numpy as np
import pytest

from refinv.errors import NonFiniteError
from refinv.evaluation.chunked import NpzImages
from refinv.provenance import provenance
from refinv.schemas import validate


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", [0, 7, 11])
def test_chunked_images_refuse_any_non_finite_value(tmp_path, bad, where):
    """One non-finite value among 12 images of 2x3: the chunk that holds it is refused
    (chunks of 4: the error comes at chunk where // 4, the earlier ones are read)."""
    a = np.random.default_rng(0).random((12, 1, 2, 3)).astype(np.float32)
    a[where, 0, 1, 2] = bad
    p = tmp_path / "d.npz"
    np.savez(p, x=a)
    src = NpzImages(p, "x", sample_shape=(1, 2, 3))
    got = []
    with pytest.raises(NonFiniteError, match="NaN/Inf"):
        for s, _c in src.chunks(4):
            got.append(s)
    assert got == list(range(0, 4 * (where // 4), 4))


def test_provenance_of_a_folder_input_has_no_hash(tmp_path):
    """A folder (a sweep's output folder, a models folder) is recorded by path only; a file
    beside it is hashed."""
    d = tmp_path / "runs"
    d.mkdir()
    (d / "a.bin").write_bytes(b"x" * 10)
    f = tmp_path / "m.onnx"
    f.write_bytes(b"abc")
    doc = provenance({"folder": d, "model": f}, argv=["refinv"])
    assert doc["inputs"]["folder"] == {"path": str(d), "sha256": None}
    assert doc["inputs"]["model"]["sha256"] == hashlib.sha256(b"abc").hexdigest()
    validate(doc, "provenance")


def _block(tmp_path) -> dict:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"abc")
    doc = provenance({"model": f}, argv=["refinv", "x"])
    validate(doc, "provenance")
    return doc


def test_provenance_input_without_sha256_is_invalid(tmp_path):
    doc = _block(tmp_path)
    bad = copy.deepcopy(doc)
    del bad["inputs"]["model"]["sha256"]
    with pytest.raises(jsonschema.ValidationError, match="'sha256' is a required property"):
        validate(bad, "provenance")
    bad = copy.deepcopy(doc)
    del bad["inputs"]["model"]["path"]
    with pytest.raises(jsonschema.ValidationError, match="'path' is a required property"):
        validate(bad, "provenance")
    bad = copy.deepcopy(doc)
    bad["inputs"]["model"]["sha256"] = "A" * 64  # upper-case hex is not what refinv writes
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, "provenance")
    ok = copy.deepcopy(doc)
    ok["inputs"]["model"]["sha256"] = None  # a path that was not a file
    validate(ok, "provenance")
