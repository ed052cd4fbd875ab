"""The ONE option vocabulary of the ``refinv`` commands (docs/cli.md, "One option vocabulary").

Every command builds its options from the helpers here, so one idea has one
name, one metavar, one type and one meaning in every command that has it:

=====================  ==================================================================
``DATA.npz[:key]``     a data file and the array in it (positional; each command says
                       its default key); ``refinv evaluate/audit --train/--test`` take
                       the same spec
``--out PATH``         the command's result: the arrays it computed (``.npz``), or the
                       report folder of ``refinv audit``
``--json OUT.json``    the command's JSON document (schema in docs/cli.md); optional
                       in every command
``--limit N``          only the first N images (samples, codes, latents) of the data
``--mask SPEC[,...]``  pixel mask(s) (grammar in docs/cli.md); a comma-separated list
                       where a command runs several (evaluate, audit, demo)
``--method NAME[,...]`` the method(s); a list where a command runs several
``--seed S``           the seed of every random draw (integer >= 0)
``--figures DIR``      PNG figures into this folder
``--layout``           the MODEL's input layout (NCHW, NHWC, flat; default detected)
``--data-layout``      the DATA file's layout (NCHW or NHWC; default NCHW)
``--image-shape``      flat models: the image shape of a sample (CxHxW)
=====================  ==================================================================

Old spellings are kept for one release as deprecated aliases (:data:`DEPRECATED`):
they work as before and print ``refinv CMD: warning: --OLD is deprecated, use --NEW``
(a :class:`DeprecatedOptionWarning`). They are hidden from ``--help``.

This module imports nothing heavy: ``refinv --help`` builds every parser from it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .._constants import MASK_GRAMMAR

__all__ = [
    "VOCABULARY",
    "DEPRECATED",
    "REMOVED_IN",
    "DeprecatedOptionWarning",
    "add_alias",
    "add_data",
    "add_out",
    "add_json",
    "add_limit",
    "add_mask",
    "add_method",
    "add_seed",
    "add_figures",
    "add_layout",
    "add_data_layout",
    "add_image_shape",
    "data_spec",
    "split_list",
    "one_of",
    "emit_deprecations",
]

#: the release that removes the deprecated spellings
REMOVED_IN = "0.2"


class DeprecatedOptionWarning(FutureWarning):
    """An option was given by a spelling that goes in the next release."""


@dataclass(frozen=True)
class Option:
    """One entry of the vocabulary: its spelling, metavar, value type and meaning."""

    flag: str
    metavar: str | None
    type: type | None
    meaning: str


#: option -> its one meaning (tests/test_cli_vocabulary.py checks every command against it)
VOCABULARY: dict[str, Option] = {
    o.flag: o
    for o in (
        Option("--out", "PATH", str, "the command's result: arrays (.npz) or a report folder"),
        Option("--json", "OUT.json", str, "the command's JSON document"),
        Option("--limit", "N", int, "only the first N images (samples) of the data"),
        Option("--mask", "SPEC", str, "pixel mask spec(s), comma-separated where several"),
        Option("--method", "NAME", str, "the method(s), comma-separated where several"),
        Option("--seed", "S", int, "seed of every random draw"),
        Option("--figures", "DIR", str, "write PNG figures into this folder"),
        Option("--layout", None, str, "the model input's layout"),
        Option("--data-layout", None, str, "the data file's image layout"),
        Option("--image-shape", "CxHxW", str, "flat models: the image shape of a sample"),
    )
}

#: command -> {deprecated spelling: what replaces it} (one release, then removed)
DEPRECATED: dict[str, dict[str, str]] = {
    "recover": {"--key": "DATA.npz:key"},
    "evaluate": {"--masks": "--mask", "--methods": "--method"},
    "audit": {"--masks": "--mask", "--methods": "--method", "--stability-n": "--stability-limit"},
    "demo": {"--methods": "--method"},
    "stability": {"--n": "--limit"},
    "inspect": {"--samples": "--limit", "--prox-n": "--prox-limit"},
    "invert": {"--save": "--out"},
    "bregman": {"--key": "CODES.npz:key"},
}


class _Deprecated(argparse.Action):
    """A hidden old spelling: stores into the new option's ``dest`` and records itself."""

    def __init__(self, option_strings, dest, replacement: str = "", **kw):
        self.replacement = replacement
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        used = list(getattr(namespace, "deprecated_options", None) or [])
        used.append((option_string, self.replacement))
        namespace.deprecated_options = used
        setattr(namespace, self.dest, values)


def add_alias(p, old: str, new: str, dest: str, *, type=None, nargs=None) -> None:
    """Accept ``old`` as a deprecated spelling of ``new`` (stored into ``dest``; hidden from
    ``--help``; a warning names ``new``)."""
    p.add_argument(
        old, dest=dest, type=type, nargs=nargs, default=argparse.SUPPRESS,
        action=_Deprecated, replacement=new, help=argparse.SUPPRESS,
    )  # fmt: skip


