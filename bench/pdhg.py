"""Part 5 of the benchmarks: refinv's TV-PDHG vs PyProximal's ``PrimalDual``.

The problem: identity-activation perceptron with ``A = I`` (TV denoising),
``min_x 1/2 ||x - y||^2 + alpha TV(x)`` with isotropic TV on forward
differences (zero at the last row/column), on a synthetic piecewise-constant
image plus Gaussian noise (std 0.1, seed 0), ``alpha = 0.1``, float64,
64x64 and 256x256.

* refinv: :func:`refinv.solvers.bregman.perceptron_pdhg` (eq. 14 of Wang and Benning (2023):
  an explicit gradient step on the data term, a projected dual step), with
  ``tau_x = s / (1 + s)`` and ``tau_z = s / alpha^2``, ``s = 0.99 / sqrt(8)``
  (Condat-Vu's condition ``1/tau_x - 8 tau_z alpha^2 >= 1/2`` holds),
  ``tol = 0`` for the per-iteration timing.
  refinv's DEFAULT steps (``1.99/||A||^2``, ``1/(8 alpha)``) violate that
  condition here and are reported separately (objective after the reference run).
* PyProximal: ``pyproximal.optimization.primaldual.PrimalDual`` (Chambolle-Pock)
  with ``f = L2(b=y)``, ``g = L21(ndim=2, sigma=alpha)``,
  ``K = pylops.Gradient(kind="forward", edge=False)``,
  ``tau = mu = 0.99 / sqrt(8)``, ``theta = 1``, ``gfirst=False``.

refinv linearizes the data term (which the Bregman loss of a general
activation needs) and PyProximal takes its prox; for ``A = I`` the two
coincide with the steps above (``tau_x = tau / (1 + tau)``, dual variable
``y = alpha z``), so the iterates are the same in exact arithmetic. Checked
before timing: the discretizations agree (refinv's ``Gradient2d`` and TV
against pylops' ``Gradient`` and PyProximal's ``L21`` on a random image),
the first 20 iterates agree (max abs difference), and both reach the same
minimizer.

Reported: seconds per iteration (``niter`` iterations timed, median [min,
max] of interleaved repeats, paired ratio), and iterations and seconds to
reach a relative objective gap ``(F(x_k) - F*) / F* <= 1e-3`` and ``1e-5``
(``F*``: the lowest objective seen by either solver in the reference runs;
time to tolerance = iterations x the measured seconds per iteration).

Usage::

    python bench/pdhg.py [--repeats 5] [--markdown]
"""

from __future__ import annotations

import resource

import common  # before numpy: pins the BLAS threads (env vars read at load)
import numpy as np

from refinv.operators.activations import Identity
from refinv.operators.linear import Gradient2d, LinearOperator
from refinv.regularizers.tv import TotalVariation
from refinv.solvers.bregman import BregmanLayer, perceptron_pdhg

ALPHA = 0.1
SIZES = (64, 256)
GAPS = (1e-3, 1e-5)
# PyProximal's Chambolle-Pock steps tau = mu = 0.99/sqrt(||grad||^2 = 8). With A = I, refinv's
# linearized primal step with tau_x = tau / (1 + tau) equals the prox step of f = 1/2||x - y||^2
# with tau, and its dual step on alpha*z with tau_z = mu / alpha^2 equals PyProximal's on y:
# the two produce the SAME iterates (checked). Condat-Vu's condition for refinv's eq. (14),
# 1/tau_x - 8 tau_z alpha^2 >= ||A||^2 / 2, holds (3.86 - 2.8 >= 0.5).
STEP = 0.99 / 8**0.5
TAU_X, DUAL_STEP = STEP / (1.0 + STEP), STEP


class IdentityOp(LinearOperator):
    """``A = I`` on images ``(1, n, n)``."""

    def __init__(self, shape):
        self.in_shape = self.out_shape = tuple(shape)

    def forward(self, x):
        return x

    def adjoint(self, y):
        return y


