"""Elementwise rules: activations, unary math, broadcasting arithmetic."""
from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from .. import _util as U
from . import rule


@rule("Identity", "Dropout")
def _vjp_identity(b, node, gy):
    return [gy[0]]


@rule("Relu")
def _vjp_relu(b, node, gy):
    g = gy[0]
    mode = b.relu_mode if "Relu" in b.rectifiers else "standard"
    if mode == "deconvnet":
        return [b.op("Relu", [g])]
    # (y > 0) == (x > 0); reading y keeps Conv -> Relu fusable.
    mask = _open_interval_mask(b, node.output[0], 0.0, None)
    if mode == "guided":
        g = b.op("Relu", [g])
    return [b.mul(g, mask)]


@rule("Clip", const=(1, 2))
def _vjp_clip(b, node, gy):
    lo = b.const_operand(node, 1, "min") if len(node.input) > 1 and node.input[1] else None
    hi = b.const_operand(node, 2, "max") if len(node.input) > 2 and node.input[2] else None
    g = gy[0]
    # The mask is read from the output (y > lo iff x > lo, y < hi iff x < hi), so the
    # forward Conv -> Clip pair stays fusable in onnxruntime.
    x = node.output[0]
    mode = "standard"
    if "Clip" in b.rectifiers and lo is not None and float(np.asarray(lo)) == 0.0:
        mode = b.relu_mode
    if mode == "deconvnet":
        return [b.op("Relu", [g])]
    if mode == "guided":
        g = b.op("Relu", [g])
    fast = _open_interval_mask(b, x, lo, hi)
    if fast is not None:
        return [b.mul(g, fast)]
    conds = []
    if lo is not None:
        conds.append(b.op("Greater", [x, b.const(np.asarray(lo, np.float32))]))
    if hi is not None:
        conds.append(b.op("Less", [x, b.const(np.asarray(hi, np.float32))]))
    if not conds:
        return [g]
    # Mul by a cast mask: Where is about twice as slow, Sign(...) tricks slower still.
    cond = conds[0] if len(conds) == 1 else b.op("And", conds)
    return [b.mul(g, b.mask(cond))]


_BIG = 2.0 ** 100
_BIG_LIMIT = 2.0 ** 27  # |bound| below this keeps BIG * bound finite


def _open_interval_mask(b, y: str, lo, hi) -> str | None:
    """Float 0/1 mask of lo < y < hi for a rectifier output y (lo <= y <= hi), or None.

    HardSigmoid(y; a, c) = clip(a*y + c, 0, 1) with a = +-2**100: clip(B*(y - lo)) is 0 at
    y == lo and 1 from y >= lo + 2**-100 (for lo == 0; an ulp of lo above it otherwise),
    likewise below hi. a*y is exact (a power of two) and the one rounding of a*y + c
    cannot turn a nonzero difference into zero, so the mask is exact 0/1 outside that
    2**-100 sliver. Why not Greater/Less/And/Cast: onnxruntime runs HardSigmoid and Mul in
    its blocked NCHWc layout next to the Convs, the comparisons only in plain NCHW (two
    reorders out, one back, five passes per rectifier). With ``b.step_masks == "compare"``
    (providers other than ORT's CPU one: OpenVINO gets the 2**100 HardSigmoid wrong) the
    mask is ``Cast(Greater(y, lo) And Less(y, hi))``, exact everywhere.
    """
    if b.step_masks == "compare":
        conds = [b.op(op, [y, b.const(np.asarray(bound, np.float32))])
                 for bound, op in ((lo, "Greater"), (hi, "Less")) if bound is not None]
        if not conds:
            return None
        return b.mask(conds[0] if len(conds) == 1 else b.op("And", conds))
    parts = []
    for bound, sign in ((lo, 1.0), (hi, -1.0)):
        if bound is None:
            continue
        bound = float(np.asarray(bound))
        if not abs(bound) < _BIG_LIMIT:
            return None
        parts.append(b.op("HardSigmoid", [y], alpha=sign * _BIG, beta=-sign * _BIG * bound))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b.mul(parts[0], parts[1])


@rule("LeakyRelu")
def _vjp_leaky_relu(b, node, gy):
    alpha = U.attr(node, "alpha", 0.01)
    pos = b.mask(b.op("Greater", [node.input[0], b.const(0.0)]))
    slope = b.op("Add", [b.mul(pos, b.const(1.0 - alpha)), b.const(alpha)])
    return [b.mul(gy[0], slope)]


