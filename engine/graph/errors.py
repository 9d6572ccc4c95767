"""Errors raised by the graph rewrites."""
from __future__ import annotations

from onnx import NodeProto


class GraphError(ValueError):
    """A graph cannot be rewritten (unsupported op, failed verification, bad request).

    Messages name the node and its op type when one node is at fault, e.g.
    ``node 'Conv_12' (Conv): auto_pad SAME_LOWER is not supported``.
    """


def node_error(node: NodeProto, message: str) -> GraphError:
    """A GraphError prefixed with the node's name and op type."""
    name = node.name or (node.output[0] if node.output else "?")
    return GraphError(f"node {name!r} ({node.op_type}): {message}")
