"""Test-session settings.

One BLAS thread: on the 2-core CI machines OpenBLAS's own threading made
transposed matmuls 10-90x slower under load (measured by the developers).
Set before NumPy is imported by any test module.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("REFINV_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config, items):
    """``slow`` tests (kill/resume soaks, long fuzz runs) run only when asked for, with
    ``REFINV_RUN_SLOW=1`` or ``-m slow``: CI runs the rest (docs/development.md)."""
    import pytest

    if os.environ.get("REFINV_RUN_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: set REFINV_RUN_SLOW=1 (or -m slow) to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
