"""Rules that measure onnxruntime's own behaviour on a probe graph (interpolation matrices, pool divisors)."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from .. import _util as U
from ...runtime import make_session
from ..errors import node_error


def avgpool_weights(b, node, in_sizes, out_sizes, kernel, strides, dilations, begin):
    """1/divisor per output window, as the runtime itself computes it.

    AveragePool(ones) gives valid/divisor per window (valid = input elements covered);
    the valid counts follow from the geometry, so 1/divisor = AveragePool(ones)/valid.
    This honours count_include_pad and ceil_mode overhang exactly as onnxruntime does.
    """
    rank = len(kernel)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["y"], **attrs)], "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1] + list(in_sizes))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)],
                              ir_version=U.PROBE_IR_VERSION)
    sess = make_session(probe, "cpu")
    avg = sess.run(None, {"x": np.ones([1, 1] + list(in_sizes), np.float32)})[0][0, 0]
    if list(avg.shape) != list(out_sizes):
        raise node_error(node, f"probe output {avg.shape} differs from inferred {out_sizes}")
    valid = np.ones(out_sizes, np.float64)
    for a in range(rank):
        starts = np.arange(out_sizes[a]) * strides[a] - begin[a]
        taps = starts[:, None] + np.arange(kernel[a])[None, :] * dilations[a]
        count = ((taps >= 0) & (taps < in_sizes[a])).sum(1).astype(np.float64)
        shape = [1] * rank
        shape[a] = out_sizes[a]
        valid = valid * count.reshape(shape)
    return avg / np.maximum(valid, 1.0)


def resize_matrices(b, node, s, ys) -> dict[int, np.ndarray]:
    """Per-axis interpolation matrices [out, in], measured by running the node itself."""
    if any(d is None for d in s[1:]) or any(d is None for d in ys[1:]):
        raise node_error(node, "Resize needs static non-batch sizes")
    axes = [a for a in range(1, len(s)) if s[a] != ys[a]]
    if s[0] is not None and s[0] != ys[0]:
        raise node_error(node, "resizing the batch axis is not supported")
    extra = {}
    for k, name in enumerate(node.input[1:], start=1):
        if not name:
            continue
        if k == 3 and b.value(name) is None:
            # Output sizes computed at run time from the batch: the static ones suffice.
            extra[name] = np.array([1] + list(ys[1:]), np.int64)
        else:
            extra[name] = b.const_operand(node, k, ["", "roi", "scales", "sizes"][k])
    shape1 = [1] + list(s[1:])
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape1)]
    inits = [numpy_helper.from_array(v, n) for n, v in extra.items()]
    probe_node = helper.make_node("Resize", ["x"] + list(node.input[1:]), ["y"],
                                  **{a.name: helper.get_attribute_value(a)
                                     for a in node.attribute})
    graph = helper.make_graph([probe_node], "resize", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=inits)
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)],
                              ir_version=U.PROBE_IR_VERSION)
    sess = make_session(probe, "cpu")
    mats = {}
    for a in axes:
        d = s[a]
        mat = np.zeros((ys[a], d), np.float32)
        for j in range(d):
            e = np.ones(shape1, np.float32)
            sl = [slice(None)] * len(shape1)
            sl[a] = slice(None)
            basis = np.zeros(d, np.float32)
            basis[j] = 1.0
            shp = [1] * len(shape1)
            shp[a] = d
            e = e * basis.reshape(shp)
            out = sess.run(None, {"x": e})[0]
            if list(out.shape[1:]) != list(ys[1:]):
                # e.g. float scales whose product rounds differently in onnx shape
                # inference and in onnxruntime (5 * 1.8f: 8 vs 9)
                raise node_error(node, f"runtime output shape {list(out.shape[1:])} differs "
                                 f"from the inferred {list(ys[1:])}; pass 'sizes' instead "
                                 "of 'scales'")
            line = [0] * len(shape1)
            line[a] = slice(None)
            mat[:, j] = out[tuple(line)]
        mats[a] = mat
    # The product of per-axis matrices must reproduce the node (separable modes only).
    rng = np.random.default_rng(0)
    r = rng.standard_normal(shape1).astype(np.float32)
    want = sess.run(None, {"x": r})[0]
    got = r
    for a, mat in mats.items():
        got = np.moveaxis(np.tensordot(mat, np.moveaxis(got, a, 0), axes=(1, 0)), 0, a)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise node_error(node, "this Resize mode is not separable per axis; no backward rule")
    return mats
