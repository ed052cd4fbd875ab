"""Bad inputs that are not models (issue 19): solver options, mask specs, data files, outputs.

Each refused input raises a RefinvError subclass with a message saying what was expected
and what came, before any work; the CLI turns it into ``refinv CMD: error: ...``, exit 2.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import array_api_strict as xps
import numpy as np
import onnx
import pytest
from test_recovery import onnx_ae, projection

from refinv import OnnxModel
from refinv.cli import main
from refinv.errors import (
    ConfigError,
    DTypeError,
    MaskError,
    MaskSpecError,
    ShapeError,
)
from refinv.io import (
    NPZ_MAX_BYTES,
    atomic_write_json,
    atomic_write_text,
    check_writable,
    load_images,
    load_npz,
    npz_max_bytes,
)
from refinv.operators.masks import draw_masks, grid, random_blocks, stripes
from refinv.solvers.recovery import ae_iterations, blind_recovery, known_mask_recovery

ROOT = Path(__file__).resolve().parents[1]


def ident(a):
    return a


# ------------------------------------------------------------------ solvers
@pytest.mark.parametrize("solver", ["blind", "known", "ae-iterations"])
def test_empty_batch_is_a_shape_error(solver):
    y = np.zeros((0, 1, 4, 4))
    run = {
        "blind": lambda: blind_recovery(ident, y, max_iter=2),
        "known": lambda: known_mask_recovery(ident, y, np.ones((4, 4)), max_iter=2),
        "ae-iterations": lambda: ae_iterations(ident, y, max_iter=2),
    }[solver]
    with pytest.raises(ShapeError, match="at least one sample.*\\(0, 1, 4, 4\\)"):
        run()


@pytest.mark.parametrize(
    "kw",
    [
        {"max_iter": math.nan}, {"max_iter": math.inf}, {"max_iter": 2.5}, {"max_iter": True},
        {"max_iter": "10"}, {"inner_iter": math.nan}, {"inner_iter": -math.inf},
        {"inner_iter": 0.5}, {"blowup": math.nan}, {"blowup": 0}, {"blowup": -1},
        {"blowup": "big"}, {"tol": math.nan}, {"rho": math.nan}, {"rho": "0.5"},
    ],
)  # fmt: skip
def test_solver_options_refused(kw):
    y = np.ones((2, 1, 4, 4))
    with pytest.raises(ConfigError, match=next(iter(kw))):
        blind_recovery(ident, y, **kw)
    ae_kw = {k: v for k, v in kw.items() if k not in ("inner_iter", "rho")}
    if ae_kw:
        with pytest.raises(ConfigError):
            ae_iterations(ident, y, **ae_kw)


def test_blowup_inf_and_integral_floats_accepted():
    """blowup = inf stops on NaN/Inf only; max_iter = 3.0 is the integer 3."""
    y = np.full((2, 1, 4, 4), 1e9)  # far above the default blowup 1e6
    r = ae_iterations(lambda a: 2 * a, y, max_iter=3.0, tol=0, blowup=math.inf)
    assert not r.diverged.any() and (r.iterations == 3).all()
    with pytest.warns(RuntimeWarning):
        r2 = ae_iterations(lambda a: 2 * a, y, max_iter=3, tol=0)
    assert r2.diverged.all()


def test_strict_integer_arrays_are_dtype_errors():
    yi = xps.asarray(np.ones((2, 1, 4, 4), dtype=np.int64))
    for run in (
        lambda: blind_recovery(ident, yi),
        lambda: known_mask_recovery(ident, yi, np.ones((4, 4))),
        lambda: ae_iterations(ident, yi),
    ):
        with pytest.raises(DTypeError, match="int64"):
            run()


def test_onnx_model_strict_integer_array_is_a_dtype_error(tmp_path):
    p = tmp_path / "ae.onnx"
    onnx.save(onnx_ae([(np.eye(16), np.zeros(16), False)], (1, 4, 4), np.float32), p)
    with pytest.raises(DTypeError):
        OnnxModel(p)(xps.asarray(np.ones((2, 1, 4, 4), dtype=np.int64)))


# ------------------------------------------------------------------ masks
@pytest.mark.parametrize(
    "spec",
    ["grid:99999999999999999999", "grid:10", "blocks:100000000x1", "blocks:73x1",
     "blocks:1x9", "blocks:1x9x2", "rows:9", "cols:10", "cols:99999999999999999999",
     "center:9"],
)  # fmt: skip
def test_mask_counts_and_sizes_must_fit_the_image(spec):
    t0 = time.perf_counter()
    with pytest.raises(MaskSpecError, match="expected .*got") as e:
        draw_masks(spec, (1, 8, 9), 3, 0)
    assert isinstance(e.value, MaskError) and isinstance(e.value, ConfigError)
    assert time.perf_counter() - t0 < 0.5  # refused up front, not after a loop


def test_mask_bounds_are_inclusive():
    """The largest counts and sizes that fit are accepted and mean what they say."""
    assert grid((8, 9), 9).sum() == 1  # only (0, 0) kept
    assert stripes((8, 9), 8, axis="rows").all()  # one band, kept
    assert stripes((8, 9), 9, axis="cols").all()
    m = random_blocks((8, 9), 72, (1, 1), 0, n=2)
    assert m.shape == (2, 8, 9) and (~m).sum() > 0
    assert not draw_masks("blocks:1x8x9", (1, 8, 9), 1, 0).any()
    assert (~draw_masks("center:8", (8, 9), 1)).sum() == 64


# ------------------------------------------------------------------ npz files
def _zip_member(name: str, payload_head: bytes, zeros: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``payload_head + zeros`` NUL bytes, built from byte-aligned
    full-flush blocks of 1 MiB (identical after each flush), so 2 GiB costs nothing."""
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    head = c.compress(payload_head) + c.flush(zlib.Z_FULL_FLUSH)
    block = 1 << 20
    c2 = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = c2.compress(b"\0" * block) + c2.flush(zlib.Z_FULL_FLUSH)
    assert zeros % block == 0
    body = head + chunk * (zeros // block) + b"\x03\x00"  # empty final block
    return body, len(payload_head) + zeros


def _bomb(path: Path, zeros: int = 1 << 31) -> Path:
    """A real .npz: one uint8 array of ``zeros`` bytes, deflated (2 GiB -> about 2 MB).

    The CRC field is not the data's (computing it would read 2 GiB): refinv must refuse
    the file from its sizes, before reading a byte of it.
    """
    header = {"descr": "|u1", "fortran_order": False, "shape": (zeros,)}
    h = repr(header).encode("latin1")
    h += b" " * (64 - (10 + len(h) + 1) % 64) + b"\n"
    npy_head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h
    data, size = _zip_member("train.npy", npy_head, zeros)
    name = b"train.npy"
    local = struct.pack(
        "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(data), size, len(name), 0
    )
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(data), size,
        len(name), 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    cd = central + name
    off = len(local) + len(name) + len(data)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(cd), off, 0)
    path.write_bytes(local + name + data + cd + end)
    return path


