"""The ``refinv`` command line.

Each command lives in its own module exposing ``register(subparsers)``; the
commands and their JSON output are the product's contract (docs/cli.md).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
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


_DIVERGED = re.compile(
    r"^checkpoint (?P<ck>.+?), mask (?P<mask>.+?), method (?P<method>.+?), split (?P<split>\S+)"
    r"(?P<shard> \[\d+:\d+\])?: (?P<k>\d+) of (?P<n>\d+) samples diverged \((?P<why>[^)]*)\)"
    r".*?\(MSE null in the (?P<where>\w+)\)"
)


class WarningLines:
    """How a command shows warnings on stderr: a deprecated option at once, as ONE line
    ``refinv COMMAND: warning: ...``; the :class:`~refinv.errors.DivergenceWarning` of every
    run collected and shown at the end as ONE summary line with the counts per setting
    (:meth:`summary`), after the progress bars are gone; any other warning as Python shows it.
    ``install()`` replaces ``warnings.showwarning``, ``restore()`` puts the previous one back."""

    def __init__(self, command: str):
        self.command = command
        self.runs: dict[tuple[str, str, str], dict[str, list[int]]] = {}
        self.other: dict[str, int] = {}
        self.why = self.where = ""
        self.sharded = False  # a sweep warns per shard that diverged: no total per split
        self._show = None

    def install(self) -> WarningLines:
        from ._args import DeprecatedOptionWarning

        self._show = show = warnings.showwarning

        def show_refinv(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, DivergenceWarning):
                self.add(str(message))
            elif issubclass(category, DeprecatedOptionWarning):
                print(f"refinv {self.command}: warning: {message}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = show_refinv
        return self

    def restore(self) -> None:
        if self._show is not None:
            warnings.showwarning = self._show

    def add(self, message: str) -> None:
        m = _DIVERGED.match(message)
        if m is None:  # a solver's own message (invert, bregman): shown once, counted
            self.other[message] = self.other.get(message, 0) + 1
            return
        self.why, self.where = m["why"], m["where"]
        self.sharded = self.sharded or bool(m["shard"])
        split = self.runs.setdefault((m["ck"], m["mask"], m["method"]), {})
        kn = split.setdefault(m["split"], [0, 0])
        kn[0] += int(m["k"])
        kn[1] += int(m["n"])

    def summary(self) -> list[str]:
        """The lines to print at the end of the command (none when nothing diverged)."""
        lines = []
        if self.runs:
            k = sum(v[0] for s in self.runs.values() for v in s.values())

            def count(kn: list[int]) -> str:  # a sweep's shards without divergence never warn
                return str(kn[0]) if self.sharded else f"{kn[0]} of {kn[1]}"

            parts = [
                f"{ck} {mask} {method}: "
                + ", ".join(f"{sp} {count(kn)}" for sp, kn in splits.items())
                for (ck, mask, method), splits in self.runs.items()
            ]
            detail = (
                "per sample: `refinv report DB --json`" if self.where == "database"
                else "per sample: 'diverged' in the JSON"
            )  # fmt: skip
            lines.append(
                f"{k} samples diverged ({self.why}) and were stopped, the others continued; "
                f"per setting: {'; '.join(parts)} (MSE null in the {self.where}; {detail})"
            )
        for msg, count in self.other.items():
            lines.append(msg if count == 1 else f"{msg} ({count} times)")
        return [f"refinv {self.command}: warning: {t}" for t in lines]


def one_line_warnings(command: str):
    """Install :class:`WarningLines` for ``command``; returns the previous
    ``warnings.showwarning`` for the caller to restore (the former interface)."""
    w = WarningLines(command).install()
    return w._show


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
    shown = WarningLines(args.command)
    # every run's DivergenceWarning reaches the summary, even one whose text Python's
    # once-per-location registry has seen (a second command in the same process)
    with warnings.catch_warnings():
        warnings.simplefilter("always", DivergenceWarning)
        shown.install()
        try:
            return _run(args)
        finally:
            shown.restore()
            for line in shown.summary():
                print(line, file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    """The command, its checks and its errors (``refinv CMD: error: ...``, exit 2)."""
    try:
        from ._args import emit_deprecations
        from ._checks import check_args

        emit_deprecations(args)
        check_args(args)
        with _logging_beside_progress():
            return int(args.func(args) or 0)
    except RefinvError as exc:
        print(f"refinv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status, no traceback
        print(f"refinv {args.command}: interrupted", file=sys.stderr)
        return 130


def _logging_beside_progress():
    """In a terminal, log records are written above the progress bar (tqdm's
    ``logging_redirect_tqdm``), never onto its line; elsewhere nothing changes."""
    import contextlib

    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
