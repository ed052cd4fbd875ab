"""Every JSON document a refinv command writes validates against its shipped JSON Schema
(refinv/schemas, draft 2020-12), carries a provenance block with the sha256 of its inputs,
and records the EFFECTIVE solver settings (defaults included); the schemas are strict
enough to refuse a document without provenance or with an empty settings.solver."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")

from refinv.cli import main  # noqa: E402
from refinv.evaluation.report import effective_options  # noqa: E402
from refinv.schemas import KINDS, schema, validate, validator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "refinv" / "_data"
FACES_AE = PKG / "onnx" / "faces25_lrelu_6x256.onnx"  # the demo's, shipped in the wheel
FACES = PKG / "data" / "faces25.npz"
DIGITS_AE = ROOT / "models" / "onnx" / "digits8_lrelu_6x320.onnx"
DIGITS = ROOT / "models" / "data" / "digits8.npz"
DECODER = ROOT / "models" / "onnx" / "digits28_gen_fc_20-128-392-784_decoder.onnx"
INVERT_DATA = ROOT / "models" / "data" / "digits28_gen_fc_invert.npz"
ENCODER = ROOT / "models" / "onnx" / "digits28_bregman_fc_code100_encoder.onnx"
CODES = ROOT / "models" / "data" / "digits28_bregman_fc_codes.npz"
FAST = ["--max-iter", "2", "--inner-iter", "2", "-q"]


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _commands(tmp: Path) -> dict[str, tuple[list[str], Path, dict[str, Path]]]:
    """name -> (argv, the JSON it writes, {provenance input role: file})."""
    j = {k: tmp / f"{k}.json" for k in ("demo", "recover", "evaluate", "stability", "inspect",
                                          "invert", "bregman", "report")}  # fmt: skip
    return {
        "demo": (["demo", *FAST, "--json", str(j["demo"])], j["demo"], {}),
        "recover": (
            [
                "recover",
                str(FACES_AE),
                f"{FACES}:test",
                *FAST,
                "--json",
                str(j["recover"]),
            ],
            j["recover"],
            {"model": FACES_AE, "data": FACES},
        ),  # fmt: skip
        "evaluate": (
            [
                "evaluate",
                str(DIGITS_AE),
                "--train",
                f"{DIGITS}:train",
                "--test",
                f"{DIGITS}:test",
                "--mask",
                "center:3",
                "--method",
                "blind,known,ae-iterations",
                *FAST,
                "--json",
                str(j["evaluate"]),
            ],
            j["evaluate"],
            {"model": DIGITS_AE, "train": DIGITS, "test": DIGITS},
        ),  # fmt: skip
        "audit": (
            [
                "audit",
                str(DIGITS_AE),
                "--train",
                f"{DIGITS}:train",
                "--test",
                f"{DIGITS}:test",
                "--mask",
                "random:0.5",
                "--method",
                "blind",
                "--bootstrap",
                "20",
                "--stability-limit",
                "1",
                "--gallery",
                "1",
                *FAST,
                "--out",
                str(tmp / "audit"),
            ],
            tmp / "audit" / "report.json",
            {"model": DIGITS_AE, "train": DIGITS},
        ),  # fmt: skip
        "stability": (
            [
                "stability",
                str(DIGITS_AE),
                f"{DIGITS}:train",
                "--rho",
                "0.5",
                "--limit",
                "2",
                "--json",
                str(j["stability"]),
            ],
            j["stability"],
            {"model": DIGITS_AE, "data": DIGITS},
        ),  # fmt: skip
        "inspect": (
            ["inspect", str(DECODER), "--limit", "5", "--json", str(j["inspect"])],
            j["inspect"],
            {"model": DECODER},
        ),  # fmt: skip
        "invert": (
            [
                "invert",
                str(DECODER),
                str(INVERT_DATA),
                "--method",
                "gd",
                "--limit",
                "2",
                "--max-iter",
                "20",
                "--json",
                str(j["invert"]),
            ],
            j["invert"],
            {"model": DECODER, "data": INVERT_DATA},
        ),  # fmt: skip
        "bregman": (
            [
                "bregman",
                str(ENCODER),
                str(CODES),
                "--limit",
                "2",
                "--max-iter",
                "20",
                "--json",
                str(j["bregman"]),
            ],
            j["bregman"],
            {"model": ENCODER, "codes": CODES},
        ),  # fmt: skip
    }


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    """Run every command once on the shipped files; name -> (written document, roles)."""
    for p in (FACES_AE, FACES, DIGITS_AE, DIGITS, DECODER, INVERT_DATA, ENCODER, CODES):
        if not p.is_file():
            pytest.skip(f"needs the shipped file {p}")
    tmp = tmp_path_factory.mktemp("schemas")
    docs = {}
    for name, (argv, out, roles) in _commands(tmp).items():
        assert main(argv) == 0, name
        docs[name] = (json.loads(out.read_text()), roles, argv)
    # a sweep and its report (the fourth command that writes the report schema)
    cfg = tmp / "sweep.toml"
    cfg.write_text(
        'seed = 0\nshard_size = 5\nmasks = ["center:3"]\nmethods = ["known"]\n'
        f'[solver]\nmax_iter = 2\n[datasets.d8]\ntrain = "{DIGITS}:train"\nn = 5\n'
        f'[[models]]\npath = "{DIGITS_AE}"\nlabel = "d8"\n'
    )
    db = tmp / "sweep.sqlite"
    assert main(["sweep", str(cfg), "--db", str(db), "-q"]) == 0
    argv = ["report", str(db), "--json", str(tmp / "report.json")]
    assert main(argv) == 0
    docs["report"] = (json.loads((tmp / "report.json").read_text()), {"database": db}, argv)
    return docs


# the audit's version 2: the three-way verdict, exact intervals, low-FPR operating points
# stability 2: fixed_point, null radii; report 2: the model-free control, report 3: the
# per-sample stop_reason and tol "auto", patience, search_patience in settings.solver
SCHEMA_VERSIONS = {"audit": 2, "stability": 2, "report": 3}
ALL = ["demo", "recover", "evaluate", "audit", "stability", "inspect", "invert", "bregman",
       "report"]  # fmt: skip


@pytest.mark.parametrize("name", ALL)
def test_every_command_json_validates_with_provenance(documents, name):
    doc, roles, argv = documents[name]
    validate(doc)  # the kind its "schema" names
    kind = doc["schema"].removeprefix("refinv.")
    assert kind in KINDS and doc["schema_version"] == SCHEMA_VERSIONS.get(kind, 1)
    prov = doc["provenance"]
    assert prov["argv"] == ["refinv", *argv]
    env = prov["environment"]
    assert env["refinv"] and env["python"] and env["machine"]
    for dist in ("numpy", "scipy", "onnx", "onnxruntime", "tqdm"):
        assert env["dependencies"][dist]
    for role, path in roles.items():
        assert prov["inputs"][role]["sha256"] == _sha(path), (name, role)
    if name == "demo":  # its model and data come from the checkout or the package
        assert prov["inputs"]["model"]["sha256"] == _sha(prov["inputs"]["model"]["path"])
        assert set(prov["inputs"]) == {"model", "data"}


@pytest.mark.parametrize("name", ["demo", "recover", "evaluate", "audit", "report"])
def test_default_solver_settings_are_recorded_with_their_values(documents, name):
    doc = documents[name][0]
    settings = doc["settings"]
    solver = settings["solver"]
    assert set(solver) == set(settings["methods"])
    noisy = settings["noise_std"] > 0
    given = {"max_iter": 2, "inner_iter": 2} if name != "report" else {"max_iter": 2}
    for method, opts in solver.items():
        assert opts == effective_options(method, given, noisy=noisy)
    if "blind" in solver:  # the defaults docs/cli.md lists, present although not given
        b = solver["blind"]
        assert (b["rho"], b["tol"], b["patience"], b["mask_init"], b["tau"], b["clip"]) == (
            0.5, "auto", 40, "ones", 0.0, False)  # fmt: skip
    if "known" in solver:
        assert solver["known"]["rho"] == 0.5 and solver["known"]["reinsert"] is True


def test_effective_options_are_the_solver_signature_defaults():
    import inspect

    from refinv.solvers.recovery import DEFAULTS, ae_iterations, blind_recovery

    blind = effective_options("blind", {})
    sig = inspect.signature(blind_recovery).parameters
    assert blind == {k: (False if k == "clip" else sig[k].default) for k in blind}
    assert {k: blind[k] for k in DEFAULTS} == DEFAULTS
    assert effective_options("known", {}, noisy=True)["reinsert"] is False
    ae = effective_options("ae-iterations", {"max_iter": 3, "inner_iter": 4})
    assert ae["max_iter"] == 12  # equal cost: outer x inner calls of f
    assert ae["check_every"] == inspect.signature(ae_iterations).parameters["check_every"].default
    assert effective_options("blind", {"clip": True, "rho": 2.0})["clip"] is True


def test_invert_and_bregman_record_effective_settings(documents):
    inv = documents["invert"][0]["settings"]
    assert inv["method"] == "gd" and inv["max_iter"] == 20
    assert inv["tol"] == 1e-13 and inv["momentum"] == 0.0  # the solver's defaults
    br = documents["bregman"][0]["settings"]
    assert br["max_iter"] == 20 and br["alpha"] == 1.5e-2 and br["tol"] == 1e-5
    assert br["p"] == 2 and br["steps"] == "paper"


# ------------------------------------------------------------------ strictness
@pytest.mark.parametrize("name", ALL)
def test_a_document_without_provenance_fails(documents, name):
    doc = copy.deepcopy(documents[name][0])
    del doc["provenance"]
    with pytest.raises(jsonschema.ValidationError, match="provenance"):
        validate(doc)


@pytest.mark.parametrize("name", ["recover", "evaluate", "audit"])
def test_empty_or_partial_solver_settings_fail(documents, name):
    doc = copy.deepcopy(documents[name][0])
    doc["settings"]["solver"] = {}
    with pytest.raises(jsonschema.ValidationError, match="non-empty"):
        validate(doc)
    doc = copy.deepcopy(documents[name][0])
    del doc["settings"]["solver"]["blind"]["rho"]  # a default left out
    with pytest.raises(jsonschema.ValidationError, match="rho"):
        validate(doc)


def test_provenance_needs_input_hashes_and_versions(documents):
    doc = copy.deepcopy(documents["recover"][0])
    doc["provenance"]["inputs"] = {}
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)
    doc = copy.deepcopy(documents["recover"][0])
    doc["provenance"]["inputs"]["model"]["sha256"] = "not-a-hash"
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)
    doc = copy.deepcopy(documents["invert"][0])
    del doc["provenance"]["environment"]["dependencies"]["numpy"]
    with pytest.raises(jsonschema.ValidationError, match="numpy"):
        validate(doc)


def test_schemas_are_valid_draft_2020_12_and_ship_as_package_data():
    for kind in (*KINDS, "provenance"):
        s = schema(kind)
        assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(s)
        validator(kind)  # every $ref resolves offline
    text = (ROOT / "pyproject.toml").read_text()
    assert '"schemas/*.json"' in text