def test_npz_bomb_refused_in_well_under_a_second(tmp_path):
    p = _bomb(tmp_path / "bomb.npz")
    assert p.stat().st_size < 3 * 2**20
    with zipfile.ZipFile(p) as z:  # a well-formed zip declaring 2 GiB
        assert z.infolist()[0].file_size == 2**31 + 128
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="at most 1 GiB.*declare 2 GiB.*REFINV_NPZ_MAX_BYTES"):
        load_npz(p)
    with pytest.raises(ConfigError, match="REFINV_NPZ_MAX_BYTES"):
        load_images(p, "train")
    assert time.perf_counter() - t0 < 0.5
    assert NPZ_MAX_BYTES == 2**30


def test_npz_array_header_larger_than_its_member_is_refused(tmp_path):
    """Declared zip sizes can be small while the .npy header claims a huge array."""
    p = tmp_path / "forged.npz"
    np.savez(p, train=np.zeros(10))
    raw = zipfile.ZipFile(p).read("train.npy").replace(b"(10,)", b"(10000000000,)")
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("train.npy", raw)
    with pytest.raises(ConfigError, match="needs 80000000000 bytes.*holds"):
        load_npz(p)


def test_npz_cap_argument_and_environment(tmp_path, monkeypatch):
    p = tmp_path / "a.npz"
    np.savez_compressed(p, train=np.zeros((10, 1, 10, 10)))  # 8000 bytes + a 128-byte header
    assert load_npz(p)["train"].shape == (10, 1, 10, 10)
    with pytest.raises(ConfigError, match="at most 4000 bytes"):
        load_npz(p, max_bytes=4000)
    assert load_npz(p, max_bytes=8128)["train"].shape == (10, 1, 10, 10)
    monkeypatch.setenv("REFINV_NPZ_MAX_BYTES", "4000")
    assert npz_max_bytes() == 4000
    with pytest.raises(ConfigError, match="REFINV_NPZ_MAX_BYTES"):
        load_images(p, "train")
    assert load_npz(p, max_bytes=10**6)["train"].shape == (10, 1, 10, 10)  # argument wins
    monkeypatch.setenv("REFINV_NPZ_MAX_BYTES", "1e4")
    assert npz_max_bytes() == 10000
    for bad in ("-1", "0", "lots", "nan", "1.5"):
        monkeypatch.setenv("REFINV_NPZ_MAX_BYTES", bad)
        with pytest.raises(ConfigError, match="positive whole number"):
            load_npz(p)
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ConfigError, match="max_bytes"):
            load_npz(p, max_bytes=bad)


