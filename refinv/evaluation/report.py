"""The memorization report: how much of its training set can be recovered from an autoencoder.

For each model checkpoint x mask x method, degrade the training images AND
held-out images with the same masks, recover them, and compare: per-sample
MSE/PSNR, the accurate (MSE < 1e-7) and approximate (MSE < 5e-4) recovery
rates and the mean PSNR, train and held-out side by side (the held-out rate
must be near 0 for the train rate to measure memorization).

Reproducibility: for a given ``seed`` the masks of a split are drawn from
``numpy.random.default_rng(seed)`` (image ``i`` of the training set and image
``i`` of the held-out set get the same mask, so the two columns differ only by
memorization); the blind solver's Bernoulli initial mask uses
``default_rng([seed, 1])`` and noise ``default_rng([seed, 2])``.

The control (``control=True``; by default wherever scikit-image is importable): the
same degraded images, masks and splits filled in WITHOUT the model by biharmonic
inpainting (:mod:`refinv.evaluation.control`), so that every rate has a model-free
rate beside it: an approximate rate that the control matches on training images
says nothing about memorization.

JSON schema (``SCHEMA_VERSION = 2``, stable; documented in docs/cli.md; version 2
added ``control``)::

    {
      "schema_version": 2, "tool": "refinv", "refinv_version": str,
      "command": str, "created_utc": str,
      "thresholds": {"accurate_mse": 1e-7, "approximate_mse": 5e-4,
                     "psnr_data_range": 1.0, "psnr_cap_db": 200.0},
      "settings": {"seed": int, "noise_std": float, "masks": [str],
                   "methods": [str], "solver": {method: {option: value}}},
      # solver: every option each method ran with, defaults included
      # (:func:`effective_options`)
      "checkpoints": [{"label", "model", "sha256", "train_loss", "test_loss",
                       "layout": {"layout", "layout_source", "onnx_sample_shape",
                                  "sample_shape", "image_shape", "batch_axis_restored"}|null}],
      "runs": [{
          "checkpoint": str, "train_loss": float|null, "method": str,
          "mask": str, "split": "train"|"test", "n": int,
          "accurate_rate": float, "approximate_rate": float,
          "mean_psnr": float, "median_psnr": float, "converged_rate": float,
          "n_diverged": int, "seconds": float, "onnx_seconds": float|null,
          "erased_fraction": float, "mask_error": float|null,
          "mse": [float], "psnr": [float], "iterations": [int],
          "converged": [bool], "diverged": [bool], "residual": [float|null]
      }],
      "control": null | {"method": str, "runs": [{
          "mask": str, "split": "train"|"test", "n": int,
          "accurate_rate": float, "approximate_rate": float,
          "mean_psnr": float, "median_psnr": float, "seconds": float,
          "mse": [float|null], "psnr": [float]
      }]}   # one run per (mask, split), joined to ``runs`` on (mask, split)
    }

Rates are fractions in [0, 1]; each PSNR is clamped to [0, 200] dB (200 for
exact recoveries, 0 for estimates worse than MSE 1, e.g. diverged samples);
a sample whose MSE is NaN/Inf is reported as ``null`` in ``mse``, so the JSON
stays standard. A diverged sample never counts as recovered.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import progress_label
from ..errors import ConfigError, DivergenceWarning
from ..operators.masks import MaskSpec, parse_mask, pixel_shape
from .metrics import ACCURATE_MSE, APPROXIMATE_MSE, PSNR_CAP_DB
from .runs import (
    METHODS,
    degrade,
    effective_options,
    method_options,
    recovery_metrics,
    run_entry,
    run_method,
    warn_diverged,
)
from .runs import sample_lists as sample_lists

# METHODS, degrade, run_method, method_options, effective_options, recovery_metrics,
# run_entry, sample_lists and warn_diverged are importable from here too (documented in
# refinv.evaluation.runs)
__all__ = [
    "SCHEMA_VERSION",
    "memorization_report",
    "new_document",
    "checkpoint_entry",
    "layout_entry",
    "evaluate_split",
    "format_table",
    "format_loss_table",
    "figure_examples",
    "png_bytes",
    "require_figure_dependencies",
    "figure_rate_vs_loss",
]

log = logging.getLogger("refinv.evaluation.report")

SCHEMA_VERSION = 2


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run_entry(
    *,
    label: str,
    train_loss: float | None,
    method: str,
    mask_text: str,
    split: str,
    x: np.ndarray,
    mask: np.ndarray,
    res: Any,
    seconds: float,
    onnx_seconds: float | None,
) -> dict:
    met = recovery_metrics(x, np.asarray(res.x))
    n = int(x.shape[0])
    mask_error = None
    if method == "blind":
        h = np.asarray(res.state.h)
        h = h.reshape(n, *pixel_shape(x.shape[1:]))
        mask_error = float(np.mean(h != mask.reshape(h.shape)))
    return run_entry(
        checkpoint=label,
        train_loss=train_loss,
        method=method,
        mask=mask_text,
        split=split,
        mse=met["mse"],
        psnr=met["psnr"],
        iterations=res.iterations,
        converged=res.converged,
        diverged=res.diverged,
        residual=res.residual,
        erased_fraction=float(1.0 - np.mean(mask)) if n else 0.0,
        mask_error=mask_error,
        seconds=seconds,
        onnx_seconds=onnx_seconds,
    )


def _train_loss(f: Any, x: np.ndarray) -> float:
    out = np.asarray(f(x), dtype=np.float64)
    return float(np.mean((out - x.astype(np.float64)) ** 2))


def new_document(
    *,
    command: str,
    seed: int,
    noise_std: float,
    masks: Sequence[MaskSpec],
    methods: Sequence[str],
    solver: dict,
) -> dict:
    """An empty report document (schema version, thresholds, settings; no runs yet)."""
    from .. import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "refinv",
        "refinv_version": __version__,
        "command": command,
        "created_utc": _now(),
        "thresholds": {
            "accurate_mse": ACCURATE_MSE,
            "approximate_mse": APPROXIMATE_MSE,
            "psnr_data_range": 1.0,
            "psnr_cap_db": PSNR_CAP_DB,
        },
        "settings": {
            "seed": int(seed),
            "noise_std": float(noise_std),
            "masks": [s.text for s in masks],
            "methods": list(methods),
            "solver": {
                m: _jsonable(effective_options(m, solver, noisy=float(noise_std) > 0))
                for m in methods
            },
        },
        "checkpoints": [],
        "runs": [],
        "control": None,
    }


def checkpoint_entry(label: str, f: Any, train: np.ndarray, test: np.ndarray | None) -> dict:
    """``{"label", "model", "sha256", "train_loss", "test_loss", "layout"}``, losses measured on
    the data; ``layout`` is :meth:`refinv.onnx.OnnxModel.layout_info` (``None`` for a plain
    callable)."""
    return {
        "label": str(label),
        "model": str(getattr(f, "label", label)),
        "sha256": getattr(f, "sha256", None),
        "train_loss": _train_loss(f, train),
        "test_loss": _train_loss(f, test) if test is not None else None,
        "layout": layout_entry(f),
    }


def layout_entry(f: Any) -> dict | None:
    """The model's layout record for the JSON (``OnnxModel.layout_info()``), or ``None``."""
    info = getattr(f, "layout_info", None)
    return info() if callable(info) else None