def emit_deprecations(args: argparse.Namespace) -> None:
    """One :class:`DeprecatedOptionWarning` per deprecated spelling the command line used."""
    import warnings

    for old, new in getattr(args, "deprecated_options", None) or []:
        warnings.warn(
            f"{old} is deprecated and goes in refinv {REMOVED_IN}; use {new}",
            DeprecatedOptionWarning,
            stacklevel=2,
        )


# ------------------------------------------------------------------ the options
def add_data(p, name: str = "data", *, default_key: str = "train", what: str = "images",
             metavar: str = "DATA.npz[:key]", help: str | None = None) -> None:  # fmt: skip
    """The positional data spec ``DATA.npz[:key]``."""
    p.add_argument(
        name, metavar=metavar,
        help=help or f"{what}: a .npz file and the array in it (default key {default_key})",
    )  # fmt: skip


def add_out(p, help: str, metavar: str = "PATH", dest: str = "out", **kw) -> None:
    """``--out PATH``: the command's result (arrays, or audit's folder)."""
    p.add_argument("--out", dest=dest, metavar=metavar, default=None, help=help, **kw)


def add_json(p, help: str = "write the JSON document here (schema in docs/cli.md)") -> None:
    """``--json OUT.json``, optional in every command."""
    p.add_argument("--json", metavar="OUT.json", default=None, help=help)


def add_limit(p, what: str = "images", default: int | None = None, flag: str = "--limit",
              dest: str = "limit", extra: str = "") -> None:  # fmt: skip
    """``--limit N``: only the first N images (samples) of the data."""
    d = "all" if default is None else str(default)
    p.add_argument(
        flag, dest=dest, type=int, default=default, metavar="N",
        help=f"only the first N {what} (default {d}){extra}",
    )  # fmt: skip


def add_mask(p, default: str | None, *, several: bool = False, help: str | None = None) -> None:
    """``--mask SPEC`` (a comma-separated list where the command runs several)."""
    what = "comma-separated mask specs" if several else "mask spec"
    d = "none" if default is None else default
    p.add_argument(
        "--mask", dest="mask", metavar="SPEC", default=default,
        help=help or f"{what} (default {d}); grammar: {MASK_GRAMMAR}",
    )  # fmt: skip


def add_method(p, choices: tuple[str, ...], default: str | None, *, several: bool = False,
               required: bool = False, help: str | None = None) -> None:  # fmt: skip
    """``--method NAME`` (a comma-separated list where the command runs several)."""
    listing = ", ".join(choices)
    if several:
        text = f"comma-separated subset of {listing} (default {default})"
        p.add_argument("--method", dest="method", metavar="NAME", default=default,
                       required=required, help=help or text)  # fmt: skip
    else:
        text = f"one of {listing}" + ("" if default is None else f" (default {default})")
        p.add_argument("--method", dest="method", metavar="NAME", choices=choices,
                       default=default, required=required, help=help or text)  # fmt: skip


def add_seed(p, what: str = "masks, noise, Bernoulli initial masks") -> None:
    """``--seed S``."""
    p.add_argument(
        "--seed", type=int, default=0, metavar="S", help=f"seed of the {what} (default 0)"
    )


def add_figures(p, help: str = "write PNG figures into this folder (needs matplotlib)") -> None:
    p.add_argument("--figures", default=None, metavar="DIR", help=help)


def add_executor(p, scheduler_note: str = "") -> None:
    """``--workers`` and ``--scheduler``: where the units of an engine plan run (``refinv
    sweep``, ``refinv audit``); ``scheduler_note`` ends the scheduler's help."""
    p.add_argument(
        "--workers", type=int, default=1,
        help="worker processes (default 1: run in this process); with --scheduler local, the "
        "number of LocalCluster workers",
    )  # fmt: skip
    p.add_argument(
        "--scheduler", default=None, metavar="ADDRESS|local",
        help="run on Dask distributed: a scheduler address (tcp://host:8786), or 'local' to "
        "start a LocalCluster with --workers workers" + scheduler_note,
    )  # fmt: skip


def add_layout(p, help: str | None = None) -> None:
    """``--layout``: the MODEL's input layout."""
    p.add_argument(
        "--layout", default=None, choices=["NCHW", "NHWC", "flat"],
        help=help or "the model input's layout (default: detected from the graph; an "
        "ambiguous one is an error that asks for this option). Data and results stay "
        "(N, C, H, W) either way",
    )  # fmt: skip


def add_data_layout(p) -> None:
    """``--data-layout``: the DATA file's image layout."""
    p.add_argument(
        "--data-layout", default=None, choices=["NCHW", "NHWC"],
        help="the data file's image layout: NCHW (N, C, H, W) or NHWC (N, H, W, C), e.g. a "
        "Keras data set, transposed on reading (never reshaped); the masks are per pixel "
        "either way (default: NCHW, or NHWC where the shapes leave no doubt: (N, H, W, C) "
        "for the model's (C, H, W) with C > 1, not also (N, C, H, W)); image models only",
    )  # fmt: skip


def add_image_shape(p) -> None:
    p.add_argument(
        "--image-shape", default=None, metavar="CxHxW",
        help="flat models (N, D): the image shape of a sample, e.g. 1x28x28 (default: taken "
        "from the data file when its images are (N, C, H, W) or (N, H, W))",
    )  # fmt: skip


