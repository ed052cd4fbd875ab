"""Model layouts: the same weights exported channels-first (NCHW), channels-last (NHWC, with
and without a layout Transpose in the graph) and flat (N, D) give the same masks, the same
recovered images and the same rates; skl2onnx's trailing Reshape(-1, 1) is repaired, other
batch-axis mismatches refused.

refinv's arrays are always (N, C, H, W): ``OnnxModel`` transposes (NHWC) or flattens (flat) at
the onnxruntime boundary, so everything downstream is layout-free.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from refinv import OnnxModel
from refinv.cli import main
from refinv.errors import ConfigError, OnnxModelError, ShapeError
from refinv.evaluation.report import degrade
from refinv.operators.masks import draw_masks, erase, parse_mask
from refinv.solvers.recovery import blind_recovery, known_mask_recovery

C, H, W = 3, 6, 6
D = C * H * W
# CHW index of each HWC position: x_hwc = x_chw[PERM]
PERM = np.arange(D).reshape(C, H, W).transpose(1, 2, 0).ravel()


def _model(nodes, inits, in_shape, out_shape, name="g"):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _shape(name, dims):
    return numpy_helper.from_array(np.asarray(dims, dtype=np.int64), name)


def _weights(seed=0, k=4):
    """A projection autoencoder ``x -> U U^T x`` onto the span of k training images (each a
    fixed point), and those images ``(k, C, H, W)``."""
    rng = np.random.default_rng(seed)
    train = rng.uniform(0.0, 1.0, (k, C, H, W))
    u, _ = np.linalg.qr(train.reshape(k, D).T)
    return (u @ u.T).astype(np.float32), train.astype(np.float32)


def dense_nchw(w):
    """(N, C, H, W) -> flatten -> x @ W^T -> (N, C, H, W)."""
    nodes = [
        helper.make_node("Reshape", ["x", "s_in"], ["f"]),
        helper.make_node("MatMul", ["f", "wt"], ["g"]),
        helper.make_node("Reshape", ["g", "s_out"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(w.T), "wt"),
        _shape("s_in", [-1, D]),
        _shape("s_out", [-1, C, H, W]),
    ]
    return _model(nodes, inits, ["N", C, H, W], ["N", C, H, W], "nchw")


def dense_nhwc_transposed(w):
    """What tf2onnx / Keras write for a channels-last model: Transpose to NCHW, the NCHW graph,
    Transpose back."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Reshape", ["t", "s_in"], ["f"]),
        helper.make_node("MatMul", ["f", "wt"], ["g"]),
        helper.make_node("Reshape", ["g", "s_out"], ["u"]),
        helper.make_node("Transpose", ["u"], ["y"], perm=[0, 2, 3, 1]),
    ]
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(w.T), "wt"),
        _shape("s_in", [-1, D]),
        _shape("s_out", [-1, C, H, W]),
    ]
    return _model(nodes, inits, ["N", H, W, C], ["N", H, W, C], "nhwc_t")


