"""Occlusion kernels against their plain-numpy references (oracle: ``occlude_batch_reference``
occludes the *pixel* image and converts it with the vectorised numpy preprocessing;
``accumulate_windows_reference`` adds window by window with numpy slices). Exact equality."""
from __future__ import annotations

import numpy as np
import pytest

from onnxplain.kernels._native import to_native_reference
from onnxplain.kernels.occlusion import (accumulate_windows, accumulate_windows_reference, occlude_batch,
                               occlude_batch_reference)

H, W = 13, 17
# (dtype, channel order, scale, offset): float models with ImageNet-like affine; uint8 with an
# affine that makes rounding and clipping matter.
SPECS = {
    "float32": (np.float32, [0, 1, 2], [1 / 255 / 0.229, 1 / 255 / 0.224, 1 / 255 / 0.225], [-2.1, -2.0, -1.8]),
    "float16": (np.float16, [0, 1, 2], [0.0078125] * 3, [-0.9921875] * 3),
    "uint8-bgr": (np.uint8, [2, 1, 0], [1.0, 0.9, 1.3], [-3.0, 2.5, 0.5]),
    "float32-bgr": (np.float32, [2, 1, 0], [1.0, 1.0, 1.0], [-103.9, -116.8, -123.7]),
}
# windows inside, overhanging every edge, and larger than the overlap (starts may be negative)
ROWS = np.array([0, -2, 9, 4, -3, 11, 0], dtype=np.int64)
COLS = np.array([0, -3, 14, 6, 12, -1, 11], dtype=np.int64)


def _case(spec):
    dtype, cs, a, b = SPECS[spec]
    rng = np.random.default_rng(3)
    pixels = (rng.random((H, W, 3)) * 255).astype(np.float32)
    return pixels, dtype, np.array(cs, np.int64), np.array(a, np.float32), np.array(b, np.float32)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("window", [(4, 5), (1, 1), (H, W)])
def test_occlude_batch_matches_reference(layout, spec, window):
    pixels, dtype, cs, a, b = _case(spec)
    fill = np.array([120.4, 7.5, 250.2], np.float32)
    base = to_native_reference(pixels[None], layout, dtype, cs, a, b)[0]
    fill_native = to_native_reference(fill.reshape(1, 1, 1, 3), layout, dtype, cs, a, b).reshape(3)
    out = np.full((10,) + base.shape, 77, dtype=dtype)
    got = occlude_batch(base, fill_native, ROWS, COLS, window, layout, out)
    want = occlude_batch_reference(pixels, fill, ROWS, COLS, window, layout, dtype, cs, a, b)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))  # bitwise, also for float16
    assert np.all(out[len(ROWS):] == 77)  # rows past n untouched


def test_occlude_batch_reuses_buffer_and_checks_inputs():
    pixels, dtype, cs, a, b = _case("float32")
    base = to_native_reference(pixels[None], "NCHW", dtype, cs, a, b)[0]
    fill = np.zeros(3, np.float32)
    out = np.empty((4,) + base.shape, np.float32)
    assert occlude_batch(base, fill, ROWS[:2], COLS[:2], (3, 3), "NCHW", out).base is out
    with pytest.raises(ValueError, match="out must be"):
        occlude_batch(base, fill, ROWS, COLS, (3, 3), "NCHW", out)  # 7 windows, room for 4
    with pytest.raises(ValueError, match="fill must be"):
        occlude_batch(base, fill.astype(np.float64), ROWS[:2], COLS[:2], (3, 3), "NCHW", out)
    with pytest.raises(ValueError, match="3 channels"):
        occlude_batch(base, fill, ROWS[:2], COLS[:2], (3, 3), "NHWC", out)


@pytest.mark.parametrize("window", [(4, 5), (H, W), (2, 1)])
def test_accumulate_windows_matches_reference(window):
    rng = np.random.default_rng(1)
    deltas = rng.normal(size=(len(ROWS), 3))
    sums, counts = np.zeros((H, W, 3)), np.zeros((H, W), np.int64)
    ref_sums, ref_counts = np.zeros((H, W, 3)), np.zeros((H, W), np.int64)
    accumulate_windows(deltas, ROWS, COLS, window, sums, counts)
    accumulate_windows_reference(deltas, ROWS, COLS, window, ref_sums, ref_counts)
    assert np.array_equal(counts, ref_counts) and np.array_equal(sums, ref_sums)
    assert counts.sum() > 0
