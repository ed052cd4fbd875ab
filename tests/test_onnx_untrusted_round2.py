"""Untrusted ONNX models, second round (issue 33): what onnxruntime builds at session
creation (inlined functions, initializers) is counted before it sees the model and the
creation itself is bounded in time and memory; threads and other options are checked; what a
few bytes make (constant-shaped tensors, text) is bounded; the layer chain equals the model
or is refused (NaN Clip bounds, NaN/Inf kernels); a forced layout cannot contradict the graph;
paths longer than NAME_MAX are errors; onnxruntime writes nothing under $HOME.

Bombs use small depths and counts with the limit lowered, so each test takes seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from _graphs import graph_model, ort_run
from _onnx_fuzz import _conv, _function_bomb, _many_initializers, _model
from onnx import TensorProto, helper, numpy_helper

from refinv import OnnxModel
from refinv.cli import main
from refinv.errors import (
    ConfigError,
    OnnxModelError,
    RefinvError,
    ResourceLimitError,
    UnsupportedGraphError,
)
from refinv.onnx import read_chain
from refinv.onnx import session as session_mod
from refinv.onnx._bounds import initializer_count, inlined_node_count
from refinv.onnx.limits import max_threads

ROOT = Path(__file__).resolve().parents[1]


def _save(m, folder, name="m.onnx"):
    p = Path(folder) / name
    p.write_bytes(m.SerializeToString())
    return p


@pytest.fixture(autouse=True)
def _fresh_trials():
    """Every test tries its sessions again (the process remembers completed creations)."""
    session_mod._TRIED.clear()
    yield
    session_mod._TRIED.clear()


# ------------------------------------------------------------------ inlined functions
def test_inlined_node_count_is_exact_and_linear():
    for depth in (0, 1, 5, 30):
        m = _function_bomb(depth)
        assert len(m.functions) == depth + 1
        assert inlined_node_count(m, "m") == 2**depth  # the Relu, 2**depth times
    # a function that calls itself (through another) is refused, not followed
    m = _function_bomb(2)
    m.functions[0].node[0].op_type, m.functions[0].node[0].domain = "f2", "local"
    with pytest.raises(OnnxModelError, match="calls itself"):
        inlined_node_count(m, "m")


def test_function_inlining_bomb_counted_against_the_node_cap(tmp_path, monkeypatch):
    p = _save(_function_bomb(8), tmp_path)  # 17 nodes in the file, 256 once inlined
    monkeypatch.setenv("REFINV_MAX_NODES", "200")
    t0 = time.perf_counter()
    for load in (lambda: OnnxModel(p), lambda: read_chain(p)):
        with pytest.raises(ResourceLimitError, match="256 nodes once its model-local functions"):
            load()
    assert time.perf_counter() - t0 < 5
    monkeypatch.setenv("REFINV_MAX_NODES", "300")
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    assert np.array_equal(OnnxModel(p)(x), np.maximum(x, 0))  # within the cap: the model runs


def test_initializer_count_capped(tmp_path, monkeypatch):
    p = _save(_many_initializers(300), tmp_path)
    assert initializer_count(onnx.load(p)) == 300
    monkeypatch.setenv("REFINV_MAX_INITIALIZERS", "200")
    for load in (lambda: OnnxModel(p), lambda: read_chain(p)):
        with pytest.raises(
            ResourceLimitError, match="300 initializers, more than the limit of 200"
        ):
            load()
    monkeypatch.setenv("REFINV_MAX_INITIALIZERS", "300")
    assert OnnxModel(p).sample_shape == (4,)


# ------------------------------------------------------------------ session creation
def test_session_creation_is_stopped_at_the_time_limit(tmp_path, monkeypatch):
    """With the caps off, 2 x 10^4 initializers take ~2 s to create a session (more on a loaded
    machine); a time limit of 0.3 s stops the creation (a killed child process)."""
    monkeypatch.setenv("REFINV_MAX_INITIALIZERS", "0")
    p = _save(_many_initializers(20_000), tmp_path)
    children = _children()
    t0 = time.perf_counter()
    with pytest.raises(ResourceLimitError, match="creating the onnxruntime session took longer"):
        OnnxModel(p, time_limit=0.3)
    assert time.perf_counter() - t0 < 0.3 + 3  # + parsing and the checks on a loaded machine
    assert _children() == children  # the child was killed and reaped
    monkeypatch.setenv("REFINV_ORT_TIME_LIMIT", "0.3")
    with pytest.raises(ResourceLimitError, match="took longer than the time limit of 0.3 s"):
        read_chain(p)


def _children() -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
                .read_text().split()}  # fmt: skip
    except OSError:
        return set()


def test_a_crash_in_session_creation_kills_the_child_not_the_caller(tmp_path, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the trial child is Linux-only")
    parent = os.getpid()
    real = session_mod._create

    def crashing(*a, **k):
        if os.getpid() != parent:  # in the trial child: what a segfault in onnxruntime does
            os.kill(os.getpid(), 11)
        return real(*a, **k)

    monkeypatch.setattr(session_mod, "_create", crashing)
    p = _save(_model([helper.make_node("Relu", ["x"], ["y"])], [], ["N", 4], ["N", 4]), tmp_path)
    with pytest.raises(OnnxModelError, match="onnxruntime died \\(signal 11\\)"):
        OnnxModel(p)


def test_session_creation_runs_under_an_address_space_cap(tmp_path, monkeypatch):
    """The trial child's address space is capped near the memory ceiling: a creation that
    allocates far beyond it (here 64 GiB, simulated) fails there and is a ResourceLimitError;
    the caller never allocates it."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the trial child is Linux-only")
    parent = os.getpid()
    real = session_mod._create

    def greedy(*a, **k):
        if os.getpid() != parent:
            bytearray(64 * 2**30)  # MemoryError under the cap (never touched: no RSS)
        return real(*a, **k)

    monkeypatch.setattr(session_mod, "_create", greedy)
    p = _save(_model([helper.make_node("Relu", ["x"], ["y"])], [], ["N", 4], ["N", 4]), tmp_path)
    with pytest.raises(ResourceLimitError, match="needs more memory than the ceiling"):
        OnnxModel(p, memory_limit=2**28)


