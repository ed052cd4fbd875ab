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
