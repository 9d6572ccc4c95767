"""The working-image resize kernel (onnxplain.kernels.resize) and the decode path around it.

Oracles: scikit-image's ``transform.resize`` (order 1, edge mode, anti-aliasing when
downsizing, preserve_range), the resize onnxplain used before the kernel, within 1e-3 in
0..255 units (measured: one float32 ulp, 1.5e-5); the kernel's own plain-numpy reference
(same taps, same float64 arithmetic); a full Pillow decode for the JPEG draft path.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.transform import resize

from onnxplain.images import image_size, load_image, load_image_sized, resize_image
from onnxplain.kernels.resize import resample, resample_reference

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field")


def _skimage(image: np.ndarray, size) -> np.ndarray:
    anti = size[0] < image.shape[0] or size[1] < image.shape[1]
    out = resize(image, (size[0], size[1], image.shape[2]), order=1, mode="edge", anti_aliasing=anti,
                 preserve_range=True)
    return out.astype(np.float32)


def _photo(name: str) -> np.ndarray:
    a = getattr(data, name)()
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3], dtype=np.float32)


@pytest.mark.parametrize("size", [(224, 224), (64, 96), (300, 200), (600, 700), (7, 5)])
def test_resize_equals_scikit_image_on_photos(size):
    """Down, up and mixed (one axis down, the other up) resizes of real photos."""
    for name in PHOTOS:
        img = _photo(name)
        got = resize_image(img, size)
        assert got.dtype == np.float32 and got.shape == (*size, 3)
        np.testing.assert_allclose(got, _skimage(img, size), rtol=0, atol=1e-3, err_msg=name)


def test_resize_edge_cases_equal_scikit_image():
    rng = np.random.default_rng(0)
    for shape, size in [((2, 2, 3), (224, 224)), ((5, 7, 3), (3, 2)), ((100, 900, 3), (224, 224)),
                        ((224, 225, 3), (224, 224)), ((1000, 30, 3), (224, 224))]:
        img = (rng.random(shape) * 255).astype(np.float32)
        np.testing.assert_allclose(resize_image(img, size), _skimage(img, size), rtol=0, atol=1e-3)
    # a constant image stays exactly constant (weights sum to 1, then the clip to the input range)
    flat = np.full((300, 451, 3), 77.0, np.float32)
    assert np.all(resize_image(flat, (224, 224)) == 77.0)


def test_kernel_equals_its_numpy_reference():
    for name in ("astronaut", "coffee"):
        img = _photo(name)
        for size, anti in [((224, 224), True), ((700, 650), False), ((224, 300), True)]:
            np.testing.assert_allclose(resample(img, size, anti), resample_reference(img, size, anti),
                                       rtol=0, atol=2e-5)


def test_float64_images_keep_scikit_image():
    img = _photo("chelsea").astype(np.float64)
    np.testing.assert_array_equal(resize_image(img, (224, 224)), _skimage(img.astype(np.float64), (224, 224)))


def test_jpeg_draft_decode_stays_close_to_a_full_decode(tmp_path):
    """A JPEG at least 4x the working size is decoded at a reduced DCT scale (Image.draft, to at
    least twice the working size), then resized. Tolerance, 0..255 units: mean |difference| to a
    full decode + resize below 2, 99th percentile below 8, correlation above 0.995 (two anti-
    aliasing filters, DCT scaling then Gaussian vs one wider Gaussian, are close, not identical)."""
    big = np.asarray(Image.fromarray(data.astronaut()).resize((1200, 1200), Image.Resampling.BICUBIC))
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=92)
    with Image.open(path) as im:
        full = resize_image(np.asarray(im.convert("RGB")).astype(np.float32), (224, 224))
    drafted, size = load_image_sized(path, working_size=(224, 224))
    assert drafted.shape[0] < 1200 and drafted.shape[0] >= 448      # reduced while decoding, >= 2x working
    assert size == (1200, 1200) == image_size(path)
    diff = np.abs(resize_image(drafted, (224, 224)) - full)
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 8.0
    assert np.corrcoef(resize_image(drafted, (224, 224)).ravel(), full.ravel())[0, 1] > 0.995


def test_load_image_sized_equals_load_image_and_image_size(tmp_path):
    """One open for the size and the pixels gives what the two calls give (PNG with an EXIF
    orientation, which Pillow finds only by decoding the PNG)."""
    img = Image.fromarray(data.chelsea())
    exif = Image.Exif()
    exif[0x0112] = 6                                           # rotate 90 degrees clockwise when shown
    path = tmp_path / "rotated.png"
    img.save(path, exif=exif)
    pixels, size = load_image_sized(path, working_size=(224, 224))
    assert size == image_size(path) == (451, 300)
    np.testing.assert_array_equal(pixels, load_image(path, working_size=(224, 224)))


def test_uint8_input_gives_the_bits_of_its_float32_copy():
    """The decode path resizes the 8-bit image as decoded (no float copy of the full image).
    Oracle: the float32 path above (itself held to scikit-image), compared bit for bit."""
    for name in ("astronaut", "coffee", "camera"):
        a = getattr(data, name)()
        a = np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3])
        for size in [(224, 224), (64, 96), (600, 700), a.shape[:2]]:
            got = resize_image(a, size)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, resize_image(a.astype(np.float32), size), err_msg=f"{name} {size}")


def test_prepare_of_files_equals_float_decode_then_resize(tmp_path):
    """model.prepare (8-bit files kept uint8 up to the resize) equals the float32 canonical image
    (load_image) resized with resize_image, bit for bit, for RGB JPEG, grayscale, RGBA, palette
    and exactly-working-size PNGs and a uint8 array."""
    import onnxplain

    model = onnxplain.load_model()
    rgba = np.dstack([data.astronaut(), np.tile((np.arange(512) // 2).astype(np.uint8)[:, None], (1, 512))])
    images = {"rgb.jpg": Image.fromarray(data.coffee()), "gray.png": Image.fromarray(data.camera()),
              "rgba.png": Image.fromarray(rgba, "RGBA"), "pal.png": Image.fromarray(data.chelsea()).convert("P"),
              "exact.png": Image.fromarray(data.astronaut()[:224, :224])}
    sources = [data.rocket()]
    for fname, im in images.items():
        im.save(tmp_path / fname)
        sources.append(tmp_path / fname)
    for src in sources:
        got, size = model.prepare(src)
        full = load_image(src, working_size=model.input_size)
        assert full.dtype == np.float32 and got.dtype == np.float32
        np.testing.assert_array_equal(got, resize_image(full, model.input_size), err_msg=str(src)[-9:])
        assert size == image_size(src)