def test_a_completed_creation_is_not_tried_again(tmp_path, monkeypatch):
    p = _save(_model([helper.make_node("Relu", ["x"], ["y"])], [], ["N", 4], ["N", 4]), tmp_path)
    forks = []
    real = os.fork
    monkeypatch.setattr(os, "fork", lambda: (forks.append(1), real())[1])
    OnnxModel(p)
    OnnxModel(p)
    assert len(forks) == (1 if sys.platform.startswith("linux") else 0)


# ------------------------------------------------------------------ options
@pytest.mark.parametrize(
    "kw, match",
    [
        ({"intra_op_threads": 10**6}, "intra_op_threads: expected 0 .* to [0-9]+"),
        ({"intra_op_threads": -1}, "intra_op_threads"),
        ({"intra_op_threads": "2"}, "intra_op_threads: expected None or an integer"),
        ({"intra_op_threads": 2.5}, "intra_op_threads"),
        ({"intra_op_threads": True}, "intra_op_threads"),
        ({"batch_size": "3"}, "batch_size: expected an integer >= 1, got '3'"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"provider": None}, "provider: expected 'cpu' or 'cuda', got None"),
        ({"provider": 3}, "provider"),
        ({"device_id": "0"}, "device_id"),
        ({"allow_control_flow": "no"}, "allow_control_flow: expected True or False"),
        ({"time_limit": "soon"}, "time_limit"),
        ({"memory_limit": [1]}, "memory_limit"),
    ],
)
def test_wrong_options_are_config_errors_before_any_work(kw, match):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=match):
        OnnxModel(ROOT / "models" / "onnx" / "digits8_lrelu_6x320.onnx", **kw)
    assert time.perf_counter() - t0 < 5


