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
    x = node.input[0]
    axes = reduce_axes(b, node)
    if axes is None:
        return [gy[0], None]
    g, y = _kept(b, node, gy[0], axes), _kept(b, node, node.output[0], axes)
    hit = b.mask(b.op("Equal", [x, y]))
    count = b.reduce("ReduceSum", hit, axes, keepdims=1)
    return [b.mul(hit, b.op("Div", [g, count])), None]


@rule("ReduceMean", "ReduceSum")
def _vjp_reduce(b, node, gy):
    x = node.input[0]
    axes = reduce_axes(b, node)
    if axes is None:
        return [gy[0]]
    g = _kept(b, node, gy[0], axes)
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


def reduce_axes(b, node) -> list[int] | None:
    """The sorted axes a Reduce* node reduces, or None for the no-op (empty axes with
    ``noop_with_empty_axes``). Axes come from the attribute (opset < 18) or input 1."""
    rank = len(b.shape(node.input[0], node))
    axes = U.attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = b.const_operand(node, 1, "axes").tolist()
    if not axes:
        if U.attr(node, "noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    return sorted(a % rank for a in axes)


def _kept(b, node, t: str, axes) -> str:
    """A reduced tensor with its reduced axes restored (keepdims=1 form)."""
    if U.attr(node, "keepdims", 1):
        return t
    return b.op("Unsqueeze", [t, b.ints(axes)])


# d y / d x for y = reduce(x) over the axes, as math on x, y (kept dims) and the builder.
def _l1_d(b, x, y, axes):
    return x.Sign()


def _l2_d(b, x, y, axes):
    # x / |x|_2; an all-zero slice (y == 0) gets 0 (torch.linalg.norm's subgradient)
    return x / (y + y.eq(0.0).mask())


def _logsumexp_d(b, x, y, axes):
    return (x - y).Exp()


def _sum_square_d(b, x, y, axes):
    return 2.0 * x


def _prod_d(b, x, y, axes):
    """prod of the others: y / x where x != 0; at a zero, the product of the nonzeros if it
    is the slice's only zero, else 0 (exact, no 0/0)."""
    zero = x.eq(0.0)
    nonzero = x.where(zero.Not(), 1.0)
    p_nz = b.e(b.op("ReduceProd", [nonzero.name], axes=axes, keepdims=1) if b.opset < 18
               else b.op("ReduceProd", [nonzero.name, b.ints(axes)], keepdims=1))
    n_zero = b.e(b.reduce("ReduceSum", zero.mask().name, axes, keepdims=1))
    at_zero = p_nz.where(n_zero.eq(1.0), 0.0)
    return at_zero.where(zero, y / nonzero)


REDUCE = {"ReduceL1": _l1_d, "ReduceL2": _l2_d, "ReduceLogSumExp": _logsumexp_d,
          "ReduceSumSquare": _sum_square_d, "ReduceProd": _prod_d}


@rule(*REDUCE)
def _vjp_reduce_smooth(b, node, gy):
    axes = reduce_axes(b, node)
    x = b.e(node.input[0])
    if axes is None:
        # empty axes with noop_with_empty_axes=1: each output is the reduction of its one
        # element (onnxruntime and onnx's reference agree: L1, L2 -> |x|, SumSquare -> x^2,
        # LogSumExp, Prod -> x), so the derivative is the per-element one
        if node.op_type in ("ReduceLogSumExp", "ReduceProd"):
            return [gy[0], None]
        y = b.e(node.output[0])
        return [(b.e(gy[0]) * REDUCE[node.op_type](b, x, y, [])).name, None]
    g = b.e(_kept(b, node, gy[0], axes))
    y = b.e(_kept(b, node, node.output[0], axes))
    d = REDUCE[node.op_type](b, x, y, axes)
    return [(g * d).name, None]


def _normalize_last(b, x: str, g: str, axes, eps: float) -> str:
    """Input gradient of (x - mean) / sqrt(var + eps) over ``axes``, given the gradient g of
    the normalised tensor: rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    mu = b.reduce("ReduceMean", x, axes)
    xc = b.op("Sub", [x, mu])
    var = b.reduce("ReduceMean", b.mul(xc, xc), axes)
    rstd = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.const(eps)])])])
    xhat = b.mul(xc, rstd)
    m1 = b.reduce("ReduceMean", g, axes)
    m2 = b.reduce("ReduceMean", b.mul(g, xhat), axes)
    return b.mul(rstd, b.op("Sub", [b.op("Sub", [g, m1]), b.mul(xhat, m2)]))


def _channel_vector(value: np.ndarray, rank: int) -> np.ndarray:
    return np.asarray(value, np.float32).reshape((-1,) + (1,) * (rank - 2))


@rule("InstanceNormalization", const=(1, 2))
def _vjp_instance_norm(b, node, gy):
    x = node.input[0]
    rank = len(b.shape(x, node))
    scale = b.const_operand(node, 1, "scale")
    b.const_operand(node, 2, "B")
    gh = b.mul(gy[0], b.const(_channel_vector(scale, rank), hint="in_scale"))
    return [_normalize_last(b, x, gh, list(range(2, rank)), U.attr(node, "epsilon", 1e-5)),
            None, None]


@rule("GroupNormalization", const=(1, 2))
def _vjp_group_norm(b, node, gy):
    """Opset 18-20: scale/bias per group; opset 21+: per channel."""
    x = node.input[0]
    s = b.shape(x, node)
    rank = len(s)
    groups = U.attr(node, "num_groups")
    channels = b.static_dims(x, node, [1])[0]
    scale = np.asarray(b.const_operand(node, 1, "scale"), np.float32).reshape(-1)
    b.const_operand(node, 2, "bias")
    if scale.size == groups and groups != channels:
        scale = np.repeat(scale, channels // groups)
    gh = b.mul(gy[0], b.const(_channel_vector(scale, rank), hint="gn_scale"))
    grouped = b.ints([0, groups, -1])
    gx = _normalize_last(b, b.op("Reshape", [x, grouped]), b.op("Reshape", [gh, grouped]), [2],
                         U.attr(node, "epsilon", 1e-5))
    return [b.reshape_like(gx, x), None, None]


@rule("LpNormalization")
def _vjp_lp_norm(b, node, gy):
    """y = x / |x|_p along the axis: dx = (g - d|x|_p/dx * sum(g * y)) / |x|_p."""
    x, y, g = b.e(node.input[0]), b.e(node.output[0]), b.e(gy[0])
    rank = len(b.shape(node.input[0], node))
    axis = U.attr(node, "axis", -1) % rank
    p = U.attr(node, "p", 2)
    if p not in (1, 2):
        raise node_error(node, f"p={p} is not supported (ONNX allows 1 and 2)")
    if p == 2:
        norm = b.e(b.op("ReduceL2", [x.name], axes=[axis], keepdims=1) if b.opset < 18
                   else b.op("ReduceL2", [x.name, b.ints([axis])], keepdims=1))
        dnorm = y
    else:
        norm = b.e(b.reduce("ReduceSum", x.Abs().name, [axis], keepdims=1))
        dnorm = x.Sign()
    dot = b.e(b.reduce("ReduceSum", (g * y).name, [axis], keepdims=1))
    return [((g - dnorm * dot) / norm).name]
