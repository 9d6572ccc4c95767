"""Old files (opset 7, IR 3) get gradients: the graph is upgraded before it is rewritten.

Oracle: torch float64 autograd on a hand-built mirror of the same network and weights.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from onnxplain.autodiff import GradientEngine

R = np.random.default_rng(0)
W = (R.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
B = R.standard_normal(4).astype(np.float32)
S, BB, MU, VAR = [np.abs(R.standard_normal(4)).astype(np.float32) + 0.5 for _ in range(4)]
G = (R.standard_normal((5, 4)) * 0.3).astype(np.float32)
C = R.standard_normal(5).astype(np.float32)


def opset7_model(batch) -> onnx.ModelProto:
    """Conv-BN-Relu-MaxPool-GAP-Reshape-Gemm-Softmax at opset 7 / IR 3 (initializers listed
    as graph inputs, as IR 3 requires)."""
    shape = np.array([1 if batch == 1 else 0, -1], np.int64)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["bn"],
                              epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["mp"], ["p"]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "G", "C"], ["z"], transB=1),
             helper.make_node("Softmax", ["z"], ["y"])]
    values = dict(W=W, B=B, s=S, bb=BB, mu=MU, var=VAR, G=G, C=C, shape=shape)
    inits = [numpy_helper.from_array(v, k) for k, v in values.items()]
    graph = helper.make_graph(
        nodes, "op7", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])]
        + [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in inits],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])], initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    m.ir_version = 3
    onnx.checker.check_model(m)
    return m


def torch_mirror(x):
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    c = F.conv2d(x, t(W), t(B), stride=2, padding=1)
    bn = F.batch_norm(c, t(MU), t(VAR), t(S), t(BB), eps=1e-3)
    p = F.max_pool2d(F.relu(bn), 2).mean((2, 3))
    return torch.softmax(p @ t(G).T + t(C), 1)


@pytest.mark.parametrize("batch", [1, "N"])
def test_opset7_ir3_gradient_matches_torch(batch):
    engine = GradientEngine(opset7_model(batch))
    x = R.standard_normal((2, 3, 16, 16)).astype(np.float32)
    seed = R.standard_normal((2, 5)).astype(np.float32)
    got = engine.run(x, seed)["grad:x"]
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    (torch_mirror(xt) * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    want = xt.grad.numpy()
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


def test_opset7_with_fused_preprocessing(tmp_path):
    """The public path: load_model with preprocessing fuses initializers into an IR-3 graph
    (this failed with 'Input onnxplain_pre_scale is undefined')."""
    import onnxplain

    path = tmp_path / "op7.onnx"
    onnx.save(opset7_model("N"), path)
    model = onnxplain.load_model(str(path), preprocessing="imagenet")
    img = (R.random((16, 16, 3)) * 255).astype(np.float32)
    ex = onnxplain.gradient_attribution(model, img, label=2)
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    x = torch.tensor(((img - mean) / std).transpose(2, 0, 1)[None], requires_grad=True)
    torch_mirror(x)[0, 2].backward()
    want = (x.grad.numpy()[0] / std[:, None, None]).transpose(1, 2, 0)
    got = np.asarray(ex.working_gradients, np.float64)
    assert got.shape == want.shape
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
