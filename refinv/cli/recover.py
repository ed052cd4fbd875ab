"""``refinv recover``: recover degraded images through an autoencoder (one method, one mask).

    refinv recover MODEL.onnx DATA.npz[:train] --mask random:0.5 --seed 0 \\
        --method blind|known|ae-iterations --out OUT.npz --json SUMMARY.json

Also holds the model and data helpers shared by ``refinv evaluate``, ``audit``, ``demo`` and
``stability`` (the options themselves are in :mod:`refinv.cli._args`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .._constants import MASK_GRAMMAR
from ..errors import ConfigError
from . import _args
from ._args import add_runtime_args, add_solver_args, progress_flag

__all__ = [
    "register",
    "run",
    "add_runtime_args",
    "add_solver_args",
    "solver_options",
    "open_model",
    "load_split",
    "progress_flag",
]

if TYPE_CHECKING:
    import numpy as np


def solver_options(args: argparse.Namespace) -> dict:
    """The solver dict for :func:`refinv.evaluation.report.memorization_report`."""
    opts = {
        "max_iter": args.max_iter,
        "inner_iter": args.inner_iter,
        "rho": args.rho,
        "tol": args.tol,
        "patience": getattr(args, "patience", None),
        "search_patience": getattr(args, "search_patience", None),
        "mask_init": args.mask_init,
        "tau": args.tau,
        "clip": True if args.clip else None,
    }
    if str(args.mask_init or "").lower().startswith("file:"):
        from ..operators.masks import parse_mask

        parse_mask(args.mask_init)  # a missing file or key fails now, before any model runs
    return {k: v for k, v in opts.items() if v is not None}


def data_sample_shape(spec: str | Path, default_key: str = "train") -> tuple[int, ...] | None:
    """The sample shape of the array ``DATA.npz[:key]`` from its header (nothing loaded), or
    ``None`` when it cannot be read (loading it later gives the error)."""
    import zipfile

    import numpy as np

    from ..io import parse_data_spec

    path, key = parse_data_spec(str(spec), default_key)
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fp:
            fmt = np.lib.format
            version = fmt.read_magic(fp)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape = read(fp)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return tuple(int(d) for d in shape[1:])


def open_model(path: str | Path, args: argparse.Namespace, data: str | Path | None = None):
    """The autoencoder at ``path`` with the runtime options of ``args`` (``--layout``,
    ``--image-shape``); a flat model without ``--image-shape`` takes the image shape of the
    data ``DATA.npz[:key]`` when its images are ``(N, C, H, W)`` or ``(N, H, W)``."""
    import logging

    import numpy as np

    from ..onnx import OnnxModel

    f = OnnxModel(
        path,
        provider=args.provider,
        batch_size=args.batch_size,
        intra_op_threads=args.threads,
        layout=getattr(args, "layout", None),
        image_shape=getattr(args, "image_shape", None),
    )
    if f.layout == "flat" and f.sample_shape == f.onnx_sample_shape and data is not None:
        shape = data_sample_shape(data)
        if shape is not None and len(shape) in (2, 3) and int(np.prod(shape)) == f.sample_shape[0]:
            f.set_image_shape(shape)
            logging.getLogger("refinv.cli").info(
                "%s: flat model, image shape %s taken from %s", path, f.sample_shape, data
            )
    if not f.is_autoencoder:
        raise ConfigError(
            f"{path}: not an autoencoder: input sample shape {f.sample_shape}, output "
            f"{f.output_sample_shape}; recovery needs output shape == input shape"
        )
    return f


def load_split(
    spec: str, f, default_key: str = "train", layout: str | None = None
) -> tuple[np.ndarray, str]:
    """Images ``DATA.npz[:key]`` shaped for the model ``f`` (its dtype if float64, else float32)."""
    from ..io import load_images_for, parse_data_spec

    path, key = parse_data_spec(spec, default_key)
    return load_images_for(f, path, key, layout=layout), key


def register(sub) -> None:
    p = sub.add_parser(
        "recover",
        help="recover degraded images through an autoencoder",
        description="Degrade the images DATA.npz[:key] with a mask (and optional noise), "
        "recover them through the autoencoder MODEL.onnx with one method, and write the "
        "estimates (--out, .npz) and a JSON summary (--json; schema in docs/cli.md). "
        f"Mask grammar: {MASK_GRAMMAR}.",
    )
    p.add_argument("model", metavar="MODEL.onnx", help="the autoencoder (ONNX)")
    _args.add_data(p, what="images (N, C, H, W) in [0, 1]")
    _args.add_alias(p, "--key", "DATA.npz:key", dest="key")
    _args.add_mask(p, "random:0.5")
    _args.add_seed(p)
    _args.add_method(p, ("blind", "known", "ae-iterations"), "blind")
    _args.add_out(p, "write x_hat, y, x, masks, per-sample metrics (.npz)", metavar="OUT.npz")
    _args.add_json(p)
    p.add_argument(
        "--chunk", type=int, default=1024,
        help="images solved at a time (default 1024; memory stays flat in the number of "
        "images, results do not depend on it)",
    )  # fmt: skip
    add_solver_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..evaluation.chunked import NpzImages, NpzStreamWriter, evaluate_split_chunked, mean_loss
    from ..evaluation.report import format_table, layout_entry, new_document
    from ..io import flat_rows_ok, parse_data_spec
    from ..operators.masks import parse_mask, pixel_shape
    from ._output import write_json

    spec = parse_mask(args.mask)
    data_spec = _args.data_spec(args.data, getattr(args, "key", None))
    f = open_model(args.model, args, data=data_spec)
    path, key = parse_data_spec(data_spec, "train")
    dtype = np.float64 if f.dtype == np.float64 else np.float32
    images = NpzImages(path, key, sample_shape=f.sample_shape, dtype=dtype,
                       rows_ok=flat_rows_ok(f), layout=args.data_layout)  # fmt: skip
    if args.chunk < 1:
        raise ConfigError(f"--chunk: expected a positive integer, got {args.chunk}")
    solver = solver_options(args)
    doc = new_document(
        command="recover",
        seed=args.seed,
        noise_std=args.noise,
        masks=[spec],
        methods=[args.method],
        solver=solver,
    )
    label = Path(args.model).name
    ck = {
        "label": label,
        "model": str(getattr(f, "label", label)),
        "sha256": getattr(f, "sha256", None),
        "train_loss": mean_loss(f, images, args.chunk) if key == "train" else None,
        "test_loss": None,
        "data": f"{path}:{key}",
        "layout": layout_entry(f),
    }
    doc["checkpoints"].append(ck)
    n, sshape = len(images), tuple(f.sample_shape)
    pshape = pixel_shape(sshape)
    writer = None
    if args.out:
        writer = NpzStreamWriter(
            args.out,
            {
                "x_hat": ((n, *sshape), dtype), "y": ((n, *sshape), dtype),
                "x": ((n, *sshape), dtype), "mask": ((n, *pshape), np.uint8),
                "mask_estimated": ((n, *pshape), np.uint8), "iterations": ((n,), np.int64),
                "converged": ((n,), bool), "diverged": ((n,), bool),
                "mse": ((n,), np.float64), "psnr": ((n,), np.float64),
            },
        )  # fmt: skip

    def stream(start, x, y, mask, res, met):
        if writer is None:
            return
        h = np.asarray(res.state.h) if args.method != "ae-iterations" else np.asarray(mask)
        for name, v in (
            ("x_hat", res.x), ("y", y), ("x", x), ("mask", mask),
            ("mask_estimated", h.reshape(mask.shape)), ("iterations", res.iterations),
            ("converged", res.converged), ("diverged", res.diverged),
            ("mse", met["mse"]), ("psnr", met["psnr"]),
        ):  # fmt: skip
            writer.write(name, start, np.asarray(v))

    try:
        entry = evaluate_split_chunked(
            f,
            images,
            spec,
            args.method,
            chunk=args.chunk,
            label=ck["label"],
            train_loss=ck["train_loss"],
            split=key,
            seed=args.seed,
            noise_std=args.noise,
            solver=solver,
            progress=progress_flag(args),
            on_chunk=stream,
        )
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    doc["runs"].append(entry)
    if writer is not None:
        writer.close()
    if args.json:
        write_json(args.json, doc, "report", args, {"model": args.model, "data": path})
    print(format_table(doc))
    print(
        f"{entry['n']} images, {entry['seconds']:.2f} s "
        f"({entry['n'] / max(entry['seconds'], 1e-9):.1f} images/s)",
        file=sys.stdout,
    )
    return 0
