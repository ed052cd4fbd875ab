"""JSON Schemas (draft 2020-12) of the JSON documents the ``refinv`` commands write.

Each document names its schema: ``"schema": "refinv.KIND"`` with KIND one of
:data:`KINDS` (``report``: recover, evaluate, demo and the report of a sweep;
``audit``, ``stability``, ``inspect``, ``invert``, ``bregman``); the schema files
``refinv/schemas/KIND.json`` ship in the package, with ``provenance.json``, the
block every document ends with. They are the contract of docs/cli.md: fields
may be added, none removed or renamed without a new ``schema_version``.

:func:`validate` needs the ``jsonschema`` package (``pip install 'refinv[schema]'``);
:func:`schema` reads a schema with the standard library alone.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["KINDS", "schema", "validate", "validator"]

#: the document kinds, one schema file each
KINDS = ("report", "audit", "stability", "inspect", "invert", "bregman")
_ALL = (*KINDS, "provenance")


@cache
def _text(kind: str) -> str:
    if kind not in _ALL:
        from ..errors import ConfigError

        raise ConfigError(f"schema: expected one of {', '.join(_ALL)}, got {kind!r}")
    return resources.files(__name__).joinpath(f"{kind}.json").read_text(encoding="utf-8")


def schema(kind: str) -> dict:
    """The JSON Schema of documents of ``kind`` (a fresh dict)."""
    return json.loads(_text(kind))


def validator(kind: str):
    """A ``jsonschema`` draft 2020-12 validator for ``kind``, resolving the references
    between the shipped schemas (``urn:refinv:schema:KIND``) offline."""
    try:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
    except ImportError as exc:
        raise ImportError(
            "refinv.schemas.validate needs jsonschema>=4.18: pip install 'refinv[schema]'"
        ) from exc
    resources_ = [(f"urn:refinv:schema:{k}", Resource.from_contents(schema(k))) for k in _ALL]
    registry = Registry().with_resources(resources_)
    s = schema(kind)
    Draft202012Validator.check_schema(s)
    return Draft202012Validator(s, registry=registry)


def validate(doc: dict[str, Any], kind: str | None = None) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``doc`` is a valid document of ``kind``
    (default: the kind its ``"schema"`` names, ``"refinv.KIND"``)."""
    if kind is None:
        name = str(doc.get("schema", ""))
        kind = name.removeprefix("refinv.") if name.startswith("refinv.") else name
    v = validator(kind)
    err = next(iter(sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path))), None)
    if err is not None:
        raise err
