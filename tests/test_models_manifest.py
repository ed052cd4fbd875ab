"""Checks of the shipped reference models and data against ``models/MANIFEST.json``.

Fast (a few seconds): hashes, shapes, value ranges, ONNX properties, and that
each shipped autoencoder / decoder reproduces its recorded train MSE through
onnxruntime (CPUExecutionProvider, float32).

MSE tolerance: 10 % relative, with an absolute floor of 1e-12. Below ~1e-12
the error of a perfectly fitted model is float32 rounding noise of the
outputs (per-pixel errors ~1e-7..1e-6, amplified through 7-10 layers), and
onnxruntime's summation order (thread count, CPU kernels) moves such values
by more than 10 %; a real defect (wrong weights, wrong data, wrong order of
images) gives MSEs many orders of magnitude above the floor.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

MODELS = Path(__file__).resolve().parents[1] / "models"
MANIFEST = MODELS / "MANIFEST.json"
MSE_REL_TOL = 0.10
MSE_ABS_FLOOR = 1e-12
SIZE_LIMIT = 105_000_000  # bytes: the budget of models/ (U-Net, conv and deep-FC issues), 105 MB
# (100 MB until the gradient-trained U-Net, 7.8 MB, was shipped)
SHIPPED_SUFFIXES = {".onnx", ".npz"}

pytestmark = pytest.mark.skipif(not MANIFEST.exists(), reason="models/MANIFEST.json missing")


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text())["files"]


def _entries(*kinds):
    if not MANIFEST.exists():
        return []
    return [pytest.param(k, v, id=k) for k, v in _manifest().items() if v["kind"] in kinds]


@cache
def _session(rel: str):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # small models: threads only cost start-up and spinning
    return ort.InferenceSession(str(MODELS / rel), so, providers=["CPUExecutionProvider"])


def _run(rel: str, x: np.ndarray) -> np.ndarray:
    s = _session(rel)
    return s.run(None, {s.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


@cache
def _npz(rel: str) -> dict:
    with np.load(MODELS / rel, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _dataset_file(rec: dict) -> str:
    # "data/digits8.npz (flattened ...)" -> "data/digits8.npz"
    return rec["dataset"].split()[0]


def _train_images(rec: dict) -> np.ndarray:
    # split: a key of the data file, or "key[:n]" (the first n images of that key)
    key, _, head = rec.get("split", "train").partition("[:")
    x = _npz(_dataset_file(rec))[key]
    if head:
        x = x[: int(head.rstrip("]"))]
        assert x.shape[0] == rec["n_train"]
    shape = rec.get("input_shape")
    if rec["kind"] == "autoencoder" and shape is not None:
        x = x.reshape(x.shape[0], *shape[1:])
    return x


def _assert_mse_close(got: float, want: float):
    tol = max(MSE_REL_TOL * want, MSE_ABS_FLOOR)
    assert abs(got - want) <= tol, f"train MSE {got:.4g} vs recorded {want:.4g} (tol {tol:.2g})"


def _mse(a, b) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


# --------------------------------------------------------------------------- provenance


def test_every_shipped_file_is_in_the_manifest():
    listed = set(_manifest())
    shipped = {
        str(p.relative_to(MODELS))
        for p in MODELS.rglob("*")
        if p.is_file() and p.suffix in SHIPPED_SUFFIXES
    }
    assert shipped == listed, {"unlisted": shipped - listed, "missing": listed - shipped}


@pytest.mark.parametrize("rel", sorted(_manifest()) if MANIFEST.exists() else [])
def test_sha256_and_size(rel):
    rec = _manifest()[rel]
    data = (MODELS / rel).read_bytes()
    assert hashlib.sha256(data).hexdigest() == rec["sha256"]
    assert len(data) == rec["size_bytes"]


def test_total_size_below_limit():
    total = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file())
    assert total < SIZE_LIMIT, f"models/ is {total / 2**20:.1f} MiB"


def test_no_pickles_anywhere():
    bad = [
        p for p in MODELS.rglob("*") if p.suffix in {".pkl", ".pickle", ".pt", ".pth", ".joblib"}
    ]
    assert not bad
    for p in MODELS.rglob("*.npz"):
        with np.load(p, allow_pickle=False) as z:
            for k in z.files:
                assert z[k].dtype != object, (p, k)


# --------------------------------------------------------------------------- data


@pytest.mark.parametrize("rel,rec", _entries("data"))
def test_data_npz(rel, rec):
    z = _npz(rel)
    # keys: train and test, plus nested training subsets trainN == train[:N], an optional
    # validation split val, and SPLIT_source (int, one per image of SPLIT)
    images = [k for k in ("train", "val", "test") if k in z]
    extra = sorted(set(z) - set(images))
    assert {"train", "test"} <= set(z), sorted(z)
    for key in extra:
        if key.endswith("_source"):
            split = key.removesuffix("_source")
            assert split in images and z[key].shape == (len(z[split]),), key
            assert np.issubdtype(z[key].dtype, np.integer) and z[key].min() >= 0, key
            continue
        assert key.startswith("train") and key[5:].isdigit(), key
        np.testing.assert_array_equal(z[key], z["train"][: int(key[5:])])
    for key in images:
        a = z[key]
        assert a.dtype == np.float32
        assert a.ndim == 4
        assert list(a.shape) == rec["shapes"][key]
        assert np.isfinite(a).all()
        assert a.min() >= 0.0 and a.max() <= 1.0
    assert z["train"].shape[1:] == z["test"].shape[1:]
    assert z["train"].shape[0] == rec["n_train"]
    # held-out images are really different images (no image of one split in another)
    seen: dict[bytes, str] = {}
    for key in images:
        for row in z[key].reshape(len(z[key]), -1):
            b = row.tobytes()
            assert seen.get(b, key) == key, f"an image of {key} is also in {seen[b]}"
            seen[b] = key


EXPECTED_SHAPES = {
    "data/digits8.npz": (100, 100, (1, 8, 8)),
    "data/digits28.npz": (100, 100, (1, 28, 28)),
    "data/faces25.npz": (100, 100, (1, 25, 25)),
    "data/colour32.npz": (50, 50, (3, 32, 32)),
    "data/digits28_1797.npz": (1200, 597, (1, 28, 28)),
    "data/natural16.npz": (1200, 3262, (3, 16, 16)),
}


def test_all_digits_file_extends_digits28():
    """digits28_1797 starts with exactly the 100 / 100 images of digits28 (nested data sets)."""
    big, small = _npz("data/digits28_1797.npz"), _npz("data/digits28.npz")
    np.testing.assert_array_equal(big["train"][:100], small["train"])
    np.testing.assert_array_equal(big["test"][:100], small["test"])


def test_natural_tiles_file():
    """natural16: 1,200 / 300 / >= 3,000 tiles, none near-constant, every one of the nine
    photographs in every split and none supplying more than 550 tiles."""
    z = _npz("data/natural16.npz")
    assert z["val"].shape == (300, 3, 16, 16) and z["test"].shape[0] >= 3000
    for key in ("train", "val", "test"):
        a = z[key].reshape(len(z[key]), 3, -1)
        assert a.std(axis=2).max(axis=1).min() >= 0.02, key
        assert set(np.unique(z[f"{key}_source"])) == set(range(9)), key
    src = np.concatenate([z["train_source"], z["val_source"], z["test_source"]])
    assert np.bincount(src).max() <= 550


@pytest.mark.parametrize("rel", sorted(EXPECTED_SHAPES))
def test_documented_data_shapes(rel):
    n_tr, n_te, shape = EXPECTED_SHAPES[rel]
    z = _npz(rel)
    assert z["train"].shape == (n_tr, *shape)
    assert z["test"].shape == (n_te, *shape)


# --------------------------------------------------------------------------- ONNX models


@pytest.mark.parametrize("rel,rec", _entries("autoencoder", "decoder", "encoder"))
def test_onnx_file_properties(rel, rec):
    m = onnx.load(str(MODELS / rel))
    onnx.checker.check_model(m)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert rec["opset"] >= 17
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in m.graph.initializer)
    for t in m.graph.initializer:
        if t.data_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            pytest.fail(f"non-float32 initializer {t.name}")
    (inp,) = m.graph.input
    assert inp.name in ("x", "z")
    assert [o.name for o in m.graph.output] == ["y"]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dim0 = inp.type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value"), "batch axis must be dynamic"
    # declared shapes: symbolic batch, concrete sample dims (as in the manifest)
    for vi, want in ((inp, rec["input_shape"]), (m.graph.output[0], rec["output_shape"])):
        dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        assert dims[1:] == want[1:], (vi.name, dims, want)
        assert isinstance(dims[0], str)
    # dynamic batch really works: batch 1 and batch 3 give the per-sample results
    shape = rec["input_shape"][1:]
    x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    y3 = _run(rel, x)
    y1 = _run(rel, x[1:2])
    assert y3.shape[0] == 3 and y3.shape[1:] == tuple(rec["output_shape"][1:])
    np.testing.assert_allclose(y1[0], y3[1], rtol=1e-4, atol=1e-5)
    n = sum(int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type == 1)
    assert n >= rec["n_params"] * 0.99  # folded copies may add, never lose, parameters


@pytest.mark.parametrize("rel,rec", _entries("autoencoder"))
def test_autoencoder_reproduces_train_mse(rel, rec):
    x = _train_images(rec)
    _assert_mse_close(_mse(_run(rel, x), x), rec["train_mse"])
    assert 0.0 <= rec["attractor_fraction"] <= 1.0


@pytest.mark.parametrize("rel,rec", _entries("autoencoder"))
def test_autoencoder_does_not_fit_held_out_images(rel, rec):
    """The control of the memorization measure: held-out MSE is far above train MSE."""
    z = _npz(_dataset_file(rec))
    x = z["test"].reshape(z["test"].shape[0], *rec["input_shape"][1:])
    te = _mse(_run(rel, x), x)
    assert te == pytest.approx(rec["test_mse"], rel=1e-3, abs=1e-9)
    if rec["train_mse"] < 1e-6:
        assert te > 100 * rec["train_mse"]


@pytest.mark.parametrize("rel,rec", _entries("decoder"))
def test_decoder_reproduces_train_mse(rel, rec):
    z = _npz(rec["latents_file"])["z_train"]
    x = _npz(rec["dataset"])["train"]
    _assert_mse_close(_mse(_run(rel, z), x), rec["train_mse"])


@pytest.mark.parametrize("rel,rec", _entries("encoder"))
def test_encoder_gives_shipped_codes(rel, rec):
    x = _npz(rec["dataset"])["train"]
    z = _npz(rec["latents_file"])["z_train"]
    code = _run(rel, x)
    np.testing.assert_allclose(code, z, rtol=1e-4, atol=1e-5)
    assert (code >= 0).all()  # ReLU code
    dec = rec["decoder"]
    _assert_mse_close(_mse(_run(dec, code), x), rec["train_mse"])


@pytest.mark.parametrize("rel,rec", _entries("latents"))
def test_latents(rel, rec):
    z = _npz(rel)
    assert sorted(z) == ["z_test", "z_train"]
    for k, shape in rec["keys"].items():
        assert z[k].dtype == np.float32 and list(z[k].shape) == shape
        assert np.isfinite(z[k]).all()


@pytest.mark.parametrize("rel,rec", _entries("autoencoder"))
def test_checkpoints_are_ordered(rel, rec):
    """Checkpoints sit just below their threshold and are listed by their model."""
    if "checkpoint_of" in rec:
        assert rel in _manifest()[rec["checkpoint_of"]]["checkpoints"]
        assert rec["train_mse"] < rec["threshold"] * (1 + MSE_REL_TOL)
        assert rec["train_mse"] > rec["threshold"] / 100
    for c in rec.get("checkpoints", []):
        assert _manifest()[c]["checkpoint_of"] == rel


# --------------------------------------------------------------------------- Theorem 1


def _tied():
    recs = [(k, v) for k, v in _manifest().items() if v["kind"] == "weights"]
    assert recs, "no tied autoencoder weights in the manifest"
    return recs


def test_tied_autoencoder_satisfies_theorem1():
    for rel, rec in _tied():
        w = _npz(rel)
        W, b, slope = w["W"], w["b"], float(w["slope"])
        assert W.dtype == np.float32 and b.shape == (W.shape[0],)
        s = np.linalg.svd(W.astype(np.float64), compute_uv=False)
        assert s.min() >= 0.0 and s.max() <= 1.0, s.max()
        assert 0.0 <= slope <= 1.0  # LeakyReLU: s' in {slope, 1} inside [0, 1]
        # the ONNX graph is exactly Gemm(W, b) -> LeakyRelu -> MatMul(W) with these weights
        model_rel = rec["of_model"]
        m = onnx.load(str(MODELS / model_rel))
        assert [n.op_type for n in m.graph.node] == ["Gemm", "LeakyRelu", "MatMul"]
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
        gemm, lrelu, _ = m.graph.node
        np.testing.assert_array_equal(inits[gemm.input[1]], W)
        np.testing.assert_array_equal(inits[gemm.input[2]], b)
        assert {a.name: a for a in lrelu.attribute}["alpha"].f == pytest.approx(slope)
        # numerically: f(x) = W^T s(Wx + b), Jacobian symmetric PSD with eigenvalues in [0, 1]
        x = _npz(_dataset_file(_manifest()[model_rel]))["train"].reshape(-1, W.shape[1])
        u = x.astype(np.float64) @ W.T.astype(np.float64) + b
        ref = np.where(u > 0, u, slope * u) @ W.astype(np.float64)
        np.testing.assert_allclose(_run(model_rel, x), ref, atol=1e-5)
        d = np.where(u[0] > 0, 1.0, slope)
        J = W.T.astype(np.float64) @ (d[:, None] * W.astype(np.float64))
        ev = np.linalg.eigvalsh(J)
        assert ev.min() >= -1e-9 and ev.max() <= 1.0 + 1e-9


def test_theorem1_check_can_fail():
    """The singular-value check rejects a W with sigma_max > 1 (guards against a vacuous test)."""
    W = np.diag([1.5, 0.5]).astype(np.float32)
    assert np.linalg.svd(W, compute_uv=False).max() > 1.0