def evaluate_split(
    f: Any,
    x: np.ndarray,
    spec: MaskSpec,
    method: str,
    *,
    label: str = "model",
    train_loss: float | None = None,
    split: str = "train",
    seed: int = 0,
    noise_std: float = 0.0,
    solver: dict | None = None,
    progress: bool | None = None,
) -> tuple[dict, Any, np.ndarray, np.ndarray]:
    """Degrade ``x`` with ``spec``, recover with ``method``, measure.

    Returns ``(run_entry, solver_result, y, mask)``; ``run_entry`` is one
    element of the report's ``runs`` list.
    """
    y, mask = degrade(x, spec, seed=seed, noise_std=noise_std)
    stats = getattr(f, "stats", None)
    ort0 = stats.seconds if stats is not None else None
    t0 = time.perf_counter()
    with warnings.catch_warnings(), progress_label(f"{label} {spec.text} {split}"):
        warnings.simplefilter("ignore", DivergenceWarning)
        res = run_method(
            method,
            f,
            y,
            mask,
            options=method_options(method, dict(solver or {})),
            seed=seed,
            noisy=noise_std > 0,
            progress=progress,
        )
    sec = time.perf_counter() - t0
    ort = (stats.seconds - ort0) if stats is not None else None
    entry = _run_entry(
        label=str(label),
        train_loss=train_loss,
        method=method,
        mask_text=spec.text,
        split=split,
        x=x,
        mask=mask,
        res=res,
        seconds=sec,
        onnx_seconds=ort,
    )
    warn_diverged(entry, solver)
    return entry, res, y, mask


