"""Batch buffers of the masking methods kept across calls (onnxplain.methods._masking).

Oracle: the same call with fresh buffers (outside ``keep_batch_buffers``, the behaviour
before buffers were kept), compared bit for bit, on the bundled model and real photos; the
kept calls run after a call on another image, so every buffer they get holds that image's
stale batches (LIME rewrites only what changed in a buffer: its state must start "unknown").
"""
from __future__ import annotations

import numpy as np
import pytest
from skimage import data

import onnxplain
from onnxplain.methods import keep_batch_buffers
from onnxplain.methods._masking import batch_buffers

CASES = {
    "occlusion": {"mask_size": 56, "stride": 56, "mini_batch_size": 6},      # 16 windows: 3 batches, 2 slots
    "rise": {"num_masks": 40, "mini_batch_size": 16, "random_state": 3},
    "lime": {"num_samples": 40, "mini_batch_size": 16, "segmentation": "grid", "random_state": 3},
}


@pytest.fixture(scope="module")
def bundled():
    return onnxplain.load_model()


def test_buffers_are_kept_only_inside_and_never_shared():
    with batch_buffers((2, 3), np.float32, 2) as a:
        pass
    with batch_buffers((2, 3), np.float32, 2) as b:
        assert not {id(x) for x in a} & {id(x) for x in b}          # outside: fresh each call
    with keep_batch_buffers():
        with batch_buffers((2, 3), np.float32, 2) as a:
            with batch_buffers((2, 3), np.float32, 2) as inner:     # a concurrent call gets its own
                assert not {id(x) for x in a} & {id(x) for x in inner}
        with batch_buffers((2, 3), np.float32, 2) as b:
            assert [id(x) for x in b] == [id(x) for x in a]         # inside: the last call's, again
            assert all(x.shape == (2, 3) and x.dtype == np.float32 and x.flags.c_contiguous for x in b)
        with batch_buffers((2, 3), np.float16, 1) as c:             # another dtype: its own
            assert c[0].dtype == np.float16
    with batch_buffers((2, 3), np.float32, 2) as d:                 # left: dropped
        assert not {id(x) for x in a} & {id(x) for x in d}


@pytest.mark.parametrize("name", sorted(CASES))
def test_kept_buffers_give_the_bits_of_fresh_ones(bundled, name):
    func = onnxplain.METHODS[name].func
    cat = bundled.prepare(data.chelsea())[0]
    coffee = bundled.prepare(data.coffee())[0]
    fresh = func(bundled, coffee, None, **CASES[name])
    with keep_batch_buffers():
        func(bundled, cat, None, **CASES[name])                     # leaves the cat's batches in the buffers
        kept = func(bundled, coffee, None, **CASES[name])
    np.testing.assert_array_equal(kept.score_map, fresh.score_map)
    np.testing.assert_array_equal(kept.scores, fresh.scores)
