"""Sweep configs: every value a task would fail on is refused when the config is read.

Each case changes one line of a valid config (the shipped digits8 autoencoder and data)
and expects a ConfigError naming the key, before any store exists; a value the old
validation let through made every task of the sweep fail (or raised OverflowError /
UnicodeDecodeError, a traceback).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from refinv.errors import ConfigError
from refinv.sweep import load_config, run_sweep

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "onnx" / "digits8_lrelu_6x320.onnx"
DATA = ROOT / "models" / "data" / "digits8.npz"

pytestmark = pytest.mark.skipif(
    not (MODEL.is_file() and DATA.is_file()), reason="needs the shipped digits8 model and data"
)


def _config(tmp: Path, top: str = "", solver: str = "", runtime: str = "") -> Path:
    if not top.startswith("seed"):
        top = f"seed = 3\n{top}"
    text = f"""
{top}
masks = ["random:0.5"]
methods = ["blind"]

[solver]
max_iter = 2
{solver}

[runtime]
{runtime}

[datasets.d8]
train = "{DATA}:train"
n = 4

[[models]]
path = "{MODEL}"
"""
    p = tmp / "sweep.toml"
    p.write_text(text)
    return p


def test_the_base_config_is_valid(tmp_path):
    cfg = load_config(_config(tmp_path))
    assert cfg.seed == 3 and cfg.threads == 1


@pytest.mark.parametrize(
    "where, line, match",
    [
        ("top", "seed = -1", "seed: expected an integer from 0"),
        ("top", "seed = 1180591620717411303424", "seed: expected an integer from 0"),  # 2**70
        ("top", "noise_std = nan", "noise_std: expected a finite number"),
        ("top", "noise_std = inf", "noise_std: expected a finite number"),
        ("top", "noise_std = -0.1", "noise_std: expected a finite number"),
        ("solver", "rho = nan", "solver.rho: expected a finite number > 0"),
        ("solver", "rho = 0", "solver.rho: expected a finite number > 0"),
        ("solver", "tol = inf", "solver.tol: expected 'auto' or a finite number >= 0"),
        ("solver", "tol = -1", "solver.tol"),
        ("solver", "tau = nan", "solver.tau"),
        ("solver", "blowup = nan", "solver.blowup"),
        ("solver", "clip = [1, 0]", "solver.clip: expected lo < hi"),
        ("solver", "clip = [0, nan]", "solver.clip: expected lo < hi"),
        ("solver", "clip = [0, true]", "solver.clip"),
        ("solver", 'mask_init = "bernoulli:2"', "solver.mask_init"),
        ("solver", 'mask_init = "zeros"', "solver.mask_init"),
        ("runtime", "threads = 100000", "runtime.threads: expected 0"),
        ("runtime", "threads = -2", "runtime.threads: expected 0"),
    ],
)
def test_values_every_task_would_fail_on_are_refused_up_front(tmp_path, where, line, match):
    cfg = _config(tmp_path, **{where: line})
    db = tmp_path / "never.sqlite"
    with pytest.raises(ConfigError, match=match):
        run_sweep(cfg, db, progress=False)
    assert not db.exists()


def test_the_largest_seed_is_accepted(tmp_path):
    assert load_config(_config(tmp_path, top=f"seed = {2**63 - 1}")).seed == 2**63 - 1


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path):
    p = _config(tmp_path)
    p.write_bytes(p.read_bytes().replace(b"seed = 3", b"# caf\xe9\nseed = 3"))
    with pytest.raises(ConfigError, match="expected a UTF-8 text file .*0xe9"):
        load_config(p)


@pytest.mark.parametrize(
    "values, match",
    [
        (np.full((4, 8, 8), 2, np.uint8), "only the values 0 .* and 1"),
        (np.ones((3, 8, 8), np.uint8), "expected shape"),  # 3 masks for 4 images
    ],
)
def test_a_mask_init_file_that_cannot_fit_is_refused(tmp_path, values, match):
    np.savez(tmp_path / "h0.npz", h0=values)
    cfg = _config(tmp_path, solver='mask_init = "file:h0.npz"')  # relative to the config
    with pytest.raises(ConfigError, match=f"solver.mask_init .*{match}"):
        load_config(cfg)


def test_a_relative_mask_init_file_is_resolved_against_the_config(tmp_path):
    h0 = (np.arange(4 * 64).reshape(4, 8, 8) % 3 == 0).astype(np.uint8)
    np.savez(tmp_path / "h0.npz", h0=h0)
    cfg = load_config(_config(tmp_path, solver='mask_init = "file:h0.npz:h0"'))
    assert cfg.solver["mask_init"] == f"file:{(tmp_path / 'h0.npz').resolve()}:h0"
