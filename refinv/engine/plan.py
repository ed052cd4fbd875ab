"""A plan: the units of work of a batch of recoveries, each with a content key.

A unit is one model (checkpoint) x one mask x one method x one split x one shard of images
``[start, stop)``, with the seed, the noise level and the solver settings: everything that
decides its per-image results. :func:`unit_key` hashes exactly that (the model by its
SHA-256, the images by their file and key, or by their SHA-256 when they are an array), so
a store that already holds a unit's key holds its results: running a plan again computes
only the units it lacks (resume).

Units are plain data (picklable, sent to process-pool and Dask workers). A unit names its
model and images by path; a plan built from objects in memory (an ``OnnxModel``, a callable,
an array) names them ``obj:...`` and carries the objects beside the units (:class:`Plan`),
to run in the process that holds them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Unit", "Plan", "unit_key", "make_unit", "recovery_units", "json_default", "OBJECT_PREFIX",
    "CONTROL", "CONTROL_CHECKPOINT",
]  # fmt: skip

#: ``model_path`` / ``data_path`` of a model or image array held in memory (:attr:`Plan.objects`)
OBJECT_PREFIX = "obj:"
#: the ``method`` of the model-free control's units and rows, and their ``checkpoint``
CONTROL = "control"
CONTROL_CHECKPOINT = "(control)"


@dataclass(frozen=True)
class Unit:
    """One unit of work; ``task_id`` is its content key (:func:`unit_key`).

    ``n`` is the number of images of the split that the masks are drawn for (the first
    ``n``; masks, noise and Bernoulli initial masks are drawn for them all and sliced, so an
    image gets the same mask whatever the shard). ``chunk``: images solved at a time inside
    the unit (None: one batch). ``keep``: how many leading images' arrays (originals,
    degraded, recovered, masks) the store keeps, for figures; ``estimates``: keep the
    estimate of every image (for an audit's gallery). ``threads``, ``provider``,
    ``batch_size``, ``layout`` and ``image_shape`` open the model on the worker.
    """

    task_id: str
    checkpoint: str
    model_path: str
    sha256: str
    data_path: str
    data_key: str
    n: int
    split: str
    mask: str
    method: str
    start: int
    stop: int
    seed: int
    noise_std: float
    solver: dict
    threads: int | None = 1
    provider: str = "cpu"
    batch_size: int | None = None
    layout: str | None = None
    image_shape: tuple[int, ...] | None = None
    chunk: int | None = None
    keep: int = 0
    estimates: bool = False  # keep every image's estimate (x_hat; h_est of blind), for figures
    data_sha: str = ""  # the images' content hash when they are an array (else the path says)
    data_layout: str | None = None  # the data file's image layout (NCHW/NHWC; None: decided)
    kind: str = "recovery"  # or "control" (generic inpainting), "stability" (local radius)

    def replace(self, **changes: Any) -> Unit:
        return dataclasses.replace(self, **changes)


def json_default(o: Any) -> Any:
    """JSON for what a solver setting may hold besides numbers and text: an array (an
    explicit initial mask) by its dtype, shape and SHA-256; anything else as text."""
    import numpy as np

    if isinstance(o, np.ndarray):
        a = np.ascontiguousarray(o)
        sha = hashlib.sha256(a.tobytes()).hexdigest()
        return {"array": [a.dtype.str, list(a.shape), sha]}
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def unit_key(d: dict) -> str:
    """The content key of a unit given as a dict of its fields (24 hex digits).

    The model's SHA-256 and label, the images (file and key, or the array's SHA-256), the
    split, mask, method, shard, seed, noise and solver settings; ``image_shape``, ``chunk``
    and a ``kind`` other than recovery only when set (so the keys of stores written before
    them stay valid).
    """
    keys = ("sha256", "checkpoint", "data_path", "data_key", "split", "mask", "method")
    ident = {k: d[k] for k in keys}
    if d.get("data_sha"):  # images known by their content: not by their file or key
        ident["data_path"], ident["data_key"] = "sha256:" + d["data_sha"], ""
    ident.update(
        start=d["start"], stop=d["stop"], seed=d["seed"], noise=d["noise_std"], solver=d["solver"]
    )
    if d.get("image_shape") is not None:
        ident["image_shape"] = list(d["image_shape"])
    if d.get("chunk") is not None:
        ident["chunk"] = int(d["chunk"])
    if d.get("data_layout") is not None and not d.get("data_sha"):
        ident["data_layout"] = d["data_layout"]
    if d.get("kind", "recovery") != "recovery":
        ident["kind"] = d["kind"]
    text = json.dumps(ident, sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def make_unit(**fields: Any) -> Unit:
    """A :class:`Unit` with its content key computed from ``fields``."""
    return Unit(task_id=unit_key(fields), **fields)


@dataclass
class Plan:
    """The units of a batch of recoveries, in report order, and the in-memory objects their
    ``obj:`` paths name (empty for a plan of files, which any executor can run)."""

    units: list[Unit]
    objects: dict[str, Any] = field(default_factory=dict)

    @property
    def groups(self) -> list[tuple[str, str, str, str]]:
        """The runs of the report: ``(checkpoint, mask, method, split)`` in plan order."""
        out: dict[tuple, None] = {}
        for u in self.units:
            out.setdefault((u.checkpoint, u.mask, u.method, u.split), None)
        return list(out)


def recovery_units(
    checkpoints: list[dict],
    splits: dict[str, tuple[str, str, int, str]],
    masks: list[str],
    methods: list[str],
    *,
    seed: int,
    noise_std: float,
    solver: dict,
    shard_size: int | None = None,
    runtime: dict | None = None,
    chunk: int | None = None,
    keep: int = 0,
    estimates: bool = False,
    kind: str = "recovery",
    data_layout: str | None = None,
) -> list[Unit]:
    """Every unit of checkpoints x masks x splits x methods x shards, in report order.

    ``checkpoints``: ``{"label", "path", "sha256"}`` each (plus ``layout``, ``image_shape``);
    ``splits``: split name -> ``(path, key, n, data_sha)``; ``shard_size`` None: one shard
    per split; ``runtime``: ``threads``, ``provider``, ``batch_size``.
    """
    common = {"threads": 1, "provider": "cpu", "batch_size": None, **(runtime or {}),
              "seed": seed, "noise_std": noise_std, "chunk": chunk, "keep": keep,
              "estimates": estimates, "kind": kind, "data_layout": data_layout}  # fmt: skip
    units = []
    for ck, mask in itertools.product(checkpoints, masks):
        model = {"checkpoint": ck["label"], "model_path": ck["path"], "sha256": ck["sha256"],
                 "layout": ck.get("layout"), "image_shape": ck.get("image_shape")}  # fmt: skip
        for split, (path, key, n, data_sha) in splits.items():
            data = {"data_path": path, "data_key": key, "n": n, "data_sha": data_sha}
            step = shard_size or max(n, 1)
            for method, start in itertools.product(methods, range(0, n, step)):
                shard = {"split": split, "mask": mask, "method": method, "start": start,
                         "stop": min(start + step, n)}  # fmt: skip
                units.append(make_unit(**model, **data, **shard, **common, solver=dict(solver)))
    return units
