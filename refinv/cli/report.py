"""``refinv report``: the memorization report of a sweep database (same schema as evaluate).

refinv report DB [--json OUT] [--figures DIR]
"""

from __future__ import annotations

import argparse

from . import _args

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="memorization report (table, JSON, figures) of a `refinv sweep` database",
        description="Aggregate the per-sample rows of a sweep database into the memorization "
        "report of `refinv evaluate` (same table; same JSON schema with --json; with --figures "
        "the recovery-rate-vs-train-loss figure, needs matplotlib). Failed tasks are listed.",
    )
    p.add_argument("db", metavar="DB", help="SQLite database written by `refinv sweep`")
    _args.add_json(p)
    _args.add_figures(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..evaluation.report import figure_rate_vs_loss, format_loss_table, format_table
    from ..sweep import Store, report_from_db
    from ._output import write_json

    if args.figures:
        from ..evaluation.report import require_figure_dependencies

        require_figure_dependencies("--figures")
    doc = report_from_db(args.db)
    if args.json:
        write_json(args.json, doc, "report", args, {"database": args.db})
    if not doc["runs"]:
        print(f"{args.db}: no completed tasks yet")
    else:
        print(format_table(doc))
        if len(doc["checkpoints"]) > 1:
            print()
            print("recovery rate vs train loss (training images):")
            print(format_loss_table(doc))
    if args.figures:
        # the store keeps per-sample metrics, not images: the example grids of
        # `refinv evaluate --figures` cannot be drawn from it
        if len(doc["checkpoints"]) > 1 and doc["runs"]:
            out = figure_rate_vs_loss(doc, Path(args.figures) / "rate_vs_train_loss.png")
            print(f"figure: {out}")
        else:
            print("--figures: the rate-vs-train-loss figure needs two or more checkpoints")
    with Store(args.db, readonly=True) as store:
        fails = store.failures()
    if fails:
        print()
        print(f"{len(fails)} failed task(s):")
        for c, m, me, s, a, b, err in fails:
            last = (err or "").strip().splitlines()[-1:] or [""]
            print(f"  {c} / {m} / {me} / {s} [{a}:{b}]: {last[0]}")
    return 0
