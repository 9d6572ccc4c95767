"""Hostile and awkward image files: bounded memory, limits, EXIF, animation, broken files.

Oracles: Pillow itself (``ImageOps.exif_transpose``, frame 0 of an animation, a full decode
plus skimage's anti-aliased resize for the reduced-decode path), hand-crafted PNG headers
whose declared size is known, and the map-cap rule stated in onnxplain.images.
"""
from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

import onnxplain
from onnxplain.errors import ImageError, OnnxplainWarning
from onnxplain.images import MAX_MAP_PIXELS, load_image, resize_image
from tests import tiny_models as tm


def _png_header_only(path, width, height):
    """A PNG whose header declares width x height but whose data is a few bytes (a 'bomb')."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def test_pixel_limit_names_the_size_before_decoding(tmp_path):
    _png_header_only(tmp_path / "bomb.png", 40000, 40000)  # 1.6 gigapixels; Pillow's own bomb threshold too
    with pytest.raises(ImageError, match=r"40000 x 40000 pixels \(1600\.0 MP\), above the limit of 100 MP"):
        load_image(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="--max-pixels"):
        onnxplain.load_model().classify(tmp_path / "bomb.png")


def test_pixel_limit_is_an_option(tmp_path):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ImageError, match="50 x 40 pixels"):
        load_image(tmp_path / "a.png", max_pixels=1000)
    assert load_image(tmp_path / "a.png", max_pixels=2000).shape == (40, 50, 3)


def test_a_raised_limit_reaches_the_decoder_and_a_short_file_is_an_image_error(tmp_path):
    _png_header_only(tmp_path / "bomb.png", 3000, 3000)
    with pytest.raises(ImageError, match="cannot be decoded"):
        load_image(tmp_path / "bomb.png", max_pixels=None)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_truncated_files_are_image_errors(tmp_path, fmt):
    from skimage.data import chelsea

    path = tmp_path / f"cat.{fmt}"
    Image.fromarray(chelsea()).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot be"):
        load_image(path)


def _oriented(tmp_path, orientation, fmt="png"):
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)  # H 20, W 30 as stored
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.{fmt}"
    im.save(path, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_is_applied_as_pillow_exif_transpose(tmp_path, orientation):
    path = _oriented(tmp_path, orientation)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(np.float32)
    got = load_image(path)
    np.testing.assert_array_equal(got, expected)
    assert got.shape[:2] == ((30, 20) if orientation >= 5 else (20, 30))


def test_rotated_phone_photo_map_has_the_displayed_size(tmp_path):
    from skimage.data import chelsea

    im = Image.fromarray(np.ascontiguousarray(np.rot90(chelsea(), -1)))  # stored sideways: 451 tall
    exif = im.getexif()
    exif[0x0112] = 8  # rotate 90 to show upright (300 tall, 451 wide... as the camera shot it)
    im.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    model = onnxplain.load_model()
    result = onnxplain.occlusion_sensitivity(model, tmp_path / "phone.jpg", stride=56, mask_size=56)
    assert result.score_map.shape == (300, 451)
    upright = model.classify(chelsea(), top_k=1)[0]
    assert model.classify(tmp_path / "phone.jpg", top_k=1)[0][0] == upright[0]


def test_animated_image_first_frame_with_a_warning(tmp_path):
    frames = [Image.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    with pytest.warns(OnnxplainWarning, match="animated \\(2 frames\\); the first frame"):
        img = load_image(tmp_path / "anim.gif")
    assert abs(float(img.mean()) - 10) < 3


def test_reduced_decode_matches_a_full_decode(tmp_path):
    """JPEG draft (DCT scaling) and PNG reduce give what a full decode + anti-aliased resize gives."""
    from skimage.data import astronaut

    big = np.asarray(Image.fromarray(astronaut()).resize((2048, 2048), Image.Resampling.BICUBIC))
    for fmt in ("png", "jpeg"):
        path = tmp_path / f"big.{fmt}"
        Image.fromarray(big).save(path, quality=95)
        with Image.open(path) as im:
            full = resize_image(np.asarray(im.convert("RGB")).astype(np.float32), (64, 64))
        reduced = resize_image(load_image(path, working_size=(64, 64)), (64, 64))
        # two anti-aliasing filters (box then Gaussian vs one wider Gaussian): close, not identical
        assert np.abs(reduced - full).mean() < 4.0, fmt  # 0..255 units
        assert np.corrcoef(reduced.ravel(), full.ravel())[0, 1] > 0.99, fmt


def test_images_above_the_map_cap_are_explained_at_a_capped_size():
    side = int(np.sqrt(MAX_MAP_PIXELS)) + 4          # just above the cap: reduced by 2
    image = np.zeros((side, side, 3), np.uint8)
    image[: side // 2] = 200
    folder = __import__("tempfile").mkdtemp()
    import pathlib

    model = onnxplain.load_model(tm.save(tm.make_classifier(), pathlib.Path(folder), "m"), preprocessing="none")
    with pytest.warns(OnnxplainWarning, match="map cap"):
        result = onnxplain.occlusion_sensitivity(model, image, 0, output_upsampling="nearest")
    assert result.score_map.shape == ((side + 1) // 2, (side + 1) // 2)


def test_float_image_far_from_the_declared_range_warns():
    from skimage.data import chelsea

    model = onnxplain.load_model()  # declares 0..255 pixels
    with pytest.warns(OnnxplainWarning, match=r"expects pixels in 0\.\.255"):
        model.classify(chelsea() / 255.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OnnxplainWarning)
        model.classify(chelsea())
