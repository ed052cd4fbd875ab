"""Mutation testing of refinv's core modules: plant a FIXED list of mutants, one at a time,
and check that the tests of the mutated module fail on each.

Usage (from the repository root; CPU-heavy, run it niced and not in CI)::

    nice -n 10 .venv/bin/python bench/mutants.py --json mutants.json
    nice -n 10 .venv/bin/python bench/mutants.py --only report-heldout-seed,loop-tol-le
    .venv/bin/python bench/mutants.py --list        # the mutants, no test run
    .venv/bin/python bench/mutants.py --check       # every mutant applies (exact text, compiles)
    nice -n 10 .venv/bin/python bench/mutants.py --area issue-32 --jobs 2   # one area only

How: the package ``refinv/``, ``tests/`` and ``pyproject.toml`` are copied to a temporary
directory (``models/`` is linked, read-only use) and the mutant is written into THAT copy by
an exact source-text replacement (the text must occur exactly once in its file); pytest runs
there with the copy first on ``PYTHONPATH`` (``-x -q``, a time limit per mutant), then the
file is restored. The working tree is never modified. Before the mutants, every test
selection is run once on the unmutated copy and must pass (otherwise a "kill" would mean
nothing). A mutant is *killed* when its selection fails (or exceeds the time limit: a hang
that pytest-timeout turns into a failure in CI); *survived* when it passes.

Each mutant runs the test files of its module (``MODULE_TESTS``), or its own (``tests=``: the
mutants of the issue-32 area, ``--area issue-32``), narrowed with ``-k`` to the tests that
exercise the changed function, to keep the run affordable on a shared machine.

Output: one JSON document on stdout (or ``--json PATH``): per mutant ``id``, ``module``,
``status`` (killed / survived / error), ``seconds``, ``failed`` (the ids of the tests that
caught it), and the totals with the kill rate.
Survivors are listed (with the reason they are equivalent, if known) in docs/development.md.
"""

from __future__ import annotations

import argparse
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODULE_TESTS = {
    "evaluation/report.py": ["tests/test_report.py"],
    "evaluation/runs.py": ["tests/test_report.py"],
    "evaluation/metrics.py": ["tests/test_report.py"],
    "evaluation/stability.py": ["tests/test_stability.py"],
    "solvers/recovery.py": ["tests/test_recovery.py"],
    "solvers/_loop.py": ["tests/test_loop.py"],
    "solvers/generators.py": ["tests/test_generators.py"],
    "solvers/layered.py": ["tests/test_layered.py"],
    "solvers/fista.py": ["tests/test_layered.py"],
    "solvers/bregman.py": ["tests/test_bregman.py"],
    "operators/masks.py": ["tests/test_masks.py"],
    "operators/linear.py": ["tests/test_linear_ops.py"],
    "operators/activations.py": ["tests/test_activations.py"],
    "regularizers/tv.py": ["tests/test_tv.py"],
    "onnx/_chain_reader.py": ["tests/test_chain_reader.py"],
    "onnx/_chain_rules.py": ["tests/test_chain_reader.py"],
    "onnx/_chain_builder.py": ["tests/test_chain_reader.py"],
    "onnx/model.py": ["tests/test_onnx_model.py"],
    "onnx/loading.py": ["tests/test_onnx_model.py"],
    "engine/store.py": ["tests/test_sweep.py"],
}


@dataclass(frozen=True)
class Mutant:
    id: str
    module: str  # path under refinv/ (a .py module, or a shipped .json schema)
    old: str  # exact source text (must occur once)
    new: str
    k: str | None = None  # pytest -k expression narrowing the module's tests
    issue: bool = False  # one of the planted bugs of issue 21
    tests: tuple[str, ...] = ()  # its own test files (default: MODULE_TESTS[module])
    issue32: bool = False  # one of the 42 survivors named in issue 32
    area: str = ""  # "issue-32": the code added in that round (``--area issue-32``)


M = Mutant


def N(id, module, old, new, k, tests, named=False) -> Mutant:  # noqa: A002, N802
    """A mutant of the code added in the round of issue 32 (the audit, the ONNX guards and
    layouts, chain folding and Resize, the prox check, chunked input, provenance, store
    salvage), with its own test files; ``named``: one of the survivors the issue lists."""
    return Mutant(id, module, old, new, k, tests=tuple(tests), issue32=named, area="issue-32")


def _tests(m: Mutant) -> list[str]:
    return list(m.tests or MODULE_TESTS[m.module])


