"""``refinv inspect``: tied weights counted once, and the Theorem 1 (Moreau prox) check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

from refinv.cli import main
from refinv.evaluation.diagnostics import parameter_ties
from refinv.onnx.graph import read_chain

MODELS = Path(__file__).resolve().parents[1] / "models"
TIED = MODELS / "onnx" / "tied_digits8_lrelu_k128.onnx"


def _graph(path, layers, n_in, act="Tanh"):
    """x -> [op(h, W) (+ b) -> act]*; layers = [(op, W, b)], op "gemm" (h W^T, transB) or
    "matmul" (h W); every array its own initializer unless the same name is reused."""
    nodes, inits, names = [], [], set()
    cur = "x"
    for i, (op, (wname, W), b) in enumerate(layers):
        if wname not in names:
            inits.append(numpy_helper.from_array(np.asarray(W, np.float32), wname))
            names.add(wname)
        ins = [cur, wname]
        if b is not None:
            inits.append(numpy_helper.from_array(np.asarray(b, np.float32), f"b{i}"))
            ins.append(f"b{i}")
        if op == "gemm":
            nodes.append(oh.make_node("Gemm", ins, [f"l{i}"], transB=1))
        else:
            nodes.append(oh.make_node("MatMul", ins[:2], [f"l{i}"]))
        cur = f"l{i}"
        if i < len(layers) - 1:
            nodes.append(oh.make_node(act, [cur], [f"a{i}"]))
            cur = f"a{i}"
    nodes.append(oh.make_node("Identity", [cur], ["y"]))
    n_out = int(np.asarray(layers[-1][1][1]).shape[0 if layers[-1][0] == "gemm" else 1])
    g = oh.make_graph(
        nodes, "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])],
        inits,
    )  # fmt: skip
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_shipped_tied_autoencoder_counts_w_once(tmp_path, capsys):
    if not TIED.is_file():
        pytest.skip("shipped tied model not present")
    out = tmp_path / "t.json"
    assert main(["inspect", str(TIED), "--no-diagnostics", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    W = numpy_helper.to_array(
        next(t for t in onnx.load(TIED).graph.initializer if t.name == "W")
    )  # the one weight initializer, (128, 64), used by the Gemm and the MatMul
    assert rep["n_params"] == W.size + 128 == 8320  # W and b
    assert rep["n_params_per_layer_sum"] == 2 * W.size + 128 == 16512
    assert rep["ties"] == [
        {"layer": 1, "param": "weight", "tied_to_layer": 0, "tied_to_param": "weight",
         "relation": "transpose", "size": W.size}
    ]  # fmt: skip
    manifest = json.loads((MODELS / "MANIFEST.json").read_text())["files"]
    assert manifest[f"onnx/{TIED.name}"]["n_params"] == rep["n_params"]  # the trainer's count
    text = capsys.readouterr().out
    assert "8320 unique parameters (16512 counted per layer" in text
    assert "weight = layer 0 weight^T" in text


def test_ties_by_content_in_a_hand_made_graph(tmp_path):
    """A folded transposed copy (its own initializer, W^T), one initializer used twice
    (equal), zero biases (equal, but constant: not a tie) and an untied weight."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((5, 4)).astype(np.float32)  # layer 0: (out 5, in 4)
    V = rng.standard_normal((5, 5)).astype(np.float32)
    U = rng.standard_normal((5, 5)).astype(np.float32)
    z = np.zeros(5, np.float32)
    layers = [
        ("gemm", ("W", W), z),  # 5x4 + 5
        ("gemm", ("V", V), z),  # 5x5 + 5 (zero bias: equal to layer 0's, not a tie)
        ("gemm", ("V", V), None),  # the same initializer again: equal
        ("gemm", ("U", U), None),  # untied
        ("gemm", ("Wt", W.T.copy()), None),  # the folded transposed copy: 4x5
    ]
    p = _graph(tmp_path / "tied.onnx", layers, 4)
    chain = read_chain(p)
    t = parameter_ties(chain)
    assert t["n_params_per_layer_sum"] == 20 + 5 + 25 + 5 + 25 + 25 + 20
    assert t["n_params"] == 20 + 5 + 25 + 5 + 25
    got = {(d["layer"], d["param"]): (d["tied_to_layer"], d["tied_to_param"], d["relation"])
           for d in t["ties"]}  # fmt: skip
    assert got == {(2, "weight"): (1, "weight", "equal"), (4, "weight"): (0, "weight", "transpose")}
    # a perturbed copy is no tie
    layers[4] = ("gemm", ("Wt", W.T + np.float32(1e-3)), None)
    t2 = parameter_ties(read_chain(_graph(tmp_path / "t2.onnx", layers, 4)))
    assert [d["layer"] for d in t2["ties"]] == [2] and t2["n_params"] == t["n_params"] + 20