def dense_nhwc_native(w):
    """A graph that works channels-last itself (no Transpose): the same map on the
    HWC-flattened vector, ``W_hwc = W[PERM][:, PERM]``."""
    w_hwc = w[np.ix_(PERM, PERM)]
    nodes = [
        helper.make_node("Reshape", ["x", "s_in"], ["f"]),
        helper.make_node("MatMul", ["f", "wt"], ["g"]),
        helper.make_node("Reshape", ["g", "s_out"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(w_hwc.T), "wt"),
        _shape("s_in", [-1, D]),
        _shape("s_out", [-1, H, W, C]),
    ]
    return _model(nodes, inits, ["N", H, W, C], ["N", H, W, C], "nhwc_n")


def dense_flat(w):
    """(N, D) -> x @ W^T -> (N, D): the same weights on the row-major flattened (C, H, W)."""
    nodes = [helper.make_node("MatMul", ["x", "wt"], ["y"])]
    inits = [numpy_helper.from_array(np.ascontiguousarray(w.T), "wt")]
    return _model(nodes, inits, ["N", D], ["N", D], "flat")


@pytest.fixture(scope="module")
def weights():
    return _weights()


@pytest.fixture(scope="module")
def models(weights):
    w, _ = weights
    return {
        "nchw": OnnxModel(dense_nchw(w)),
        "nhwc_transpose": OnnxModel(dense_nhwc_transposed(w)),
        "nhwc_native": OnnxModel(dense_nhwc_native(w)),
        "flat": OnnxModel(dense_flat(w), image_shape=(C, H, W)),
    }


def _images(weights, n_test=3, seed=5):
    """The k training images and n_test held-out ones (N, C, H, W)."""
    _, train = weights
    test = np.random.default_rng(seed).uniform(0, 1, (n_test, C, H, W)).astype(np.float32)
    return np.concatenate([train, test])


# ------------------------------------------------------------------ detection
def test_layouts_are_detected_from_the_graph(models):
    f = models
    assert (f["nchw"].layout, f["nchw"].sample_shape) == ("NCHW", (C, H, W))
    assert f["nhwc_transpose"].layout == "NHWC"
    assert "Transpose" in f["nhwc_transpose"].layout_source
    assert f["nhwc_native"].layout == "NHWC"
    assert "channels last" in f["nhwc_native"].layout_source
    for k in ("nhwc_transpose", "nhwc_native"):
        assert f[k].onnx_sample_shape == (H, W, C)
        assert f[k].sample_shape == f[k].output_sample_shape == (C, H, W)
        assert f[k].is_autoencoder
    assert (f["flat"].layout, f["flat"].onnx_sample_shape) == ("flat", (D,))
    assert f["flat"].sample_shape == (C, H, W)
    info = f["nhwc_native"].layout_info()
    assert info["layout"] == "NHWC" and info["onnx_sample_shape"] == [H, W, C]
    assert info["sample_shape"] == [C, H, W] and info["batch_axis_restored"] is False
    json.dumps(info)


def test_declared_shape_rules():
    w = np.eye(28 * 28, dtype=np.float32)
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    for shape, want in [
        ((1, 28, 28), "NCHW"),
        ((3, 32, 32), "NCHW"),
        ((28, 28, 1), "NHWC"),
        ((32, 32, 3), "NHWC"),
        ((28, 28), "NHW"),
        ((784,), "flat"),
    ]:
        f = OnnxModel(_model(nodes, [], ["N", *shape], ["N", *shape]))
        assert f.layout == want, shape
    del w


@pytest.mark.parametrize("shape", [(3, 3, 3), (1, 28, 1), (2, 7, 5), (3, 32, 3)])
def test_ambiguous_layout_is_an_error_that_says_how_to_choose(shape):
    m = _model([helper.make_node("Identity", ["x"], ["y"])], [], ["N", *shape], ["N", *shape])
    with pytest.raises(OnnxModelError, match="cannot tell the layout") as ei:
        OnnxModel(m)
    assert "layout=" in str(ei.value) and "--layout" in str(ei.value)
    f = OnnxModel(m, layout="NHWC")
    assert f.sample_shape == (shape[2], shape[0], shape[1])
    x = np.random.default_rng(0).uniform(size=(2, *f.sample_shape)).astype(np.float32)
    np.testing.assert_array_equal(f(x), x)  # transposed there and back
    assert OnnxModel(m, layout="nchw").sample_shape == shape


def test_bad_layout_values():
    m = _model([helper.make_node("Identity", ["x"], ["y"])], [], ["N", 784], ["N", 784])
    with pytest.raises(ConfigError, match="expected one of NCHW, NHWC, flat"):
        OnnxModel(m, layout="CHW")
    with pytest.raises(ConfigError, match="needs a 4-D input"):
        OnnxModel(m, layout="NHWC")


def test_cli_ambiguous_layout_exit_2_and_layout_option(tmp_path, capsys):
    m = _model([helper.make_node("Identity", ["x"], ["y"])], [], ["N", 3, 3, 3], ["N", 3, 3, 3])
    onnx.save(m, tmp_path / "m.onnx")
    x = np.random.default_rng(0).uniform(size=(4, 3, 3, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", train=x)
    argv = ["recover", str(tmp_path / "m.onnx"), str(tmp_path / "d.npz"), "--quiet"]
    assert main([*argv, "--mask", "center:1", "--max-iter", "2"]) == 2
    err = capsys.readouterr().err
    assert "refinv recover: error:" in err and "--layout" in err
    out = tmp_path / "s.json"
    rc = main([*argv, "--mask", "center:1", "--max-iter", "2", "--layout", "NHWC", "--json",
               str(out)])  # fmt: skip
    assert rc == 0
    ck = json.loads(out.read_text())["checkpoints"][0]
    assert ck["layout"]["layout"] == "NHWC" and ck["layout"]["layout_source"] == "given (layout=)"


# ------------------------------------------------------------------ the adapter
def test_same_function_in_every_layout(models, weights):
    x = _images(weights)
    ref = np.einsum("ij,nj->ni", weights[0].astype(np.float64), x.reshape(len(x), D).astype(
        np.float64)).reshape(x.shape)  # fmt: skip
    outs = {k: f(x) for k, f in models.items()}
    for k, y in outs.items():
        assert y.shape == x.shape and y.flags.c_contiguous, k
        np.testing.assert_allclose(y, ref, atol=2e-6, err_msg=k)
    # the Transpose export and the flat export run the very same MatMul: bitwise equal
    np.testing.assert_array_equal(outs["nhwc_transpose"], outs["nchw"])
    np.testing.assert_array_equal(outs["flat"], outs["nchw"])
    # float64 batches and chunked calls go through the same boundary
    y64 = models["nhwc_native"](x.astype(np.float64))
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, ref, atol=2e-6)
    g = OnnxModel(dense_nhwc_native(weights[0]), batch_size=2)
    np.testing.assert_array_equal(g(x), outs["nhwc_native"])


def test_channels_are_transposed_not_reshaped():
    """A per-pixel dense layer over the channel axis (a 1x1 conv): NCHW as Conv, NHWC as a
    MatMul over the trailing axis of a graph without any Transpose. Equal outputs need the
    (N, C, H, W) data transposed to (N, H, W, C); a reshape would mix pixels and channels."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((C, C)).astype(np.float32)  # out channel x in channel
    hh, ww = 5, 7
    conv = _model(
        [helper.make_node("Conv", ["x", "k"], ["y"])],
        [numpy_helper.from_array(a.reshape(C, C, 1, 1), "k")],
        ["N", C, hh, ww],
        ["N", C, hh, ww],
    )
    last = _model(
        [helper.make_node("MatMul", ["x", "at"], ["y"])],
        [numpy_helper.from_array(np.ascontiguousarray(a.T), "at")],
        ["N", hh, ww, C],
        ["N", hh, ww, C],
    )
    f, g = OnnxModel(conv), OnnxModel(last)
    assert (f.layout, g.layout) == ("NCHW", "NHWC") and f.sample_shape == g.sample_shape
    x = rng.uniform(size=(4, C, hh, ww)).astype(np.float32)
    np.testing.assert_allclose(g(x), f(x), atol=1e-6)
    np.testing.assert_allclose(f(x), np.einsum("oc,nchw->nohw", a, x), atol=1e-5)
    # what the NHWC graph receives is the transpose (the NCHW mask transposed, per pixel)
    m = draw_masks("random:0.5", g.sample_shape, 4, 0)
    native = g._to_native(erase(x, m))
    np.testing.assert_array_equal(native, np.transpose(x, (0, 2, 3, 1)) * m[..., None])


MASKS = ["random:0.5", "blocks:2x2", "center:2", "half:left", "rows:2", "cols:2", "grid:2"]


@pytest.fixture(scope="module")
def mask_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("mask") / "m.npz"
    m = np.ones((H, W), dtype=np.uint8)
    m[1:4, 2:5] = 0
    np.savez(p, mask=m)
    return p


def test_every_mask_family_same_pixels_in_every_layout(models, mask_file):
    for spec in [*MASKS, f"file:{mask_file}", "ones"]:
        ms = {k: draw_masks(spec, f.sample_shape, 5, 7) for k, f in models.items()}
        for k, m in ms.items():
            assert m.shape == (5, H, W), (spec, k)
            np.testing.assert_array_equal(m, ms["nchw"], err_msg=f"{spec} {k}")


@pytest.mark.parametrize("spec", [*MASKS, "file"])
def test_known_mask_recovery_equal_in_every_layout(models, weights, mask_file, spec):
    spec = f"file:{mask_file}" if spec == "file" else spec
    x = _images(weights).astype(np.float64)
    y, mask = degrade(x, parse_mask(spec), seed=1)
    res = {k: known_mask_recovery(f, y, mask, max_iter=30) for k, f in models.items()}
    for k, r in res.items():
        np.testing.assert_allclose(r.x, res["nchw"].x, atol=1e-6, err_msg=f"{spec} {k}")
    np.testing.assert_array_equal(res["nhwc_transpose"].x, res["nchw"].x)
    np.testing.assert_array_equal(res["flat"].x, res["nchw"].x)


def test_blind_recovery_equal_in_every_layout(models, weights):
    x = _images(weights).astype(np.float64)
    y, mask = degrade(x, parse_mask("random:0.3"), seed=2)
    res = {k: blind_recovery(f, y, max_iter=30, rng=0) for k, f in models.items()}
    ref = res["nchw"]
    mse = np.mean((ref.x - x) ** 2, axis=(1, 2, 3))
    assert np.all(mse[:4] < 1e-7), mse  # the training images come back (the test is not idle)
    for k, r in res.items():
        np.testing.assert_allclose(r.x, ref.x, atol=1e-6, err_msg=k)
        np.testing.assert_array_equal(np.asarray(r.state.h), np.asarray(ref.state.h), err_msg=k)
    assert np.asarray(ref.state.h).shape == (len(x), 1, H, W)  # per pixel, summed over C


def test_flat_model_without_image_shape_names_the_fix(weights):
    f = OnnxModel(dense_flat(weights[0]))
    assert f.sample_shape == (D,) and f.image_shape is None
    with pytest.raises(ShapeError, match="image_shape=.*--image-shape"):
        draw_masks("center:2", f.sample_shape, 1)
    with pytest.raises(ConfigError, match=r"2x5x5 has 50 .* D = 108"):
        f.set_image_shape("2x5x5")
    with pytest.raises(ConfigError, match="image_shape"):
        OnnxModel(dense_nchw(weights[0]), image_shape=(1, 6, 18))
    f.set_image_shape("3x6x6")
    assert f.sample_shape == (C, H, W)
    g = OnnxModel(dense_flat(np.eye(D, dtype=np.float32)), image_shape=(18, 6))
    assert g.sample_shape == (1, 18, 6)


# ------------------------------------------------------------------ the CLI
def _save_all(tmp_path, weights):
    w, _ = weights
    paths = {}
    for k, build in [("nchw", dense_nchw), ("nhwc_transpose", dense_nhwc_transposed),
                     ("nhwc_native", dense_nhwc_native), ("flat", dense_flat)]:  # fmt: skip
        paths[k] = tmp_path / f"{k}.onnx"
        onnx.save(build(w), paths[k])
    x = _images(weights, n_test=4)
    np.savez(tmp_path / "d.npz", train=x[:4], test=x[4:])
    return paths, tmp_path / "d.npz"


def test_cli_evaluate_rates_equal_in_every_layout(tmp_path, weights, capsys):
    paths, data = _save_all(tmp_path, weights)
    docs = {}
    for k, p in paths.items():
        out = tmp_path / f"{k}.json"
        rc = main(["evaluate", str(p), "--train", f"{data}:train", "--test", f"{data}:test",
                   "--mask", "random:0.5,center:2,rows:2", "--method", "blind,known",
                   "--max-iter", "30", "--json", str(out), "--quiet"])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
        docs[k] = json.loads(out.read_text())
    capsys.readouterr()

    def rates(doc):
        return [(r["mask"], r["method"], r["split"], r["accurate_rate"], r["approximate_rate"])
                for r in doc["runs"]]  # fmt: skip

    for k, doc in docs.items():
        assert rates(doc) == rates(docs["nchw"]), k
        # per-sample MSEs equal up to float32 rounding (the NHWC graph without a Transpose sums
        # its MatMul in another order): ~1e-14 at the exact recoveries
        mse = np.array([r["mse"] for r in doc["runs"]], dtype=float)
        ref = np.array([r["mse"] for r in docs["nchw"]["runs"]], dtype=float)
        np.testing.assert_allclose(mse, ref, rtol=1e-4, atol=1e-12, err_msg=k)
    train_known = [r for r in docs["nchw"]["runs"] if r["split"] == "train"]
    assert max(r["accurate_rate"] for r in train_known) == 1.0  # training images come back
    lay = {k: d["checkpoints"][0]["layout"] for k, d in docs.items()}
    assert lay["nchw"]["layout"] == "NCHW"
    assert lay["nhwc_transpose"]["layout"] == lay["nhwc_native"]["layout"] == "NHWC"
    assert lay["flat"]["layout"] == "flat" and lay["flat"]["image_shape"] == [C, H, W]
    assert lay["flat"]["onnx_sample_shape"] == [D]


def test_cli_recover_flat_image_shape_from_data_and_option(tmp_path, weights, capsys):
    paths, data = _save_all(tmp_path, weights)
    base = ["recover", str(paths["flat"]), f"{data}:train", "--mask", "center:2",
            "--method", "known", "--max-iter", "5", "--quiet"]  # fmt: skip
    out = tmp_path / "r.npz"
    assert main([*base, "--out", str(out), "--json", str(tmp_path / "r.json")]) == 0
    with np.load(out) as z:
        assert z["x_hat"].shape == (4, C, H, W) and z["mask"].shape == (4, H, W)
    ck = json.loads((tmp_path / "r.json").read_text())["checkpoints"][0]
    assert ck["layout"]["image_shape"] == [C, H, W]
    # rows of (N, D) data: the image shape must come from --image-shape
    np.savez(tmp_path / "flat.npz", train=_images(weights)[:4].reshape(4, D))
    base[2] = f"{tmp_path / 'flat.npz'}:train"
    assert main(base) == 2
    assert "--image-shape" in capsys.readouterr().err
    assert main([*base, "--image-shape", "3x6x6"]) == 0
    assert main([*base, "--image-shape", "3x6x7"]) == 2
    err = capsys.readouterr().err
    assert "3x6x7 has 126" in err and "D = 108" in err


def test_inspect_reports_the_layout(tmp_path, weights, capsys):
    paths, _ = _save_all(tmp_path, weights)
    out = tmp_path / "i.json"
    assert main(["inspect", str(paths["nhwc_transpose"]), "--no-diagnostics", "--json",
                 str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "input layout NHWC" in text and "(N, 3, 6, 6)" in text and "(N, 6, 6, 3)" in text
    rep = json.loads(out.read_text())
    assert rep["layout"]["layout"] == "NHWC" and rep["layout"]["sample_shape"] == [C, H, W]
    m = _model([helper.make_node("Identity", ["x"], ["y"])], [], ["N", 3, 3, 3], ["N", 3, 3, 3])
    onnx.save(m, tmp_path / "amb.onnx")
    assert main(["inspect", str(tmp_path / "amb.onnx"), "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["layout"]["layout"] is None and "--layout" in rep["layout"]["error"]
    assert main(["inspect", str(tmp_path / "amb.onnx"), "--layout", "NCHW", "--json",
                 str(out)]) == 0  # fmt: skip
    assert json.loads(out.read_text())["layout"]["layout"] == "NCHW"


# ------------------------------------------------------------------ the batch axis
def _reshape_tail(w, transpose_first=False):
    """skl2onnx's MLPRegressor tail: (N, D) @ W^T, then Reshape(-1, 1) -> (N * D, 1)."""
    d = w.shape[0]
    nodes = [helper.make_node("MatMul", ["x", "wt"], ["g"])]
    cur = "g"
    if transpose_first:  # (D, N) first: same output shape, samples interleaved
        nodes.append(helper.make_node("Transpose", ["g"], ["gt"], perm=[1, 0]))
        cur = "gt"
    nodes.append(helper.make_node("Reshape", [cur, "s"], ["y"]))
    inits = [numpy_helper.from_array(np.ascontiguousarray(w.T), "wt"), _shape("s", [-1, 1])]
    return _model(nodes, inits, ["N", d], ["N", 1])


def test_reshape_minus_one_one_batch_axis_restored(caplog):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="refinv.onnx"):
        f = OnnxModel(_reshape_tail(w))
    assert any("restores the batch axis" in r.getMessage() for r in caplog.records)
    assert f.batch_axis_restored and f.layout_info()["batch_axis_restored"]
    assert f.output_sample_shape == (64,) and f.is_autoencoder
    x = rng.uniform(size=(3, 64)).astype(np.float32)
    np.testing.assert_allclose(f(x), x @ w.T, rtol=1e-5, atol=1e-5)
    g = OnnxModel(_reshape_tail(w), batch_size=2)  # chunks of 2 and 1
    np.testing.assert_array_equal(g(x), f(x))
    assert f(x[:0]).shape == (0, 64)


def test_wrong_batch_axis_models_are_refused():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    # the Reshape(-1, 1) shape, but the samples interleaved: not restorable
    with pytest.raises(OnnxModelError, match="batch axis"):
        OnnxModel(_reshape_tail(w, transpose_first=True))
    # an output that drops the batch axis: a mean over the batch
    mean = _model([helper.make_node("ReduceMean", ["x"], ["y"], axes=[0], keepdims=1)], [],
                  ["N", 8], [1, 8])  # fmt: skip
    with pytest.raises(OnnxModelError, match=r"leading axis to be the batch axis .* \(1, 8\)"):
        OnnxModel(mean)
    # the batch merged into a flat vector
    flat = _model([helper.make_node("Reshape", ["x", "s"], ["y"])], [_shape("s", [-1])],
                  ["N", 8], ["M"])  # fmt: skip
    with pytest.raises(OnnxModelError, match="batch axis"):
        OnnxModel(flat)


def test_sweep_layout_keys_and_flat_image_shape_from_data(tmp_path, weights):
    from refinv.sweep import load_config, report_from_db, run_sweep

    paths, data = _save_all(tmp_path, weights)
    amb = _model([helper.make_node("Identity", ["x"], ["y"])], [], ["N", 3, 3, 3], ["N", 3, 3, 3])
    onnx.save(amb, tmp_path / "amb.onnx")
    models = "".join(
        f'\n[[models]]\npath = "{paths[k]}"\nlabel = "{k}"\n'
        for k in ("nchw", "nhwc_native", "flat")
    )
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        f'seed = 1\nshard_size = 2\nmasks = ["center:2", "rows:2"]\nmethods = ["known"]\n'
        f'[solver]\nmax_iter = 20\n[datasets.d]\ntrain = "{data}:train"\n'
        f'test = "{data}:test"\n{models}'
    )
    c = load_config(cfg)
    assert [m.layout for m in c.models] == ["NCHW", "NHWC", "flat"]
    assert c.models[2].image_shape == (C, H, W)
    run_sweep(cfg, tmp_path / "s.db", progress=False)
    doc = report_from_db(tmp_path / "s.db")
    by = {}
    for r in doc["runs"]:
        by.setdefault(r["checkpoint"], []).append(
            (r["mask"], r["split"], r["accurate_rate"], r["approximate_rate"])
        )
    assert by["flat"] == by["nchw"] == by["nhwc_native"]
    assert max(r[2] for r in by["nchw"]) == 1.0
    # an ambiguous model: refused up front, accepted with a layout key
    bad = tmp_path / "amb.toml"
    np.savez(tmp_path / "a.npz", train=np.full((2, 3, 3, 3), 0.5, np.float32))
    body = (f'masks = ["center:1"]\nmethods = ["known"]\n[datasets.d]\n'
            f'train = "{tmp_path / "a.npz"}:train"\n[[models]]\npath = "{tmp_path / "amb.onnx"}"\n')  # fmt: skip
    bad.write_text(body)
    with pytest.raises(ConfigError, match="--layout|layout="):
        load_config(bad)
    bad.write_text(body + 'layout = "NHWC"\n')
    assert load_config(bad).models[0].layout == "NHWC"


