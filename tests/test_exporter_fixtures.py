"""Every committed exporter fixture (tests/fixtures/exporters, made by make_fixtures.py with
the real exporters: PyTorch legacy and dynamo, skl2onnx, jax2onnx, tf2onnx/Keras) loads in
OnnxModel, takes masks and a recovery step, and reads as a layer chain equal to onnxruntime
(or is refused naming the node); fixtures that share weights give the same outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from refinv import OnnxModel, draw_masks, erase, known_mask_recovery, read_chain
from refinv.errors import UnsupportedGraphError
from refinv.operators.masks import expand_mask
from refinv.solvers import gradient_descent

FIX = Path(__file__).resolve().parent / "fixtures" / "exporters"
MANIFEST = json.loads((FIX / "MANIFEST.json").read_text())
FIXTURES = MANIFEST["fixtures"]
NAMES = sorted(FIXTURES)

# what the chain reader gives for each model (the layer kinds), whatever the exporter
KINDS = {
    "dense_ae": ["dense"] * 4,
    "generator": ["dense"] * 2,
    "conv_ae": ["conv", "conv", "resize", "conv", "resize", "conv"],
    "conv_ae_rgb": ["conv", "conv", "resize", "conv", "resize", "conv"],
}
# refused fixtures (none since read_chain detects the layout as OnnxModel does: the
# channels-last convolutions' leading Transpose to NCHW then cancels)
REFUSED: dict[str, str] = {}  # every fixture reads as a chain (channels-last ones included)
# skl2onnx's MLPRegressor ends in Reshape(-1, 1): (batch * D, 1) from onnxruntime, which
# OnnxModel's batch-axis probe restores to (batch, D)
BATCH_AXIS = {n for n, e in FIXTURES.items() if n.startswith("skl2onnx_")}


def _session(name):
    return ort.InferenceSession(str(FIX / name), providers=["CPUExecutionProvider"])


def _input(name, n=3, seed=0):
    """A batch in the fixture's own input shape (its declared sample dims)."""
    i = _session(name).get_inputs()[0]
    shape = [int(d) for d in i.shape[1:]]
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


def _ort(name, x):
    s = _session(name)
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_manifest_names_exporters_hashes_and_sizes():
    assert len(NAMES) >= 14
    total = 0
    for e in FIXTURES.values():
        for f, sha in e["sha256"].items():
            assert hashlib.sha256((FIX / f).read_bytes()).hexdigest() == sha, f
            total += (FIX / f).stat().st_size
        assert e["versions"] and e["exporter"] and e["weights"] in KINDS
    assert total == sum(e["bytes"] for e in FIXTURES.values()) < 3_000_000
    exporters = {e["exporter"].split()[0] for e in FIXTURES.values()}
    assert {"torch.onnx.export", "torch.onnx.export(dynamo=True),", "skl2onnx", "jax2onnx"} <= (
        exporters
    )
    assert any(e.get("external_data") for e in FIXTURES.values())


@pytest.mark.parametrize("name", NAMES)
def test_fixture_loads_takes_masks_and_a_recovery_step(name):
    """OnnxModel takes (N, C, H, W) (or flat) arrays whatever the graph's layout: its
    outputs equal onnxruntime's on the same batch given in the graph's own layout."""
    e = FIXTURES[name]
    f = OnnxModel(FIX / name)
    assert f.layout == e["layout"]
    x = np.random.default_rng(0).uniform(0, 1, (3, *f.sample_shape)).astype(np.float32)
    want = _ort(name, _from_nchw(name, x))
    if e["layout"] == "NHWC" and want.ndim == 4:
        want = want.transpose(0, 3, 1, 2)
    got = np.asarray(f(x))
    assert got.shape[0] == 3 and got.size == want.size
    np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-6, atol=1e-6)
    if e["weights"] == "generator":
        res = gradient_descent(read_chain(f), got.astype(np.float64), max_iter=2)
        assert res.x.shape == (3, 8) and np.all(np.isfinite(res.x))
        return
    mask = draw_masks("random:0.5", f.sample_shape, 3, seed=0)
    y = erase(x, mask)
    res = known_mask_recovery(f, y, mask, max_iter=1)
    out = np.asarray(res.x)
    assert out.shape == x.shape and np.all(np.isfinite(out))
    observed = np.broadcast_to(np.asarray(expand_mask(mask, f.sample_shape, 3, like=x)), x.shape)
    observed = observed == 1
    assert 0 < observed.sum() < observed.size
    assert np.array_equal(out[observed], y[observed])  # the observed pixels are kept


