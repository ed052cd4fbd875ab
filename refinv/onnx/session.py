"""The onnxruntime boundary: sessions, their memory ceiling, the watchdog, the providers.

:func:`open_session` builds an onnxruntime session from an already validated, inline model
(ONNX format forced, constant folding off, a CPU arena capped at the memory limit);
:func:`run_session` runs it under a wall-time limit (a daemon watchdog sets
``RunOptions.terminate`` on calls past their deadline) and turns every onnxruntime failure
into a :class:`~refinv.errors.RefinvError`. :func:`execution_providers` picks the CPU or
CUDA provider, and :func:`cuda_provider_missing` says why CUDA is not there and how to fix it.

Telemetry: onnxruntime's telemetry events are disabled when refinv opens its first session;
set ``REFINV_ORT_TELEMETRY=1`` to leave them on.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import select
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

from ..backend import (
    GPU_DEFAULT,
    NativeStderr,
    cuda_libraries_text,
    gpu_route_for,
    installed_onnxruntime_gpu_cuda_major,
)
from ..errors import BackendError, ConfigError, OnnxModelError, ResourceLimitError
from .limits import check_threads

__all__ = [
    "open_session",
    "run_session",
    "session_options",
    "execution_providers",
    "cuda_provider_missing",
    "open_cuda_session",
    "OrtStats",
    "GPU_INSTALL",
]

log = logging.getLogger("refinv.onnx")


# ------------------------------------------------------ onnxruntime boundary
_SESSION_LOCK = threading.Lock()
_TELEMETRY_DONE = False


def _telemetry(ort: Any) -> None:
    """Disable onnxruntime telemetry once, unless ``REFINV_ORT_TELEMETRY=1``."""
    global _TELEMETRY_DONE
    if _TELEMETRY_DONE:
        return
    _TELEMETRY_DONE = True
    try:
        if os.environ.get("REFINV_ORT_TELEMETRY", "") == "1":
            ort.enable_telemetry_events()
        else:
            ort.disable_telemetry_events()
    except Exception:  # older or minimal builds without the switch
        log.debug("onnxruntime has no telemetry switch")


def open_session(
    model_bytes: bytes,
    so: Any,
    providers: list[Any],
    *,
    label: str,
    memory_limit: float,
    time_limit: float = 0.0,
) -> Any:
    """An onnxruntime session for an already validated, inline model.

    Forces the ONNX format (never onnxruntime's own format), disables constant
    folding (it evaluates constant subgraphs at creation, outside every limit)
    and, with ``memory_limit > 0``, gives the session its own CPU arena capped
    at ``memory_limit`` bytes (onnxruntime's environment allocator: registered
    anew right before the session is created, under a lock).

    Session creation cannot be interrupted inside onnxruntime, so on Linux it is first done
    in a forked child process (:func:`_trial`, CPU provider) that is killed past
    ``time_limit`` seconds and whose address space is capped near ``memory_limit``: a model
    whose creation runs out of either is a :class:`~refinv.errors.ResourceLimitError`, and
    an onnxruntime crash while creating it kills the child, not this process. The session
    itself is then created here (the same work the child finished). A model whose creation
    already completed in this process (same bytes and options) is not tried again.
    """
    import onnxruntime as ort

    so.add_session_config_entry("session.load_model_format", "ONNX")
    if memory_limit > 0:
        so.add_session_config_entry("session.use_env_allocators", "1")
    _trial(model_bytes, so, label=label, time_limit=time_limit, memory_limit=memory_limit)
    with _SESSION_LOCK:
        return _create(ort, model_bytes, so, providers, label, memory_limit)


def _create(
    ort: Any, model_bytes: bytes, so: Any, providers: list, label: str, memory_limit: float
):
    _telemetry(ort)
    if memory_limit > 0:
        mem = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        # max_mem, extend strategy 1 (kSameAsRequested: no power-of-two overshoot)
        ort.create_and_register_allocator(mem, ort.OrtArenaCfg(int(memory_limit), 1, -1, -1))
    try:
        return ort.InferenceSession(
            model_bytes,
            sess_options=so,
            providers=providers,
            disabled_optimizers=["ConstantFolding"],
        )
    except Exception as exc:
        raise OnnxModelError(
            f"{label}: onnxruntime could not load the model: {_ort_message(exc)}"
        ) from exc


# sha256 of (options, model bytes) whose session creation completed in a child (this process)
_TRIED: set[str] = set()
_MEMORY_WORDS = ("bad_alloc", "Failed to allocate", "Available memory", "out of memory",
                 "std::bad_array_new_length", "Cannot allocate memory", "MemoryError")  # fmt: skip


def _trial(model_bytes: bytes, so: Any, *, label: str, time_limit: float, memory_limit: float):
    """Create the session once in a forked child, bounded in time and memory (Linux)."""
    import hashlib
    import signal
    import sys

    if not sys.platform.startswith("linux") or (time_limit <= 0 and memory_limit <= 0):
        return  # fork without exec is unsafe elsewhere (macOS frameworks); no bound asked
    opts = f"{so.graph_optimization_level}|{memory_limit}|"
    key = hashlib.sha256(opts.encode() + model_bytes).hexdigest()
    if key in _TRIED:
        return
    import onnxruntime as ort

    r, w = os.pipe()
    with _SESSION_LOCK, warnings.catch_warnings():  # no thread of ours is creating a session
        # Python >= 3.12 warns on fork() in a threaded process: the child only creates the
        # session (no lock of ours taken) and exits with os._exit
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: create, report, exit (no Python cleanup, no atexit)
        try:
            os.close(r)
            _cap_address_space(memory_limit, len(model_bytes), so.intra_op_num_threads)
            _create(ort, model_bytes, so, ["CPUExecutionProvider"], label, memory_limit)
            os.write(w, b"ok")
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(w, f"err:{type(exc).__name__}: {exc}"[:60000].encode(errors="replace"))
        finally:
            os._exit(0)
    os.close(w)
    t0 = time.monotonic()
    chunks: list[bytes] = []
    try:
        while True:
            left = time_limit - (time.monotonic() - t0) if time_limit > 0 else None
            if left is not None and left <= 0:
                raise ResourceLimitError(
                    f"{label}: creating the onnxruntime session took longer than the time limit "
                    f"of {time_limit:g} s and was stopped (onnxruntime builds the graph then: "
                    "inlined functions, initializers); raise it with OnnxModel(..., "
                    "time_limit=...) or REFINV_ORT_TIME_LIMIT (seconds, 0: no limit)"
                )
            ready, _, _ = select.select([r], [], [], min(left, 1.0) if left is not None else 1.0)
            if ready:
                data = os.read(r, 65536)
                if not data:
                    break
                chunks.append(data)
    except BaseException:  # over time, or Ctrl-C: the child goes too
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(r)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # SIGCHLD ignored by the application: reaped already
            status = 0
    msg = b"".join(chunks).decode(errors="replace")
    if msg == "ok":
        _TRIED.add(key)
        return
    if msg.startswith("err:"):
        text = msg[4:]
        if any(wd in text for wd in _MEMORY_WORDS):
            raise ResourceLimitError(
                f"{label}: creating the onnxruntime session needs more memory than the ceiling "
                f"of {int(memory_limit)} bytes allows ({text[:300]}); raise it with "
                "OnnxModel(..., memory_limit=...) or REFINV_ORT_MEMORY_LIMIT (bytes, 0: none)"
            )
        kind, _, text = text.partition(": ")
        if text.startswith(f"{label}: "):
            text = text[len(label) + 2 :]
        raise OnnxModelError(f"{label}: {text}" if kind == "OnnxModelError" else f"{label}: "
                             f"creating the session failed in the trial child: {kind}: {text}")  # fmt: skip
    how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {status}"
    raise OnnxModelError(
        f"{label}: onnxruntime died ({how}) while creating the session in a child process (a "
        "crash inside onnxruntime, or memory beyond the ceiling); the model is refused"
    )


def _cap_address_space(memory_limit: float, model_bytes: int, threads: int) -> None:
    """In the trial child: an address-space limit of what it has now plus the memory ceiling,
    two copies of the model, and room for onnxruntime's threads (stack and malloc arena each)."""
    if memory_limit <= 0:
        return
    import resource

    try:
        with open("/proc/self/status") as fh:
            vm = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):  # no /proc: the time limit alone bounds it
        return
    cores = os.cpu_count() or 1
    room = vm + int(memory_limit) + 2 * model_bytes + 2**30 + 80 * 2**20 * max(threads, cores)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = room if hard == resource.RLIM_INFINITY else min(room, hard)
    if soft == resource.RLIM_INFINITY or cap < soft:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _ort_message(exc: BaseException) -> str:
    msg = str(exc).strip()
    m = re.search(r"running (\S+) node\. Name:'([^']*)' Status Message: (.*)", msg, re.S)
    if m:
        return f"node {m.group(2) or '(unnamed)'} (op {m.group(1)}): {m.group(3).strip()}"
    return msg


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


