"""The report's example grids: valid PNG files holding the images themselves, magnified."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from refinv.evaluation.figures import _tile_scale, figure_examples, png_bytes

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")


def _decode(data: bytes) -> np.ndarray:
    im = PIL.open(io.BytesIO(data))
    im.load()  # full decode: checks every chunk's CRC and the zlib stream
    return np.asarray(im)


@pytest.mark.parametrize("shape", [(7, 5), (4, 9, 3), (1, 1)])
def test_png_bytes_round_trip(shape):
    a = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    data = png_bytes(a)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    assert (h, w) == shape[:2]
    # chunk CRCs are right (PIL checks too, but say it independently)
    pos = 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])[0] == zlib.crc32(tag + body)
        pos += 12 + n
    assert np.array_equal(_decode(data), a)


def test_png_bytes_refuses_other_shapes():
    with pytest.raises(ValueError):
        png_bytes(np.zeros((2, 2, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        png_bytes(np.zeros((0, 3), dtype=np.uint8))


def _find(img: np.ndarray, tile: np.ndarray) -> list[tuple[int, int]]:
    th, tw = tile.shape[:2]
    cand = np.argwhere(img[: img.shape[0] - th + 1, : img.shape[1] - tw + 1] == tile[0, 0])
    if img.ndim == 3:
        cand = np.unique(cand[:, :2], axis=0)
    return [(t, l) for t, l in cand if np.array_equal(img[t : t + th, l : l + tw], tile)]


@pytest.mark.parametrize("sample", [(1, 5, 7), (3, 6, 4)])
def test_figure_examples_holds_every_image_magnified(tmp_path, sample):
    rng = np.random.default_rng(1)
    k = 3
    x, y, xhat = (rng.random((k, *sample)) for _ in range(3))
    h = (rng.random((k, 1, *sample[1:])) < 0.5).astype(np.uint8)
    p = figure_examples(
        tmp_path / "g.png", x=x, y=y, xhat=xhat, h_true=h, mse=[1e-3, None, 2e-9],
        checkpoint="ck", mask="random:0.5", method="known", split="train",
    )  # fmt: skip
    img = _decode(p.read_bytes())
    colour = sample[0] == 3
    assert img.ndim == (3 if colour else 2)
    sc = _tile_scale(sample[1:])
    assert sc == round(100 / max(sample[1:]))
    tops = {}
    for name, arr in (("x", x), ("y", y), ("xhat", xhat), ("h", h)):
        lefts = []
        for j in range(k):
            a = arr[j].astype(np.float64)
            a = np.moveaxis(a, 0, -1) if a.shape[0] == 3 else a[0]
            t = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
            t = np.repeat(np.repeat(t, sc, axis=0), sc, axis=1)
            if colour and t.ndim == 2:
                t = np.repeat(t[..., None], 3, axis=2)
            hits = _find(img, t)
            assert len(hits) == 1, (name, j, hits)
            lefts.append(hits[0][1])
            tops.setdefault(name, set()).add(hits[0][0])
        assert lefts == sorted(lefts)  # one column per image, in order
        first_left = lefts[0]
        assert len(tops[name]) == 1  # one row per kind
    order = [tops[n].pop() for n in ("x", "y", "xhat", "h")]
    assert order == sorted(order)  # original, degraded, recovered, mask from top to bottom
    # text was drawn: the title above the first row, the row names left of the first column
    assert (img[: order[0] - sc] < 128).any()
    assert (img[order[0] :, : first_left - 1] < 128).any()
    # same inputs -> same bytes (deterministic writer)
    q = figure_examples(
        tmp_path / "g2.png", x=x, y=y, xhat=xhat, h_true=h, mse=[1e-3, None, 2e-9],
        checkpoint="ck", mask="random:0.5", method="known", split="train",
    )  # fmt: skip
    assert q.read_bytes() == p.read_bytes()


@pytest.mark.parametrize("module, dist", [("PIL", "Pillow"), ("matplotlib", "matplotlib")])
def test_missing_figure_packages_name_the_plot_extra(tmp_path, monkeypatch, module, dist):
    from refinv.errors import ConfigError
    from refinv.evaluation.figures import require_figure_dependencies

    monkeypatch.setitem(__import__("sys").modules, module, None)  # import fails
    with pytest.raises(ConfigError, match=rf"{dist}.*pip install 'refinv\[plot\]'"):
        require_figure_dependencies()
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ConfigError, match="plot"):
        figure_examples(tmp_path / "g.png", x=x, y=x, xhat=x, h_true=x)
