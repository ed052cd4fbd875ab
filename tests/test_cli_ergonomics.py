"""CLI papercuts: -v/-q after the command, ``evaluate --mask``, Ctrl-C during a sweep (one
line saying how to resume, exit 130), one divergence message, a light ``refinv --help``."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from _sweeps import done_tasks as _done_tasks
from test_recovery import onnx_ae, projection

from refinv.cli import build_parser, main, verbosity
from refinv.cli.recover import progress_flag

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ergo")
    rng = np.random.default_rng(0)
    train = rng.random((6, 1, 6, 7))
    P = projection(train)
    onnx.save(onnx_ae([(P, np.zeros(42), False)], (1, 6, 7)), d / "ae.onnx")
    onnx.save(onnx_ae([(3.0 * np.eye(42), np.zeros(42), False)], (1, 6, 7)), d / "x3.onnx")
    np.savez(d / "data.npz", train=train.astype(np.float32),
             test=rng.random((4, 1, 6, 7)).astype(np.float32))  # fmt: skip
    return d


def _config(d: Path, tmp: Path, model: str = "ae.onnx", n: int = 6, shard: int = 2,
            max_iter: int = 3) -> Path:  # fmt: skip
    cfg = tmp / "sweep.toml"
    cfg.write_text(
        f'seed = 0\nshard_size = {shard}\nmasks = ["random:0.3"]\nmethods = ["known", "blind"]\n'
        f'[solver]\nmax_iter = {max_iter}\n[datasets.d]\ntrain = "{d / "data.npz"}:train"\n'
        f'n = {n}\n[[models]]\npath = "{d / model}"\nlabel = "m"\n'
    )
    return cfg


# ------------------------------------------------------------------ -v / -q
def _parsed(argv: list[str]):
    args = build_parser().parse_args(argv)
    return verbosity(args), args


@pytest.mark.parametrize("cmd", ["evaluate", "recover", "inspect", "sweep", "report", "audit"])
def test_verbosity_flags_mean_the_same_before_and_after_the_command(cmd):
    rest = {
        "evaluate": ["M.onnx", "--train", "D.npz"], "recover": ["M.onnx", "D.npz"],
        "inspect": ["M.onnx"], "sweep": ["C.toml"], "report": ["DB"],
        "audit": ["M.onnx", "--train", "D.npz", "--test", "D.npz", "--out", "o"],
    }[cmd]  # fmt: skip
    assert _parsed([cmd, *rest])[0] == 0
    for flag, v in (("-v", 1), ("-vv", 2), ("--verbose", 1), ("-q", -1), ("--quiet", -1)):
        before, a1 = _parsed([flag, cmd, *rest])
        after, a2 = _parsed([cmd, *rest, flag])
        assert before == after == v, flag
        assert a1.quiet == a2.quiet == (1 if v < 0 else 0)
    assert _parsed(["-v", cmd, *rest, "-v"])[0] == 2  # counted together
    assert _parsed(["-v", cmd, *rest, "-q"])[0] == 0


def test_quiet_after_the_command_turns_the_progress_bar_off():
    for argv in (["-q", "evaluate", "M.onnx", "--train", "D"], ["evaluate", "M.onnx",
                                                                "--train", "D", "-q"]):  # fmt: skip
        _, args = _parsed(argv)
        assert progress_flag(args) is False
    assert progress_flag(_parsed(["evaluate", "M.onnx", "--train", "D"])[1]) is None


def test_verbose_after_the_command_sets_the_log_level(files, monkeypatch):
    d = files
    levels = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    run = ["recover", str(d / "ae.onnx"), str(d / "data.npz"), "--method", "known",
           "--max-iter", "2"]  # fmt: skip
    for argv in (["-vv", *run], [*run, "-vv"], [*run, "-v"], [*run], [*run, "-q"], ["-q", *run]):
        assert main(argv) == 0
    assert levels == [logging.DEBUG, logging.DEBUG, logging.INFO, logging.WARNING,
                      logging.ERROR, logging.ERROR]  # fmt: skip


# ------------------------------------------------------------------ --masks alias
def test_evaluate_accepts_the_deprecated_masks(files, tmp_path, capsys):
    d = files
    base = ["evaluate", str(d / "ae.onnx"), "--train", f"{d / 'data.npz'}:train",
            "--method", "known", "--max-iter", "2", "-q"]  # fmt: skip
    assert main([*base, "--mask", "center:3,rows:2", "--json", str(tmp_path / "a.json")]) == 0
    assert main([*base, "--masks", "center:3,rows:2", "--json", str(tmp_path / "b.json")]) == 0
    assert "--masks is deprecated" in capsys.readouterr().err
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "ab")
    assert a["settings"]["masks"] == b["settings"]["masks"] == ["center:3", "rows:2"]
    assert [r["mse"] for r in a["runs"]] == [r["mse"] for r in b["runs"]]
    audit = build_parser().parse_args(
        ["audit", "M", "--train", "D", "--test", "D", "--out", "o", "--mask", "center:3"]
    )
    assert audit.mask == "center:3"


# ------------------------------------------------------------------ Ctrl-C in a sweep


def test_ctrl_c_in_a_sweep_is_one_resume_line_and_exit_130(files, tmp_path, monkeypatch, capsys):
    import refinv.engine.work as work  # the engine runs the sweep's tasks

    cfg = _config(files, tmp_path)  # 3 shards x 2 methods = 6 tasks
    db = tmp_path / "s.sqlite"
    real, calls = work.run_unit, []

    def interrupted_after_two(task, *a, **kw):
        calls.append(task.task_id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return real(task, *a, **kw)

    monkeypatch.setattr(work, "run_unit", interrupted_after_two)
    assert main(["sweep", str(cfg), "--db", str(db), "--workers", "1", "-q"]) == 130
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    cmd = line.split("resume with: ", 1)[1]
    assert line.startswith("refinv sweep: interrupted; the completed tasks are saved")
    assert shlex.split(cmd) == ["refinv", "sweep", str(cfg), "--db", str(db), "-q"]
    assert _done_tasks(db) == 2
    monkeypatch.setattr(work, "run_unit", real)
    assert main(shlex.split(cmd)[1:]) == 0  # the printed command resumes the sweep
    assert "6 tasks: 2 already in" in capsys.readouterr().out
    assert _done_tasks(db) == 6


def test_resume_command_of_a_salvage_run_drops_salvage():
    from refinv.cli.sweep import resume_command

    args = build_parser().parse_args(
        ["sweep", "c.toml", "--salvage", "bad.sqlite", "--workers", "2", "--scheduler", "local"]
    )
    assert resume_command(args) == "refinv sweep c.toml --db c.sqlite --workers 2 --scheduler local"


def test_sigint_to_a_running_sweep(files, tmp_path):
    """The real thing: SIGINT to a `refinv sweep` process once it has stored a task."""
    # 12 tasks that each run all 2,000 iterations (tol 0): a loaded machine cannot finish the
    # sweep between the first stored task and the signal
    cfg = _config(files, tmp_path, n=6, shard=1, max_iter=2000)
    cfg.write_text(cfg.read_text().replace("max_iter = 2000\n", "max_iter = 2000\ntol = 0.0\n"))
    db = tmp_path / "s.sqlite"
    env = {**os.environ, "REFINV_NO_PROGRESS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "refinv", "sweep", str(cfg), "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        while _done_tasks(db) < 1 and proc.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before it was interrupted: {proc.communicate()}")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert re.fullmatch(r"refinv sweep: interrupted; .* resume with: refinv sweep \S+ --db \S+",
                        line), line  # fmt: skip
    assert 1 <= _done_tasks(db) < 12


# ------------------------------------------------------------------ divergence
def test_a_diverging_sweep_gives_one_summary_line_and_no_log_line(files, tmp_path, capsys, caplog):
    cfg = _config(files, tmp_path, model="x3.onnx", n=4, shard=2)
    cfg.write_text(cfg.read_text().replace('["known", "blind"]', '["ae-iterations"]'))
    with caplog.at_level(logging.DEBUG):
        assert main(["sweep", str(cfg), "--db", str(tmp_path / "d.sqlite"), "-q"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "diverged" in ln]
    assert lines == [  # the two tasks (shards [0:2], [2:4]) summed into one line
        "refinv sweep: warning: 4 samples diverged (NaN/Inf or |x| > 1e+06) and were stopped, "
        "the others continued; per setting: m random:0.3 ae-iterations: train 4 (MSE "
        "null in the database; per sample: `refinv report DB --json`)"
    ]
    assert not [r for r in caplog.records if "diverged" in r.getMessage()]


# ------------------------------------------------------------------ refinv --help
def test_help_through_python_m_refinv_imports_no_onnx():
    """``python -X importtime -m refinv --help`` lists every module imported: no onnx, no
    onnxruntime (their import costs seconds), no torch, and not even NumPy (``import refinv``
    is lazy, the help strings come from refinv._constants): 103 modules instead of 394."""
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "refinv", "--help"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0 and "evaluate" in res.stdout
    mods = {ln.rsplit("|", 1)[1].strip() for ln in res.stderr.splitlines() if "|" in ln}
    assert "refinv.cli" in mods
    heavy = ("onnx", "onnxruntime", "torch", "numpy", "scipy", "array_api_compat", "tqdm")
    assert not {m for m in mods if m.split(".")[0] in heavy}


def test_in_a_terminal_the_divergence_line_is_not_on_the_progress_bar(files, tmp_path):
    """In a TTY (a pseudo-terminal here) a sweep's progress bar stays on stderr while tasks
    diverge; the one divergence line comes after it, on a line of its own (each task's
    warning was written onto the bar's line)."""
    import pty

    cfg = _config(files, tmp_path, model="x3.onnx", n=6, shard=2)
    cfg.write_text(cfg.read_text().replace('["known", "blind"]', '["ae-iterations"]'))
    argv = [sys.executable, "-m", "refinv", "sweep", str(cfg), "--db",
            str(tmp_path / "d.sqlite")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "REFINV_NO_PROGRESS"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin/stdout/stderr are the pseudo-terminal, 120 columns wide
        import fcntl
        import struct
        import termios

        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.chdir(tmp_path)
        os.execve(sys.executable, argv, env)
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "it/s" in text or "%|" in text, text  # a bar was drawn (it is a terminal)
    lines = re.split(r"[\r\n]+", text)
    div = [ln for ln in lines if "samples diverged" in ln]
    assert len(div) == 1, text
    assert div[0].startswith("refinv sweep: warning: ") and "%|" not in div[0]
