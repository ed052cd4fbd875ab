"""Provenance of a result: what produced it, from which files, on which machine.

One helper, :func:`provenance`, gives the block that every JSON document refinv
writes carries under ``"provenance"``: refinv and dependency versions (read from
the installed distributions' metadata, so nothing heavy is imported), the
command line, the sha256 of every input file, the machine and the time.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

__all__ = ["DEPENDENCIES", "environment", "file_sha256", "provenance", "utc_now"]

# distributions whose versions decide a result (core dependencies first)
DEPENDENCIES = (
    "numpy", "scipy", "array-api-compat", "onnx", "onnxruntime", "onnxruntime-gpu", "tqdm",
)  # fmt: skip


def utc_now() -> str:
    """The current UTC time as the documents and stores of refinv write it
    (``2026-12-07T19:49:46Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Versions and machine: ``{"refinv", "python", "platform", "machine", "cpu_count",
    "dependencies": {name: version or None}}``."""
    from . import __version__

    return {
        "refinv": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "dependencies": {d: _version(d) for d in DEPENDENCIES if _version(d) is not None},
    }


def provenance(
    files: Mapping[str, str | os.PathLike | None] | None = None,
    *,
    argv: Sequence[str] | None = None,
    started: float | None = None,
) -> dict:
    """The ``"provenance"`` block of a JSON document.

    Parameters
    ----------
    files : role -> path of each input (``{"model": ..., "data": ...}``); each is
        recorded with its resolved path and sha256 (``None`` entries are skipped).
    argv : the command line (default ``sys.argv``).
    started : ``time.time()`` at the start of the work, for ``wall_seconds``.
    """
    inputs = {}
    for role, path in (files or {}).items():
        if path is None:
            continue
        p = Path(path)
        inputs[role] = {"path": str(p), "sha256": file_sha256(p) if p.is_file() else None}
    out = {
        "argv": list(sys.argv if argv is None else argv),
        "created_utc": utc_now(),
        "environment": environment(),
        "inputs": inputs,
    }
    if started is not None:
        out["wall_seconds"] = round(time.time() - started, 3)
    return out