def memorization_report(
    models: Any,
    train: np.ndarray,
    test: np.ndarray | None = None,
    *,
    masks: Sequence[str | MaskSpec] = ("random:0.5",),
    methods: Sequence[str] = ("blind",),
    seed: int = 0,
    noise_std: float = 0.0,
    solver: dict | None = None,
    progress: bool | None = None,
    figures_dir: str | Path | None = None,
    command: str = "evaluate",
    n_figure: int = 6,
    chunk: int | None = None,
    files: dict | None = None,
    argv: Sequence[str] | None = None,
    control: bool | None = None,
) -> dict:
    """Sweep checkpoints x masks x methods on the training and held-out images.

    Parameters
    ----------
    models : model, or list of ``(label, model)`` pairs
        Autoencoders (``OnnxModel`` or callables); several = the checkpoints
        of one training run (their train loss is measured here on ``train``).
    train, test : numpy arrays ``(N, *sample_shape)`` in [0, 1]
        Training images and held-out images (``test`` may be None).
    masks : mask specs (see :func:`refinv.operators.masks.parse_mask`).
    methods : subset of ``("blind", "known", "ae-iterations")``.
    seed : masks, Bernoulli init and noise seed (see the module docstring).
    noise_std : Gaussian noise added to the degraded images (known-mask
        re-insertion is turned off when > 0).
    solver : dict of solver options (``max_iter``, ``tol``, ``rho``,
        ``inner_iter``, ``mask_init``, ``tau``, ``clip``, ``blowup``); each method
        takes the ones it understands. ``ae-iterations`` runs
        ``max_iter * inner_iter`` iterations (equal number of calls of ``f``).
    progress : show the solvers' progress bars (None: when stderr is a TTY).
    figures_dir : if given, write PNG figures there (needs matplotlib).
    chunk : solve (and measure the losses on) ``chunk`` images at a time
        (:func:`~refinv.evaluation.chunked.evaluate_split_chunked`): memory stays flat
        in the number of images; the same per-image results (per-sample stopping makes
        the chunks independent; the masks, noise and Bernoulli initial masks continue
        one stream). ``train``/``test`` may then also be
        :class:`~refinv.evaluation.chunked.NpzImages` (read chunk by chunk). None: one
        batch per split.
    files : ``role -> path`` of the input files for the ``provenance`` block (default: the
        models' own paths, ``model`` and ``checkpoint_1`` ..., where they have one).
    argv : the command line for the ``provenance`` block (default ``sys.argv``).
    control : add the model-free control (:func:`~refinv.evaluation.control.control_run`:
        biharmonic inpainting of the same degraded images with the true masks, per mask
        and split) as ``doc["control"]``, beside every rate in :func:`format_table` and
        in the figures. None (default): on where scikit-image is importable; True
        without it: ConfigError; False: off (``doc["control"]`` is None).

    Returns
    -------
    dict
        The JSON-ready report (schema in the module docstring), with the same
        ``schema``, ``schema_version`` and ``provenance`` block as ``refinv evaluate --json``.
    """
    started = time.time()
    if not isinstance(models, (list, tuple)):
        models = [(getattr(models, "label", "model"), models)]
    methods = list(methods)
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"method: expected one of {', '.join(METHODS)}, got {m!r}")
    specs = [ms if isinstance(ms, MaskSpec) else parse_mask(ms) for ms in masks]
    solver = dict(solver or {})
    from .chunked import NpzImages

    def images(a):
        return a if isinstance(a, NpzImages) else np.asarray(a)

    splits = [("train", images(train))]
    if test is not None:
        splits.append(("test", images(test)))
    chunked = chunk is not None or any(isinstance(x, NpzImages) for _, x in splits)
    if chunked and chunk is None:
        from .chunked import DEFAULT_CHUNK as chunk
    if chunked and (int(chunk) != chunk or chunk < 1):
        raise ConfigError(f"chunk: expected a positive integer, got {chunk}")
    first = splits[0][1]
    pshape = pixel_shape(
        tuple(first.sample_shape) if isinstance(first, NpzImages) else tuple(first.shape[1:])
    )
    from .control import CONTROL_METHOD, control_run, resolve_control

    with_control = resolve_control(control)
    doc = new_document(
        command=command, seed=seed, noise_std=noise_std, masks=specs, methods=methods, solver=solver
    )
    fig_data: list[dict] = []
    ctl_first: dict[tuple[str, str], np.ndarray | None] = {}
    if with_control:
        doc["control"] = {"method": CONTROL_METHOD, "runs": []}
        for spec in specs:
            for split, x in splits:
                entry, first = control_run(
                    x, spec, split=split, seed=seed, noise_std=noise_std,
                    chunk=int(chunk) if chunked else None,
                    n_keep=n_figure if figures_dir is not None else 0, progress=progress,
                )  # fmt: skip
                doc["control"]["runs"].append(entry)
                ctl_first[(spec.text, split)] = first
    for label, f in models:
        if chunked:
            ck = _checkpoint_entry_chunked(str(label), f, splits, int(chunk))
        else:
            ck = checkpoint_entry(
                str(label), f, splits[0][1], splits[1][1] if test is not None else None
            )
        doc["checkpoints"].append(ck)
        for spec in specs:
            for split, x in splits:
                for method in methods:
                    if chunked:
                        k = n_figure if figures_dir is not None else 0
                        entry, fig = _evaluate_split_chunked(
                            f, x, spec, method, chunk=int(chunk), label=str(label),
                            train_loss=ck["train_loss"], split=split, seed=seed,
                            noise_std=noise_std, solver=solver, progress=progress, n_keep=k,
                        )  # fmt: skip
                        doc["runs"].append(entry)
                        if figures_dir is not None:
                            fig_data.append(
                                dict(checkpoint=str(label), mask=spec.text, method=method,
                                     split=split, **fig)
                            )  # fmt: skip
                        continue
                    entry, res, y, mask = evaluate_split(
                        f,
                        x,
                        spec,
                        method,
                        label=str(label),
                        train_loss=ck["train_loss"],
                        split=split,
                        seed=seed,
                        noise_std=noise_std,
                        solver=solver,
                        progress=progress,
                    )
                    doc["runs"].append(entry)
                    if figures_dir is not None:
                        k = min(n_figure, int(x.shape[0]))
                        h_est = None
                        if method == "blind":
                            h_est = np.asarray(res.state.h)[:k].reshape(k, *pshape)
                        fig_data.append(
                            dict(
                                checkpoint=str(label),
                                mask=spec.text,
                                method=method,
                                split=split,
                                x=x[:k],
                                y=np.asarray(y)[:k],
                                xhat=np.asarray(res.x)[:k],
                                h_true=np.asarray(mask[:k]),
                                h_est=h_est,
                                mse=entry["mse"][:k],
                            )
                        )
    if figures_dir is not None:
        out = Path(figures_dir)
        ctl = {k: c["mse"] for k, c in _control_index(doc).items()}
        for i, d in enumerate(fig_data):
            name = f"{i:03d}_{_slug(d['checkpoint'])}_{_slug(d['mask'])}_{d['method']}_{d['split']}.png"
            key = (d["mask"], d["split"])
            if ctl_first.get(key) is not None:
                k = int(np.asarray(d["x"]).shape[0])
                d = dict(d, x_control=ctl_first[key][:k], mse_control=ctl[key][:k])
            figure_examples(out / name, **d)
        if len(doc["checkpoints"]) > 1:
            figure_rate_vs_loss(doc, out / "rate_vs_train_loss.png")
    from ..provenance import provenance

    if files is None:
        files = {
            ("model" if i == 0 else f"checkpoint_{i}"): _model_file(f)
            for i, (_, f) in enumerate(models)
        }
    doc = {"schema": "refinv.report", **doc}
    doc["provenance"] = provenance(files, argv=argv, started=started)
    return doc


