"""Reductions and normalisation."""
from __future__ import annotations


import numpy as np

from .. import _util as U
from ..errors import node_error
from . import rule


@rule("BatchNormalization", const=(1, 2, 3, 4))
def _vjp_batchnorm(b, node, gy):
    if U.attr(node, "training_mode", 0):
        raise node_error(node, "training_mode=1 is not supported (inference only)")
    if len([o for o in node.output if o]) > 1:
        raise node_error(node, "running-statistics outputs (training) are not supported")
    scale = b.const_operand(node, 1, "scale")
    var = b.const_operand(node, 4, "input_var")
    for k, what in ((2, "B"), (3, "input_mean")):
        b.const_operand(node, k, what)
    eps = U.attr(node, "epsilon", 1e-5)
    rank = len(b.shape(node.input[0], node))
    k = (scale / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)
    k = k.reshape((-1,) + (1,) * (rank - 2))
    return [b.mul(gy[0], b.const(k, hint="bn_scale")), None, None, None, None]


@rule("ReduceMax", "ReduceMin")
def _vjp_reduce_max(b, node, gy):
    """The gradient goes to the positions that attain the extreme, split evenly among ties
    (torch.amax / amin convention). onnxruntime emits ReduceMax when it inlines Softmax
    (x - max(x)); softmax is shift invariant, so that path contributes ~0 anyway."""
    x, y = node.input[0], node.output[0]
    s = b.shape(x, node)
    rank = len(s)
    axes = U.attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = b.const_operand(node, 1, "axes").tolist()
    if not axes:
        if U.attr(node, "noop_with_empty_axes", 0):
            return [gy[0], None]
        axes = list(range(rank))
    axes = sorted(a % rank for a in axes)
    g = gy[0]
    if not U.attr(node, "keepdims", 1):
        g = b.op("Unsqueeze", [g, b.ints(axes)])
        y = b.op("Unsqueeze", [y, b.ints(axes)])
    hit = b.mask(b.op("Equal", [x, y]))
    count = b.reduce("ReduceSum", hit, axes, keepdims=1)
    return [b.mul(hit, b.op("Div", [g, count])), None]


@rule("ReduceMean", "ReduceSum")
def _vjp_reduce(b, node, gy):
    x = node.input[0]
    s = b.shape(x, node)
    rank = len(s)
    axes = U.attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = b.const_operand(node, 1, "axes").tolist()
    if not axes:
        if U.attr(node, "noop_with_empty_axes", 0):
            return [gy[0]]
        axes = list(range(rank))
    axes = sorted(a % rank for a in axes)
    g = gy[0]
    if not U.attr(node, "keepdims", 1):
        g = b.op("Unsqueeze", [g, b.ints(axes)])
    if node.op_type == "ReduceMean":
        count = np.prod(b.static_dims(x, node, axes))
        g = b.mul(g, b.const(1.0 / float(count)))
    return [b.op("Expand", [g, b.expand_shape_of(x)]), None]


@rule("LRN")
def _vjp_lrn(b, node, gy):
    x = node.input[0]
    s = b.shape(x, node)
    size = U.attr(node, "size")
    alpha = U.attr(node, "alpha", 1e-4)
    beta = U.attr(node, "beta", 0.75)
    bias = U.attr(node, "bias", 1.0)
    channels = b.static_dims(x, node, [1])[0]
    rest = int(np.prod(b.static_dims(x, node, range(2, len(s)))))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    kernel = b.const(np.ones((1, 1, size, 1), np.float32), hint="lrn_k")
    as_image = b.ints([-1, 1, channels, rest])

    def window_sum(t, begin, end):
        t4 = b.op("Reshape", [t, as_image])
        c = b.op("Conv", [t4, kernel], pads=[begin, 0, end, 0], kernel_shape=[size, 1])
        return b.reshape_like(c, x)

    # y = x * S^-beta, S = bias + alpha/size * sum_{window} x^2
    S = b.op("Add", [b.mul(window_sum(b.mul(x, x), lo, hi), b.const(alpha / size)),
                     b.const(bias)])
    s_beta = b.op("Pow", [S, b.const(-beta)])
    g = gy[0]
    t = b.op("Div", [b.mul(b.mul(g, x), s_beta), S])
    # Channel j receives from every window i that contains it: the transposed window.
    back = window_sum(t, hi, lo)
    gx = b.op("Sub", [b.mul(g, s_beta),
                      b.mul(b.mul(x, back), b.const(2.0 * beta * alpha / size))])
    return [gx]


@rule("Softmax")
def _vjp_softmax(b, node, gy):
    y = node.output[0]
    rank = len(b.shape(y, node))
    axis = U.attr(node, "axis", -1) % rank
    g = gy[0]
    dot = b.reduce("ReduceSum", b.mul(g, y), [axis], keepdims=1)
    return [b.mul(y, b.op("Sub", [g, dot]))]


@rule("LogSoftmax")
def _vjp_log_softmax(b, node, gy):
    y = node.output[0]
    rank = len(b.shape(y, node))
    axis = U.attr(node, "axis", -1) % rank
    g = gy[0]
    tot = b.reduce("ReduceSum", g, [axis], keepdims=1)
    return [b.op("Sub", [g, b.mul(b.op("Exp", [y]), tot)])]


@rule("LayerNormalization", const=(1, 2))
def _vjp_layer_norm(b, node, gy):
    if any(go is not None for go in gy[1:]):
        raise node_error(node, "gradients through the Mean / InvStdDev outputs are not "
                         "supported")
    x = node.input[0]
    rank = len(b.shape(x, node))
    axis = U.attr(node, "axis", -1) % rank
    eps = U.attr(node, "epsilon", 1e-5)
    scale = b.const_operand(node, 1, "Scale")
    if len(node.input) > 2 and node.input[2]:
        b.const_operand(node, 2, "B")
    axes = list(range(axis, rank))
    mu = b.reduce("ReduceMean", x, axes)
    xc = b.op("Sub", [x, mu])
    var = b.reduce("ReduceMean", b.mul(xc, xc), axes)
    rstd = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.const(eps)])])])
    xhat = b.mul(xc, rstd)
    gh = b.mul(gy[0], b.const(scale.astype(np.float32), hint="ln_scale"))
    m1 = b.reduce("ReduceMean", gh, axes)
    m2 = b.reduce("ReduceMean", b.mul(gh, xhat), axes)
    inner = b.op("Sub", [b.op("Sub", [gh, m1]), b.mul(xhat, m2)])
    return [b.mul(rstd, inner), None, None]