def test_npz_object_arrays_refused_before_reading(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, train=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ConfigError, match="pickle"):
        load_npz(p)


# ------------------------------------------------------------------ data layout
def test_channels_last_colour_data_refused(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 5, 6)).astype(np.float32)
    p = tmp_path / "c.npz"
    np.savez(p, ok=x, last=np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
             flat=x.reshape(4, -1), empty=x[:0])  # fmt: skip
    np.testing.assert_array_equal(load_images(p, "ok", sample_shape=(3, 5, 6)), x)
    # channels-last colour images are transposed (unambiguous here), or refused when the
    # caller says the file is channels-first
    np.testing.assert_array_equal(load_images(p, "last", sample_shape=(3, 5, 6)), x)
    np.testing.assert_array_equal(load_images(p, "last", sample_shape=(3, 5, 6), layout="NHWC"), x)
    with pytest.raises(ShapeError, match="expected .*\\(N, 3, 5, 6\\).*\\(4, 5, 6, 3\\).*channels"):
        load_images(p, "last", sample_shape=(3, 5, 6), layout="NCHW")
    with pytest.raises(ShapeError, match="--data-layout NHWC: expected images \\(N, 5, 6, 3\\)"):
        load_images(p, "ok", sample_shape=(3, 5, 6), layout="NHWC")
    with pytest.raises(ShapeError, match="another layout"):
        load_images(p, "flat", sample_shape=(3, 5, 6))
    with pytest.raises(ShapeError, match="at least one image"):
        load_images(p, "empty", sample_shape=(3, 5, 6))


def test_reshapes_that_cannot_reorder_pixels_still_work(tmp_path):
    x = np.random.default_rng(1).random((4, 1, 5, 6))
    p = tmp_path / "g.npz"
    np.savez(p, hw=x[:, 0], flat=x.reshape(4, 30), chw=x)
    for k in ("hw", "flat", "chw"):
        np.testing.assert_array_equal(load_images(p, k, sample_shape=(1, 5, 6)), x.astype("f4"))
    np.testing.assert_array_equal(
        load_images(p, "chw", sample_shape=(30,)), x.reshape(4, 30).astype("f4")
    )
    with pytest.raises(ShapeError):
        load_images(p, "hw", sample_shape=(6, 5))  # transposed image: refused


