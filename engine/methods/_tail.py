"""The network's tail: the part of a graph after a feature layer, as its own ONNX model.

ReciproCAM and Ablation-CAM score many modified copies of one feature map; running only
the layers after it (for EfficientNet-Lite0: pooling and the classifier) costs a small
fraction of a forward pass. :func:`tail_model` cuts the graph at the feature tensor:

- the nodes kept are those the output needs, walking back from the output and stopping
  at the feature tensor (which becomes the tail's input ``features``, batch dim ``N``);
- a ``Shape`` node reading a tensor *before* the cut (exporters compute the batch size
  from the input for a flatten ``Reshape``) is replaced by the shape of that tensor with
  its batch dim taken from ``features`` and the other dims from the graph's static
  shapes; the cut is refused when a needed static size is unknown;
- any other tensor from before the cut that the tail still reads (a skip connection
  bypassing the feature layer) is an error naming it: the feature layer does not separate
  input and output, so there is no tail to run.

Pure ModelProto -> ModelProto; the graph rewriting engine (``onnxplain.graph``) is not
modified, only its helpers are read.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import graph as U
from ..model import Model
from .layers import _TAPPED, _facts

FEATURES = "features"
_CACHE: weakref.WeakKeyDictionary[Model, dict] = weakref.WeakKeyDictionary()


@dataclass
class Tail:
    """A runnable tail: ``run(features (B, ...)) -> raw model output (B, ...)``."""

    proto: onnx.ModelProto
    feature: str
    output: str
    session: object
    batched: bool              # False: the tail was pinned to batch 1 by the export, run row by row

    def run(self, features: np.ndarray, mini_batch_size: int = 256) -> np.ndarray:
        outs = []
        step = mini_batch_size if self.batched else 1
        for i in range(0, len(features), step):
            outs.append(self.session.run([self.output], {FEATURES: features[i:i + step]})[0])
        return np.concatenate(outs, axis=0)


def tail_model(proto: onnx.ModelProto, feature: str, output: str, feature_shape: tuple[int, ...],
               dtype: int = TensorProto.FLOAT, shapes: dict | None = None) -> onnx.ModelProto:
    """The sub-graph computing ``output`` from ``feature`` (renamed input ``features``).

    ``feature_shape`` is the per-sample shape of the feature tensor; ``shapes`` maps tensor
    names to per-sample shapes (for ``Shape`` nodes on tensors before the cut).
    """
    g = proto.graph
    prod = U.producers(g)
    inits = {t.name: t for t in g.initializer}
    keep: list[onnx.NodeProto] = []
    added: set[int] = set()
    seen: set[str] = set()
    needed_inits: set[str] = set()
    stack = [output]
    while stack:
        name = stack.pop()
        if not name or name in seen or name == feature:
            continue
        seen.add(name)
        if name in inits:
            needed_inits.add(name)
            continue
        node = prod.get(name)
        if node is None:
            raise ValueError(f"the network's tail after feature layer {feature!r} reads {name!r}, which is computed "
                             "before the feature layer (a connection that bypasses it); choose a feature layer that "
                             "every path from the input to the output goes through.")
        if id(node) in added:
            continue
        added.add(id(node))
        if node.op_type == "Shape" and node.input[0] != feature and not _after(node.input[0], feature, prod):
            keep.extend(_shape_from_features(node, feature, shapes or {}))
            continue
        keep.append(node)
        stack.extend(node.input)
        stack.extend(U.subgraph_inputs(node))
    rename = {feature: FEATURES}
    nodes = []
    for node in keep:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
        nodes.append(n)
    inputs = [helper.make_tensor_value_info(FEATURES, dtype, ["N", *feature_shape])]
    out_type = next((o.type.tensor_type.elem_type for o in g.output if o.name == output), 0)
    if not out_type:
        out_type = U.infer(proto).get(output, (None, TensorProto.FLOAT))[1] or TensorProto.FLOAT
    out = helper.make_tensor_value_info(output, out_type, None)
    graph = helper.make_graph(nodes, "onnxplain_tail", inputs, [out],
                              [inits[n] for n in sorted(needed_inits)])
    m = helper.make_model(graph, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    sorted_nodes = U.topo_sort(m.graph)
    del m.graph.node[:]
    m.graph.node.extend(sorted_nodes)
    return m


def _after(name: str, feature: str, prod: dict) -> bool:
    """Whether tensor ``name`` is computed from ``feature``."""
    stack, seen = [name], set()
    while stack:
        t = stack.pop()
        if t == feature:
            return True
        if t in seen or t not in prod:
            continue
        seen.add(t)
        stack.extend(i for i in prod[t].input if i)
    return False


def _shape_from_features(node: onnx.NodeProto, feature: str, shapes: dict) -> list[onnx.NodeProto]:
    """A replacement for ``Shape(x)`` with x before the cut: [batch of features, *x's static dims]."""
    src = node.input[0]
    per_sample = shapes.get(src)
    if per_sample is None or not all(isinstance(d, (int, np.integer)) and d > 0 for d in per_sample):
        raise ValueError(f"the network's tail after feature layer {feature!r} reads the shape of {src!r} (node "
                         f"{node.name!r}), whose static size is unknown; cannot cut the graph there.")
    full = np.asarray([-1, *per_sample], np.int64)
    start = U.attr(node, "start", 0)
    end = U.attr(node, "end", None)
    sliced = full[start:end] if end is not None else full[start:]
    batch_in = (start == 0 or start == -len(full)) and len(sliced) > 0
    rest = sliced[1:] if batch_in else sliced
    name, tag = node.output[0], f"{node.name or node.output[0]}__onnxplain"
    rest_t = helper.make_tensor(f"{name}__rest", TensorProto.INT64, [len(rest)], rest.tolist())
    if not batch_in:
        return [helper.make_node("Constant", [], [name], value=rest_t, name=f"{tag}_const")]
    zero = helper.make_tensor(f"{name}__0", TensorProto.INT64, [1], [0])
    one = helper.make_tensor(f"{name}__1", TensorProto.INT64, [1], [1])
    return [
        helper.make_node("Shape", [FEATURES], [f"{name}__full"], name=f"{tag}_shape"),
        helper.make_node("Constant", [], [f"{name}__0"], value=zero, name=f"{tag}_c0"),
        helper.make_node("Constant", [], [f"{name}__1"], value=one, name=f"{tag}_c1"),
        helper.make_node("Slice", [f"{name}__full", f"{name}__0", f"{name}__1"], [f"{name}__batch"],
                         name=f"{tag}_slice"),
        helper.make_node("Constant", [], [f"{name}__rest"], value=rest_t, name=f"{tag}_rest"),
        helper.make_node("Concat", [f"{name}__batch", f"{name}__rest"], [name], axis=0, name=f"{tag}_concat"),
    ]


def tail_for(model: Model, layer, environment: str, output: str | None = None) -> Tail:
    """The cached runnable tail of ``model`` from feature layer ``layer`` (a FeatureLayer) to
    ``output`` (default the model's explained output; an inner tensor for a reduction layer)."""
    cache = _CACHE.setdefault(model, {})
    output = output or model.output_name
    key = (layer.name, environment, output)
    if key in cache:
        return cache[key]
    proto = model._run_proto
    tensors = _facts(model)[0]
    shapes = {n: t.shape for n, t in tensors.items() if t.shape is not None}
    info = U.infer(proto)
    dtype = info.get(layer.name, (None, 0))[1] or (TensorProto.FLOAT16 if model.input_dtype == np.float16
                                                   else TensorProto.FLOAT)
    tail = tail_model(proto, layer.name, output, layer.shape, dtype, shapes)
    session = model.new_session(tail, environment, graph="network tail")
    probe = np.zeros((2, *layer.shape), U.np_dtype(dtype))
    try:
        batched = session.run([output], {FEATURES: probe})[0].shape[0] == 2
    except Exception:  # noqa: BLE001 - a tail pinned to batch 1 by the exporter: run row by row
        batched = False
    cache[key] = Tail(tail, layer.name, output, session, batched)
    return cache[key]


def release_sessions(model: Model) -> int:
    """Drop the cached sessions of tapped graphs and network tails built for ``model`` (Score-CAM,
    ReciproCAM, Eigen-CAM, Ablation-CAM); return how many went. The next call rebuilds what it
    needs (a fraction of a second on EfficientNet-Lite0). ``onnxplain explain`` calls this between
    methods with :meth:`onnxplain.Model.release_memory`: each is a session of (part of) the model
    with its own weights and kernels, ~20-60 MB resident for EfficientNet-Lite0."""
    tapped, tails = _TAPPED.pop(model, {}), _CACHE.pop(model, {})
    return len(tapped) + len(tails)
