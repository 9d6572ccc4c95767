"""export_explainer and the CLI of the new methods.

Oracle for the exported file: the library's own maps (grad_cam / recipro_cam with bilinear
upsampling, gradient_attribution "gradient"), themselves tested against captum,
pytorch-grad-cam and OpenVINO XAI; the file runs in a fresh onnxruntime session with
nothing of onnxplain; ``onnx.checker.check_model(full_check=True)``.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxplain
import onnxruntime as ort
import pytest
from onnxplain.cli import main

from tests.data import zoo


@pytest.fixture(scope="module")
def resnet():
    return onnxplain.load_model(zoo.onnx_path("resnet"), preprocessing={"scale": 1 / 255, "mean": 0.5, "std": 0.25,
                                                                        "input_size": [32, 32]})


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(5).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)


def _library(model, method, image, label=None):
    if method == "gradcam":
        return onnxplain.grad_cam(model, image, label, output_upsampling="bilinear").score_map
    if method == "reciprocam":
        return onnxplain.recipro_cam(model, image, label, output_upsampling="bilinear").score_map
    return onnxplain.gradient_attribution(model, image, label, method="gradient").score_map


@pytest.mark.parametrize("method", ["gradcam", "reciprocam", "gradient"])
def test_exported_file_matches_the_library(resnet, pixels, method, tmp_path):
    path = tmp_path / f"{method}.onnx"
    onnxplain.export_explainer(resnet, method, path)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in proto.graph.input] == ["pixels", "class_index"]
    assert [i.name for i in sess.get_overridable_initializers()] == ["class_index"]   # optional: default -1
    scores, saliency = sess.run(["scores", "saliency"], {"pixels": pixels})
    assert scores.shape == (2, 10) and saliency.shape == (2, 32, 32)
    np.testing.assert_allclose(scores, resnet.predict(pixels), rtol=1e-5, atol=1e-5)
    for i in range(2):
        ref = _library(resnet, method, pixels[i])
        assert np.corrcoef(saliency[i].ravel(), ref.ravel())[0, 1] >= 0.999
    # a given class
    _, chosen = sess.run(["scores", "saliency"], {"pixels": pixels, "class_index": np.array([3, -1], np.int64)})
    ref = _library(resnet, method, pixels[0], 3)
    assert np.corrcoef(chosen[0].ravel(), ref.ravel())[0, 1] >= 0.999
    np.testing.assert_allclose(chosen[1], saliency[1], rtol=1e-5, atol=1e-6 * np.abs(saliency[1]).max())


def test_export_refusals(tmp_path):
    with pytest.raises(ValueError, match="method"):
        onnxplain.export_explainer(onnxplain.load_model(zoo.onnx_path("resnet"), preprocessing="none"), "lime")
    seg = onnxplain.load_model(zoo.onnx_path("segmentation"), preprocessing="none")
    with pytest.raises(ValueError, match="dense output"):
        onnxplain.export_explainer(seg, "gradcam")


def test_cli_commands(tmp_path, capsys):
    args = ["--model", zoo.onnx_path("resnet"), "--preprocessing", "none", "--no-progress", "--out", str(tmp_path)]
    img = tmp_path / "img.npy"
    assert main(["cam", "--variant", "xgradcam", *args, "--label", "3"]) == 0
    assert (tmp_path / "chelsea_xgradcam.npy").exists()
    assert main(["reciprocam", *args, "--all-classes"]) == 0
    assert np.load(tmp_path / "chelsea_reciprocam_classes.npy").shape == (8, 8, 10)
    assert main(["kernelshap", *args, "--segmentation", "grid", "--num-features", "4", "--seed", "0"]) == 0
    info = json.loads((tmp_path / "chelsea_kernelshap.json").read_text())
    assert info["exact"] is True and len(info["base_value"]) == 1
    out = tmp_path / "x.onnx"
    assert main(["export-explainer", "--model", zoo.onnx_path("resnet"), "--preprocessing",
                 '{"scale": 1, "input_size": [32, 32]}', "--method", "reciprocam", "--output", str(out)]) == 0
    assert out.exists()
    assert main(["export-explainer", "--model", zoo.onnx_path("resnet"), "--preprocessing", "none",
                 "--output", str(tmp_path / "x.txt")]) == 2
    del img
    capsys.readouterr()
