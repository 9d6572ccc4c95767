"""Deletion/insertion batch kernel against its plain-numpy reference (exact equality, every layout
and dtype), and against the definition written out by hand (oracle: pixel p of image b comes
from ``other`` iff it is among the first counts[b] pixels of the ranking)."""
from __future__ import annotations

import numpy as np
import pytest

from onnxplain.model import InputSpec
from onnxplain.kernels.perturb import perturbation_batch, perturbation_batch_reference, rank_from_map


def _spec(layout, dtype, h, w, bgr=False):
    return InputSpec(layout, np.dtype(dtype), (h, w), np.array([2, 1, 0] if bgr else [0, 1, 2], np.int64),
                     np.array([0.5, 1.0, 1 / 58.0], np.float32), np.array([-3.25, 0.5, -2.0], np.float32))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
@pytest.mark.parametrize("bgr", [False, True])
def test_kernel_equals_reference_exactly(layout, dtype, bgr):
    rng = np.random.default_rng(1)
    h, w = 13, 19
    # half-integers hit uint8 rounding ties (half to even) and values outside 0..255 hit the clip
    base = (rng.integers(-20, 560, (h, w, 3)) / 2).astype(np.float32)
    other = rng.uniform(-50, 300, (h, w, 3)).astype(np.float32)
    rank = rank_from_map(rng.normal(size=(h, w)))
    counts = np.array([0, 1, 7, 100, h * w - 1, h * w], np.int64)
    spec = _spec(layout, dtype, h, w, bgr)
    got = perturbation_batch(base, other, rank, counts, spec)
    ref = perturbation_batch_reference(base, other, rank, counts, spec)
    assert got.dtype == np.dtype(dtype) and got.shape == spec.native_shape(len(counts))
    assert np.array_equal(got, ref)


def test_matches_definition_and_endpoints():
    rng = np.random.default_rng(2)
    h, w = 6, 5
    base = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    other = np.zeros((h, w, 3), np.float32)
    smap = rng.normal(size=(h, w))
    rank = rank_from_map(smap)
    spec = InputSpec("NHWC", np.dtype(np.float32), (h, w), np.array([0, 1, 2]), np.ones(3, np.float32),
                     np.zeros(3, np.float32))
    counts = np.arange(h * w + 1, dtype=np.int64)
    got = perturbation_batch(base, other, rank, counts, spec)
    assert np.array_equal(got[0], base) and np.array_equal(got[-1], other)
    order = np.argsort(-smap.ravel(), kind="stable")
    for k in (3, 11):
        want = base.copy().reshape(-1, 3)
        want[order[:k]] = 0.0
        assert np.array_equal(got[k], want.reshape(h, w, 3))


def test_rank_ties_in_raster_order():
    assert rank_from_map(np.array([[1.0, 2.0], [2.0, 1.0]])).tolist() == [2, 0, 1, 3]


def test_bad_inputs_are_rejected():
    spec = _spec("NCHW", np.float32, 4, 4)
    img = np.zeros((4, 4, 3), np.float32)
    rank = rank_from_map(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="base must be"):
        perturbation_batch(img.astype(np.float64), img, rank, np.array([1], np.int64), spec)
    with pytest.raises(ValueError, match="model input"):
        perturbation_batch(np.zeros((5, 4, 3), np.float32), np.zeros((5, 4, 3), np.float32), rank,
                           np.array([1], np.int64), spec)
    with pytest.raises(ValueError, match="counts"):
        perturbation_batch(img, img, rank, np.array([1], np.int32), spec)
