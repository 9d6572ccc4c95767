"""Linear algebra: MatMul (batched, broadcast, 1-D), Gemm."""
from __future__ import annotations


import numpy as np

from .. import _util as U
from . import rule


def _transpose_last2(b, name: str, rank: int) -> str:
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    v = b.value(name)
    if v is not None:
        return b.const(np.ascontiguousarray(np.transpose(v, perm)).astype(np.float32), hint="wT")
    return b.op("Transpose", [name], perm=perm)


@rule("MatMul", grads=(0, 1))
def _vjp_matmul(b, node, gy):
    g, y = gy[0], node.output[0]
    a, c = node.input[0], node.input[1]
    ra, rc = len(b.shape(a, node)), len(b.shape(c, node))
    if ra < 2 or rc < 2:
        # 1-D operands: promote, differentiate, then sum away the broadcast dims.
        a1 = a if ra >= 2 else b.op("Unsqueeze", [a, b.ints([0])])
        c1 = c if rc >= 2 else b.op("Unsqueeze", [c, b.ints([-1])])
        g1 = g
        if ra < 2:
            g1 = b.op("Unsqueeze", [g1, b.ints([-2 if rc >= 2 else 0])])
        if rc < 2:
            g1 = b.op("Unsqueeze", [g1, b.ints([-1])])
        r1 = max(len(b.shape(y, node)) + (ra < 2) + (rc < 2), 2)
        out = [None, None]
        if b.needs(node, 0):
            ga = b.op("MatMul", [g1, _transpose_last2(b, c1, max(rc, 2))])
            if ra < 2:
                out[0] = b.reduce("ReduceSum", ga, list(range(r1 - 1)), keepdims=0)
            else:
                out[0] = _unbroadcast_rank(b, ga, r1, a)
        if b.needs(node, 1):
            gc = b.op("MatMul", [_transpose_last2(b, a1, max(ra, 2)), g1])
            if rc < 2:
                t = b.reduce("ReduceSum", gc, list(range(r1 - 2)) + [r1 - 1], keepdims=0)
                out[1] = t
            else:
                out[1] = _unbroadcast_rank(b, gc, r1, c)
        return out
    out = [None, None]
    if b.needs(node, 0):
        ga = b.op("MatMul", [g, _transpose_last2(b, c, rc)])
        out[0] = _unbroadcast_batch(b, ga, y, a)
    if b.needs(node, 1):
        gc = b.op("MatMul", [_transpose_last2(b, a, ra), g])
        out[1] = _unbroadcast_batch(b, gc, y, c)
    return out


def _unbroadcast_rank(b, gx: str, rank: int, target: str) -> str:
    """Sum leading dims of a rank-``rank`` gradient down to target's rank."""
    lead = rank - len(b.shape(target))
    if lead <= 0:
        return gx
    return b.reduce("ReduceSum", gx, list(range(lead)), keepdims=0)


def _unbroadcast_batch(b, gx: str, y: str, target: str) -> str:
    """Reduce a MatMul operand gradient over broadcast batch dims of the product."""
    ys, ts = b.shape(y), b.shape(target)
    lead = len(ys) - len(ts)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(ts[:-2])
                                if d == 1 and ys[lead + i] != 1]
    if not axes:
        return gx
    r = b.reduce("ReduceSum", gx, axes, keepdims=1)
    return b.op("Squeeze", [r, b.ints(list(range(lead)))]) if lead else r


@rule("Gemm", grads=(0, 1, 2))
def _vjp_gemm(b, node, gy):
    g = gy[0]
    alpha = U.attr(node, "alpha", 1.0)
    beta = U.attr(node, "beta", 1.0)
    ta, tb = U.attr(node, "transA", 0), U.attr(node, "transB", 0)
    a, c = node.input[0], node.input[1]
    out = [None, None, None]
    if b.needs(node, 0):
        # A' = A^T if transA; dA' = alpha * g @ B'^T
        if not ta:
            out[0] = b.op("Gemm", [g, c], alpha=alpha, transB=0 if tb else 1)
        else:
            out[0] = b.op("Gemm", [c, g], alpha=alpha, transA=tb, transB=1)
    if b.needs(node, 1):
        if not tb:
            out[1] = b.op("Gemm", [a, g], alpha=alpha, transA=0 if ta else 1)
        else:
            out[1] = b.op("Gemm", [g, a], alpha=alpha, transA=1, transB=ta)
    if len(node.input) > 2 and b.needs(node, 2):
        gc = g if beta == 1.0 else b.mul(g, b.const(beta))
        out[2] = b.unbroadcast(gc, node.output[0], node.input[2])
    return out