@rule("PRelu", const=(1,))
def _vjp_prelu(b, node, gy):
    b.const_operand(node, 1, "slope")
    x = node.input[0]
    pos = b.mask(b.op("Greater", [x, b.const(0.0)]))
    neg = b.op("Sub", [b.const(1.0), pos])
    slope = b.op("Add", [pos, b.mul(neg, node.input[1])])
    return [b.mul(gy[0], slope), None]


@rule("Sigmoid")
def _vjp_sigmoid(b, node, gy):
    y = node.output[0]
    d = b.mul(y, b.op("Sub", [b.const(1.0), y]))
    return [b.mul(gy[0], d)]


@rule("Tanh")
def _vjp_tanh(b, node, gy):
    y = node.output[0]
    d = b.op("Sub", [b.const(1.0), b.mul(y, y)])
    return [b.mul(gy[0], d)]


@rule("HardSigmoid")
def _vjp_hard_sigmoid(b, node, gy):
    # alpha where 0 < y < 1; the mask read from y as HardSigmoids keeps NCHWc layout
    alpha = U.attr(node, "alpha", 0.2)
    inside = _open_interval_mask(b, node.output[0], 0.0, 1.0)
    return [b.mul(b.mul(gy[0], b.const(alpha)), inside)]


@rule("HardSwish")
def _vjp_hard_swish(b, node, gy):
    """torch: 0 for x < -3, x/3 + 1/2 for -3 <= x <= 3, 1 above (the points x = +-3
    themselves have measure zero). Written with HardSigmoid step masks and Mul/Add only,
    which onnxruntime keeps in its blocked NCHWc layout (Greater/Where/Cast force two
    layout reorders per activation; 41x gradient/forward on MobileNetV3-Small)."""
    x = node.input[0]
    inside = _open_interval_mask(b, x, -3.0, 3.0)
    above = _open_interval_mask(b, x, 3.0, None)
    mid = b.op("Add", [b.mul(x, b.const(1.0 / 3.0)), b.const(0.5)])
    d = b.op("Add", [b.mul(mid, inside), above])
    return [b.mul(gy[0], d)]


@rule("Erf")
def _vjp_erf(b, node, gy):
    x = node.input[0]
    e = b.op("Exp", [b.op("Neg", [b.mul(x, x)])])
    return [b.mul(gy[0], b.mul(e, b.const(2.0 / math.sqrt(math.pi))))]


@rule("Gelu")
def _vjp_gelu(b, node, gy):
    x = node.input[0]
    approx = U.decode(U.attr(node, "approximate", "none"))
    if approx == "tanh":
        k = math.sqrt(2.0 / math.pi)
        x2 = b.mul(x, x)
        inner = b.mul(b.mul(x, b.op("Add", [b.const(1.0), b.mul(x2, b.const(0.044715))])),
                      b.const(k))
        t = b.op("Tanh", [inner])
        du = b.mul(b.op("Add", [b.const(1.0), b.mul(x2, b.const(3 * 0.044715))]), b.const(k))
        sech2 = b.op("Sub", [b.const(1.0), b.mul(t, t)])
        d = b.op("Add", [b.mul(b.op("Add", [b.const(1.0), t]), b.const(0.5)),
                         b.mul(b.mul(x, b.const(0.5)), b.mul(sech2, du))])
    else:
        cdf = b.mul(b.op("Add", [b.const(1.0), b.op("Erf", [b.mul(x, b.const(1 / math.sqrt(2)))])]),
                    b.const(0.5))
        pdf = b.mul(b.op("Exp", [b.mul(b.mul(x, x), b.const(-0.5))]),
                    b.const(1 / math.sqrt(2 * math.pi)))
        d = b.op("Add", [cdf, b.mul(x, pdf)])
    return [b.mul(gy[0], d)]


@rule("Exp")
def _vjp_exp(b, node, gy):
    return [b.mul(gy[0], node.output[0])]


@rule("Log")
def _vjp_log(b, node, gy):
    return [b.op("Div", [gy[0], node.input[0]])]


@rule("Sqrt")
def _vjp_sqrt(b, node, gy):
    return [b.op("Div", [b.mul(gy[0], b.const(0.5)), node.output[0]])]


