"""Every ```bash block of docs/cli.md runs: each ``refinv ...`` line through refinv.cli.main,
in a temporary working folder, with the repository's paths (models/, docs/) resolved to
this checkout. The examples use small settings so this stays a few seconds per command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from refinv.cli import main

ROOT = Path(__file__).resolve().parents[1]
CLI_MD = ROOT / "docs" / "cli.md"


def _blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def _commands(block: str) -> list[str]:
    """The block's ``refinv`` lines, backslash continuations joined; other lines are refused
    (an example is a command to paste, nothing else)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    cmds = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert line.startswith("refinv "), f"docs/cli.md example is not a refinv command: {line}"
        cmds.append(line)
    return cmds


EXAMPLES = [c for b in _blocks(CLI_MD.read_text()) for c in _commands(b)]


def _resolve(arg: str) -> str:
    """Repository paths (also after ``--opt=`` or inside ``FILE:KEY``) -> absolute."""
    m = re.match(r"^(--[\w-]+=)?((?:models|docs)/[^:]*)(:.*)?$", arg)
    if m and (ROOT / m.group(2)).exists():
        return f"{m.group(1) or ''}{ROOT / m.group(2)}{m.group(3) or ''}"
    return arg


def test_docs_have_examples_for_every_command():
    names = {shlex.split(c)[1] for c in EXAMPLES}
    need = {"demo", "recover", "evaluate", "stability", "inspect", "invert", "bregman"}
    assert need <= names, sorted(need - names)


@pytest.mark.parametrize("cmd", EXAMPLES, ids=[" ".join(shlex.split(c)[:2]) for c in EXAMPLES])
def test_docs_cli_example_runs(cmd, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFINV_NO_PROGRESS", "1")
    argv = [_resolve(a) for a in shlex.split(cmd)[1:]]
    assert main(argv) == 0, cmd
    # the documented examples use the current vocabulary, no deprecated spelling
    assert "deprecated" not in capsys.readouterr().err, cmd
    # every output file the example names was written, in the working folder
    for opt in ("--json", "--out"):
        if opt in argv:
            assert (tmp_path / argv[argv.index(opt) + 1]).is_file(), (cmd, opt)
