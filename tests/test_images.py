"""Image conversion rules (oracle: the rules stated in engine/images.py, checked by hand)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from onnxplain import ImageError, load_image


def test_uint8_rgb_becomes_float32_same_values():
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    out = load_image(img)
    assert out.dtype == np.float32 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, img.astype(np.float32))


def test_grayscale_is_replicated_and_alpha_dropped():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = load_image(g)
    assert all(np.array_equal(out[..., c], g) for c in range(3))
    rgba = np.dstack([np.full((3, 4), v, np.uint8) for v in (10, 20, 30, 0)])
    np.testing.assert_array_equal(load_image(rgba)[0, 0], [10, 20, 30])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 8, 8), np.uint8), "channels-first arrays must be transposed"),
    (np.zeros((8, 8, 3), np.int32), "integer dtype int32"),
    (np.zeros((8, 8, 3), bool), "dtype bool"),
    (np.zeros((2, 8, 8, 3), np.uint8), "expected \\(H, W\\)"),
    ("not-a-file.png", "does not exist"),
    ([1, 2, 3], "file path or a numpy array"),
])
def test_bad_images(bad, match):
    with pytest.raises(ImageError, match=match):
        load_image(bad)


def test_nan_and_inf_pixels_are_refused_with_position():
    img = np.zeros((4, 4, 3), np.float32)
    img[2, 1, 0] = np.nan
    with pytest.raises(ImageError, match="row 2, column 1, channel 0"):
        load_image(img)
    img[2, 1, 0] = np.inf
    with pytest.raises(ImageError, match="NaN or inf"):
        load_image(img)


def test_files_grayscale_rgba_palette(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    assert load_image(str(tmp_path / "g.png")).shape == (6, 7, 3)
    Image.fromarray(np.dstack([rgb, np.full((6, 7), 128, np.uint8)])).save(tmp_path / "r.png")
    np.testing.assert_array_equal(load_image(tmp_path / "r.png"), rgb)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (6, 7, 3)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ImageError, match="not an image Pillow can read"):
        load_image(tmp_path / "bad.png")


def test_float64_beyond_float32_range_is_named_not_called_nan():
    img = np.zeros((4, 4, 3))
    img[1, 2, 0] = 1e300
    with pytest.raises(ImageError, match="beyond the float32 range \\(first at row 1, column 2, channel 0\\)"):
        load_image(img)
