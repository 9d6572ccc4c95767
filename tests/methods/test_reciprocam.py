"""ReciproCAM.

Oracles: OpenVINO XAI's ReciproCAM (``openvino-xai``, optional: skipped when absent) on zoo
models both accept: with the location-only mask (``kernel="point"``, OpenVINO XAI's CNN
variant) the maps agree to float rounding (correlation 1.0); the Gaussian kernel of the
paper is checked by hand against the definition (masked copies scored by the full model);
the network's tail equals the model after the cut (bundled model, whose tail reads the
input's batch size through Shape, which OpenVINO XAI cannot cut).
"""
from __future__ import annotations

import numpy as np
import onnxplain
import pytest
from onnxplain.methods.reciprocam import spatial_masks

from tests.data import zoo


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(7).normal(0.0, 1.0, (32, 32, 3)).astype(np.float32)


def test_masks_are_the_papers_gaussian_neighbourhoods():
    m = spatial_masks(4, 5, "gaussian")
    assert m.shape == (20, 4, 5)
    np.testing.assert_allclose(m[1 * 5 + 2, 0:3, 1:4], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
    assert m[1 * 5 + 2].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(m[0, :2, :2], np.array([[4, 2], [2, 1]]) / 16)   # corner: cut, not renormalised
    p = spatial_masks(3, 3, "point")
    np.testing.assert_array_equal(p.reshape(9, 9), np.eye(9))


def test_every_class_from_one_batch_equals_the_definition(image):
    """Class map (i, j) = the model's logit on the feature map masked around (i, j), via a full forward
    of a graph that takes the masked feature map (independent of the tail cut: the tapped model's
    own feature tensor is overwritten through a feed)."""
    model = onnxplain.load_model(zoo.onnx_path("resnet"), preprocessing="none")
    got = onnxplain.recipro_cam(model, image, [2, 5], output_upsampling="none")
    h, w = got.class_maps.shape[:2]
    assert got.class_maps.shape == (h, w, 10) and got.score_map.shape == (h, w, 2)
    np.testing.assert_array_equal(got.score_map[..., 1], got.class_maps[..., 5])
    import onnxruntime as ort
    from onnxplain.methods.layers import tapped_run

    acts = tapped_run(model, "cpu", [got.feature_layer], model.to_native(model.prepare(image)[0][None]))[0]
    # feeding an inner tensor overrides it in onnxruntime when the producer is removed: build that graph
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(model.onnx_model)
    prod = next(n for n in proto.graph.node if got.feature_layer in n.output)
    proto.graph.node.remove(prod)
    proto.graph.input.append(onnx.helper.make_tensor_value_info(got.feature_layer, onnx.TensorProto.FLOAT,
                                                                [None, *acts.shape[1:]]))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    masks = spatial_masks(h, w, "gaussian")
    feeds = {got.feature_layer: (acts * masks[:, None]).astype(np.float32),
             model.input_name: np.zeros((h * w, 3, 32, 32), np.float32)}
    ref = sess.run([model.output_name], feeds)[0].reshape(h, w, 10)
    np.testing.assert_allclose(got.class_maps, ref, rtol=1e-5, atol=1e-5)


def test_bundled_model_tail_and_scores():
    import skimage.data

    model = onnxplain.load_model()
    img = skimage.data.chelsea()
    got = onnxplain.recipro_cam(model, img)
    assert got.labels == [model.classify(img, 1)[0][0]]
    assert got.score_map.shape == img.shape[:2] and got.class_maps.shape == (7, 7, 1000)
    probs = onnxplain.recipro_cam(model, img, score="probabilities", output_upsampling="none")
    assert np.all(probs.class_maps >= 0) and np.allclose(probs.class_maps.sum(axis=2), 1.0, atol=1e-4)
    cat = probs.class_maps[..., got.labels[0]]
    assert np.ptp(cat) > 0   # one 3x3 neighbourhood of 49 keeps little evidence: small, but location-dependent


@pytest.mark.parametrize("name", ["resnet", "resnet_softmax", "squeezenet"])
def test_agrees_with_openvino_xai(image, name):
    pytest.importorskip("openvino")
    xai = pytest.importorskip("openvino_xai")
    import openvino as ov
    from openvino_xai.explainer.explainer import ExplainMode

    model = onnxplain.load_model(zoo.onnx_path(name), preprocessing="none")
    x = model.to_native(model.prepare(image)[0][None])
    label = int(np.argmax(model.scores_native(x)[0]))
    explainer = xai.Explainer(model=ov.Core().read_model(model.path), task=xai.Task.CLASSIFICATION,
                              explain_mode=ExplainMode.WHITEBOX, explain_method=xai.Method.RECIPROCAM,
                              embed_scaling=False)
    ref = np.asarray(explainer(x, targets=[label], resize=False, colormap=False, overlay=False)
                     .saliency_map[label], np.float64)
    # OpenVINO XAI cuts at the last map before global pooling; onnxplain's automatic layer skips
    # SqueezeNet's class-score conv (issue 12), so name the layer OpenVINO XAI uses there
    layer = {"squeezenet": "/classifier/classifier.2/Relu_output_0"}.get(name)
    point = onnxplain.recipro_cam(model, image, label, kernel="point", output_upsampling="none", feature_layer=layer)
    assert np.corrcoef(ref.ravel(), point.score_map.ravel())[0, 1] >= 0.9999
    np.testing.assert_allclose(point.score_map, ref, atol=1e-5 * np.abs(ref).max())


def test_refusals(image):
    vit = onnxplain.load_model(zoo.onnx_path("vit"), preprocessing="none")
    with pytest.raises(ValueError, match="feature_layer"):
        onnxplain.recipro_cam(vit, image)
    resnet = onnxplain.load_model(zoo.onnx_path("resnet"), preprocessing="none")
    with pytest.raises(ValueError, match="bypasses"):   # inside a residual block: the skip connection bypasses it
        onnxplain.recipro_cam(resnet, image, feature_layer="/layer2/layer2.1/relu1/Relu_output_0")
    with pytest.raises(ValueError, match="kernel"):
        onnxplain.recipro_cam(resnet, image, kernel="box")
