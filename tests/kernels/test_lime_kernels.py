"""kernels.lime: numba kernels against their plain-numpy references, exactly."""
from __future__ import annotations

import numpy as np
import pytest

from onnxplain.kernels import lime as K

CASES = [(layout, dtype, order) for layout in ("NCHW", "NHWC") for dtype in (np.float32, np.float16, np.uint8)
         for order in ("RGB", "BGR")]


def _affine(dtype, order):
    """Channel source, scale and offset like InputSpec's (uint8: values that need rounding and clipping)."""
    cs = np.array([0, 1, 2] if order == "RGB" else [2, 1, 0], dtype=np.int64)
    if dtype == np.uint8:
        return cs, np.array([1.0, 0.9, 1.13], np.float32), np.array([0.5, -3.25, 2.5], np.float32)
    return cs, np.array([1 / 58.4, 1 / 57.1, 1 / 57.4], np.float32), np.array([-2.11, -2.03, -1.8], np.float32)


def _image(rng, h, w):
    """Float32 pixels, partly outside 0..255 so uint8 clipping is exercised; some exact .5 values."""
    px = (rng.random((h, w, 3)) * 300 - 20).astype(np.float32)
    px[0, :, 0] = np.arange(w) + 0.5
    return px


@pytest.mark.parametrize("layout, dtype, order", CASES)
def test_native_image_matches_reference(layout, dtype, order):
    """Oracle: native_image_reference (the expression of Model.to_native)."""
    rng = np.random.default_rng(1)
    px = _image(rng, 9, 11)
    cs, a, b = _affine(dtype, order)
    got = K.native_image(px, cs, a, b, layout, dtype)
    want = K.native_image_reference(px, cs, a, b, layout, dtype)
    assert got.dtype == want.dtype and np.array_equal(got, want)


@pytest.mark.parametrize("layout, dtype, order", CASES)
def test_synthetic_batch_matches_reference(layout, dtype, order):
    """Oracle: synthetic_batch_reference (composite pixel images first, then convert in numpy)."""
    rng = np.random.default_rng(2)
    h, w, f = 13, 17, 6
    px, fill = _image(rng, h, w), _image(rng, h, w)
    labels = rng.integers(0, f, (h, w))
    labels[5:9, 3:12] = 2  # a region with long runs next to scattered pixels
    cs, a, b = _affine(dtype, order)
    on = K.native_image(px, cs, a, b, layout, dtype)
    off = K.native_image(fill, cs, a, b, layout, dtype)
    ptr, index = K.feature_csr(labels, f)
    runs = K.element_runs(ptr, index, h * w, layout)
    onoff = rng.integers(0, 2, (7, f), dtype=np.uint8)
    onoff[0], onoff[1] = 1, 0
    shape = (7, 3, h, w) if layout == "NCHW" else (7, h, w, 3)
    out = np.full(shape, 7, dtype=on.dtype)
    K.synthetic_batch(on, off, onoff, runs, out)
    if dtype == np.float16:
        out = out.astype(np.float16)
    want = K.synthetic_batch_reference(px, fill, labels, onoff, cs, a, b, layout, dtype)
    assert out.dtype == want.dtype and out.shape == want.shape
    assert np.array_equal(out, want)


