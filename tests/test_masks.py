"""Pixel erasure and the mask families: shapes, reproducibility, grammar, errors."""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refinv.errors import ConfigError, MaskError, ShapeError
from refinv.operators.masks import (
    center_square,
    draw_masks,
    erase,
    expand_mask,
    grid,
    half_image,
    parse_mask,
    pixel_shape,
    random_blocks,
    random_pixels,
    stripes,
    validate_mask,
)

PS = (7, 9)  # odd, non-square: transpositions cannot hide


def test_pixel_shape():
    assert pixel_shape((3, 7, 9)) == (7, 9)
    assert pixel_shape((7, 9)) == (7, 9)
    assert pixel_shape((64,)) == (64,)
    with pytest.raises(ShapeError):
        pixel_shape((1, 2, 3, 4))


@given(p=st.floats(0, 1), seed=st.integers(0, 2**31))
@settings(max_examples=30, deadline=None)
def test_random_pixels_exact_fraction_and_reproducible(p, seed):
    m = random_pixels(PS, p, seed, n=3)
    assert m.shape == (3, *PS) and m.dtype == bool
    k = round(p * 63)
    assert all(int((~mi).sum()) == k for mi in m)
    np.testing.assert_array_equal(m, random_pixels(PS, p, seed, n=3))


def test_random_masks_differ_per_sample():
    m = draw_masks("random:0.5", (1, 16, 16), 4, 0)
    assert not np.array_equal(m[0], m[1])
    b = draw_masks("blocks:3x4", (1, 16, 16), 4, 0)
    assert not np.array_equal(b[0], b[1])
    # a Generator continues its stream; the same seed gives the same masks
    np.testing.assert_array_equal(b, draw_masks("blocks:3x4", (1, 16, 16), 4, 0))


def test_blocks_erase_at_most_n_blocks():
    m = random_blocks(PS, 2, (3, 2), 1, n=5)
    for mi in m:
        assert 6 <= int((~mi).sum()) <= 12
    with pytest.raises(ConfigError):
        random_blocks(PS, 1, (8, 2), 0)


def test_deterministic_families():
    c = center_square(PS, 3)
    assert int((~c).sum()) == 9 and not c[2:5, 3:6].any() and c[0].all()
    assert int((~half_image(PS, "top")).sum()) == 4 * 9
    assert not half_image(PS, "bottom")[3:].any() and half_image(PS, "bottom")[:3].all()
    assert not half_image(PS, "left")[:, :5].any() and half_image(PS, "left")[:, 5:].all()
    assert not half_image(PS, "right")[:, 4:].any()
    r = stripes(PS, 2, axis="rows")
    np.testing.assert_array_equal(r[:, 0], [1, 1, 0, 0, 1, 1, 0])
    assert (r == r[:, :1]).all()
    c2 = stripes(PS, 1, axis="cols")
    np.testing.assert_array_equal(c2[0], np.arange(9) % 2 == 0)
    g = grid(PS, 3)
    assert g.sum() == 3 * 3 and g[0, 0] and g[3, 6] and not g[1, 0]
    with pytest.raises(ConfigError):
        half_image(PS, "middle")
    with pytest.raises(ConfigError):
        center_square(PS, 8)


@pytest.mark.parametrize(
    "spec, family, erased",
    [
        ("random:0.5", "random", 32),
        ("random:0.25", "random", 16),
        ("center:4", "center", 16),
        ("rows:2", "rows", None),
        ("cols:2", "cols", None),
        ("half:top", "half", 32),
        ("blocks:3x2", "blocks", None),
        ("blocks:2x2x3", "blocks", None),
        ("grid:2", "grid", 48),
        ("ones", "ones", 0),
    ],
)
def test_parse_grammar(spec, family, erased):
    ms = parse_mask(spec)
    assert ms.family == family and str(ms) == spec
    m = ms.draw((8, 8), 2, 0)
    assert m.shape == (2, 8, 8)
    if erased is not None:
        assert int((~m[0]).sum()) == erased


@pytest.mark.parametrize(
    "spec",
    ["random", "random:1.5", "random:x", "center:-1", "rows:0", "half:up", "blocks:3", "blob:2",
     "blocks:axb", "file:/nonexistent/mask.npz", "grid:0"],
)  # fmt: skip
def test_parse_errors(spec):
    with pytest.raises(ConfigError):
        parse_mask(spec)


def test_random_needs_seed():
    with pytest.raises(ConfigError):
        parse_mask("random:0.5").draw((4, 4), 1, None)


def test_file_mask(tmp_path):
    m = np.ones((5, 6), dtype=np.uint8)
    m[1, 2] = 0
    np.savez(tmp_path / "m.npz", mask=m)
    got = parse_mask(f"file:{tmp_path / 'm.npz'}").draw((5, 6), 3)
    assert got.shape == (3, 5, 6) and not got[:, 1, 2].any() and got.sum() == 3 * 29
    with pytest.raises(MaskError):
        parse_mask(f"file:{tmp_path / 'm.npz'}").draw((6, 5), 1)
    np.savez(tmp_path / "bad.npz", mask=m * 2)
    with pytest.raises(MaskError):
        parse_mask(f"file:{tmp_path / 'bad.npz'}").draw((5, 6), 1)


