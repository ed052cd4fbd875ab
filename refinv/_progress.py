"""A small progress bar on stderr (library code never prints to stdout).

Enabled only when stderr is a TTY (or when asked explicitly); updates are
rate-limited to a few per second so it costs nothing in inner loops.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int, desc: str = "", enabled: bool | None = None, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)()) and not os.environ.get(
                "REFINV_NO_PROGRESS"
            )
        self.enabled = enabled
        self.total = max(int(total), 1)
        self.desc = desc
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._shown = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.2 and done < self.total:
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        elapsed = now - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        width = 24
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        self.stream.write(
            f"\r{self.desc} [{bar}] {done}/{self.total} {elapsed:6.1f}s eta {eta:6.1f}s"
        )
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()