def _model_file(f: Any) -> str | None:
    """The file a model was loaded from (an :class:`~refinv.onnx.OnnxModel` opened from a
    path is labelled with it), or None (bytes, a proto, a plain callable)."""
    label = getattr(f, "label", None)
    return label if isinstance(label, str) and Path(label).is_file() else None


def _checkpoint_entry_chunked(label: str, f: Any, splits: list, chunk: int) -> dict:
    """:func:`checkpoint_entry` with the losses measured ``chunk`` images at a time."""
    from .chunked import mean_loss

    losses = {split: mean_loss(f, x, chunk) for split, x in splits}
    return {
        "label": str(label),
        "model": str(getattr(f, "label", label)),
        "sha256": getattr(f, "sha256", None),
        "train_loss": losses["train"],
        "test_loss": losses.get("test"),
        "layout": layout_entry(f),
    }


def _evaluate_split_chunked(
    f: Any, x: Any, spec: MaskSpec, method: str, *, n_keep: int, **kw: Any
) -> tuple[dict, dict]:
    """``evaluate_split_chunked``'s run entry and the first ``n_keep`` images of the run (for
    the figures: ``x, y, xhat, h_true, h_est, mse``), collected across chunks."""
    from .chunked import evaluate_split_chunked

    keep: dict[str, list] = {k: [] for k in ("x", "y", "xhat", "h_true", "h_est", "mse")}
    got = [0]

    def collect(start, xc, y, mask, res, met):
        need = min(n_keep - got[0], int(xc.shape[0]))
        if need <= 0:
            return
        keep["x"].append(np.array(xc[:need]))
        keep["y"].append(np.array(np.asarray(y)[:need]))
        keep["xhat"].append(np.array(np.asarray(res.x)[:need]))
        keep["h_true"].append(np.array(np.asarray(mask)[:need]))
        if method == "blind":
            h = np.asarray(res.state.h)[:need]
            keep["h_est"].append(np.array(h.reshape(need, *pixel_shape(tuple(xc.shape[1:])))))
        keep["mse"].extend(None if np.isnan(v) else float(v) for v in met["mse"][:need])
        got[0] += need

    with progress_label(f"{kw.get('label', 'model')} {spec.text} {kw.get('split', 'train')}"):
        entry = evaluate_split_chunked(
            f, x, spec, method, on_chunk=collect if n_keep > 0 else None, **kw
        )
    fig = {}
    if n_keep > 0:
        fig = {k: np.concatenate(v) if v else None for k, v in keep.items() if k != "mse"}
        fig["mse"] = keep["mse"]
    return entry, fig


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in s)[:40]


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (tuple, list)):
            out[k] = [float(t) for t in v]
        else:
            out[k] = str(type(v).__name__)
    return out


