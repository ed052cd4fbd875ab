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
    from ..cli import add_verbosity_args, one_line_warnings, verbosity
    from ..cli import sweep as cli_sweep

    parser = argparse.ArgumentParser(prog="python -m refinv.sweep")
    sub = parser.add_subparsers()
    cli_sweep.register(sub)
    add_verbosity_args(sub.choices["sweep"], suffix="_sub")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(["sweep", *argv])
    args.command, args.cli_argv = "sweep", ["python", "-m", "refinv.sweep", *argv]
    v = verbosity(args)
    level = logging.WARNING - 10 * min(v, 2) if v >= 0 else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    show = one_line_warnings("sweep")
    try:
        return int(args.func(args))
    except RefinvError as exc:
        print(f"refinv sweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("refinv sweep: interrupted", file=sys.stderr)
        return 130
    finally:
        import warnings

        warnings.showwarning = show


if __name__ == "__main__":
    sys.exit(main())