@rule("Reciprocal")
def _vjp_reciprocal(b, node, gy):
    y = node.output[0]
    return [b.op("Neg", [b.mul(gy[0], b.mul(y, y))])]


@rule("Neg")
def _vjp_neg(b, node, gy):
    return [b.op("Neg", [gy[0]])]


@rule("Abs")
def _vjp_abs(b, node, gy):
    return [b.mul(gy[0], b.op("Sign", [node.input[0]]))]


@rule("Sin")
def _vjp_sin(b, node, gy):
    return [b.mul(gy[0], b.op("Cos", [node.input[0]]))]


@rule("Cos")
def _vjp_cos(b, node, gy):
    return [b.op("Neg", [b.mul(gy[0], b.op("Sin", [node.input[0]]))])]


@rule("Softplus")
def _vjp_softplus(b, node, gy):
    return [b.mul(gy[0], b.op("Sigmoid", [node.input[0]]))]


@rule("Softsign")
def _vjp_softsign(b, node, gy):
    d = b.op("Add", [b.const(1.0), b.op("Abs", [node.input[0]])])
    return [b.op("Div", [gy[0], b.mul(d, d)])]


@rule("Elu")
def _vjp_elu(b, node, gy):
    alpha = U.attr(node, "alpha", 1.0)
    x, y = node.input[0], node.output[0]
    pos = b.mask(b.op("Greater", [x, b.const(0.0)]))
    neg = b.op("Sub", [b.const(1.0), pos])
    d = b.op("Add", [pos, b.mul(neg, b.op("Add", [y, b.const(alpha)]))])
    return [b.mul(gy[0], d)]


@rule("Add", "Sub", grads=(0, 1))
def _vjp_add(b, node, gy):
    g, y = gy[0], node.output[0]
    ga = b.unbroadcast(g, y, node.input[0]) if b.needs(node, 0) else None
    gb = None
    if b.needs(node, 1):
        gb = b.unbroadcast(g, y, node.input[1])
        if node.op_type == "Sub":
            gb = b.op("Neg", [gb])
    return [ga, gb]


@rule("Sum", grads="all")
def _vjp_sum(b, node, gy):
    return [b.unbroadcast(gy[0], node.output[0], i) if b.needs(node, k) else None
            for k, i in enumerate(node.input)]


@rule("Mean", grads="all")
def _vjp_mean(b, node, gy):
    g = b.mul(gy[0], b.const(1.0 / len(node.input)))
    return [b.unbroadcast(g, node.output[0], i) if b.needs(node, k) else None
            for k, i in enumerate(node.input)]


@rule("Mul", grads=(0, 1))
def _vjp_mul(b, node, gy):
    g, y = gy[0], node.output[0]
    a, c = node.input[0], node.input[1]
    ga = b.unbroadcast(b.mul(g, c), y, a) if b.needs(node, 0) else None
    gc = b.unbroadcast(b.mul(g, a), y, c) if b.needs(node, 1) else None
    return [ga, gc]


@rule("Div", grads=(0, 1))
def _vjp_div(b, node, gy):
    g, y = gy[0], node.output[0]
    a, c = node.input[0], node.input[1]
    ga = gc = None
    if b.needs(node, 0):
        inv = b.value(c)
        if inv is not None and inv.dtype.kind == "f":
            ga = b.mul(g, b.const((1.0 / inv).astype(np.float32)))
        else:
            ga = b.op("Div", [g, c])
        ga = b.unbroadcast(ga, y, a)
    if b.needs(node, 1):
        gc = b.op("Neg", [b.op("Div", [b.mul(g, y), c])])
        gc = b.unbroadcast(gc, y, c)
    return [ga, gc]


@rule("Pow", grads=(0, 1))
def _vjp_pow(b, node, gy):
    g, y = gy[0], node.output[0]
    x, e = node.input[0], node.input[1]
    gx = ge = None
    if b.needs(node, 0):
        ev = b.value(e)
        if ev is not None and ev.size == 1:
            ef = float(ev.reshape(-1)[0])
            if ef == 2.0:
                d = b.mul(x, b.const(2.0))
            elif ef == 1.0:
                d = None
            else:
                d = b.mul(b.op("Pow", [x, b.const(ef - 1.0)]), b.const(ef))
        else:
            ecast = e if b.shapes.get(e, (0, 1))[1] == TensorProto.FLOAT else b.op(
                "Cast", [e], to=TensorProto.FLOAT)
            d = b.mul(b.op("Pow", [x, b.op("Sub", [ecast, b.const(1.0)])]), ecast)
        gx = b.unbroadcast(g if d is None else b.mul(g, d), y, x)
    if b.needs(node, 1):
        ge = b.unbroadcast(b.mul(b.mul(g, y), b.op("Log", [x])), y, e)
    return [gx, ge]


