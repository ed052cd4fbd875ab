"""The ONNX model adapter: an untrusted ONNX file as a black-box function on array-API batches.

:class:`OnnxModel` loads a model from a path, bytes or an ``onnx.ModelProto``,
validates it (``onnx.checker``, exactly one floating input and one output, a
fixed sample shape), opens an onnxruntime ``InferenceSession`` with explicit
providers, and is then called like a function on a batch
``(batch, *sample_shape)`` of any array-API array, returning the same array
type.

Security: ONNX files are untrusted input (the security model is in the
documentation's "Security model" page). The model is read by
:func:`~refinv.onnx.loading.load_onnx` (every tensor inline and checked, external data
only from inside the model's folder), its session opened and run by
:mod:`refinv.onnx.session` (memory ceiling, time limit per call), its input layout
decided by :mod:`refinv.onnx.layout`. Resource limits (file size, control flow, memory
ceiling, time per call) are described in :class:`OnnxModel`; every failure of onnx,
protobuf or onnxruntime comes out as a :class:`~refinv.errors.RefinvError`.

Behaviour on NaN input: the forward pass does not scan its input (it is the
inner loop of every solver); NaN/Inf propagate through the network. Solvers
validate their own inputs once, at entry.

dtype policy: the model's input dtype (usually float32) is what onnxruntime
gets. A float64 batch given to a float32 model is cast at this boundary and
the output is cast back to float64, so float64 solvers work with float32
models (the network itself then computes in float32). The model's output
must have the same floating dtype as its input: a float16-input model that
returns float32 (or any model returning an integer or bool tensor) is refused
at load, by the probe run.
"""

from __future__ import annotations

import hashlib
import logging
import numbers
import time
from typing import Any

import numpy as np

from ..backend import is_cupy, is_numpy, namespace, to_numpy
from ..errors import (
    BackendError,
    ConfigError,
    DTypeError,
    OnnxModelError,
    ResourceLimitError,
    ShapeError,
)
from ._bounds import check_tensor_sizes
from .layout import declared_dims, parse_image_shape, resolve_layout
from .limits import DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT, check_threads, resolve_limit
from .loading import FLOAT_TYPES, ModelSource, load_onnx, onnx, prod
from .session import (
    OrtStats,
    execution_providers,
    open_cuda_session,
    open_session,
    run_session,
    session_options,
)

__all__ = ["OnnxModel"]

log = logging.getLogger("refinv.onnx")


def _check_options(
    provider: Any, batch_size: Any, intra_op_threads: Any, device_id: Any, allow_cf: Any
) -> None:
    """The options of :class:`OnnxModel` that are not limits, checked for type and range before
    anything is read (a wrong type is a :class:`~refinv.errors.ConfigError`, not a traceback)."""
    if not isinstance(provider, str):
        raise ConfigError(f"provider: expected 'cpu' or 'cuda', got {provider!r}")
    if not isinstance(allow_cf, bool):  # "no" would be true
        raise ConfigError(f"allow_control_flow: expected True or False, got {allow_cf!r}")
    for name, v, lo in (("batch_size", batch_size, 1), ("device_id", device_id, 0)):
        if v is None and name == "batch_size":
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise ConfigError(f"{name}: expected an integer >= {lo}, got {v!r}")
    check_threads(intra_op_threads)


def _batch_axis_error(where: str, nb: int, got: tuple[int, ...]) -> OnnxModelError:
    return OnnxModelError(
        f"{where}: expected the output's leading axis to be the batch axis (size {nb}, one output "
        f"sample per input sample), got an output of shape {got}. refinv needs axis 0 of the "
        "output to be the batch axis: re-export the model with a dynamic batch axis on input "
        "and output (e.g. torch.onnx.export(..., dynamic_axes={'x': {0: 'batch'}, 'y': {0: "
        "'batch'}})) and without a final Reshape/Flatten that merges the batch axis into "
        "another (the one pattern refinv repairs is a trailing Reshape(-1, 1), as skl2onnx "
        "writes: an output (batch * D, 1))"
    )


