"""The memorization report of a sweep database: the same JSON schema as ``refinv evaluate``.

:func:`report_from_db` is the report document of :mod:`refinv.evaluation.report`
(its ``SCHEMA_VERSION``: the same rates, PSNR and per-sample lists, ``command = "sweep"``)
computed from the store (:func:`~refinv.evaluation.report.report_from_store`), so
:func:`~refinv.evaluation.report.format_table` and the figures work on it unchanged. Runs
are ordered like ``refinv evaluate``'s: checkpoint (config order), mask, split, method;
samples in index order.
"""

from __future__ import annotations

from pathlib import Path

from ..engine.store import Store

__all__ = ["report_from_db"]


class _Named:
    """A mask given by text only (a ``file:`` mask whose file may be gone)."""

    def __init__(self, text: str):
        self.text = text


def report_from_db(db: str | Path) -> dict:
    """The report document (schema of :mod:`refinv.evaluation.report`) of a sweep database."""
    from ..evaluation.report import control_from_store, new_document, report_from_store
    from ..operators.masks import parse_mask
    from ..provenance import provenance

    with Store(db, readonly=True) as store:
        meta = store.meta()
        settings = meta.get("settings", {})
        masks = [parse_mask(m) if not m.startswith("file:") else _Named(m)
                 for m in meta.get("masks") or []]  # fmt: skip
        doc = new_document(
            command="sweep", seed=int(settings.get("seed", 0)),
            noise_std=float(settings.get("noise_std", 0.0)), masks=masks,
            methods=meta.get("methods", []), solver=settings.get("solver", {}),
        )  # fmt: skip
        counts = store.task_counts()
        doc["settings"]["shard_size"] = settings.get("shard_size")
        doc["settings"]["database"] = str(db)
        doc["settings"]["tasks"] = {"done": counts.get("done", 0),
                                    "failed": counts.get("failed", 0)}  # fmt: skip
        doc = report_from_store(store, doc)
        doc["control"] = control_from_store(store)  # a store of refinv evaluate --db
    # as memorization_report: the schema name first, the provenance block (the database) last
    doc = {"schema": "refinv.report", **doc}
    doc["provenance"] = provenance({"database": str(db)})
    return doc