def test_image(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A piecewise-constant image (rectangles and a disk) in [0, 1] and a noisy copy."""
    i, j = np.mgrid[0:n, 0:n] / n
    x = 0.2 + 0.5 * ((i > 0.2) & (i < 0.6) & (j > 0.15) & (j < 0.5))
    x = x + 0.3 * ((i - 0.65) ** 2 + (j - 0.7) ** 2 < 0.04)
    rng = np.random.default_rng(seed)
    return x, x + 0.1 * rng.standard_normal((n, n))


def objective(x: np.ndarray, y: np.ndarray, tvr: TotalVariation) -> float:
    return float(0.5 * np.sum((x - y) ** 2) + ALPHA * tvr.value(x[None, None])[0])


def check_discretization(n: int) -> dict:
    import pylops
    import pyproximal

    rng = np.random.default_rng(1)
    x = rng.random((n, n))
    K = pylops.Gradient(dims=(n, n), edge=False, kind="forward", dtype="float64")
    g_ref = K.matvec(x.ravel()).reshape(2, n, n)
    g = Gradient2d((1, n, n)).forward(x[None, None])[0, 0]
    tv_ref = pyproximal.L21(ndim=2, sigma=1.0)(K.matvec(x.ravel()))
    tv = TotalVariation((1, n, n)).value(x[None, None])[0]
    return {
        "max_abs_diff_gradient": float(np.max(np.abs(np.moveaxis(g, -1, 0) - g_ref))),
        "rel_diff_tv": float(abs(tv - tv_ref) / tv_ref),
    }


def make_solvers(n: int, y: np.ndarray):
    import pylops
    import pyproximal
    from pyproximal.optimization.primaldual import PrimalDual

    layer = BregmanLayer(IdentityOp((1, n, n)), None, Identity())
    yb = y[None, None]
    tau_x, tau_z = TAU_X, DUAL_STEP / ALPHA**2
    K = pylops.Gradient(dims=(n, n), edge=False, kind="forward", dtype="float64")
    f = pyproximal.L2(b=y.ravel())
    g = pyproximal.L21(ndim=2, sigma=ALPHA)
    step = STEP

    def refinv_run(niter, callback=None, default_steps=False):
        r = perceptron_pdhg(
            yb,
            layer,
            alpha=ALPHA,
            tau_x=None if default_steps else tau_x,
            tau_z=None if default_steps else tau_z,
            max_iter=niter,
            tol=0.0,
            callback=callback,
            progress=False,
        )
        return r.x[0, 0]

    def pyprox_run(niter, callback=None):
        x = PrimalDual(
            f,
            g,
            K,
            x0=np.zeros(n * n),
            tau=step,
            mu=step,
            theta=1.0,
            niter=niter,
            gfirst=False,
            callback=callback,
        )
        return x.reshape(n, n)

    return refinv_run, pyprox_run, {"tau_x": tau_x, "tau_z": tau_z, "pyproximal_tau_mu": step}


def run_size(n: int, niter: int, ref_iter: int, repeats: int) -> dict:
    _, y = test_image(n)
    tvr = TotalVariation((1, n, n))
    refinv_run, pyprox_run, steps = make_solvers(n, y)

    # reference runs, recording the objective at every iteration (untimed)
    obj_r, obj_p = [], []
    xr = refinv_run(
        ref_iter, callback=lambda k, st, res: obj_r.append(objective(st.x[0, 0], y, tvr))
    )
    xp_ = pyprox_run(ref_iter, callback=lambda x: obj_p.append(objective(x.reshape(n, n), y, tvr)))
    fstar = min(min(obj_r), min(obj_p))
    it_r, it_p = [], []
    refinv_run(20, callback=lambda k, st, res: it_r.append(np.array(st.x[0, 0])))
    pyprox_run(20, callback=lambda x: it_p.append(x.reshape(n, n).copy()))
    same_iterates = max(float(np.max(np.abs(a - b))) for a, b in zip(it_r, it_p, strict=True))
    with np.errstate(all="ignore"):
        x_def = refinv_run(ref_iter, default_steps=True)
    obj_default = objective(x_def, y, tvr)

    def iters_to(obj, gap):
        rel = (np.asarray(obj) - fstar) / fstar
        hit = np.flatnonzero(rel <= gap)
        return int(hit[0]) + 1 if hit.size else None

    t = common.interleaved(
        {"refinv": lambda: refinv_run(niter), "pyproximal": lambda: pyprox_run(niter)},
        repeats=repeats,
    )
    faults = {}
    for name, fn in (("refinv", refinv_run), ("pyproximal", pyprox_run)):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn(niter)
        faults[name] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / niter
    per_iter = {k: {q: v[q] / niter for q in ("median", "min", "max")} for k, v in t.items()}
    ratio = common.ratio(t["pyproximal"], t["refinv"])
    to_tol = {}
    for gap in GAPS:
        ir, ip = iters_to(obj_r, gap), iters_to(obj_p, gap)
        to_tol[f"{gap:g}"] = {
            "refinv_iterations": ir,
            "pyproximal_iterations": ip,
            "refinv_seconds": None if ir is None else ir * per_iter["refinv"]["median"],
            "pyproximal_seconds": None if ip is None else ip * per_iter["pyproximal"]["median"],
        }
    return {
        "size": n,
        "alpha": ALPHA,
        "steps": steps,
        "niter_timed": niter,
        "reference_iterations": ref_iter,
        "check": {
            **check_discretization(n),
            "max_abs_diff_first_20_iterates": same_iterates,
            "max_abs_diff_solutions": float(np.max(np.abs(xr - xp_))),
            "objective_refinv": obj_r[-1],
            "objective_pyproximal": obj_p[-1],
            "fstar": fstar,
            "objective_refinv_default_steps": obj_default,
        },
        "minor_page_faults_per_iteration": faults,
        "seconds": t,
        "seconds_per_iteration": per_iter,
        "ratio_pyproximal_over_refinv": ratio,
        "to_tolerance": to_tol,
    }


def markdown(doc: dict) -> str:
    lines = [
        "## TV-PDHG: refinv vs PyProximal (part 5)",
        "",
        f"Command: `python bench/pdhg.py --repeats {doc['repeats']} --markdown` ({doc['date']}); "
        f"PyProximal {doc['pyproximal']}, pylops {doc['pylops']}. TV denoising "
        f"`min 1/2||x - y||^2 + {ALPHA} TV(x)` (identity activation, `A = I`, isotropic TV, "
        "float64, one thread); refinv `perceptron_pdhg` (eq. 14, linearized data term) vs "
        "PyProximal `PrimalDual` (Chambolle-Pock, prox of the data term). Different PDHG "
        "variants that coincide for `A = I` with refinv's `tau_x = tau/(1+tau)`, `tau_z = "
        "mu/alpha^2` (PyProximal `tau = mu = 0.99/sqrt(8)`): checked, the same iterates (max abs "
        "difference over the first 20 in the table) and the same gradient/TV discretization. Time to tolerance = iterations to a relative "
        "objective gap x median seconds per iteration.",
        "",
        "| size | refinv ms/iter | PyProximal ms/iter | PyProximal / refinv | iters to 1e-3 "
        "(refinv / PyProx) | s to 1e-3 | iters to 1e-5 | s to 1e-5 | max abs diff, first 20 iterates |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def s(v):
        return "n/a" if v is None else f"{v:.3g}"

    for c in doc["sizes"]:
        pr, pp = c["seconds_per_iteration"]["refinv"], c["seconds_per_iteration"]["pyproximal"]
        t4, t6 = c["to_tolerance"]["0.001"], c["to_tolerance"]["1e-05"]
        lines.append(
            f"| {c['size']}x{c['size']} | {common.fmt(pr, 1e3)} | {common.fmt(pp, 1e3)} "
            f"| {common.fmt(c['ratio_pyproximal_over_refinv'])} "
            f"| {t4['refinv_iterations']} / {t4['pyproximal_iterations']} "
            f"| {s(t4['refinv_seconds'])} / {s(t4['pyproximal_seconds'])} "
            f"| {t6['refinv_iterations']} / {t6['pyproximal_iterations']} "
            f"| {s(t6['refinv_seconds'])} / {s(t6['pyproximal_seconds'])} "
            f"| {c['check']['max_abs_diff_first_20_iterates']:.2g} |"
        )
    lines += [
        "",
        "Objective after the reference runs (refinv / PyProximal / refinv with its DEFAULT steps "
        "`tau_x = 1.99/||A||^2`, `tau_z = 1/(8 alpha)`): "
        + "; ".join(
            f"{c['size']}x{c['size']}: {c['check']['objective_refinv']:.6g} / "
            f"{c['check']['objective_pyproximal']:.6g} / "
            f"{c['check']['objective_refinv_default_steps']:.6g}"
            for c in doc["sizes"]
        )
        + ". Minor page faults per iteration (refinv / PyProximal): "
        + "; ".join(
            f"{c['size']}x{c['size']}: {c['minor_page_faults_per_iteration']['refinv']:.0f} / "
            f"{c['minor_page_faults_per_iteration']['pyproximal']:.0f}"
            for c in doc["sizes"]
        )
        + " (glibc returns freed blocks > 128 KiB to the OS, so every new array of that size "
        "faults its pages in again; see `bench/README.md`).",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--niter", type=int, default=100, help="iterations per timed run")
    ap.add_argument("--ref-iter", type=int, default=2000, help="iterations of the reference runs")
    args = common.parse(ap, argv)
    try:
        import pylops
        import pyproximal
    except ImportError:
        doc = {
            "benchmark": "pdhg",
            "skipped": "pyproximal is not installed (pip install pyproximal)",
        }
        common.emit(doc)
        return 0
    sizes = [run_size(n, args.niter, args.ref_iter, args.repeats) for n in SIZES]
    doc = common.record(
        "pdhg",
        args,
        pyproximal=pyproximal.__version__,
        pylops=pylops.__version__,
        sizes=sizes,
    )
    common.publish(doc, "pdhg", markdown, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
