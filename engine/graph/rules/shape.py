"""Shape and indexing: structural inverses."""
from __future__ import annotations


import numpy as np
from onnx import TensorProto

from .. import _util as U
from ..errors import node_error
from . import INT64_MAX, rule
from .probe import resize_matrices


@rule("Concat", grads="all")
def _vjp_concat(b, node, gy):
    axis = U.attr(node, "axis")
    rank = len(b.shape(node.output[0], node))
    axis %= rank
    sizes = [b.static_dims(i, node, [axis])[0] for i in node.input]
    needed = [b.needs(node, k) for k in range(len(node.input))]
    if sum(needed) == 1:
        k = needed.index(True)
        start = sum(sizes[:k])
        return [b.op("Slice", [gy[0], b.ints([start]), b.ints([start + sizes[k]]),
                               b.ints([axis])]) if n else None for n in needed]
    parts = b.op("Split", [gy[0], b.ints(sizes)], n_out=len(sizes), axis=axis)
    parts = parts if isinstance(parts, list) else [parts]
    return [p if n else None for p, n in zip(parts, needed)]


@rule("Split")
def _vjp_split(b, node, gy):
    axis = U.attr(node, "axis", 0)
    parts = [g if g is not None else b.zeros_like(o) for g, o in zip(gy, node.output)]
    return [b.op("Concat", parts, axis=axis), None]


@rule("Slice")
def _vjp_slice(b, node, gy):
    x = node.input[0]
    s = b.shape(x, node)
    rank = len(s)
    starts = b.const_operand(node, 1, "starts").tolist()
    ends = b.const_operand(node, 2, "ends").tolist()
    axes = (b.const_operand(node, 3, "axes").tolist()
            if len(node.input) > 3 and node.input[3] else list(range(len(starts))))
    steps = (b.const_operand(node, 4, "steps").tolist()
             if len(node.input) > 4 and node.input[4] else [1] * len(starts))
    g = gy[0]
    cur = list(b.shape(node.output[0], node))  # the gradient's shape as axes are undone
    begin, end = [0] * rank, [0] * rank
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax %= rank
        dim = b.static_dims(x, node, [ax])[0]
        st = int(max(min(st, INT64_MAX), -INT64_MAX))
        idx = list(range(*slice(int(st), int(en), int(sp)).indices(dim)))
        if not idx:
            raise node_error(node, f"axis {ax} selects nothing")
        if sp < 0:
            g = b.op("Slice", [g, b.ints([-1]), b.ints([-INT64_MAX]), b.ints([ax]),
                               b.ints([-1])])
            idx = idx[::-1]
            sp = -sp
        length = len(idx)
        if sp > 1:
            later = cur[ax + 1:]
            if any(d is None for d in later):
                raise node_error(node, "strided slice before a batch-dependent axis")
            g = b.op("Unsqueeze", [g, b.ints([ax + 1])])
            pads = [0] * (2 * (rank + 1))
            pads[rank + 1 + ax + 1] = sp - 1
            g = b.op("Pad", [g, b.ints(pads)])
            g = b.op("Reshape", [g, b.ints([0] * ax + [-1] + list(later))])
            g = b.op("Slice", [g, b.ints([0]), b.ints([(length - 1) * sp + 1]), b.ints([ax])])
        span = (length - 1) * sp + 1
        cur[ax] = span
        begin[ax] = idx[0]
        end[ax] = dim - idx[0] - span
    if any(begin) or any(end):
        g = b.op("Pad", [g, b.ints(begin + end)])
    return [g, None, None, None, None]


@rule("Pad")
def _vjp_pad(b, node, gy):
    mode = U.decode(U.attr(node, "mode", "constant"))
    if mode != "constant":
        raise node_error(node, f"mode {mode!r} is not supported (only 'constant')")
    x = node.input[0]
    s = b.shape(x, node)
    rank = len(s)
    pads = b.const_operand(node, 1, "pads").astype(np.int64).tolist()
    if len(node.input) > 3 and node.input[3]:
        axes = [a % rank for a in b.const_operand(node, 3, "axes").tolist()]
        full = [0] * (2 * rank)
        for k, a in enumerate(axes):
            full[a] = pads[k]
            full[rank + a] = pads[len(axes) + k]
        pads = full
    g = gy[0]
    grow = [max(-p, 0) for p in pads]
    if any(grow):
        g = b.op("Pad", [g, b.ints(grow)])
    axes = [a for a in range(rank) if pads[a] != 0 or pads[rank + a] != 0]
    if axes:
        starts = [max(pads[a], 0) for a in axes]
        dims = b.static_dims(x, node, axes)
        g = b.op("Slice", [g, b.ints(starts), b.ints([st + d for st, d in zip(starts, dims)]),
                           b.ints(axes)])
    return [g, None, None, None]