# ------------------------------------------------------------------ tables
def _pct(v: float) -> str:
    return f"{100.0 * v:5.1f}%"


_SPLIT_TITLES = {"train": "train (memorized?)", "test": "held-out (never trained on)"}


def _control_index(doc: dict) -> dict[tuple[str, str], dict]:
    from .control import control_index

    return control_index(doc)


def format_table(doc: dict) -> str:
    """The memorization table: one row per (checkpoint, mask, method); train | held-out columns.

    With the control (``doc["control"]``), each rate and the mean PSNR is followed by the
    model-free control's value for the same mask and split (column ``ctl``)."""
    rows: dict[tuple, dict[str, dict]] = {}
    splits: list[str] = []
    for r in doc["runs"]:
        rows.setdefault((r["checkpoint"], r["mask"], r["method"]), {})[r["split"]] = r
        if r["split"] not in splits:
            splits.append(r["split"])
    splits.sort(key=lambda s: (s != "train", s != "test"))
    several = len({k[0] for k in rows}) > 1
    head = (["checkpoint"] if several else []) + ["mask", "method"]
    keys = {k: (k if several else k[1:]) for k in rows}
    widths = [max([len(h)] + [len(str(kp[i])) for kp in keys.values()]) for i, h in enumerate(head)]
    ctl = _control_index(doc)
    cols = (
        ["acc", "ctl", "approx", "ctl", "PSNR", "ctl", "iters"]
        if ctl
        else ["acc", "approx", "PSNR", "iters"]
    )
    block = " ".join(f"{c:>7}" for c in cols)
    title = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    top = " | ".join(f"{_SPLIT_TITLES.get(s, s):^{len(block)}}" for s in splits)
    lines = [
        f"{'':{len(title)}}  | {top} | time",
        f"{title}  | " + " | ".join([block] * len(splits)) + " |",
    ]
    lines.append("-" * (len(lines[-1]) + 7))
    for key, sp in rows.items():
        left = "  ".join(str(v).ljust(w) for v, w in zip(keys[key], widths, strict=True))
        parts = []
        secs = 0.0
        for split in splits:
            r = sp.get(split)
            if r is None:
                parts.append(" ".join(f"{'-':>7}" for _ in cols))
                continue
            secs += r["seconds"]
            it = float(np.mean(r["iterations"])) if r["iterations"] else 0.0
            c = ctl.get((key[1], split)) if ctl else None
            if not ctl:
                cells = [_pct(r["accurate_rate"]), _pct(r["approximate_rate"])]
                cells += [_psnr_cell(r), f"{it:.1f}"]
            else:
                cells = [_pct(r["accurate_rate"]), _pct(c["accurate_rate"]) if c else "-"]
                cells += [_pct(r["approximate_rate"]), _pct(c["approximate_rate"]) if c else "-"]
                cells += [_psnr_cell(r), f"{c['mean_psnr']:.1f}" if c else "-"]
                cells += [f"{it:.1f}"]
            parts.append(" ".join(f"{v:>7}" for v in cells))
        lines.append(f"{left}  | " + " | ".join(parts) + f" | {secs:5.1f}s")
    th = doc["thresholds"]
    lines.append(
        f"acc: MSE < {th['accurate_mse']:g}; approx: MSE < {th['approximate_mse']:g}; "
        f"PSNR: mean dB (data range 1, capped at {th['psnr_cap_db']:g}); "
        "iters: mean iterations per image (outer for blind/known, f calls for ae-iterations)"
    )
    if ctl:
        lines.append(
            f"ctl: the model-free control, {doc['control']['method']}, on the same degraded "
            "images (same masks, same split); a train rate near its ctl is not memorization"
        )
    return "\n".join(lines)


