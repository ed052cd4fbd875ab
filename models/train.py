"""Regenerate everything under ``models/`` (data, then models in priority order).

    pip install -e ".[train]"            # torch==2.13.0 (CPU), scikit-learn, scikit-image
    python models/train.py               # everything (about an hour; U-Nets ~25 min of it)
    python models/train.py --only digits-lrelu tied --max-seconds 300

Steps (names for ``--only``): data, digits-lrelu, faces-lrelu, tied, gen-fc, plugin,
bregman-fc, bregman-conv, digits-prelu, digits-lrelu-10layer, faces-prelu,
unet-lrelu, unet-prelu, unet-softplus. ``--max-seconds`` caps the training time of
each model (wall clock; the defaults are in the individual scripts). With a cap
that is hit, results depend on the machine's speed; the steps actually run are
recorded in MANIFEST.json. Every script uses torch.set_num_threads(1) and fixed seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ORDER = [
    "data",
    "digits-lrelu",
    "faces-lrelu",
    "tied",
    "gen-fc",
    "plugin",
    "bregman-fc",
    "bregman-conv",
    "digits-prelu",
    "digits-lrelu-10layer",
    "faces-prelu",
    "unet-lrelu",
    "unet-prelu",
    "unet-softplus",
]


def main(argv=None):
    ap = argparse.ArgumentParser(description="regenerate models/")
    ap.add_argument("--only", nargs="*", choices=ORDER, default=None)
    ap.add_argument("--max-seconds", type=float, default=None)
    a = ap.parse_args(argv)
    cap = [] if a.max_seconds is None else ["--max-seconds", str(a.max_seconds)]
    for step in a.only or ORDER:
        print(f"== {step}", flush=True)
        if step == "data":
            import make_data

            make_data.main([])
        elif step == "tied":
            import train_tied

            train_tied.main(cap)
        elif step in ("gen-fc", "plugin", "bregman-fc", "bregman-conv"):
            import train_gen

            train_gen.main(["--only", step, *cap])
        elif step.startswith("unet-"):
            import train_unet

            train_unet.main(["--only", step[5:], *cap])
        else:
            import train_mlp

            train_mlp.main(["--only", step, *cap])


if __name__ == "__main__":
    main()
