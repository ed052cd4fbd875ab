"""refinv._progress.Progress (tqdm): one updating line, labelled, off when not a TTY or asked."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import termios

import numpy as np
import pytest

from refinv._progress import Progress, progress_label


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _progress_env(monkeypatch):
    monkeypatch.delenv("REFINV_NO_PROGRESS", raising=False)


def _drive(bar: Progress, total: int) -> None:
    for i in range(total + 1):
        bar.update(i)
    bar.close()


def test_off_when_not_a_tty():
    s = io.StringIO()
    bar = Progress(10, "x", stream=s)
    assert not bar.enabled
    _drive(bar, 10)
    assert s.getvalue() == ""


def test_env_turns_it_off_even_when_asked(monkeypatch):
    monkeypatch.setenv("REFINV_NO_PROGRESS", "1")
    s = _Tty()
    bar = Progress(10, "x", enabled=True, stream=s)
    assert not bar.enabled
    _drive(bar, 10)
    assert s.getvalue() == ""
    monkeypatch.setenv("REFINV_NO_PROGRESS", "0")  # "0" means: not disabled
    assert Progress(10, "x", stream=_Tty()).enabled


def test_labelled_with_what_runs_on_one_line():
    s = _Tty()
    with progress_label("faces25 random:0.5"), progress_label("train"):
        bar = Progress(5, "blind", stream=s)
    assert bar.desc == "faces25 random:0.5 train blind"
    bar.update(5, note="last task")
    bar.close()
    out = s.getvalue()
    assert "faces25 random:0.5 train blind" in out
    assert "5/5" in out and "last task" in out
    assert "\n" not in out  # redrawn in place with \r, erased on close (leave=False)
    assert Progress(5, "blind", stream=_Tty()).desc == "blind"  # the label is scoped


def test_leave_keeps_the_final_line():
    s = _Tty()
    _drive(Progress(3, "sweep", stream=s, leave=True), 3)
    assert s.getvalue().rstrip("\r").endswith("\n") and "3/3" in s.getvalue()


def _pty_output(columns: int, desc: str, total: int = 200) -> str:
    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        with os.fdopen(os.dup(slave), "w") as f:
            bar = Progress(total, desc, stream=f)
            assert bar.enabled  # a real terminal
            for i in range(0, total + 1, 10):
                bar.update(i)
                bar._bar.refresh()  # draw every update, as a slow loop would
            bar.close()
            f.flush()
        out = b""
        while select.select([master], [], [], 0.2)[0]:
            chunk = os.read(master, 1 << 16)
            if not chunk:
                break
            out += chunk
        return out.decode()
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("columns", [50, 120])
def test_fits_the_terminal_width_on_one_line(columns):
    out = _pty_output(columns, "checkpoint_with_a_long_name random:0.5 train blind")
    assert out.count("\n") == 0  # one line, updated in place
    assert max(len(part) for part in out.split("\r")) <= columns


def test_solver_loop_draws_its_bar(monkeypatch):
    """run_loop's bar goes through Progress and is labelled with the method."""
    from refinv._progress import Progress as P
    from refinv.solvers import _loop

    made = []

    class Spy(P):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(_loop, "Progress", Spy)
    from refinv.solvers.fista import lasso

    W = np.random.default_rng(0).standard_normal((30, 10))
    with progress_label("ck mask split"):
        lasso(W, np.ones((2, 30)), lam=0.1, max_iter=5, progress=False)
    assert made and made[0].desc.startswith("ck mask split")
