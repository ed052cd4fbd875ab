"""The recovery commands: ``refinv recover``, ``refinv evaluate``, ``refinv demo``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_recovery import onnx_ae, projection

from refinv.cli import main

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    train = rng.random((5, 1, 6, 7))
    test = rng.random((4, 1, 6, 7))
    P = projection(train)
    onnx.save(onnx_ae([(P, np.zeros(42), False)], (1, 6, 7)), d / "ae.onnx")
    onnx.save(onnx_ae([(0.5 * P, np.zeros(42), False)], (1, 6, 7)), d / "ae_early.onnx")
    onnx.save(onnx_ae([(np.ones((3, 42)), np.zeros(3), False)], (1, 6, 7)), d / "enc.onnx")
    np.savez(d / "data.npz", train=train.astype(np.float32), test=test.astype(np.float32))
    return d


@pytest.mark.parametrize("cmd", ["recover", "evaluate", "demo"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "--quiet" in capsys.readouterr().out


def test_recover(files, capsys):
    d = files
    rc = main(
        ["recover", str(d / "ae.onnx"), f"{d / 'data.npz'}:train", "--mask",
         "random:0.3", "--seed", "1", "--method", "known", "--out", str(d / "out.npz"),
         "--json", str(d / "sum.json"), "--max-iter", "300", "--tol", "1e-12", "--quiet"]
    )  # fmt: skip
    assert rc == 0
    doc = json.loads((d / "sum.json").read_text())
    (run,) = doc["runs"]
    assert doc["schema_version"] == 3 and doc["command"] == "recover"
    assert run["method"] == "known" and run["split"] == "train" and run["n"] == 5
    assert run["accurate_rate"] == 1.0
    for k in ("accurate_rate", "approximate_rate", "mean_psnr", "n", "seconds"):
        assert k in run
    with np.load(d / "out.npz") as z:
        assert z["x_hat"].shape == (5, 1, 6, 7) and z["mask"].shape == (5, 6, 7)
        np.testing.assert_allclose(z["x_hat"], z["x"], atol=1e-6)
        assert set(z.files) >= {"y", "iterations", "converged", "mse", "psnr", "mask_estimated"}
    assert "known" in capsys.readouterr().out
    assert not list(d.glob(".*.tmp"))  # atomic writes leave no temp files


def test_recover_blind_on_test_key(files):
    d = files
    rc = main(
        ["recover", str(d / "ae.onnx"), f"{d / 'data.npz'}:test", "--mask", "center:2",
         "--method", "blind", "--json", str(d / "b.json"), "--max-iter", "5", "--quiet",
         "--out", str(d / "b.npz")]
    )  # fmt: skip
    assert rc == 0
    run = json.loads((d / "b.json").read_text())["runs"][0]
    assert run["split"] == "test" and run["n"] == 4
    with np.load(d / "b.npz") as z:  # the error of the estimated mask, not its agreement
        wrong = np.mean(z["mask_estimated"].astype(bool) != z["mask"].astype(bool))
        assert not z["mask"][:, 2:4, 2:5].all()  # center:2 on 6 x 7 erased something
    assert run["mask_error"] == pytest.approx(wrong, abs=1e-12)
    assert 0.0 <= run["mask_error"] < 0.5


def test_evaluate(files, capsys):
    d = files
    rc = main(
        ["evaluate", str(d / "ae.onnx"), "--train", f"{d / 'data.npz'}:train", "--test",
         f"{d / 'data.npz'}:test", "--mask", "random:0.3,rows:2", "--method",
         "known,ae-iterations", "--json", str(d / "rep.json"), "--max-iter", "200",
         "--checkpoints", str(d / "ae_early.onnx"), "--quiet"]
    )  # fmt: skip
    assert rc == 0
    doc = json.loads((d / "rep.json").read_text())
    assert len(doc["runs"]) == 2 * 2 * 2 * 2
    assert {r["split"] for r in doc["runs"]} == {"train", "test"}
    out = capsys.readouterr().out
    assert "held-out" in out and "train loss" in out


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--mask", "bogus:1"], "unknown family"),
        (["--method", "blind,magic"], "magic"),
        (["--rho", "-1"], "rho"),
    ],
)
def test_evaluate_errors(files, argv, msg, capsys):
    d = files
    rc = main(["evaluate", str(d / "ae.onnx"), "--train", str(d / "data.npz"), "--quiet", *argv])
    assert rc == 2
    assert msg in capsys.readouterr().err


def test_recover_errors(files, capsys):
    d = files
    assert main(["recover", str(d / "enc.onnx"), str(d / "data.npz"), "--quiet"]) == 2
    assert "not an autoencoder" in capsys.readouterr().err
    assert main(["recover", str(d / "ae.onnx"), f"{d / 'data.npz'}:nope"]) == 2
    assert "nope" in capsys.readouterr().err
    bad = d / "badmask.npz"
    np.savez(bad, mask=np.full((6, 7), 0.5))
    assert main(["recover", str(d / "ae.onnx"), str(d / "data.npz"), "--mask", f"file:{bad}"]) == 2
    assert "0 (erased) and 1" in capsys.readouterr().err


def test_demo_missing_models(tmp_path, capsys):
    assert main(["demo", "--models-dir", str(tmp_path / "nowhere")]) == 2
    assert "--models-dir" in capsys.readouterr().err


def test_demo_shipped(tmp_path, capsys):
    if not (MODELS / "MANIFEST.json").is_file() or not any(
        (MODELS / p).is_file()
        for p in ("onnx/faces25_lrelu_6x256.onnx", "onnx/digits8_lrelu_6x320.onnx")
    ):
        pytest.skip("shipped demo models not present in models/ (not trained yet)")
    rc = main(["demo", "--quiet", "--max-iter", "3", "--json", str(tmp_path / "demo.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "throughput" in out and "onnxruntime" in out
    doc = json.loads((tmp_path / "demo.json").read_text())
    assert doc["command"] == "demo" and 0 < doc["timing"]["onnxruntime_share"] <= 1


@pytest.mark.parametrize("method", ["auto", "arnoldi"])
def test_stability_command_matches_the_iteration_matrix(files, capsys, method):
    """`refinv stability` on a linear projection AE (Df = P exactly): the radius equals that of
    the iteration matrix built from P and the mask `refinv evaluate` would draw, with the
    dense eigensolver (auto, 42 values) and the matrix-free one."""
    from refinv.evaluation.stability import pnp_admm_iteration_matrix
    from refinv.operators.masks import parse_mask

    d = files
    rc = main(
        ["stability", str(d / "ae.onnx"), str(d / "data.npz"), "--rho", "0.5,3",
         "--limit", "3", "--seed", "2", "--json", str(d / "stab.json"), "--method", method]
    )  # fmt: skip
    assert rc == 0
    doc = json.loads((d / "stab.json").read_text())
    assert doc["command"] == "stability" and doc["n"] == 3
    assert doc["method"] == {"auto": "dense", "arnoldi": "arnoldi"}[method]
    assert [r["rho"] for r in doc["results"]] == [0.5, 3.0]
    train = np.load(d / "data.npz")["train"].astype(np.float64)
    P = projection(train)
    masks = parse_mask("random:0.5").draw((6, 7), 5, np.random.default_rng(2))[:3]
    for row in doc["results"]:
        want = [
            np.abs(np.linalg.eigvals(pnp_admm_iteration_matrix(P, m.reshape(42), row["rho"])))
            .max() for m in masks
        ]  # fmt: skip
        np.testing.assert_allclose(row["radius"], want, rtol=1e-3)
    assert "median radius" in capsys.readouterr().out
    assert doc["fixed_point"]["is_fixed"] == [True] * 3  # P x = x at the training images
    assert main(["stability", str(d / "ae.onnx"), str(d / "data.npz"), "--rho", "0"]) == 2
    assert "--rho" in capsys.readouterr().err


def test_stability_says_not_a_fixed_point_instead_of_a_radius(files, capsys):
    """Held-out images are not fixed points of the projection AE (f(x) != x): the command says
    so with ||f(x) - x||, computes no radius (null in the JSON), and never prints the
    'attracting fixed point' sentence for them."""
    d = files
    rc = main(["stability", str(d / "ae.onnx"), f"{d / 'data.npz'}:test", "--rho", "0.5",
               "--json", str(d / "stab_test.json")])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    test = np.load(d / "data.npz")["test"].astype(np.float64).reshape(4, -1)
    P = projection(np.load(d / "data.npz")["train"].astype(np.float64))
    res = np.linalg.norm(test @ P.T - test, axis=1)
    assert f"4 of 4 images: not a fixed point (||f(x) - x|| = {res.min():.3g} to " in out
    assert "attracting" not in out and "median radius" not in out
    doc = json.loads((d / "stab_test.json").read_text())
    assert doc["fixed_point"]["n_fixed"] == 0 and doc["schema_version"] == 2
    np.testing.assert_allclose(doc["fixed_point"]["residual"], res, rtol=1e-4)
    assert doc["results"][0]["radius"] == [None] * 4 and doc["results"][0]["median_radius"] is None
    # --fixed-tol above their MSE: they count as fixed points and get radii
    rc = main(["stability", str(d / "ae.onnx"), f"{d / 'data.npz'}:test", "--rho", "0.5",
               "--fixed-tol", "1", "--json", str(d / "stab_tol.json")])  # fmt: skip
    doc = json.loads((d / "stab_tol.json").read_text())
    assert rc == 0 and doc["fixed_point"]["n_fixed"] == 4
    assert all(r > 0 for r in doc["results"][0]["radius"])


def test_mask_init_from_a_file(files, tmp_path, capsys):
    """--mask-init file:PATH.npz:KEY reaches the blind solver: the CLI's estimates are those
    of blind_recovery(mask_init=that array), and differ from the default (ones) start."""
    from refinv.evaluation.report import degrade
    from refinv.onnx import OnnxModel
    from refinv.operators.masks import parse_mask
    from refinv.solvers.recovery import blind_recovery

    d = files
    rng = np.random.default_rng(5)
    h0 = (rng.random((5, 6, 7)) < 0.5).astype(np.uint8)
    np.savez(tmp_path / "init.npz", h0=h0, other=1 - h0)
    out = {}
    for name, extra in [
        ("file", ["--mask-init", f"file:{tmp_path / 'init.npz'}:h0"]),
        ("ones", []),
    ]:
        rc = main(
            ["recover", str(d / "ae.onnx"), str(d / "data.npz"), "--mask", "random:0.5",
             "--method", "blind", "--max-iter", "3", "--out", str(tmp_path / f"{name}.npz"),
             "--json", str(tmp_path / f"{name}.json"), "--quiet", *extra]
        )  # fmt: skip
        assert rc == 0
        with np.load(tmp_path / f"{name}.npz") as z:
            out[name] = z["x_hat"]
    doc = json.loads((tmp_path / "file.json").read_text())
    assert doc["settings"]["solver"]["blind"]["mask_init"] == f"file:{tmp_path / 'init.npz'}:h0"
    f = OnnxModel(d / "ae.onnx")
    x = np.load(d / "data.npz")["train"]
    y, _ = degrade(x, parse_mask("random:0.5"), seed=0)
    ref = blind_recovery(f, y, mask_init=h0, max_iter=3, progress=False)
    np.testing.assert_allclose(out["file"], np.asarray(ref.x), atol=1e-6)
    assert np.abs(out["file"] - out["ones"]).max() > 1e-3
    # errors: a missing key names the keys there; a wrong batch names the shapes
    base = ["recover", str(d / "ae.onnx"), str(d / "data.npz"), "--method", "blind", "--quiet"]
    assert main([*base, "--mask-init", f"file:{tmp_path / 'init.npz'}:nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "h0" in err and "other" in err
    assert main([*base, "--mask-init", f"file:{tmp_path / 'init.npz'}"]) == 2
    assert "file:PATH.npz:KEY" in capsys.readouterr().err
    np.savez(tmp_path / "three.npz", mask=h0[:3])
    assert main([*base, "--mask-init", f"file:{tmp_path / 'three.npz'}"]) == 2
    assert "refinv recover: error:" in capsys.readouterr().err


def test_evaluate_blind_with_one_initial_mask_for_both_splits(files, tmp_path):
    d = files
    np.savez(tmp_path / "one.npz", mask=np.ones((6, 7), dtype=np.uint8))
    args = ["evaluate", str(d / "ae.onnx"), "--train", f"{d / 'data.npz'}:train", "--test",
            f"{d / 'data.npz'}:test", "--mask", "center:2", "--method", "blind",
            "--max-iter", "3", "--quiet"]  # fmt: skip
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    assert main([*args, "--mask-init", f"file:{tmp_path / 'one.npz'}", "--json",
                 str(tmp_path / "b.json")]) == 0  # fmt: skip
    a, b = (json.loads((tmp_path / f"{k}.json").read_text())["runs"] for k in "ab")
    assert [r["mse"] for r in a] == [r["mse"] for r in b]  # all-ones file == the ones default


def test_divergence_is_one_summary_line_per_command(files, tmp_path, capsys, caplog):
    """Every run's diverged samples in ONE line at the end, counts per setting and split (it
    was one line per run: 60 lines for a sweep, 13 for an audit)."""
    d = files
    onnx.save(onnx_ae([(3.0 * np.eye(42), np.zeros(42), False)], (1, 6, 7)), tmp_path / "x3.onnx")
    rc = main(
        ["evaluate", str(tmp_path / "x3.onnx"), "--train", f"{d / 'data.npz'}:train",
         "--test", f"{d / 'data.npz'}:test", "--mask", "random:0.3,rows:2", "--method",
         "ae-iterations", "--quiet", "--json", str(tmp_path / "r.json")]
    )  # fmt: skip
    assert rc == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "diverged" in ln]
    assert lines == [
        "refinv evaluate: warning: 18 samples diverged (NaN/Inf or |x| > 1e+06) and were "
        "stopped, the others continued; per setting: x3 random:0.3 ae-iterations: train 5 of "
        "5, test 4 of 4; x3 rows:2 ae-iterations: train 5 of 5, test 4 of 4 (MSE null in the "
        "report; per sample: 'diverged' in the JSON)"
    ]
    assert not [r for r in caplog.records if "diverged" in r.getMessage()]
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert [r["n_diverged"] for r in runs] == [5, 4, 5, 4]  # the details, per run