@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _vjp_reshape(b, node, gy):
    return [b.reshape_like(gy[0], node.input[0])] + [None] * (len(node.input) - 1)


@rule("Transpose")
def _vjp_transpose(b, node, gy):
    rank = len(b.shape(node.input[0], node))
    perm = U.attr(node, "perm", list(range(rank))[::-1])
    inv = list(np.argsort(perm))
    return [b.op("Transpose", [gy[0]], perm=[int(p) for p in inv])]


@rule("Expand")
def _vjp_expand(b, node, gy):
    return [b.unbroadcast(gy[0], node.output[0], node.input[0]), None]


@rule("Tile")
def _vjp_tile(b, node, gy):
    x = node.input[0]
    reps = b.const_operand(node, 1, "repeats").tolist()
    s = b.shape(x, node)
    if all(r == 1 for r in reps):
        return [gy[0], None]
    dims = []
    axes = []
    for a, (r, d) in enumerate(zip(reps, s)):
        if r != 1 and d is None:
            raise node_error(node, "tiling a batch-dependent axis is not supported")
        dims += [r, d if d is not None else -1]
        axes.append(2 * a)
    t = b.op("Reshape", [gy[0], b.ints([0 if d is None else d for d in dims])])
    return [b.reshape_like(b.reduce("ReduceSum", t, axes, keepdims=0), x), None]


@rule("Gather")
def _vjp_gather(b, node, gy):
    x = node.input[0]
    s = b.shape(x, node)
    rank = len(s)
    axis = U.attr(node, "axis", 0) % rank
    if b.value(node.input[1]) is None:
        return [_gather_runtime_indices(b, node, axis, gy[0]), None]
    idx = b.const_operand(node, 1, "indices")
    dim = b.static_dims(x, node, [axis])[0]
    idx = np.where(idx < 0, idx + dim, idx)
    g = gy[0]
    if idx.ndim == 0:
        g = b.op("Unsqueeze", [g, b.ints([axis])])
        pads = [0] * (2 * rank)
        pads[axis] = int(idx)
        pads[rank + axis] = dim - int(idx) - 1
        return [b.op("Pad", [g, b.ints(pads)]), None]
    # General constant indices: contract with a one-hot matrix [K, dim] along the axis.
    flat = idx.reshape(-1)
    onehot = np.zeros((flat.size, dim), np.float32)
    np.add.at(onehot, (np.arange(flat.size), flat), 1.0)
    out_rank = rank - 1 + idx.ndim
    if idx.ndim != 1:
        tail = [d if d is not None else 0 for d in b.shape(node.output[0], node)[axis + idx.ndim:]]
        g = b.op("Reshape", [g, b.ints([0] * axis + [-1] + tail)])
        out_rank = rank
    perm = [a for a in range(out_rank) if a != axis] + [axis]
    t = b.op("Transpose", [g], perm=perm)
    t = b.op("MatMul", [t, b.const(onehot, hint="onehot")])
    inv = [int(p) for p in np.argsort(perm)]
    return [b.op("Transpose", [t], perm=inv), None]


@rule("Resize")
def _vjp_resize(b, node, gy):
    x = node.input[0]
    s = b.shape(x, node)
    ys = b.shape(node.output[0], node)
    rank = len(s)
    mats = resize_matrices(b, node, s, ys)
    g = gy[0]
    for a, mat in mats.items():
        # g[..., O_a, ...] -> contract with mat [O_a, D_a] along axis a.
        if a == rank - 1:
            g = b.op("MatMul", [g, b.const(mat, hint="resize_m")])
        elif a == rank - 2:
            g = b.op("MatMul", [b.const(np.ascontiguousarray(mat.T), hint="resize_mT"), g])
        else:
            perm = [k for k in range(rank) if k != a] + [a]
            t = b.op("Transpose", [g], perm=perm)
            t = b.op("MatMul", [t, b.const(mat, hint="resize_m")])
            g = b.op("Transpose", [t], perm=[int(p) for p in np.argsort(perm)])
    return [g, None, None, None]