def format_loss_table(doc: dict) -> str:
    """Recovery rate vs train loss (the paper's Figure 3 as a table), train split only."""
    by: dict[tuple, list] = {}
    for r in doc["runs"]:
        if r["split"] == "train":
            by.setdefault((r["mask"], r["method"]), []).append(r)
    wm = max([4] + [len(k[0]) for k in by])
    wc = max([10] + [len(r["checkpoint"]) for rs in by.values() for r in rs])
    lines = [
        f"{'mask':<{wm}}  {'method':<14} {'checkpoint':<{wc}} {'train loss':>10} {'acc':>7} "
        f"{'approx':>7} {'PSNR':>7}"
    ]
    for (mask, method), rs in by.items():
        for r in sorted(rs, key=lambda r: -(r["train_loss"] or 0.0)):
            loss = "-" if r["train_loss"] is None else f"{r['train_loss']:.2e}"
            lines.append(
                f"{mask:<{wm}}  {method:<14} {r['checkpoint']:<{wc}} {loss:>10} "
                f"{_pct(r['accurate_rate']):>7} {_pct(r['approximate_rate']):>7} "
                f"{_psnr_cell(r):>7}"
            )
    return "\n".join(lines)


def _psnr_cell(r: dict) -> str:
    """The table's mean PSNR of a run; ``n/a`` when every sample diverged (no estimate)."""
    if r["n"] and r.get("n_diverged", 0) >= r["n"]:
        return "n/a"
    return f"{r['mean_psnr']:.1f}"


