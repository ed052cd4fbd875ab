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
* ``natural16.npz`` non-overlapping 3x16x16 colour tiles, at native resolution, of the
  nine colour photographs shipped inside scikit-image and scikit-learn (see
  :data:`NATURAL_SOURCES`): the moderate-overfitting regime on natural images.
  Near-constant tiles (largest per-channel standard deviation < 0.02, i.e. about
  5/255) are dropped, at most 550 tiles are kept per photograph (seeded random
  choice) so that no photograph supplies more than ~12% of the tiles, then all are
  shuffled and split into ``train`` 1,200 / ``val`` 300 (for choosing rho) / ``test``
  (the rest, 3,262); ``*_source`` (int16) name each tile's photograph. Held-out tiles come
  from the SAME photographs as the training tiles (other places in them). Compressed.

Usage: ``python models/make_data.py [--seed 0] [--out models/data] [--only NAME ...]``
(``--only natural16`` writes that file alone and leaves the others untouched: ``np.savez``
stamps the write time into the zip, so rewriting a file changes its bytes, not its arrays).
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


# Colour photographs shipped inside the installed packages (no network): skimage.data's
# loaders that read a bundled file, and sklearn.datasets.load_sample_images(). Left out:
# skimage.data.cat (the same array as chelsea), colorwheel and logo (synthetic drawings),
# and the pooch-downloaded images (brain, eagle, kidney, lily, skin, ...), which need the
# network. (name, loader)
NATURAL_SOURCES = (
    "skimage.data: astronaut, chelsea, coffee, rocket, immunohistochemistry, "
    "hubble_deep_field, retina; sklearn.datasets.load_sample_images(): china, flower"
)
NATURAL_TILE = 16
NATURAL_MIN_STD = 0.02  # a tile is near-constant if every channel's std is below this
NATURAL_MAX_PER_IMAGE = 550
NATURAL_SPLIT = (1200, 300)  # train, val; test = the rest


def _natural_photos() -> list[tuple[str, np.ndarray]]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    names = (
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "immunohistochemistry",
        "hubble_deep_field",
        "retina",
    )
    photos = [(n, getattr(data, n)()) for n in names]
    sk = load_sample_images()
    for fname, img in zip(sk.filenames, sk.images, strict=True):
        photos.append((Path(fname).stem, img))
    return photos


def natural_tiles(rng: np.random.Generator):
    """``(tiles, source, counts)``: float32 (N, 3, 16, 16) in [0, 1], the photograph index of
    each tile (order of :func:`_natural_photos`), and per photograph ``(name, all tiles, kept
    after the near-constant rule, kept after the per-photograph cap)``."""
    s = NATURAL_TILE
    tiles, source, counts = [], [], []
    for k, (name, img) in enumerate(_natural_photos()):
        x = img.astype(np.float64) / 255.0  # (H, W, 3) uint8
        h, w = x.shape[0] // s, x.shape[1] // s
        t = x[: h * s, : w * s].reshape(h, s, w, s, 3).transpose(0, 2, 4, 1, 3)
        t = t.reshape(h * w, 3, s, s)
        keep = np.flatnonzero(t.reshape(h * w, 3, -1).std(axis=2).max(axis=1) >= NATURAL_MIN_STD)
        n_var = keep.size
        if keep.size > NATURAL_MAX_PER_IMAGE:
            keep = np.sort(rng.choice(keep, NATURAL_MAX_PER_IMAGE, replace=False))
        tiles.append(t[keep])
        source.append(np.full(keep.size, k, dtype=np.int16))
        counts.append((name, h * w, int(n_var), int(keep.size)))
    x = np.clip(np.concatenate(tiles), 0.0, 1.0).astype(np.float32)
    return x, np.concatenate(source), counts


def natural(rng: np.random.Generator) -> dict[str, np.ndarray]:
    x, src, _ = natural_tiles(rng)
    perm = rng.permutation(x.shape[0])
    x, src = x[perm], src[perm]
    n_tr, n_val = NATURAL_SPLIT
    return {
        "train": np.ascontiguousarray(x[:n_tr]),
        "val": np.ascontiguousarray(x[n_tr : n_tr + n_val]),
        "test": np.ascontiguousarray(x[n_tr + n_val :]),
        "train_source": src[:n_tr].copy(),
        "val_source": src[n_tr : n_tr + n_val].copy(),
        "test_source": src[n_tr + n_val :].copy(),
    }


