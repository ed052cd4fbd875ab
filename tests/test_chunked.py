"""Chunked recovery: the same run entry and outputs for every chunk size; flat-memory I/O."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from refinv.cli import main
from refinv.errors import ConfigError, DTypeError, NonFiniteError, ShapeError
from refinv.evaluation.chunked import (
    NpzImages,
    NpzStreamWriter,
    evaluate_split_chunked,
    mean_loss,
)
from refinv.evaluation.report import checkpoint_entry, evaluate_split
from refinv.io import load_images
from refinv.operators.masks import parse_mask

MODELS = Path(__file__).resolve().parents[1] / "models"


class Shrink:
    """A per-sample (batch-independent) autoencoder: x -> c + 0.6 (x - c), elementwise."""

    sample_shape = (1, 5, 6)
    output_sample_shape = (1, 5, 6)

    def __init__(self):
        self.c = np.linspace(0.2, 0.8, 30).reshape(1, 1, 5, 6).astype(np.float32)

    def __call__(self, x):
        return (self.c + np.float32(0.6) * (x - self.c)).astype(x.dtype)


def _strip(e: dict) -> dict:
    return {k: v for k, v in e.items() if k not in ("seconds", "onnx_seconds")}


@pytest.mark.parametrize("method", ["blind", "known", "ae-iterations"])
@pytest.mark.parametrize("mask", ["random:0.4", "blocks:2x2", "center:3"])
@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_every_chunk_size_gives_the_one_batch_entry(method, mask, noise):
    f = Shrink()
    x = np.random.default_rng(5).random((11, 1, 5, 6)).astype(np.float32)
    spec = parse_mask(mask)
    kw = dict(seed=3, noise_std=noise, solver={"max_iter": 8, "mask_init": "bernoulli"})
    whole, _, _, _ = evaluate_split(f, x, spec, method, **kw)
    for chunk in (1, 4, 11, 100):
        part = evaluate_split_chunked(f, x, spec, method, chunk=chunk, **kw)
        assert _strip(part) == _strip(whole), chunk


def _npz(tmp_path, **arrays) -> Path:
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return p


def test_npz_images_reads_what_load_images_reads(tmp_path):
    a = np.random.default_rng(0).random((10, 1, 5, 6))
    p = _npz(tmp_path, train=a, test=a[:3].reshape(3, 30))
    ref = load_images(p, "train", sample_shape=(1, 5, 6))
    src = NpzImages(p, "train", sample_shape=(1, 5, 6))
    assert len(src) == 10
    parts = list(src.chunks(4))
    assert [s for s, _ in parts] == [0, 4, 8] and [len(c) for _, c in parts] == [4, 4, 2]
    got = np.concatenate([c for _, c in parts])
    assert got.dtype == np.float32 and np.array_equal(got, ref)
    flat = NpzImages(p, "test", sample_shape=(1, 5, 6), dtype=np.float64)  # flat -> reshaped
    np.testing.assert_array_equal(next(flat.chunks(5))[1], a[:3])


def test_npz_images_refuses_bad_arrays(tmp_path):
    p = _npz(
        tmp_path, i=np.zeros((2, 30), np.int32), s=np.zeros((2, 7)), n=np.full((2, 30), np.nan)
    )
    with pytest.raises(DTypeError):
        NpzImages(p, "i", sample_shape=(1, 5, 6))
    with pytest.raises(ShapeError):
        NpzImages(p, "s", sample_shape=(1, 5, 6))
    with pytest.raises(ConfigError, match="no array"):
        NpzImages(p, "zz", sample_shape=(1, 5, 6))
    with pytest.raises(NonFiniteError):
        list(NpzImages(p, "n", sample_shape=(1, 5, 6)).chunks(1))
    q = tmp_path / "o.npz"
    np.savez(q, o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DTypeError):
        NpzImages(q, "o", sample_shape=(1,))


def test_stream_writer_matches_savez_and_is_atomic(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.random((7, 2, 3)).astype(np.float32), rng.integers(0, 9, 7)
    w = NpzStreamWriter(tmp_path / "o.npz", {"a": ((7, 2, 3), np.float32), "b": ((7,), np.int64)})
    for s in range(0, 7, 3):
        w.write("a", s, a[s : s + 3])
        w.write("b", s, b[s : s + 3])
    w.close()
    with np.load(tmp_path / "o.npz") as z:
        assert sorted(z.files) == ["a", "b"]
        assert np.array_equal(z["a"], a) and np.array_equal(z["b"], b)
    assert [p.name for p in tmp_path.iterdir()] == ["o.npz"]
    w = NpzStreamWriter(tmp_path / "p.npz", {"a": ((7, 2, 3), np.float32)})
    w.write("a", 0, a[:3])
    with pytest.raises(ShapeError):
        w.write("a", 5, a[3:])  # rows must come in order
    with pytest.raises(ShapeError, match="3 of 7"):
        w.close()
    assert [p.name for p in tmp_path.iterdir()] == ["o.npz"]  # nothing half-written


def test_mean_loss_is_the_checkpoint_loss():
    f = Shrink()
    x = np.random.default_rng(2).random((9, 1, 5, 6)).astype(np.float32)
    want = checkpoint_entry("m", f, x, None)["train_loss"]
    for chunk in (1, 4, 9):
        assert mean_loss(f, x, chunk) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("method", ["blind", "known", "ae-iterations"])
def test_recover_cli_chunk_size_does_not_change_the_outputs(tmp_path, method):
    model = MODELS / "onnx" / "digits8_lrelu_6x320.onnx"
    x = np.load(MODELS / "data" / "digits8.npz")["train"][:13]
    data = _npz(tmp_path, train=x)
    outs = {}
    for chunk in (4, 13):
        o, j = tmp_path / f"o{chunk}.npz", tmp_path / f"s{chunk}.json"
        rc = main(
            ["recover", str(model), str(data), "--method", method, "--max-iter", "4",
             "--chunk", str(chunk), "--out", str(o), "--json", str(j), "--quiet",
             "--threads", "1"]
        )  # fmt: skip
        assert rc == 0
        with np.load(o) as z:
            outs[chunk] = ({k: z[k] for k in z.files}, json.loads(j.read_text()))
    (a, da), (b, db) = outs[4], outs[13]
    assert sorted(a) == sorted(b) == sorted(
        ["x_hat", "y", "x", "mask", "mask_estimated", "iterations", "converged", "diverged",
         "mse", "psnr"]
    )  # fmt: skip
    assert a["x_hat"].shape == (13, *x.shape[1:]) and a["mask"].dtype == np.uint8
    for k in ("y", "x", "mask"):
        assert np.array_equal(a[k], b[k])
    # onnxruntime's kernels may round differently at another batch size: close, same verdict
    np.testing.assert_allclose(a["x_hat"], b["x_hat"], atol=1e-5)
    ra, rb = da["runs"][0], db["runs"][0]
    assert ra["n"] == rb["n"] == 13
    assert ra["accurate_rate"] == rb["accurate_rate"]
    assert da["checkpoints"][0]["train_loss"] == pytest.approx(db["checkpoints"][0]["train_loss"])


def test_recover_cli_refuses_bad_chunk(tmp_path, capsys):
    data = _npz(tmp_path, train=np.load(MODELS / "data" / "digits8.npz")["train"][:2])
    model = MODELS / "onnx" / "digits8_lrelu_6x320.onnx"
    assert main(["recover", str(model), str(data), "--chunk", "0", "--quiet"]) == 2
    assert "--chunk" in capsys.readouterr().err


def test_chunked_run_warns_once_naming_the_run():
    """A diverging model: the chunked run warns once per run (not once per chunk), naming
    checkpoint, mask, method and split, as evaluate_split does."""
    import warnings

    from refinv.errors import DivergenceWarning

    class Grow(Shrink):
        def __call__(self, x):
            return (np.float32(3.0) * x + np.float32(1.0)).astype(x.dtype)

    x = np.random.default_rng(0).uniform(0, 1, (7, 1, 5, 6)).astype(np.float32)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        e = evaluate_split_chunked(Grow(), x, parse_mask("random:0.5"), "ae-iterations",
                                   chunk=3, label="ck", split="test")  # fmt: skip
    msgs = [str(w.message) for w in got if issubclass(w.category, DivergenceWarning)]
    assert e["n_diverged"] == 7
    assert msgs == [msgs[0]] and msgs[0].startswith(
        "checkpoint ck, mask random:0.5, method ae-iterations, split test: 7 of 7"
    )


# ------------------------------------------------------------ refinv evaluate in chunks
def _per_image(doc: dict) -> list:
    keys = ("accurate_rate", "approximate_rate", "mean_psnr", "median_psnr", "converged_rate",
            "n_diverged", "erased_fraction", "mask_error", "mse", "psnr", "iterations",
            "converged", "diverged", "residual")  # fmt: skip
    return [
        (r["checkpoint"], r["mask"], r["method"], r["split"], *(r[k] for k in keys))
        for r in doc["runs"]
    ]


def test_report_in_chunks_is_the_one_batch_report():
    from refinv.evaluation.report import memorization_report

    f = Shrink()
    rng = np.random.default_rng(7)
    tr = rng.random((11, 1, 5, 6)).astype(np.float32)
    te = rng.random((9, 1, 5, 6)).astype(np.float32)
    kw = dict(masks=["random:0.4", "center:3"], methods=["blind", "known", "ae-iterations"],
              seed=4, solver={"max_iter": 6, "mask_init": "bernoulli"})  # fmt: skip
    whole = memorization_report([("m", f)], tr, te, **kw)
    for chunk in (1, 4, 100):
        part = memorization_report([("m", f)], tr, te, chunk=chunk, **kw)
        assert _per_image(part) == _per_image(whole), chunk
        for a, b in zip(part["checkpoints"], whole["checkpoints"], strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)
            assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-12)
    with pytest.raises(ConfigError, match="chunk"):
        memorization_report([("m", f)], tr, None, chunk=0, **kw)


def test_evaluate_cli_chunk_size_does_not_change_the_report(tmp_path, capsys):
    """The shipped digits8 MLP through onnxruntime, 20 + 20 images: chunks of 7 images give
    the per-image numbers of the one-batch run and of the library's unchunked report; the
    figures show the same images."""
    from refinv.evaluation.report import memorization_report
    from refinv.onnx import OnnxModel

    model = MODELS / "onnx" / "digits8_lrelu_6x320.onnx"
    src = MODELS / "data" / "digits8.npz"
    f = OnnxModel(model)
    tr, te = (load_images(src, k, sample_shape=f.sample_shape)[:20] for k in ("train", "test"))
    data = tmp_path / "d.npz"
    np.savez(data, train=tr, test=te)
    args = ["evaluate", str(model), "--train", f"{data}:train", "--test", f"{data}:test",
            "--mask", "random:0.5", "--method", "blind,known,ae-iterations",
            "--max-iter", "4", "--inner-iter", "2", "--quiet"]  # fmt: skip
    docs, figs = {}, {}
    for chunk in ("7", "100000"):
        out = tmp_path / chunk
        rc = main([*args, "--chunk", chunk, "--json", str(out / "r.json"),
                   "--figures", str(out / "fig")])  # fmt: skip
        assert rc == 0
        docs[chunk] = json.loads((out / "r.json").read_text())
        figs[chunk] = {p.name: p.read_bytes() for p in (out / "fig").glob("*.png")}
    capsys.readouterr()
    assert _per_image(docs["7"]) == _per_image(docs["100000"])
    assert len(docs["7"]["runs"]) == 6 and docs["7"]["runs"][0]["n"] == 20
    assert figs["7"] == figs["100000"] and len(figs["7"]) == 6  # the same first 6 images
    lib = memorization_report(
        [("digits8_lrelu_6x320", f)], tr, te, masks=["random:0.5"],
        methods=["blind", "known", "ae-iterations"], solver={"max_iter": 4, "inner_iter": 2},
    )  # fmt: skip
    assert _per_image(lib) == _per_image(docs["100000"])
    assert lib["checkpoints"][0]["train_loss"] == docs["100000"]["checkpoints"][0]["train_loss"]


def test_evaluate_cli_refuses_bad_chunk(tmp_path, capsys):
    data = MODELS / "data" / "digits8.npz"
    rc = main(["evaluate", str(MODELS / "onnx" / "digits8_lrelu_6x320.onnx"),
               "--train", f"{data}:train", "--chunk", "0", "--quiet"])  # fmt: skip
    assert rc == 2 and "--chunk: expected a positive integer, got 0" in capsys.readouterr().err
