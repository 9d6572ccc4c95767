"""Tiny ONNX models whose answer is known by hand, for the quality tools.

- ``quadrant``: p(class 1) = sigmoid(2 (mean of the top-left quadrant / 20 - 5)) — only the
  top-left quadrant of the 16 x 16 image matters (logits from a Gemm, then Softmax);
- ``convnet``: Conv(3->4, 3x3, bias) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->3) ->
  Softmax; weights fixed by a seed, so its gradient map depends on the weights.
Both take raw pixels (preprocessing "none"), NCHW float32, size 16.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxplain

SIZE = 16


def _finish(nodes, inits, classes: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _quadrant_mean(src: str, out: str, inits: list, nodes: list) -> None:
    half = SIZE // 2
    inits += [numpy_helper.from_array(np.array([0, 0], np.int64), "q_starts"),
              numpy_helper.from_array(np.array([half, half], np.int64), "q_ends"),
              numpy_helper.from_array(np.array([2, 3], np.int64), "q_axes")]
    nodes += [helper.make_node("Slice", [src, "q_starts", "q_ends", "q_axes"], ["quadrant"]),
              helper.make_node("ReduceMean", ["quadrant"], [out], axes=[2, 3], keepdims=0)]


def quadrant_model() -> onnx.ModelProto:
    nodes, inits = [], []
    _quadrant_mean("image", "qmean_c", inits, nodes)                      # (N, 3)
    w = np.tile(np.array([[-1.0, 1.0]], np.float32) / 60.0, (3, 1))       # mean over channels / 20
    inits += [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([5.0, -5.0], np.float32), "b")]
    nodes += [helper.make_node("Gemm", ["qmean_c", "W", "b"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    return _finish(nodes, inits, 2)


def conv_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    inits += [numpy_helper.from_array(rng.normal(0, 0.02, (4, 3, 3, 3)).astype(np.float32), "conv_w"),
              numpy_helper.from_array(rng.normal(0, 0.5, 4).astype(np.float32), "conv_b")]
    nodes += [helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
              helper.make_node("Relu", ["conv"], ["act"], name="relu")]
    nodes += [helper.make_node("GlobalAveragePool", ["act"], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["feat"], axis=1)]    # (N, 4)
    inits += [numpy_helper.from_array(rng.normal(0, 0.05, (4, 3)).astype(np.float32), "fc_w"),
              numpy_helper.from_array(np.zeros(3, np.float32), "fc_b")]
    nodes += [helper.make_node("Gemm", ["feat", "fc_w", "fc_b"], ["logits"], name="fc"),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    return _finish(nodes, inits, 3)


def load(proto: onnx.ModelProto, folder, name: str) -> onnxplain.Model:
    path = folder / f"{name}.onnx"
    onnx.save(proto, str(path))
    return onnxplain.load_model(path, preprocessing="none")


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("quality_models")


@pytest.fixture(scope="session")
def quadrant(toy_dir):
    return load(quadrant_model(), toy_dir, "quadrant")


@pytest.fixture(scope="session")
def convnet(toy_dir):
    return load(conv_model(), toy_dir, "convnet")


@pytest.fixture(scope="session")
def texture():
    """A 16 x 16 bright random texture (values 100..255)."""
    return np.random.default_rng(7).uniform(100, 255, (SIZE, SIZE, 3)).astype(np.float32)