# ------------------------------------------------------------------ atomic writes
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_removed_on_next_write(tmp_path):
    out = tmp_path / "r.json"
    dead = tmp_path / f".r.json.{_dead_pid()}-abc123.tmp"
    live = tmp_path / f".r.json.{os.getppid()}-def456.tmp"  # a running process: kept
    old = tmp_path / ".r.json.x1y2z3.tmp"  # older writers: no PID, removed after an hour
    new = tmp_path / ".r.json.q9w8e7.tmp"
    other = tmp_path / f".s.json.{_dead_pid()}-abc.tmp"  # another file's: not ours
    for f in (dead, live, old, new, other):
        f.write_text("{half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    atomic_write_json(out, {"a": 1})
    assert json.loads(out.read_text()) == {"a": 1}
    left = sorted(f.name for f in tmp_path.glob(".*.tmp"))
    assert left == sorted([live.name, new.name, other.name])


def test_write_errors_are_config_errors_and_leave_no_temp(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match="directory"):
        atomic_write_text(tmp_path / "d", "x")
    (tmp_path / "f").write_text("a file")
    with pytest.raises(ConfigError, match="not a directory"):
        atomic_write_text(tmp_path / "f" / "out.json", "x")
    with pytest.raises(ConfigError, match="cannot write"):
        check_writable("/proc/refinv-test/out.json")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(ConfigError, match="No space left"):
        atomic_write_text(tmp_path / "out.json", "x")
    monkeypatch.undo()
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "out.json", {"x": object()})
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "out.json").exists()
    assert not list(tmp_path.glob(".*probe*"))


_WRITER = """
import sys
from refinv.io import atomic_write_json
docs = [{"i": i, "payload": [i] * 200000} for i in range(3)]
k = 0
print("ready", flush=True)
while True:
    atomic_write_json(sys.argv[1], docs[k % 3])
    k += 1
"""


@pytest.mark.parametrize("kills", [pytest.param(2, id="2 kills"),
                                   pytest.param(12, id="12 kills", marks=pytest.mark.slow)])  # fmt: skip
