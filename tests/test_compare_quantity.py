"""compare explains both models on the same quantity and calls undefined correlations undefined.

Oracles: answers known by hand. (1) A logits model and the same graph ending in Softmax compute
the same logits, so on logits their maps are identical (Spearman exactly 1); on their own
outputs (probabilities vs logits) the maps differ. (2) Occluding a constant image with its own
mean changes nothing, so both occlusion maps are all zeros: the correlation is undefined.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxplain
from onnxplain.compare import choose_quantity, on_quantity

from .tiny_models import expected_logits, make_classifier, save


@pytest.fixture()
def pair(tmp_path):
    logits = onnxplain.load_model(save(make_classifier(head="logits"), tmp_path, "logits"), preprocessing="none")
    soft = onnxplain.load_model(save(make_classifier(head="softmax"), tmp_path, "soft"), preprocessing="none")
    return logits, soft


def _image(seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (8, 8, 3)).astype(np.float32)


def test_quantity_choice_and_the_derived_graphs(pair, tmp_path):
    logits, soft = pair
    assert (logits.output_kind, soft.output_kind, soft.logits_name) == ("logits", "probabilities", "logits")
    assert choose_quantity(logits, soft) == "logits"
    cut = on_quantity(soft, "logits")
    x = _image()[None]
    np.testing.assert_allclose(cut.predict(x), expected_logits(x), rtol=1e-5, atol=1e-6)
    assert [n.op_type for n in cut.onnx_model.graph.node][-1] == "Gemm"  # the Softmax is gone
    # saved and re-read, it is still a logits model of 4 classes
    onnx.save(cut.onnx_model, str(tmp_path / "cut.onnx"))
    again = onnxplain.load_model(tmp_path / "cut.onnx", preprocessing="none")
    assert again.output_kind == "logits" and again.num_classes == 4
    probs = on_quantity(logits, "probabilities")
    z = expected_logits(x)
    np.testing.assert_allclose(probs.predict(x), np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-5)


def test_logits_vs_softmax_model_is_no_drift(pair):
    logits, soft = pair
    images = [_image(s) for s in range(3)]
    same = onnxplain.compare_models(logits, soft, images, methods=["gradient-x-input"], fallback=None)
    assert same.params["quantity"] == "logits"
    assert [r["spearman"] for r in same.maps] == [1.0, 1.0, 1.0]
    assert not same.summary()["flagged"]
    own = onnxplain.compare_models(logits, soft, images, methods=["gradient-x-input"], fallback=None, quantity="as-is")
    assert max(r["spearman"] for r in own.maps) < 0.999  # what compare used to report as drift


def test_saturated_probabilities_give_undefined_not_ok(tmp_path):
    # pixels x 10^4: the softmax saturates to exactly 1.0, so occluding any window changes nothing on B's
    # own output (a constant all-zero map) while A's logits map varies: the correlation is undefined.
    pre = {"scale": 1.0e4, "mean": 0.0, "std": 1.0}
    a = onnxplain.load_model(save(make_classifier(head="logits"), tmp_path, "logits"), preprocessing=pre)
    b = onnxplain.load_model(save(make_classifier(head="softmax"), tmp_path, "soft"), preprocessing=pre)
    image = _image(3)
    assert b.predict(image[None]).max() == 1.0
    c = onnxplain.compare_models(a, b, [image], methods=["occlusion"], fallback=None, quantity="as-is")
    row = c.maps[0]
    assert np.isnan(row["spearman"]) and row["status"] == "undefined: constant map (model B)"
    assert "undefined" in c.summary()["methods"]["occlusion"]["status"]
    assert c.drift[0]["flagged"] is False and np.isnan(c.drift[0]["drift"])
    table = c.markdown()
    assert "| undefined | undefined | undefined: constant map (model B) |" in table and " nan " not in table
    # on the shared quantity (logits) the same pair agrees exactly
    same = onnxplain.compare_models(a, b, [image], methods=["occlusion"], fallback=None)
    assert same.params["quantity"] == "logits" and same.maps[0]["spearman"] == 1.0


def test_bundled_model_against_its_logits_cut(tmp_path):
    """The issue's case on the real network: EfficientNet-Lite0 ending in Softmax vs its logits graph."""
    from skimage.data import chelsea

    full = onnxplain.load_model()
    path = tmp_path / "lite0_logits.onnx"
    onnx.save(on_quantity(full, "logits").onnx_model, str(path))
    cut = onnxplain.load_model(path, preprocessing=full.preprocessing, labels=list(full.class_names))
    c = onnxplain.compare_models(cut, full, [chelsea()], methods=["gradcam"], fallback=None)
    assert c.params["quantity"] == "logits" and c.maps[0]["spearman"] == pytest.approx(1.0, abs=1e-6)
    assert c.predictions[0]["top1_equal"] and c.predictions[0]["max_prob_diff"] < 1e-5
