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
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..errors import BackendError, ConfigError, OnnxModelError, ResourceLimitError

__all__ = [
    "open_session",
    "run_session",
    "session_options",
    "execution_providers",
    "cuda_provider_missing",
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
) -> Any:
    """An onnxruntime session for an already validated, inline model.

    Forces the ONNX format (never onnxruntime's own format), disables constant
    folding (it evaluates constant subgraphs at creation, outside every limit)
    and, with ``memory_limit > 0``, gives the session its own CPU arena capped
    at ``memory_limit`` bytes (onnxruntime's environment allocator: registered
    anew right before the session is created, under a lock).
    """
    import onnxruntime as ort

    so.add_session_config_entry("session.load_model_format", "ONNX")
    with _SESSION_LOCK:
        _telemetry(ort)
        if memory_limit > 0:
            so.add_session_config_entry("session.use_env_allocators", "1")
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


# The one command that swaps the CPU runtime for the GPU one (docs/gpu.md).
GPU_INSTALL = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu>=1.18'"


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
    if cpu and gpu:
        return (
            f"provider='cuda': both onnxruntime {cpu} (CPU) and onnxruntime-gpu {gpu} are "
            "installed; they share one 'onnxruntime' package folder and the CPU build's files "
            f"are the ones loaded (providers {available}). Fix: {GPU_INSTALL}"
        )
    if gpu:
        return (
            f"provider='cuda': onnxruntime-gpu {gpu} is installed but reports no "
            f"CUDAExecutionProvider (providers {available}); reinstall it: {GPU_INSTALL}"
        )
    return (
        "provider='cuda' needs onnxruntime-gpu instead of the CPU onnxruntime"
        f"{f' {cpu}' if cpu else ''} (providers {available}). Fix: {GPU_INSTALL}"
    )


def session_options(intra_op_threads: int | None) -> Any:
    """onnxruntime ``SessionOptions``: one intra-op thread by default (``0``: onnxruntime's own
    default), one inter-op thread, warnings and errors only."""
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