def _tied_tanh(path, rng, smax, *, tied=True, n=12, k=16):
    """f(x) = V tanh(W x + b) with V = W^T (tied: Theorem 1 when smax <= 1) or a random V;
    the singular values of W are scaled into [0.3 smax, smax]."""
    U, _, Vt = np.linalg.svd(rng.standard_normal((k, n)), full_matrices=False)
    W = U @ np.diag(np.linspace(smax, 0.3 * smax, n)) @ Vt
    b = 0.1 * rng.standard_normal(k)
    dec = ("W", W) if tied else ("V", rng.standard_normal((k, n)) * smax / np.sqrt(k))
    return _graph(path, [("gemm", ("W", W), b), ("matmul", dec, None)], n), W


def test_prox_check_theorem1_model_passes(tmp_path):
    """W^T diag(tanh') W with tanh' in (0, 1] and ||W|| = 0.9: symmetric, eigenvalues in
    [0, 0.81]; measured from the float32 ONNX model by finite differences."""
    from refinv.evaluation.prox import prox_check
    from refinv.onnx import OnnxModel

    rng = np.random.default_rng(0)
    p, W = _tied_tanh(tmp_path / "tied.onnx", rng, 0.9)
    f = OnnxModel(p)
    x = rng.random((6, 12)).astype(np.float32)
    r = prox_check(f, x)
    assert r["is_prox"] and r["fraction_prox"] == 1.0 and r["n"] == 6
    assert r["max_asymmetry"] < 1e-3
    assert -1e-3 <= r["eig_min"] and r["eig_max"] <= 0.81 + 1e-3
    # the same numbers as the exact Jacobian W^T diag(1 - tanh^2) W at each point
    b = numpy_helper.to_array(next(t for t in onnx.load(p).graph.initializer if t.name == "b0"))
    Wf = W.astype(np.float32).astype(np.float64)
    for xi, pt in zip(x.astype(np.float64), r["points"], strict=True):
        J = Wf.T @ np.diag(1 - np.tanh(Wf @ xi + b) ** 2) @ Wf
        ev = np.linalg.eigvalsh(J)
        assert pt["eig_min"] == pytest.approx(ev[0], abs=1e-3)
        assert pt["eig_max"] == pytest.approx(ev[-1], abs=1e-3)


def test_prox_check_fails_untied_and_expansive_models(tmp_path):
    from refinv.evaluation.prox import prox_check
    from refinv.onnx import OnnxModel

    rng = np.random.default_rng(1)
    x = rng.random((4, 12)).astype(np.float32)
    untied = prox_check(OnnxModel(_tied_tanh(tmp_path / "u.onnx", rng, 0.9, tied=False)[0]), x)
    assert not untied["is_prox"] and untied["fraction_prox"] == 0.0
    assert untied["max_asymmetry"] > 0.1 and not any(p["symmetric"] for p in untied["points"])
    big = prox_check(OnnxModel(_tied_tanh(tmp_path / "b.onnx", rng, 1.5)[0]), x)
    assert all(p["symmetric"] for p in big["points"])  # tied: symmetric, but
    assert not big["is_prox"] and big["eig_max"] > 1.1  # expansive: not a prox


def test_inspect_prox_cli(tmp_path, capsys):
    rng = np.random.default_rng(2)
    p, _ = _tied_tanh(tmp_path / "tied.onnx", rng, 0.9)
    np.savez(tmp_path / "d.npz", train=rng.random((5, 12)).astype(np.float32))
    out = tmp_path / "r.json"
    rc = main(["inspect", str(p), "--no-diagnostics", "--prox", f"{tmp_path / 'd.npz'}",
               "--prox-limit", "3", "--json", str(out)])  # fmt: skip
    assert rc == 0
    rep = json.loads(out.read_text())["prox"]
    assert rep["n"] == 3 and rep["is_prox"] and len(rep["points"]) == 3
    assert rep["data"].endswith("d.npz:train")
    assert "a Moreau proximal map there: yes, at every point" in capsys.readouterr().out
    # an untied model: the verdict says no; a model that is not an autoencoder: exit 2
    pu, _ = _tied_tanh(tmp_path / "untied.onnx", rng, 0.9, tied=False)
    assert main(["inspect", str(pu), "--no-diagnostics", "--prox", f"{tmp_path / 'd.npz'}"]) == 0
    assert "a Moreau proximal map there: no: 0% of the points pass" in capsys.readouterr().out
    enc = _graph(tmp_path / "enc.onnx", [("gemm", ("W", rng.standard_normal((3, 12))), None)], 12)
    assert main(["inspect", str(enc), "--no-diagnostics", "--prox", f"{tmp_path / 'd.npz'}"]) == 2
    assert "refinv inspect: error: --prox: expected an autoencoder" in capsys.readouterr().err
