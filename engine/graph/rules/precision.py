"""Precision: float16 / bfloat16 widening to float32, Cast, and QDQ fake quantization."""
from __future__ import annotations


import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from .. import _util as U
from ..errors import node_error
from . import rule


_HALF_TYPES = (TensorProto.FLOAT16, TensorProto.BFLOAT16)


def widen_float16(model: ModelProto) -> ModelProto:
    """A copy computing in float32 where the model computes in float16 / bfloat16.

    Reverse mode runs in float32 (every rule emits float32 constants; onnxruntime's CPU
    provider runs most float16 ops through inserted casts anyway). Initializers, Constant
    / ConstantOfShape values, ``Cast(to=float16)`` and float16 graph inputs/outputs become
    float32; half values widen exactly, so the gradient is that of the float32 network
    with the float16 weights. Activations are no longer rounded to float16 between ops:
    outputs differ from the float16 model by float16 rounding (~1e-3 relative) and a
    rectifier mask can flip where an activation sits within rounding of a threshold.
    Returns the model itself when it has nothing in half precision.
    """
    g = model.graph

    def half_tensor(t: TensorProto) -> bool:
        return t.data_type in _HALF_TYPES

    def widen(t: TensorProto) -> None:
        arr = numpy_helper.to_array(t)
        if t.data_type == TensorProto.BFLOAT16 and arr.dtype != np.float32:
            arr = _bfloat16_to_float32(t)
        t.CopyFrom(numpy_helper.from_array(np.asarray(arr, np.float32), t.name))

    def has_half(graph: onnx.GraphProto) -> bool:
        vis = list(graph.input) + list(graph.output) + list(graph.value_info)
        if any(v.type.tensor_type.elem_type in _HALF_TYPES for v in vis):
            return True
        if any(half_tensor(t) for t in graph.initializer):
            return True
        for n in graph.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR and half_tensor(a.t):
                    return True
                if n.op_type == "Cast" and a.name == "to" and a.i in _HALF_TYPES:
                    return True
        return False

    if not has_half(g):
        return model
    m = U.copy_model(model)
    g = m.graph
    for t in g.initializer:
        if half_tensor(t):
            widen(t)
    for n in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in n.attribute):
            raise node_error(n, "float16 graphs with subgraphs are not supported")
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and half_tensor(a.t):
                widen(a.t)
            elif a.name in ("to", "dtype") and a.type == onnx.AttributeProto.INT \
                    and a.i in _HALF_TYPES:
                a.i = TensorProto.FLOAT
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type in _HALF_TYPES:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    g.ClearField("value_info")
    # Casts of constants (onnxruntime inserts them around float16 Clip bounds etc.) become
    # constants again, so rules that need constant operands still see them.
    inits = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output}
    kept = []
    for n in U.topo_sort(g):
        if (n.op_type == "Cast" and n.input[0] in inits and n.output[0] not in outputs):
            value = numpy_helper.to_array(inits[n.input[0]])
            t = numpy_helper.from_array(value.astype(U.np_dtype(U.attr(n, "to"))), n.output[0])
            g.initializer.append(t)
            inits[t.name] = t
            continue
        kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    inits_kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits_kept)
    return m


def _bfloat16_to_float32(t: TensorProto) -> np.ndarray:
    raw = np.asarray(numpy_helper.to_array(t))
    if raw.dtype == np.float32:
        return raw
    bits = raw.view(np.uint16).astype(np.uint32) << 16
    return bits.view(np.float32).reshape(tuple(t.dims))


_QUANT_RANGE = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255),
                TensorProto.INT16: (-32768, 32767), TensorProto.UINT16: (0, 65535),
                TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15)}


def _quant_params(b, node):
    """(scale, zero point as float, axis, output type) of a Q/DQ node; constants only."""
    scale = b.const_operand(node, 1, "scale").astype(np.float64)
    if len(node.input) > 2 and node.input[2]:
        zp_arr = b.const_operand(node, 2, "zero_point")
        zp = zp_arr.astype(np.float64)
        qtype = helper.np_dtype_to_tensor_dtype(zp_arr.dtype)
    else:
        zp = np.zeros_like(scale)
        qtype = U.attr(node, "output_dtype", 0) or TensorProto.UINT8
    if U.attr(node, "block_size", 0):
        raise node_error(node, "blocked quantization is not supported")
    return scale, zp, U.attr(node, "axis", 1), qtype