def test_the_thread_bound_is_the_clis():
    from refinv.cli._checks import max_threads as cli_bound

    assert max_threads() == cli_bound() >= 4
    f = OnnxModel(ROOT / "models" / "onnx" / "digits8_lrelu_6x320.onnx", intra_op_threads=2)
    assert f.session.get_session_options().intra_op_num_threads == 2


# ------------------------------------------------------------------ what the bytes make
def _constant_of_shape(n: int) -> onnx.ModelProto:
    z = numpy_helper.from_array(np.array(0, np.float32), "zero")
    nodes = [
        helper.make_node("ConstantOfShape", ["shp"], ["big"],
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["zz"]),
        helper.make_node("Add", ["x", "zz"], ["y"]),
    ]  # fmt: skip
    return _model(nodes, [numpy_helper.from_array(np.array([n], np.int64), "shp"), z], ["N", 4],
                  ["N", 4])  # fmt: skip


def _expand(n: int) -> onnx.ModelProto:
    shp = numpy_helper.from_array(np.array([n, 1, 4], np.int64), "shp")
    z = numpy_helper.from_array(np.array(0, np.float32), "zero")
    nodes = [
        helper.make_node("Expand", ["x", "shp"], ["big"]),
        helper.make_node("ReduceMax", ["big"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["zz"]),
        helper.make_node("Add", ["x", "zz"], ["y"]),
    ]  # fmt: skip
    return _model(nodes, [shp, z], ["N", 4], ["N", 4])


@pytest.mark.parametrize("build", [_constant_of_shape, _expand])
def test_constant_shaped_bombs_are_refused_before_anything_is_allocated(tmp_path, build):
    """A 2^24-element (64 MiB) tensor made of a few hundred bytes, with a 64 MiB ceiling: more
    than a quarter of it, refused from the graph's shapes; the peak RSS of the refusal (in a
    fresh process) stays far below the tensor."""
    p = _save(build(2**24), tmp_path)
    assert p.stat().st_size < 400
    code = f"""
import json, sys
from refinv import OnnxModel
from refinv.onnx import read_chain
from refinv.errors import ResourceLimitError
def hwm():
    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
out = {{}}
for name, load in (("model", lambda: OnnxModel({str(p)!r}, memory_limit=2**26)),
                   ("chain", lambda: read_chain({str(p)!r}))):
    open('/proc/self/clear_refs', 'w').write('5')
    base = hwm()
    try:
        load()
        out[name] = "loaded"
    except ResourceLimitError as exc:
        out[name] = str(exc)
    out[name + "_kb"] = hwm() - base
print(json.dumps(out))
"""
    env = {**os.environ, "REFINV_ORT_MEMORY_LIMIT": str(2**26), "OPENBLAS_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300, cwd=tmp_path)  # fmt: skip
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for name in ("model", "chain"):
        assert "refused before running" in out[name], out
        assert out[f"{name}_kb"] < 32 * 1024, out  # well below the 64 MiB tensor


def test_tensors_within_the_ceiling_still_run(tmp_path):
    p = _save(_constant_of_shape(2**10), tmp_path)
    x = np.ones((2, 4), np.float32)
    assert np.array_equal(OnnxModel(p)(x), x)


@pytest.mark.parametrize("where", ["doc_string", "metadata", "string_tensor"])
def test_text_bulk_is_capped(tmp_path, monkeypatch, where):
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [], ["N", 4], ["N", 4])
    n = 2**20
    if where == "doc_string":
        m.graph.node[0].doc_string = "d" * n
    elif where == "metadata":
        helper.set_model_props(m, {"k": "v" * n})
    else:
        m.graph.initializer.append(helper.make_tensor("s", TensorProto.STRING, [1], [b"s" * n]))
    p = _save(m, tmp_path)
    monkeypatch.setenv("REFINV_MAX_TEXT_BYTES", str(n // 2))
    for load in (lambda: OnnxModel(p), lambda: read_chain(p)):
        with pytest.raises(ResourceLimitError, match="bytes of text .*REFINV_MAX_TEXT_BYTES"):
            load()
    monkeypatch.setenv("REFINV_MAX_TEXT_BYTES", str(2 * n))
    if where != "string_tensor":  # a string initializer is no input of this graph: fine
        assert OnnxModel(p).sample_shape == (4,)


# ------------------------------------------------------------------ the chain is the model
def _clip_model(lo, hi, as_inputs=True):
    w = np.random.default_rng(0).standard_normal((6, 6)).astype(np.float32)
    if as_inputs:
        clip = helper.make_node("Clip", ["g", "lo", "hi"], ["y"])
        inits = {"w": w, "lo": np.array(lo, np.float32), "hi": np.array(hi, np.float32)}
        return graph_model([helper.make_node("Gemm", ["x", "w"], ["g"], transB=1), clip],
                           inits, [6], [6])  # fmt: skip
    clip = helper.make_node("Clip", ["g"], ["y"], min=lo, max=hi)  # attributes: opset < 11
    gemm = helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1)
    return graph_model([gemm, clip], {"w": w, "b": np.zeros(6, np.float32)}, [6], [6], opset=10)


@pytest.mark.parametrize("lo, hi", [(np.nan, 1.0), (0.0, np.nan), (np.nan, np.nan)])
@pytest.mark.parametrize("as_inputs", [True, False])
def test_a_nan_clip_bound_is_refused_by_the_chain(lo, hi, as_inputs):
    m = _clip_model(lo, hi, as_inputs)
    if not as_inputs:  # Clip-6 attributes: onnxruntime refuses the model itself (min <= max)
        for load in (OnnxModel, read_chain):
            with pytest.raises(OnnxModelError, match="min_ <= max_"):
                load(m)
        return
    with pytest.raises(UnsupportedGraphError, match="NaN bound"):
        read_chain(m)
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    assert np.isfinite(ort_run(m, x)).all()  # onnxruntime ignores the NaN bound input
    assert np.allclose(OnnxModel(m)(x), ort_run(m, x))  # the black box is the model


def test_a_clip_with_infinite_bounds_still_reads():
    m = _clip_model(-np.inf, 0.5)
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    assert np.allclose(read_chain(m).forward(x.astype(np.float64)), ort_run(m, x), atol=1e-5)


@pytest.mark.parametrize("kernel", ["k", "kt"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_nan_or_inf_kernel_is_refused_by_the_chain(kernel, bad):
    m = _conv()
    t = next(t for t in m.graph.initializer if t.name == kernel)
    k = numpy_helper.to_array(t).copy()
    k[0, 0, 0, 0] = bad  # a corner tap: multiplied by the zero padding at the border
    t.CopyFrom(numpy_helper.from_array(k, kernel))
    with pytest.raises(UnsupportedGraphError, match="NaN/Inf value"):
        read_chain(m)


def test_a_finite_conv_chain_still_equals_onnxruntime():
    m = _conv()
    x = np.random.default_rng(2).random((3, 1, 6, 6)).astype(np.float32)
    assert np.allclose(read_chain(m).forward(x.astype(np.float64)), ort_run(m, x), atol=1e-5)


# ------------------------------------------------------------------ forced layouts
def _identity(shape):
    return _model([helper.make_node("Identity", ["x"], ["y"])], [], ["N", *shape], ["N", *shape])


@pytest.mark.parametrize(
    "declared, forced",
    [((1, 25, 25), "NHWC"), ((25, 25, 1), "NCHW"), ((3, 8, 6), "NHWC"), ((8, 6, 3), "NCHW")],
)
def test_a_forced_layout_contradicting_the_graph_is_an_error(declared, forced, tmp_path, capsys):
    p = _save(_identity(declared), tmp_path)
    for load in (OnnxModel, read_chain):
        with pytest.raises(ConfigError, match=f"layout='{forced}' contradicts the graph"):
            load(p, layout=forced)
    np.savez(tmp_path / "d.npz", train=np.random.default_rng(0).random((2, 1, 25, 25)))
    rc = main(["recover", str(p), f"{tmp_path / 'd.npz'}:train", "--layout", forced, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "contradicts the graph" in err and "Traceback" not in err


@pytest.mark.parametrize("declared, forced", [((1, 25, 25), "NCHW"), ((25, 25, 1), "NHWC"),
                                              ((3, 3, 3), "NHWC"), ((3, 3, 3), "NCHW")])  # fmt: skip
def test_a_forced_layout_agreeing_or_deciding_an_ambiguous_graph_is_taken(declared, forced):
    f = OnnxModel(_identity(declared), layout=forced)
    assert f.layout == forced and f.layout_source == "given (layout=)"
    x = np.random.default_rng(0).random((2, *f.sample_shape)).astype(np.float32)
    assert np.array_equal(f(x), x)


# ------------------------------------------------------------------ NAME_MAX
LONG = "m" * 300


def test_model_and_external_paths_longer_than_name_max(tmp_path, capsys):
    with pytest.raises(RefinvError, match="too long"):
        OnnxModel(tmp_path / f"{LONG}.onnx")
    with pytest.raises(RefinvError, match="too long"):
        read_chain(tmp_path / f"{LONG}.onnx")
    from _hostile import external_model

    m = external_model("initializer", f"{LONG}.bin")
    p = _save(m, tmp_path)
    with pytest.raises(RefinvError, match="too long"):
        OnnxModel(p)
    assert main(["inspect", str(tmp_path / f"{LONG}.onnx")]) == 2
    err = capsys.readouterr().err
    assert "too long" in err and "Traceback" not in err


# ------------------------------------------------------------------ telemetry
_TELEMETRY_RUN = """
import numpy as np
from refinv import OnnxModel
f = OnnxModel({path!r})
f(np.zeros((1, *f.sample_shape), f.dtype))
"""


@pytest.mark.parametrize("telemetry", ["default", "on"])
def test_onnxruntime_writes_nothing_under_home(tmp_path, telemetry):
    """onnxruntime 1.32 writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,
    onnxruntime.db} when imported unless ORT_DISABLE_TELEMETRY=1, which refinv sets; with
    REFINV_ORT_TELEMETRY=1 (the control) the files appear, so this test can fail."""
    home = tmp_path / "home"
    home.mkdir()
    # CI=true alone keeps onnxruntime 1.32 from writing (measured: the control then finds no
    # file), so the child runs without it, as a user's shell would
    env = {k: v for k, v in os.environ.items()
           if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", "REFINV_ORT_TELEMETRY",
                        "CI")}  # fmt: skip
    env["HOME"] = str(home)
    if telemetry == "on":
        env["REFINV_ORT_TELEMETRY"] = "1"
    model = ROOT / "models" / "onnx" / "digits8_lrelu_6x320.onnx"
    r = subprocess.run([sys.executable, "-c", _TELEMETRY_RUN.format(path=str(model))], env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    written = sorted(str(q.relative_to(home)) for q in home.rglob("*") if q.is_file())
    if telemetry == "default":
        assert written == []
    else:
        import onnxruntime

        if onnxruntime.__version__.split(".")[:2] != ["1", "32"] or not sys.platform.startswith(
            "linux"
        ):
            pytest.skip("the control was measured with onnxruntime 1.32 on Linux")
        assert ".cache/Microsoft/DeveloperTools/.onnxruntime/deviceid" in written
