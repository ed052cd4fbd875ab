"""Data files and models that used to end in a traceback (issue 33): a path component longer
than NAME_MAX, an ``.npy`` of format 3.0 inside an ``.npz``, float16 data that would grow
past the size cap once converted, a model with an Inf weight (stability, audit) and a hidden
layer of width 0 (inspect). Each gives a RefinvError (exit 2 in the CLI) or a correct result.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_recovery import onnx_ae, projection

from refinv.cli import main
from refinv.errors import ConfigError, NonFiniteError
from refinv.evaluation.chunked import NpzImages
from refinv.evaluation.diagnostics import mutual_coherence
from refinv.evaluation.stability import pnp_admm_stability
from refinv.io import _check_npz_size, check_writable, load_images, load_npz, parse_data_spec

LONG = "n" * 300  # longer than NAME_MAX (255 bytes on Linux, macOS and Windows file systems)


# ------------------------------------------------------------------ NAME_MAX
def test_a_path_component_longer_than_name_max_is_a_config_error(tmp_path):
    p = tmp_path / f"{LONG}.npz"
    for call in (
        lambda: load_npz(p),
        lambda: load_images(f"{p}:train"),
        lambda: load_images(p, "train"),
        lambda: parse_data_spec(f"{p}:train"),
        lambda: check_writable(tmp_path / LONG / "out.json", "--json"),
    ):
        with pytest.raises(ConfigError, match="too long: expected file and folder names of at"):
            call()


def test_cli_data_path_too_long_exits_2(tmp_path, capsys):
    rng = np.random.default_rng(0)
    train = rng.random((3, 1, 4, 4))
    onnx.save(onnx_ae([(projection(train), np.zeros(16), False)], (1, 4, 4)), tmp_path / "m.onnx")
    rc = main(["recover", str(tmp_path / "m.onnx"), f"{tmp_path / LONG}.npz", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "too long" in err and "Traceback" not in err


# ------------------------------------------------------------------ .npy format 3.0
def _npz_of_v3(path: Path, a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, version=(3, 0))
    assert buf.getvalue()[6:8] == b"\x03\x00"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("train.npy", buf.getvalue())


def test_an_npy_of_format_3_inside_an_npz_is_read(tmp_path):
    a = np.random.default_rng(0).random((4, 1, 5, 5)).astype(np.float32)
    _npz_of_v3(tmp_path / "v3.npz", a)
    assert np.array_equal(load_npz(tmp_path / "v3.npz")["train"], a)
    assert np.array_equal(load_images(tmp_path / "v3.npz", "train"), a)
    chunks = NpzImages(tmp_path / "v3.npz", "train", sample_shape=(1, 5, 5)).chunks(3)
    assert np.array_equal(np.concatenate([c for _, c in chunks]), a)  # refinv recover's reader
    # a structured dtype with a non-latin-1 field name: what makes NumPy write 3.0 itself
    s = np.zeros(3, dtype=[("\u03bb", "<f4")])
    _npz_of_v3(tmp_path / "s.npz", s)
    assert _check_npz_size(tmp_path / "s.npz", 2**20) == {"train": ((3,), s.dtype)}


def test_a_forged_format_3_header_is_refused(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(4, np.float32), version=(3, 0))
    raw = buf.getvalue().replace(b"(4,)", b"(9**99,)")  # an expression, never evaluated
    with zipfile.ZipFile(tmp_path / "f.npz", "w") as z:
        z.writestr("train.npy", raw)
    with pytest.raises(ConfigError, match="not a readable .npy array"):
        load_npz(tmp_path / "f.npz")


# ------------------------------------------------------------------ what the bytes become
def test_float16_data_that_would_double_past_the_cap_is_refused(tmp_path, monkeypatch):
    a = np.zeros((8, 1, 16, 16), np.float16)  # 4096 bytes of float16, 8192 as float32
    np.savez(tmp_path / "h.npz", train=a)
    monkeypatch.setenv("REFINV_NPZ_MAX_BYTES", "6000")
    assert load_npz(tmp_path / "h.npz")["train"].nbytes == 4096  # the bytes fit the cap
    with pytest.raises(ConfigError, match="at most 6000 bytes as float32.*would take 8192 bytes"):
        load_images(tmp_path / "h.npz", "train")
    monkeypatch.setenv("REFINV_NPZ_MAX_BYTES", "8192")
    assert load_images(tmp_path / "h.npz", "train").dtype == np.float32


def test_load_images_reads_only_its_array(tmp_path, monkeypatch):
    """The other arrays of the file are not decompressed (they count against the cap only)."""
    np.savez(tmp_path / "two.npz", train=np.ones((2, 1, 3, 3), np.float32), other=np.ones(5))
    seen = []
    real = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(
        np.lib.npyio.NpzFile, "__getitem__", lambda self, k: (seen.append(k), real(self, k))[1]
    )
    load_images(tmp_path / "two.npz", "train")
    assert seen == ["train"]


# ------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("untrusted")
    rng = np.random.default_rng(0)
    train = rng.random((4, 1, 12, 12))
    np.savez(d / "data.npz", train=train.astype(np.float32), test=rng.random((4, 1, 12, 12)))
    w = projection(train)
    w[3, 4] = np.inf
    layers = [(w, np.zeros(144), True), (np.eye(144), np.zeros(144), False)]
    onnx.save(onnx_ae(layers, (1, 12, 12)), d / "inf.onnx")
    zero = [(np.zeros((0, 144)), np.zeros(0), True), (np.zeros((144, 0)), np.ones(144), False)]
    onnx.save(onnx_ae(zero, (1, 12, 12)), d / "width0.onnx")
    return d


@pytest.mark.parametrize("method", ["dense", "arnoldi"])
def test_stability_of_a_model_with_an_inf_weight_is_a_nonfinite_error(models, method):
    from refinv import OnnxModel

    f = OnnxModel(models / "inf.onnx")
    x = load_images(models / "data.npz", "train", sample_shape=f.sample_shape, dtype=np.float64)
    with pytest.raises(NonFiniteError, match="outputs next to image 0 are NaN/Inf"):
        pnp_admm_stability(f, x[:1], np.ones((1, 12, 12)), method=method)


@pytest.mark.parametrize("command", ["stability", "audit"])
def test_cli_stability_and_audit_on_an_inf_weight_exit_2(models, tmp_path, command, capsys):
    pytest.importorskip("sklearn") if command == "audit" else None
    d = models
    argv = {
        "stability": ["stability", d / "inf.onnx", f"{d / 'data.npz'}:train"],
        "audit": ["audit", d / "inf.onnx", "--train", f"{d / 'data.npz'}:train", "--test",
                  f"{d / 'data.npz'}:test", "--out", tmp_path / "a", "--max-iter", "2",
                  "--methods", "known", "--masks", "random:0.5", "--stability-n", "1",
                  "--bootstrap", "10", "--quiet"],
    }[command]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the recoveries' divergence warnings come first
        rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and "NaN/Inf" in err and "Traceback" not in err, err


def test_inspect_a_hidden_layer_of_width_0(models, capsys):
    assert main(["inspect", str(models / "width0.onnx")]) == 0
    out = capsys.readouterr().out
    assert "coherence 0.000" in out
    assert mutual_coherence(np.zeros((0, 144))) == 0.0
    assert mutual_coherence(np.zeros((144, 0))) == 0.0