class _Watchdog:
    """One daemon thread that sets ``RunOptions.terminate`` on calls past their deadline.

    Registering a call is a dict insertion (atomic under the GIL, no lock on the
    hot path); the thread looks at the running calls every ``interval`` seconds
    (at most a quarter of the shortest limit seen, at most 1 s).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, tuple[float, Any]] = {}
        self._fired: set[int] = set()
        self._ids = itertools.count(1)
        self._interval = 1.0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, run_options: Any, seconds: float) -> int:
        tok = next(self._ids)
        self._active[tok] = (time.monotonic() + seconds, run_options)
        if self._thread is None or seconds < 4 * self._interval:
            with self._lock:
                self._interval = min(self._interval, max(seconds / 4, 0.005))
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._loop, name="refinv-ort-watchdog", daemon=True
                    )
                    self._thread.start()
            self._wake.set()
        return tok

    def stop(self, tok: int) -> bool:
        """Forget a call; True if it was stopped for running too long."""
        self._active.pop(tok, None)
        if tok in self._fired:
            self._fired.discard(tok)
            return True
        return False

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            now = time.monotonic()
            for tok, (deadline, ro) in list(self._active.items()):
                if deadline <= now and tok in self._active:
                    self._fired.add(tok)
                    ro.terminate = True


_WATCHDOG = _Watchdog()


def run_session(
    session: Any,
    outputs: list[str] | None,
    feeds: dict[str, Any] | None,
    *,
    label: str,
    time_limit: float,
    memory_limit: float,
    iobinding: Any = None,
) -> Any:
    """``session.run`` with a wall-time limit; every failure becomes a RefinvError."""
    ro = _ort().RunOptions()
    ro.log_severity_level = 4  # the error comes back in the exception; nothing on stderr
    tok = _WATCHDOG.start(ro, time_limit) if time_limit > 0 else None
    try:
        if iobinding is not None:
            session.run_with_iobinding(iobinding, ro)
            return None
        # the C++ session's run: the Python wrapper's per-call input checks cost ~10% at batch 1
        if outputs is None:
            return session.run(None, feeds, ro)
        return getattr(session, "_sess", session).run(outputs, feeds, ro)
    except Exception as exc:
        fired = tok is not None and _WATCHDOG.stop(tok)
        tok = None
        if fired:
            raise ResourceLimitError(
                f"{label}: one onnxruntime call ran longer than the time limit of "
                f"{time_limit:g} s and was stopped; raise it with OnnxModel(..., time_limit=...) "
                "or REFINV_ORT_TIME_LIMIT (seconds, 0: no limit)"
            ) from exc
        msg = _ort_message(exc)
        if "Available memory of" in msg or "Failed to allocate memory" in msg:
            raise ResourceLimitError(
                f"{label}: the model needs more memory than the ceiling of {int(memory_limit)} "
                f"bytes ({msg}); raise it with OnnxModel(..., memory_limit=...) or "
                "REFINV_ORT_MEMORY_LIMIT (bytes, 0: no limit), or use a smaller batch_size"
            ) from exc
        shapes = {k: tuple(getattr(v, "shape", ())) for k, v in (feeds or {}).items()}
        raise OnnxModelError(
            f"{label}: onnxruntime failed on input {shapes or '(bound buffers)'}: {msg}"
        ) from exc
    finally:
        if tok is not None:
            _WATCHDOG.stop(tok)


@dataclass
class OrtStats:
    """How much work went to onnxruntime (informational; reset with :meth:`reset`)."""

    calls: int = 0
    samples: int = 0
    seconds: float = 0.0

    def reset(self) -> None:
        self.calls = 0
        self.samples = 0
        self.seconds = 0.0


# The one command that swaps the CPU runtime for the GPU one, for the CUDA major of the gpu extra
# (docs/gpu.md, refinv.backend.GPU_ROUTES); cuda_provider_missing gives the one of the installed
# onnxruntime-gpu's CUDA major.
GPU_INSTALL = GPU_DEFAULT.install


def _gpu_fix() -> str:
    """The install command for the CUDA major of the installed onnxruntime-gpu (the gpu
    extra's when none is installed or its major is unknown)."""
    return gpu_route_for(installed_onnxruntime_gpu_cuda_major()).install


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cuda_provider_missing(available: list[str]) -> str:
    """Why ``provider='cuda'`` cannot work with this onnxruntime, and the exact fix.

    ``onnxruntime`` (CPU) and ``onnxruntime-gpu`` are two distributions that write
    one ``onnxruntime/`` package folder: with both installed, whichever was
    installed last owns the shared files, and typically only the CPU providers load.
    """
    cpu, gpu = _dist_version("onnxruntime"), _dist_version("onnxruntime-gpu")
    fix = _gpu_fix()
    if cpu and gpu:
        return (
            f"provider='cuda': both onnxruntime {cpu} (CPU) and onnxruntime-gpu {gpu} are "
            "installed; they share one 'onnxruntime' package folder and the CPU build's files "
            f"are the ones loaded (providers {available}). Fix: {fix}"
        )
    if gpu:
        return (
            f"provider='cuda': onnxruntime-gpu {gpu} is installed but reports no "
            f"CUDAExecutionProvider (providers {available}); reinstall it: {fix}"
        )
    return (
        "provider='cuda' needs onnxruntime-gpu instead of the CPU onnxruntime"
        f"{f' {cpu}' if cpu else ''} (providers {available}). Fix: {fix}"
    )


def open_cuda_session(
    model_bytes: bytes,
    so: Any,
    providers: list[Any],
    *,
    label: str,
    memory_limit: float,
    time_limit: float = 0.0,
) -> Any:
    """:func:`open_session` on the CUDA provider.

    First ``onnxruntime.preload_dlls()`` (onnxruntime >= 1.21): it loads the CUDA and cuDNN
    libraries of the ``nvidia-*`` pip packages that ``onnxruntime-gpu[cuda,cudnn]`` installs.
    onnxruntime's own log lines (in colour, straight to the terminal from C++) are kept off
    stderr (:class:`refinv.backend.NativeStderr`) and passed to the ``refinv.onnx`` logger
    (``-v``). When the CUDA provider did not start, :class:`~refinv.errors.BackendError`
    names the CUDA major the installed onnxruntime-gpu needs, what onnxruntime said, and the
    fix: onnxruntime would otherwise run on the CPU silently.
    """
    ort = _ort()
    with NativeStderr() as native:
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            try:
                preload()
            except Exception as exc:  # a missing package: onnxruntime says more below
                log.debug("onnxruntime.preload_dlls(): %s", exc)
        session = open_session(
            model_bytes, so, providers, label=label, memory_limit=memory_limit,
            time_limit=time_limit,
        )  # fmt: skip
    lines = [ln for ln in native.text.splitlines() if ln.strip()]
    for ln in lines:
        log.info("onnxruntime: %s", ln)
    if "CUDAExecutionProvider" not in session.get_providers():
        major = installed_onnxruntime_gpu_cuda_major()
        said = "; onnxruntime said: " + " / ".join(_short(ln) for ln in lines[-2:]) if lines else ""
        raise BackendError(
            f"{label}: provider='cuda': onnxruntime-gpu could not start its CUDA provider (no "
            f"usable GPU, or the {cuda_libraries_text(major)} it needs are not found) and fell "
            f"back to {session.get_providers()}{said}. Fix: {gpu_route_for(major).install} "
            "(its cuda and cudnn extras install those libraries; a driver without CUDA "
            f"{major or 13} support needs the other route of docs/gpu.md)"
        )
    return session


def _short(line: str) -> str:
    """An onnxruntime log line without its time stamp and source location."""
    return re.sub(r"^.*?\] ", "", line).strip()


def session_options(intra_op_threads: int | None) -> Any:
    """onnxruntime ``SessionOptions``: one intra-op thread by default (``0``: onnxruntime's own
    default; at most :func:`~refinv.onnx.limits.max_threads`), one inter-op thread, warnings
    and errors only."""
    intra_op_threads = check_threads(intra_op_threads)
    so = _ort().SessionOptions()
    # default ONE intra-op thread (never slower than onnxruntime's spinning pool on a loaded
    # machine; docs/benchmarks.md "time to verdict"); 0 = onnxruntime's own default
    so.intra_op_num_threads = 1 if intra_op_threads is None else int(intra_op_threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


def execution_providers(provider: str, device_id: int, memory_limit: float) -> list[Any]:
    """The onnxruntime providers for ``provider`` ``"cpu"`` or ``"cuda"`` (the CUDA arena capped
    at ``memory_limit`` bytes when > 0); :class:`~refinv.errors.BackendError` if this
    onnxruntime has no CUDA provider."""
    available = _ort().get_available_providers()
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if provider == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise BackendError(cuda_provider_missing(available))
        cuda_opts: dict[str, Any] = {"device_id": device_id}
        if memory_limit > 0:
            cuda_opts["gpu_mem_limit"] = int(memory_limit)
        return [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
    raise ConfigError(f"provider: expected 'cpu' or 'cuda', got {provider!r}")
