"""The sweep configuration: a TOML file, validated before any work starts.

Format (full example and field reference in docs/sweep.md)::

    seed = 0                    # masks, noise, Bernoulli init (as refinv evaluate)
    noise_std = 0.0
    shard_size = 50             # samples per task
    masks = ["random:0.5", "center:4", "rows:2"]
    methods = ["blind", "known", "ae-iterations"]

    [solver]                    # any of max_iter, tol, rho, inner_iter, mask_init, tau, clip,
    max_iter = 20               # blowup (defaults: refinv.solvers.recovery.DEFAULTS)

    [runtime]                   # per task: onnxruntime threads, provider, largest ONNX batch
    threads = 1

    [datasets.digits8]
    train = "models/data/digits8.npz:train"
    test = "models/data/digits8.npz:test"   # held-out control (optional)
    n = 100                     # first n images of each split (optional)

    [[models]]
    path = "models/onnx/digits8_lrelu_6x320.onnx"
    dataset = "digits8"
    label = "digits8_lrelu"     # optional, default: the file's stem
    layout = "NHWC"             # optional: NCHW, NHWC or flat (default: detected)
    image_shape = "1x28x28"     # optional, flat models (default: from the data's images)

Relative paths are resolved against the folder of the config file.
:func:`load_config` raises :class:`~refinv.errors.ConfigError` for anything
wrong (unknown key, unknown mask or method, missing file, a model that is not
an autoencoder, data whose shape does not match its model) before a single
task runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, RefinvError
from ..io import is_file
from ..operators.masks import MaskSpec, parse_mask

__all__ = ["SweepConfig", "ModelEntry", "Dataset", "load_config", "parse_config", "SOLVER_KEYS"]

SOLVER_KEYS = ("max_iter", "tol", "rho", "inner_iter", "mask_init", "tau", "clip", "blowup")
_TOP_KEYS = {
    "seed",
    "noise_std",
    "shard_size",
    "masks",
    "methods",
    "solver",
    "runtime",
    "datasets",
    "models",
}
_RUNTIME_KEYS = {"threads", "provider", "batch_size"}
#: the largest seed: results rows store it as an SQLite INTEGER (signed 64 bits)
SEED_MAX = 2**63 - 1


@dataclass(frozen=True)
class Dataset:
    """Training and held-out images: ``(path, key)`` each; ``n`` = first n images of each."""

    name: str
    train: tuple[str, str]
    test: tuple[str, str] | None
    n: int | None = None

    def split(self, split: str) -> tuple[str, str]:
        return self.train if split == "train" else self.test  # type: ignore[return-value]

    @property
    def splits(self) -> list[str]:
        return ["train", "test"] if self.test is not None else ["train"]


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint: its label, absolute path, dataset name; sha256/shape filled by validation."""

    label: str
    path: str
    dataset: str
    sha256: str = ""
    sample_shape: tuple[int, ...] = ()
    sizes: dict = field(default_factory=dict, compare=False)  # split -> number of images
    layout: str | None = None  # OnnxModel(layout=...); None: detected
    image_shape: tuple[int, ...] | None = None  # flat models; filled from the data if not given
    # how the layout was decided when the config was validated (detected from the graph, or
    # given): the workers then load with the resolved ``layout=``
    layout_source: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SweepConfig:
    models: list[ModelEntry]
    datasets: dict[str, Dataset]
    masks: list[MaskSpec]
    methods: list[str]
    solver: dict
    seed: int = 0
    noise_std: float = 0.0
    shard_size: int = 50
    threads: int | None = 1
    provider: str = "cpu"
    batch_size: int | None = None
    source: str = ""

    def settings(self) -> dict:
        """What makes results comparable: a DB holds one set of these."""
        return {
            "seed": self.seed,
            "noise_std": self.noise_std,
            "shard_size": self.shard_size,
            "solver": dict(sorted(self.solver.items())),
        }

    def fingerprint(self) -> str:
        text = json.dumps(self.settings(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _type(v: Any, types: tuple, what: str) -> Any:
    if isinstance(v, bool) and bool not in types:
        raise ConfigError(f"{what}: expected {'/'.join(t.__name__ for t in types)}, got {v!r}")
    if not isinstance(v, types):
        raise ConfigError(f"{what}: expected {'/'.join(t.__name__ for t in types)}, got {v!r}")
    return v


def _unknown(d: dict, allowed: set, where: str) -> None:
    bad = sorted(set(d) - allowed)
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {bad}; expected some of {sorted(allowed)}")


def _resolve(p: str, base: Path, what: str) -> str:
    path = Path(os.path.expanduser(p))
    if not path.is_absolute():
        path = base / path
    if not is_file(path, what):
        raise ConfigError(f"{what}: no such file {str(path)!r}")
    return str(path.resolve())


def _data_spec(text: Any, base: Path, what: str, default_key: str) -> tuple[str, str]:
    text = _type(text, (str,), what)
    p, key = text, default_key
    if ":" in text and not is_file(base / text, what) and not is_file(text, what):
        p, key = text.rsplit(":", 1)
    return _resolve(p, base, what), key


def _mask_file(text: str, base: Path, what: str) -> MaskSpec:
    """``file:PATH[:KEY]`` with PATH resolved against the config's folder (a path that exists
    as given wins over a ``:KEY`` split, as in :func:`~refinv.operators.masks.parse_mask`)."""
    arg = text[len("file:") :]
    head, sep, tail = arg.rpartition(":")
    if sep and head and tail and not is_file(base / arg, what) and not is_file(arg, what):
        return parse_mask(f"file:{_resolve(head, base, what)}:{tail}")
    return parse_mask(f"file:{_resolve(arg, base, what)}")


def _solver(solver: dict, base: Path) -> dict:
    """The ``[solver]`` table, checked as the solvers check their options (finite tol >= 0,
    rho > 0, integer iterations, blowup > 0, tau >= 0, clip lo < hi, a known mask_init), so a
    bad value fails here instead of in every task. A ``file:`` mask_init is resolved against
    the config's folder; its values and shape are checked against each model's data."""
    from ..solvers.recovery import DEFAULTS, _check_common, _clip_range

    _unknown(solver, set(SOLVER_KEYS), "[solver]")
    for k in ("max_iter", "inner_iter"):
        if k in solver and (_type(solver[k], (int,), f"solver.{k}") < 1):
            raise ConfigError(f"solver.{k}: expected an integer >= 1, got {solver[k]}")
    for k in ("tol", "rho", "tau", "blowup"):
        if k in solver:
            solver[k] = float(_type(solver[k], (int, float), f"solver.{k}"))
    opts = {k: solver.get(k, DEFAULTS[k]) for k in ("max_iter", "tol", "rho", "inner_iter")}
    try:
        _check_common(**opts, blowup=solver.get("blowup", 1e6))
    except ConfigError as exc:
        raise ConfigError(f"solver.{exc}") from exc
    tau = solver.get("tau", 0.0)
    if not (tau >= 0 and math.isfinite(tau)):
        raise ConfigError(f"solver.tau: expected a finite number >= 0, got {tau}")
    if "mask_init" in solver:
        init = _type(solver["mask_init"], (str,), "solver.mask_init")
        if init.lower().startswith("file:"):
            solver["mask_init"] = _mask_file(init, base, "solver.mask_init").text
        else:
            from ..solvers.recovery import initial_mask

            try:  # "ones", "nonzero", "bernoulli[:P]": checked on one blank sample
                initial_mask(init, np.zeros((1, 1, 2, 2), np.float32))
            except ConfigError as exc:
                raise ConfigError(f"solver.{exc}") from exc
    if "clip" in solver:
        c = solver["clip"]
        if not isinstance(c, bool):
            c = list(_type(c, (list,), "solver.clip"))
            if len(c) != 2:
                raise ConfigError(f"solver.clip: expected true/false or [lo, hi], got {c}")
            c = [float(_type(v, (int, float), "solver.clip[]")) for v in c]
            try:
                _clip_range(c)
            except ConfigError as exc:
                raise ConfigError(f"solver.{exc}") from exc
            solver["clip"] = c
    return solver


def _threads(threads: Any) -> int | None:
    """``runtime.threads``: None or 0 (onnxruntime's default) up to 4 per CPU core (onnxruntime
    starts every thread it is asked for; 100000 of them hang the machine)."""
    from ..onnx.limits import max_threads

    if threads in (0, None):
        return None
    threads = _type(threads, (int,), "runtime.threads")
    if not 0 <= threads <= max_threads():
        raise ConfigError(
            f"runtime.threads: expected 0 (onnxruntime's default) to {max_threads()} (4 per CPU "
            f"core available), got {threads}"
        )
    return threads


def parse_config(doc: dict, base: str | os.PathLike = ".", *, source: str = "") -> SweepConfig:
    """Build and validate a :class:`SweepConfig` from a parsed TOML ``doc`` (see the module doc).

    Opens every model and loads every split once to check shapes; raises
    :class:`~refinv.errors.ConfigError` on the first problem.
    """
    base = Path(base)
    _unknown(doc, _TOP_KEYS, "config")
    seed = int(_type(doc.get("seed", 0), (int,), "seed"))
    if not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed: expected an integer from 0 to 2**63 - 1, got {seed}")
    noise = float(_type(doc.get("noise_std", 0.0), (int, float), "noise_std"))
    if not (noise >= 0 and math.isfinite(noise)):
        raise ConfigError(f"noise_std: expected a finite number >= 0, got {noise}")
    shard = int(_type(doc.get("shard_size", 50), (int,), "shard_size"))
    if shard < 1:
        raise ConfigError(f"shard_size: expected an integer >= 1, got {shard}")
    masks = _masks(doc, base)
    methods = _methods(doc)
    solver = _solver(dict(_type(doc.get("solver", {}), (dict,), "[solver]")), base)
    threads, provider, batch_size = _runtime(doc)
    datasets = _datasets(doc, base)
    models = [
        _check_model(m, datasets[m.dataset], masks, threads, provider, solver.get("mask_init"))
        for m in _models(doc, base, datasets)
    ]
    return SweepConfig(
        models=models, datasets=datasets, masks=masks, methods=methods, solver=solver,
        seed=seed, noise_std=noise, shard_size=shard, threads=threads, provider=provider,
        batch_size=batch_size, source=source,
    )  # fmt: skip


def _masks(doc: dict, base: Path) -> list[MaskSpec]:
    masks_raw = _type(doc.get("masks", ["random:0.5"]), (list,), "masks")
    if not masks_raw:
        raise ConfigError("masks: expected a non-empty list of mask specs")
    masks = []
    for m in masks_raw:
        m = _type(m, (str,), "masks[]")
        if m.lower().startswith("file:"):
            masks.append(_mask_file(m, base, "mask file"))
        else:
            masks.append(parse_mask(m))  # ConfigError on an unknown mask
    if len({m.text for m in masks}) != len(masks):
        raise ConfigError(f"masks: duplicate entries in {masks_raw}")
    return masks


def _methods(doc: dict) -> list[str]:
    from ..evaluation.runs import METHODS

    methods = list(_type(doc.get("methods", ["blind"]), (list,), "methods"))
    if not methods:
        raise ConfigError("methods: expected a non-empty list")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"methods: expected names from {', '.join(METHODS)}, got {m!r}")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"methods: duplicate entries in {methods}")
    return methods


