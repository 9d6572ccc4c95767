"""Gradient attribution: parity with captum on the zoo networks, exact definitions, contract."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import onnxplain  # noqa: E402
from tests.data import zoo  # noqa: E402


def _corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name, preprocessing="none"):
        if (name, preprocessing) not in cache:
            cache[name, preprocessing] = onnxplain.load_model(zoo.onnx_path(name), preprocessing=preprocessing)
        return cache[name, preprocessing]
    return get


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(11).normal(0.0, 1.0, (32, 32, 3)).astype(np.float32)


def _nchw(img, grad=False):
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))[None].copy())
    return x.requires_grad_() if grad else x


def _hwc(t):
    return t[0].detach().numpy().transpose(1, 2, 0)


def _captum(method, net, x, label, steps=25):
    if method == "gradient":
        return captum_attr.Saliency(net).attribute(x, target=label, abs=False)
    if method == "guided-backprop":
        return captum_attr.GuidedBackprop(net).attribute(x, target=label)
    if method == "zeiler-fergus":
        return captum_attr.Deconvolution(net).attribute(x, target=label)
    return captum_attr.IntegratedGradients(net).attribute(x, target=label, n_steps=steps, method="riemann_trapezoid")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["relunet", "resnet"])
@pytest.mark.parametrize("method", ["gradient", "guided-backprop", "zeiler-fergus", "integrated-gradients"])
def test_matches_captum(models, image, name, method):
    model, net = models(name), zoo.load(name)
    labels = [2, 7]
    result = onnxplain.gradient_attribution(model, image, labels, method=method)
    assert result.gradients.shape == (32, 32, 3, 2) and result.score_map.shape == (32, 32, 2)
    for k, label in enumerate(labels):
        ref = _hwc(_captum(method, net, _nchw(image, grad=True), label))
        got = result.gradients[..., k]
        if method == "integrated-gradients":
            # captum's "riemann_trapezoid" uses steps of 1/n, not 1/(n - 1): the same sum scaled by (n - 1)/n
            ref = ref * 25 / 24
            assert _corr(got, ref) >= 0.999
        else:
            assert _corr(got, ref) >= 0.9999
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
        np.testing.assert_allclose(result.score_map[..., k], np.abs(got).sum(axis=2), rtol=1e-6)


def test_gradient_is_with_respect_to_raw_pixels(models, image):
    """ImageNet preprocessing is fused in front: d/dpixel = d/dinput * scale / std per channel."""
    model = models("relunet", "imagenet")
    net = zoo.load("relunet")
    pixels = np.random.default_rng(2).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    native = model.to_native(pixels[None])[0]
    ref = _hwc(captum_attr.Saliency(net).attribute(torch.from_numpy(native[None].copy()).requires_grad_(), target=4,
                                                   abs=False))
    a, _ = model.preprocessing.affine
    got = onnxplain.gradient_attribution(model, pixels, 4).gradients
    np.testing.assert_allclose(got, ref * a, rtol=1e-3, atol=1e-5 * np.abs(ref * a).max())


def test_integrated_gradients_definition_and_completeness(models, image):
    model = models("smooth")
    steps = 9
    result = onnxplain.gradient_attribution(model, image, 3, method="integrated-gradients", num_steps=steps,
                                         baseline=0.5)
    base = np.full_like(image, 0.5)
    path = [base + a * (image - base) for a in np.linspace(0, 1, steps)]
    grads = [onnxplain.gradient_attribution(model, p, 3).gradients for p in path]
    w = np.full(steps, 1 / (steps - 1))
    w[[0, -1]] /= 2
    expected = (image - base) * sum(wi * g for wi, g in zip(w, grads))
    np.testing.assert_allclose(result.gradients, expected, rtol=1e-4, atol=1e-7)
    # completeness: the attributions sum to S(image) - S(baseline) (trapezoid error only)
    fine = onnxplain.gradient_attribution(model, image, 3, method="integrated-gradients", num_steps=64)
    s = model.scores_native(model.to_native(np.stack([image, np.zeros_like(image)])))[:, 3]
    np.testing.assert_allclose(fine.gradients.sum(), s[0] - s[1], rtol=2e-2, atol=1e-4)


def test_smoothgrad_and_gradient_x_input(models, image):
    model = models("relunet")
    a = onnxplain.gradient_attribution(model, image, 1, method="smoothgrad", num_samples=6, noise_level=0.2,
                                    random_state=5, mini_batch_size=4)
    b = onnxplain.gradient_attribution(model, image, 1, method="smoothgrad", num_samples=6, noise_level=0.2,
                                    random_state=5)
    np.testing.assert_array_equal(a.gradients, b.gradients)             # same seed, same output
    sigma = 0.2 * (image.max() - image.min())
    noise = np.random.default_rng(5).normal(0.0, 1.0, (6, *image.shape)).astype(np.float32) * np.float32(sigma)
    expected = np.mean([onnxplain.gradient_attribution(model, image + n, 1).gradients for n in noise], axis=0)
    np.testing.assert_allclose(a.gradients, expected, rtol=1e-4, atol=1e-7)
    assert a.params["noise_sigma"] == pytest.approx(sigma)
    gxi = onnxplain.gradient_attribution(model, image, 1, method="gradient-x-input")
    grad = onnxplain.gradient_attribution(model, image, 1)
    np.testing.assert_allclose(gxi.gradients, grad.gradients * image, rtol=1e-6)


def test_resized_image_and_contract(models):
    model = models("relunet")
    img = np.random.default_rng(4).uniform(0, 255, (48, 40, 3)).astype(np.uint8)
    before = img.copy()
    result = onnxplain.gradient_attribution(model, img, 3, method="guided-backprop")
    assert result.gradients.shape == (48, 40, 3) and result.gradients.dtype == np.float32
    assert result.working_gradients.shape == (32, 32, 3)
    np.testing.assert_allclose(result.score_map, np.abs(result.gradients).sum(axis=2), rtol=1e-6)
    np.testing.assert_array_equal(img, before)
    one = onnxplain.gradient_attribution(model, img, 5, method="integrated-gradients", num_steps=5)
    both = onnxplain.gradient_attribution(model, img, [3, 5], method="integrated-gradients", num_steps=5,
                                       mini_batch_size=3)
    np.testing.assert_allclose(both.gradients[..., 1], one.gradients, rtol=1e-5, atol=1e-9)
    for bad, err in [(dict(method="saliency"), ValueError), (dict(num_steps=1), ValueError),
                     (dict(noise_level=-0.1), ValueError), (dict(num_samples=2.5), TypeError),
                     (dict(method="integrated-gradients", baseline=np.zeros((5, 5, 3))), ValueError),
                     (dict(method="gradient", baseline=0.0), ValueError),  # was silently ignored
                     (dict(method="smoothgrad", baseline=np.zeros((32, 32, 3))), ValueError)]:
        with pytest.raises(err):
            onnxplain.gradient_attribution(model, img, 3, **bad)


def test_registry_main_presets_run(models, image):
    """Oracle: the registry's fixed option names the method the result reports; presets reach the function."""
    model = models("resnet")
    for name, spec in onnxplain.METHODS.items():
        if spec.func is not onnxplain.gradient_attribution:
            continue
        result = spec(model, image, 2, preset="main")
        assert result.method == name and result.score_map.shape == (32, 32)
        for key, value in spec.presets["main"].items():
            assert result.params[key] == value, (name, key)