@pytest.mark.parametrize("name", NAMES)
def test_fixture_reads_as_a_chain_equal_to_onnxruntime(name):
    e = FIXTURES[name]
    if name in REFUSED:
        with pytest.raises(UnsupportedGraphError, match=REFUSED[name]):
            read_chain(FIX / name)
        return
    chain = read_chain(FIX / name)
    assert [lay.kind for lay in chain] == KINDS[e["weights"]]
    if e["layout"] == "NHWC":
        # read from the path alone, a channels-last graph is read in the coordinates
        # OnnxModel detects for it: (N, C, H, W) in and out
        f = OnnxModel(FIX / name)
        assert chain.in_shape == tuple(f.sample_shape)
        x = np.random.default_rng(1).uniform(0, 1, (4, *f.sample_shape)).astype(np.float32)
        got = chain.forward(x.astype(np.float64))
        np.testing.assert_allclose(got.reshape(f(x).shape), f(x), rtol=1e-5, atol=1e-5)
        return
    x = _input(name, n=4, seed=1)
    want = _ort(name, x)
    got = chain.forward(x.astype(np.float64))
    if name in BATCH_AXIS:  # (batch * 64, 1) from Reshape(-1, 1): the chain keeps the batch
        assert want.shape == (got.size, 1) and "output_reshape" in chain.info
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5)


def _from_nchw(name, x):
    shape = [int(d) for d in _session(name).get_inputs()[0].shape[1:]]
    if FIXTURES[name]["layout"] == "NHWC" and len(shape) == 3:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x.reshape(x.shape[0], *shape)


@pytest.mark.parametrize("weights", sorted(KINDS))
def test_fixtures_with_the_same_weights_give_the_same_outputs(weights):
    """The same seeded weights through every exporter (NCHW, NHWC, flat inputs): onnxruntime
    gives the same outputs, in float32 rounding."""
    names = [n for n in NAMES if FIXTURES[n]["weights"] == weights]
    assert len(names) >= 2
    c = 3 if weights == "conv_ae_rgb" else 1
    shape = (8,) if weights == "generator" else (c, 8, 8)
    x = np.random.default_rng(2).uniform(0, 1, (3, *shape)).astype(np.float32)
    outs = {}
    for n in names:
        o = np.asarray(_ort(n, _from_nchw(n, x)))
        if n in BATCH_AXIS:
            o = o.reshape(3, -1)
        elif FIXTURES[n]["layout"] == "NHWC" and o.ndim == 4:
            o = o.transpose(0, 3, 1, 2)
        outs[n] = o.reshape(3, -1)
    ref = outs[names[0]]
    for n in names[1:]:
        np.testing.assert_allclose(outs[n], ref, rtol=1e-5, atol=1e-5, err_msg=n)


def _named(weights, layout):
    return [
        n for n in NAMES if FIXTURES[n]["weights"] == weights and FIXTURES[n]["layout"] == layout
    ]


@pytest.mark.parametrize("weights", ["conv_ae_rgb", "conv_ae", "dense_ae"])
def test_nhwc_and_nchw_fixtures_give_the_same_masks_and_recovered_images(weights):
    """The same weights exported channels-first (PyTorch) and channels-last (tf2onnx,
    jax2onnx): the layout is detected, the same mask spec erases the same pixels, and the
    recovery gives the same images."""
    a, others = _named(weights, "NCHW")[0], _named(weights, "NHWC")
    assert others
    fa = OnnxModel(FIX / a)
    x = np.random.default_rng(3).uniform(0, 1, (2, *fa.sample_shape)).astype(np.float32)
    ma = draw_masks("center:4", fa.sample_shape, 2, seed=0)
    ra = known_mask_recovery(fa, erase(x, ma), ma, max_iter=3)
    for b in others:
        fb = OnnxModel(FIX / b)
        assert (fa.layout, fb.layout) == ("NCHW", "NHWC") and fb.sample_shape == fa.sample_shape
        mb = draw_masks("center:4", fb.sample_shape, 2, seed=0)
        np.testing.assert_array_equal(mb, ma)
        rb = known_mask_recovery(fb, erase(x, mb), mb, max_iter=3)
        np.testing.assert_allclose(np.asarray(rb.x), np.asarray(ra.x), atol=1e-5, err_msg=b)


@pytest.mark.parametrize("name", NAMES)
def test_chain_of_an_onnx_model_is_in_its_coordinates(name):
    """read_chain(OnnxModel) reads a channels-last graph in refinv's (N, C, H, W)
    coordinates (the input and output transposes absorbed): the chain equals the model on
    the same arrays, for every fixture, the RGB channels-last convolutions included."""
    f = OnnxModel(FIX / name)
    chain = read_chain(f)
    assert tuple(chain.in_shape) == tuple(f.sample_shape)
    x = np.random.default_rng(4).uniform(0, 1, (3, *f.sample_shape))
    got = np.asarray(f(x.astype(np.float32)))
    np.testing.assert_allclose(chain.forward(x), got, rtol=1e-5, atol=1e-5)
