"""``refinv demo``: blind recovery of a shipped autoencoder's training images, in under a minute.

Runs the blind solver (and, for contrast, nothing else) on a shipped
perfect-fit autoencoder with its shipped training images and held-out
images, 50% random pixels erased, and prints the memorization table, the
throughput and the share of the time spent inside onnxruntime.

The shipped files are found in ``models/`` next to the package (the repo
checkout refinv is installed from): ``Path(refinv.__file__).parents[1] /
"models"``, or ``--models-dir``; the model and its dataset come from
``models/MANIFEST.json``. Without a checkout (a wheel) the demo's model and
data set packaged in ``refinv/_data/`` are used.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import ConfigError
from . import _args
from ._args import add_solver_args, progress_flag
from .recover import open_model, solver_options

__all__ = ["register", "run", "default_models_dir", "DEMO_MODELS"]

# preferred shipped models, first found wins (paths relative to models/): the faces MLP
# (87% of its training images back blind, 0% held-out; also packaged in the wheel), else
# the conv autoencoder (84% / 0%; 17 s of CPU)
DEMO_MODELS = (
    "onnx/faces25_lrelu_6x256.onnx",
    "onnx/colour16_convae_lrelu_c4.onnx",
)


def packaged_models_dir() -> Path:
    """The demo's model and data set inside the package (``refinv/_data``, in every wheel;
    :func:`refinv.demo_files` gives their paths)."""
    from ..io import demo_files

    return demo_files().model.parents[1]


def default_models_dir() -> Path:
    """``models/`` of the checkout refinv runs from (the full zoo) if there is one, else the
    copy of the demo's model and data set packaged in ``refinv/_data``."""
    import refinv

    checkout = Path(refinv.__file__).resolve().parents[1] / "models"
    if (checkout / "MANIFEST.json").is_file():
        return checkout
    return packaged_models_dir()


def manifest_dataset(field: str) -> str:
    """The data file of a manifest entry's ``dataset`` field: its first word (the rest is a
    comment, e.g. ``"data/digits8.npz (flattened to (N, 64))"``)."""
    words = str(field or "").split()
    return words[0] if words else ""


