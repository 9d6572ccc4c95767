"""Quantized (QDQ) and float16 graphs.

Oracles: hand-computed straight-through gradients on a tiny QDQ graph; torch autograd
(float64) with a custom STE function on a small QDQ conv net; for the bundled
EfficientNet-Lite0, its float32 graph (int8: SmoothGrad correlation; fp16: agreement with
the float32 graph on float16-rounded weights)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxplain.autodiff import GradientEngine
from onnxplain.graph import build_gradient_model, prepare_model
from onnxplain.graph.reverse import SEED
pytest.importorskip("torch")  # this module's oracles/zoo helpers import torch
from graph_helpers import rel_err, session

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EFFNET = os.path.join(ROOT, "models", "efficientnet_lite0.onnx")


def _qdq_model(dq_scale):
    """y = DQ(Q(x; 0.1, 0 int8); dq_scale) * DQ(int8 weight 3; 0.5): weight 1.5."""
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.array(dq_scale, np.float32), "s2"),
             numpy_helper.from_array(np.array([3], np.int8), "wq"),
             numpy_helper.from_array(np.array(0.5, np.float32), "ws")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s2", "z"], ["d"]),
             helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"]),
             helper.make_node("Mul", ["d", "w"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


@pytest.mark.parametrize("dq_scale", [0.1, 0.2])
def test_qdq_straight_through_hand_checked(dq_scale):
    """STE: d DQ(Q(x))/dx = dq_scale/q_scale where (qmin-zp)*s < x < (qmax-zp)*s, else 0."""
    model = _qdq_model(dq_scale)
    prepared = prepare_model(model)
    assert "DequantizeLinear" in {n.op_type for n in prepared.graph.node}
    # weight DQ folded to a constant 1.5; range (-12.8, 12.7): 12.8 and -12.9 saturate
    x = np.array([[0.04, 0.26, 12.6, 12.8, -12.7, -12.9]], np.float32)
    seed = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], np.float32)
    gm = build_gradient_model(prepared)
    out = dict(zip([o.name for o in gm.graph.output],
                   session(gm).run(None, {"x": x, SEED: seed})))
    inside = np.array([[1, 1, 1, 0, 1, 0]], np.float32)
    np.testing.assert_allclose(out["grad:x"], seed * 1.5 * (dq_scale / 0.1) * inside, rtol=1e-6)
    want_y = np.clip(np.round(x / 0.1), -128, 127) * dq_scale * 1.5
    np.testing.assert_allclose(out["y"], want_y, rtol=1e-6)


def test_qdq_conv_net_matches_torch_ste():
    """Oracle: torch autograd (float64) with fake quantization as a custom autograd
    function (forward: round/saturate; backward: gradient inside the range)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(11)
    W1 = (rng.standard_normal((4, 2, 3, 3)) * 0.4).astype(np.float32)
    W2q = rng.integers(-127, 128, (3, 4, 3, 3)).astype(np.int8)
    w2s = np.array([0.004, 0.003, 0.005], np.float32)  # per-output-channel weight scales
    # activation 1: int8 symmetric; activation 2: uint8 with range [0, 2.55] (absorbed ReLU)
    s1, z1, s2, z2 = np.float32(0.02), np.int8(3), np.float32(0.01), np.uint8(0)
    inits = [numpy_helper.from_array(v, k) for k, v in dict(
        W1=W1, W2q=W2q, w2s=w2s, s1=np.array(s1), z1=np.array(z1), s2=np.array(s2),
        z2=np.array(z2)).items()]
    n = helper.make_node
    nodes = [n("Conv", ["x", "W1"], ["c1"], pads=[1, 1, 1, 1]),
             n("QuantizeLinear", ["c1", "s1", "z1"], ["q1"]),
             n("DequantizeLinear", ["q1", "s1", "z1"], ["d1"]),
             n("DequantizeLinear", ["W2q", "w2s"], ["W2"], axis=0),
             n("Conv", ["d1", "W2"], ["c2"], strides=[2, 2]),
             n("QuantizeLinear", ["c2", "s2", "z2"], ["q2"]),
             n("DequantizeLinear", ["q2", "s2", "z2"], ["y"])]
    graph = helper.make_graph(nodes, "qconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    eng = GradientEngine(model)
    x = rng.standard_normal((2, 2, 9, 9)).astype(np.float32)
    seed = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    got = eng.run(x, seed)

    class FakeQuant(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v, s, z, qmin, qmax):
            ctx.save_for_backward((v > (qmin - z) * s) & (v < (qmax - z) * s))
            return (torch.clamp(torch.round(v / s) + z, qmin, qmax) - z) * s

        @staticmethod
        def backward(ctx, g):
            (inside,) = ctx.saved_tensors
            return g * inside, None, None, None, None

    t = lambda a: torch.tensor(np.asarray(a, np.float64))
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    h = FakeQuant.apply(F.conv2d(xt, t(W1), padding=1), float(s1), float(z1), -128, 127)
    W2 = t(W2q.astype(np.float64) * w2s[:, None, None, None])
    y = FakeQuant.apply(F.conv2d(h, W2, stride=2), float(s2), float(z2), 0, 255)
    (y * t(seed)).sum().backward()
    np.testing.assert_allclose(got["output"], y.detach().numpy(), atol=1e-6)
    assert rel_err(got["grad:x"], xt.grad.numpy()) < 1e-5


@pytest.fixture(scope="module")
def bundled():
    if not os.path.exists(EFFNET):
        pytest.skip("bundled model not present")
    from onnxplain import load_model
    import skimage.data

    m = load_model()
    x = np.stack([m.prepare(getattr(skimage.data, n)())[0]
                  for n in ("astronaut", "chelsea", "coffee")]).astype(np.float32)
    eng = m.gradient_engine()
    seeds = np.stack([m.seed_for(int(i)) for i in eng.forward(x)["probabilities"].argmax(1)])
    return m, eng, x, seeds


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_int8_qdq_efficientnet_gradient(bundled, tmp_path):
    """The int8 QDQ build prepares (exactly verified: float semantics, no int8 kernels)
    and its STE gradient tracks the float32 model's (SmoothGrad correlation)."""
    from onnxplain.variants import quantize_int8

    m, eng, x, seeds = bundled
    import skimage.data

    q = quantize_int8(m, tmp_path / "int8.onnx",
                      calibration_images=[skimage.data.astronaut(), skimage.data.coffee()])
    qeng = q.gradient_engine()
    ops = {n.op_type for n in qeng.model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    got = qeng.run(x, seeds)["grad:pixels"]
    assert np.isfinite(got).all() and np.abs(got).max() > 0

    # SmoothGrad of int8 vs float32: raw gradients of ReLU6 nets are fragile under
    # quantisation (raw correlation 0.0-0.7 on these photos, SmoothGrad-16 0.83-0.93).
    rng = np.random.default_rng(0)
    for k in (0, 2):
        xs = np.clip(x[k] + rng.normal(0, 10, (8,) + x.shape[1:]), 0, 255).astype(np.float32)
        sk = np.repeat(seeds[k:k + 1], 8, 0)
        a = qeng.run(xs, sk)["grad:pixels"].mean(0)
        b = eng.run(xs, sk)["grad:pixels"].mean(0)
        assert _corr(a, b) > 0.7


def test_float16_efficientnet_gradient(bundled):
    """Gradient of the fp16 build = float32 graph on the float16-rounded weights (computed
    in float32), and close to the float32 model's own gradient."""
    from onnxplain.variants import float16_model

    m, eng, x, seeds = bundled
    h = float16_model(m)
    heng = h.gradient_engine()
    got = heng.run(x, seeds)["grad:pixels"]
    assert got.dtype == np.float32 and np.isfinite(got).all()
    rounded = m.fused_model()
    for t in rounded.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            v = numpy_helper.to_array(t).astype(np.float16).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(v, t.name))
    want = GradientEngine(rounded).run(x, seeds)["grad:pixels"]
    ref = eng.run(x, seeds)["grad:pixels"]
    for k in range(len(x)):
        assert rel_err(got[k], want[k]) < 1e-3
        # float16 weight rounding alone moves a few ReLU6 masks: 0.979-0.990 here.
        assert _corr(got[k], ref[k]) > 0.97


def test_float16_input_model():
    """A graph with a float16 input (and Softmax, which onnxruntime decomposes with a
    ReduceMax for float16): gradient in float32, matching the float32 twin."""
    rng = np.random.default_rng(3)
    W = (rng.standard_normal((4, 6)) * 0.5).astype(np.float32)

    def model(dtype):
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Softmax", ["r"], ["y"], axis=-1)], "h",
            [helper.make_tensor_value_info("x", dtype, ["N", 4])],
            [helper.make_tensor_value_info("y", dtype, None)],
            initializer=[numpy_helper.from_array(W.astype(helper.tensor_dtype_to_np_dtype(dtype)), "W")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    x = rng.standard_normal((3, 4)).astype(np.float32)
    seed = rng.standard_normal((3, 6)).astype(np.float32)
    half = GradientEngine(model(TensorProto.FLOAT16))
    full = GradientEngine(model(TensorProto.FLOAT))
    got = half.run(x, seed)["grad:x"]
    W16 = W.astype(np.float16).astype(np.float32)
    h = np.maximum(x @ W16, 0)
    p = np.exp(h - h.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    gh = p * (seed - (seed * p).sum(1, keepdims=True)) * (h > 0)
    np.testing.assert_allclose(got, gh @ W16.T, rtol=1e-4, atol=1e-6)
    assert _corr(got, full.run(x, seed)["grad:x"]) > 0.99
