"""Comparing two models (onnxplain.compare) and the derived builds (onnxplain.variants).

Oracles: a model compared with itself agrees fully (top-1 equal, top-5 overlap 1, probability
difference 0, map rank correlation 1, top-10% IoU 1); the IoU of hand-made top regions; the
float16 build of a toy model matches the float32 one to float16 precision and keeps float32 I/O;
a gradient method the engine cannot run on a model is reported as "fallback: forward-only" and
the forward-only fallback method is run instead; the bundled model against its int8 QDQ build
runs end to end.
"""
from __future__ import annotations


import numpy as np
import onnx
import pytest

import onnxplain
from onnxplain.compare import top_region_iou
from onnxplain.errors import ModelError
from onnxplain.variants import convert_float16, float16_model, quantize_int8, variant_model


def test_model_against_itself(convnet, texture):
    other = convnet.with_graph(convnet.onnx_model)
    images = [texture, texture[::-1].copy()]
    res = onnxplain.compare_models(convnet, other, images, methods=("gradient", "occlusion"),
                                method_params={"occlusion": {"mask_size": 4, "stride": 4}})
    s = res.summary()
    assert s["top1_agreement"] == 1.0 and s["mean_top5_overlap"] == 1.0 and s["max_prob_diff"] == 0.0
    for row in res.maps:
        assert row["status"] == "ok" and row["spearman"] == pytest.approx(1.0) and row["iou_top"] == 1.0
    assert [d["image"] for d in res.drift] == ["image0", "image1"] or len(res.drift) == 2
    assert not s["flagged"] and "| image0 | gradient | 1.000 | 1.000 | ok |" in res.markdown()


def test_top_region_iou_by_hand():
    a = np.arange(100, dtype=np.float32)            # top 10% = the last 10 values
    b = a.copy()
    b[90:95] = -1                                     # b's top 10 = 85..89 and 95..99
    assert top_region_iou(a, a) == 1.0
    assert top_region_iou(a, b) == pytest.approx(5 / 15)


def test_float16_build(convnet, texture, tmp_path):
    proto = convert_float16(convnet.onnx_model)
    types = {i.name: i.data_type for i in proto.graph.initializer}
    assert types["conv_w"] == onnx.TensorProto.FLOAT16
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    half = float16_model(convnet, tmp_path / "half.onnx")
    x = convnet.to_native(texture[None])
    np.testing.assert_allclose(half.scores_native(x), convnet.scores_native(x), atol=2e-3)
    assert half.input_dtype == np.float32 and half.output_kind == "probabilities"


def test_gradient_failure_falls_back_to_forward_only(convnet, texture, monkeypatch):
    other = convnet.with_graph(convnet.onnx_model, path="other.onnx")

    def broken(environment=None):
        raise ModelError("other.onnx: no gradient graph for this build")

    monkeypatch.setattr(other, "gradient_engine", broken)
    res = onnxplain.compare_models(convnet, other, texture, methods=("gradient",),
                                method_params={"occlusion": {"mask_size": 4, "stride": 4}})
    status = {r["method"]: r["status"] for r in res.maps}
    assert status["gradient"].startswith("fallback: forward-only (model B") and status["occlusion"] == "ok"
    assert res.params["methods"] == ["gradient", "occlusion"]


def test_bundled_model_against_int8_end_to_end(tmp_path):
    """One image, forward-only method, coarse setting, one calibration image."""
    from skimage.data import chelsea

    model = onnxplain.load_model()
    int8 = quantize_int8(model, tmp_path / "int8.onnx", calibration_images=[chelsea()])
    assert any(n.op_type == "QuantizeLinear" for n in int8.onnx_model.graph.node)
    res = onnxplain.compare_models(model, int8, chelsea(), methods=("occlusion",),
                                method_params={"occlusion": {"mask_size": 112, "stride": 56, "mask_clipping": False}})
    p = res.predictions[0]
    assert p["top1_a"] == 285 and 0 <= p["max_prob_diff"] < 0.5 and res.maps[0]["status"] == "ok"
    assert -1.0 <= res.maps[0]["spearman"] <= 1.0


def test_variant_cache_reuses_the_build(convnet, tmp_path):
    a = variant_model(convnet, "fp16", directory=tmp_path)
    files = list(tmp_path.glob("*.onnx"))
    assert len(files) == 1 and "_fp16" in files[0].name
    mtime = files[0].stat().st_mtime_ns
    b = variant_model(convnet, "fp16", directory=tmp_path)
    assert files[0].stat().st_mtime_ns == mtime and b.path == a.path


@pytest.mark.parametrize("kwargs, match", [
    ({"methods": ("shap",)}, "'methods' parameter must be one of"),
    ({"top_fraction": 0.0}, "'top_fraction' parameter must be > 0"),
    ({"fallback": "gradient"}, "must be a forward-only method"),
])
def test_bad_options(convnet, texture, kwargs, match):
    with pytest.raises(ValueError, match=match):
        onnxplain.compare_models(convnet, convnet, texture, **kwargs)