def _find(models_dir: Path, name: str | None) -> tuple[Path, Path]:
    """(model path, dataset path) from the manifest."""
    if not models_dir.is_dir():
        raise ConfigError(
            f"models directory {str(models_dir)!r} not found; the demo needs the shipped models "
            "(a checkout of the refinv repository with models/), or pass --models-dir"
        )
    man_path = models_dir / "MANIFEST.json"
    if not man_path.is_file():
        raise ConfigError(f"{man_path}: missing; the shipped models are described there")
    files = json.loads(man_path.read_text()).get("files", {})
    if name is not None:
        cands = [k for k in files if k == name or Path(k).stem == name or Path(k).name == name]
        if not cands:
            known = sorted(Path(k).stem for k, v in files.items() if v.get("kind") == "autoencoder")
            zoo = ""
            if models_dir.resolve() == packaged_models_dir():
                zoo = (
                    "; this refinv is installed without a checkout (a wheel), which ships only "
                    "the demo's model: the model zoo lives in the refinv repository's models/ "
                    "folder. Clone the repository and pass --models-dir CHECKOUT/models (or "
                    "install refinv from the checkout: pip install -e CHECKOUT)"
                )
            raise ConfigError(
                f"--model {name!r}: not in {man_path}; shipped autoencoders: {known}{zoo}"
            )
    else:
        cands = [k for k in DEMO_MODELS if k in files and (models_dir / k).is_file()]
        if not cands:
            raise ConfigError(
                f"none of the demo models {list(DEMO_MODELS)} is in {models_dir}; train them "
                "(models/train_mlp.py) or pass --model"
            )
    key = cands[0]
    rec = files[key]
    model = models_dir / key
    data = models_dir / manifest_dataset(rec.get("dataset", ""))
    if not model.is_file():
        raise ConfigError(f"{model}: listed in the manifest but missing")
    if not data.is_file():
        raise ConfigError(f"{model}: its dataset {str(data)!r} is missing")
    return model, data


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="blind recovery of a shipped autoencoder's training images (< 1 minute)",
        description="Erase 50% of the pixels of the training images and of held-out images of "
        "a shipped perfect-fit autoencoder, recover them blind (the mask is unknown), and print "
        "the memorization table (on these models most training images come back exactly, "
        "held-out ones do not), each rate beside the model-free control where scikit-image "
        "is installed.",
    )
    p.add_argument("--models-dir", default=None, help="the shipped models/ folder")
    p.add_argument("--model", default=None, help="a shipped model (stem or path in MANIFEST.json)")
    _args.add_mask(p, "random:0.5", several=True)
    _args.add_method(
        p, ("blind", "known", "ae-iterations"), "blind", several=True,
        help="comma-separated methods (default blind; add known,ae-iterations for contrast)",
    )  # fmt: skip
    _args.add_alias(p, "--methods", "--method", dest="method")
    _args.add_seed(p)
    _args.add_json(p)
    add_solver_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import METHODS, format_table, memorization_report
    from ..io import load_images
    from ._output import write_json

    t0 = time.perf_counter()
    models_dir = Path(args.models_dir) if args.models_dir else default_models_dir()
    model_path, data_path = _find(models_dir, args.model)
    f = open_model(model_path, args, data=f"{data_path}:train")
    train = load_images(data_path, "train", sample_shape=f.sample_shape, layout=args.data_layout)
    test = load_images(data_path, "test", sample_shape=f.sample_shape, layout=args.data_layout)
    f.stats.reset()
    t1 = time.perf_counter()
    doc = memorization_report(
        [(model_path.stem, f)],
        train,
        test,
        masks=_args.split_list(args.mask, "--mask"),
        methods=_args.one_of(args.method, METHODS, "--method"),
        seed=args.seed,
        noise_std=args.noise,
        solver=solver_options(args),
        progress=progress_flag(args),
        command="demo",
    )
    t2 = time.perf_counter()
    train_runs = [r for r in doc["runs"] if r["split"] == "train"]
    n_train = sum(r["n"] for r in train_runs)
    sec_train = sum(r["seconds"] for r in train_runs)
    n_acc = sum(round(r["accurate_rate"] * r["n"]) for r in train_runs)
    doc["settings"]["model"] = str(model_path)
    doc["settings"]["data"] = str(data_path)
    doc["timing"] = {
        "total_seconds": t2 - t0,
        "report_seconds": t2 - t1,
        "onnxruntime_seconds": f.stats.seconds,
        "onnxruntime_share": f.stats.seconds / max(t2 - t1, 1e-12),
        "train_images_per_second": n_train / max(sec_train, 1e-12),
        "accurate_recoveries_per_second": n_acc / max(sec_train, 1e-12),
    }
    if args.json:
        write_json(args.json, doc, "report", args, {"model": model_path, "data": data_path})
    print(f"model: {model_path}  data: {data_path}  mask: {args.mask} (seed {args.seed})")
    print(format_table(doc))
    tm = doc["timing"]
    print(
        f"throughput: {tm['train_images_per_second']:.1f} training images processed per second "
        f"({tm['accurate_recoveries_per_second']:.1f} accurately recovered per second); "
        f"{100 * tm['onnxruntime_share']:.0f}% of the {tm['report_seconds']:.1f} s inside "
        f"onnxruntime ({f.stats.calls} calls); total {tm['total_seconds']:.1f} s"
    )
    print(
        "next: a memorization audit of the same model (membership inference, per-image risk, "
        "an HTML report; pip install 'refinv[audit]'):\n"
        f"  refinv audit {model_path} --train {data_path}:train --test {data_path}:test "
        "--out out/audit/"
    )
    return 0
