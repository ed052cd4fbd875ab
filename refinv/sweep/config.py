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

from ..errors import ConfigError, RefinvError
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
    if not path.is_file():
        raise ConfigError(f"{what}: no such file {str(path)!r}")
    return str(path.resolve())


def _data_spec(text: Any, base: Path, what: str, default_key: str) -> tuple[str, str]:
    text = _type(text, (str,), what)
    p, key = text, default_key
    if ":" in text and not (base / text).is_file() and not Path(text).is_file():
        p, key = text.rsplit(":", 1)
    return _resolve(p, base, what), key


def parse_config(doc: dict, base: str | os.PathLike = ".", *, source: str = "") -> SweepConfig:
    """Build and validate a :class:`SweepConfig` from a parsed TOML ``doc`` (see the module doc).

    Opens every model and loads every split once to check shapes; raises
    :class:`~refinv.errors.ConfigError` on the first problem.
    """
    from ..evaluation.runs import METHODS

    base = Path(base)
    _unknown(doc, _TOP_KEYS, "config")
    seed = int(_type(doc.get("seed", 0), (int,), "seed"))
    noise = float(_type(doc.get("noise_std", 0.0), (int, float), "noise_std"))
    if noise < 0:
        raise ConfigError(f"noise_std: expected >= 0, got {noise}")
    shard = int(_type(doc.get("shard_size", 50), (int,), "shard_size"))
    if shard < 1:
        raise ConfigError(f"shard_size: expected an integer >= 1, got {shard}")

    masks_raw = _type(doc.get("masks", ["random:0.5"]), (list,), "masks")
    if not masks_raw:
        raise ConfigError("masks: expected a non-empty list of mask specs")
    masks = []
    for m in masks_raw:
        spec = parse_mask(_type(m, (str,), "masks[]"))  # ConfigError on an unknown mask
        if spec.family == "file":
            key = f":{spec.params[1]}" if len(spec.params) > 1 else ""  # keep file:PATH:KEY's key
            spec = parse_mask(f"file:{_resolve(spec.params[0], base, 'mask file')}{key}")
        masks.append(spec)
    if len({m.text for m in masks}) != len(masks):
        raise ConfigError(f"masks: duplicate entries in {masks_raw}")
    methods = list(_type(doc.get("methods", ["blind"]), (list,), "methods"))
    if not methods:
        raise ConfigError("methods: expected a non-empty list")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"methods: expected names from {', '.join(METHODS)}, got {m!r}")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"methods: duplicate entries in {methods}")

    solver = dict(_type(doc.get("solver", {}), (dict,), "[solver]"))
    _unknown(solver, set(SOLVER_KEYS), "[solver]")
    for k in ("max_iter", "inner_iter"):
        if k in solver and (_type(solver[k], (int,), f"solver.{k}") < 1):
            raise ConfigError(f"solver.{k}: expected an integer >= 1, got {solver[k]}")
    for k in ("tol", "rho", "tau", "blowup"):
        if k in solver:
            solver[k] = float(_type(solver[k], (int, float), f"solver.{k}"))
    if "mask_init" in solver:
        _type(solver["mask_init"], (str,), "solver.mask_init")
    if "clip" in solver:
        c = solver["clip"]
        if not isinstance(c, bool):
            c = list(_type(c, (list,), "solver.clip"))
            if len(c) != 2:
                raise ConfigError(f"solver.clip: expected true/false or [lo, hi], got {c}")
            solver["clip"] = [float(v) for v in c]

    rt = dict(_type(doc.get("runtime", {}), (dict,), "[runtime]"))
    _unknown(rt, _RUNTIME_KEYS, "[runtime]")
    threads = rt.get("threads", 1)
    threads = None if threads in (0, None) else int(_type(threads, (int,), "runtime.threads"))
    provider = _type(rt.get("provider", "cpu"), (str,), "runtime.provider")
    if provider not in ("cpu", "cuda"):
        raise ConfigError(f"runtime.provider: expected 'cpu' or 'cuda', got {provider!r}")
    batch_size = rt.get("batch_size")
    if batch_size is not None and _type(batch_size, (int,), "runtime.batch_size") < 1:
        raise ConfigError(f"runtime.batch_size: expected >= 1, got {batch_size}")

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

    models = [_check_model(m, datasets[m.dataset], masks, threads, provider) for m in models]
    return SweepConfig(
        models=models,
        datasets=datasets,
        masks=masks,
        methods=methods,
        solver=solver,
        seed=seed,
        noise_std=noise,
        shard_size=shard,
        threads=threads,
        provider=provider,
        batch_size=batch_size,
        source=source,
    )


def _check_model(
    m: ModelEntry, ds: Dataset, masks: list[MaskSpec], threads: int | None, provider: str
) -> ModelEntry:
    """Open the model, check it is an autoencoder, each split matches its shape, masks fit."""
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
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_config(doc, p.resolve().parent, source=str(p))
