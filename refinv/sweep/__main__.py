"""``python -m refinv.sweep CONFIG.toml [--db PATH] [--workers N] [--scheduler ADDRESS|local]``.

The same as ``refinv sweep``; exists so a sweep can run as its own process
(the resume test kills one).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import RefinvError


def main(argv: list[str] | None = None) -> int:
    from ..cli import sweep as cli_sweep

    parser = argparse.ArgumentParser(prog="python -m refinv.sweep")
    sub = parser.add_subparsers()
    cli_sweep.register(sub)
    args = parser.parse_args(["sweep", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except RefinvError as exc:
        print(f"refinv sweep: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