def _runtime(doc: dict) -> tuple[int | None, str, int | None]:
    """``(threads, provider, batch_size)`` of ``[runtime]``."""
    rt = dict(_type(doc.get("runtime", {}), (dict,), "[runtime]"))
    _unknown(rt, _RUNTIME_KEYS, "[runtime]")
    threads = _threads(rt.get("threads", 1))
    provider = _type(rt.get("provider", "cpu"), (str,), "runtime.provider")
    if provider not in ("cpu", "cuda"):
        raise ConfigError(f"runtime.provider: expected 'cpu' or 'cuda', got {provider!r}")
    batch_size = rt.get("batch_size")
    if batch_size is not None and _type(batch_size, (int,), "runtime.batch_size") < 1:
        raise ConfigError(f"runtime.batch_size: expected >= 1, got {batch_size}")
    return threads, provider, batch_size


def _datasets(doc: dict, base: Path) -> dict[str, Dataset]:
    dsets_raw = _type(doc.get("datasets", {}), (dict,), "[datasets]")
    if not dsets_raw:
        raise ConfigError("[datasets]: expected at least one [datasets.NAME] table")
    datasets: dict[str, Dataset] = {}
    for name, d in dsets_raw.items():
        d = _type(d, (dict,), f"[datasets.{name}]")
        _unknown(d, {"train", "test", "n"}, f"[datasets.{name}]")
        if "train" not in d:
            raise ConfigError(f"[datasets.{name}]: expected a 'train' entry (DATA.npz:key)")
        n = d.get("n")
        if n is not None and _type(n, (int,), f"datasets.{name}.n") < 1:
            raise ConfigError(f"datasets.{name}.n: expected >= 1, got {n}")
        datasets[name] = Dataset(
            name=name,
            train=_data_spec(d["train"], base, f"datasets.{name}.train", "train"),
            test=_data_spec(d["test"], base, f"datasets.{name}.test", "test")
            if d.get("test")
            else None,
            n=n,
        )
    return datasets