class OnnxModel:
    """An ONNX network as a function on batches.

    Parameters
    ----------
    source : path, bytes or onnx.ModelProto
        The model. Paths may use external data inside their own folder only.
    provider : {"cpu", "cuda"}
        onnxruntime execution provider. ``"cuda"`` requires an onnxruntime build
        with the CUDA provider (``onnxruntime-gpu``) and raises
        :class:`~refinv.errors.BackendError` otherwise.
    batch_size : int, optional
        Largest batch sent to onnxruntime in one call; larger inputs are split
        into chunks. Default: no splitting for dynamic-batch models.
    intra_op_threads : int, optional
        onnxruntime's intra-op thread count (default ``None``: 1 thread; ``0``:
        onnxruntime's own default, one spinning thread per physical core); at most 4 per
        CPU core (:func:`~refinv.onnx.limits.max_threads`), else
        :class:`~refinv.errors.ConfigError`.
    device_id : int
        CUDA device for the CUDA provider.
    max_bytes : float, optional
        Largest model read (file plus external data), checked before reading.
        Default: ``REFINV_MAX_MODEL_BYTES`` or 2 GiB; 0: no limit.
    allow_control_flow : bool
        Accept graphs with Loop, Scan or If (any subgraph). Default: refused
        (or ``REFINV_ALLOW_CONTROL_FLOW=1``), since a tiny Loop can run for ever.
    time_limit : float, optional
        Wall-time limit of one onnxruntime call in seconds (a stuck call is
        stopped through ``RunOptions.terminate`` between two operators and
        raises :class:`~refinv.errors.ResourceLimitError`), and of creating the
        session (on Linux, first done in a child process killed past the limit).
        Default: ``REFINV_ORT_TIME_LIMIT`` or 600; 0: no limit.
    memory_limit : float, optional
        Ceiling of the session's CPU memory arena in bytes (an allocation through
        the arena beyond it fails at once with
        :class:`~refinv.errors.ResourceLimitError`; measured, the weights and many
        activations are allocated outside it: the documentation's "Security model"
        page); with ``provider="cuda"`` also the CUDA arena's ``gpu_mem_limit``.
        Before the probe runs, a tensor whose size the graph fixes is refused above a
        quarter of it. Default: ``REFINV_ORT_MEMORY_LIMIT`` or 4 GiB; 0: onnxruntime's
        own arena, no ceiling.
    layout : {"NCHW", "NHWC", "flat"}, optional
        The layout of the model's input. Default ``None``: detected from the
        graph where unambiguous (:func:`detect_layout`: a leading ``Transpose``
        with ``perm=[0, 3, 1, 2]`` means NHWC; a declared ``(N, C, H, W)`` with
        ``C`` 1 or 3 and ``H``, ``W`` not, NCHW; ``(N, H, W, C)`` likewise, NHWC;
        ``(N, D)``, flat); an ambiguous input such as ``(N, 3, 3, 3)`` raises
        :class:`~refinv.errors.OnnxModelError` asking for ``layout=``. A given layout
        that contradicts what the graph decides (``"NHWC"`` for ``(N, 1, 25, 25)``) is a
        :class:`~refinv.errors.ConfigError`.
    image_shape : tuple or str, optional
        Flat models ``(N, D)``: the image shape ``(C, H, W)`` (or ``(H, W)``,
        or ``"1x28x28"``) of a sample, ``C * H * W == D``
        (:meth:`set_image_shape`).

    Notes
    -----
    Layouts: refinv's arrays are always ``(N, C, H, W)`` (``sample_shape``), whatever
    the layout; the model converts at the onnxruntime boundary, so masks,
    solvers, metrics and figures never see the layout. An NHWC model gets
    the batch **transposed** to ``(N, H, W, C)`` (never reshaped) and its
    output, when shaped like its input, transposed back; a flat model with an
    image shape gets ``x.reshape(N, D)`` (row-major over ``(C, H, W)``) and its
    output reshaped back. Masks therefore stay per pixel over the channel
    axis wherever the graph has it (the mask the NHWC graph sees is the NCHW
    mask transposed), and the same weights give the same results in every
    layout. ``onnx_sample_shape`` is the graph's own sample shape,
    ``layout_source`` says how the layout was decided and
    :meth:`layout_info` is what the CLI records in its JSON.

    Batch axis: the probe at load runs a batch of 2 and a batch of 3 (or the
    fixed batch) and requires a leading output axis of the same size. The
    one pattern repaired is skl2onnx's trailing ``Reshape(-1, 1)`` (an output
    ``(batch * D, 1)``): it is read as ``(batch, D)`` (``batch_axis_restored``,
    logged as a warning) once each sample's values are checked to be the
    same in both probe batches; any other mismatch raises
    :class:`~refinv.errors.OnnxModelError` naming the batch axis and the fix.

    Verification at load: the model is run on probe batches (2 and 3 samples,
    or the fixed batch) and the computed output is compared with the declared
    output (shape, dtype), with the input batch and with the input's dtype;
    any mismatch raises :class:`~refinv.errors.OnnxModelError`. Every later
    call checks the output's shape and dtype again (a data-dependent shape
    is refused, not passed on).

    Examples
    --------
    >>> f = OnnxModel("models/digits_mlp_lrelu.onnx")   # doctest: +SKIP
    >>> f.sample_shape, f.dtype                          # doctest: +SKIP
    ((1, 8, 8), dtype('float32'))
    >>> z = f(x)   # x: (batch, 1, 8, 8), NumPy/CuPy/array-api-strict  # doctest: +SKIP
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        provider: str = "cpu",
        batch_size: int | None = None,
        intra_op_threads: int | None = None,
        device_id: int = 0,
        max_bytes: float | None = None,
        allow_control_flow: bool = False,
        time_limit: float | None = None,
        memory_limit: float | None = None,
        layout: str | None = None,
        image_shape: Any = None,
    ) -> None:
        self.time_limit = resolve_limit(
            time_limit, "REFINV_ORT_TIME_LIMIT", DEFAULT_TIME_LIMIT, "time_limit"
        )
        self.memory_limit = resolve_limit(
            memory_limit, "REFINV_ORT_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT, "memory_limit"
        )
        _check_options(provider, batch_size, intra_op_threads, device_id, allow_control_flow)
        self.proto, self.label, self.base_dir = load_onnx(
            source, max_bytes=max_bytes, allow_control_flow=allow_control_flow
        )
        try:
            self._bytes = self.proto.SerializeToString()
        except Exception as exc:  # > 2 GB once the external data are inline
            raise ResourceLimitError(f"{self.label}: cannot serialize the model: {exc}") from exc
        self.sha256 = hashlib.sha256(self._bytes).hexdigest()
        self.stats = OrtStats()
        inp, out, dims = self._signature()
        self._set_layout(layout, inp.name)
        self.batch_axis_restored = False
        self._restore_k = 0
        self.fixed_batch: int | None = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        odims = declared_dims(out)
        self._declared_out = (
            tuple(int(d) for d in odims[1:])  # type: ignore[arg-type]
            if len(odims) >= 2 and all(isinstance(d, int) and d > 0 for d in odims[1:])
            else None
        )
        self.batch_size = None if batch_size is None else int(batch_size)
        # what the probe batch makes, sized from the graph before anything is allocated
        check_tensor_sizes(
            self.proto, inp.name, self.fixed_batch or 3, self.memory_limit, self.label
        )
        self._open(provider.lower(), device_id, intra_op_threads)
        self._out_shape: tuple[int, ...] | None = None
        self._out_shape = self._probe(out)
        if image_shape is not None:
            self.set_image_shape(image_shape)

    def _signature(self) -> tuple[Any, Any, list]:
        """The graph's one floating input and one tensor output, and the input's declared dims
        (a fixed sample shape after the batch axis); sets ``dtype``, ``input_name``,
        ``output_name`` and ``onnx_sample_shape``."""
        init_names = {i.name for i in self.proto.graph.initializer}
        inputs = [i for i in self.proto.graph.input if i.name not in init_names]
        outputs = list(self.proto.graph.output)
        if len(inputs) != 1 or len(outputs) != 1:
            raise OnnxModelError(
                f"{self.label}: expected exactly one input and one output, got "
                f"{len(inputs)} inputs {[i.name for i in inputs]} and {len(outputs)} outputs "
                f"{[o.name for o in outputs]}"
            )
        inp, out = inputs[0], outputs[0]
        elem = inp.type.tensor_type.elem_type
        if not inp.type.HasField("tensor_type") or elem not in FLOAT_TYPES:
            kind = inp.type.WhichOneof("value") or "no type"
            name = dict((v, k) for k, v in onnx.TensorProto.DataType.items()).get(elem, elem)
            raise OnnxModelError(
                f"{self.label}: expected a floating-point input tensor (float32/float64/float16), "
                f"got {kind if kind != 'tensor_type' else name}"
            )
        if not out.type.HasField("tensor_type"):
            raise OnnxModelError(
                f"{self.label}: expected a tensor output, got "
                f"{out.type.WhichOneof('value') or 'no type'}"
            )
        self.dtype: np.dtype = FLOAT_TYPES[elem]
        self.input_name = inp.name
        self.output_name = out.name
        dims = declared_dims(inp)
        if len(dims) < 2:
            raise OnnxModelError(
                f"{self.label}: expected an input of shape (batch, *sample_shape), got declared "
                f"shape {dims}"
            )
        if not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            raise OnnxModelError(
                f"{self.label}: expected fixed sample dimensions after the batch axis, got "
                f"declared input shape {dims}"
            )
        #: the sample shape the ONNX graph takes (its declared input, batch axis dropped)
        self.onnx_sample_shape: tuple[int, ...] = tuple(int(d) for d in dims[1:])  # type: ignore[arg-type]
        return inp, out, dims

    def _open(self, provider: str, device_id: int, intra_op_threads: int | None) -> None:
        """Open the onnxruntime session on ``provider`` (``"cpu"`` or ``"cuda"``)."""
        providers = execution_providers(provider, device_id, self.memory_limit)
        self.provider = provider
        self.device_id = device_id
        opener = open_cuda_session if provider == "cuda" else open_session
        self.session = opener(
            self._bytes,
            session_options(intra_op_threads),
            providers,
            label=self.label,
            memory_limit=self.memory_limit,
            time_limit=self.time_limit,
        )

    # ---------------------------------------------------------------- layout
    def _set_layout(self, layout: str | None, input_name: str) -> None:
        """``layout``, ``layout_source``, ``sample_shape`` and ``image_shape`` from ``layout=``
        or the graph (:func:`~refinv.onnx.layout.resolve_layout`)."""
        self.layout, self.layout_source = resolve_layout(
            layout, self.proto.graph, input_name, self.onnx_sample_shape, self.label
        )
        if layout is None and self.layout is not None:
            log.info("%s: input layout %s (%s)", self.label, self.layout, self.layout_source)
        #: the sample shape refinv's arrays have: (C, H, W) for image models whatever the layout
        self.sample_shape: tuple[int, ...] = self.onnx_sample_shape
        self.image_shape: tuple[int, int, int] | None = None
        if self.layout == "NHWC":
            h, w, c = self.onnx_sample_shape
            self.sample_shape = self.image_shape = (c, h, w)
        elif self.layout == "NCHW":
            self.image_shape = self.onnx_sample_shape  # type: ignore[assignment]

    def set_image_shape(self, image_shape: Any) -> None:
        """Give a flat model ``(batch, D)`` the image shape ``(C, H, W)`` (or ``(H, W)``) of its
        samples: refinv's arrays are then ``(batch, C, H, W)`` and are flattened row-major
        (``x.reshape(batch, D)``) at the boundary, so every mask family works. ``D`` must be
        ``C * H * W``. On an image model the shape must be its own ``(C, H, W)``."""
        shape = parse_image_shape(image_shape)
        if self.layout != "flat":
            if self.image_shape is not None and tuple(self.image_shape) == shape:
                return
            raise ConfigError(
                f"{self.label}: image_shape {shape} given for a {self.layout or 'non-image'} "
                f"model whose samples are {self.sample_shape}; image_shape is for flat models "
                "(batch, D)"
            )
        (d,) = self.onnx_sample_shape
        if prod(shape) != d:
            raise ConfigError(
                f"{self.label}: image_shape {'x'.join(map(str, shape))} has {prod(shape)} pixel "
                f"values, the flat model takes D = {d} per sample (input (batch, {d})); expected "
                f"C * H * W == {d}"
            )
        self.image_shape = shape
        self.sample_shape = shape

    def layout_info(self) -> dict:
        """What the model's layout is and how refinv maps its arrays to the graph (for JSON)."""
        return {
            "layout": self.layout,
            "layout_source": self.layout_source,
            "onnx_sample_shape": list(self.onnx_sample_shape),
            "sample_shape": list(self.sample_shape),
            "image_shape": None if self.image_shape is None else list(self.image_shape),
            "batch_axis_restored": self.batch_axis_restored,
        }

    def _to_native(self, x: Any) -> Any:
        """refinv's ``(batch, *sample_shape)`` -> the graph's input layout (contiguous)."""
        if self.layout == "NHWC":
            t = x.transpose(0, 2, 3, 1)
            if is_numpy(x):
                return np.ascontiguousarray(t)
            import cupy as cp

            return cp.ascontiguousarray(t)
        if self.layout == "flat" and self.image_shape is not None:
            return x.reshape((x.shape[0], *self.onnx_sample_shape))
        return x

    def _from_native(self, y: Any) -> Any:
        """The graph's output -> refinv's layout (only for outputs shaped like the input)."""
        converted = self.layout == "NHWC" or (
            self.layout == "flat" and self.image_shape is not None
        )
        if not converted or self._out_shape != self.onnx_sample_shape:
            return y
        if self.layout == "NHWC":
            t = y.transpose(0, 3, 1, 2)
            if is_numpy(y):
                return np.ascontiguousarray(t)
            import cupy as cp

            return cp.ascontiguousarray(t)
        return y.reshape((y.shape[0], *self.sample_shape))

    # ------------------------------------------------------------------ info
    def __repr__(self) -> str:
        return (
            f"OnnxModel({self.label!r}, sample_shape={self.sample_shape}, layout={self.layout!r}, "
            f"dtype={self.dtype}, provider={self.provider!r})"
        )

    def _probe(self, out: onnx.ValueInfoProto) -> tuple[int, ...]:
        """Run the model on small batches; refuse outputs that do not match what it declares,
        its input batch or its input dtype. Returns the output sample shape (in the graph's
        layout).

        Batch axis: a batch of 2 (or the fixed batch) and, for a dynamic batch, a batch of 3
        must come back with a leading axis of the same size. The one exception repaired is
        skl2onnx's trailing ``Reshape(-1, 1)``: outputs ``(2 * D, 1)`` and ``(3 * D, 1)`` are
        reshaped to ``(batch, D)`` (``batch_axis_restored``), after checking that each
        sample's ``D`` values are the same in both batches."""
        batches = self._probe_batches()
        ys = self._probe_run(batches)
        self.stats.reset()
        nb = batches[0].shape[0]
        where = f"{self.label}: probe run on a batch of shape {(nb, *self.onnx_sample_shape)}"
        self._check_probe_outputs(out, ys, where)
        y = ys[0]
        if all(
            b.shape[0] == yb.shape[0] and yb.ndim >= 2 for b, yb in zip(batches, ys, strict=True)
        ):
            if len(ys) == 2 and ys[1].shape[1:] != y.shape[1:]:
                raise OnnxModelError(
                    f"{where}: the output sample shape depends on the batch size: {y.shape[1:]} "
                    f"for a batch of {nb}, {ys[1].shape[1:]} for a batch of 3"
                )
            return tuple(int(d) for d in y.shape[1:])
        return self._restore_batch_axis(batches, ys, where)

    def _probe_batches(self) -> list[np.ndarray]:
        """A batch of 2 (or the fixed batch) and, for a dynamic batch, the same batch plus its
        first sample again; refused if it alone needs more than a quarter of the memory
        ceiling."""
        native = self.onnx_sample_shape
        nb = self.fixed_batch or 2
        sizes = [nb] if self.fixed_batch else [2, 3]
        nbytes = max(sizes) * prod(native) * self.dtype.itemsize
        budget = self.memory_limit / 4 if self.memory_limit > 0 else float("inf")
        if nbytes > budget:
            raise ResourceLimitError(
                f"{self.label}: the probe batch of shape {(nb, *native)} alone needs "
                f"{nbytes} bytes, more than a quarter of the memory ceiling of "
                f"{int(self.memory_limit)} bytes; raise it with memory_limit=... or "
                "REFINV_ORT_MEMORY_LIMIT"
            )
        # deterministic values in [0, 1): image-like, and not all equal; the batch of 3 is the
        # batch of 2 plus its first sample again
        x = np.resize((np.arange(97) * 0.618034 % 1.0).astype(self.dtype), nb * prod(native))
        x = x.reshape(nb, *native)
        return [x] if self.fixed_batch else [x, np.concatenate([x, x[:1]])]

    def _probe_run(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        ys = [self._run_np(batches[0])]
        if len(batches) == 2:
            try:
                ys.append(self._run_np(batches[1]))
            except ResourceLimitError:
                raise
            except OnnxModelError as exc:
                raise OnnxModelError(
                    f"{self.label}: the model runs on a batch of 2 but not on a batch of 3 (the "
                    "input's batch axis is declared dynamic, but the graph fixes a batch size, "
                    "e.g. a Reshape to the batch it was traced with); re-export it with a "
                    f"dynamic batch axis, or declare the fixed batch in its input: {exc}"
                ) from exc
        return ys

    def _check_probe_outputs(self, out: Any, ys: list, where: str) -> None:
        """Floating outputs in the input's dtype, matching the declared dtype and shape."""
        for y in ys:
            if not isinstance(y, np.ndarray):
                raise OnnxModelError(f"{where}: expected a tensor output, got {type(y).__name__}")
            if y.dtype.kind != "f":
                raise OnnxModelError(
                    f"{where}: expected a floating-point output, got dtype {y.dtype}"
                )
            if y.dtype != self.dtype:
                raise OnnxModelError(
                    f"{where}: expected the output in the input's dtype {self.dtype}, got "
                    f"{y.dtype} (refinv does not mix dtypes between a model's input and output)"
                )
        y = ys[0]
        declared_elem = out.type.tensor_type.elem_type
        if declared_elem and FLOAT_TYPES.get(declared_elem) != y.dtype:
            name = dict((v, k) for k, v in onnx.TensorProto.DataType.items()).get(declared_elem)
            raise OnnxModelError(
                f"{where}: the graph declares output dtype {name or declared_elem} but computes "
                f"{y.dtype}"
            )
        odims = declared_dims(out)
        if out.type.tensor_type.HasField("shape"):
            declared = [
                y.shape[0] if i == 0 and not isinstance(d, int) else d for i, d in enumerate(odims)
            ]
            if len(odims) != y.ndim or any(
                isinstance(d, int) and d != c for d, c in zip(declared, y.shape, strict=True)
            ):
                raise OnnxModelError(
                    f"{where}: the graph declares output shape {odims} but computes {y.shape}"
                )
        if 0 in y.shape or y.ndim < 1:
            nb = self.fixed_batch or 2
            raise OnnxModelError(
                f"{where}: expected an output of shape ({nb}, *sample_shape), got {y.shape}"
            )

    def _restore_batch_axis(self, batches: list, ys: list, where: str) -> tuple[int, ...]:
        """skl2onnx's ``Reshape(-1, 1)``: outputs ``(batch * D, 1)`` read as ``(batch, D)``,
        once each sample's values are the same in both probe batches; any other batch-axis
        mismatch is refused."""
        y = ys[0]
        nb = batches[0].shape[0]
        k = y.shape[0] // nb
        if not (
            y.ndim == 2
            and y.shape[1] == 1
            and k > 1
            and y.shape[0] == nb * k
            and all(yb.shape == (b.shape[0] * k, 1) for b, yb in zip(batches, ys, strict=True))
        ):
            b, yb = next(
                (b, yb)
                for b, yb in zip(batches, ys, strict=True)
                if yb.ndim < 2 or yb.shape[0] != b.shape[0]
            )
            raise _batch_axis_error(
                f"{self.label}: probe run on a batch of shape {b.shape}", b.shape[0], yb.shape
            )
        rows = [yb.reshape(b.shape[0], k) for b, yb in zip(batches, ys, strict=True)]
        if len(rows) == 2:
            ref = np.concatenate([rows[0], rows[0][:1]]).astype(np.float64)
            if not np.allclose(rows[1], ref, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(ref).max())):
                raise _batch_axis_error(where, nb, y.shape)
        self.batch_axis_restored = True
        self._restore_k = k
        log.warning(
            "%s: the model returns (batch * %d, 1) (a trailing Reshape(-1, 1), as skl2onnx "
            "writes); refinv restores the batch axis: outputs are read as (batch, %d)",
            self.label,
            k,
            k,
        )
        return (k,)

    @property
    def output_sample_shape(self) -> tuple[int, ...]:
        """Shape of one output sample (computed by the probe run at load, checked against the
        declared one)."""
        assert self._out_shape is not None
        if self._out_shape == self.onnx_sample_shape:
            return self.sample_shape  # the same layout conversion as the input
        return self._out_shape

    @property
    def is_autoencoder(self) -> bool:
        return self.output_sample_shape == self.sample_shape

    def initializers(self) -> dict[str, np.ndarray]:
        """The model's initializers (weights) as read-only NumPy arrays."""
        from onnx import numpy_helper

        try:
            return {i.name: numpy_helper.to_array(i) for i in self.proto.graph.initializer}
        except Exception as exc:
            raise OnnxModelError(f"{self.label}: cannot read the initializers: {exc}") from exc

    # --------------------------------------------------------------- calling
    def _run_np(self, x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        (y,) = run_session(
            self.session,
            [self.output_name],
            {self.input_name: x},
            label=self.label,
            time_limit=self.time_limit,
            memory_limit=self.memory_limit,
        )
        if self.batch_axis_restored and y.shape == (x.shape[0] * self._restore_k, 1):
            y = y.reshape(x.shape[0], self._restore_k)
        if self._out_shape is not None and (
            y.dtype != self.dtype or y.shape[1:] != self._out_shape or y.shape[0] != x.shape[0]
        ):
            raise OnnxModelError(
                f"{self.label}: on a batch of shape {x.shape} the model returned "
                f"{getattr(y, 'shape', None)} {getattr(y, 'dtype', type(y).__name__)}; expected "
                f"{(x.shape[0], *self._out_shape)} {self.dtype} (as in the probe run at load)"
            )
        self.stats.seconds += time.perf_counter() - t0
        self.stats.calls += 1
        self.stats.samples += x.shape[0]
        return y

    def _chunks(self, n: int) -> list[tuple[int, int]]:
        step = self.fixed_batch or self.batch_size or n
        return [(s, min(s + step, n)) for s in range(0, n, step)] or [(0, 0)]

    def _forward_numpy(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if self.fixed_batch is None and (self.batch_size is None or n <= self.batch_size) and n:
            return self._run_np(x)  # one call (the common case: no splitting to plan)
        if n == 0:
            return np.zeros((0, *self._out_shape), dtype=self.dtype)  # type: ignore[misc]
        chunks = self._chunks(n)
        if len(chunks) == 1 and self.fixed_batch in (None, n):
            return self._run_np(x)
        out = None
        for s, e in chunks:
            part = x[s:e]
            if self.fixed_batch is not None and e - s < self.fixed_batch:
                pad = np.zeros(
                    (self.fixed_batch - (e - s), *self.onnx_sample_shape), dtype=self.dtype
                )
                part = np.concatenate([part, pad])
            y = self._run_np(np.ascontiguousarray(part))[: e - s]
            if out is None:
                out = np.empty((n, *y.shape[1:]), dtype=y.dtype)
            out[s:e] = y
        return out

    def _forward_cupy(self, x: Any) -> Any:
        import cupy as cp

        if self.provider != "cuda":
            raise BackendError(
                f"{self.label}: got a CuPy array but the session runs on the CPU provider; open "
                "the model with provider='cuda' or move the data to the host explicitly "
                "(refinv.backend.to_numpy)"
            )
        n = x.shape[0]
        out = cp.empty((n, *self._out_shape), dtype=self.dtype)  # type: ignore[misc]
        for s, e in self._chunks(n):
            part = cp.ascontiguousarray(x[s:e])
            o = out[s:e]
            if self.batch_axis_restored:  # the graph writes (m * D, 1): a view of the same rows
                o = o.reshape((e - s) * self._restore_k, 1)
            io = self.session.io_binding()
            io.bind_input(
                self.input_name,
                "cuda",
                self.device_id,
                self.dtype,
                tuple(part.shape),
                part.data.ptr,
            )
            io.bind_output(
                self.output_name, "cuda", self.device_id, self.dtype, tuple(o.shape), o.data.ptr
            )
            t0 = time.perf_counter()
            run_session(
                self.session,
                None,
                None,
                label=self.label,
                time_limit=self.time_limit,
                memory_limit=self.memory_limit,
                iobinding=io,
            )
            self.stats.seconds += time.perf_counter() - t0
            self.stats.calls += 1
            self.stats.samples += e - s
        return out

    def __call__(self, x: Any) -> Any:
        """Run the network on a batch ``(batch, *sample_shape)``; same array type out.

        ``sample_shape`` is refinv's layout (``(C, H, W)`` for image models, also channels-last
        and flat ones given an image shape): the batch is transposed (NHWC) or flattened
        (flat) to the graph's input here, and an output shaped like the input comes back in
        refinv's layout."""
        if (
            type(x) is np.ndarray
            and x.dtype == self.dtype
            and x.shape[1:] == self.sample_shape
            and x.flags.c_contiguous
        ):  # fast path: the solvers' inner loop on NumPy
            return self._from_native(self._forward_numpy(self._to_native(x)))
        xp = namespace(x)
        if tuple(x.shape[1:]) != self.sample_shape or x.ndim != len(self.sample_shape) + 1:
            raise ShapeError(
                f"{self.label}: expected input of shape (batch, "
                f"{', '.join(map(str, self.sample_shape))}), got {tuple(x.shape)}"
            )
        in_dtype = x.dtype
        floats = [getattr(xp, n) for n in ("float32", "float64", "float16") if hasattr(xp, n)]
        if not any(in_dtype == t for t in floats):  # array-api-strict has no float16
            raise DTypeError(
                f"{self.label}: expected a floating-point batch (the model takes {self.dtype}), "
                f"got dtype {in_dtype}"
            )
        if is_numpy(x):
            xin = x if x.dtype == self.dtype else x.astype(self.dtype)
            y = self._from_native(self._forward_numpy(self._to_native(np.ascontiguousarray(xin))))
            return y if y.dtype == in_dtype else y.astype(in_dtype)
        if is_cupy(x):
            xin = x if x.dtype == self.dtype else x.astype(self.dtype)
            y = self._from_native(self._forward_cupy(self._to_native(xin)))
            return y if y.dtype == in_dtype else y.astype(in_dtype)
        # any other CPU array-API library: through DLPack to NumPy and back
        host = to_numpy(x)
        if host.dtype != self.dtype:
            host = host.astype(self.dtype)
        y = self._from_native(self._forward_numpy(self._to_native(np.ascontiguousarray(host))))
        out = xp.asarray(y)
        return out if out.dtype == in_dtype else xp.astype(out, in_dtype)
