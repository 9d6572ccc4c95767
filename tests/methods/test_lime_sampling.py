"""LIME's paired sampling and ridge surrogate (the sample-efficiency defaults).

Oracles: the definition of the distribution (every on/off vector equally likely, i.e. MATLAB's
Bernoulli(1/2) per feature: marginals 1/2, sizes Binomial(F, 1/2)); complements by hand;
scikit-learn's Ridge for the surrogate; the seed-stability numbers on the cat are measured
by ``python -m bench.stability --features`` (bench/results/stability-features.md).
"""
from __future__ import annotations

from math import comb

import numpy as np
import onnxplain
from onnxplain.methods.lime import draw_onoff

from tests.data import zoo


def test_paired_rows_are_complements_with_bernoulli_marginals():
    z = draw_onoff(4001, 12, "paired", np.random.default_rng(0))
    assert z.shape == (4001, 12) and z.dtype == np.uint8 and np.all(z[0] == 1)
    pairs = z[1:]
    np.testing.assert_array_equal(pairs[0::2] + pairs[1::2], np.ones((2000, 12)))
    assert np.allclose(pairs.mean(axis=0), 0.5, atol=0.03)
    sizes = np.bincount(pairs.sum(axis=1), minlength=13) / len(pairs)
    binom = np.array([comb(12, k) for k in range(13)]) / 2 ** 12
    assert np.abs(sizes - binom).max() < 2.5 / len(pairs) + 1e-12    # stratified: exact up to rounding
    odd = draw_onoff(10, 5, "paired", np.random.default_rng(1))
    assert odd.shape == (10, 5)
    bern = draw_onoff(50, 7, "bernoulli", np.random.default_rng(2))
    assert np.all(bern[0] == 1) and set(np.unique(bern)) <= {0, 1}


def test_defaults_are_ridge_and_paired_and_matlab_settings_remain():
    model = onnxplain.load_model(zoo.onnx_path("resnet"), preprocessing="none")
    img = np.random.default_rng(4).normal(0, 1, (32, 32, 3)).astype(np.float32)
    got = onnxplain.image_lime(model, img, 1, num_samples=200, num_features=9, segmentation="grid", random_state=0)
    assert got.params["surrogate"] == "ridge" and got.params["sampling"] == "paired"
    assert np.any(got.feature_importance < 0)          # signed coefficients
    matlab = onnxplain.image_lime(model, img, 1, num_samples=200, num_features=9, segmentation="grid",
                                  surrogate="tree", sampling="bernoulli", random_state=0)
    assert np.all(matlab.feature_importance >= 0)