@rule("Where", grads=(1, 2))
def _vjp_where(b, node, gy):
    g, y = gy[0], node.output[0]
    c = node.input[0]
    zero = b.const(0.0)
    ga = b.unbroadcast(b.op("Where", [c, g, zero]), y, node.input[1]) if b.needs(node, 1) else None
    gb = b.unbroadcast(b.op("Where", [c, zero, g]), y, node.input[2]) if b.needs(node, 2) else None
    return [None, ga, gb]


@rule("Max", "Min", grads="all")
def _vjp_max(b, node, gy):
    # The gradient goes to the inputs equal to the result, split evenly among ties (torch's
    # maximum / minimum convention; giving each tie the full gradient would double it for
    # Max(x, Relu(x)) at x > 0).
    g, y = gy[0], node.output[0]
    masks = [b.mask(b.op("Equal", [i, y])) for i in node.input]
    if len(masks) == 1:
        return [g]
    count = b.op("Add", masks) if len(masks) == 2 else b.op("Sum", masks)
    share = b.op("Div", [g, count])
    out = []
    for k, (i, m) in enumerate(zip(node.input, masks)):
        if not b.needs(node, k):
            out.append(None)
            continue
        out.append(b.unbroadcast(b.mul(share, m), y, i))
    return out


# ------------------------------------------------ unary ops: dy/dx as math, g * f'(x, y)
# Each entry is f'(x, y) with x the input and y the output (both Expr).
def _selu_d(node):
    alpha = U.attr(node, "alpha", 1.67326319217681884765625)
    gamma = U.attr(node, "gamma", 1.05070102214813232421875)
    # x > 0: gamma; else gamma * alpha * e^x = y + gamma * alpha
    return lambda x, y: (y + gamma * alpha).where(x.lt(0.0), gamma)


def _celu_d(node):
    alpha = U.attr(node, "alpha", 1.0)
    return lambda x, y: (x / alpha).Exp().where(x.lt(0.0), 1.0)


def _thresholded_relu_d(node):
    alpha = U.attr(node, "alpha", 1.0)
    return lambda x, y: x.gt(alpha).mask()


def _shrink_d(node):
    lambd = U.attr(node, "lambd", 0.5)
    return lambda x, y: x.Abs().gt(lambd).mask()


def _mish_d(node):
    # y = x tanh(sp(x)), sp = softplus: y' = tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2)
    def d(x, y):
        t = x.Softplus().Tanh()
        return t + x * x.Sigmoid() * (1.0 - t * t)
    return d


UNARY = {
    "Tan": lambda node: lambda x, y: 1.0 + y * y,
    "Sinh": lambda node: lambda x, y: x.Cosh(),
    "Cosh": lambda node: lambda x, y: x.Sinh(),
    "Asin": lambda node: lambda x, y: 1.0 / (1.0 - x * x).Sqrt(),
    "Acos": lambda node: lambda x, y: -1.0 / (1.0 - x * x).Sqrt(),
    "Atan": lambda node: lambda x, y: 1.0 / (1.0 + x * x),
    "Asinh": lambda node: lambda x, y: 1.0 / (x * x + 1.0).Sqrt(),
    "Acosh": lambda node: lambda x, y: 1.0 / (x * x - 1.0).Sqrt(),
    "Atanh": lambda node: lambda x, y: 1.0 / (1.0 - x * x),
    "Selu": _selu_d,
    "Celu": _celu_d,
    "ThresholdedRelu": _thresholded_relu_d,
    "Shrink": _shrink_d,
    "Mish": _mish_d,
}


def _vjp_unary(b, node, gy):
    d = UNARY[node.op_type](node)(b.e(node.input[0]), b.e(node.output[0]))
    return [(b.e(gy[0]) * d).name]


rule(*UNARY)(_vjp_unary)
