"""RISE kernels against plain-numpy references (exact) and the RISE reference code's mask
upsampling, ``skimage.transform.resize(order=1, mode="reflect", anti_aliasing=False)``
(oracle for :func:`upsample_table`, to float32 rounding)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.transform import resize

from onnxplain.kernels.rise import (accumulate_saliency, accumulate_saliency_reference, apply_masks, apply_masks_reference,
                          make_masks, make_masks_reference, upsample_table)

from .test_occlusion_kernels import SPECS


def _masks_setup(h, w, s, n, seed=0):
    rng = np.random.default_rng(seed)
    cell = (math.ceil(h / s[0]), math.ceil(w / s[1]))
    ty = upsample_table((s[0] + 1) * cell[0], s[0])
    tx = upsample_table((s[1] + 1) * cell[1], s[1])
    grids = (rng.random((n, s[0], s[1])) < 0.5).astype(np.float32)
    shifts = np.stack([rng.integers(0, cell[0], n), rng.integers(0, cell[1], n)], axis=1)
    return grids, shifts, ty, tx, cell


@pytest.mark.parametrize("h, w, s", [(32, 32, (7, 7)), (24, 40, (3, 5)), (9, 9, (2, 2))])
def test_masks_equal_reference_code_upsampling(h, w, s):
    grids, shifts, ty, tx, cell = _masks_setup(h, w, s, 6)
    out = np.empty((8, h, w), np.float32)
    got = make_masks(grids, shifts, ty, tx, out)
    up = ((s[0] + 1) * cell[0], (s[1] + 1) * cell[1])
    for g, (dy, dx), m in zip(grids, shifts, got):
        full = resize(g, up, order=1, mode="reflect", anti_aliasing=False)
        np.testing.assert_allclose(m, full[dy:dy + h, dx:dx + w], rtol=0, atol=2e-6)
    assert np.array_equal(got, make_masks_reference(grids, shifts, ty, tx, h, w))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("spec", list(SPECS))
def test_apply_masks_matches_reference(layout, spec):
    dtype, cs, a, b = SPECS[spec]
    cs, a, b = np.array(cs, np.int64), np.array(a, np.float32), np.array(b, np.float32)
    h, w = 11, 14
    rng = np.random.default_rng(2)
    pixels = (rng.random((h, w, 3)) * 255).astype(np.float32)
    masks = rng.random((5, h, w)).astype(np.float32)
    masks[0] = 0.0
    masks[1] = 1.0
    fill = np.array([10.5, 200.25, 99.0], np.float32)
    shape = (3, h, w) if layout == "NCHW" else (h, w, 3)
    out = np.empty((6,) + shape, dtype)
    scratch = np.empty(out.shape, np.float32) if dtype == np.float16 else None
    got = apply_masks(pixels, masks, fill, layout, cs, a, b, out, scratch)
    want = apply_masks_reference(pixels, masks, fill, layout, cs, a, b, dtype)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


def test_apply_masks_float16_needs_scratch():
    out = np.empty((1, 3, 4, 4), np.float16)
    with pytest.raises(ValueError, match="scratch"):
        apply_masks(np.zeros((4, 4, 3), np.float32), np.zeros((1, 4, 4), np.float32), np.zeros(3, np.float32),
                    "NCHW", np.arange(3), np.ones(3, np.float32), np.zeros(3, np.float32), out)


def test_accumulate_saliency_matches_reference():
    rng = np.random.default_rng(4)
    masks = rng.random((9, 7, 5)).astype(np.float32)
    scores = rng.random((9, 3)).astype(np.float32)
    sal = np.full((7, 5, 3), 0.25)
    ref = sal.copy()
    accumulate_saliency(masks, scores, sal)
    accumulate_saliency_reference(masks, scores, ref)
    assert np.array_equal(sal, ref)


def test_upsample_table_rejects_single_cell():
    with pytest.raises(ValueError, match="n_in >= 2"):
        upsample_table(10, 1)
