"""Progress bars on stderr, drawn by tqdm (library code never prints to stdout).

:class:`Progress` is the one progress helper of refinv: ``Progress(total,
desc)``, ``update(done)`` with the number of steps done so far, ``close()``.
It is a thin layer over :class:`tqdm.tqdm`:

* one line that updates in place, as wide as the terminal (``dynamic_ncols``),
  a few refreshes per second at most (it costs nothing in inner loops);
* labelled with what runs: ``desc`` (the solver, "sweep"), prefixed by the
  label of the enclosing :func:`progress_label` block (the evaluation sets
  "checkpoint mask split" there);
* in a Jupyter notebook a notebook widget when ``ipywidgets`` is installed
  (else the text bar, which notebooks render on one line too);
* off by default unless stderr is a terminal or a notebook, and always off
  when the environment variable ``REFINV_NO_PROGRESS`` is set (to anything but
  ``""`` or ``"0"``), even where a caller asked for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Iterator

__all__ = ["Progress", "progress_label", "progress_disabled_by_env"]

_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("refinv_progress_label", default="")


@contextlib.contextmanager
def progress_label(text: str) -> Iterator[None]:
    """Prefix every :class:`Progress` bar created inside the block with ``text``."""
    outer = _LABEL.get()
    token = _LABEL.set(f"{outer} {text}".strip() if outer else str(text))
    try:
        yield
    finally:
        _LABEL.reset(token)


def progress_disabled_by_env() -> bool:
    """``REFINV_NO_PROGRESS`` is set (to anything but ``""`` or ``"0"``)."""
    return os.environ.get("REFINV_NO_PROGRESS", "") not in ("", "0")


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        ip = shell.get_ipython()  # type: ignore[attr-defined]
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _tqdm_class(notebook: bool):
    if notebook:
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm as tqdm_nb

            return tqdm_nb
        except ImportError:
            pass
    from tqdm import tqdm

    return tqdm


class Progress:
    """A progress bar of ``total`` steps labelled ``desc``.

    Parameters
    ----------
    total : int
        Number of steps (at least 1 is shown).
    desc : str
        What runs (a solver's name, "sweep"); the enclosing
        :func:`progress_label` is put in front of it.
    enabled : bool or None
        ``None``: only when ``stream`` is a terminal (or inside a notebook).
        ``REFINV_NO_PROGRESS`` turns the bar off in every case.
    stream : file, optional
        Where the bar is drawn (default: ``sys.stderr``).
    leave : bool
        Keep the finished bar on screen (default: erase it on :meth:`close`).
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        enabled: bool | None = None,
        stream=None,
        *,
        leave: bool = False,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        notebook = stream is None and _in_notebook()
        if enabled is None:
            enabled = notebook or bool(getattr(self.stream, "isatty", lambda: False)())
        if progress_disabled_by_env():
            enabled = False
        self.enabled = bool(enabled)
        self.total = max(int(total), 1)
        label = _LABEL.get()
        self.desc = f"{label} {desc}".strip() if label else str(desc)
        self._bar = None
        if self.enabled:
            cls = _tqdm_class(notebook)
            kw = {} if cls.__module__ == "tqdm.notebook" else {"file": self.stream}
            self._bar = cls(
                total=self.total,
                desc=self.desc,
                leave=leave,
                dynamic_ncols=True,
                mininterval=0.2,
                unit="it",
                **kw,
            )

    def update(self, done: int, note: str | None = None) -> None:
        """``done`` steps of ``total`` are done; ``note`` (optional) is shown after the bar."""
        if self._bar is None:
            return
        done = min(int(done), self.total)
        if note is not None:
            self._bar.set_postfix_str(note, refresh=False)
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)  # redraws at most every 0.2 s
        if done >= self.total:
            self._bar.refresh()  # the final state is always drawn

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