def test_validate_mask_errors():
    ok = validate_mask(np.array([[0.0, 1.0]]), (1, 2))
    assert ok.dtype == bool
    for bad in (np.array([[0.5, 1.0]]), np.array([[2, 0]]), np.array([[np.nan, 1.0]])):
        with pytest.raises(MaskError, match="0 .*and 1"):
            validate_mask(bad, (1, 2))
    with pytest.raises(MaskError, match="shape"):
        validate_mask(np.ones((2, 3)), (3, 2))
    with pytest.raises(MaskError, match="shape"):
        validate_mask(np.ones((4, 2, 3)), (2, 3), batch=5)
    with pytest.raises(MaskError):
        validate_mask(np.array([["a", "b"]]), (1, 2))


def test_erase_all_channels_and_noise():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 5, 6))
    m = random_pixels((5, 6), 0.4, 1, n=2)
    y = erase(x, m)
    for c in range(3):
        np.testing.assert_array_equal(y[:, c][~m], 0.0)
        np.testing.assert_array_equal(y[:, c][m], x[:, c][m])
    yn = erase(x, m, noise_std=0.1, rng=3)
    # the noise's statistics: test_noise_is_added_to_every_pixel_erased_ones_included
    np.testing.assert_array_equal(yn, erase(x, m, noise_std=0.1, rng=3))
    with pytest.raises(ConfigError):
        erase(x, m, noise_std=0.1)
    with pytest.raises(ConfigError):
        erase(x, m, noise_std=-1.0)
    with pytest.raises(MaskError):
        erase(x, m[:, :4])


def test_erase_array_api_strict():
    x = xps.asarray(np.random.default_rng(0).random((2, 1, 4, 4)))
    m = center_square((4, 4), 2)
    y = erase(x, m)
    assert type(y) is type(x)
    h = expand_mask(m, (1, 4, 4), 2, like=x)
    assert h.shape == (2, 1, 4, 4) and h.dtype == xps.float64
    assert float(xps.sum(y)) == pytest.approx(float(np.sum(np.asarray(x) * m)))


def _grid(rows: str) -> np.ndarray:
    """A mask written as text: '.' observed, '#' erased."""
    return np.array([[c == "." for c in r] for r in rows.split()], dtype=bool)


def test_center_square_geometry_odd_and_even_sizes():
    """The documented geometry, offset (H - S) // 2 rounded DOWN, checked against masks
    written by hand where the rounding matters (odd H - S and W - S)."""
    odd = _grid(
        """
        .........
        .........
        ...##....
        ...##....
        .........
        .........
        .........
        """
    )
    np.testing.assert_array_equal(center_square((7, 9), 2), odd)
    even = _grid(
        """
        ......
        ......
        .###..
        .###..
        .###..
        ......
        ......
        ......
        """
    )
    np.testing.assert_array_equal(center_square((8, 6), 3), even)
    np.testing.assert_array_equal(center_square((4, 4), 2), _grid(".... .##. .##. ...."))
    np.testing.assert_array_equal(center_square((3, 3), 0), np.ones((3, 3), bool))
    np.testing.assert_array_equal(parse_mask("center:2").draw((7, 9), 2)[1], odd)


def test_noise_is_added_to_every_pixel_erased_ones_included():
    """The degradation model y = H x + e: the noise e is i.i.d. N(0, sigma^2) on EVERY entry
    (erased pixels become pure noise), not only on the observed ones."""
    rng = np.random.default_rng(1)
    x = rng.random((50, 2, 40, 50))
    m = random_pixels((40, 50), 0.5, 2, n=50)
    sigma = 0.1
    e = erase(x, m, noise_std=sigma, rng=4) - erase(x, m)
    erased = np.broadcast_to(~m[:, None], x.shape)
    # 100 000 values each: the sample std is within 1% of sigma (std error 0.22%)
    assert np.std(e[erased]) == pytest.approx(sigma, rel=0.01)
    assert np.std(e[~erased]) == pytest.approx(sigma, rel=0.01)
    assert abs(np.mean(e)) < 5 * sigma / np.sqrt(e.size)
    assert np.count_nonzero(e[erased]) == erased.sum()


def test_file_mask_key(tmp_path):
    a = np.ones((5, 6), dtype=np.uint8)
    b = a.copy()
    b[0, 0] = 0
    np.savez(tmp_path / "two.npz", a=a, b=b)
    got = parse_mask(f"file:{tmp_path / 'two.npz'}:b").draw((5, 6), 2)
    assert got.shape == (2, 5, 6) and not got[:, 0, 0].any() and got.sum() == 2 * 29
    assert parse_mask(f"file:{tmp_path / 'two.npz'}:a").draw((5, 6), 1).all()
    with pytest.raises(ConfigError, match=r"'c'.*|.*'a', 'b'"):
        parse_mask(f"file:{tmp_path / 'two.npz'}:c")
    with pytest.raises(ConfigError, match="file:PATH.npz:KEY"):
        parse_mask(f"file:{tmp_path / 'two.npz'}")  # two arrays, none named mask
    # a file whose name has a colon is still read whole
    np.savez(tmp_path / "we:ird.npz", mask=b)
    assert not parse_mask(f"file:{tmp_path / 'we:ird.npz'}").draw((5, 6), 1)[0, 0, 0]