@rule("CumSum")
def _vjp_cumsum(b, node, gy):
    """The transpose of a running sum is the running sum in the other direction."""
    b.const_operand(node, 1, "axis")
    return [b.op("CumSum", [gy[0], node.input[1]], exclusive=U.attr(node, "exclusive", 0),
                 reverse=1 - U.attr(node, "reverse", 0)), None]


def _space_depth_geometry(node, s, inverse_op: bool):
    """(shape before the transpose, perm) of DepthToSpace / SpaceToDepth as
    Reshape -> Transpose -> Reshape (the ONNX definitions)."""
    bs = U.attr(node, "blocksize")
    n, c, h, w = s
    if node.op_type == "DepthToSpace":
        if U.decode(U.attr(node, "mode", "DCR")) == "DCR":
            return [n, bs, bs, c // (bs * bs), h, w], [0, 3, 4, 1, 5, 2]
        return [n, c // (bs * bs), bs, bs, h, w], [0, 1, 4, 2, 5, 3]
    return [n, c, h // bs, bs, w // bs, bs], [0, 3, 5, 1, 2, 4]


@rule("DepthToSpace", "SpaceToDepth")
def _vjp_depth_space(b, node, gy):
    x = node.input[0]
    s = list(b.shape(x, node))
    if any(d is None for d in s[1:]):
        raise node_error(node, "needs static non-batch sizes")
    split, perm = _space_depth_geometry(node, s, False)
    moved = [split[p] for p in perm]
    g = b.op("Reshape", [gy[0], b.ints([0] + moved[1:])])
    g = b.op("Transpose", [g], perm=[int(p) for p in np.argsort(perm)])
    return [b.reshape_like(g, x)]


@rule("TopK")
def _vjp_topk(b, node, gy):
    """Values go back to where they were taken from (indices output: no gradient)."""
    x = node.input[0]
    rank = len(b.shape(x, node))
    axis = U.attr(node, "axis", -1) % rank
    if len(node.output) < 2 or not node.output[1]:  # the forward now also returns indices
        if len(node.output) < 2:
            node.output.append(b.fresh("topk_indices"))
        else:
            node.output[1] = b.fresh("topk_indices")
    return [b.op("ScatterElements", [b.zeros_like(x), node.output[1], gy[0]], axis=axis,
                 reduction="add"), None]


def _gather_runtime_indices(b, node, axis: int, g: str) -> str:
    """Gather with indices computed at run time (the dynamo exporter's ``as_strided``:
    a flattened tensor gathered at Range-built, batch-dependent offsets; a token picked by
    an ArgMax): scatter-add the gradient back with ScatterND (repeated indices accumulate).
    On an axis other than 0 the gathered axis is moved to the front first (Transpose of x,
    the index dims of g likewise) and back after."""
    x, idx = node.input[0], node.input[1]
    if b.shapes.get(idx, (None, 0))[1] not in (TensorProto.INT64, TensorProto.INT32):
        raise node_error(node, "indices of unknown integer type")
    rank = len(b.shape(x, node))
    q = len(b.shape(idx, node))
    i64 = b.op("Cast", [idx], to=TensorProto.INT64)
    # negative indices count from the end: i + D * (i < 0)
    # (scalars, so that a scalar index stays a scalar)
    dim = b.op("Reshape", [b.op("Shape", [x], start=axis, end=axis + 1), b.ints([])])
    neg = b.op("Cast", [b.op("Less", [i64, b.const(0, np.int64, "i")])], to=TensorProto.INT64)
    i64 = b.op("Add", [i64, b.op("Mul", [neg, dim])])
    where = b.op("Unsqueeze", [i64, b.ints([-1])])
    if axis == 0:
        return b.op("ScatterND", [b.zeros_like(x), where, g], reduction="add")
    front = [axis] + [a for a in range(rank) if a != axis]
    xt = b.op("Transpose", [x], perm=front)
    gt = b.op("Transpose", [g], perm=list(range(axis, axis + q)) + list(range(axis))
              + list(range(axis + q, rank - 1 + q)))
    scattered = b.op("ScatterND", [b.zeros_like(xt), where, gt], reduction="add")
    return b.op("Transpose", [scattered], perm=[int(p) for p in np.argsort(front)])
