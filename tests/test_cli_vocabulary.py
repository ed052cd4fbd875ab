"""One option vocabulary (refinv/cli/_args.py, docs/cli.md): for every command, each shared
option has the one name, value type and metavar of :data:`refinv.cli._args.VOCABULARY`; no
command shows a deprecated spelling in --help; and each deprecated spelling still works for
one release, prints ONE warning naming its replacement and gives the SAME result."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_recovery import onnx_ae, projection

from refinv.cli import _COMMANDS, build_parser, main
from refinv.cli._args import DEPRECATED, VOCABULARY

ROOT = Path(__file__).resolve().parents[1]
DECODER = ROOT / "models" / "onnx" / "digits28_gen_fc_20-128-392-784_decoder.onnx"
INVERT_DATA = ROOT / "models" / "data" / "digits28_gen_fc_invert.npz"
ENCODER = ROOT / "models" / "onnx" / "digits28_bregman_fc_code100_encoder.onnx"
CODES = ROOT / "models" / "data" / "digits28_bregman_fc_codes.npz"
FAST = ["--max-iter", "3", "--inner-iter", "2", "-q"]
#: spellings that name a shared idea differently; none may be a visible option
SYNONYMS = {"--save", "--samples", "--n", "--key", "--masks", "--methods", "--stability-n",
            "--prox-n", "--output", "--data"}  # fmt: skip


def _parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _visible(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.option_strings and a.help != argparse.SUPPRESS]


@pytest.mark.parametrize("cmd", _COMMANDS)
def test_shared_options_have_one_name_type_and_metavar(cmd):
    p = _parsers()[cmd]
    for a in _visible(p):
        flags = set(a.option_strings)
        assert not flags & SYNONYMS, (cmd, a.option_strings)
        for flag in flags & set(VOCABULARY):
            v = VOCABULARY[flag]
            assert a.option_strings == [flag], (cmd, a.option_strings)  # one spelling
            assert (a.type or str) is v.type, (cmd, flag, a.type)
            if v.metavar and flag != "--out":  # --out's metavar says what it is (.npz, DIR)
                assert a.metavar == v.metavar, (cmd, flag, a.metavar)
        if "--json" in flags:
            assert not a.required, cmd  # --json is optional in every command
    # the positional data argument is DATA.npz[:key] (or CODES.npz[:key]) where it is a spec
    pos = [a.metavar for a in p._actions if not a.option_strings and a.metavar]
    assert not [m for m in pos if m.endswith(".npz") and cmd not in ("invert",)], (cmd, pos)


@pytest.mark.parametrize("cmd", _COMMANDS)
def test_deprecated_spellings_are_hidden_aliases(cmd):
    p = _parsers()[cmd]
    hidden = {s for a in p._actions if a.help == argparse.SUPPRESS for s in a.option_strings}
    hidden.discard("-h")
    assert hidden == set(DEPRECATED.get(cmd, {})), cmd
    help_text = p.format_help()
    for old in DEPRECATED.get(cmd, {}):
        assert f"{old} " not in help_text.replace(f"{old}-", ""), (cmd, old)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    rng = np.random.default_rng(0)
    train = rng.random((5, 1, 6, 7))
    onnx.save(onnx_ae([(projection(train), np.zeros(42), False)], (1, 6, 7)), d / "ae.onnx")
    np.savez(d / "data.npz", train=train.astype(np.float32),
             test=rng.random((4, 1, 6, 7)).astype(np.float32))  # fmt: skip
    return d


_VOLATILE = {"provenance", "created_utc", "timing", "seconds", "onnx_seconds",
             "seconds_per_inversion", "seconds_per_iteration", "wall_seconds"}  # fmt: skip


def _stable(doc):
    """``doc`` without what differs between two identical runs (times, provenance)."""
    if isinstance(doc, dict):
        return {k: _stable(v) for k, v in doc.items() if k not in _VOLATILE}
    if isinstance(doc, list):
        return [_stable(v) for v in doc]
    return doc


def _cases(d: Path) -> dict[str, list[tuple[list[str], list[str]]]]:
    """command -> [(argv with the old spellings, argv with the new ones)]; ``{out}`` is the
    output folder of one run."""
    ae, data = str(d / "ae.onnx"), str(d / "data.npz")
    two = ["--train", f"{data}:train", "--test", f"{data}:test"]
    return {
        "recover": [
            (["recover", ae, data, "--key", "test", *FAST], ["recover", ae, f"{data}:test", *FAST])
        ],
        "evaluate": [
            (
                ["evaluate", ae, *two, "--masks", "center:2,rows:2", "--methods", "known", *FAST],
                ["evaluate", ae, *two, "--mask", "center:2,rows:2", "--method", "known", *FAST],
            )
        ],  # fmt: skip
        "audit": [
            (
                [
                    "audit",
                    ae,
                    *two,
                    "--masks",
                    "center:2",
                    "--methods",
                    "blind",
                    "--stability-n",
                    "2",
                    "--bootstrap",
                    "20",
                    "--gallery",
                    "1",
                    "--out",
                    "{out}",
                    *FAST,
                ],
                [
                    "audit",
                    ae,
                    *two,
                    "--mask",
                    "center:2",
                    "--method",
                    "blind",
                    "--stability-limit",
                    "2",
                    "--bootstrap",
                    "20",
                    "--gallery",
                    "1",
                    "--out",
                    "{out}",
                    *FAST,
                ],
            )
        ],  # fmt: skip
        "demo": [(["demo", "--methods", "known", *FAST], ["demo", "--method", "known", *FAST])],
        "stability": [
            (
                ["stability", ae, f"{data}:train", "--rho", "0.5", "--n", "2"],
                ["stability", ae, f"{data}:train", "--rho", "0.5", "--limit", "2"],
            )
        ],  # fmt: skip
        "inspect": [
            (
                ["inspect", ae, "--samples", "5", "--prox", data, "--prox-n", "2"],
                ["inspect", ae, "--limit", "5", "--prox", data, "--prox-limit", "2"],
            )
        ],  # fmt: skip
        "invert": [
            (
                [
                    "invert",
                    str(DECODER),
                    str(INVERT_DATA),
                    "--method",
                    "gd",
                    "--limit",
                    "1",
                    "--max-iter",
                    "20",
                    "--save",
                    "{out}/z.npz",
                ],
                [
                    "invert",
                    str(DECODER),
                    str(INVERT_DATA),
                    "--method",
                    "gd",
                    "--limit",
                    "1",
                    "--max-iter",
                    "20",
                    "--out",
                    "{out}/z.npz",
                ],
            )
        ],  # fmt: skip
        "bregman": [
            (
                [
                    "bregman",
                    str(ENCODER),
                    str(CODES),
                    "--key",
                    "y",
                    "--limit",
                    "1",
                    "--max-iter",
                    "20",
                    "--out",
                    "{out}/x.npz",
                ],
                [
                    "bregman",
                    str(ENCODER),
                    f"{CODES}:y",
                    "--limit",
                    "1",
                    "--max-iter",
                    "20",
                    "--out",
                    "{out}/x.npz",
                ],
            )
        ],  # fmt: skip
    }


def _run(argv: list[str], out: Path, capsys) -> tuple[dict, str]:
    out.mkdir(parents=True, exist_ok=True)
    argv = [a.replace("{out}", str(out)) for a in argv]
    if "audit" not in argv[:1]:
        argv += ["--json", str(out / "doc.json")]
    assert main(argv) == 0, argv
    err = capsys.readouterr().err
    doc = json.loads((out / ("report.json" if argv[0] == "audit" else "doc.json")).read_text())
    arrays = {}
    for f in sorted(out.glob("*.npz")):
        with np.load(f) as z:
            arrays[f.name] = {k: z[k].tolist() for k in z.files}
    doc = _stable(doc)
    return {"doc": doc, "arrays": arrays}, err


@pytest.mark.parametrize("cmd", sorted(DEPRECATED))
def test_deprecated_alias_warns_once_and_gives_the_same_result(cmd, files, tmp_path, capsys,
                                                               monkeypatch):  # fmt: skip
    monkeypatch.setenv("REFINV_NO_PROGRESS", "1")
    for i, (old, new) in enumerate(_cases(files)[cmd]):
        a, err_old = _run(old, tmp_path / f"old{i}", capsys)
        b, err_new = _run(new, tmp_path / f"new{i}", capsys)
        warned = [ln for ln in err_old.splitlines() if "deprecated" in ln]
        used = [s for s in old if s in DEPRECATED[cmd]]
        assert len(warned) == len(used) >= 1, err_old
        for s, line in zip(used, warned, strict=True):
            assert line == (
                f"refinv {cmd}: warning: {s} is deprecated and goes in refinv 0.2; use "
                f"{DEPRECATED[cmd][s]}"
            )
        assert "deprecated" not in err_new
        assert a == b, cmd


def test_recover_refuses_two_different_keys(files, capsys):
    """``DATA.npz:test --key train`` used train silently; now an error naming both."""
    d = files
    rc = main(["recover", str(d / "ae.onnx"), f"{d / 'data.npz'}:test", "--key", "train"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "refinv recover: error: two keys for one data file" in err
    assert "'test'" in err and "'train'" in err
    # the same key twice is only the deprecation
    rc = main(["recover", str(d / "ae.onnx"), f"{d / 'data.npz'}:test", "--key", "test", *FAST])
    assert rc == 0


def test_bregman_json_is_optional(tmp_path, capsys):
    rc = main(["bregman", str(ENCODER), f"{CODES}:y", "--limit", "1", "--max-iter", "5"])
    assert rc == 0 and "pdhg" in capsys.readouterr().out