MUTANTS: list[Mutant] = [
    # ---------------------------------------------------------------- evaluation/report.py
    M(
        "report-heldout-seed",
        "engine/plan.py",
        "**shard, **common, solver",
        '**shard, **{**common, "seed": seed + (split == "test")}, solver',
        "same_masks",
        True,
    ),
    M(
        "report-accurate-1e-6",
        "evaluation/runs.py",
        '"accurate_rate": float(np.mean(finite < ACCURATE_MSE))',
        '"accurate_rate": float(np.mean(finite < 1e-6))',
        "straddling",
        True,
    ),
    M(
        "report-nan-recovered",
        "evaluation/runs.py",
        "finite = np.where(np.isnan(m), np.inf, m)",
        "finite = np.where(np.isnan(m), 0.0, m)",
        "nan_mse or diverging",
        True,
    ),
    M(
        "report-mask-agreement",
        "evaluation/report.py",
        "mask_error = float(np.mean(h != mask.reshape(h.shape)))",
        "mask_error = float(np.mean(h == mask.reshape(h.shape)))",
        "mask_error",
        True,
    ),
    M(
        "report-ae-calls",
        "evaluation/runs.py",
        'out["max_iter"] = outer * int(solver.get("inner_iter") or DEFAULTS["inner_iter"])',
        'out["max_iter"] = outer',
        "cost_as_much",
        True,
    ),
    M(
        "report-ae-inner-default",
        "evaluation/runs.py",
        'out["max_iter"] = outer * int(solver.get("inner_iter") or DEFAULTS["inner_iter"])',
        'out["max_iter"] = outer * int(solver.get("inner_iter") or 1)',
        "cost_as_much",
    ),
    M(
        "report-approx-le",
        "evaluation/runs.py",
        '"approximate_rate": float(np.mean(finite < APPROXIMATE_MSE))',
        '"approximate_rate": float(np.mean(finite <= APPROXIMATE_MSE))',
        "straddling",
    ),
    M(
        "report-accurate-le",
        "evaluation/runs.py",
        '"accurate_rate": float(np.mean(finite < ACCURATE_MSE))',
        '"accurate_rate": float(np.mean(finite <= ACCURATE_MSE))',
        "straddling",
    ),
    M(
        "report-psnr-floor",
        "evaluation/runs.py",
        "np.clip(p, 0.0, PSNR_CAP_DB)",
        "np.clip(p, -PSNR_CAP_DB, PSNR_CAP_DB)",
        "clamps",
    ),
    M(
        "report-inf-mse-kept",
        "evaluation/runs.py",
        "m = np.where(np.isfinite(m), m, np.nan)",
        "m = m",
        "clamps",
    ),
    M(
        "report-erased-fraction",
        "evaluation/report.py",
        "erased_fraction=float(1.0 - np.mean(mask)) if n else 0.0",
        "erased_fraction=float(np.mean(mask)) if n else 0.0",
        "mask_error",
    ),
    M(
        "report-known-reinsert-noisy",
        "evaluation/runs.py",
        'opts.setdefault("reinsert", not noisy)',
        'opts.setdefault("reinsert", True)',
        "reinsert",
    ),
    # ---------------------------------------------------------------- evaluation/metrics.py
    M(
        "metrics-approx-5e-3",
        "evaluation/metrics.py",
        "APPROXIMATE_MSE = 5e-4",
        "APPROXIMATE_MSE = 5e-3",
        "thresholds",
        True,
    ),
    M(
        "metrics-accurate-1e-6",
        "evaluation/metrics.py",
        "ACCURATE_MSE = 1e-7",
        "ACCURATE_MSE = 1e-6",
        "thresholds or mse_psnr",
    ),
    M(
        "metrics-range-not-squared",
        "evaluation/metrics.py",
        "10.0 * (2.0 * xp.log10(",
        "10.0 * (1.0 * xp.log10(",
        "mse_psnr",
    ),
    M(
        "metrics-mse-sum",
        "evaluation/metrics.py",
        "return xp.mean(d * d, axis=1)",
        "return xp.sum(d * d, axis=1)",
        "mse_psnr",
    ),
    M(
        "metrics-exact-not-inf",
        "evaluation/metrics.py",
        'xp.full_like(m, float("inf"))',
        "xp.full_like(m, 200.0)",
        "mse_psnr",
    ),
    # ---------------------------------------------------------------- solvers/recovery.py
    M(
        "recovery-mask-step-strict",
        "solvers/recovery.py",
        "return xp.astype(lhs <= rhs + tau, x.dtype)",
        "return xp.astype(lhs < rhs + tau, x.dtype)",
        "mask_step",
        True,
    ),
    M(
        "recovery-ae-default-100",
        "solvers/recovery.py",
        'max_iter: int = DEFAULTS["max_iter"] * DEFAULTS["inner_iter"],',
        'max_iter: int = DEFAULTS["max_iter"],',
        "same_number_of_calls",
        True,
    ),
    M(
        "recovery-v-update-denominator",
        "solvers/recovery.py",
        "return (h * y + rho * w) / (h + rho)",
        "return (h * y + rho * w) / (1.0 + rho)",
        "v_update",
    ),
    M(
        "recovery-admm-u-sign",
        "solvers/recovery.py",
        "u = vu - z  # eq. (14)",
        "u = z - vu  # eq. (14)",
        "algorithm_box",
    ),
    M(
        "recovery-admm-w",
        "solvers/recovery.py",
        "v = a + b * (z - u)",
        "v = a + b * (z + u)",
        "algorithm_box",
    ),
    M(
        "recovery-reinsert-swapped",
        "solvers/recovery.py",
        "x = h * y_ + (1 - h) * z",
        "x = h * z + (1 - h) * y_",
        "reinsertion",
    ),
    M(
        "recovery-mask-channels-max",
        "solvers/recovery.py",
        "lhs = xp.sum(lhs, axis=1, keepdims=True)\n        rhs = xp.sum(",
        "lhs = xp.max(lhs, axis=1, keepdims=True)\n        rhs = xp.sum(",
        "mask_step",
    ),
    M(
        "recovery-residual-vs-data",
        "solvers/recovery.py",
        "return RecoveryState(x, z, u, h, y_), relative_change(xp, x, s.x)",
        "return RecoveryState(x, z, u, h, y_), relative_change(xp, x, s.y)",
        "reinsertion",
    ),
    M(
        "recovery-init-ones",
        "solvers/recovery.py",
        "return expand_mask(np.ones(pshape, dtype=bool), sshape, b, like=y)",
        "return expand_mask(np.zeros(pshape, dtype=bool), sshape, b, like=y)",
        "initial_masks",
    ),
    M(
        "recovery-tol-zero-refused",
        "solvers/recovery.py",
        "if not (t >= 0 and math.isfinite(t)):",
        "if not (t > 0 and math.isfinite(t)):",
        "algorithm_box",
    ),
    M(
        "recovery-blind-no-mask-step",
        "solvers/recovery.py",
        "        estimate_mask=True,",
        "        estimate_mask=False,",
        "algorithm_box",
    ),
    # ---------------------------------------------------------------- solvers/_loop.py
    M(
        "loop-relative-change-new-norm",
        "solvers/_loop.py",
        "o = xp.reshape(old, (b, -1))",
        "o = xp.reshape(new, (b, -1))",
        "relative_change",
        True,
    ),
    M(
        "loop-tol-le",
        "solvers/_loop.py",
        "conv = (res_h < tol) & ~div",
        "conv = (res_h <= tol) & ~div",
        "tol_zero or equal_to_tol",
        True,
    ),
    M(
        "loop-blowup-factor",
        "solvers/_loop.py",
        "(xmax > blowup)",
        "(xmax > 10 * blowup)",
        "divergence",
    ),
    M(
        "loop-iterations-off-by-one",
        "solvers/_loop.py",
        "iterations[active] = k\n",
        "iterations[active] = k - 1\n",
        "max_iter_and_tol_zero",
    ),
    M(
        "loop-order-not-inverted",
        "solvers/_loop.py",
        "inv[order] = np.arange(order.size)",
        "inv[:] = order",
        "own_state",
    ),
    M(
        "loop-callback-ignored",
        "solvers/_loop.py",
        "stop_cb = bool(callback(k, cur, res))",
        "stop_cb = bool(callback(k, cur, res)) and False",
        "callback",
    ),
    # ---------------------------------------------------------------- operators/masks.py
    M(
        "masks-center-round-up",
        "operators/masks.py",
        "r, c = (H - size) // 2, (W - size) // 2",
        "r, c = (H - size + 1) // 2, (W - size + 1) // 2",
        "center_square_geometry",
        True,
    ),
    M(
        "masks-noise-observed-only",
        "operators/masks.py",
        "y = y + from_numpy(e.astype(np.dtype(str(x.dtype))), like=x)",
        "y = y + h * from_numpy(e.astype(np.dtype(str(x.dtype))), like=x)",
        "noise",
        True,
    ),
    M(
        "masks-random-floor",
        "operators/masks.py",
        "k = round(fraction * npix)",
        "k = int(fraction * npix)",
        "exact_fraction",
    ),
    M(
        "masks-half-floor",
        "operators/masks.py",
        "hh, hw = (H + 1) // 2, (W + 1) // 2",
        "hh, hw = H // 2, W // 2",
        "deterministic",
    ),
    M(
        "masks-stripes-phase",
        "operators/masks.py",
        "keep = (np.arange(H) // width) % 2 == 0",
        "keep = (np.arange(H) // width) % 2 == 1",
        "deterministic",
    ),
    M(
        "masks-grid-complement",
        "operators/masks.py",
        "rows = np.arange(H) % step == 0",
        "rows = np.arange(H) % step != 0",
        "deterministic",
    ),
    M(
        "masks-erase-nothing",
        "operators/masks.py",
        "    y = h * x\n",
        "    y = x * 1.0\n",
        "erase_all_channels",
    ),
    M(
        "masks-parse-random-complement",
        "operators/masks.py",
        'return MaskSpec("random", (p,), text)',
        'return MaskSpec("random", (1.0 - p,), text)',
        "parse_grammar or differ",
    ),
    # ---------------------------------------------------------------- evaluation/stability.py
    M(
        "stability-jacobian-transposed",
        "evaluation/stability.py",
        "out[b] = ((fp[:n] - fp[n:]) / (2.0 * eps)).T",
        "out[b] = (fp[:n] - fp[n:]) / (2.0 * eps)",
        "jacobian",
        True,
    ),
    M(
        "stability-matrix-transposed",
        "evaluation/stability.py",
        "return _linearized_step(lambda s: J @ s, d, np.eye(2 * n))",
        "return _linearized_step(lambda s: J.T @ s, d, np.eye(2 * n))",
        "brute_force",
    ),
    M(
        "stability-d-numerator",
        "evaluation/stability.py",
        "return rho / (np.asarray(h, dtype=np.float64) + rho)",
        "return np.asarray(h, dtype=np.float64) / (np.asarray(h, dtype=np.float64) + rho)",
        "brute_force",
    ),
    M(
        "stability-u-update",
        "evaluation/stability.py",
        "return np.concatenate([dz2, du + dv - dz2])",
        "return np.concatenate([dz2, du - dv + dz2])",
        "brute_force",
    ),
    M(
        "stability-z-update",
        "evaluation/stability.py",
        "dz2 = J_times(dv + du)",
        "dz2 = J_times(dv - du)",
        "brute_force",
    ),
    M(
        "stability-jvp-scale",
        "evaluation/stability.py",
        "* (scale / (2.0 * eps))",
        "* (scale / eps)",
        "nonsymmetric_affine",
    ),
    # ---------------------------------------------------------------- solvers/generators.py
    M(
        "generators-gd-step-not-squared",
        "solvers/generators.py",
        "np.linalg.norm(lay.weight, 2) ** 2 for lay in net.chain",
        "np.linalg.norm(lay.weight, 2) for lay in net.chain",
        "default_step",
        True,
    ),
    M(
        "generators-norm-step-squared",
        "solvers/generators.py",
        "float(1.0 / np.prod([np.linalg.norm(lay.weight, 2) for lay in ch]))",
        "float(1.0 / np.prod([np.linalg.norm(lay.weight, 2) ** 2 for lay in ch]))",
        "step_size_rules",
    ),
    M(
        "generators-gaussian-step",
        "solvers/generators.py",
        "return float(2**d)",
        "return float(2 * d)",
        "step_size_rules",
    ),
    M(
        "generators-leaky-constant",
        "solvers/generators.py",
        "return 0.5 * (1.0 + float(np.mean(act.slope)))",
        "return 0.5 * (1.0 - float(np.mean(act.slope)))",
        "leaky_constant or monte_carlo",
    ),
    M(
        "generators-backward-activation",
        "solvers/generators.py",
        "g = (g * activation_derivative(self.acts[i], pres[i])) @ self.weights[i]",
        "g = (g * apply_activation(self.acts[i], pres[i])) @ self.weights[i]",
        "finite_differences or monte_carlo",
    ),
    M(
        "generators-plugin-sign",
        "solvers/generators.py",
        "x_new = s.x - eta * (resid @ Pt)",
        "x_new = s.x + eta * (resid @ Pt)",
        "expansive",
    ),
    M(
        "generators-best-start-argmax",
        "solvers/generators.py",
        "best = np.argmin(err, axis=0)",
        "best = np.argmax(err, axis=0)",
        "restarts",
    ),
    # ---------------------------------------------------------------- solvers/layered.py, fista.py
    M(
        "layered-support-threshold",
        "solvers/layered.py",
        "thr = support_tol * xp.maximum(mx, xp.zeros_like(mx))",
        "thr = 0.5 * xp.maximum(mx, xp.zeros_like(mx))",
        "oracle_equals or unique_regime",
    ),
    M(
        "layered-refit-guard",
        "solvers/layered.py",
        "ok = xp.sum(T, axis=1, keepdims=True) <= xp.sum(rows, axis=1, keepdims=True)",
        "ok = xp.sum(T, axis=1, keepdims=True) >= xp.sum(rows, axis=1, keepdims=True)",
        "refit_on_support",
    ),
    M(
        "layered-admm-a-sign",
        "solvers/layered.py",
        "a = -xp.maximum(s.u - p_new, xp.zeros_like(p_new)) * s.Sc",
        "a = xp.maximum(s.u - p_new, xp.zeros_like(p_new)) * s.Sc",
        "middle_layer",
    ),
    M(
        "layered-relu-output-rows",
        "solvers/layered.py",
        "rows = xp.astype(yf > 0, yf.dtype)",
        "rows = xp.astype(yf >= 0, yf.dtype)",
        "relu_output",
    ),
    M(
        "fista-soft-threshold-sign",
        "solvers/fista.py",
        "return xp.sign(u) * xp.maximum(xp.abs(u) - tau, xp.zeros_like(u))",
        "return u * xp.maximum(xp.abs(u) - tau, xp.zeros_like(u))",
        "lasso_fista_kkt",
    ),
    M(
        "fista-prox-threshold",
        "solvers/fista.py",
        "u = prox(s.v - st * g, st)",
        "u = prox(s.v - st * g, 0.5 * st)",
        "lasso_fista_kkt",
    ),
    # ---------------------------------------------------------------- solvers/bregman.py
    M(
        "bregman-pdhg-no-overrelaxation",
        "solvers/bregman.py",
        "z_new = tvr.project(z + (tau_z * alpha) * (2.0 * gx_new - gx))",
        "z_new = tvr.project(z + (tau_z * alpha) * gx_new)",
        "by_hand",
        True,
    ),
    M(
        "bregman-cd-hidden-step-layer",
        "solvers/bregman.py",
        "tau_hidden = [1.99 / norms[lo + 1] ** 2 for lo in range(L - 1)]",
        "tau_hidden = [1.99 / norms[lo] ** 2 for lo in range(L - 1)]",
        "hidden_steps",
        True,
    ),
    M(
        "bregman-div-sign",
        "solvers/bregman.py",
        "x_new = x - tau_x * (data_grad - alpha * G.div(z))",
        "x_new = x - tau_x * (data_grad + alpha * G.div(z))",
        "by_hand",
    ),
    M(
        "bregman-tau-z",
        "solvers/bregman.py",
        "tau_z = 1.0 / (8.0 * alpha)",
        "tau_z = 1.0 / (4.0 * alpha)",
        "cd_steps_option",
    ),
    M(
        "bregman-safe-steps",
        "solvers/bregman.py",
        "tau_x = 0.99 / (op_norm**2 / 2 + 8.0 * tau_z * alpha**2)",
        "tau_x = 0.99 / (op_norm**2 + 8.0 * tau_z * alpha**2)",
        "cd_steps_option",
    ),
    M(
        "bregman-landweber-level",
        "solvers/bregman.py",
        "_norm(xp, r_new) / lev  # Morozov",
        "_norm(xp, r_new) / lev * 0.5  # Morozov",
        "discrepancy",
    ),
    # ---------------------------------------------------------------- regularizers/tv.py
    M(
        "tv-projection-p2",
        "regularizers/tv.py",
        "return z / xp.expand_dims(xp.maximum(nrm, one), axis=-1)",
        "return z / xp.expand_dims(nrm + one, axis=-1)",
        "projection",
    ),
    M(
        "tv-anisotropic-value",
        "regularizers/tv.py",
        "pix = xp.abs(g[..., 0]) + xp.abs(g[..., 1])",
        "pix = xp.maximum(xp.abs(g[..., 0]), xp.abs(g[..., 1]))",
        "step_edge or per_channel",
    ),
    M(
        "tv-fgp-step",
        "regularizers/tv.py",
        "step = 1.0 / (8.0 * lam)",
        "step = 1.0 / (2.0 * lam)",
        "duality_gap",
    ),
    M(
        "tv-prox-sign",
        "regularizers/tv.py",
        "return v + lam * G.div(p_old), p_old",
        "return v - lam * G.div(p_old), p_old",
        "duality_gap",
    ),
    # ---------------------------------------------------------------- operators/linear.py, activations
    M(
        "linear-dense-adjoint",
        "operators/linear.py",
        "return xp.reshape(flat @ self.W, (y.shape[0], *self.in_shape))",
        "return xp.reshape(flat @ xp.abs(self.W), (y.shape[0], *self.in_shape))",
        "dense_adjoint",
    ),
    M(
        "linear-gradient-direction",
        "operators/linear.py",
        "d0 = xp.concat([x[..., 1:, :] - x[..., :-1, :], zr], axis=-2)",
        "d0 = xp.concat([zr, x[..., 1:, :] - x[..., :-1, :]], axis=-2)",
        "gradient",
    ),
    M(
        "linear-div-boundary",
        "operators/linear.py",
        "parts.append(-sl(n - 2, n - 1))",
        "parts.append(sl(n - 2, n - 1))",
        "gradient",
    ),
    M(
        "linear-operator-norm-sqrt",
        "operators/linear.py",
        "new = math.sqrt(nrm)",
        "new = nrm",
        "operator_norm",
    ),
    M(
        "activations-leaky-prox",
        "operators/activations.py",
        "return xp.where(v >= 0, v, v / (1.0 + c * (1.0 / a - 1.0)))",
        "return xp.where(v >= 0, v, v / (1.0 + c * (1.0 - a)))",
        "prox_of_psi",
    ),
    # ---------------------------------------------------------------- onnx/_chain_reader.py
    M(
        "chain-sub-sign",
        "onnx/_chain_rules.py",
        "b.elementwise(one, -k, n.lbl) if first else b.elementwise(-one, k, n.lbl)",
        "b.elementwise(one, k, n.lbl) if first else b.elementwise(-one, k, n.lbl)",
        "sub_bias",
        True,
    ),
    M(
        "chain-leaky-default",
        "onnx/_chain_rules.py",
        'float(n.a.get("alpha", 0.01))',
        'float(n.a.get("alpha", 0.1))',
        "leaky_relu_without",
        True,
    ),
    M(
        "chain-bn-convtranspose-as-conv",
        "onnx/_chain_builder.py",
        'if o["kind"] == "conv_transpose":  # weight',
        'if o["kind"] == "conv_transposed":  # weight',
        "batchnorm_after_conv_transpose",
        True,
    ),
    M(
        "chain-bn-bias",
        "onnx/_chain_rules.py",
        'o["bias"] = s * (bias - mean) + beta',
        'o["bias"] = s * bias - mean + beta',
        "random_mlp or matmul_add",
    ),
    M(
        "chain-gemm-alpha",
        "onnx/_chain_rules.py",
        'wt = float(a.get("alpha", 1.0)) * wt',
        "wt = 1.0 * wt",
        "random_mlp",
    ),
    M(
        "chain-matmul-transpose",
        "onnx/_chain_rules.py",
        "_open_dense(w, n, *w.b.dense_inputs(wt.T.copy(), None))",
        "_open_dense(w, n, *w.b.dense_inputs(wt.copy(), None))",
        "matmul_add",
    ),
    M(
        "chain-bias-accumulate",
        "onnx/_chain_builder.py",
        'o["bias"] = c.copy() if bias is None else s * bias + c',
        'o["bias"] = c.copy()',
        "sub_bias or matmul_add or random_mlp",
    ),
    # ---------------------------------------------------------------- onnx/loading.py guards
    M(
        "guard-dotdot-removed",
        "onnx/loading.py",
        'if ".." in p.parts or ".." in location.replace("\\\\", "/").split("/"):',
        "if False:",
        "external",
        True,
    ),
    M(
        "guard-resolve-removed",
        "onnx/loading.py",
        "if full != base and base not in full.parents:",
        "if False:",
        "external",
    ),
    M(
        "guard-absolute-removed",
        "onnx/loading.py",
        "        p.is_absolute()\n        or location.startswith",
        "        False\n        and location.startswith",
        "external",
    ),
    M(
        "guard-opset-range",
        "onnx/loading.py",
        "if not MIN_OPSET <= default <= MAX_OPSET:",
        "if not MIN_OPSET <= default:",
        "opset",
    ),
    # ---------------------------------------------------------------- engine/store.py
    M(
        "store-task-row-first",
        "engine/store.py",
        "        with self._tx():\n            # a retried failed task",
        '        self._task_row(task, "done", None, out["seconds"], out["onnx_seconds"], version)\n'
        "        with self._tx():\n            # a retried failed task",
        "store_failing",
        True,
    ),
    M(
        "store-no-rollback",
        "engine/store.py",
        'self.conn.execute("ROLLBACK")',
        'self.conn.execute("COMMIT")',
        "store_failing",
    ),
    # ================================================================ the round of issue 32
    # each with its own tests; named=True: one of the 42 survivors the issue lists
    # ---------------------------------------------------------------- stability, prox check
    N(
        "stability-auto-strict",
        "evaluation/stability.py",
        'return "dense" if n <= max_dim else "arnoldi"',
        'return "dense" if n < max_dim else "arnoldi"',
        "max_dim",
        ["tests/test_prox_check_exact.py"],
        True,
    ),
    N(
        "stability-dense-refused-at-max-dim",
        "evaluation/stability.py",
        'if method == "dense" and n > max_dim:',
        'if method == "dense" and n >= max_dim:',
        "max_dim",
        ["tests/test_prox_check_exact.py"],
    ),
    N(
        "prox-symmetric-strict",
        "evaluation/prox.py",
        'st["symmetric"] = st["asymmetry"] <= sym_tol',
        'st["symmetric"] = st["asymmetry"] < sym_tol',
        None,
        ["tests/test_prox_check_exact.py"],
        True,
    ),
    N(
        "prox-no-eig-tol",
        "evaluation/prox.py",
        'st["eig_min"] >= -eig_tol and st["eig_max"] <= 1.0 + eig_tol',
        'st["eig_min"] >= 0.0 and st["eig_max"] <= 1.0',
        None,
        ["tests/test_prox_check_exact.py"],
        True,
    ),
    N(
        "prox-any-point",
        "evaluation/prox.py",
        '"is_prox": bool(all(ok)),',
        '"is_prox": bool(any(ok)),',
        None,
        ["tests/test_prox_check_exact.py"],
        True,
    ),
    N(
        "prox-asymmetry-unnormalised",
        "evaluation/prox.py",
        "asym = float(np.linalg.norm(J - J.T)) / nrm if nrm > 0 else 0.0",
        "asym = float(np.linalg.norm(J - J.T))",
        None,
        ["tests/test_prox_check_exact.py"],
        True,
    ),
    N(
        "prox-eigenvalues-of-J",
        "evaluation/prox.py",
        "ev = np.linalg.eigvalsh(0.5 * (J + J.T))",
        "ev = np.linalg.eigvalsh(J)",
        None,
        ["tests/test_prox_check_exact.py"],
    ),
    N(
        "prox-n-ignored",
        "evaluation/prox.py",
        "    x = x[:n]\n",
        "    n = total\n",
        None,
        ["tests/test_prox_check_exact.py"],
    ),
    # ---------------------------------------------------------------- chunked input, provenance
    N(
        "chunked-inf-passes",
        "evaluation/chunked.py",
        "if not np.all(np.isfinite(a)):",
        "if np.any(np.isnan(a)):",
        "chunked",
        ["tests/test_inputs_exact.py"],
        True,
    ),
    N(
        "provenance-folder-hashed",
        "provenance.py",
        '"sha256": file_sha256(p) if p.is_file() else None',
        '"sha256": file_sha256(p) if p.exists() else None',
        "provenance",
        ["tests/test_inputs_exact.py"],
        True,
    ),
    N(
        "schema-input-sha256-optional",
        "schemas/provenance.json",
        '"required": ["path", "sha256"],',
        '"required": ["path"],',
        "provenance",
        ["tests/test_inputs_exact.py"],
        True,
    ),
    N(
        "schema-input-sha256-any-case",
        "schemas/provenance.json",
        '"pattern": "^[0-9a-f]{64}$"',
        '"pattern": "^[0-9a-fA-F]{64}$"',
        "provenance",
        ["tests/test_inputs_exact.py"],
    ),
    # ---------------------------------------------------------------- store salvage, opening
    N(
        "salvage-bisect-drops-a-row",
        "engine/store.py",
        "stack += [(mid + 1, hi), (lo, mid)]",
        "stack += [(mid + 2, hi), (lo, mid)]",
        "bisection",
        ["tests/test_store_salvage_exact.py"],
        True,
    ),
    N(
        "salvage-bisect-stops-at-pairs",
        "engine/store.py",
        "            if lo < hi:\n                mid = (lo + hi) // 2",
        "            if lo + 1 < hi:\n                mid = (lo + hi) // 2",
        "bisection",
        ["tests/test_store_salvage_exact.py"],
    ),
    N(
        "salvage-bisect-order",
        "engine/store.py",
        "stack += [(mid + 1, hi), (lo, mid)]",
        "stack += [(lo, mid), (mid + 1, hi)]",
        "bisection",
        ["tests/test_store_salvage_exact.py"],
    ),
    N(
        "salvage-key-columns-unchecked",
        "engine/store.py",
        "and all(tuple(r[:6]) == tuple(t[:6]) for r in rows)",
        "and all(r[0] == t[0] for r in rows)",
        "not_whole",
        ["tests/test_store_salvage_exact.py"],
        True,
    ),
    N(
        "salvage-failed-task-kept",
        "engine/store.py",
        't[8] == "done"\n',
        't[8] in ("done", "failed")\n',
        "not_whole",
        ["tests/test_store_salvage_exact.py"],
    ),
    N(
        "salvage-incomplete-task-kept",
        "engine/store.py",
        "and [r[6] for r in rows] == list(range(start, stop))",
        "and {r[6] for r in rows} <= set(range(start, stop))",
        "not_whole",
        ["tests/test_store_salvage_exact.py"],
    ),
    N(
        "salvage-some-tables",
        "engine/store.py",
        "if not set(_TABLES) - _OPTIONAL <= names:",
        "if not set(_TABLES) & names:",
        "some_of_refinvs_tables",
        ["tests/test_store_salvage_exact.py"],
    ),
    N(
        "store-open-some-tables",
        "engine/store.py",
        "if theirs or (tables and not set(_TABLES) - _OPTIONAL <= set(tables)):",
        "if theirs:",
        "some_of_refinvs_tables",
        ["tests/test_store_salvage_exact.py"],
        True,
    ),
    # ---------------------------------------------------------------- ONNX guards, layouts
    N(
        "guard-folder-by-prefix",
        "onnx/loading.py",
        "if full != base and base not in full.parents:",
        "if not str(full).startswith(str(base)):",
        "symlink",
        ["tests/test_onnx_limits_exact.py"],
        True,
    ),
    N(
        "guard-symlink-unresolved",
        "onnx/loading.py",
        "full = (base / p).resolve()",
        "full = base / p",
        "symlink",
        ["tests/test_onnx_limits_exact.py"],
    ),
    N(
        "guard-external-uncounted",
        "onnx/loading.py",
        "    budget[0] -= length\n",
        "    budget[0] -= 0\n",
        "external_bytes",
        ["tests/test_onnx_limits_exact.py"],
        True,
    ),
    N(
        "guard-external-budget-le",
        "onnx/loading.py",
        "    if budget[0] < 0:\n",
        "    if budget[0] <= 0:\n",
        "external_bytes",
        ["tests/test_onnx_limits_exact.py"],
    ),
    N(
        "guard-bytes-size-dropped",
        "onnx/loading.py",
        "        if len(data) > budget[0]:\n            raise ResourceLimitError(\n"
        '                f"{label}: {len(data)} bytes',
        "        if False:\n            raise ResourceLimitError(\n"
        '                f"{label}: {len(data)} bytes',
        "given_as_bytes",
        ["tests/test_onnx_limits_exact.py"],
        True,
    ),
    N(
        "guard-bytes-size-ge",
        "onnx/loading.py",
        "        if len(data) > budget[0]:\n            raise ResourceLimitError(\n"
        '                f"{label}: {len(data)} bytes',
        "        if len(data) >= budget[0]:\n            raise ResourceLimitError(\n"
        '                f"{label}: {len(data)} bytes',
        "given_as_bytes",
        ["tests/test_onnx_limits_exact.py"],
    ),
    N(
        "guard-node-limit-ge",
        "onnx/loading.py",
        "if max_nodes > 0 and len(nodes) > max_nodes:",
        "if max_nodes > 0 and len(nodes) >= max_nodes:",
        "node_limit",
        ["tests/test_onnx_limits_exact.py"],
        True,
    ),
    N(
        "guard-node-limit-main-graph",
        "onnx/loading.py",
        "if max_nodes > 0 and len(nodes) > max_nodes:",
        "if max_nodes > 0 and len(model.graph.node) > max_nodes:",
        "node_limit",
        ["tests/test_onnx_limits_exact.py"],
        True,
    ),
    N(
        "guard-sparse-per-tensor",
        "onnx/loading.py",
        "dense_total += prod(sp.dims)",
        "dense_total = prod(sp.dims)",
        "sparse",
        ["tests/test_onnx_limits_exact.py"],
        True,
    ),
    N(
        "guard-sparse-limit-ge",
        "onnx/loading.py",
        "if dense_total > sparse_limit > 0:",
        "if dense_total >= sparse_limit > 0:",
        "sparse",
        ["tests/test_onnx_limits_exact.py"],
    ),
    N(
        "guard-sparse-index-eq-dim",
        "onnx/loading.py",
        "if ind.min() < 0 or np.any(ind >= hi):",
        "if ind.min() < 0 or np.any(ind > hi):",
        "sparse",
        ["tests/test_onnx_limits_exact.py"],
    ),
    N(
        "probe-batch3-shape-unchecked",
        "onnx/model.py",
        "if len(ys) == 2 and ys[1].shape[1:] != y.shape[1:]:",
        "if False:",
        "depends_on_the_batch",
        ["tests/test_onnx_limits_exact.py"],
        True,
    ),
    N(
        "layout-nhwc-output-any-shape",
        "onnx/model.py",
        "if not converted or self._out_shape != self.onnx_sample_shape:",
        "if not converted:",
        "nhwc",
        ["tests/test_onnx_limits_exact.py"],
        True,
    ),
    N(
        "layout-transpose-first-consumer",
        "onnx/layout.py",
        'if len(users) != 1 or users[0].op_type != "Transpose":',
        'if not users or users[0].op_type != "Transpose":',
        "only_consumer",
        ["tests/test_onnx_limits_exact.py"],
        True,
    ),
    # ---------------------------------------------------------------- chain folding, Resize
    N(
        "chain-tile-reps-off-by-one",
        "onnx/_chain_rules.py",
        "new_idx = np.tile(cur, [int(r) for r in reps[1:]]).reshape(-1)",
        "new_idx = np.tile(cur, [int(r) for r in reps[:-1]]).reshape(-1)",
        "tile",
        ["tests/test_chain_exact.py"],
        True,
    ),
    N(
        "chain-gather-open-bias-unpermuted",
        "onnx/_chain_builder.py",
        '            if o.get("bias") is not None:\n                o["bias"] = o["bias"][idx]\n',
        "",
        "tile or permutation",
        ["tests/test_chain_exact.py"],
        True,
    ),
    N(
        "chain-gather-closed-bias-unpermuted",
        "onnx/_chain_builder.py",
        "bias=None if lay.bias is None else lay.bias[idx],",
        "bias=lay.bias,",
        "permutation",
        ["tests/test_chain_exact.py"],
    ),
    N(
        "chain-grouped-conv-interleaved",
        "onnx/_chain_builder.py",
        "chan = (np.arange(m) // (m // grp))[:, None] * cg",
        "chan = (np.arange(m) % grp)[:, None] * cg",
        "grouped",
        ["tests/test_chain_exact.py"],
        True,
    ),
    N(  # EQUIVALENT (issue 32): a Tile along the batch axis changes the batch, which the
        # same condition's batch check refuses anyway
        "chain-tile-batch-reps-unchecked",
        "onnx/_chain_rules.py",
        "or (reps is not None and int(reps[0]) != 1)",
        "or False",
        "tile",
        ["tests/test_chain_exact.py"],
    ),
    N(
        "resize-prefer-floor-half-up",
        "onnx/_chain_rules.py",
        '    if mode == "round_prefer_floor":\n        i = np.ceil(x - 0.5)',
        '    if mode == "round_prefer_floor":\n        i = np.floor(x + 0.5)',
        "round_prefer",
        ["tests/test_chain_exact.py"],
        True,
    ),
    N(
        "resize-prefer-ceil-half-down",
        "onnx/_chain_rules.py",
        '    elif mode == "round_prefer_ceil":\n        i = np.floor(x + 0.5)',
        '    elif mode == "round_prefer_ceil":\n        i = np.ceil(x - 0.5)',
        "round_prefer",
        ["tests/test_chain_exact.py"],
    ),
    N(
        "resize-pending-scale-hw-swapped",
        "onnx/_chain_builder.py",
        "elementwise(*(upsample(p, old, factors) for p in pre), lbl)",
        "elementwise(*(upsample(p, old, factors[::-1]) for p in pre), lbl)",
        "non_square",
        ["tests/test_chain_exact.py"],
        True,
    ),
    N(
        "resize-upsample-axes-swapped",
        "onnx/_chain_builder.py",
        "np.repeat(np.repeat(x, factors[0], axis=1), factors[1], axis=2)",
        "np.repeat(np.repeat(x, factors[1], axis=1), factors[0], axis=2)",
        "non_square",
        ["tests/test_chain_exact.py"],
    ),
    # ---------------------------------------------------------------- audit (issue 26's code)
    N(
        "audit-reconstruction-sign",
        "audit/score.py",
        '"reconstruction": {s: -found.recon[label0][s] for s in cols},',
        '"reconstruction": {s: found.recon[label0][s] for s in cols},',
        "reconstruction_score",
        ["tests/test_audit_exact.py"],
        True,
    ),
    N(
        "audit-stability-sign",
        "audit/score.py",
        '"stability": {s: -r for s, r in _tied(',
        '"stability": {s: r for s, r in _tied(',
        "stability_score",
        ["tests/test_audit_exact.py"],
        True,
    ),
    N(
        "audit-stability-no-ties",
        "audit/score.py",
        '"stability": {s: -r for s, r in _tied(found.radius, stability["tie_rtol"]).items()},',
        '"stability": {s: -found.radius[s] for s in cols},',
        "stability_ties",
        ["tests/test_audit_exact.py"],
    ),
    N(
        "audit-accurate-rate-counts-approximate",
        "audit/score.py",
        'out["accurate_rate"] = clopper_pearson(int(np.sum(m < ACCURATE_MSE)), n, confidence)',
        'out["accurate_rate"] = clopper_pearson(int(np.sum(m < APPROXIMATE_MSE)), n, confidence)',
        "clopper_pearson_of_the_counts",
        ["tests/test_audit_exact.py"],
        True,
    ),
    N(
        "verdict-fisher-splits-swapped",
        "audit/verdict.py",
        '"p_value": fisher_greater(k["train"], n["train"], k["test"], n["test"]),',
        '"p_value": fisher_greater(k["test"], n["test"], k["train"], n["train"]),',
        "fisher",
        ["tests/test_audit_exact.py"],
        True,
    ),
    N(
        "audit-gallery-reversed",
        "audit/core.py",
        "-np.nan_to_num(gain_tr, nan=-np.inf)))",
        "np.nan_to_num(gain_tr, nan=np.inf)))",
        "gallery",
        ["tests/test_audit_exact.py"],
        True,
    ),
    N(
        "audit-best-keeps-the-worst",
        "audit/score.py",
        "        better = m < best_mse\n",
        "        better = m > best_mse\n",
        "best_setting",
        ["tests/test_audit_exact.py"],
        True,
    ),
    N(
        "audit-approximate-at-the-exact-threshold",
        "audit/score.py",
        "approx |= extracted(m, p, c, APPROXIMATE_MSE)",
        "approx |= extracted(m, p, c, ACCURATE_MSE)",
        "exposure_counts",
        ["tests/test_audit_exact.py"],
    ),
    N(
        "audit-headline-erased-share",
        "audit/core.py",
        'r["mask"]: 1.0 - r["erased_fraction"]',
        'r["mask"]: r["erased_fraction"]',
        "headline",
        ["tests/test_audit_exact.py"],
        True,
    ),
    N(
        "audit-control-rate-psnr-sign",
        "audit/core.py",
        "k_acc = int(np.sum(10 ** (-np.asarray(psnr_c) / 10) < ACCURATE_MSE))",
        "k_acc = int(np.sum(10 ** (np.asarray(psnr_c) / 10) < ACCURATE_MSE))",
        "control",
        ["tests/test_audit_exact.py"],
        True,
    ),
    N(
        "audit-control-other-masks",
        "engine/work.py",
        "parse_mask(unit.mask), seed=unit.seed,\n",
        "parse_mask(unit.mask), seed=unit.seed + 1,\n",
        "control",
        ["tests/test_audit_exact.py"],
        True,
    ),
    N(
        "audit-resume-key-without-solver",
        "engine/plan.py",
        'noise=d["noise_std"], solver=d["solver"]',
        'noise=d["noise_std"]',
        "resume_key",
        ["tests/test_audit_exact.py"],
        True,
    ),
    N(
        "audit-cache-read-without-resume",
        "audit/core.py",
        "    if not resume:\n        for p in (path,",
        "    if False:\n        for p in (path,",
        "not_read_without_resume",
        ["tests/test_audit_exact.py"],
        True,
    ),
    # ---------------------------------------------------------------- membership statistics
    N(
        "membership-point-at-target-excluded",
        "audit/membership.py",
        "ok = np.flatnonzero(fp <= k)",
        "ok = np.flatnonzero(fp < k)",
        "operating_point or target_fpr",
        ["tests/test_membership_exact.py", "tests/test_audit_stats.py"],
        True,
    ),
    N(
        "stats-clopper-pearson-alpha-not-halved",
        "audit/stats.py",
        "    a = (1.0 - confidence) / 2.0\n",
        "    a = 1.0 - confidence\n",
        "clopper_pearson",
        ["tests/test_membership_exact.py", "tests/test_audit_stats.py"],
        True,
    ),
    N(
        "membership-min-fpr-from-members",
        "audit/membership.py",
        '"min_nonzero_fpr": 1.0 / n0,',
        '"min_nonzero_fpr": 1.0 / n1,',
        "min_nonzero_fpr",
        ["tests/test_membership_exact.py", "tests/test_audit_stats.py"],
        True,
    ),
    N(
        "stats-permutation-within-members",
        "audit/stats.py",
        "perm = rng.permuted(np.broadcast_to(np.arange(n), (b, n)), axis=1)[:, :n1]",
        "perm = rng.permuted(np.broadcast_to(np.arange(n1), (b, n1)), axis=1)",
        "permutation",
        ["tests/test_membership_exact.py", "tests/test_audit_stats.py"],
        True,
    ),
    N(
        "stats-auc-z-not-halved",
        "audit/stats.py",
        "return float(norm.ppf(0.5 + confidence / 2.0))",
        "return float(norm.ppf(confidence))",
        "newcombe",
        ["tests/test_membership_exact.py", "tests/test_audit_stats.py"],
    ),
    N(
        "membership-k-rounded-down",
        "audit/membership.py",
        "k = int(math.floor(target * n0 + 1e-9))",
        "k = int(math.floor(target * n0 - 1e-9))",
        "operating_point or target_fpr",
        ["tests/test_membership_exact.py", "tests/test_audit_stats.py"],
    ),
]


