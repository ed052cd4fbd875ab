"""``refinv sweep``: run (or resume) a memorization sweep described by a TOML config.

refinv sweep CONFIG.toml [--db PATH] [--workers N] [--scheduler ADDRESS|local] [--send-files]
"""

from __future__ import annotations

import argparse

from . import _args

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="memorization sweep (models x masks x methods x shards) into an SQLite store",
        description="Run the sweep described by CONFIG.toml (format in docs/sweep.md): every "
        "model x mask x method x shard of training and held-out samples is one task; results "
        "go to an SQLite database, one transaction per task. Re-running the same config skips "
        "completed tasks (resume after an interruption). Render with `refinv report DB`.",
    )
    p.add_argument("config", metavar="CONFIG.toml", help="the sweep configuration")
    p.add_argument(
        "--db", default=None, metavar="PATH",
        help="results database (default: CONFIG with suffix .sqlite)",
    )  # fmt: skip
    _args.add_executor(p)
    p.add_argument(
        "--send-files", action="store_true",
        help="with --scheduler: send the model, data and mask files to the Dask workers as "
        "bytes (cached there by SHA-256) instead of requiring them at the same paths",
    )  # fmt: skip
    p.add_argument(
        "--salvage", default=None, metavar="DAMAGED.sqlite",
        help="first copy the complete tasks of a damaged store into --db (a new file), then "
        "compute the rest",
    )  # fmt: skip
    p.set_defaults(func=run)


def resume_command(args: argparse.Namespace) -> str:
    """The command that resumes this sweep: the same config, its database (no --salvage:
    the salvaged store is the database now), the same executor options."""
    import shlex
    from pathlib import Path

    db = args.db or str(Path(args.config).with_suffix(".sqlite"))
    words = ["refinv", "sweep", args.config, "--db", db]
    if args.workers != 1:
        words += ["--workers", str(args.workers)]
    if args.scheduler:
        words += ["--scheduler", args.scheduler]
    if getattr(args, "quiet", 0):
        words.append("-q")
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    import sys

    try:
        return _run(args)
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback; finished tasks are stored
        print(
            f"refinv sweep: interrupted; the completed tasks are saved, resume with: "
            f"{resume_command(args)}",
            file=sys.stderr,
        )
        return 130


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..sweep import Store, run_sweep

    if args.salvage:
        db = Path(args.db) if args.db else Path(args.config).with_suffix(".sqlite")
        kept, dropped = Store.salvage(args.salvage, db)
        print(f"salvaged {kept} complete task(s) of {args.salvage} into {db}; {dropped} left out")
        args.db = str(db)

    summary = run_sweep(
        args.config,
        args.db,
        workers=args.workers,
        scheduler=args.scheduler,
        progress=False if getattr(args, "quiet", 0) else None,
        send_files=getattr(args, "send_files", False),
    )
    print(summary)
    if summary.failed:
        print(f"{summary.failed} task(s) failed; see `refinv report {summary.db}`")
        return 1
    return 0
