"""Grad-CAM / Grad-CAM++ / Score-CAM / guided Grad-CAM: parity with captum, layer choice, reductions."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import onnxplain  # noqa: E402
from onnxplain.methods.layers import feature_layer_for  # noqa: E402
from tests.data import zoo  # noqa: E402

RECT = "tests/data/rectangle"


def _corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = onnxplain.load_model(zoo.onnx_path(name), preprocessing="none")
        return cache[name]
    return get


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(7).normal(0.0, 1.0, (32, 32, 3)).astype(np.float32)


def _nchw(img):
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))[None])


# ---- parity with captum LayerGradCam -------------------------------------------------
CAPTUM_LAYERS = {
    "resnet": ("/layer2/layer2.1/relu2/Relu_output_0", lambda t: t.layer2[1].relu2),
    "mobilenet": ("/head_act/HardSwish_output_0", lambda t: t.head_act),
    "vgg": ("/features/features.6/Relu_output_0", lambda t: t.features[6]),
}


@pytest.mark.parametrize("name", sorted(CAPTUM_LAYERS))
def test_grad_cam_matches_captum_layergradcam(models, image, name):
    tensor, module = CAPTUM_LAYERS[name]
    model, net = models(name), zoo.load(name)
    x = _nchw(image)
    labels = [int(net(x).argmax()), 4]
    result = onnxplain.grad_cam(model, image, labels, output_upsampling="none")
    assert result.feature_layer == tensor  # the automatic choice is the documented layer
    assert result.score_map.shape == (*result.cam.shape[:2], 2)
    for k, label in enumerate(labels):
        ref = captum_attr.LayerGradCam(net, module(net)).attribute(x, target=label, relu_attributions=True)
        ref = ref[0, 0].detach().numpy()
        got = result.score_map[..., k]
        assert got.shape == ref.shape
        assert _corr(got, ref) >= 0.9999
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-5 * np.abs(ref).max())


def test_nhwc_input_model_matches_captum():
    """The rectangle model takes NHWC raw pixels (Transpose inside): same map as captum."""
    model = onnxplain.load_model(f"{RECT}/rectangle_cnn.onnx", preprocessing="none", labels=["no_rectangle", "rectangle"])
    net = zoo.load_rectangle()
    img = np.load(f"{RECT}/samples.npz")["images"][1]
    ref = captum_attr.LayerGradCam(net, net.relu1).attribute(torch.from_numpy(img[None].astype(np.float32)),
                                                            target=0, relu_attributions=True)[0, 0].detach().numpy()
    got = onnxplain.grad_cam(model, img, "rectangle", output_upsampling="none").score_map
    assert _corr(got, ref) >= 0.9999


# ---- automatic feature layer ---------------------------------------------------------
@pytest.mark.parametrize("name, expected", [
    ("resnet", "/layer2/layer2.1/relu2/Relu_output_0"),       # final ReLU after the residual Add
    ("mobilenet", "/head_act/HardSwish_output_0"),             # final activation
    ("densenet", "/relu5/Relu_output_0"),
    ("segmentation", "/act3/Relu_output_0"),
])
def test_automatic_feature_layer(models, name, expected):
    layer = feature_layer_for(models(name))
    assert layer.name == expected and layer.layout == "NCHW"


def test_bundled_model_feature_layer_is_head_clip():
    layer = feature_layer_for(onnxplain.load_model())
    assert layer.name == "/net/_swish_1/Clip_output_0"
    assert layer.op_type == "Clip" and layer.shape == (1280, 7, 7)


def test_nhwc_feature_maps_are_traced(tmp_path):
    """A TF-style graph keeps NHWC maps between Transposes: the channel axis is found."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.3, (4, 2)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x_nchw", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["conv"], ["conv_nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Relu", ["conv_nhwc"], ["feat"]),
        helper.make_node("ReduceMean", ["feat"], ["pooled"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["pooled", "fc"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [w, fc])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    path = tmp_path / "nhwc.onnx"
    onnx.save(proto, path)
    model = onnxplain.load_model(path, preprocessing="none")
    layer = feature_layer_for(model)
    assert (layer.name, layer.layout, layer.grid) == ("feat", "NHWC", (8, 8))
    img = rng.uniform(0, 1, (8, 8, 3)).astype(np.float32)
    result = onnxplain.grad_cam(model, img, 1, output_upsampling="none")
    # by hand: dy/dfeat = fc[c, 1] / 64 everywhere (ReduceMean then MatMul), so alpha_c = fc[c, 1] / 64
    feat = np.maximum(_conv_nhwc(img, numpy_helper.to_array(w)), 0)
    expected = np.maximum((feat * numpy_helper.to_array(fc)[:, 1] / 64.0).sum(axis=2), 0)
    np.testing.assert_allclose(result.score_map, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="feature_layout"):
        onnxplain.grad_cam(model, img, 1, feature_layout="NHCW")


def _conv_nhwc(img, w):
    padded = np.pad(img, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((8, 8, w.shape[0]))
    for i in range(8):
        for j in range(8):
            patch = padded[i:i + 3, j:j + 3, :].transpose(2, 0, 1)
            out[i, j] = (w * patch).sum(axis=(1, 2, 3))
    return out


def test_vit_token_feature_layer(models, image):
    model = models("vit")
    layer = feature_layer_for(model)
    # the last block's input (= block 0's output): the last block's output gives zero patch gradient
    assert layer.name == "/blocks/blocks.0/Add_1_output_0"
    assert (layer.layout, layer.grid, layer.extra_tokens) == ("tokens", (4, 4), 1)
    result = onnxplain.grad_cam(model, image)
    assert result.cam.shape == (4, 4) and result.score_map.shape == (32, 32)
    assert np.all(np.isfinite(result.score_map))
    with pytest.raises(ValueError, match="feature_layer"):
        onnxplain.score_cam(onnxplain.load_model(zoo.onnx_path("vit"), preprocessing="none"), image)


class _Affine(torch.nn.Module):
    """ResMLP's ``Affine`` norm: a constant per-channel scale and shift."""

    def __init__(self, dim):
        super().__init__()
        self.alpha = torch.nn.Parameter(1.0 + 0.3 * torch.randn(dim))
        self.beta = torch.nn.Parameter(0.1 * torch.randn(dim))

    def forward(self, x):
        return self.alpha * x + self.beta


class _TokenMixer(torch.nn.Module):
    """A two-block Mixer-style token trunk: patch conv, residual token / channel MLPs, a final
    norm, mean pool over tokens, linear head (EfficientFormer, Mixer and ResMLP end this way)."""

    def __init__(self, norm: str, dim=8, grid=4):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = torch.nn.ModuleList(torch.nn.ModuleDict({
            "tok": torch.nn.Linear(grid * grid, grid * grid), "ch": torch.nn.Linear(dim, dim),
            "norm": torch.nn.LayerNorm(dim) if norm == "layernorm" else _Affine(dim)}) for _ in range(2))
        self.final_norm = torch.nn.LayerNorm(dim) if norm == "layernorm" else _Affine(dim)
        self.head = torch.nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)                  # [N, 16, dim] tokens
        for b in self.blocks:
            x = x + b["tok"](b["norm"](x).transpose(1, 2)).transpose(1, 2)
            x = x + torch.nn.functional.gelu(b["ch"](x))
        return self.head(self.final_norm(x).mean(1))


@pytest.mark.parametrize("norm", ["layernorm", "affine"])
def test_token_trunk_feature_layer_skips_the_final_norm(tmp_path, norm):
    """Rule (layers.py, 3): a token trunk's feature layer is its last block's residual Add, not the
    final norm (LayerNormalization, or a constant per-channel ``x * a + b``) that feeds the pool,
    just as a normalisation is skipped for rank-4 maps. Oracle: the network's code (the last block's
    output ``x + gelu(ch(x))``, the tensor the final norm reads)."""
    torch.manual_seed(0)
    net = _TokenMixer(norm).eval()
    path = tmp_path / f"mixer_{norm}.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    model = onnxplain.load_model(path, preprocessing="none")
    graph = model.onnx_model.graph
    norm_nodes = [n for n in graph.node if n.name.startswith("/final_norm/")]
    computed = {o for n in graph.node if n.op_type not in ("Constant", "Identity") and n not in norm_nodes
                for o in n.output}
    last_block = next(i for n in norm_nodes for i in n.input if i in computed)
    assert last_block.startswith("/Add")                   # the residual Add, produced outside the norm
    layer = feature_layer_for(model)
    assert layer.name == last_block, (layer, [n.output[0] for n in norm_nodes])
    assert (layer.layout, layer.grid, layer.extra_tokens, layer.shape) == ("tokens", (4, 4), 0, (16, 8))
    result = onnxplain.grad_cam(model, np.random.default_rng(1).uniform(0, 1, (16, 16, 3)).astype(np.float32))
    assert result.cam.shape == (4, 4) and np.all(np.isfinite(result.score_map))


# ---- reductions ------------------------------------------------------------------------
def test_regression_reduction(models, image):
    model = models("regression")
    base = onnxplain.grad_cam(model, image)                         # the single output itself
    double = onnxplain.grad_cam(model, image, reduction=lambda r: 2.0 * r[0])
    np.testing.assert_allclose(double.score_map, 2.0 * base.score_map, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(double.scores, 2.0 * base.scores, rtol=1e-5)
    weights = onnxplain.grad_cam(model, image, reduction=np.array([2.0]))
    np.testing.assert_allclose(weights.score_map, double.score_map, rtol=1e-4, atol=1e-7)
    net = zoo.load("regression")
    ref = captum_attr.LayerGradCam(net, net.act2).attribute(_nchw(image), target=0, relu_attributions=True)
    assert _corr(onnxplain.grad_cam(model, image, output_upsampling="none").score_map, ref[0, 0].detach()) >= 0.9999


def test_segmentation_class_region(models, image):
    model = models("segmentation")
    net = zoo.load("segmentation")
    mask = np.zeros((32, 32), bool)
    mask[4:20, 8:30] = True
    result = onnxplain.grad_cam(model, image, reduction=onnxplain.ClassRegion(1, mask), output_upsampling="none")
    same = onnxplain.grad_cam(model, image, reduction=(1, mask), output_upsampling="none")
    np.testing.assert_array_equal(result.score_map, same.score_map)
    x = _nchw(image)
    with torch.no_grad():
        expected = float(net(x)[0, 1][torch.from_numpy(mask)].sum())
    np.testing.assert_allclose(result.scores[0], expected, rtol=1e-4)

    class Reduced(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t):
            return (self.net(t)[:, 1] * torch.from_numpy(mask).float()).sum(dim=(1, 2))[:, None]

    wrapped = Reduced().eval()
    ref = captum_attr.LayerGradCam(wrapped, net.act3).attribute(x, target=0, relu_attributions=True)
    assert _corr(result.score_map, ref[0, 0].detach()) >= 0.9999
    whole = onnxplain.grad_cam(model, image, 1)                      # a class = its channel over all pixels
    assert whole.labels == [1] and whole.reduction_layer == model.output_name
    with pytest.raises(ValueError, match="dense output"):
        onnxplain.grad_cam(model, image)


def test_callable_reduction_is_differentiated_numerically(models, image):
    model = models("resnet")
    w = np.linspace(-1.0, 1.0, 10)
    linear = onnxplain.grad_cam(model, image, reduction=lambda r: float(w @ r))
    exact = onnxplain.grad_cam(model, image, reduction=w)
    np.testing.assert_allclose(linear.score_map, exact.score_map, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(linear.channel_weights, exact.channel_weights, rtol=1e-5, atol=1e-9)


def test_logits_and_probability_reduction_layers(models, image):
    model = models("resnet_softmax")
    probs = onnxplain.grad_cam(model, image, 3)
    logits = onnxplain.grad_cam(model, image, 3, reduction_layer="logits")
    assert probs.reduction_layer == model.output_name and logits.reduction_layer == model.logits_name
    plain = onnxplain.grad_cam(models("resnet"), image, 3)
    np.testing.assert_allclose(logits.score_map, plain.score_map, rtol=1e-4, atol=1e-6)
    assert 0 < probs.scores[0] < 1 and not np.allclose(probs.score_map, logits.score_map)


def test_batched_labels_equal_one_at_a_time(models, image):
    model = models("mobilenet")
    both = onnxplain.grad_cam(model, image, [2, 5], mini_batch_size=1)
    for k, label in enumerate([2, 5]):
        one = onnxplain.grad_cam(model, image, label)
        np.testing.assert_allclose(both.score_map[..., k], one.score_map, rtol=1e-5, atol=1e-7)


def test_upsampling_and_contract(models):
    model = models("resnet")
    img = (np.random.default_rng(3).uniform(0, 255, (45, 61, 3))).astype(np.uint8)
    before = img.copy()
    for mode in ("bicubic", "nearest"):
        result = onnxplain.grad_cam(model, img, output_upsampling=mode)
        assert result.score_map.shape == (45, 61) and result.score_map.dtype == np.float32
    none = onnxplain.grad_cam(model, img, output_upsampling="none")
    assert none.score_map.shape == (8, 8) and np.all(none.score_map >= 0)
    np.testing.assert_array_equal(img, before)
    for bad, match in [(dict(output_upsampling="cubic"), "output_upsampling"),
                       (dict(feature_layer="nope"), "feature_layer"),
                       (dict(reduction_layer="nope"), "reduction_layer"),
                       (dict(mini_batch_size=0), "mini_batch_size"),
                       (dict(reduction=np.ones(3)), "reduction")]:
        with pytest.raises(ValueError, match=match):
            onnxplain.grad_cam(model, img, **bad)
    with pytest.raises(ValueError, match="either"):
        onnxplain.grad_cam(model, img, 1, reduction=2)


def test_grad_cam_plus_plus_and_score_cam(models, image):
    model = models("resnet")
    pp = onnxplain.grad_cam_plus_plus(model, image, 3, output_upsampling="none")
    gc = onnxplain.grad_cam(model, image, 3, output_upsampling="none")
    assert pp.method == "gradcam++" and pp.score_map.shape == gc.score_map.shape
    sc = onnxplain.score_cam(model, image, 3, output_upsampling="none")
    assert sc.method == "score-cam" and sc.feature_layer == gc.feature_layer
    # by hand: the masked-image class probabilities (softmax of the logits, as the paper's
    # code) are the channel weights
    from onnxplain.methods.layers import tapped_run
    from onnxplain.images import resize_map

    acts = tapped_run(model, "cpu", [gc.feature_layer], model.to_native(image[None]))[0][0]
    up = resize_map(acts.transpose(1, 2, 0), (32, 32), "bilinear")
    lo, hi = up.min(axis=(0, 1)), up.max(axis=(0, 1))
    masks = np.where(hi > lo, (up - lo) / np.where(hi > lo, hi - lo, 1), 0).transpose(2, 0, 1)[..., None]
    logits = model.scores_native(model.to_native((masks * image).astype(np.float32))).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores = (e / e.sum(axis=1, keepdims=True))[:, 3]
    np.testing.assert_allclose(sc.channel_weights, scores, rtol=1e-4, atol=1e-5)
    expected = np.maximum(np.einsum("c,chw->hw", scores, acts), 0)
    np.testing.assert_allclose(sc.score_map, expected, rtol=1e-4, atol=1e-5)


def test_guided_grad_cam(models, image):
    model = models("resnet")
    result = onnxplain.guided_grad_cam(model, image, 3)
    guided = onnxplain.gradient_attribution(model, image, 3, method="guided-backprop")
    cam = onnxplain.grad_cam(model, image, 3, output_upsampling="none").score_map
    from onnxplain.images import resize_map

    expected = guided.gradients * resize_map(cam, (32, 32), "bilinear")[..., None]
    np.testing.assert_allclose(result.gradients, expected, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(result.score_map, np.abs(expected).sum(axis=2), rtol=1e-5, atol=1e-9)


# ---- the rectangle toy task -----------------------------------------------------------
@pytest.fixture(scope="module")
def rectangle():
    model = onnxplain.load_model(f"{RECT}/rectangle_cnn.onnx", preprocessing="none", labels=["no_rectangle", "rectangle"])
    data = np.load(f"{RECT}/samples.npz")
    keep = data["labels"] == 1
    return model, data["images"][keep], data["boxes"][keep]


def _inside(box, shape=(64, 64)):
    m = np.zeros(shape, bool)
    m[box[0]:box[2], box[1]:box[3]] = True
    return m


@pytest.mark.xfail(strict=True, reason=(
    "Grad-CAM does not localise on the blog's toy network (measured, not assumed): its only feature maps "
    "are the first conv layer and the head is a position-specific dense layer; the argmax sits on the "
    "1-px zero-padding border ring (0/20 peaks in the box, 4/20 maps all zero). The blog-size 32/32 net "
    "gives the same 0/20 (MaxPool layer 2/20) and a second training seed 0/20 even by mean-in-box. The "
    "nets key on the always-covered centre pixel (31, 31) of the blog's generator (off-centre patches are "
    "detected <= 17%). captum's LayerGradCam gives the same maps (test_nhwc_input_model_matches_captum); "
    "integrated gradients and LIME/occlusion/RISE do localise (their tests)."))
def test_rectangle_grad_cam_peaks_on_rectangle(rectangle):
    model, images, boxes = rectangle
    hits = 0
    for img, box in zip(images, boxes):
        m = onnxplain.grad_cam(model, img, "rectangle").score_map
        r, c = np.unravel_index(np.argmax(m), m.shape)
        hits += bool(_inside(box)[r, c])
    assert hits >= 0.6 * len(images)


def test_rectangle_integrated_gradients_on_rectangle(rectangle):
    model, images, boxes = rectangle
    denser = 0
    for img, box in zip(images, boxes):
        m = onnxplain.gradient_attribution(model, img, "rectangle", method="integrated-gradients", num_steps=16).score_map
        denser += bool(m[_inside(box)].mean() > m[~_inside(box)].mean())
    assert denser >= 0.9 * len(images)


def test_cli_gradcam(tmp_path, capsys):
    from onnxplain.cli import main

    rc = main(["gradcam", "--model", zoo.onnx_path("resnet"), "--preprocessing", "none", "--label", "3", "5",
               "--variant", "gradcam++", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    assert "feature layer '/layer2/layer2.1/relu2/Relu_output_0'" in capsys.readouterr().out
    saved = np.load(tmp_path / "chelsea_gradcampp.npy")
    assert saved.shape == (300, 451, 2)
    # two labels: one PNG with a panel per label
    assert (tmp_path / "chelsea_gradcampp.png").exists() and (tmp_path / "chelsea_gradcampp_cam.npy").exists()
    rc = main(["gradcam", "--model", zoo.onnx_path("resnet"), "--preprocessing", "none", "--upsampling", "none",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0 and np.load(tmp_path / "chelsea_gradcam.npy").shape == (8, 8)
    assert main(["gradcam", "--model", zoo.onnx_path("resnet"), "--preprocessing", "none", "--feature-layer",
                 "nope", "--out", str(tmp_path)]) == 2


def test_sigmoid_output_classes(rectangle):
    model, images, _ = rectangle
    p = float(model.run_native(model.to_native(images[:1].astype(np.float32)))[0, 0])
    both = onnxplain.grad_cam(model, images[0], ["no_rectangle", "rectangle"], output_upsampling="none")
    np.testing.assert_allclose(both.scores, [1 - p, p], rtol=1e-5)
    # class 0 is 1 - p: its gradient is the negated class-1 gradient, so the channel weights flip sign
    np.testing.assert_allclose(both.channel_weights[0], -both.channel_weights[1], rtol=1e-6)
    logit = onnxplain.grad_cam(model, images[0], "rectangle", reduction_layer="logits")
    assert logit.reduction_layer != model.output_name
    assert 1.0 / (1.0 + np.exp(-float(logit.scores[0]))) == pytest.approx(p, rel=1e-6)


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_plus_plus"])
def test_default_class_is_chosen_in_the_gradient_run(models, image, method, monkeypatch):
    """No label: the top class is picked inside the gradient graph (one engine run, no
    separate forward). Oracle: argmax of the model's scores and the explicit-label call."""
    model, fn = models("resnet"), getattr(onnxplain, method)
    top = int(np.argmax(model.scores_native(model.to_native(image[None]))[0]))
    explicit = fn(model, image, top)

    def no_forward(*args, **kwargs):
        raise AssertionError("a separate forward pass ran")
    monkeypatch.setattr(model, "run_native", no_forward)
    default = fn(model, image)
    assert default.labels == [top] and default.label_names == explicit.label_names
    np.testing.assert_array_equal(default.score_map, explicit.score_map)
    np.testing.assert_array_equal(default.scores, explicit.scores)
