"""Ship a U-Net trained by gradient descent alone (models/train_conv.py run) into models/.

Copies ``RUN/final.onnx`` to ``models/onnx/NAME.onnx`` and writes its MANIFEST.json entry:
the recipe (the commands of the run and of the run it started from, read from their
``args.json``), train and held-out MSE measured through onnxruntime on the shipped data
(``--split``, e.g. ``train10``), and ``finish: none`` (no closed-form layer: every weight
comes from Adam and L-BFGS). The attractor fields follow from
``python models/conv_attractors.py colour16_unet``.

    OPENBLAS_NUM_THREADS=1 python models/register_unet_gd.py RUN NAME --split train10 \\
        [--from OTHER_RUN]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from _common import HERE, ort_mse, ort_run, update_manifest


def command(args: dict, names: dict) -> str:
    """The train_conv.py command line of a run, from its args.json (run folders named as in
    ``names``: path -> placeholder)."""
    parts = ["python models/train_conv.py"]
    for k, v in args.items():
        if k == "resume" or v is None or v is False:
            continue
        if k.startswith("denoise_") and args.get("denoise_sigma") is None:
            continue  # the denoising options of a plain-loss run are unused defaults
        for path, name in names.items():
            v = v.replace(path, name) if isinstance(v, str) else v
        flag = "--" + k.replace("_", "-")
        parts.append(flag if v is True else f"{flag} {v}")
    return " ".join(parts)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("name")
    ap.add_argument("--split", default="train", help="key of data/DATA.npz it was trained on")
    ap.add_argument("--from", dest="src", type=Path, default=None, help="the run it started from")
    ap.add_argument("--notes", default="", help="what else to record (schedule, stops)")
    a = ap.parse_args(argv)
    args = json.loads((a.run / "args.json").read_text())
    src_args = json.loads((a.src / "args.json").read_text()) if a.src else None
    names = {str(a.run): "RUN2", **({str(a.src): "RUN1"} if a.src else {})}
    data = f"data/{args['data']}.npz"
    with np.load(HERE / data, allow_pickle=False) as z:
        x, xt = z[a.split], z["test"]
    if x.shape[0] != args["n"]:
        raise SystemExit(
            f"--split {a.split} has {x.shape[0]} images, the run trained on {args['n']}"
        )
    dst = HERE / "onnx" / f"{a.name}.onnx"
    shutil.copyfile(a.run / "final.onnx", dst)
    log = [json.loads(line) for line in (a.run / "log.jsonl").read_text().splitlines()]
    final = [r for r in log if r.get("final")][-1]
    y = ort_run(dst, x)
    widths = args["widths"]
    rec = dict(
        kind="autoencoder",
        architecture=(
            f"U-Net, {len(widths.split(','))} levels, widths {widths}: two 3x3 convs per level "
            "with an activation after each, average-pool down, nearest upsample and "
            "concatenated skips up, 3x3 conv read-out to 3 channels + the activation "
            "(models/train_unet.py build)"
        ),
        activation={"lrelu": "LeakyReLU(0.1)", "prelu": "PReLU", "softplus": "Softplus"}[
            args["act"]
        ],
        dataset=data,
        split=a.split,
        n_train=int(x.shape[0]),
        seed=42,
        input_shape=[None, *x.shape[1:]],
        output_shape=[None, *y.shape[1:]],
        init="Kaiming normal (leaky_relu, a=0.1), zero biases",
        optimizer="full batch, torch 2.13.0+cpu, 1 thread; Adam, then L-BFGS (strong Wolfe, "
        "history 50) in float32, then in float64 (exported in float32)",
        script=(command(src_args, names) + " ; then " if src_args else "") + command(args, names),
        schedule=a.notes,
        finish="none: every weight from gradient descent (no closed-form layer)",
        exporter="torch.onnx.export legacy (dynamo=False)",
        opset=17,
        n_params=int(final["n_params"]),
        train_mse=ort_mse(dst, x),
        test_mse=ort_mse(dst, xt),
        train_mse_torch_float64=final["train"],
        admm_radius_screened=final["admm_radius"],
        attractor_fraction=0.0,  # set by models/conv_attractors.py colour16_unet
    )
    update_manifest({f"onnx/{a.name}.onnx": rec})
    print(json.dumps({k: rec[k] for k in ("train_mse", "test_mse", "n_params")}))


if __name__ == "__main__":
    main()
