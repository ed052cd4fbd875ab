"""Every command's --help is plain text: no reST/Markdown markup, no doubled percent signs."""

from __future__ import annotations

import argparse

import pytest

from refinv.cli import _COMMANDS, build_parser


def _helps() -> dict[str, str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: sub.choices[name].format_help() for name in _COMMANDS}


@pytest.mark.parametrize("name", _COMMANDS)
def test_help_is_plain_text(name):
    text = _helps()[name]
    for markup in ("``", "%%", ":func:", ":class:", "{doc}", "**"):
        assert markup not in text, (name, markup)
