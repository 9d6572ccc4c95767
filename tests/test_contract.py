"""One contract every method passes (captum-style cross-method table).

For each (method, arguments) row, on a real trained network (the rectangle toy task's CNN:
NHWC input, sigmoid output read as two classes) and an image of another size than the
model input: output shape/dtype at the image's size; several
labels equal one call per label; same seed -> identical; the input image is not mutated; a
bad label is a LabelError; progress is reported. Oracles: the method's own single-label
output (for batching) and the definition of the contract.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import onnxplain

ZOO = pathlib.Path(__file__).parent / "data" / "zoo"

#: Smaller sample counts than the "quick" preset for this 64 x 64 toy net (run ~8 times per method).
SMALL = {
    "lime": dict(num_samples=64, num_features=16, segmentation="grid", random_state=3),
    "occlusion": dict(mask_size=8, stride=4),
    "rise": dict(num_masks=64, cell_size=4, random_state=3),
    "integrated-gradients": dict(num_steps=5),
    "smoothgrad": dict(num_samples=4, random_state=3),
    "kernelshap": dict(num_samples=64, num_features=16, segmentation="grid", random_state=3),
}
#: Every registry method at its quick preset (with SMALL on top), plus option variants that
#: take another code path.
METHODS = [(name, onnxplain.METHODS[name], {"preset": "quick", **SMALL.get(name, {})}) for name in onnxplain.METHODS]
METHODS += [
    ("lime-linear", onnxplain.image_lime, dict(num_samples=256, num_features=16, surrogate="linear", random_state=3)),
]
IDS = [m[0] for m in METHODS]


def test_registry_is_complete():
    """Every public method function is reachable through onnxplain.METHODS (oracle: __all__)."""
    funcs = {s.func for s in onnxplain.METHODS.values()}
    public = {getattr(onnxplain, n) for n in ("image_lime", "grad_cam", "grad_cam_plus_plus", "score_cam",
                                               "guided_grad_cam", "gradient_attribution", "occlusion_sensitivity",
                                               "rise", "recipro_cam", "layer_cam", "hires_cam", "xgrad_cam",
                                               "eigen_cam", "ablation_cam", "kernel_shap")}
    assert public == funcs
    from onnxplain.methods.gradients import METHODS as GRADIENT_METHODS

    assert {s.fixed["method"] for s in onnxplain.METHODS.values() if s.func is onnxplain.gradient_attribution} \
        == set(GRADIENT_METHODS)
    for spec in onnxplain.METHODS.values():
        assert set(spec.presets) == {"main", "quick"} and spec.summary
    with pytest.raises(ValueError, match="fixes method='smoothgrad'"):
        onnxplain.METHODS["smoothgrad"].options(method="gradient")
    with pytest.raises(ValueError, match="'preset' parameter"):
        onnxplain.METHODS["smoothgrad"].options("light")


RECT = pathlib.Path(__file__).parent / "data" / "rectangle"


@pytest.fixture(scope="module")
def model():
    return onnxplain.load_model(RECT / "rectangle_cnn.onnx", preprocessing="none", labels=["no_rectangle", "rectangle"])


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    data = np.load(RECT / "samples.npz")
    first = int(np.flatnonzero(data["labels"] == 1)[0])
    return np.asarray(Image.fromarray(data["images"][first]).resize((48, 40)))  # not the model's 64 x 64


@pytest.mark.parametrize("name, fn, kw", METHODS, ids=IDS)
def test_contract(model, image, name, fn, kw):
    before = image.copy()
    calls = []
    single = fn(model, image, 1, progress=lambda d, t: calls.append((d, t)), **kw)
    np.testing.assert_array_equal(image, before)  # input not mutated
    assert isinstance(single, onnxplain.Explanation)
    assert single.score_map.shape == (40, 48) and single.score_map.dtype == np.float32
    assert np.all(np.isfinite(single.score_map)) and np.any(single.score_map != 0)
    assert single.labels == [1] and single.label_names == [model.class_names[1]]
    assert np.ravel(single.scores).shape == (1,) and "total" in single.timings
    assert calls, f"{name} reported no progress"

    again = fn(model, image, 1, **kw)
    np.testing.assert_array_equal(again.score_map, single.score_map)  # same seed -> identical

    multi = fn(model, image, [1, 0], **kw)
    assert multi.score_map.shape == (40, 48, 2) and multi.labels == [1, 0]
    other = fn(model, image, 0, **kw)
    np.testing.assert_allclose(multi.score_map[..., 0], single.score_map, rtol=1e-4,
                               atol=1e-5 * float(np.abs(single.score_map).max()))
    np.testing.assert_allclose(multi.score_map[..., 1], other.score_map, rtol=1e-4,
                               atol=1e-5 * float(np.abs(other.score_map).max()))

    with pytest.raises(onnxplain.LabelError, match="out of range"):
        fn(model, image, 2, **kw)
    # a float is no class (the gradient/CAM methods used to read it as reduction weights)
    with pytest.raises(onnxplain.LabelError, match="class index or a class name"):
        fn(model, image, 1.5, **kw)
    as_array = fn(model, image, np.array([1, 0]), **kw)  # an index array is a list of labels everywhere
    assert as_array.labels == [1, 0]
    np.testing.assert_array_equal(as_array.score_map, multi.score_map)
    with pytest.raises(onnxplain.ImageError):
        fn(model, np.full((8, 8, 3), np.nan, np.float32), 1, **kw)
