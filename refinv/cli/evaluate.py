"""``refinv evaluate``: the memorization report of an autoencoder (and its checkpoints).

    refinv evaluate MODEL.onnx --train DATA.npz:train --test DATA.npz:test \\
        --mask random:0.5,center:9,rows:2 --method blind,known,ae-iterations \\
        --json REPORT.json [--figures DIR] [--checkpoints CK1.onnx CK2.onnx ...] \\
        [--no-control] [--db PATH]

The report is a plan (one unit per checkpoint x mask x split x method, and one control unit
per mask and split), run in this process into a results database (resume: units it holds
are not run again), then the document computed from the database; the table and the
figures render the document.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._constants import MASK_GRAMMAR
from ..errors import ConfigError
from . import _args
from ._args import add_solver_args, progress_flag
from .recover import open_model, solver_options

__all__ = ["register", "run"]

RECOVERY_METHODS = ("blind", "known", "ae-iterations")


_split_list = _args.split_list  # the former name (refinv.cli.audit imported it)


def open_checkpoints(args: argparse.Namespace) -> list[tuple[str, object]]:
    """``[(label, model)]`` for MODEL.onnx and each ``--checkpoints`` file, all of one sample
    shape (``evaluate`` and ``audit``)."""
    data = getattr(args, "train", None)
    models = [
        (Path(p).stem, open_model(p, args, data=data)) for p in [args.model, *args.checkpoints]
    ]
    f0 = models[0][1]
    for label, f in models[1:]:
        if f.sample_shape != f0.sample_shape:
            raise ConfigError(
                f"--checkpoints: {label} takes samples of shape {f.sample_shape}, the main model "
                f"{f0.sample_shape}"
            )
    return models


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="memorization report: recovery rates on training vs held-out images",
        description="Degrade the training images and the held-out images with each mask, "
        "recover them with each method through MODEL.onnx (and each --checkpoints model), and "
        "report per-sample MSE/PSNR, accurate (MSE < 1e-7) and approximate (MSE < 5e-4) "
        "recovery rates and mean PSNR, train and held-out side by side, each beside the "
        "model-free control (biharmonic inpainting). Table on stdout, JSON "
        f"with --json (schema in docs/cli.md). Mask grammar: {MASK_GRAMMAR}.",
    )
    p.add_argument("model", metavar="MODEL.onnx", help="the autoencoder (ONNX)")
    p.add_argument("--train", required=True, metavar="DATA.npz:train", help="training images")
    p.add_argument("--test", default=None, metavar="DATA.npz:test", help="held-out images")
    _args.add_mask(p, "random:0.5", several=True)
    _args.add_alias(p, "--masks", "--mask", dest="mask")
    _args.add_method(p, RECOVERY_METHODS, ",".join(RECOVERY_METHODS), several=True)
    _args.add_alias(p, "--methods", "--method", dest="method")
    p.add_argument(
        "--checkpoints", nargs="*", default=[], metavar="CK.onnx",
        help="more models of the same training run (train loss levels); MODEL.onnx comes first "
        "(the paper's Figure 3: recovery rate vs train loss)",
    )  # fmt: skip
    _args.add_seed(p)
    _args.add_json(p)
    _args.add_figures(p)
    p.add_argument(
        "--db", default=None, metavar="PATH",
        help="keep the runs in this results database (SQLite, as `refinv sweep`'s) and resume "
        "from it: runs it already holds for the same models, images and settings are not "
        "computed again; `refinv report PATH` renders it (default: a temporary database)",
    )  # fmt: skip
    p.add_argument(
        "--chunk", type=int, default=1024,
        help="images solved at a time (default 1024; memory stays flat in the number of "
        "images, results do not depend on it)",
    )  # fmt: skip
    p.add_argument(
        "--control", action=argparse.BooleanOptionalAction, default=None,
        help="the model-free control beside every rate: biharmonic inpainting (scikit-image) of "
        "the same degraded images with the true masks, per mask and split, in the table, the "
        "JSON and the figures (default: on where scikit-image is installed, the 'audit' extra; "
        "--no-control skips it)",
    )  # fmt: skip
    add_solver_args(p)
    p.set_defaults(func=run)


def _split_images(spec: str, f, default_key: str, layout: str | None = None):
    """``DATA.npz[:key]`` read chunk by chunk for the model ``f`` (the checks of load_split)."""
    import numpy as np

    from ..evaluation.chunked import NpzImages
    from ..io import flat_rows_ok, parse_data_spec

    path, key = parse_data_spec(spec, default_key)
    dtype = np.float64 if f.dtype == np.float64 else np.float32
    return NpzImages(path, key, sample_shape=f.sample_shape, dtype=dtype,
                     rows_ok=flat_rows_ok(f), layout=layout)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import METHODS, format_loss_table, format_table, memorization_report
    from ..io import parse_data_spec
    from ._output import write_json

    methods = _args.one_of(args.method, METHODS, "--method")
    masks = _args.split_list(args.mask, "--mask")
    if args.figures:
        from ..evaluation.report import require_figure_dependencies

        require_figure_dependencies("--figures")
    if args.chunk < 1:
        raise ConfigError(f"--chunk: expected a positive integer, got {args.chunk}")
    models = open_checkpoints(args)
    f0 = models[0][1]
    train = _split_images(args.train, f0, "train", args.data_layout)
    test = _split_images(args.test, f0, "test", args.data_layout) if args.test else None
    doc = memorization_report(
        models,
        train,
        test,
        masks=masks,
        methods=methods,
        seed=args.seed,
        noise_std=args.noise,
        solver=solver_options(args),
        progress=progress_flag(args),
        figures_dir=args.figures,
        command="evaluate",
        chunk=args.chunk,
        control=args.control,
        db=args.db,
    )
    doc["settings"]["train"] = args.train
    doc["settings"]["test"] = args.test
    if args.json:
        files = {"model": args.model, "train": parse_data_spec(args.train, "train")[0],
                 "test": parse_data_spec(args.test, "test")[0] if args.test else None}  # fmt: skip
        for i, p in enumerate(args.checkpoints, 1):
            files[f"checkpoint_{i}"] = p
        write_json(args.json, doc, "report", args, files)
    print(format_table(doc))
    if len(models) > 1:
        print()
        print("recovery rate vs train loss (training images):")
        print(format_loss_table(doc))
    return 0