def test_graph_that_fixes_the_batch_is_refused_at_load():
    """A dynamic batch axis declared, a batch of 2 baked into a Reshape (a traced export)."""
    m = _model([helper.make_node("Reshape", ["x", "s"], ["y"])], [_shape("s", [2, 8])],
               ["N", 8], ["N", 8])  # fmt: skip
    with pytest.raises(OnnxModelError, match="batch of 2 but not on a batch of 3"):
        OnnxModel(m)


def test_cli_figures_on_flat_and_channels_last_models(tmp_path, weights, capsys):
    pytest.importorskip("matplotlib")
    paths, data = _save_all(tmp_path, weights)
    pngs = {}
    for k in ("nchw", "nhwc_transpose", "flat"):
        fig = tmp_path / f"fig_{k}"
        (tmp_path / k).mkdir()
        model = tmp_path / k / "ae.onnx"  # one name: the figures' titles show it
        model.write_bytes(paths[k].read_bytes())
        rc = main(["evaluate", str(model), "--train", f"{data}:train", "--mask", "center:2",
                   "--method", "blind", "--max-iter", "5", "--figures", str(fig), "--quiet"])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
        pngs[k] = sorted(fig.glob("*.png"))
        assert len(pngs[k]) == 1
    capsys.readouterr()
    # the same images drawn: recovered bitwise equal, so the same pixels in the figure
    from PIL import Image

    ref = np.asarray(Image.open(pngs["nchw"][0]))
    for k in ("nhwc_transpose", "flat"):
        np.testing.assert_array_equal(np.asarray(Image.open(pngs[k][0])), ref, err_msg=k)