def test_cli_gradients(tmp_path):
    from onnxplain.cli import main

    rc = main(["gradients", "--model", zoo.onnx_path("relunet"), "--preprocessing", "none", "--label", "2",
               "--method", "integrated-gradients", "--num-steps", "4", "--baseline", "10,20,30",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    grads = np.load(tmp_path / "chelsea_integrated-gradients_gradients.npy")
    assert grads.shape == (300, 451, 3)
    np.testing.assert_allclose(np.load(tmp_path / "chelsea_integrated-gradients.npy"), np.abs(grads).sum(axis=2),
                               rtol=1e-6)
    assert (tmp_path / "chelsea_integrated-gradients.png").exists()
    assert main(["gradients", "--model", zoo.onnx_path("relunet"), "--preprocessing", "none", "--baseline", "1,2",
                 "--out", str(tmp_path)]) == 2


def test_smoothgrad_labels_share_noise_and_memory_does_not_grow(models, image):
    """Oracle: each label alone (same seed); SmoothGrad draws its noisy copies per batch, so the
    peak memory of 256 samples stays near that of 4 (it used to hold all of them at once)."""
    import tracemalloc

    model = models("relunet")
    kw = dict(method="smoothgrad", num_samples=5, random_state=7, mini_batch_size=3)  # batches straddle labels
    both = onnxplain.gradient_attribution(model, image, [1, 2], **kw)
    for k, label in enumerate([1, 2]):
        one = onnxplain.gradient_attribution(model, image, label, **kw)
        np.testing.assert_array_equal(both.gradients[..., k], one.gradients)
    peaks = []
    for n in (4, 256):
        onnxplain.gradient_attribution(model, image, 1, method="smoothgrad", num_samples=n, mini_batch_size=4)
        tracemalloc.start()
        onnxplain.gradient_attribution(model, image, 1, method="smoothgrad", num_samples=n, mini_batch_size=4)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    noise_bytes = 256 * image.size * 8
    assert peaks[1] - peaks[0] < noise_bytes / 4, (peaks, noise_bytes)


@pytest.mark.parametrize("method", ["gradient", "guided-backprop", "gradient-x-input"])
def test_default_class_is_chosen_in_the_gradient_run(models, image, method, monkeypatch):
    """With no label the top class is picked inside the gradient graph: one engine run, no
    forward pass to find it. Oracle: the model's own scores (argmax) and the explicit-label
    call, which must give the identical explanation."""
    model = models("resnet")
    top = int(np.argmax(model.scores_native(model.to_native(image[None]))[0]))
    explicit = onnxplain.gradient_attribution(model, image, top, method=method)

    def no_forward(*args, **kwargs):
        raise AssertionError("a separate forward pass ran")
    monkeypatch.setattr(model, "run_native", no_forward)
    default = onnxplain.gradient_attribution(model, image, method=method)
    assert default.labels == [top] and default.label_names == explicit.label_names
    np.testing.assert_array_equal(default.score_map, explicit.score_map)
    np.testing.assert_array_equal(default.scores, explicit.scores)
