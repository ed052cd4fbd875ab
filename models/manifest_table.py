"""Print the README table of models/MANIFEST.json as Markdown (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    files = json.loads((HERE / "MANIFEST.json").read_text())["files"]
    print(
        "| file | kind | data | train MSE (ORT) | held-out MSE | params | size (bytes) "
        "| attractors | train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for k, v in files.items():
        if v["kind"] not in ("autoencoder", "decoder", "encoder"):
            continue
        att = v.get("attractor_fraction", v.get("autoencoder_attractor_fraction"))
        att = "" if att is None else f"{att:.0%}"
        if v.get("attractor_images"):
            att += " (20 imgs)"
        mse = v.get("train_mse")
        te = v.get("test_mse")
        print(
            f"| `{k}` | {v['kind']}{' (interp.)' if v.get('interpolated') else ''} "
            f"| {v['dataset'].split()[0].removeprefix('data/')} "
            f"| {'' if mse is None else f'{mse:.2e}'} | {'' if te is None else f'{te:.2e}'} "
            f"| {v.get('n_params', '')} | {v['size_bytes']} | {att} "
            f"| {v.get('train_seconds', '')} |"
        )
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"\nTotal size of models/: {total} bytes ({total / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
