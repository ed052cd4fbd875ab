"""``refinv audit``: a memorization audit a privacy reviewer can file.

    refinv audit MODEL.onnx --train DATA.npz:train --test DATA.npz:test \\
        [--checkpoints CK1.onnx ...] [--mask random:0.5,center:9,rows:2] \\
        [--method blind,known,ae-iterations] --out DIR [--resume] \\
        [--workers N] [--scheduler ADDRESS|local] [--shard-size N]

Writes DIR/report.json (schema in docs/cli.md), DIR/per_image.csv and one
self-contained DIR/report.html; needs the ``audit`` extra. The audit is a plan of units
(recoveries, control, stability) run into the results store DIR/store.sqlite (in this
process, on a process pool or on Dask, as ``refinv sweep``), then scored, decided and
rendered from the store.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .._constants import MASK_GRAMMAR
from ..errors import ConfigError
from . import _args
from ._args import add_solver_args, progress_flag
from .evaluate import RECOVERY_METHODS, open_checkpoints
from .recover import solver_options

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="memorization audit: per-image exposure, membership inference, HTML report",
        description="Run the memorization report of `refinv evaluate` (same settings, same "
        "numbers), then per-image exposure, membership inference (ROC, AUC, TPR at 1% and "
        "0.1% FPR, bootstrap intervals) for the recovery score, the loss-threshold attack and "
        "the local stability, and a generic-inpainting control without the model. Writes "
        "DIR/report.json, DIR/per_image.csv and a self-contained DIR/report.html. Needs the "
        f"'audit' extra (pip install 'refinv[audit]'). Mask grammar: {MASK_GRAMMAR}.",
    )
    p.add_argument("model", metavar="MODEL.onnx", help="the autoencoder (ONNX)")
    p.add_argument("--train", required=True, metavar="DATA.npz:train", help="training images")
    p.add_argument("--test", required=True, metavar="DATA.npz:test", help="held-out images")
    _args.add_mask(
        p, "random:0.5,center:9,rows:2", several=True,
        help="comma-separated mask specs; the first one is the headline's (default "
        "random:0.5,center:9,rows:2)",
    )  # fmt: skip
    _args.add_alias(p, "--masks", "--mask", dest="mask")
    _args.add_method(p, RECOVERY_METHODS, ",".join(RECOVERY_METHODS), several=True)
    _args.add_alias(p, "--methods", "--method", dest="method")
    p.add_argument(
        "--checkpoints", nargs="*", default=[], metavar="CK.onnx",
        help="more models of the same training run: recovery vs train loss, AUC per checkpoint",
    )  # fmt: skip
    _args.add_seed(p)
    # dest out_dir: the shared check of refinv.cli._checks reads --out as a file path
    _args.add_out(
        p, "the report folder: report.json, per_image.csv, report.html", metavar="DIR",
        dest="out_dir", required=True,
    )  # fmt: skip
    p.add_argument(
        "--resume", action="store_true",
        help="reuse the units the results store DIR/store.sqlite holds (an interrupted audit "
        "continues; without it the store starts afresh)",
    )  # fmt: skip
    _args.add_executor(
        p, " (every worker needs this refinv and the model and data files at the same paths)"
    )
    p.add_argument(
        "--shard-size", type=int, default=None, metavar="N",
        help="images per unit of work (default: a whole split per unit; smaller units spread "
        "a large split over the workers)",
    )  # fmt: skip
    _args.add_limit(
        p, "images of each split for the local-stability score", default=20,
        flag="--stability-limit", dest="stability_n", extra="; about 500 model calls per image",
    )  # fmt: skip
    _args.add_alias(p, "--stability-n", "--stability-limit", dest="stability_n", type=int)
    p.add_argument(
        "--bootstrap", type=int, default=1000, metavar="B",
        help="bootstrap resamples for the 95%% intervals (default 1000)",
    )  # fmt: skip
    p.add_argument(
        "--gallery", type=int, default=6, help="most exposed training images shown (default 6)"
    )
    add_solver_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..audit import audit, require_audit_dependencies
    from ..evaluation.report import METHODS, format_table
    from ..io import parse_data_spec
    from ._output import cli_argv

    started = time.time()
    require_audit_dependencies()
    methods = _args.one_of(args.method, METHODS, "--method")
    masks = _args.split_list(args.mask, "--mask")
    if args.stability_n is not None and args.stability_n < 1:
        raise ConfigError(f"--stability-limit: expected a positive count, got {args.stability_n}")
    if args.bootstrap < 1:
        raise ConfigError(f"--bootstrap: expected a positive count, got {args.bootstrap}")
    if args.gallery < 0:
        raise ConfigError(f"--gallery: expected a count >= 0, got {args.gallery}")
    from ..io import check_writable

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: expected a folder, got the file {str(out)!r}")
    check_writable(out / "report.json", "--out")
    if args.workers < 1:
        raise ConfigError(f"--workers: expected >= 1, got {args.workers}")
    if args.shard_size is not None and args.shard_size < 1:
        raise ConfigError(f"--shard-size: expected a positive count, got {args.shard_size}")
    models = open_checkpoints(args)
    files = {"model": args.model, "train": str(parse_data_spec(args.train, "train")[0]),
             "test": str(parse_data_spec(args.test, "test")[0])}  # fmt: skip
    for i, p in enumerate(args.checkpoints, 1):
        files[f"checkpoint_{i}"] = p
    doc = audit(
        models[0],
        args.train,  # read as the model takes them (the files name the units for workers)
        args.test,
        checkpoints=models[1:],
        masks=masks,
        methods=methods,
        seed=args.seed,
        noise_std=args.noise,
        solver=solver_options(args),
        out=out,
        resume=args.resume,
        progress=progress_flag(args),
        stability_n=args.stability_n,
        n_bootstrap=args.bootstrap,
        gallery=args.gallery,
        files=files,
        data_specs=(args.train, args.test),
        started=started,
        argv=cli_argv(args),
        data_layout=args.data_layout,
        workers=args.workers,
        scheduler=args.scheduler,
        shard_size=args.shard_size,
    )
    v = doc["verdict"]
    print(v["headline"])
    print(v["summary"])
    print(v["membership"])
    print(v["control"])
    print()
    print(format_table(doc["recovery"]))
    print()
    t = doc["timing"]
    print(
        f"wrote {out / 'report.html'}, {out / 'report.json'}, {out / 'per_image.csv'} "
        f"({doc['provenance']['wall_seconds']:.1f} s; {t['cached_units']} units from the store, "
        f"{t['computed_units']} computed)"
    )
    return 0
