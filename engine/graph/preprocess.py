"""Fuse declared preprocessing into the graph, so gradients are with respect to raw pixels."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PIXELS = "pixels"
_CAST = {np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.float32): None}


def fuse_preprocessing(model: onnx.ModelProto, input_name: str, spec) -> onnx.ModelProto:
    """Return a copy of ``model`` whose input is ``pixels``: float32 (N, h, w, 3) raw RGB pixels.

    The prepended nodes compute ``native = scale * pixels[..., channel_source] + offset``,
    transpose to NCHW when the model wants it and cast to float16 for half-precision models,
    i.e. exactly :meth:`onnxplain.model.Model.to_native`. ``spec`` is an ``InputSpec``.
    """
    if np.dtype(spec.dtype) not in _CAST:
        raise ValueError(f"cannot fuse preprocessing for input dtype {np.dtype(spec.dtype)}; gradients need a "
                         "float input.")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    h, w = spec.size
    old = [i for i in g.input if i.name == input_name][0]
    batch = old.type.tensor_type.shape.dim[0]
    new_input = helper.make_tensor_value_info(PIXELS, TensorProto.FLOAT, ["N", h, w, 3])
    if batch.HasField("dim_value"):
        new_input.type.tensor_type.shape.dim[0].dim_value = batch.dim_value
    prefix = "onnxplain_pre"
    nodes, inits, cur = [], [], PIXELS
    if not np.array_equal(spec.channel_source, [0, 1, 2]):
        inits.append(numpy_helper.from_array(np.asarray(spec.channel_source, np.int64), f"{prefix}_channels"))
        nodes.append(helper.make_node("Gather", [cur, f"{prefix}_channels"], [f"{prefix}_rgb"], axis=3,
                                      name=f"{prefix}_Gather"))
        cur = f"{prefix}_rgb"
    inits.append(numpy_helper.from_array(np.asarray(spec.scale, np.float32), f"{prefix}_scale"))
    inits.append(numpy_helper.from_array(np.asarray(spec.offset, np.float32), f"{prefix}_offset"))
    nodes.append(helper.make_node("Mul", [cur, f"{prefix}_scale"], [f"{prefix}_scaled"], name=f"{prefix}_Mul"))
    cast = _CAST[np.dtype(spec.dtype)]
    last = f"{prefix}_native" if (spec.layout == "NCHW" or cast is not None) else input_name
    nodes.append(helper.make_node("Add", [f"{prefix}_scaled", f"{prefix}_offset"], [last], name=f"{prefix}_Add"))
    cur = last
    if spec.layout == "NCHW":
        nxt = input_name if cast is None else f"{prefix}_nchw"
        nodes.append(helper.make_node("Transpose", [cur, ], [nxt], perm=[0, 3, 1, 2], name=f"{prefix}_Transpose"))
        cur = nxt
    if cast is not None:
        nodes.append(helper.make_node("Cast", [cur], [input_name], to=cast, name=f"{prefix}_Cast"))
    g.input.remove(old)
    g.input.insert(0, new_input)
    g.initializer.extend(inits)
    for n in reversed(nodes):
        g.node.insert(0, n)
    return out
