"""Checks of the options every command shares, run by :func:`refinv.cli.main` before a command.

A bad value raises :class:`~refinv.errors.ConfigError` (``refinv CMD: error: ...``,
exit 2) before any model is loaded or any work is done:

* ``--seed``: an integer >= 0 (NumPy seeds are non-negative);
* ``--batch-size``: >= 1; ``--limit``, ``--prox-limit``, ``--stability-limit``,
  ``--workers``: >= 1;
* ``--threads``: 0 (onnxruntime's default) up to :func:`max_threads` (4 threads
  per CPU core this process may run on): onnxruntime starts every thread it is
  asked for, and 100000 of them hang the machine;
* ``--json``, ``--out``: a file path in a writable folder, not a
  directory; ``--figures``: a directory path (not an existing file) in a
  writable folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError

__all__ = ["check_args", "max_threads"]

_AT_LEAST_ONE = ("batch_size", "limit", "workers", "prox_n", "stability_n")
_OUTPUT_FILES = ("json", "out")
#: dests whose option is spelled differently
_FLAGS = {"prox_n": "--prox-limit", "stability_n": "--stability-limit"}


def max_threads() -> int:
    """The largest ``--threads`` accepted: 4 x the CPU cores this process may use (the API's
    bound, :func:`refinv.onnx.limits.max_threads`)."""
    from ..onnx.limits import max_threads as bound

    return bound()


def _opt(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def check_args(args: argparse.Namespace) -> None:
    """Refuse out-of-range shared options of a parsed command line (see the module doc)."""
    from ..io import check_writable

    seed = getattr(args, "seed", None)
    if seed is not None and seed < 0:
        raise ConfigError(f"--seed: expected an integer >= 0, got {seed}")
    for name in _AT_LEAST_ONE:
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise ConfigError(f"{_opt(name)}: expected an integer >= 1, got {v}")
    threads = getattr(args, "threads", None)
    if threads is not None and not 0 <= threads <= max_threads():
        raise ConfigError(
            f"--threads: expected 0 (onnxruntime's default) to {max_threads()} (4 per CPU core "
            f"available), got {threads}"
        )
    for name in _OUTPUT_FILES:
        v = getattr(args, name, None)
        if isinstance(v, str) and v:
            check_writable(v, _opt(name))
    fig = getattr(args, "figures", None)
    if isinstance(fig, str) and fig:
        p = Path(fig)
        if p.exists() and not p.is_dir():
            raise ConfigError(f"--figures {fig!r}: expected a directory, got a file")
        check_writable(p / "figure.png", "--figures")
