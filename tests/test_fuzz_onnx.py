"""Fuzzing the ONNX boundary: every hostile file gives a RefinvError or a correct result,
within a time limit, and nothing outside the model's folder is read.

The cases (tests/_onnx_fuzz.py) are structural mutations of small models, external-data
tricks, subgraphs, resource bombs and non-ONNX files; hypothesis draws them. The short run
here takes a few seconds; ``bench/fuzz_onnx.py`` is the long run (>= 1,000 cases, worker
processes, hang detection), whose last result is in docs/security.md.
"""

from __future__ import annotations

import random
import time

import pytest
from _onnx_fuzz import ROUND2_KINDS, SecretWatch, make_case, make_kind, run_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CASE_SECONDS = 20.0  # a case over this is a hang (the time limit of one call is 2 s)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rnd=st.randoms(use_true_random=False), n=st.integers(0, 10**9))
def test_hostile_models_give_refinv_error_or_correct_result(sandbox, monkeypatch, rnd, n):
    monkeypatch.setenv("REFINV_ORT_MEMORY_LIMIT", str(256 * 2**20))
    case = make_case(rnd)
    root = sandbox / f"c{n}_{time.perf_counter_ns()}"
    root.mkdir()
    monkeypatch.chdir(root)
    watch = SecretWatch(root)
    try:
        t = time.perf_counter()
        res = run_case(case, root, time_limit=2.0, watch=watch)
        elapsed = time.perf_counter() - t
    finally:
        watch.close()
    assert res["outcome"] in ("refinv_error", "correct"), (case.describe(), res)
    assert elapsed < CASE_SECONDS, (case.describe(), elapsed)


@pytest.mark.parametrize("kind", ROUND2_KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_second_round_kind_gives_refinv_error_or_correct_result(sandbox, monkeypatch, kind,
                                                                     seed):  # fmt: skip
    """Function-inlining and initializer-count bombs, text bulk, NaN Clip bounds and NaN/Inf
    kernels, forced layouts: each drawn on its own (a random draw of 40 may miss some)."""
    monkeypatch.setenv("REFINV_ORT_MEMORY_LIMIT", str(256 * 2**20))
    case = make_kind(kind, random.Random(seed))
    root = sandbox / f"k{kind.replace(':', '_')}{seed}_{time.perf_counter_ns()}"
    root.mkdir()
    monkeypatch.chdir(root)
    t = time.perf_counter()
    res = run_case(case, root, time_limit=2.0)
    assert res["outcome"] in ("refinv_error", "correct"), (case.describe(), res)
    assert time.perf_counter() - t < CASE_SECONDS, (case.describe(), res)


def test_the_watch_sees_a_read_of_the_secret(tmp_path):
    """The leak detector can fail: a plain read of the secret file is reported."""
    (tmp_path / "secret.bin").write_bytes(b"x")
    w = SecretWatch(tmp_path)
    if not w.active:
        pytest.skip("no inotify on this system")
    try:
        (tmp_path / "secret.bin").read_bytes()
        assert "secret.bin" in w.events()
        assert w.events() == []
    finally:
        w.close()