ALL_FILES = ("digits8", "digits28", "faces25", "colour32", "colour16", "digits28_1797", "natural16")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "data"))
    ap.add_argument(
        "--only", nargs="+", choices=ALL_FILES, default=None, help="write these files alone"
    )
    a = ap.parse_args(argv)
    only = set(a.only or ALL_FILES)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # One independent Generator per data set so that each file depends only on the seed.
    # (spawn(4)[:3] equals spawn(3): adding colour16 left the other three files unchanged.)
    # spawn(5)[:4] equals spawn(4): adding digits28_1797 left the others unchanged too;
    # spawn(6)[:5] equals spawn(5): so did natural16.
    ss = np.random.SeedSequence(a.seed).spawn(6)
    if only & {"digits8", "digits28"}:
        d_tr, d_te = digits(np.random.default_rng(ss[0]))
        if "digits8" in only:
            np.savez(out / "digits8.npz", train=d_tr, test=d_te)
        if "digits28" in only:
            np.savez(out / "digits28.npz", train=upsample28(d_tr), test=upsample28(d_te))
    if "faces25" in only:
        f_tr, f_te = faces(np.random.default_rng(ss[1]))
        np.savez(out / "faces25.npz", train=f_tr, test=f_te)
    if "colour32" in only:
        c_tr, c_te = colour(np.random.default_rng(ss[2]))
        np.savez(out / "colour32.npz", train=c_tr, test=c_te)
    if "colour16" in only:
        c_tr, c_te = colour(np.random.default_rng(ss[3]), size=16)
        np.savez(out / "colour16.npz", train=c_tr, test=c_te, train10=c_tr[:10])
    if "digits28_1797" in only:
        a_tr, a_te = digits_all(np.random.default_rng(ss[0]), np.random.default_rng(ss[4]))
        a_tr, a_te = upsample28(a_tr), upsample28(a_te)
        np.savez_compressed(
            out / "digits28_1797.npz",
            train=a_tr,
            test=a_te,
            train100=a_tr[:100],
            train300=a_tr[:300],
        )
    if "natural16" in only:
        np.savez_compressed(out / "natural16.npz", **natural(np.random.default_rng(ss[5])))
    written = [n for n in ALL_FILES if n in only]
    for name in written:
        with np.load(out / f"{name}.npz", allow_pickle=False) as z:
            print(name, {k: (z[k].shape, str(z[k].dtype)) for k in z.files})
    if out.resolve() == (Path(__file__).resolve().parent / "data"):
        _register(out, a.seed, written)


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
    "of 50 train / 50 test tiles; train10 = train[:10] (the training set of the gradient-trained "
    "U-Net colour16_unet4_lrelu_dn_n10)",
    "digits28_1797": "all 1797 sklearn digits upsampled to 28x28 like digits28.npz; train = the "
    "100 digits28 training images followed by 1100 others (order: SeedSequence(seed).spawn(5)[4]), "
    "test = the 100 digits28 held-out images followed by the remaining 497; train100 = train[:100], "
    "train300 = train[:300] (nested training sets of the dataset-size curve)",
    "natural16": "non-overlapping 16x16 tiles (channels first, uint8/255, native resolution, "
    "from the top-left corner) of the nine colour photographs shipped inside the installed "
    f"packages ({NATURAL_SOURCES}); near-constant tiles dropped (every channel's std < "
    f"{NATURAL_MIN_STD:g}); at most {NATURAL_MAX_PER_IMAGE} tiles per photograph (random "
    "choice); shuffled (all draws from SeedSequence(seed).spawn(6)[5]) and split: train "
    f"{NATURAL_SPLIT[0]}, val {NATURAL_SPLIT[1]} (for choosing rho), test = the rest; "
    "*_source (int16) = the index of each tile's "
    "photograph in the order listed. Held-out (val, test) tiles come from the same nine "
    "photographs as the training tiles, never from the same place",
}


def _register(out: Path, seed: int, names=tuple(SOURCES)) -> None:
    from _common import update_manifest

    entries = {}
    for name in names:
        src = SOURCES[name]
        with np.load(out / f"{name}.npz", allow_pickle=False) as z:
            entries[f"data/{name}.npz"] = dict(
                kind="data",
                keys=list(z.files),
                shapes={k: list(z[k].shape) for k in z.files},
                dtype="float32" if name != "natural16" else "float32 (images), int16 (*_source)",
                value_range=[0.0, 1.0],
                n_train=int(z["train"].shape[0]),
                n_test=int(z["test"].shape[0]),
                source=src,
                seed=seed,
                script="models/make_data.py",
                format=(
                    "np.savez_compressed (no pickles); load with allow_pickle=False"
                    if name in ("digits28_1797", "natural16")
                    else "np.savez (uncompressed, no pickles); load with allow_pickle=False"
                ),
            )
    update_manifest(entries)


if __name__ == "__main__":
    main()
