"""Linear algebra: MatMul (batched, broadcast, 1-D), Gemm."""
from __future__ import annotations


import numpy as np

from .. import _util as U
from ..errors import node_error
from . import rule


def _transpose_last2(b, name: str, rank: int) -> str:
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    v = b.value(name) if name in b.consts and _small(b.consts[name]) else None
    if v is not None:
        return b.const(np.ascontiguousarray(np.transpose(v, perm)).astype(np.float32), hint="wT")
    # a large weight: onnxruntime folds the Transpose of an initializer when the session is
    # built (a numpy copy here cost ~1.4 s and 330 MB more proto on ViT-B/16)
    return b.op("Transpose", [name], perm=perm)


def _small(c) -> bool:
    dims = c.dims if hasattr(c, "dims") else None
    return dims is None or int(np.prod(dims)) < (1 << 16)


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


def _einsum_terms(node, ranks: list[int]) -> tuple[list[list[str]], list[str]]:
    """Operand and output subscripts as lists of single-axis labels; an ellipsis becomes
    labels '.0', '.1', ... right-aligned across operands (numpy's broadcasting)."""
    eq = U.decode(U.attr(node, "equation")).replace(" ", "")
    lhs, out = eq.split("->") if "->" in eq else (eq, None)
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise node_error(node, f"equation {eq!r} has {len(terms)} operands, node has {len(ranks)}")
    n_ell = max([r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t] + [0])

    def expand(term: str, rank: int | None) -> list[str]:
        if "..." not in term:
            return list(term)
        head, tail = term.split("...")
        k = (rank - len(head) - len(tail)) if rank is not None else n_ell
        return list(head) + [f".{n_ell - k + i}" for i in range(k)] + list(tail)

    labels = [expand(t, r) for t, r in zip(terms, ranks)]
    if out is None:
        counts: dict[str, int] = {}
        for t in terms:
            for c in t.replace("...", ""):
                counts[c] = counts.get(c, 0) + 1
        out = ("..." if n_ell else "") + "".join(sorted(c for c, n in counts.items() if n == 1))
    return labels, expand(out, None)


@rule("Einsum", grads="all")
def _vjp_einsum(b, node, gy):
    """d/dA_k of einsum(A_1..A_n) is einsum(the others, g) into A_k's subscripts; labels of
    A_k that appear nowhere else were summed over A_k alone, so the result is broadcast
    back along them.

    Broadcasting (an ellipsis or a label of size 1 in one operand and D in another): the
    size-1 axis gets a label of its own, which the forward sums over a single element, so
    that operand's gradient is summed over the broadcast axis (the label appears nowhere
    else) and the others' einsums drop it. A label repeated within A_k (a diagonal, as in
    ``ii->i`` or ``bii->b``) keeps its first occurrence and writes each repeat as a new
    label tied to it by an identity matrix operand: the gradient lands on the diagonal,
    zeros elsewhere."""
    shapes = [b.shape(i, node) for i in node.input]
    labels, out = _einsum_terms(node, [len(s) for s in shapes])
    labels = [list(lab) for lab in labels]
    wide = {c for lab, s in zip(labels, shapes) for c, d in zip(lab, s) if d != 1}   # None: the batch
    for j, (lab, s) in enumerate(zip(labels, shapes)):
        for a, (c, d) in enumerate(zip(lab, s)):
            if d == 1 and c in wide:
                lab[a] = f"{c}~{j}"               # broadcast: a size-1 label of its own
    sym: dict[str, str] = {}

    def word(lab) -> str:
        for c in lab:
            if c not in sym:
                k = len(sym)
                if k >= 52:
                    raise node_error(node, "more than 52 subscripts after expanding broadcasts and diagonals")
                sym[c] = chr(ord("a") + k) if k < 26 else chr(ord("A") + k - 26)
        return "".join(sym[c] for c in lab)

    result = []
    for k, (name, lab) in enumerate(zip(node.input, labels)):
        if not b.needs(node, k):
            result.append(None)
            continue
        target, eyes = [], []
        for a, c in enumerate(lab):
            if c in lab[:a]:                      # a repeat: a diagonal of A_k
                fresh = f"{c}#{a}"
                d = b.static_dims(name, node, [a])[0]
                eyes.append(([c, fresh], b.const(np.eye(d, dtype=np.float32), hint="einsum_eye")))
                target.append(fresh)
            else:
                target.append(c)
        others = [j for j in range(len(labels)) if j != k]
        terms = [labels[j] for j in others] + [out] + [t for t, _ in eyes]
        seen = {c for t in terms for c in t}
        kept = [c for c in target if c in seen]
        eq = ",".join(word(t) for t in terms) + "->" + word(kept)
        gk = b.op("Einsum", [node.input[j] for j in others] + [gy[0]] + [e for _, e in eyes], equation=eq)
        missing = [a for a, c in enumerate(target) if c not in seen]
        if missing:
            gk = b.op("Unsqueeze", [gk, b.ints(missing)])
            gk = b.op("Expand", [gk, b.expand_shape_of(name)])
        result.append(gk)
    return result