# ------------------------------------------------------------------ figures
#: The extra that figures need: matplotlib (its DejaVu font, the rate-vs-loss plot) and
#: Pillow (PNG files, text; installed with matplotlib).
FIGURES_EXTRA = "plot"


def require_figure_dependencies(what: str = "figures") -> None:
    """Import matplotlib and Pillow; a :class:`~refinv.errors.ConfigError` naming the
    ``plot`` extra when either is missing."""
    missing = []
    for module, dist in (("matplotlib", "matplotlib"), ("PIL", "Pillow")):
        try:
            __import__(module)
        except ImportError:
            missing.append(dist)
    if missing:
        raise ConfigError(
            f"{what} need {' and '.join(missing)}, the packages of the '{FIGURES_EXTRA}' extra; "
            f"install them with: pip install 'refinv[{FIGURES_EXTRA}]'"
        )


def _figure_class():
    """matplotlib's ``Figure``, drawn without pyplot: the user's backend is never switched."""
    require_figure_dependencies()
    from matplotlib.figure import Figure

    return Figure


def _img(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
    elif a.ndim == 1:
        s = int(round(np.sqrt(a.size)))
        a = a.reshape(s, -1) if s * s == a.size else a[None, :]
    return np.clip(a, 0.0, 1.0)


_FONTS: dict[float, Any] = {}


def _font(size: float = 8.0) -> Any:
    """DejaVu Sans (shipped with matplotlib) at ``size`` points on a 100 dpi page, for Pillow."""
    if size not in _FONTS:
        import os

        from matplotlib import get_data_path
        from PIL import ImageFont

        path = os.path.join(get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
        _FONTS[size] = ImageFont.truetype(path, size=round(size * 100 / 72))
    return _FONTS[size]


def png_bytes(img: np.ndarray) -> bytes:
    """A PNG file (8-bit grayscale ``(H, W)`` or RGB ``(H, W, 3)`` uint8) from an array
    (encoded by Pillow)."""
    import io

    from PIL import Image

    a = np.ascontiguousarray(img, dtype=np.uint8)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3) or 0 in a.shape:
        raise ValueError(
            f"png_bytes: expected a non-empty (H, W) or (H, W, 3) array, got {a.shape}"
        )
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _tile_scale(hw: tuple[int, int]) -> int:
    """Nearest-neighbour magnification of one image in the example grids (about 100 px)."""
    return max(1, round(100 / max(hw)))


def figure_examples(
    path: str | Path,
    *,
    x: np.ndarray,
    y: np.ndarray,
    xhat: np.ndarray,
    h_true: np.ndarray,
    h_est: np.ndarray | None = None,
    mse: Sequence[float | None] | None = None,
    checkpoint: str = "",
    mask: str = "",
    method: str = "",
    split: str = "",
    x_control: np.ndarray | None = None,
    mse_control: Sequence[float | None] | None = None,
) -> Path:
    """Grid: original / degraded / recovered / [control] / estimated mask (true mask if none),
    one column per image; ``x_control`` (the model-free control's images, with their
    ``mse_control``) adds the row "control (no model)".

    Drawn from the pixels with Pillow (no plotting figure): each image magnified by
    :func:`_tile_scale` (nearest neighbour, gray levels 0..1 -> 0..255, clipped), row
    names on the left, the recovered images' MSE above them and
    ``checkpoint | mask | method | split`` on top, in matplotlib's DejaVu Sans.
    """
    require_figure_dependencies()
    from PIL import Image, ImageDraw

    from ..io import atomic_write_bytes

    k = int(x.shape[0])
    rows = [("original", x), ("degraded", y), ("recovered", xhat)]
    if x_control is not None:
        rows.append(("control (no model)", x_control))
    rows.append(("estimated mask", h_est) if h_est is not None else ("true mask", h_true))
    tiles = [[_img(arr[j]) for j in range(k)] for _, arr in rows]
    hw = tiles[0][0].shape[:2] if k else (1, 1)
    sc = _tile_scale(hw)
    th, tw = hw[0] * sc, hw[1] * sc
    gap, cap, title_h = 6, 14, 20
    label_w = 12 + max(round(_font().getlength(name)) for name, _ in rows)
    colour = any(t.ndim == 3 for r in tiles for t in r)
    width = label_w + max(k, 1) * (tw + gap) + gap
    height = title_h + len(rows) * (cap + th + gap) + gap
    im = Image.new("RGB" if colour else "L", (width, height), "white")
    draw = ImageDraw.Draw(im)

    def text(s: str, left: int, top: int, h: int, size: float = 8.0) -> None:
        """Black text from ``left``, vertically centred in ``[top, top + h)``."""
        draw.text((left, top + h / 2), s, fill="black", font=_font(size), anchor="lm")

    text(f"{checkpoint} | {mask} | {method} | {split}", gap, 2, title_h - 2, 9.0)
    for i, (name, _) in enumerate(rows):
        top = title_h + i * (cap + th + gap) + cap
        text(name, 4, top, th)
        for j in range(k):
            left = label_w + j * (tw + gap)
            err = mse if i == 2 else (mse_control if i == 3 and x_control is not None else None)
            if err is not None and err[j] is not None:
                text(f"MSE {err[j]:.1e}", left, top - cap, cap, 7.0)
            t = np.round(tiles[i][j] * 255.0).astype(np.uint8)
            t = np.repeat(np.repeat(t, sc, axis=0), sc, axis=1)
            if colour and t.ndim == 2:
                t = np.repeat(t[..., None], 3, axis=2)
            im.paste(Image.fromarray(t), (left, top))
    return atomic_write_bytes(path, png_bytes(np.asarray(im)))


def figure_rate_vs_loss(doc: dict, path: str | Path) -> Path:
    """Accurate recovery rate (train) vs train loss, one line per (mask, method): paper's Fig. 3.

    With the control, its accurate rate on the training images of each mask is a dotted
    horizontal line (the model-free level)."""
    import io

    from ..io import atomic_write_bytes

    Figure = _figure_class()

    by: dict[tuple, list] = {}
    for r in doc["runs"]:
        if r["split"] == "train" and r["train_loss"] is not None:
            by.setdefault((r["mask"], r["method"]), []).append(
                (r["train_loss"], r["accurate_rate"])
            )
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for (mask, method), pts in sorted(by.items()):
        pts.sort()
        ax.plot(
            [p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=f"{method}, {mask}"
        )
    for (mask, split), c in sorted(_control_index(doc).items()):
        if split == "train":
            ax.axhline(
                100 * c["accurate_rate"], ls=":", color="0.4", lw=1, label=f"control, {mask}"
            )
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("train loss (MSE)")
    ax.set_ylabel("accurate recovery rate (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())
