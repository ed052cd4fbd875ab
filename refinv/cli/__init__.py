"""The ``refinv`` command line.

Each command lives in its own module exposing ``register(subparsers)``; the
commands and their JSON output are the product's contract (docs/cli.md).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import warnings

from ..errors import DivergenceWarning, RefinvError

# command modules, in the order `refinv --help` lists them
_COMMANDS = [
    "demo",
    "recover",
    "evaluate",
    "audit",
    "stability",
    "inspect",
    "invert",
    "bregman",
    "sweep",
    "report",
]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="refinv",
        description="Regularized inversion of neural networks: how much of its training data "
        "did an autoencoder memorize?",
    )
    parser.add_argument("--version", action="version", version=f"refinv {__version__}")
    add_verbosity_args(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f".{name}", __name__).register(sub)
    for p in sub.choices.values():  # the same -v/-q after the command (counted together)
        add_verbosity_args(p, suffix="_sub")
    return parser


def add_verbosity_args(p: argparse.ArgumentParser, suffix: str = "") -> None:
    """``-v/--verbose`` and ``-q/--quiet`` (counts): before the command (``suffix`` "") and
    after it (``"_sub"``); :func:`verbosity` adds the two."""
    g = p.add_argument_group("output") if suffix else p
    g.add_argument(
        "-v", "--verbose", action="count", default=0, dest="verbose" + suffix,
        help="more logging (-v info, -vv debug); before or after the command",
    )  # fmt: skip
    g.add_argument(
        "-q", "--quiet", action="count", default=0, dest="quiet" + suffix,
        help="less output: no progress bar, and only errors logged (warnings still shown); "
        "before or after the command",
    )  # fmt: skip


def verbosity(args: argparse.Namespace) -> int:
    """-v count minus -q count, both positions together; sets ``args.quiet`` (the progress
    switch the commands read) to the total -q count."""
    quiet = getattr(args, "quiet", 0) + getattr(args, "quiet_sub", 0)
    args.quiet = quiet
    return getattr(args, "verbose", 0) + getattr(args, "verbose_sub", 0) - quiet


def one_line_warnings(command: str):
    """Print a :class:`~refinv.errors.DivergenceWarning` as ONE line, ``refinv COMMAND:
    warning: ...`` (like the errors), and nothing else for it; returns the previous
    ``warnings.showwarning`` for the caller to restore."""
    show = warnings.showwarning

    def show_refinv(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DivergenceWarning):
            print(f"refinv {command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = show_refinv
    return show


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.cli_argv, args.cli_started = ["refinv", *argv], started  # for the provenance block
    v = verbosity(args)
    level = logging.WARNING - 10 * min(v, 2) if v >= 0 else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    show = one_line_warnings(args.command)
    try:
        from ._checks import check_args

        check_args(args)
        return int(args.func(args) or 0)
    except RefinvError as exc:
        print(f"refinv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status, no traceback
        print(f"refinv {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
