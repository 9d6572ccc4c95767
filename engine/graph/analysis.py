"""Structural questions about a graph (which tensors every path passes through)."""
from __future__ import annotations

from onnx import ModelProto

from . import _util as U
from .errors import GraphError

# Path counts are compared modulo a large prime: exact counts explode in DenseNets.
_PRIME = (1 << 61) - 1


_SHAPE_ONLY = ("Shape", "Size")


def articulation_tensors(model: ModelProto, input_name: str, output_name: str) -> list[str]:
    """Tensors that lie on every path from ``input_name`` to ``output_name``.

    Parameters
    ----------
    model : onnx.ModelProto
        Not modified.
    input_name, output_name : str
        Source and sink tensors (the sink must depend on the source).

    Returns
    -------
    list of str
        Topological order, including ``input_name`` and ``output_name`` themselves.
        Tensors inside residual blocks (bypassed by a skip connection) are excluded.

    Raises
    ------
    GraphError
        If a name is unknown or the output does not depend on the input.
    """
    g = model.graph
    nodes = U.topo_sort(g)
    known = {o for n in nodes for o in n.output} | {i.name for i in g.input}
    for what, name in (("input_name", input_name), ("output_name", output_name)):
        if name not in known:
            raise GraphError(f"The {what!r} parameter {name!r} is not a tensor of the graph")
    # paths from the input to each tensor, in topological order
    fwd = {input_name: 1}
    order = [input_name]
    for n in nodes:
        if n.op_type in _SHAPE_ONLY:
            # Shape/Size read a tensor's shape, not its values: a Shape(image) feeding a late
            # Reshape is no path around the layers.
            continue
        count = sum(fwd.get(i, 0) for i in n.input if i) % _PRIME
        if not count:
            continue
        for o in n.output:
            if o and o not in fwd:
                fwd[o] = count
                order.append(o)
    if output_name not in fwd:
        raise GraphError(f"tensor {output_name!r} does not depend on {input_name!r}")
    bwd = {output_name: 1}
    for n in reversed(nodes):
        count = sum(bwd.get(o, 0) for o in n.output if o) % _PRIME
        if not count:
            continue
        for i in n.input:
            if i in fwd:
                bwd[i] = (bwd.get(i, 0) + count) % _PRIME
    total = fwd[output_name]
    return [t for t in order if t in bwd and (fwd[t] * bwd[t]) % _PRIME == total]
