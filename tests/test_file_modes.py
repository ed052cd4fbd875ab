"""Files refinv writes get the mode a plain ``open(path, "w")`` would give them (a new file
``0o666 & ~umask``, an existing one keeps its mode), not mkstemp's 0600; the bregman
figure is written atomically (a failure mid-write leaves no partial file)."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from refinv.evaluation.chunked import NpzStreamWriter
from refinv.evaluation.report import png_bytes
from refinv.io import (
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    new_file_mode,
)
from refinv.sweep import Store

ROOT = Path(__file__).resolve().parents[1]
UMASKS = (0o022, 0o077, 0o002)


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _plain_open_mode(tmp: Path) -> int:
    """What open() gives a new file under the current umask (the reference)."""
    p = tmp / "reference.txt"
    with open(p, "w") as fh:
        fh.write("x")
    m = _mode(p)
    p.unlink()
    return m


def _write_npz_stream(p: Path) -> None:
    w = NpzStreamWriter(p, {"a": ((2, 3), np.float32)})
    w.write("a", 0, np.ones((2, 3)))
    w.close()


WRITERS = {
    "json": lambda p: atomic_write_json(p, {"a": 1}),
    "npz": lambda p: atomic_save_npz(p, x=np.arange(3)),
    "png": lambda p: atomic_write_bytes(p, png_bytes(np.zeros((4, 4)))),
    "html": lambda p: atomic_write_text(p, "<html></html>"),
    "npz-stream": _write_npz_stream,  # refinv recover --out
    "sweep-store": lambda p: Store(p).close(),
}


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_new_files_get_the_mode_of_a_plain_open(tmp_path, kind, mask):
    p = tmp_path / f"out.{kind}"
    with umask(mask):
        expected = _plain_open_mode(tmp_path)
        WRITERS[kind](p)
    assert expected == 0o666 & ~mask
    assert _mode(p) == expected, (kind, oct(_mode(p)), oct(expected))
    if kind == "sweep-store":  # SQLite gives its -wal / -shm files the database's mode
        for side in tmp_path.glob("out.sweep-store-*"):
            assert _mode(side) == expected
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize("kind", ["json", "npz", "png", "html", "npz-stream"])
def test_rewriting_keeps_an_existing_files_mode(tmp_path, kind):
    p = tmp_path / f"out.{kind}"
    with umask(0o022):
        WRITERS[kind](p)
        os.chmod(p, 0o640)
        assert new_file_mode(p) == 0o640
        WRITERS[kind](p)  # replaced atomically, as open(p, "w") would keep the mode
    assert _mode(p) == 0o640


def _bregman_argv(out: Path) -> list[str]:
    enc = ROOT / "models" / "onnx" / "digits28_bregman_fc_code100_encoder.onnx"
    codes = ROOT / "models" / "data" / "digits28_bregman_fc_codes.npz"
    if not (enc.is_file() and codes.is_file()):
        pytest.skip("needs the shipped bregman example files")
    return ["bregman", str(enc), str(codes), "--limit", "2", "--max-iter", "5",
            "--json", str(out / "b.json"), "--figures", str(out / "fig")]  # fmt: skip


def test_bregman_figure_is_atomic_with_the_umask_mode(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from refinv.cli import main

    with umask(0o027):
        assert main(_bregman_argv(tmp_path)) == 0
    png = tmp_path / "fig" / "bregman_inversion.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _mode(png) == _mode(tmp_path / "b.json") == 0o640
    # a failure in the middle of writing the figure: the old figure stays whole, no temp file
    png.write_bytes(b"old figure")
    import refinv.io as rio

    real_fsync, seen = os.fsync, []

    def fsync_fails_for_the_figure(fd):  # the PNG bytes are in its temp file by now
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".bregman_inversion.png." in name:
            seen.append(os.fstat(fd).st_size)
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell the figure's temp file apart")
    monkeypatch.setattr(rio.os, "fsync", fsync_fails_for_the_figure)
    (tmp_path / "b.json").unlink()
    assert main(_bregman_argv(tmp_path)) == 2  # refinv bregman: error: ... cannot write
    assert seen and seen[0] > 1000  # it failed with a partial figure written to the temp file
    assert (tmp_path / "b.json").is_file()  # the JSON before it was written
    assert png.read_bytes() == b"old figure"
    assert sorted(p.name for p in png.parent.iterdir()) == ["bregman_inversion.png"]