def test_synthetic_batch_reuses_buffer_views():
    """Oracle: the reference; writing a partial batch into a view of a larger buffer touches only it."""
    rng = np.random.default_rng(3)
    h, w, f = 8, 8, 4
    px, fill = _image(rng, h, w), _image(rng, h, w)
    labels = (np.arange(h)[:, None] // 4) * 2 + np.arange(w)[None, :] // 4
    cs, a, b = _affine(np.float32, "RGB")
    on, off = (K.native_image(x, cs, a, b, "NCHW", np.float32) for x in (px, fill))
    runs = K.element_runs(*K.feature_csr(labels, f), h * w, "NCHW")
    buf = np.full((5, 3, h, w), -1.0, np.float32)
    onoff = rng.integers(0, 2, (3, f), dtype=np.uint8)
    K.synthetic_batch(on, off, onoff, runs, buf[:3])
    assert np.array_equal(buf[:3], K.synthetic_batch_reference(px, fill, labels, onoff, cs, a, b, "NCHW", np.float32))
    assert np.all(buf[3:] == -1.0)


@pytest.mark.parametrize("layout, dtype", [("NCHW", np.float32), ("NHWC", np.uint8)])
def test_reused_buffer_with_state_rewrites_only_changes_and_stays_exact(layout, dtype):
    """Oracle: the reference for every mini-batch of a stream through one buffer and one state
    (including a short last batch), and the state equals the last on/off rows written."""
    rng = np.random.default_rng(6)
    h, w, f = 10, 9, 5
    px, fill = _image(rng, h, w), _image(rng, h, w)
    labels = rng.integers(0, f, (h, w))
    cs, a, b = _affine(dtype, "BGR")
    on, off = (K.native_image(x, cs, a, b, layout, dtype) for x in (px, fill))
    runs = K.element_runs(*K.feature_csr(labels, f), h * w, layout)
    shape = (4, 3, h, w) if layout == "NCHW" else (4, h, w, 3)
    buf = np.empty(shape, on.dtype)
    state = K.new_state(4, f)
    onoff = rng.integers(0, 2, (14, f), dtype=np.uint8)
    for s in range(0, 14, 4):
        z = onoff[s:s + 4]
        K.synthetic_batch(on, off, z, runs, buf[:len(z)], state)
        want = K.synthetic_batch_reference(px, fill, labels, z, cs, a, b, layout, dtype)
        assert np.array_equal(buf[:len(z)], want)
        assert np.array_equal(state[:len(z)], z)
    with pytest.raises(ValueError, match="state must be"):
        K.synthetic_batch(on, off, onoff[:4], runs, buf, np.zeros((4, f + 1), np.uint8))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_runs_cover_every_element_once(layout):
    """Oracle: counting — the runs of all features partition 0..3P-1."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 5, (6, 10))
    run_ptr, start, length = K.element_runs(*K.feature_csr(labels, 5), 60, layout)
    hits = np.zeros(180, int)
    for s, n in zip(start, length):
        hits[s:s + n] += 1
    assert np.all(hits == 1) and run_ptr[-1] == len(start)


def test_feature_csr_lists_pixels_per_feature():
    """Oracle: np.flatnonzero(labels == f) for each feature f."""
    labels = np.array([[2, 0, 0], [1, 2, 2]])
    ptr, index = K.feature_csr(labels, 4)
    assert ptr.tolist() == [0, 2, 3, 6, 6]
    for f in range(4):
        assert index[ptr[f]:ptr[f + 1]].tolist() == np.flatnonzero(labels.ravel() == f).tolist()
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        K.feature_csr(labels, 2)


def test_paint_matches_reference():
    """Oracle: paint_reference (importance[labels])."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 7, (10, 12))
    imp = rng.standard_normal((7, 3)).astype(np.float32)
    got = K.paint(imp, *K.feature_csr(labels, 7), (10, 12))
    assert got.dtype == np.float32 and np.array_equal(got, K.paint_reference(imp, labels))


def test_wrappers_reject_bad_arrays():
    """Oracle: the wrappers' documented checks."""
    px = np.zeros((4, 4, 3), np.float64)
    with pytest.raises(TypeError, match="float32"):
        K.native_image(px, [0, 1, 2], np.ones(3, np.float32), np.zeros(3, np.float32), "NCHW", np.float32)
    with pytest.raises(ValueError, match="layout"):
        K.native_image(px.astype(np.float32), [0, 1, 2], np.ones(3, np.float32), np.zeros(3, np.float32), "CHW",
                       np.float32)
    on = np.zeros(48, np.float32)
    runs = K.element_runs(*K.feature_csr(np.zeros((4, 4), int), 1), 16, "NCHW")
    with pytest.raises(TypeError, match="dtypes differ"):
        K.synthetic_batch(on, on, np.ones((2, 1), np.uint8), runs, np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="onoff shape"):
        K.synthetic_batch(on, on, np.ones((3, 1), np.uint8), runs, np.zeros((2, 3, 4, 4), np.float32))
