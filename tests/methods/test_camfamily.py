"""The CAM family (HiResCAM, LayerCAM, XGrad-CAM, Eigen-CAM, Ablation-CAM) against pytorch-grad-cam.

Oracle: pytorch-grad-cam (``grad-cam`` 1.5.7; 1.5.5 behaves the same for these classes) on
the torch twins of the zoo models (tests/data/zoo/*.pt, the exported weights). Our raw map
at the feature size goes through pytorch-grad-cam's own ReLU / min-max / resize
(``scale_cam_image``) and is compared with its output: correlation >= 0.98 (observed 1.0).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gradcam_lib = pytest.importorskip("pytorch_grad_cam")

import onnxplain
from onnxplain.methods import camfamily as F
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

from tests.data import zoo

LAYERS = {
    "resnet": lambda t: t.layer2[1].relu2,
    "vgg": lambda t: t.features[6],
    "mobilenet": lambda t: t.head_act,
}
PEERS = {"hirescam": "HiResCAM", "layercam": "LayerCAM", "xgradcam": "XGradCAM", "eigencam": "EigenCAM",
         "ablationcam": "AblationCAM"}


def _corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(7).normal(0.0, 1.0, (32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = (onnxplain.load_model(zoo.onnx_path(name), preprocessing="none"), zoo.load(name))
        return cache[name]
    return get


def _peer(method, net, layers, x, label):
    cls = getattr(gradcam_lib, PEERS[method])
    with cls(model=net, target_layers=layers) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(label)])[0]


CASES = [(n, m) for n in LAYERS for m in PEERS
         # pytorch-grad-cam ablates a layer with negative values (HardSwish) by min - 1e7, not by 0
         if not (n == "mobilenet" and m == "ablationcam")]


@pytest.mark.parametrize("name,method", CASES)
def test_matches_pytorch_grad_cam(models, image, name, method):
    model, net = models(name)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))[None])
    label = 8 if name == "vgg" else int(net(x).argmax())   # vgg's top class has an all-zero ablation map
    ref = _peer(method, net, [LAYERS[name](net)], x, label)
    got = F.CAM_FUNCTIONS[method](model, image, label, output_upsampling="none")
    assert got.method == method and got.labels == [label]
    ours = scale_cam_image(np.maximum(got.score_map, 0)[None], (32, 32))[0]
    assert np.ptp(ref) > 0
    if method == "eigencam":  # the SVD's sign is arbitrary: ours is fixed (see camfamily), theirs is LAPACK's
        acts = got.cam  # same map; compare with pytorch-grad-cam's projection of our own activations both ways
        assert acts.shape == got.score_map.shape
        assert max(_corr(ours, ref), _corr(ours, _flipped_peer(net, LAYERS[name](net), x))) >= 0.98
    else:
        assert _corr(ours, ref) >= 0.98


def _flipped_peer(net, layer, x):
    store = {}
    def keep(module, inputs, output):
        store["a"] = output.detach().numpy()   # returns None: the output is not replaced

    h = layer.register_forward_hook(keep)
    net(x)
    h.remove()
    proj = -get_2d_projection(store["a"].copy())
    return scale_cam_image(np.maximum(proj, 0), (32, 32))[0]


def test_several_layers_are_fused_like_pytorch_grad_cam(models, image):
    model, net = models("resnet")
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))[None])
    label = int(net(x).argmax())
    names = ["/layer1/layer1.0/relu2/Relu_output_0", "/layer2/layer2.1/relu2/Relu_output_0"]
    ref = _peer("layercam", net, [net.layer1[0].relu2, net.layer2[1].relu2], x, label)
    got = onnxplain.layer_cam(model, image, label, feature_layer=names, output_upsampling="bilinear")
    assert got.feature_layer == names and len(got.layer_maps) == 2
    assert _corr(got.score_map, ref) >= 0.98
    with pytest.raises(ValueError, match="output_upsampling"):
        onnxplain.layer_cam(model, image, label, feature_layer=names, output_upsampling="none")


def test_eigen_cam_sign_follows_the_activations(models, image):
    model, _ = models("vgg")
    got = onnxplain.eigen_cam(model, image, [1, 2], output_upsampling="none")
    assert got.score_map.shape[-1] == 2
    np.testing.assert_array_equal(got.score_map[..., 0], got.score_map[..., 1])  # class-agnostic
    total = got.cam[..., 0]
    assert total.max() > 0


def test_ablation_cam_zero_score_is_an_error(tmp_path):
    # a class whose softmax score underflows to exactly 0 does not exist in practice; a
    # reduction weight of zeros gives y = 0 exactly
    model = onnxplain.load_model(zoo.onnx_path("resnet"), preprocessing="none")
    img = np.zeros((32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="exactly 0"):
        onnxplain.ablation_cam(model, img, reduction=np.zeros(10, np.float32))
