"""Tiny ONNX classifiers written with onnx.helper, for tests whose answer is known by hand.

Every model computes per-channel spatial means m (N, 3) of its (preprocessed) input and
then logits = m @ W + b with a fixed W; variants change layout, batch, dtype and head.
"""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

W = np.array([[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, -1.0, 1.0], [-1.0, 0.0, 1.0, 3.0]], dtype=np.float32)
B = np.array([0.1, 0.0, -0.2, 0.3], dtype=np.float32)
DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "uint8": TensorProto.UINT8}


def make_classifier(*, layout: str = "NCHW", size: int = 8, batch: int | str = "N", dtype: str = "float32",
                    head: str = "logits", hardcoded_batch_reshape: bool = False, classes: int = 4,
                    extra_output: bool = False, opset: int = 17) -> onnx.ModelProto:
    """A classifier: spatial mean per channel -> Gemm -> head ("logits", "softmax", "sigmoid")."""
    shape = [batch, 3, size, size] if layout == "NCHW" else [batch, size, size, 3]
    nodes, inits = [], []
    x = "image"
    if dtype != "float32":
        nodes.append(helper.make_node("Cast", [x], ["x32"], to=TensorProto.FLOAT))
        x = "x32"
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    nodes.append(helper.make_node("ReduceMean", [x], ["m4"], axes=axes, keepdims=1))
    if hardcoded_batch_reshape:
        inits.append(numpy_helper.from_array(np.array([1, 3], np.int64), "shape13"))
        nodes.append(helper.make_node("Reshape", ["m4", "shape13"], ["m"]))
    else:
        nodes.append(helper.make_node("Flatten", ["m4"], ["m"], axis=1))
    w = W[:, :classes] if head != "sigmoid" else W[:, :1]
    b = B[:classes] if head != "sigmoid" else B[:1]
    inits += [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")]
    nodes.append(helper.make_node("Gemm", ["m", "W", "b"], ["logits"]))
    out_dim = w.shape[1]
    if head == "softmax":
        nodes.append(helper.make_node("Softmax", ["logits"], ["out"], axis=1))
    elif head == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["out"]))
    else:
        nodes.append(helper.make_node("Identity", ["logits"], ["out"]))
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, out_dim])]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, [batch, 3]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", DTYPES[dtype], shape)],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def expected_logits(pixels: np.ndarray, *, a=1.0, b=0.0, classes: int = 4) -> np.ndarray:
    """Hand-computed logits for a (N, h, w, 3) pixel batch under native = a * pixel + b."""
    m = (pixels.astype(np.float64) * a + b).mean(axis=(1, 2))
    return m @ W[:, :classes].astype(np.float64) + B[:classes]


def save(model: onnx.ModelProto, folder: pathlib.Path, name: str) -> pathlib.Path:
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path
