"""Model parameter randomisation (onnxplain.sanity; Adebayo et al. 2018).

Oracles: the layer list of a hand-built graph (Gemm closest to the output first, then the Conv
with its bias); randomised tensors keep their shapes/dtypes and match the per-tensor mean/std
they were drawn from; the seeded draw is identical across calls and modes; the original model
(graph and outputs) is untouched; and randomising every layer decorrelates the real gradient map
(onnxplain.gradient_attribution) of a toy conv net whose gradient depends on its weights.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxplain
from onnxplain.sanity import randomize_layers, spearman, ssim01, weight_layers

from .conftest import conv_model


def test_layers_output_first_with_bias():
    layers = weight_layers(conv_model())
    assert [(layer.index, layer.node, layer.op_type) for layer in layers] == [(0, "fc", "Gemm"), (1, "conv", "Conv")]
    assert layers[1].initializers == ("conv_w", "conv_b") and layers[0].initializers == ("fc_w", "fc_b")


def test_randomize_is_seeded_and_keeps_the_input():
    proto = conv_model()
    before = proto.SerializeToString()
    layers = weight_layers(proto)
    a = randomize_layers(proto, layers, seed=3)
    b = randomize_layers(proto, layers, seed=3)
    assert proto.SerializeToString() == before
    assert a.SerializeToString() == b.SerializeToString()
    old = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    new = {i.name: numpy_helper.to_array(i) for i in a.graph.initializer}
    w_old, w_new = old["conv_w"], new["conv_w"]
    assert w_new.shape == w_old.shape and w_new.dtype == w_old.dtype and not np.array_equal(w_new, w_old)
    assert abs(w_new.std() - w_old.std()) < 0.3 * w_old.std()
    # the same layer gets the same draw alone (independent) as in the cascade
    only_conv = {i.name: numpy_helper.to_array(i) for i in randomize_layers(proto, [layers[1]], seed=3).graph.initializer}
    assert np.array_equal(only_conv["conv_w"], w_new) and np.array_equal(only_conv["fc_w"], old["fc_w"])
    onnx.checker.check_model(a, full_check=True)


def test_cascading_randomisation_changes_the_gradient_map(convnet, texture):
    x = convnet.to_native(texture[None])
    before_graph = convnet.onnx_model.SerializeToString()
    before_out = convnet.scores_native(x)
    image = texture.copy()
    res = onnxplain.sanity_check(convnet, image, 0, methods=("gradient",), mode="cascading", keep_maps=True)
    assert np.array_equal(image, texture)
    assert convnet.onnx_model.SerializeToString() == before_graph
    assert np.array_equal(convnet.scores_native(x), before_out)
    assert [r["step"] for r in res.rows] == [0, 1]
    last = res.rows[-1]
    assert last["spearman_abs"] < 0.8 and last["ssim"] < 0.9, res.markdown()
    # the original map really is the gradient's, recomputed the same way
    again = onnxplain.gradient_attribution(convnet, texture, 0, method="gradient")
    np.testing.assert_array_equal(res.original_maps["gradient"], again.extras["gradients"].sum(axis=2))
    assert ("gradient", 1) in res.maps and res.label == 0


def test_independent_mode_and_table(convnet, texture, tmp_path):
    res = onnxplain.sanity_check(convnet, texture, methods=("gradient", "occlusion"), mode="independent", layers=[1],
                              method_params={"occlusion": {"mask_size": 4, "stride": 4}})
    assert [(r["method"], r["step"]) for r in res.rows] == [("gradient", 1), ("occlusion", 1)]
    assert "only 1" in res.markdown()
    res.plot(str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_map_similarities():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 20))
    assert spearman(a, 3 * a + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman(a, np.zeros_like(a)))
    assert ssim01(a, 2 * a) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"methods": ("nonsense",)}, "'methods' parameter must be one of"),
    ({"mode": "top-down"}, "'mode' parameter must be one of"),
    ({"layers": [5]}, "must be <= 1"),
])
def test_bad_options(convnet, texture, kwargs, match):
    with pytest.raises(ValueError, match=match):
        onnxplain.sanity_check(convnet, texture, **{"methods": ("gradient",), **kwargs})
