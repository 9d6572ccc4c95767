"""Broken model outputs are refused, not explained.

Oracle: models whose answer is known by construction: a real exported CNN (tests/data/zoo
"resnet") with NaN added to its output (every score NaN), and the zoo segmentation net
(output N x 3 x 32 x 32, a dense map, not 3072 classes).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import onnxplain
from onnxplain.cli import main
from onnxplain.errors import ModelError
pytest.importorskip("torch")  # this module's oracles/zoo helpers import torch
from tests.data import zoo


def _nan_model(tmp_path, value=np.nan):
    proto = onnx.load(zoo.onnx_path("resnet"))
    out = proto.graph.output[0]
    old = out.name
    proto.graph.initializer.append(numpy_helper.from_array(np.array([value], np.float32), "broken_c"))
    for node in proto.graph.node:
        node.output[:] = [f"{old}_pre" if o == old else o for o in node.output]
    proto.graph.node.append(helper.make_node("Add", [f"{old}_pre", "broken_c"], [old]))
    path = tmp_path / "nan.onnx"
    onnx.save(proto, str(path))
    return onnxplain.load_model(path, preprocessing="none")


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).uniform(-1, 1, (32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    return _nan_model(tmp_path_factory.mktemp("nan"))


@pytest.mark.parametrize("call", [
    lambda m, im: m.classify(im),
    lambda m, im: onnxplain.occlusion_sensitivity(m, im, 0),
    lambda m, im: onnxplain.rise(m, im, 0, num_masks=8, random_state=0),
    lambda m, im: onnxplain.image_lime(m, im, 0, num_samples=8, segmentation="grid", num_features=4),
    lambda m, im: onnxplain.score_cam(m, im, 0),
    lambda m, im: onnxplain.grad_cam(m, im),
    lambda m, im: onnxplain.grad_cam(m, im, 0),
    lambda m, im: onnxplain.gradient_attribution(m, im, 0),
], ids=["classify", "occlusion", "rise", "lime", "scorecam", "gradcam-top", "gradcam", "gradient"])
def test_nan_scores_are_a_model_error_naming_the_output_and_image(nan_model, image, call):
    with pytest.raises(ModelError) as info:
        call(nan_model, image)
    msg = str(info.value)
    assert "NaN" in msg and repr(nan_model.output_name) in msg
    assert "preparation" not in msg.split(":")[-1]  # not blamed on onnxplain's graph preparation
    assert "image" in msg


def test_gradcam_on_a_nan_model_blames_the_model_not_graph_preparation(tmp_path, image):
    model = _nan_model(tmp_path)  # fresh: no cached gradient engine
    with pytest.raises(ModelError, match=r"is NaN on a (mid-grey|random) image"):
        onnxplain.grad_cam(model, image, 0)


def test_inf_output_is_refused_too(tmp_path, image):
    model = _nan_model(tmp_path, np.inf)
    with pytest.raises(ModelError, match="is inf"):
        model.classify(image)


def test_cli_classify_nan_model_exits_2(tmp_path, capsys):
    _nan_model(tmp_path)
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(tmp_path / "grey.png")
    assert main(["classify", str(tmp_path / "grey.png"), "--model", str(tmp_path / "nan.onnx"),
                 "--preprocessing", "none"]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and "grey.png" in err


@pytest.fixture(scope="module")
def seg_model():
    return onnxplain.load_model(zoo.onnx_path("segmentation"), preprocessing="none")


@pytest.mark.parametrize("call", [
    lambda m, im: m.classify(im),
    lambda m, im: onnxplain.occlusion_sensitivity(m, im, 0),
    lambda m, im: onnxplain.rise(m, im, 0, num_masks=8),
    lambda m, im: onnxplain.image_lime(m, im, 0, num_samples=8, segmentation="grid", num_features=4),
    lambda m, im: onnxplain.image_lime(m, im, None, num_samples=8, segmentation="grid", num_features=4),
], ids=["classify", "occlusion", "rise", "lime", "lime-top"])
def test_dense_output_is_not_treated_as_classes(seg_model, image, call):
    with pytest.raises(ModelError, match=r"dense map, not one score per class.*ClassRegion"):
        call(seg_model, image)


def test_dense_output_still_explained_with_a_class_region(seg_model, image):
    mask = np.zeros((32, 32), bool)
    mask[8:20, 8:20] = True
    result = onnxplain.grad_cam(seg_model, image, reduction=onnxplain.ClassRegion(1, mask))
    assert np.isfinite(result.score_map).all() and result.labels == [1]
