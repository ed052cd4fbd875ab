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
