"""The ``refinv`` command line.

Each command lives in its own module exposing ``register(subparsers)``; the
commands and their JSON output are the product's contract (docs/cli.md).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from ..errors import DivergenceWarning, RefinvError

# command modules, in the order `refinv --help` lists them
_COMMANDS = [
    "demo",
    "recover",
    "evaluate",
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
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    show = warnings.showwarning

    def show_refinv(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DivergenceWarning):  # one line, like the errors below
            print(f"refinv {args.command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = show_refinv
    try:
        from ._checks import check_args

        check_args(args)
        return int(args.func(args) or 0)
    except RefinvError as exc:
        print(f"refinv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