def _models(doc: dict, base: Path, datasets: dict[str, Dataset]) -> list[ModelEntry]:
    """The ``[[models]]`` entries (paths resolved, labels unique; not opened yet)."""
    models_raw = _type(doc.get("models", []), (list,), "[[models]]")
    if not models_raw:
        raise ConfigError("[[models]]: expected at least one [[models]] entry")
    models: list[ModelEntry] = []
    for i, m in enumerate(models_raw):
        m = _type(m, (dict,), f"models[{i}]")
        _unknown(m, {"path", "dataset", "label", "layout", "image_shape"}, f"models[{i}]")
        if "path" not in m:
            raise ConfigError(f"models[{i}]: expected a 'path' to an ONNX autoencoder")
        path = _resolve(_type(m["path"], (str,), f"models[{i}].path"), base, f"models[{i}].path")
        ds = m.get("dataset")
        if ds is None and len(datasets) == 1:
            ds = next(iter(datasets))
        if ds not in datasets:
            raise ConfigError(
                f"models[{i}].dataset: expected one of {sorted(datasets)}, got {ds!r}"
            )
        label = str(m.get("label") or Path(path).stem)
        layout = m.get("layout")
        if layout is not None:
            layout = _type(layout, (str,), f"models[{i}].layout")
        shape = m.get("image_shape")
        if shape is not None:
            from ..onnx.layout import parse_image_shape

            shape = parse_image_shape(shape, f"models[{i}].image_shape")
        models.append(
            ModelEntry(label=label, path=path, dataset=ds, layout=layout, image_shape=shape)
        )
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"[[models]]: labels must be unique, got {labels} (set 'label')")
    return models