def _quant_broadcast(b, node, x: str, value: np.ndarray, axis: int) -> np.ndarray:
    """A per-tensor or per-axis Q/DQ parameter shaped to broadcast against x."""
    if value.ndim == 0 or value.size == 1:
        return value.reshape(())
    rank = len(b.shape(x, node))
    shape = [1] * rank
    shape[axis % rank] = value.size
    return value.reshape(shape)


def _same_quant(a: NodeProto, c: NodeProto, b) -> bool:
    if len(a.input) != len(c.input) or U.attr(a, "axis", 1) != U.attr(c, "axis", 1):
        return False
    for k in range(1, len(a.input)):
        va, vc = b.value(a.input[k]), b.value(c.input[k])
        if va is None or vc is None or va.dtype != vc.dtype or not np.array_equal(va, vc):
            return False
    return True


def _paired_quantize(b, q: NodeProto) -> bool:
    """Q whose every consumer is a DequantizeLinear with the same parameters (fake quant)."""
    users = b.consumers.get(q.output[0], [])
    outputs = {o.name for o in b.g.output}
    return (bool(users) and q.output[0] not in outputs
            and all(u.op_type == "DequantizeLinear" and u.input[0] == q.output[0]
                    and _same_quant(q, u, b) for u in users))


@rule("DequantizeLinear", const=(1, 2))
def _vjp_dequantize(b, node, gy):
    """y = (q - zero_point) * scale: dy/dq = scale.

    When q comes from a QuantizeLinear with the same parameters (a fake-quant pair), the
    gradient is handed to the QuantizeLinear in units of x instead (scale and 1/scale
    cancel exactly), see :func:`_vjp_quantize`.
    """
    if b.needs(node, 1) or (len(node.input) > 2 and b.needs(node, 2)):
        raise node_error(node, "scale / zero point depend on the differentiated input")
    q = b.producers.get(node.input[0])
    if q is not None and q.op_type == "QuantizeLinear" and _paired_quantize(b, q):
        return [gy[0], None, None]
    scale, _, axis, _ = _quant_params(b, node)
    s = _quant_broadcast(b, node, node.input[0], scale, axis)
    return [b.mul(gy[0], b.const(s.astype(np.float32), hint="dq_scale")), None, None]


@rule("QuantizeLinear", const=(1, 2))
def _vjp_quantize(b, node, gy):
    """Straight-through estimator (STE) for the rounding, exact derivative of the saturation.

    q = saturate(round(x / scale) + zero_point) is differentiated as if it were
    clamp(x / scale + zero_point, qmin, qmax): the rounding passes the gradient unchanged
    (the STE convention of quantization-aware training) and the gradient is blocked where
    x lies outside the representable range [(qmin - zp) * scale, (qmax - zp) * scale]
    (strict bounds, like the Clip rule). That saturation matters: onnxruntime's quantizer
    drops a ReLU / ReLU6 whose range the following QuantizeLinear covers, so the range
    test is the rectifier mask of the float model. (torch.fake_quantize_* tests the
    rounded value instead, which lets the gradient through up to half a step beyond the
    range, i.e. through slightly negative pre-ReLU activations; on EfficientNet-Lite0 int8
    that decorrelates the input gradient from the float model's.)
    """
    if b.needs(node, 1) or (len(node.input) > 2 and b.needs(node, 2)):
        raise node_error(node, "scale / zero point depend on the differentiated input")
    x = node.input[0]
    scale, zp, axis, qtype = _quant_params(b, node)
    if qtype not in _QUANT_RANGE:
        raise node_error(node, f"quantized type {TensorProto.DataType.Name(qtype)} "
                         "is not supported")
    qmin, qmax = _QUANT_RANGE[qtype]
    s = _quant_broadcast(b, node, x, scale, axis)
    z = _quant_broadcast(b, node, x, zp, axis)
    lo = ((qmin - z) * s).astype(np.float32)
    hi = ((qmax - z) * s).astype(np.float32)
    inside = b.op("And", [b.op("Greater", [x, b.const(lo, hint="q_lo")]),
                          b.op("Less", [x, b.const(hi, hint="q_hi")])])
    g = b.mul(gy[0], b.mask(inside))
    if not _paired_quantize(b, node):
        g = b.mul(g, b.const((1.0 / s).astype(np.float32), hint="q_inv_scale"))
    return [g, None, None]


@rule("Cast")
def _vjp_cast(b, node, gy):
    src = b.shapes.get(node.input[0], (None, 0))[1]
    if src not in U.FLOAT_TYPES:
        return [None]
    dst = U.attr(node, "to")
    return [gy[0] if dst == src else b.op("Cast", [gy[0]], to=src)]