# ------------------------------------------------------------------ reading them
def data_spec(spec: str, key: str | None, *, option: str = "--key") -> str:
    """The data spec ``spec`` with the deprecated ``--key K`` folded in: ``DATA.npz`` +
    ``--key K`` -> ``DATA.npz:K``; ``DATA.npz:K`` + ``--key K`` the same; two different keys
    are refused (an error naming both)."""
    from pathlib import Path

    from ..errors import ConfigError

    if key is None:
        return spec
    if ":" in spec and not Path(spec).is_file():
        path, given = spec.rsplit(":", 1)
        if given != key:
            raise ConfigError(
                f"two keys for one data file: {spec!r} names {given!r}, {option} names {key!r}; "
                f"give one (the data spec {path}:KEY; {option} is deprecated)"
            )
        return spec
    return f"{spec}:{key}"


def split_list(text: str, what: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; an empty list is refused."""
    from ..errors import ConfigError

    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConfigError(f"{what}: expected a comma-separated list, got {text!r}")
    return items


def one_of(text: str, choices: tuple[str, ...], what: str, several: bool = True) -> list[str]:
    """The comma-separated names of ``text``, each one of ``choices``."""
    from ..errors import ConfigError

    items = split_list(text, what)
    for m in items:
        if m not in choices:
            raise ConfigError(f"{what}: expected names from {', '.join(choices)}, got {m!r}")
    if not several and len(items) > 1:
        raise ConfigError(f"{what}: this command runs one, got {text!r}")
    return items


# ------------------------------------------------------------------ solver and runtime
def _tol(text: str) -> float | str:
    """``--tol``: ``auto`` or a number."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None


def add_solver_args(p: argparse.ArgumentParser) -> None:
    """Solver and runtime options shared by recover / evaluate / audit / demo."""
    from .._constants import RECOVERY_DEFAULTS as DEFAULTS

    g = p.add_argument_group("solver options")
    g.add_argument(
        "--max-iter", type=int, default=None,
        help=f"outer iterations T (default {DEFAULTS['max_iter']}; ae-iterations runs "
        "T x inner-iter steps)",
    )  # fmt: skip
    g.add_argument(
        "--inner-iter", type=int, default=None,
        help=f"PnP-ADMM iterations K per outer iteration (default {DEFAULTS['inner_iter']})",
    )  # fmt: skip
    g.add_argument(
        "--rho", type=float, default=None,
        help=f"ADMM penalty, 1/2-fidelity convention (default {DEFAULTS['rho']})",
    )  # fmt: skip
    g.add_argument(
        "--tol", type=_tol, default=None,
        help="per-sample stop: 'auto' (default: the relative change of x has reached the "
        "floating-point floor, docs/theory/recovery.md) or a number (relative change < TOL; "
        "0: run every iteration)",
    )  # fmt: skip
    g.add_argument(
        "--patience", type=int, default=None,
        help="stop a sample as stalled after this many checks without progress of its data "
        f"misfit (default {DEFAULTS['patience']}; 0: never)",
    )  # fmt: skip
    g.add_argument(
        "--search-patience", type=int, default=None,
        help="blind: also stop a sample whose mask still moves after this many outer "
        "iterations without progress (default: never; fewer calls, but a late find is lost)",
    )  # fmt: skip
    g.add_argument(
        "--mask-init", default=None,
        help="blind initial mask: bernoulli, bernoulli:P, ones, nonzero, or "
        f"file:PATH.npz[:KEY] (a 0/1 array (H, W) or (N, H, W)) (default {DEFAULTS['mask_init']})",
    )  # fmt: skip
    g.add_argument("--tau", type=float, default=None, help="mask-step tolerance (default 0)")
    g.add_argument(
        "--clip", action="store_true",
        help="clip the autoencoder's output to the data range [0, 1] (off by default)",
    )  # fmt: skip
    g.add_argument(
        "--noise", type=float, default=0.0,
        help="std of Gaussian noise added to the degraded images (default 0; known-mask "
        "re-insertion is off when > 0)",
    )  # fmt: skip
    add_runtime_args(p)  # -q/--quiet (no progress bar): refinv.cli adds it to every command


def add_runtime_args(p: argparse.ArgumentParser):
    """The onnxruntime and layout options :func:`refinv.cli.recover.open_model` reads;
    returns their argument group."""
    r = p.add_argument_group("runtime")
    r.add_argument("--batch-size", type=int, default=None, help="largest batch per ONNX call")
    r.add_argument(
        "--threads", type=int, default=None,
        help="onnxruntime intra-op threads (default 1; 0: onnxruntime's default, one per core)",
    )  # fmt: skip
    r.add_argument(
        "--provider", default="cpu", choices=["cpu", "cuda"], help="onnxruntime provider"
    )
    add_layout(r)
    add_data_layout(r)
    add_image_shape(r)
    return r


def progress_flag(args: argparse.Namespace) -> bool | None:
    """``False`` with ``-q/--quiet`` (before or after the command); otherwise ``None`` (on
    only when stderr is a TTY)."""
    return False if getattr(args, "quiet", False) else None