def _check_model(
    m: ModelEntry,
    ds: Dataset,
    masks: list[MaskSpec],
    threads: int | None,
    provider: str,
    mask_init: str | None = None,
) -> ModelEntry:
    """Open the model, check it is an autoencoder, each split matches its shape, masks fit
    (and a ``file:`` mask_init: 0/1 values, one mask or one per image of each split)."""
    from ..io import flat_rows_ok, load_images
    from ..onnx import OnnxModel
    from ..operators.masks import pixel_shape

    what = f"model {m.label!r}"
    try:
        f = OnnxModel(
            m.path,
            provider=provider,
            intra_op_threads=threads,
            layout=m.layout,
            image_shape=m.image_shape,
        )
        if f.layout == "flat" and f.image_shape is None:  # the image shape of the data
            from ..cli.recover import data_sample_shape

            shape = data_sample_shape(ds.split(ds.splits[0])[0], ds.split(ds.splits[0])[1])
            if shape is not None and len(shape) in (2, 3) and math.prod(shape) == f.sample_shape[0]:
                f.set_image_shape(shape)
    except RefinvError as exc:
        raise ConfigError(f"{what}: {exc}") from exc
    if not f.is_autoencoder:
        raise ConfigError(
            f"{what}: not an autoencoder: input sample shape {f.sample_shape}, output "
            f"{f.output_sample_shape}"
        )
    sizes = {}
    for split in ds.splits:
        path, key = ds.split(split)
        try:
            x = load_images(path, key, sample_shape=f.sample_shape, rows_ok=flat_rows_ok(f))
        except RefinvError as exc:
            raise ConfigError(
                f"{what} with dataset {ds.name!r} ({split}): the data does not fit the model: {exc}"
            ) from exc
        n = int(x.shape[0]) if ds.n is None else min(ds.n, int(x.shape[0]))
        if ds.n is not None and ds.n > x.shape[0]:
            raise ConfigError(
                f"datasets.{ds.name}.n: asks for {ds.n} images, {path}:{key} has {x.shape[0]}"
            )
        sizes[split] = n
    for spec in masks:
        try:
            spec.draw(pixel_shape(tuple(f.sample_shape)), 1, 0)
        except RefinvError as exc:
            raise ConfigError(f"mask {spec.text!r} does not fit {what}: {exc}") from exc
    if mask_init is not None and mask_init.lower().startswith("file:"):
        spec = parse_mask(mask_init)
        for split, n in sizes.items():
            try:  # as run_task draws it: the whole split's initial masks
                spec.draw(pixel_shape(tuple(f.sample_shape)), n)
            except RefinvError as exc:
                raise ConfigError(
                    f"solver.mask_init {mask_init!r} does not fit {what} ({split}: {n} "
                    f"images): {exc}"
                ) from exc
    return ModelEntry(
        label=m.label,
        path=m.path,
        dataset=m.dataset,
        sha256=f.sha256,
        sample_shape=tuple(f.sample_shape),
        sizes=sizes,
        layout=f.layout,
        image_shape=f.image_shape if f.layout == "flat" else None,
        layout_source=f.layout_source,
    )


def load_config(path: str | os.PathLike) -> SweepConfig:
    """Read and validate a sweep TOML file (relative paths are relative to its folder)."""
    p = Path(path)
    if not is_file(p, "config"):
        raise ConfigError(f"{p}: no such config file")
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: expected a UTF-8 text file (TOML), got byte {exc.object[exc.start]:#04x} at "
            f"offset {exc.start}"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config ({exc.strerror or exc})") from exc
    return parse_config(doc, p.resolve().parent, source=str(p))
