"""A tiny ONNX classifier whose class scores are known linear functions of its native input:
``score_k = sum(weights[k] * native)`` (Flatten -> MatMul), written with onnx.helper."""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "uint8": TensorProto.UINT8}


def linear_model(folder: pathlib.Path, *, layout: str = "NCHW", dtype: str = "float32", size: int = 12,
                 classes: int = 2, seed: int = 0) -> tuple[pathlib.Path, np.ndarray]:
    """Write the model; return its path and the weights (classes, *native image shape) float32."""
    shape = (3, size, size) if layout == "NCHW" else (size, size, 3)
    weights = np.random.default_rng(seed).normal(size=(classes,) + shape).astype(np.float32)
    nodes, x = [], "image"
    if dtype != "float32":
        nodes.append(helper.make_node("Cast", [x], ["x32"], to=TensorProto.FLOAT))
        x = "x32"
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    nodes.append(helper.make_node("MatMul", ["flat", "W"], ["scores"]))
    init = numpy_helper.from_array(np.ascontiguousarray(weights.reshape(classes, -1).T), "W")
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("image", DTYPES[dtype], ["N", *shape])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", classes])], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = folder / f"linear_{layout}_{dtype}.onnx"
    onnx.save(model, str(path))
    return path, weights


def linear_scores(weights: np.ndarray, native: np.ndarray) -> np.ndarray:
    """(N, classes) float64 scores of a native batch, by hand."""
    return native.reshape(len(native), -1).astype(np.float64) @ weights.reshape(len(weights), -1).T.astype(np.float64)
