"""The JSON documents the commands write: schema name, ``schema_version`` and provenance.

Every ``--json`` document (and ``audit``'s ``report.json``) names its schema
(``"schema": "refinv.KIND"``, a JSON Schema shipped in :mod:`refinv.schemas`),
carries ``schema_version`` and ends with the ``provenance`` block of
:func:`refinv.provenance.provenance`: versions, the command line, the sha256 of
every input file, the machine, the time. :func:`refinv.cli.main` records the
command line and the start time on the parsed arguments.
"""

from __future__ import annotations

import argparse
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["stamp", "write_json", "cli_argv", "effective_kwargs"]

SCHEMA_VERSION = 1


def cli_argv(args: argparse.Namespace) -> list[str]:
    """The command line ``main`` parsed (``["refinv", ...]``)."""
    import sys

    return list(getattr(args, "cli_argv", None) or sys.argv)


def stamp(
    doc: dict,
    kind: str,
    args: argparse.Namespace,
    files: Mapping[str, str | os.PathLike | None],
) -> dict:
    """``doc`` with ``schema`` and ``schema_version`` first (kept if already there) and a
    ``provenance`` block last (input files ``files``: role -> path)."""
    from ..provenance import provenance

    started = getattr(args, "cli_started", None)
    head = {"schema": doc.get("schema", f"refinv.{kind}"),
            "schema_version": doc.get("schema_version", SCHEMA_VERSION)}  # fmt: skip
    body = {k: v for k, v in doc.items() if k not in ("schema", "schema_version", "provenance")}
    prov = provenance(files, argv=cli_argv(args), started=started)
    return {**head, **body, "provenance": prov}


def write_json(
    path: str | os.PathLike,
    doc: dict,
    kind: str,
    args: argparse.Namespace,
    files: Mapping[str, str | os.PathLike | None],
) -> dict:
    """:func:`stamp` ``doc`` and write it atomically to ``path``; returns the written dict."""
    from ..io import atomic_write_json

    out = stamp(doc, kind, args, files)
    atomic_write_json(path, out)
    return out


def effective_kwargs(fn: Callable, given: Mapping[str, Any], skip: tuple[str, ...] = ()) -> dict:
    """Every keyword option of ``fn`` with the value it runs with: ``given`` where given,
    else ``fn``'s default; arrays, callbacks and the names in ``skip`` are left out."""
    import numpy as np

    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        if p.default is p.empty and name not in given:
            continue
        if name in skip or name in ("callback", "record_history", "progress"):
            continue
        v = given.get(name, p.default)
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (list, tuple)) and all(isinstance(t, (int, float)) for t in v):
            v = list(v)
        elif not (v is None or isinstance(v, (str, int, float, bool))):
            continue  # an array (mask, x0) or an object: not a setting
        out[name] = v
    return out
