"""Library code leaves the user's matplotlib alone: no backend switch, no pyplot state."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_no_backend_switch_outside_the_cli():
    offenders = []
    for p in sorted((ROOT / "refinv").rglob("*.py")):
        if "cli" in p.relative_to(ROOT / "refinv").parts:
            continue  # the command line owns its process and may choose a backend
        if re.search(r"matplotlib\s*\.\s*use\s*\(|\.switch_backend\s*\(", p.read_text()):
            offenders.append(str(p.relative_to(ROOT)))
    assert offenders == []


def test_figures_keep_the_users_backend(tmp_path):
    pytest.importorskip("matplotlib")
    code = f"""
import sys
import matplotlib
matplotlib.use("svg")  # the user's choice, not Agg
import numpy as np
from refinv.evaluation.report import figure_examples, figure_rate_vs_loss
x = np.random.default_rng(0).random((2, 1, 5, 5))
m = np.ones((2, 5, 5))
figure_examples({str(tmp_path / "a.png")!r}, x=x, y=x, xhat=x, h_true=m, mse=[1e-9, None])
doc = {{"runs": [{{"split": "train", "train_loss": t, "accurate_rate": r, "mask": "random:0.5",
                 "method": "blind"}} for t, r in [(1e-3, 0.1), (1e-6, 0.9)]]}}
figure_rate_vs_loss(doc, {str(tmp_path / "b.png")!r})
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("a.png", "b.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