def test_kill_during_json_writes_never_leaves_a_half_written_file(tmp_path, kills):
    out = tmp_path / "w.json"
    rng = np.random.default_rng(0)
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(out)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.6)))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        if out.exists():  # absent (killed before the first replace) or whole
            doc = json.loads(out.read_text())
            assert doc["payload"] == [doc["i"]] * 200000
    atomic_write_json(out, {"done": True})  # the next write removes the killed ones' temps
    assert not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_cli")
    rng = np.random.default_rng(0)
    train = rng.random((5, 1, 6, 7))
    onnx.save(onnx_ae([(projection(train), np.zeros(42), False)], (1, 6, 7)), d / "ae.onnx")
    np.savez(d / "data.npz", train=train.astype(np.float32),
             empty=np.zeros((0, 1, 6, 7), np.float32))  # fmt: skip
    np.savez(d / "y0.npz", y=np.zeros((0, 1, 6, 7)))
    colour = rng.random((3, 3, 4, 5))
    onnx.save(onnx_ae([(np.eye(60), np.zeros(60), False)], (3, 4, 5)), d / "colour.onnx")
    np.savez(d / "last.npz", train=colour.transpose(0, 2, 3, 1).astype(np.float32))
    nan_w = np.eye(42)
    nan_w[3, 4] = np.nan
    onnx.save(onnx_ae([(nan_w, np.zeros(42), True), (np.eye(42), np.zeros(42), False)],
                      (1, 6, 7)), d / "nan.onnx")  # fmt: skip
    return d


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, match",
    [
        (["recover", "{d}/ae.onnx", "{d}/data.npz:empty"], "at least one image"),
        (["evaluate", "{d}/ae.onnx", "--train", "{d}/data.npz:empty"], "at least one image"),
        (["stability", "{d}/ae.onnx", "{d}/data.npz:empty"], "at least one image"),
        (["invert", "{d}/ae.onnx", "{d}/y0.npz", "--method", "gd"], "at least one observation"),
        (["bregman", "{d}/ae.onnx", "{d}/y0.npz", "--json", "{d}/b.json"], "at least one code"),
        (["inspect", "{d}/ae.onnx", "--limit", "0"], "--limit: expected an integer >= 1"),
        (["inspect", "{d}/ae.onnx", "--limit", "-1"], "--limit"),
        (["inspect", "{d}/ae.onnx", "--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
        (["evaluate", "{d}/ae.onnx", "--train", "{d}/data.npz", "--seed", "-1"], "--seed"),
        (["recover", "{d}/ae.onnx", "{d}/data.npz", "--batch-size", "0"], "--batch-size"),
        (["evaluate", "{d}/ae.onnx", "--train", "{d}/data.npz", "--batch-size", "-1"],
         "--batch-size: expected an integer >= 1, got -1"),
        (["evaluate", "{d}/ae.onnx", "--train", "{d}/data.npz", "--threads", "100000"],
         "--threads: expected 0 .* to [0-9]+ .*got 100000"),
        (["recover", "{d}/ae.onnx", "{d}/data.npz", "--threads", "-1"], "--threads"),
        (["evaluate", "{d}/ae.onnx", "--train", "{d}/data.npz", "--json", "{d}"],
         "--json .*expected a file path, got a directory"),
        (["inspect", "{d}/ae.onnx", "--json", "/proc/refinv-no/out.json"], "--json .*cannot write"),
        (["recover", "{d}/ae.onnx", "{d}/data.npz", "--out", "{d}/data.npz/x.npz"],
         "not a directory"),
        (["inspect", "{d}/nan.onnx"], "finite weights.*layer\\(s\\) 0 .*--no-diagnostics"),
        (["recover", "{d}/colour.onnx", "{d}/last.npz", "--data-layout", "NCHW"],
         "expected images of shape \\(N, 3, 4, 5\\).*got \\(3, 4, 5, 3\\).*channels-last"),
        (["recover", "{d}/ae.onnx", "{d}/data.npz", "--mask", "grid:99999999999999999999"],
         "grid: expected a step in \\[1, 7\\]"),
        (["evaluate", "{d}/ae.onnx", "--train", "{d}/data.npz", "--mask",
          "random:0.5,blocks:100000000x1"], "blocks: expected 0 to 42 blocks"),
    ],
)  # fmt: skip
def test_cli_bad_inputs_exit_2_with_a_message(cli_files, capsys, argv, match):
    argv = [a.replace("{d}", str(cli_files)) for a in argv]
    t0 = time.perf_counter()
    rc, err = _cli(capsys, *argv, *(["--quiet"] if argv[0] in ("recover", "evaluate") else []))
    assert rc == 2, err
    assert err.startswith(f"refinv {argv[0]}: error: ") and "Traceback" not in err
    import re

    assert re.search(match, err), err
    assert time.perf_counter() - t0 < 30


def test_cli_inspect_nan_weights_without_diagnostics_reports_the_layers(cli_files, capsys):
    rc = main(["inspect", str(cli_files / "nan.onnx"), "--no-diagnostics"])
    assert rc == 0 and "2 layers" in capsys.readouterr().out


def test_cli_evaluate_is_bitwise_identical_across_batch_sizes_and_threads(cli_files, capsys):
    """Only timings, dates and the command line differ between --batch-size/--threads runs."""
    d = cli_files
    docs = []
    for extra in ([], ["--batch-size", "1"], ["--batch-size", "2", "--threads", "2"],
                  ["--threads", "1"]):  # fmt: skip
        out = d / f"ev{len(docs)}.json"
        rc = main(["evaluate", str(d / "ae.onnx"), "--train", f"{d}/data.npz:train",
                   "--mask", "random:0.5,center:3", "--max-iter", "30", "--quiet",
                   "--json", str(out), *extra])  # fmt: skip
        assert rc == 0
        docs.append(json.loads(out.read_text()))
    capsys.readouterr()

    def strip(o):
        if isinstance(o, dict):
            return {
                k: strip(v)
                for k, v in o.items()
                if k not in ("seconds", "onnx_seconds", "created_utc", "provenance")
            }
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    ref = strip(docs[0])
    assert ref["runs"] and all(r["mse"] for r in ref["runs"])
    for doc in docs[1:]:
        assert strip(doc) == ref
