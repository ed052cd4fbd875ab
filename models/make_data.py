"""Create the reference data sets shipped in ``models/data/`` (offline, seeded).

Every file is an uncompressed ``.npz`` (``np.savez``, no pickles) with two
float32 arrays in [0, 1] of shape (N, C, H, W): ``train`` and ``test``
(the held-out images, never seen in training).

* ``digits8.npz``   100 / 100 images 1x8x8 from ``sklearn.datasets.load_digits``
  (pixel values 0..16 divided by 16);
* ``digits28.npz``  the SAME 100 / 100 digits, bilinearly upsampled to 1x28x28
  (``skimage.transform.resize(order=1, anti_aliasing=False)``, clipped to [0, 1]);
* ``faces25.npz``   100 / 100 faces 1x25x25 from ``skimage.data.lfw_subset``;
* ``colour32.npz``  50 / 50 non-overlapping 3x32x32 patches cut from
  ``skimage.data.astronaut/coffee/chelsea/rocket`` after 2x downscaling
  (area averaging); train and test patches never overlap.
* ``colour16.npz``  50 / 50 non-overlapping 3x16x16 patches, cut the same way
  (2x area downscaling, then 16x16 tiles) from the same four images; a
  full-batch training step costs about 4x less than on colour32.
* ``digits28_1797.npz`` ALL 1,797 scikit-learn digits at 1x28x28 (same
  upsampling), for the moderate-overfitting regime and the
  recovery-vs-dataset-size curve: ``train`` 1,200 / ``test`` 597, with
  ``train[:100]`` and ``test[:100]`` exactly the images of ``digits28.npz``;
  ``train100`` and ``train300`` are ``train[:100]`` and ``train[:300]``
  (nested training sets). Compressed (``np.savez_compressed``).

Usage: ``python models/make_data.py [--seed 0] [--out models/data]``.
Requires the ``train`` extra (scikit-learn, scikit-image); no network access.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 0


def _split(x: np.ndarray, n_train: int, n_test: int, rng: np.random.Generator):
    perm = rng.permutation(x.shape[0])
    tr = x[perm[:n_train]]
    te = x[perm[n_train : n_train + n_test]]
    return np.ascontiguousarray(tr, dtype=np.float32), np.ascontiguousarray(te, dtype=np.float32)


def digits(rng: np.random.Generator):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float64) / 16.0)[:, None, :, :]
    return _split(x, 100, 100, rng)


def digits_all(rng: np.random.Generator, rng_rest: np.random.Generator, n_train: int = 1200):
    """All digits, ordered so that the first 100 / 100 are the split of :func:`digits`."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float64) / 16.0)[:, None, :, :]
    perm = rng.permutation(x.shape[0])  # the same draw as _split in digits()
    rest = perm[200:][rng_rest.permutation(x.shape[0] - 200)]
    extra = n_train - 100
    tr = np.concatenate([perm[:100], rest[:extra]])
    te = np.concatenate([perm[100:200], rest[extra:]])
    return x[tr], x[te]


def upsample28(x: np.ndarray) -> np.ndarray:
    from skimage.transform import resize

    out = np.empty((x.shape[0], 1, 28, 28), dtype=np.float64)
    for i in range(x.shape[0]):
        out[i, 0] = resize(x[i, 0].astype(np.float64), (28, 28), order=1, anti_aliasing=False)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def faces(rng: np.random.Generator):
    from skimage.data import lfw_subset

    x = lfw_subset().astype(np.float64)[:, None, :, :]
    x = np.clip(x, 0.0, 1.0)
    return _split(x, 100, 100, rng)


