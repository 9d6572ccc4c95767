"""List the tensors of a graph and expose intermediate ones as outputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from onnx import ModelProto, TensorProto, helper

from . import _util as U
from .errors import GraphError


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a graph.

    Attributes
    ----------
    name : str
        Tensor name.
    op_type : str
        Op type of the producing node; ``"Input"`` for graph inputs.
    node_name : str
        Name of the producing node ("" for graph inputs).
    shape : tuple
        Inferred shape: ints, dim_param strings (e.g. ``"N"``), or None for unknown sizes;
        an empty tuple for scalars; None when the rank is unknown.
    dtype : str
        Element type name, e.g. ``"float32"`` (``"unknown"`` when not inferred).
    """

    name: str
    op_type: str
    node_name: str
    shape: tuple | None
    dtype: str


def _dtype_name(elem_type: int) -> str:
    if not elem_type:
        return "unknown"
    try:
        return str(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # bfloat16 and friends have no numpy dtype
        return TensorProto.DataType.Name(elem_type).lower()


def list_tensors(model: ModelProto) -> list[TensorInfo]:
    """Graph inputs and node outputs in topological order, with inferred shapes.

    Parameters
    ----------
    model : onnx.ModelProto
        Any model; not modified. Initializers and Constant outputs are not listed.

    Returns
    -------
    list of TensorInfo
    """
    g = model.graph
    info = U.infer(model)
    out = []
    for vi in U.real_inputs(g):
        out.append(TensorInfo(vi.name, "Input", "", U.value_info_shape(vi),
                              _dtype_name(vi.type.tensor_type.elem_type)))
    for node in U.topo_sort(g):
        if node.op_type == "Constant":
            continue
        for o in node.output:
            if not o:
                continue
            shape, t = info.get(o, (None, 0))
            out.append(TensorInfo(o, node.op_type, node.name, shape, _dtype_name(t)))
    return out


def tap_model(model: ModelProto, names: Sequence[str]) -> ModelProto:
    """A copy of ``model`` that also outputs the named intermediate tensors.

    Parameters
    ----------
    model : onnx.ModelProto
        Not modified.
    names : sequence of str
        Tensors to expose; names that already are outputs are left alone.

    Returns
    -------
    onnx.ModelProto
        Same inputs; outputs are the original ones followed by ``names`` in order.

    Raises
    ------
    GraphError
        If a name is not produced by the graph.
    """
    m = U.copy_model(model)
    g = m.graph
    produced = {o for n in g.node for o in n.output if o} | {i.name for i in g.input}
    produced |= U.initializer_names(g)
    missing = [n for n in names if n not in produced]
    if missing:
        raise GraphError(f"cannot tap tensors not in the graph: {missing}")
    info = U.infer(m)
    outputs = {o.name for o in g.output}
    for name in names:
        if name in outputs:
            continue
        shape, t = info.get(name, (None, TensorProto.FLOAT))
        g.output.append(helper.make_tensor_value_info(name, t or TensorProto.FLOAT, shape))
        outputs.add(name)
    return m
