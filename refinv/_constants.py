"""Constants that ``refinv --help`` shows, in a module that imports nothing.

The command line builds its help from them without importing NumPy (or onnx):
``refinv --help`` stays fast. Each is re-exported where it belongs:
:data:`refinv.operators.masks.MASK_GRAMMAR`, :data:`refinv.solvers.recovery.DEFAULTS`,
:data:`refinv.evaluation.stability.METHODS`.
"""

MASK_GRAMMAR = (
    "random:P | blocks:NxS | blocks:NxSHxSW | center:S | half:top|bottom|left|right | "
    "rows:K | cols:K | grid:K | file:PATH.npz[:KEY] | ones"
)

#: the recovery solvers' defaults (chosen by measurement, see refinv.solvers.recovery)
RECOVERY_DEFAULTS = dict(
    max_iter=100,
    tol="auto",
    patience=40,
    rho=0.5,
    inner_iter=10,
    mask_init="ones",
    tau=0.0,
)

#: eigensolvers of refinv.evaluation.stability
STABILITY_METHODS = ("auto", "dense", "arnoldi")