def colour(rng: np.random.Generator, size: int = 32):
    from skimage import data
    from skimage.transform import downscale_local_mean

    patches = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        img = getattr(data, name)().astype(np.float64) / 255.0  # (H, W, 3) uint8
        img = downscale_local_mean(img, (2, 2, 1))
        h, w = img.shape[0] // size, img.shape[1] // size
        for i in range(h):
            for j in range(w):
                p = img[i * size : (i + 1) * size, j * size : (j + 1) * size, :]
                patches.append(np.transpose(p, (2, 0, 1)))
    x = np.clip(np.stack(patches), 0.0, 1.0)
    return _split(x, 50, 50, rng)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "data"))
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # One independent Generator per data set so that each file depends only on the seed.
    # (spawn(4)[:3] equals spawn(3): adding colour16 left the other three files unchanged.)
    # spawn(5)[:4] equals spawn(4): adding digits28_1797 left the others unchanged too.
    ss = np.random.SeedSequence(a.seed).spawn(5)
    d_tr, d_te = digits(np.random.default_rng(ss[0]))
    np.savez(out / "digits8.npz", train=d_tr, test=d_te)
    np.savez(out / "digits28.npz", train=upsample28(d_tr), test=upsample28(d_te))
    f_tr, f_te = faces(np.random.default_rng(ss[1]))
    np.savez(out / "faces25.npz", train=f_tr, test=f_te)
    c_tr, c_te = colour(np.random.default_rng(ss[2]))
    np.savez(out / "colour32.npz", train=c_tr, test=c_te)
    c_tr, c_te = colour(np.random.default_rng(ss[3]), size=16)
    np.savez(out / "colour16.npz", train=c_tr, test=c_te)
    a_tr, a_te = digits_all(np.random.default_rng(ss[0]), np.random.default_rng(ss[4]))
    a_tr, a_te = upsample28(a_tr), upsample28(a_te)
    np.savez_compressed(
        out / "digits28_1797.npz", train=a_tr, test=a_te, train100=a_tr[:100], train300=a_tr[:300]
    )
    for name in ("digits8", "digits28", "faces25", "colour32", "colour16", "digits28_1797"):
        with np.load(out / f"{name}.npz", allow_pickle=False) as z:
            print(name, {k: (z[k].shape, str(z[k].dtype)) for k in z.files})
    if out.resolve() == (Path(__file__).resolve().parent / "data"):
        _register(out, a.seed)


SOURCES = {
    "digits8": "sklearn.datasets.load_digits() (1797 images 8x8, values 0..16 divided by 16); "
    "random split (numpy Generator from SeedSequence(seed).spawn(3)[0]) 100 train / 100 test",
    "digits28": "the same 100 / 100 digits as digits8.npz (same order), upsampled to 28x28 with "
    "skimage.transform.resize(order=1, anti_aliasing=False), clipped to [0, 1]",
    "faces25": "skimage.data.lfw_subset() (200 faces 25x25 in [0, 1]); random split "
    "(SeedSequence(seed).spawn(3)[1]) 100 train / 100 test",
    "colour32": "non-overlapping 32x32 tiles (channels first) of skimage.data astronaut, coffee, "
    "chelsea, rocket (uint8/255) after 2x2 area downscaling (downscale_local_mean); "
    "random choice (SeedSequence(seed).spawn(3)[2]) of 50 train / 50 test tiles",
    "colour16": "non-overlapping 16x16 tiles (channels first) of the same four skimage.data "
    "images after the same 2x2 area downscaling; random choice (SeedSequence(seed).spawn(4)[3]) "
    "of 50 train / 50 test tiles",
    "digits28_1797": "all 1797 sklearn digits upsampled to 28x28 like digits28.npz; train = the "
    "100 digits28 training images followed by 1100 others (order: SeedSequence(seed).spawn(5)[4]), "
    "test = the 100 digits28 held-out images followed by the remaining 497; train100 = train[:100], "
    "train300 = train[:300] (nested training sets of the dataset-size curve)",
}


def _register(out: Path, seed: int) -> None:
    from _common import update_manifest

    entries = {}
    for name, src in SOURCES.items():
        with np.load(out / f"{name}.npz", allow_pickle=False) as z:
            entries[f"data/{name}.npz"] = dict(
                kind="data",
                keys=list(z.files),
                shapes={k: list(z[k].shape) for k in z.files},
                dtype="float32",
                value_range=[0.0, 1.0],
                n_train=int(z["train"].shape[0]),
                n_test=int(z["test"].shape[0]),
                source=src,
                seed=seed,
                script="models/make_data.py",
                format=(
                    "np.savez_compressed (no pickles); load with allow_pickle=False"
                    if name == "digits28_1797"
                    else "np.savez (uncompressed, no pickles); load with allow_pickle=False"
                ),
            )
    update_manifest(entries)


if __name__ == "__main__":
    main()
