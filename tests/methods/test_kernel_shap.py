"""Kernel SHAP.

Oracles: shap 0.51 ``KernelExplainer`` given the same features (a 3x3 grid) and background
(every feature off = the fill image): with all 2^9 - 2 coalitions both are the exact
Shapley values (agreement to float32 rounding); the exact values of a 12-feature game
(all 4094 coalitions, hand-checked against shap above) judge the sampled estimate;
the efficiency constraint is checked exactly.
"""
from __future__ import annotations

import numpy as np
import onnxplain
import pytest
from onnxplain.methods import _coalitions as C

from tests.data import zoo

shap = pytest.importorskip("shap")


@pytest.fixture(scope="module")
def model():
    return onnxplain.load_model(zoo.onnx_path("resnet"), preprocessing="none")


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).normal(0, 1, (32, 32, 3)).astype(np.float32)


def _game(model, image, feature_map, labels):
    px, _ = model.prepare(image)
    mean = px.reshape(-1, 3).mean(axis=0)

    def f(z):
        ims = np.where(z[:, feature_map][..., None] > 0, px[None], mean[None, None, None])
        return model.scores_native(model.to_native(ims.astype(np.float32)))[:, labels]
    return f


def test_exact_values_equal_shap_kernel_explainer(model, image):
    got = onnxplain.kernel_shap(model, image, [0, 3], segmentation="grid", num_features=9, random_state=0)
    assert got.exact and got.num_features == 9 and got.params["coalitions_scored"] == 2 ** 9
    f = _game(model, image, got.feature_map, [0, 3])
    ex = shap.KernelExplainer(f, np.zeros((1, 9)))
    ref = np.asarray(ex.shap_values(np.ones((1, 9)), nsamples=2 ** 9, silent=True))[0]     # (9, 2)
    np.testing.assert_allclose(got.feature_importance, ref, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(got.base_value, np.asarray(ex.expected_value), rtol=1e-6)
    # efficiency: the values add up to f(x) - f(all off)
    np.testing.assert_allclose(got.feature_importance.sum(axis=0), got.scores - got.base_value, rtol=1e-5, atol=1e-6)
    # the map paints each cell's value
    assert got.score_map.shape == (32, 32, 2)
    np.testing.assert_allclose(got.score_map[..., 0], got.feature_importance[got.feature_map, 0])


def test_sampled_estimate_is_as_close_to_the_exact_values_as_shap(model, image):
    exact = onnxplain.kernel_shap(model, image, 2, segmentation="grid", num_features=12, num_samples=5000)
    assert exact.exact
    truth = exact.feature_importance
    f = _game(model, image, exact.feature_map, [2])
    ours, theirs = [], []
    for seed in range(3):
        got = onnxplain.kernel_shap(model, image, 2, segmentation="grid", num_features=12, num_samples=300,
                                    random_state=seed)
        assert not got.exact
        np.testing.assert_allclose(got.feature_importance.sum(), got.scores[0] - got.base_value, rtol=1e-5, atol=1e-6)
        ours.append(np.abs(got.feature_importance - truth).mean())
        np.random.seed(seed)
        ref = np.asarray(shap.KernelExplainer(f, np.zeros((1, 12))).shap_values(np.ones((1, 12)), nsamples=302,
                                                                                 silent=True))[0, :, 0]
        theirs.append(np.abs(ref - truth).mean())
    assert np.mean(ours) <= 1.5 * np.mean(theirs) + 1e-6, (ours, theirs)
    assert np.mean(ours) < 0.25 * np.abs(truth).mean()


def test_design_weights_and_pairs():
    rng = np.random.default_rng(0)
    z, w, exact = C.shapley_design(20, 1000, rng, paired=True)
    assert not exact and len(z) <= 1000 and np.isclose(w.sum(), 1.0)
    sizes = z.sum(axis=1)
    assert sizes.min() >= 1 and sizes.max() <= 19
    # the size-1 and size-19 strata (20 coalitions each) are enumerated completely
    assert (sizes == 1).sum() == 20 and (sizes == 19).sum() == 20
    z, w, exact = C.shapley_design(4, 100, rng)
    assert exact and len(z) == 14
    np.testing.assert_allclose(w, C.shapley_kernel(4, z.sum(axis=1)))


def test_bad_options(model, image):
    with pytest.raises(ValueError, match="num_features"):
        onnxplain.kernel_shap(model, image, num_features=1)
    with pytest.raises(TypeError, match="paired"):
        onnxplain.kernel_shap(model, image, paired="yes")
    with pytest.raises(ValueError, match="at least 2"):
        onnxplain.kernel_shap(model, image, segmentation=np.zeros((32, 32), int))
