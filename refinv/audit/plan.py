"""The audit's inputs and its plan: every unit of work of an audit, for the engine.

:func:`read_inputs` opens the models and the images and checks them; :func:`audit_plan`
lists the units (:class:`refinv.engine.plan.Unit`): the recoveries of every checkpoint
(the memorization report's units, in its order), the generic-inpainting control of each
mask and split, and the local stability of the main model at the first images of each
split. Images are keyed by their content (SHA-256 of the array), so an audit resumed on a
process pool or on Dask finds the units an in-process run stored, and the other way round.
Models given as files and images given as ``DATA.npz:key`` run anywhere; arrays and plain
callables run in the process that holds them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.plan import CONTROL, CONTROL_CHECKPOINT, OBJECT_PREFIX, Plan, recovery_units
from ..errors import ConfigError, ShapeError
from ..evaluation.runs import METHODS
from ..operators.masks import MaskSpec, parse_mask

__all__ = [
    "AuditInputs", "read_inputs", "audit_plan", "CONTROL", "CONTROL_CHECKPOINT", "STABILITY",
]  # fmt: skip

#: the ``method`` of the stability units
STABILITY = "stability"


@dataclass
class AuditInputs:
    """The opened models (``(label, model, path or None)``, the main one first), the images
    of each split with their ``DATA.npz:key`` spec, file and content hash, the masks and
    methods."""

    models: list[tuple[str, Any, str | None]]
    images: dict[str, np.ndarray]
    specs: dict[str, str | None]
    paths: dict[str, tuple[str, str] | None]
    shas: dict[str, str]
    masks: list[MaskSpec]
    methods: list[str]
    data_layout: str | None = None

    @property
    def main(self) -> tuple[str, Any, str | None]:
        return self.models[0]


def _open(model: Any, index: int) -> tuple[str, Any, str | None]:
    """``(label, model, path or None)`` from a path, an OnnxModel/callable or a pair."""
    if isinstance(model, (str, Path)):
        from ..onnx import OnnxModel

        f = OnnxModel(model)
        if not f.is_autoencoder:
            raise ConfigError(
                f"{model}: not an autoencoder: input sample shape {f.sample_shape}, output "
                f"{f.output_sample_shape}; recovery needs output shape == input shape"
            )
        return Path(model).stem, f, str(model)
    if isinstance(model, tuple) and len(model) == 2:
        label, f = model
        return str(label), f, _model_file(f)
    return str(getattr(model, "label", f"model{index}")), model, _model_file(model)


def _model_file(f: Any) -> str | None:
    """The ONNX file an :class:`~refinv.onnx.OnnxModel` was opened from (its label), else
    None."""
    label = getattr(f, "label", None)
    ok = isinstance(label, str) and getattr(f, "sha256", None) and Path(label).is_file()
    return label if ok else None


def _load(data: Any, f: Any, default_key: str, layout: str | None):
    """``(images, spec, (path, key) or None)`` from an array or a ``"DATA.npz:key"`` spec
    (``layout``: the file's image layout)."""
    if isinstance(data, (str, Path)):
        from ..io import load_images_for, parse_data_spec

        path, key = parse_data_spec(str(data), default_key)
        return load_images_for(f, path, key, layout=layout), f"{path}:{key}", (str(path), key)
    return np.asarray(data), None, None


def _array_sha(x: np.ndarray) -> str:
    a = np.ascontiguousarray(x)
    return hashlib.sha256(str((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()


def read_inputs(
    model: Any, train: Any, test: Any, checkpoints: Any, masks: Any, methods: Any,
    data_specs: tuple | None = None, data_layout: str | None = None,
) -> AuditInputs:  # fmt: skip
    """Open the models and the images, and check them (shapes, labels, masks, methods)."""
    methods = list(methods)
    if not methods:
        raise ConfigError("methods: expected at least one of blind, known, ae-iterations, got none")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"methods: expected names from {', '.join(METHODS)}, got {m!r}")
    specs = [ms if isinstance(ms, MaskSpec) else parse_mask(ms) for ms in masks]
    if not specs:
        raise ConfigError("masks: expected at least one mask spec, got none")
    opened = [_open(m, i) for i, m in enumerate([model, *checkpoints])]
    f0 = opened[0][1]
    loaded = {s: _load(d, f0, s, data_layout) for s, d in (("train", train), ("test", test))}
    images = {s: v[0] for s, v in loaded.items()}
    data_spec = {s: v[1] for s, v in loaded.items()}
    for i, s in enumerate(("train", "test")):
        if data_specs is not None and data_specs[i]:  # as the command line wrote them
            data_spec[s] = data_specs[i]
        if images[s].ndim < 2 or images[s].shape[0] == 0:
            raise ShapeError(f"{s}: expected a non-empty batch of images, got shape "
                             f"{images[s].shape}")  # fmt: skip
    _check_shapes(images, opened)
    return AuditInputs(opened, images, data_spec, {s: v[2] for s, v in loaded.items()},
                       {s: _array_sha(x) for s, x in images.items()}, specs, methods,
                       data_layout)  # fmt: skip


def _check_shapes(images: dict, opened: list) -> None:
    if tuple(images["train"].shape[1:]) != tuple(images["test"].shape[1:]):
        raise ShapeError(
            f"train and test: expected images of one shape, got {images['train'].shape[1:]} "
            f"and {images['test'].shape[1:]}"
        )
    shape0 = getattr(opened[0][1], "sample_shape", None)
    for label, f, _ in opened[1:]:
        if getattr(f, "sample_shape", shape0) != shape0:
            raise ConfigError(
                f"checkpoints: {label} takes samples of shape {f.sample_shape}, the main model "
                f"{shape0}"
            )
    if len({lab for lab, _, _ in opened}) != len(opened):
        raise ConfigError(f"checkpoints: expected distinct labels, got {[o[0] for o in opened]}")


def _threads(f: Any) -> int | None:
    """The intra-op thread count an OnnxModel's session was opened with."""
    try:
        n = int(f.session.get_session_options().intra_op_num_threads)
    except Exception:  # not an OnnxModel, or a build without the accessor
        return 1
    return None if n == 0 else n


def audit_plan(
    inp: AuditInputs,
    *,
    seed: int,
    noise_std: float,
    solver: dict,
    stability: dict,
    shard_size: int | None = None,
    files: bool = False,
) -> Plan:
    """Every unit of the audit: recoveries (every checkpoint; the main model's keep every
    image's estimate for the gallery), control (each mask and split), stability (main
    model, first mask, the first ``stability["n"]`` images of each split).

    ``files``: name the models and images by their files (to run on other processes; every
    model and split must have one), else by in-memory references."""
    plan = Plan(units=[])
    splits = {}
    for s, x in inp.images.items():
        if files and inp.paths[s] is None:
            raise ConfigError(f"--workers/--scheduler: the {s} images must come from a file "
                              "(DATA.npz:key) to run on other processes")  # fmt: skip
        path, key = inp.paths[s] if files else (f"{OBJECT_PREFIX}{s}", s)
        plan.objects.setdefault(path, x)
        splits[s] = (path, key, len(x), inp.shas[s])
    masks = [m.text for m in inp.masks]
    common = dict(seed=seed, noise_std=noise_std, shard_size=shard_size,
                  data_layout=inp.data_layout if files else None)  # fmt: skip
    for i, (label, f, path) in enumerate(inp.models):
        ck = _checkpoint_ref(plan, i, label, f, path, files)
        plan.units += recovery_units([ck], splits, masks, inp.methods, solver=solver,
                                     estimates=i == 0, runtime=_runtime(f), **common)  # fmt: skip
    ck0 = _checkpoint_ref(plan, 0, *inp.main, files)
    control = {**ck0, "label": CONTROL_CHECKPOINT, "sha256": ""}
    # the audit's control inpaintings are float32 (as its gallery shows them)
    plan.units += recovery_units([control], splits, masks, [CONTROL], solver={"float32": True},
                                 estimates=True, kind="control", **common)  # fmt: skip
    n_stab = {s: (p, k, min(n, stability["n"]), sha) for s, (p, k, n, sha) in splits.items()}
    plan.units += recovery_units([ck0], n_stab, masks[:1], [STABILITY], seed=seed,
                                 noise_std=0.0, solver=stability_settings(stability),
                                 shard_size=shard_size, kind="stability",
                                 runtime=_runtime(inp.main[1]),
                                 data_layout=common["data_layout"])  # fmt: skip
    return plan


def stability_settings(stability: dict) -> dict:
    return {"rho": float(stability["rho"]), "method": stability["method"],
            "tol": float(stability["tol"])}  # fmt: skip


def _checkpoint_ref(plan: Plan, i: int, label: str, f: Any, path: str | None, files: bool):
    if files and path is None:
        raise ConfigError(f"--workers/--scheduler: the model {label!r} must be an ONNX file "
                          "to run on other processes")  # fmt: skip
    ref = path if files else f"{OBJECT_PREFIX}model{i}"
    plan.objects.setdefault(ref, f)
    layout = getattr(f, "layout", None)
    image_shape = getattr(f, "image_shape", None) if layout == "flat" else None
    # layout and image shape open a model file on a worker (an in-memory model has them);
    # the image shape is part of a unit's key, so it is given either way
    return {"label": label, "path": ref, "sha256": getattr(f, "sha256", None) or "",
            "layout": layout, "image_shape": tuple(image_shape) if image_shape else None}  # fmt: skip


def _runtime(f: Any) -> dict:
    return {"threads": _threads(f), "provider": getattr(f, "provider", "cpu"),
            "batch_size": getattr(f, "batch_size", None)}  # fmt: skip