def _copy_tree(dst: Path) -> None:
    shutil.copytree(ROOT / "refinv", dst / "refinv", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", dst / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")
    if (ROOT / "models").is_dir():
        os.symlink(ROOT / "models", dst / "models")


def _pytest_cmd(m: Mutant) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    cmd += _tests(m)
    if m.k:
        cmd += ["-k", m.k]
    return cmd


def _run(cmd: list[str], cwd: Path, timeout: float) -> tuple[str, float, str, list[str]]:
    """``(status, seconds, last line, the failing tests' ids)`` of one pytest run."""
    env = dict(os.environ, PYTHONPATH=str(cwd) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            [*cmd, "-rf"], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, "", []
    tail = (p.stdout + p.stderr).strip().splitlines()
    failed = [ln.split()[1] for ln in tail if ln.startswith("FAILED ") and len(ln.split()) > 1]
    return (
        {0: "passed", 1: "failed", 5: "no-tests"}.get(p.returncode, f"rc{p.returncode}"),
        (time.perf_counter() - t0),
        (tail[-1] if tail else ""),
        failed,
    )


def _apply(work: Path, m: Mutant) -> tuple[Path, str]:
    path = work / "refinv" / m.module
    src = path.read_text()
    count = src.count(m.old)
    if count != 1:
        raise SystemExit(f"mutant {m.id}: its text occurs {count} times in refinv/{m.module}")
    path.write_text(src.replace(m.old, m.new))
    return path, src


def _selection_key(m: Mutant) -> tuple:
    return (tuple(_tests(m)), m.k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated mutant ids")
    ap.add_argument("--area", help="only the mutants of this area (issue-32)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--check", action="store_true", help="check every mutant applies and compiles")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per test run")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (own copies)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated runs")
    ap.add_argument("--json", help="write the JSON result here (default: stdout)")
    args = ap.parse_args(argv)

    ids = [m.id for m in MUTANTS]
    assert len(set(ids)) == len(ids), "duplicate mutant ids"
    todo = MUTANTS
    if args.only:
        want = set(args.only.split(","))
        unknown = want - set(ids)
        if unknown:
            raise SystemExit(f"unknown mutant ids: {sorted(unknown)}")
        todo = [m for m in MUTANTS if m.id in want]
    if args.area:
        todo = [m for m in todo if m.area == args.area]
    if args.list:
        for m in todo:
            tag = "issue-21" if m.issue else "issue-32" if m.issue32 else ""
            print(f"{m.id:36s} refinv/{m.module:26s} {tag}")
        print(
            f"{len(todo)} mutants ({sum(m.issue for m in todo)} from issue 21, "
            f"{sum(m.issue32 for m in todo)} survivors named in issue 32)"
        )
        return 0

    with tempfile.TemporaryDirectory(prefix="refinv-mutants-") as tmp:
        copies = [Path(tmp) / f"w{j}" for j in range(max(1, args.jobs))]
        for c in copies:
            c.mkdir()
            _copy_tree(c)
        if args.check:
            for m in todo:
                path, src = _apply(copies[0], m)
                try:
                    if path.suffix == ".json":
                        json.loads(path.read_text())
                    else:
                        py_compile.compile(str(path), doraise=True)
                finally:
                    path.write_text(src)
            print(f"{len(todo)} mutants apply and compile")
            return 0
        probe = subprocess.run(
            [sys.executable, "-c", "import refinv; print(refinv.__file__)"],
            cwd=copies[0], capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=str(copies[0])),
        )  # fmt: skip
        if not probe.stdout.strip().startswith(str(copies[0])):
            raise SystemExit(f"the copy is not what gets imported: {probe.stdout!r}")

        if not args.no_baseline:
            # one unmutated run per test-file set: the union of its mutants' -k selections
            groups: dict[tuple, list] = {}
            for m in todo:
                groups.setdefault(tuple(_tests(m)), []).append(m.k)
            base = []
            for files, ks in groups.items():
                expr = None if None in ks else " or ".join(f"({k})" for k in dict.fromkeys(ks))
                cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
                base.append(cmd + list(files) + (["-k", expr] if expr else []))

            def run_base(jc):
                j, cmd = jc
                status, sec, tail, _ = _run(cmd, copies[j % len(copies)], args.timeout * 3)
                print(f"baseline {' '.join(cmd[6:])[:70]}: {status} ({sec:.0f} s) {tail}",
                      file=sys.stderr)  # fmt: skip
                return status, cmd, tail

            with ThreadPoolExecutor(max_workers=len(copies)) as ex:
                for status, cmd, tail in ex.map(run_base, enumerate(base)):
                    if status != "passed":
                        raise SystemExit(f"baseline {' '.join(cmd[6:])} does not pass: {tail}")

        def one(job: tuple[int, Mutant]) -> dict:
            j, m = job
            work = copies[j % len(copies)]
            path, src = _apply(work, m)
            try:
                status, sec, tail, failed = _run(_pytest_cmd(m), work, args.timeout)
            finally:
                path.write_text(src)
            verdict = {"failed": "killed", "timeout": "killed", "passed": "survived"}.get(
                status, "error"
            )
            print(f"{m.id:36s} {verdict:8s} {status:8s} {sec:5.0f} s  {tail}", file=sys.stderr)
            return {"id": m.id, "module": f"refinv/{m.module}", "issue_21": m.issue,
                    "issue_32": m.issue32,
                    "status": verdict, "pytest": status, "seconds": round(sec, 1),
                    "selection": " ".join(_pytest_cmd(m)[7:]), "failed": failed}  # fmt: skip

        # each worker copy is used by one mutant at a time (job j on copy j mod jobs)
        results: list[dict] = []
        with ThreadPoolExecutor(max_workers=len(copies)) as ex:
            chunks = [list(enumerate(todo))[i :: len(copies)] for i in range(len(copies))]

            def worker(chunk):
                return [one(job) for job in chunk]

            for out in ex.map(worker, chunks):
                results.extend(out)
    results.sort(key=lambda r: ids.index(r["id"]))
    killed = sum(r["status"] == "killed" for r in results)
    doc = {
        "n_mutants": len(results),
        "killed": killed,
        "survived": [r["id"] for r in results if r["status"] == "survived"],
        "errors": [r["id"] for r in results if r["status"] == "error"],
        "kill_rate": round(killed / len(results), 4) if results else None,
        "issue_21_killed": sum(r["status"] == "killed" for r in results if r["issue_21"]),
        "issue_21_total": sum(r["issue_21"] for r in results),
        "issue_32_killed": sum(r["status"] == "killed" for r in results if r["issue_32"]),
        "issue_32_total": sum(r["issue_32"] for r in results),
        "command": " ".join(
            [Path(sys.executable).name, "bench/mutants.py", *(argv or sys.argv[1:])]
        ),
        "mutants": results,
    }
    text = json.dumps(doc, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    return 0 if not doc["survived"] and not doc["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
