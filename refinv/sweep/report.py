"""The memorization report of a sweep database: the same JSON schema as ``refinv evaluate``.

:func:`report_from_db` aggregates the per-sample rows of the store into the
report document of :mod:`refinv.evaluation.report` (its ``SCHEMA_VERSION``:
the same rates, PSNR and per-sample lists, ``command = "sweep"``), so
:func:`~refinv.evaluation.report.format_table` and the figures work on it
unchanged. Runs are ordered like ``refinv evaluate``'s: checkpoint (config
order), mask, split, method; samples in index order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .store import Store

__all__ = ["report_from_db"]


def report_from_db(db: str | Path) -> dict:
    """The report document (schema of :mod:`refinv.evaluation.report`) of a sweep database."""
    from ..evaluation.report import new_document
    from ..operators.masks import parse_mask

    with Store(db, readonly=True) as store:
        meta = store.meta()
        settings = meta.get("settings", {})
        rows = store.results()
        seconds = store.task_seconds()
        checkpoints = store.checkpoints()
        counts = store.task_counts()
    doc = new_document(
        command="sweep",
        seed=int(settings.get("seed", 0)),
        noise_std=float(settings.get("noise_std", 0.0)),
        masks=[parse_mask(m) if not m.startswith("file:") else _Named(m) for m in meta["masks"]]
        if meta.get("masks")
        else [],
        methods=meta.get("methods", []),
        solver=settings.get("solver", {}),
    )
    doc["settings"]["shard_size"] = settings.get("shard_size")
    doc["settings"]["database"] = str(db)
    doc["settings"]["tasks"] = {"done": counts.get("done", 0), "failed": counts.get("failed", 0)}
    doc["checkpoints"] = checkpoints
    loss = {c["label"]: c["train_loss"] for c in checkpoints}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["checkpoint"], r["mask"], r["method"], r["split"]), []).append(r)
    ck_pos = {c["label"]: i for i, c in enumerate(checkpoints)}
    mask_pos = {m: i for i, m in enumerate(meta.get("masks", []))}
    meth_pos = {m: i for i, m in enumerate(meta.get("methods", []))}

    def order(k: tuple) -> tuple:
        c, m, me, s = k
        return (ck_pos.get(c, 1 << 30), c, mask_pos.get(m, 1 << 30), m, s != "train",
                meth_pos.get(me, 1 << 30), me)  # fmt: skip

    for key in sorted(groups, key=order):
        rs = sorted(groups[key], key=lambda r: r["sample"])
        c, mask, method, split = key
        sec, ort = seconds.get(key, (0.0, None))
        doc["runs"].append(_entry(c, loss.get(c), method, mask, split, rs, sec, ort))
    from ..provenance import provenance

    # as memorization_report: the schema name first, the provenance block (the database) last
    doc = {"schema": "refinv.report", **doc}
    doc["provenance"] = provenance({"database": str(db)})
    return doc


class _Named:
    """A mask given by text only (a ``file:`` mask whose file may be gone)."""

    def __init__(self, text: str):
        self.text = text


def _entry(checkpoint, train_loss, method, mask, split, rs, seconds, onnx_seconds) -> dict:
    """One ``runs`` element from the stored rows, as ``refinv evaluate`` builds it."""
    from ..evaluation.runs import run_entry

    me = [r["mask_error"] for r in rs]
    return run_entry(
        checkpoint=checkpoint,
        train_loss=train_loss,
        method=method,
        mask=mask,
        split=split,
        mse=[np.nan if r["mse"] is None else r["mse"] for r in rs],
        psnr=[r["psnr"] for r in rs],
        iterations=[r["iterations"] for r in rs],
        converged=[r["converged"] for r in rs],
        diverged=[r["diverged"] for r in rs],
        residual=[r["residual"] for r in rs],
        erased_fraction=float(np.mean([r["erased_fraction"] for r in rs])) if rs else 0.0,
        mask_error=None if (not rs or me[0] is None) else float(np.mean(me)),
        seconds=seconds,
        onnx_seconds=onnx_seconds,
    )
