"""The engine: plans keyed by content, one store, resume; evaluate and report through it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import refinv.engine.work as work
from refinv.cli import main
from refinv.engine import Store, make_unit, unit_key
from refinv.engine.plan import json_default
from refinv.errors import ConfigError
from refinv.evaluation.report import memorization_report

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "onnx" / "digits8_lrelu_6x320.onnx"
DATA = ROOT / "models" / "data" / "digits8.npz"
PER_IMAGE = ("mse", "psnr", "iterations", "converged", "diverged", "residual")


def _unit(**kw):
    d = dict(checkpoint="c", model_path="m.onnx", sha256="ab" * 32, data_path="/d.npz",
             data_key="train", n=100, split="test", mask="random:0.5", method="blind",
             start=50, stop=100, seed=3, noise_std=0.1,
             solver={"max_iter": 20, "mask_init": "bernoulli"})  # fmt: skip
    d.update(kw)
    return d


def test_unit_keys_are_the_sweeps_keys_and_follow_the_content():
    """The key of a file unit is the one refinv sweep has always written (stores written
    before the engine resume), and changes with every setting that changes results."""
    # the keys of the pre-engine refinv.sweep.run._task_id for these two tasks
    assert unit_key(_unit()) == "e30fbea1830ad91e2a712276"
    assert unit_key(_unit(image_shape=(1, 28, 28))) == "8bc740cbaf254ed88378cc27"
    base = unit_key(_unit())
    for change in (dict(seed=4), dict(noise_std=0.0), dict(mask="center:4"), dict(start=0),
                   dict(solver={"max_iter": 21, "mask_init": "bernoulli"}), dict(sha256="cd" * 32),
                   dict(split="train"), dict(method="known"), dict(chunk=7)):  # fmt: skip
        assert unit_key(_unit(**change)) != base, change
    # runtime options and the figures' images are not content
    assert unit_key(_unit(threads=None, keep=6, batch_size=8)) == base
    # an array's images are keyed by their content, not by the object's name
    a = unit_key(_unit(data_path="obj:train", data_sha="1" * 64))
    assert a == unit_key(_unit(data_path="obj:other", data_sha="1" * 64)) != base
    assert a != unit_key(_unit(data_path="obj:train", data_sha="2" * 64))
    # an explicit initial mask (an array) is keyed by its bytes
    m = np.zeros((2, 2))
    k1 = unit_key(_unit(solver={"mask_init": m}))
    assert k1 == unit_key(_unit(solver={"mask_init": m.copy()}))
    assert k1 != unit_key(_unit(solver={"mask_init": m + 1}))
    assert json_default(np.float32(2))
    assert make_unit(**_unit()).task_id == base


def _images(n=6):
    from refinv.io import load_images
    from refinv.onnx import OnnxModel

    f = OnnxModel(MODEL)
    tr, te = (load_images(DATA, k, sample_shape=f.sample_shape)[:n] for k in ("train", "test"))
    return f, tr, te


KW = dict(masks=["random:0.5", "center:3"], methods=["blind", "known"],
          solver={"max_iter": 4, "mask_init": "bernoulli"}, seed=2, progress=False)  # fmt: skip


def _per_image(doc):
    return [(r["checkpoint"], r["mask"], r["method"], r["split"], r["erased_fraction"],
             r["mask_error"], *(tuple(r[k]) for k in PER_IMAGE)) for r in doc["runs"]]  # fmt: skip


def test_a_report_resumes_from_its_database_without_computing(tmp_path, monkeypatch):
    f, tr, te = _images()
    db = tmp_path / "r.sqlite"
    first = memorization_report([("d8", f)], tr, te, db=db, **KW)
    assert len(first["runs"]) == 8

    def never(*a, **kw):
        raise AssertionError("a unit of the database was computed again")

    monkeypatch.setattr(work, "run_unit", never)
    again = memorization_report([("d8", f)], tr, te, db=db, **KW)
    assert _per_image(again) == _per_image(first)
    # other settings are refused, another mask is computed (and only it)
    with pytest.raises(ConfigError, match="other settings"):
        memorization_report([("d8", f)], tr, te, db=db, **{**KW, "seed": 3})
    monkeypatch.undo()
    more = memorization_report([("d8", f)], tr, te, db=db, **{**KW, "masks": ["rows:2"]})
    assert [r["mask"] for r in more["runs"]] == ["rows:2"] * 4
    with Store(db, readonly=True) as st:  # 12 recoveries and 6 controls (3 masks x 2 splits)
        assert len(st.done_tasks()) == 12 + 6


def test_the_control_through_the_store_is_control_run():
    """The report's control runs (units of the store) are control_run's, field for field."""
    pytest.importorskip("skimage")
    from refinv.evaluation.control import control_run
    from refinv.operators.masks import parse_mask

    f, tr, te = _images()
    doc = memorization_report([("d8", f)], tr, te, control=True, **KW)
    assert [(c["mask"], c["split"]) for c in doc["control"]["runs"]] == [
        (m, s) for m in KW["masks"] for s in ("train", "test")
    ]
    for c in doc["control"]["runs"]:
        x = tr if c["split"] == "train" else te
        want, _ = control_run(x, parse_mask(c["mask"]), split=c["split"], seed=KW["seed"])
        assert {k: v for k, v in c.items() if k != "seconds"} == {
            k: v for k, v in want.items() if k != "seconds"
        }
    off = memorization_report([("d8", f)], tr, te, control=False, **KW)
    assert off["control"] is None and _per_image(off) == _per_image(doc)


def test_evaluate_cli_db_resumes_and_report_renders_it(tmp_path, monkeypatch, capsys):
    f, tr, te = _images()
    data = tmp_path / "d.npz"
    np.savez(data, train=tr, test=te)
    db = tmp_path / "ev.sqlite"
    args = ["evaluate", str(MODEL), "--train", f"{data}:train", "--test", f"{data}:test",
            "--masks", "random:0.5", "--methods", "blind,ae-iterations", "--max-iter", "3",
            "--db", str(db), "--quiet"]  # fmt: skip
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0

    def never(*a, **kw):
        raise AssertionError("computed again")

    monkeypatch.setattr(work, "run_unit", never)
    assert main([*args, "--json", str(tmp_path / "b.json")]) == 0  # all in the database
    with pytest.raises(AssertionError, match="computed again"):  # the figures need the images,
        main([*args, "--figures", str(tmp_path / "f")])  # which the first run did not keep
    monkeypatch.undo()
    assert main([*args, "--json", str(tmp_path / "b.json"), "--figures", str(tmp_path / "f")]) == 0
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "ab")
    assert _per_image(a) == _per_image(b) and len(list((tmp_path / "f").glob("*.png"))) == 4
    assert main(["report", str(db), "--json", str(tmp_path / "r.json")]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert _per_image(rep) == _per_image(a)
    capsys.readouterr()


def test_run_fractions_are_exact_pixel_counts_and_old_stores_still_read(tmp_path):
    """erased_fraction and mask_error of a run: counts over all its pixels (one rounding),
    as one-batch evaluate computes them; a store without the arrays table (written before
    it) opens, gets the table when opened for writing, and reports per-image means."""
    from refinv.evaluation.runs import degrade
    from refinv.operators.masks import parse_mask

    f, tr, te = _images(n=9)
    db = tmp_path / "r.sqlite"
    doc = memorization_report([("d8", f)], tr, te, db=db, **KW)
    for r in doc["runs"]:
        x = tr if r["split"] == "train" else te
        _, mask = degrade(x, parse_mask(r["mask"]), seed=2)
        assert r["erased_fraction"] == float(1.0 - np.mean(mask))
    with sqlite3.connect(db) as con:
        con.execute("DROP TABLE arrays")
    with Store(db, readonly=True) as st:
        assert st.arrays(next(iter(st.done_tasks()))) == {} and st.group_counts() == {}
    from refinv.sweep import report_from_db

    old = report_from_db(db)
    for r, want in zip(old["runs"], doc["runs"], strict=True):
        assert r["mse"] == want["mse"]
        assert r["erased_fraction"] == pytest.approx(want["erased_fraction"], rel=1e-12)
    with Store(db) as st:  # opened for writing: the table is back
        assert "arrays" in st._tables()


def test_in_memory_plans_run_in_this_process_only(tmp_path):
    f, tr, te = _images(n=2)
    from refinv.engine import execute
    from refinv.evaluation.report import report_plan
    from refinv.operators.masks import parse_mask

    plan = report_plan([("d8", f)], {"train": tr}, [parse_mask("center:3")], ["known"],
                       seed=0, noise_std=0.0, solver={"max_iter": 2})  # fmt: skip
    with Store(tmp_path / "s.sqlite") as st:
        with pytest.raises(ConfigError, match="this process only"):
            execute(plan.units, st, objects=plan.objects, workers=2)
        s = execute(plan.units, st, objects=plan.objects)
        assert (s.done, s.failed) == (1, 0)
        with pytest.raises(ConfigError, match="in-memory"):
            execute([plan.units[0].replace(task_id="other")], st, on_error="raise")
