"""Convolution and pooling."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from onnx import TensorProto, helper

from .. import _util as U
from ..errors import node_error
from . import rule
from .probe import avgpool_weights


def _explicit_pads(b, node, x: str, kernel: Sequence[int], strides, dilations) -> list[int]:
    """Begin+end pads with auto_pad resolved against the static input size."""
    rank = len(kernel)
    auto = U.decode(U.attr(node, "auto_pad", "NOTSET"))
    pads = list(U.attr(node, "pads", [0] * (2 * rank)))
    if auto in ("NOTSET", ""):
        return pads
    if auto == "VALID":
        return [0] * (2 * rank)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise node_error(node, f"auto_pad {auto} is not supported")
    spatial = b.static_dims(x, node, range(2, 2 + rank))
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin + end


def _transpose_geometry(in_sizes, out_sizes, kernel, strides, dilations, begin):
    """ConvTranspose pads/output_padding that invert a strided window op exactly."""
    ends, extra = [], []
    for hi, ho, k, s, d, pb in zip(in_sizes, out_sizes, kernel, strides, dilations, begin):
        r = s * (ho - 1) + (k - 1) * d + 1 - pb - hi
        ends.append(max(r, 0))
        extra.append(max(-r, 0))
    return ends, extra


@rule("Conv", const=(1, 2))
def _vjp_conv(b, node, gy):
    g = gy[0]
    x, w = node.input[0], node.input[1]
    if b.needs(node, 1) or (len(node.input) > 2 and b.needs(node, 2)):
        raise node_error(node, "weights or bias depend on the differentiated input; only "
                         "constant weights are supported")
    if not b.needs(node, 0):
        return [None, None, None]
    wv = b.value(w)
    if wv is None:
        raise node_error(node, "weights must be a constant")
    rank = wv.ndim - 2
    kernel = list(wv.shape[2:])
    strides = list(U.attr(node, "strides", [1] * rank))
    dilations = list(U.attr(node, "dilations", [1] * rank))
    group = U.attr(node, "group", 1)
    pads = _explicit_pads(b, node, x, kernel, strides, dilations)
    begin = pads[:rank]
    in_sizes = b.static_dims(x, node, range(2, 2 + rank))
    out_sizes = b.static_dims(node.output[0], node, range(2, 2 + rank))
    channels = b.static_dims(x, node, [1])[0]
    flip = tuple(slice(None, None, -1) for _ in range(rank))
    if all(s == 1 for s in strides):
        # Stride 1: the input gradient is a full correlation with the flipped,
        # group-transposed kernel; a (grouped) Conv is much faster than ConvTranspose on
        # CPU. (Zero-upsampling strided gradients to reuse this measured slower.)
        new_begin = [(k - 1) * d - p for k, d, p in zip(kernel, dilations, begin)]
        new_end = [hi - ho + (k - 1) * d - nb
                   for hi, ho, k, d, nb in zip(in_sizes, out_sizes, kernel, dilations,
                                               new_begin)]
        if all(p >= 0 for p in new_begin + new_end):
            m_out = wv.shape[0]
            cg = wv.shape[1]  # input channels per group
            mg = m_out // group
            # [M, C/g, k] -> per group transpose to [C, M/g, k], flipped spatially.
            wt = wv.reshape(group, mg, cg, *kernel).swapaxes(1, 2).reshape(
                group * cg, mg, *kernel)
            wt = np.ascontiguousarray(wt[(slice(None), slice(None)) + flip]).astype(np.float32)
            assert group * cg == channels
            return [b.op("Conv", [g, b.const(wt, hint="wflip")], group=group,
                         dilations=dilations, pads=new_begin + new_end,
                         kernel_shape=kernel, strides=[1] * rank), None, None]
    if (rank == 2 and group == channels == wv.shape[0] and wv.shape[1] == 1
            and strides[0] == strides[1] > 1 and all(d == 1 for d in dilations)):
        return [_depthwise_strided_input_grad(b, g, wv, strides[0], begin, in_sizes,
                                              out_sizes), None, None]
    ends, extra = _transpose_geometry(in_sizes, out_sizes, kernel, strides, dilations, begin)
    attrs = dict(strides=strides, dilations=dilations, group=group, pads=begin + ends,
                 kernel_shape=kernel)
    if any(extra):
        attrs["output_padding"] = extra
    return [b.op("ConvTranspose", [g, w], **attrs), None, None]


def _subpixel_axis(k: int, s: int, p: int, size_in: int, size_out: int):
    """One axis of the sub-pixel split of a stride-s correlation's transpose.

    Input position i = s*q + r (phase r) receives g[q + c_r - j] * w[k0 + s*j] with
    k0 = (r + p) mod s and c_r = (r + p - k0) / s: a stride-1 correlation of g with the
    flipped sub-kernel. All phases share one window of U taps read at g[q + u - P].
    Returns (per-phase list of (window position u, kernel tap) pairs, P, end pad, Q).
    """
    phases = []
    for r in range(s):
        k0 = (r + p) % s
        taps = list(range(k0, k, s))[::-1]  # flipped: tap t reads g[q + t - pb]
        c = (r + p - k0) // s
        phases.append((taps, len(taps) - 1 - c))
    P = max([0] + [pb for _, pb in phases])
    U_ = max([len(t) + P - pb for t, pb in phases] + [1])
    Q = -(-size_in // s)
    end = Q - size_out - P + U_ - 1
    placed = [[(t + P - pb, tap) for t, tap in enumerate(taps)] for taps, pb in phases]
    return placed, P, max(end, 0), U_, Q


def _depthwise_strided_input_grad(b, g, wv, s, begin, in_sizes, out_sizes):
    """Input gradient of a strided depthwise Conv without a grouped ConvTranspose.

    onnxruntime's grouped ConvTranspose runs one tiny GEMM + col2im per channel (slow on
    CPU). Sub-pixel form instead: each of the s*s output phases is a stride-1 depthwise
    Conv of g with a sub-kernel (fast, NCHWc-able); the phases are interleaved by Col2Im
    with s x s blocks at stride s (opset >= 18; build_gradient_model upgrades to it when
    it can), else by one ungrouped ConvTranspose with a 0/1 kernel of size s and stride s
    (no overlap) with channels moved into the batch axis, ~5x slower. A Slice drops the
    padding row/column.
    """
    C = wv.shape[0]
    ax = [_subpixel_axis(wv.shape[2 + a], s, begin[a], in_sizes[a], out_sizes[a])
          for a in range(2)]
    (ph_h, P_h, E_h, U_h, Q_h), (ph_w, P_w, E_w, U_w, Q_w) = ax
    parts = []
    for rh in range(s):
        for rw in range(s):
            k = np.zeros((C, 1, U_h, U_w), np.float32)
            for uh, kh in ph_h[rh]:
                for uw, kw in ph_w[rw]:
                    k[:, 0, uh, uw] = wv[:, 0, kh, kw]
            conv = b.op("Conv", [g, b.const(k, hint="wphase")], group=C,
                        kernel_shape=[U_h, U_w], pads=[P_h, P_w, E_h, E_w])
            # the window may run past Q when the end pad came out negative
            rows_h = out_sizes[0] + P_h + E_h - U_h + 1
            rows_w = out_sizes[1] + P_w + E_w - U_w + 1
            if rows_h != Q_h or rows_w != Q_w:
                conv = b.op("Slice", [conv, b.ints([0, 0]), b.ints([Q_h, Q_w]),
                                      b.ints([2, 3])])
            parts.append(b.op("Unsqueeze", [conv, b.ints([2])]))
    stacked = b.op("Concat", parts, axis=2)  # [N, C, s*s, Q_h, Q_w]
    if b.opset >= 18:
        # Col2Im with non-overlapping s x s blocks is exactly the phase interleave.
        cols = b.op("Reshape", [stacked, b.ints([0, C * s * s, Q_h * Q_w])])
        full = b.op("Col2Im", [cols, b.ints([s * Q_h, s * Q_w]), b.ints([s, s])],
                    strides=[s, s])
        if s * Q_h != in_sizes[0] or s * Q_w != in_sizes[1]:
            full = b.op("Slice", [full, b.ints([0, 0]), b.ints(list(in_sizes)), b.ints([2, 3])])
        return full
    flat = b.op("Reshape", [stacked, b.ints([-1, s * s, Q_h, Q_w])])
    pick = np.zeros((s * s, 1, s, s), np.float32)
    for rh in range(s):
        for rw in range(s):
            pick[rh * s + rw, 0, rh, rw] = 1.0
    full = b.op("ConvTranspose", [flat, b.const(pick, hint="interleave")],
                strides=[s, s], kernel_shape=[s, s])
    full = b.op("Reshape", [full, b.ints([-1, C, s * Q_h, s * Q_w])])
    if s * Q_h != in_sizes[0] or s * Q_w != in_sizes[1]:
        full = b.op("Slice", [full, b.ints([0, 0]), b.ints(list(in_sizes)), b.ints([2, 3])])
    return full


@rule("MaxPool")
def _vjp_maxpool(b, node, gy):
    if U.attr(node, "storage_order", 0):
        raise node_error(node, "storage_order=1 is not supported")
    if len(node.output) < 2 or not node.output[1]:
        # Forward now also returns argmax indices (flat over the whole input tensor).
        if len(node.output) < 2:
            node.output.append(b.fresh("maxpool_indices"))
        else:
            node.output[1] = b.fresh("maxpool_indices")
    x = node.input[0]
    idx = node.output[1]
    flat = b.ints([-1])
    gflat = b.op("Reshape", [gy[0], flat])
    iflat = b.op("Reshape", [idx, flat])
    xflat = b.op("Reshape", [x, flat])
    zeros = b.op("ConstantOfShape", [b.op("Shape", [xflat])],
                 value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))
    # Overlapping windows can pick the same input twice: accumulate (MaxUnpool would not).
    scat = b.op("ScatterElements", [zeros, iflat, gflat], axis=0, reduction="add")
    return [b.reshape_like(scat, x)]


@rule("GlobalMaxPool")
def _vjp_global_maxpool(b, node, gy):
    # Split evenly among tied maxima (like ReduceMax; ties are common after a nearest
    # upsample, where the full gradient at each copy would multiply it).
    x = node.input[0]
    m = b.mask(b.op("Equal", [x, node.output[0]]))
    count = b.reduce("ReduceSum", m, list(range(2, len(b.shape(x, node)))), keepdims=1)
    return [b.mul(b.op("Div", [gy[0], count]), m)]


@rule("GlobalAveragePool")
def _vjp_global_avgpool(b, node, gy):
    x = node.input[0]
    s = b.shape(x, node)
    spatial = b.static_dims(x, node, range(2, len(s)))
    scaled = b.mul(gy[0], b.const(1.0 / float(np.prod(spatial))))
    return [b.op("Expand", [scaled, b.expand_shape_of(x)])]


@rule("AveragePool")
def _vjp_avgpool(b, node, gy):
    x = node.input[0]
    kernel = list(U.attr(node, "kernel_shape"))
    rank = len(kernel)
    strides = list(U.attr(node, "strides", [1] * rank))
    dilations = list(U.attr(node, "dilations", [1] * rank))
    pads = _explicit_pads(b, node, x, kernel, strides, dilations)
    begin = pads[:rank]
    in_sizes = b.static_dims(x, node, range(2, 2 + rank))
    out_sizes = b.static_dims(node.output[0], node, range(2, 2 + rank))
    channels = b.static_dims(x, node, [1])[0]
    weights = avgpool_weights(b, node, in_sizes, out_sizes, kernel, strides, dilations, begin)
    g = gy[0]
    scalar = None
    if np.allclose(weights, weights.reshape(-1)[0], rtol=1e-6, atol=0):
        scalar = float(weights.reshape(-1)[0])
    else:
        g = b.mul(g, b.const(weights[None, None].astype(np.float32), hint="pool_w"))
    if (all(k == s for k, s in zip(kernel, strides)) and not any(begin)
            and all(d == 1 for d in dilations)
            and all(o * k == i for o, k, i in zip(out_sizes, kernel, in_sizes))
            and scalar is not None):
        # Non-overlapping tiling pool: the backward pass is a nearest-neighbour upsample.
        up = b.op("Resize", [g, "", b.const([1.0, 1.0] + [float(k) for k in kernel])],
                  mode="nearest")
        return [b.mul(up, b.const(scalar)) if scalar != 1.0 else up]
    ones = np.full([channels, 1] + kernel, 1.0 if scalar is None else scalar, np.float32)
    ends, extra = _transpose_geometry(in_sizes, out_sizes, kernel, strides, dilations, begin)
    attrs = dict(strides=strides, dilations=dilations, group=channels, pads=begin + ends,
                 kernel_shape=kernel)
    if any(extra):
        attrs["output_padding"] = extra
    return [b.op("ConvTranspose", [g, b.const(ones, hint="pool_k")], **attrs)]
