"""``refinv inspect`` and ``refinv invert`` on a tiny torch-free ONNX generator."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

from refinv.cli import main


def _generator(path, rng, n0=6, n1=40, n=64):
    """tanh(W_2 ReLU(W_1 z)) as ONNX (float32, dynamic batch), image output (1, 8, 8)."""
    W1 = (rng.standard_normal((n1, n0)) / np.sqrt(n1)).astype(np.float32)
    W2 = (rng.standard_normal((n, n1)) / np.sqrt(n)).astype(np.float32)
    nodes = [
        oh.make_node("Gemm", ["z", "W1"], ["a"], transB=1, name="fc1"),
        oh.make_node("Relu", ["a"], ["h"], name="relu1"),
        oh.make_node("Gemm", ["h", "W2"], ["b"], transB=1, name="fc2"),
        oh.make_node("Reshape", ["b", "shape"], ["c"], name="unflatten"),
        oh.make_node("Tanh", ["c"], ["y"], name="tanh"),
    ]
    inits = [
        numpy_helper.from_array(W1, "W1"),
        numpy_helper.from_array(W2, "W2"),
        numpy_helper.from_array(np.array([-1, 1, 8, 8], np.int64), "shape"),
    ]
    g = oh.make_graph(
        nodes,
        "gen",
        [oh.make_tensor_value_info("z", TensorProto.FLOAT, ["N", n0])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])],
        inits,
    )
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return W1.astype(np.float64), W2.astype(np.float64)


@pytest.fixture()
def setup(tmp_path):
    rng = np.random.default_rng(0)
    model = tmp_path / "gen.onnx"
    W1, W2 = _generator(model, rng)
    z = rng.standard_normal((4, 6))
    y = np.tanh(np.maximum(z @ W1.T, 0) @ W2.T).reshape(4, 1, 8, 8)
    data = tmp_path / "data.npz"
    np.savez(data, y=y, z=z)
    return tmp_path, model, data


def test_inspect_prints_layers_and_writes_json(setup, capsys):
    tmp, model, _ = setup
    out = tmp / "inspect.json"
    assert main(["inspect", str(model), "--limit", "16", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "relu" in text and "tanh" in text and "Theorem 2" in text
    rep = json.loads(out.read_text())
    assert rep["n_params"] == 6 * 40 + 40 * 64
    assert rep["methods"]["latent-pursuit"] == "yes"
    assert [d["activation"] for d in rep["diagnostics"]["layers"]] == ["relu", "tanh"]
    assert 0 < rep["diagnostics"]["layers"][0]["coherence"] <= 1
    out2 = tmp / "inspect2.json"
    data = tmp / "data.npz"
    assert main(["inspect", str(model), "--latents", f"{data}:z", "--json", str(out2)]) == 0
    rep2 = json.loads(out2.read_text())
    assert rep2["diagnostics"]["samples"] == 4 and "data.npz" in rep2["diagnostics"]["latents"]


def test_inspect_unsupported_graph_reports_reason(tmp_path, capsys):
    g = oh.make_graph(
        [oh.make_node("Softmax", ["x"], ["y"], name="sm", axis=1)],
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])
    m.ir_version = 8
    p = tmp_path / "sm.onnx"
    onnx.save(m, p)
    out = tmp_path / "r.json"
    assert main(["inspect", str(p), "--json", str(out)]) == 0
    assert "Softmax" in json.loads(out.read_text())["error"]


@pytest.mark.parametrize("method", ["plugin", "gd", "lbp", "latent-pursuit", "oracle"])
def test_invert_every_method_writes_per_sample_json(setup, method):
    tmp, model, data = setup
    out = tmp / f"{method}.json"
    args = ["invert", str(model), str(data), "--method", method, "--json", str(out)]
    args += ["--max-iter", "3000"]
    if method == "gd":
        args += ["--backtracking", "--restarts", "2"]
    if method == "plugin":
        args += ["--restarts", "3", "--step", "norm"]
    assert main(args) == 0
    rep = json.loads(out.read_text())
    for k in ("latent_snr_db", "image_snr_db", "latent_rel_error", "measurement_error"):
        assert len(rep[k]) == 4
    assert rep["solver"]["n"] == 4 and rep["seconds"] > 0
    if method in ("lbp", "latent-pursuit", "oracle"):
        assert min(rep["latent_snr_db"]) > 60


def test_invert_with_mask_spec_and_save(setup):
    tmp, model, data = setup
    out, npz = tmp / "m.json", tmp / "zhat.npz"
    args = ["invert", str(model), str(data), "--method", "latent-pursuit", "--mask", "random:0.2"]
    assert main(args + ["--json", str(out), "--out", str(npz)]) == 0
    rep = json.loads(out.read_text())
    assert rep["observed_fraction"] == pytest.approx(0.8, abs=0.02)
    assert np.load(npz)["z_hat"].shape == (4, 6)


def test_invert_errors_are_clean(setup, tmp_path, capsys):
    _, model, _ = setup
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((2, 64)))
    assert main(["invert", str(model), str(bad), "--method", "plugin"]) == 2
    assert "'y'" in capsys.readouterr().err
    noz = tmp_path / "noz.npz"
    np.savez(noz, y=np.zeros((2, 64)))
    assert main(["invert", str(model), str(noz), "--method", "oracle"]) == 2


# ------------------------------------------------------------------ channels-last output
def _rgb_generator(path, W1, W2, layout: str) -> None:
    """ReLU(W1 z) -> W2 -> Reshape to (N, 3, 8, 8) (NCHW) or (N, 8, 8, 3) (NHWC, a Keras
    export's layout). W2's rows are those of the NCHW model, permuted for NHWC so that both
    give the same image: G_nhwc(z)[h, w, c] = G_nchw(z)[c, h, w]."""
    shape = [-1, 3, 8, 8] if layout == "NCHW" else [-1, 8, 8, 3]
    W = W2 if layout == "NCHW" else W2.reshape(3, 8, 8, -1).transpose(1, 2, 0, 3).reshape(192, -1)
    nodes = [
        oh.make_node("Gemm", ["z", "W1"], ["a"], transB=1),
        oh.make_node("Relu", ["a"], ["h"]),
        oh.make_node("Gemm", ["h", "W2"], ["b"], transB=1),
        oh.make_node("Reshape", ["b", "shape"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(W1.astype(np.float32), "W1"),
        numpy_helper.from_array(np.ascontiguousarray(W, dtype=np.float32), "W2"),
        numpy_helper.from_array(np.array(shape, np.int64), "shape"),
    ]
    g = oh.make_graph(
        nodes, "gen", [oh.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 6])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *shape[1:]])], inits,
    )  # fmt: skip
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


@pytest.fixture()
def rgb(tmp_path):
    """The same RGB generator exported channels-first and channels-last (Keras-style), with
    its observations y = G(z) in each one's own layout."""
    rng = np.random.default_rng(1)
    W1 = rng.standard_normal((40, 6)) / np.sqrt(40)
    W2 = rng.standard_normal((192, 40)) / np.sqrt(192)
    z = rng.standard_normal((3, 6))
    y = (np.maximum(z @ W1.T, 0) @ W2.T).reshape(3, 3, 8, 8)
    out = {}
    for layout, yl in (("NCHW", y), ("NHWC", np.moveaxis(y, 1, -1))):
        _rgb_generator(tmp_path / f"{layout}.onnx", W1, W2, layout)
        np.savez(tmp_path / f"{layout}.npz", y=yl, z=z)
        out[layout] = (tmp_path / f"{layout}.onnx", tmp_path / f"{layout}.npz")
    return tmp_path, out


@pytest.mark.parametrize("mask", ["random:0.45", "center:3", "rows:2"])
def test_invert_channels_last_generator_masks_pixels_like_channels_first(rgb, mask):
    """A channels-last generator output (N, 8, 8, 3) is detected as NHWC: the same per-pixel
    masks as on its channels-first twin (it was read as 8 channels of an 8x3 image: random
    masks erased whole columns and center:3 did not fit), and the same inversion."""
    tmp, files = rgb
    got = {}
    for layout, (model, data) in files.items():
        out, npz = tmp / f"{layout}.json", tmp / f"{layout}_z.npz"
        argv = ["invert", str(model), str(data), "--method", "latent-pursuit", "--mask", mask,
                "--seed", "3", "--json", str(out), "--out", str(npz)]  # fmt: skip
        assert main(argv) == 0, layout
        got[layout] = (json.loads(out.read_text()), np.load(npz)["z_hat"])
    (a, za), (b, zb) = got["NCHW"], got["NHWC"]
    assert a["output_layout"] == "NCHW" and b["output_layout"] == "NHWC"
    assert a["observed_fraction"] == b["observed_fraction"] < 1
    np.testing.assert_allclose(zb, za, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(b["measurement_error"], a["measurement_error"], atol=1e-9)


def test_channels_last_mask_is_per_pixel(rgb):
    """The mask of an NHWC output: one 0/1 value per (h, w), the same on the 3 channels, and
    exactly round(0.45 * 64) pixels erased per image."""
    import argparse

    from refinv.cli.invert import _mask_for

    args = argparse.Namespace(mask="random:0.45", seed=0, data="d.npz")
    m = _mask_for(args, {}, np.zeros((5, 8, 8, 3)), "NHWC")
    assert m.shape == (5, 8, 8, 3)
    assert np.all(m == m[..., :1])
    assert np.all((1 - m[..., 0]).sum(axis=(1, 2)) == round(0.45 * 64))


def test_ambiguous_output_layout_asks_for_layout(tmp_path, capsys):
    """(N, 3, 8, 3): 3 channels of 8x3 or of 3x8; refinv does not guess, and --layout
    decides."""
    from refinv.cli.invert import output_layout
    from refinv.errors import ConfigError

    with pytest.raises(ConfigError, match="pass --layout NCHW or --layout NHWC"):
        output_layout((3, 8, 3), None, "g.onnx")
    assert output_layout((3, 8, 3), "NHWC", "g.onnx") == "NHWC"
    assert output_layout((1, 28, 28), None, "g") == "NCHW"
    assert output_layout((28, 28, 1), None, "g") == "NHWC"
    assert output_layout((784,), None, "g") is None