# ------------------------------------------------------------------ channels-last data files
def test_cli_channels_last_data_read_transposed(tmp_path, weights, capsys):
    """A data file of channels-last images (N, H, W, C) (a Keras data set) is read transposed,
    where the shapes leave no doubt or with --data-layout NHWC: the same per-image results as
    the channels-first file, for a channels-first and a channels-last model, evaluate
    (chunked reader) and stability (whole-array reader) alike; --data-layout NCHW refuses it."""
    paths, data = _save_all(tmp_path, weights)
    with np.load(data) as z:
        last = {k: np.ascontiguousarray(z[k].transpose(0, 2, 3, 1)) for k in ("train", "test")}
    np.savez(tmp_path / "last.npz", **last)
    runs = {}
    for model in ("nchw", "nhwc_transpose"):
        for d, extra in (("d", []), ("last", []), ("last", ["--data-layout", "NHWC"])):
            f = tmp_path / f"{d}.npz"
            out = tmp_path / f"{model}_{d}_{len(extra)}.json"
            rc = main(["evaluate", str(paths[model]), "--train", f"{f}:train", "--test",
                       f"{f}:test", "--mask", "center:2", "--method", "known", "--max-iter",
                       "20", "--chunk", "3", "--json", str(out), "-q", *extra])  # fmt: skip
            assert rc == 0, capsys.readouterr().err
            runs[(model, d, len(extra))] = [r["mse"] for r in json.loads(out.read_text())["runs"]]
    for key, mse in runs.items():
        np.testing.assert_allclose(
            np.array(mse, float), np.array(runs[("nchw", "d", 0)], float), rtol=1e-4,
            atol=1e-12, err_msg=str(key),
        )  # fmt: skip
    js = [tmp_path / f"s{i}.json" for i in range(2)]
    for f, j in zip((data, tmp_path / "last.npz"), js, strict=True):
        argv = ["stability", str(paths["nchw"]), f"{f}:train", "--rho", "0.5", "--json", str(j)]
        assert main(argv) == 0
    a, b = (json.loads(j.read_text())["results"][0]["radius"] for j in js)
    np.testing.assert_allclose(b, a, rtol=1e-6)
    rc = main(["recover", str(paths["nchw"]), f"{tmp_path / 'last.npz'}:train",
               "--data-layout", "NCHW"])  # fmt: skip
    assert rc == 2 and "--data-layout NHWC" in capsys.readouterr().err


def test_ambiguous_data_layout_needs_the_option():
    """(N, 3, 3, 3) images for a (3, 3, 3) model are read as they are (channels-first)
    unless --data-layout NHWC says otherwise; then they are transposed."""
    from refinv.io import channels_last

    assert not channels_last("d", (5, 3, 3, 3), (3, 3, 3), None)
    assert channels_last("d", (5, 3, 3, 3), (3, 3, 3), "NHWC")
    assert channels_last("d", (5, 6, 6, 3), (3, 6, 6), None)
    assert not channels_last("d", (5, 6, 6, 3), (3, 6, 6), "NCHW")
    assert not channels_last("d", (5, 6, 6, 1), (1, 6, 6), None)  # one channel: same values
