"""Backend rules: namespaces from inputs, no silent moves, explicit RNG, dtype checks."""

from __future__ import annotations

import subprocess
import sys

import array_api_strict as xps
import numpy as np
import pytest

from refinv import backend
from refinv.errors import BackendError, DTypeError, NonFiniteError, RefinvError, ShapeError


def test_namespace_numpy_and_strict():
    assert backend.namespace(np.zeros(3)).__name__.endswith("numpy")
    assert backend.namespace(xps.zeros(3)) is xps


def test_mixed_namespaces_refused():
    with pytest.raises(BackendError, match="different namespaces"):
        backend.namespace(np.zeros(3), xps.zeros(3))
    assert issubclass(BackendError, TypeError) and issubclass(BackendError, RefinvError)


def test_non_array_refused():
    with pytest.raises(BackendError, match="expected an array-API array"):
        backend.namespace([1.0, 2.0])


def test_mixed_devices_refused():
    a = xps.zeros(3)
    b = xps.zeros(3, device=xps.Device("device1"))
    with pytest.raises(BackendError, match="different devices"):
        backend.namespace(a, b)


def test_host_boundary_roundtrip():
    a = xps.asarray([1.0, 2.0, 3.0], dtype=xps.float32)
    h = backend.to_numpy(a)
    assert isinstance(h, np.ndarray) and h.dtype == np.float32
    back = backend.from_numpy(h, like=a)
    assert type(back) is type(a) and back.dtype == xps.float32


def test_generator_is_explicit_and_reproducible():
    g1, g2 = backend.as_generator(3), backend.as_generator(3)
    assert np.array_equal(g1.standard_normal(4), g2.standard_normal(4))
    g = np.random.default_rng(0)
    assert backend.as_generator(g) is g
    with pytest.raises(TypeError):
        backend.as_generator("seed")


def test_dtype_policy():
    assert backend.result_float_dtype(np, np.zeros(2, np.float32)) == np.float32
    assert backend.result_float_dtype(np, np.zeros(2)) == np.float64
    with pytest.raises(DTypeError, match="got dtype int64"):
        backend.result_float_dtype(np, np.zeros(2, np.int64))
    with pytest.raises(DTypeError, match="y: expected a float32 or float64"):
        backend.require_floating(xps.asarray([1, 2]), "y")


def test_require_finite_counts_bad_entries():
    x = np.array([1.0, np.nan, np.inf])
    with pytest.raises(NonFiniteError, match="y: expected finite values, got 2 NaN/Inf"):
        backend.require_finite(x, "y")
    backend.require_finite(np.ones(3), "y")


def test_require_batch_shape():
    backend.require_batch_shape(np.zeros((2, 1, 8, 8)), (1, 8, 8), "y")
    with pytest.raises(ShapeError, match=r"expected shape \(batch, 1, 8, 8\), got \(2, 64\)"):
        backend.require_batch_shape(np.zeros((2, 64)), (1, 8, 8), "y")


def test_import_refinv_does_not_import_torch():
    code = "import refinv, refinv.cli, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
