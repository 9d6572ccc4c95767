"""Private helpers shared by the graph rewrites (copying, ordering, shapes, constants)."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from ..runtime import copy_fields, make_session
from .errors import GraphError

MIN_OPSET = 13
# IR version for small probe models built here (onnxruntime 1.17+ reads IR 9).
PROBE_IR_VERSION = 8
#: onnxruntime session config: no pre-packed weight copies, for sessions that run once or twice
NO_PREPACK = "session.disable_prepacking"
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}

def copy_model(model: ModelProto) -> ModelProto:
    """A deep copy, so rewrites never touch the caller's proto."""
    out = ModelProto()
    out.CopyFrom(model)
    return out


def onnx_opset(model: ModelProto) -> int:
    """The default-domain opset version the model imports."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise GraphError("model imports no default-domain (ai.onnx) opset")


def ensure_opset(model: ModelProto) -> ModelProto:
    """Upgrade models below opset 13 with onnx's version converter (a copy)."""
    version = onnx_opset(model)
    if version >= MIN_OPSET:
        return model
    try:
        from onnx import version_converter

        if model.ir_version < 7:
            # IR < 4 requires every initializer to be a graph input as well; fused
            # preprocessing (and other rewrites) add initializers that are not, which the
            # converter then calls undefined. IR 7 is what opset 12-13 graphs declare.
            model = copy_model(model)
            model.ir_version = 7
        converted = version_converter.convert_version(model, MIN_OPSET)
        converted.ir_version = max(converted.ir_version, 7)
        return converted
    except Exception as exc:  # the converter raises assorted C++ errors
        raise GraphError(
            f"model uses opset {version}; opset >= {MIN_OPSET} is required and the "
            f"onnx version converter failed: {exc}"
        ) from exc


def attr(node: NodeProto, name: str, default=None):
    """A node attribute's Python value, or default."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def decode(value):
    """Attribute strings arrive as bytes."""
    return value.decode() if isinstance(value, bytes) else value


def initializer_names(graph: onnx.GraphProto) -> set[str]:
    return {t.name for t in graph.initializer}


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not also initializers (old IR versions list both)."""
    inits = initializer_names(graph)
    return [i for i in graph.input if i.name not in inits]


def producers(graph: onnx.GraphProto) -> dict[str, NodeProto]:
    return {o: n for n in graph.node for o in n.output if o}


def consumers(graph: onnx.GraphProto) -> dict[str, list[NodeProto]]:
    out: dict[str, list[NodeProto]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            if i:
                out[i].append(n)
    return out


def subgraph_inputs(node: NodeProto) -> set[str]:
    """Outer-scope names a node's subgraphs (If/Loop/Scan bodies) read."""
    names: set[str] = set()
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | initializer_names(g)
            for n in g.node:
                local.update(n.output)
            for n in g.node:
                for i in list(n.input) + sorted(subgraph_inputs(n)):
                    if i and i not in local:
                        names.add(i)
            for o in g.output:
                if o.name not in local:
                    names.add(o.name)
    return names


def topo_sort(graph: onnx.GraphProto) -> list[NodeProto]:
    """Nodes in a topological order (stable: keeps file order where it is already valid)."""
    available = {i.name for i in graph.input} | initializer_names(graph) | {""}
    nodes = list(graph.node)
    deps = [set(n.input) | subgraph_inputs(n) for n in nodes]
    waiting: dict[str, list[int]] = defaultdict(list)
    missing = []
    for k, d in enumerate(deps):
        unmet = {x for x in d if x not in available}
        missing.append(len(unmet))
        for x in unmet:
            waiting[x].append(k)
    produced_by = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    ready = [k for k, m in enumerate(missing) if m == 0]
    import heapq

    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(nodes[k])
        for o in nodes[k].output:
            for j in waiting.pop(o, []):
                missing[j] -= 1
                if missing[j] == 0:
                    heapq.heappush(ready, j)
    if len(order) != len(nodes):
        stuck = [nodes[k] for k, m in enumerate(missing) if m > 0]
        unknown = sorted({x for n in stuck for x in n.input if x and x not in produced_by
                          and x not in available})
        raise GraphError(
            f"graph is not a DAG or reads undefined tensors: {len(stuck)} nodes cannot be "
            f"ordered (first: {stuck[0].name!r} ({stuck[0].op_type}); undefined: {unknown[:5]})"
        )
    return order


def constant_value(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of an initializer or Constant-node output, else None."""
    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return constant_node_value(n)
    return None


def constant_node_value(node: NodeProto) -> np.ndarray:
    """The value a Constant node produces."""
    a = node.attribute[0]
    if a.name == "value":
        return numpy_helper.to_array(a.t)
    if a.name == "value_float":
        return np.array(a.f, dtype=np.float32)
    if a.name == "value_floats":
        return np.array(list(a.floats), dtype=np.float32)
    if a.name == "value_int":
        return np.array(a.i, dtype=np.int64)
    if a.name == "value_ints":
        return np.array(list(a.ints), dtype=np.int64)
    raise GraphError(f"node {node.name!r} (Constant): attribute {a.name} is not supported")


def value_info_shape(vi: onnx.ValueInfoProto) -> tuple:
    """A ValueInfo's shape: ints, dim_param strings, or None for unknown sizes."""
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def set_dims(vi: onnx.ValueInfoProto, dims: Iterable) -> None:
    """Overwrite a ValueInfo's shape with ints / dim_param strings / None."""
    shape = vi.type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, (int, np.integer)):
            dim.dim_value = int(d)
        elif isinstance(d, str):
            dim.dim_param = d


_SKELETON_MIN = 1024  # float initializers this large are weights, never shape data


def skeleton(model: ModelProto) -> ModelProto:
    """A copy for shape questions: large float initializers become typed graph inputs.

    Shape inference never reads weight values, but every call serialises the model; on
    ViT-B/16 (330 MB of weights) that dominated graph building. Integer and small
    initializers (shape vectors, axes, scalars) stay, so data propagation still works.
    """
    g = model.graph
    m = ModelProto()
    m.ir_version = model.ir_version
    m.opset_import.extend(model.opset_import)
    m.functions.extend(model.functions)
    m.graph.name = g.name
    m.graph.node.extend(g.node)
    m.graph.output.extend(g.output)
    m.graph.value_info.extend(g.value_info)
    inits = initializer_names(g)
    m.graph.input.extend(i for i in g.input if i.name not in inits)
    for t in g.initializer:
        n = math.prod(t.dims)
        if t.data_type in FLOAT_TYPES and n >= _SKELETON_MIN:
            m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            m.graph.initializer.append(t)
    return m


def infer(model: ModelProto, strict: bool = False) -> dict[str, tuple[tuple | None, int]]:
    """name -> (shape, elem_type) for every tensor onnx shape inference can type."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), strict_mode=strict,
                                                     data_prop=True)
    except Exception as exc:
        raise GraphError(f"onnx shape inference failed: {exc}") from exc
    g = inferred.graph
    out = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        out[vi.name] = (value_info_shape(vi), vi.type.tensor_type.elem_type)
    for t in g.initializer:
        out[t.name] = (tuple(t.dims), t.data_type)
    return out


def with_batch(model: ModelProto, batch: int, light: bool = False) -> ModelProto:
    """A copy whose inputs have every symbolic dim 0 set to batch (``light``: a
    :func:`skeleton`, for shape inference only)."""
    m = skeleton(model) if light else copy_model(model)
    inits = initializer_names(m.graph)
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        dims = list(value_info_shape(vi) or ())
        if dims and not isinstance(dims[0], int):
            dims[0] = batch
            set_dims(vi, dims)
    # stale intermediate shapes would pin the old batch size
    m.graph.ClearField("value_info")
    for o in m.graph.output:
        dims = value_info_shape(o)
        if dims:
            set_dims(o, [d if isinstance(d, int) and k > 0 else None for k, d in enumerate(dims)])
    return m


def batched_shapes(model: ModelProto,
                   batch_dims: dict[str, tuple[bool, ...]] | None = None
                   ) -> dict[str, tuple[tuple | None, int]]:
    """Static shapes with batch-dependent sizes as None.

    Inference runs at batch 2 and 3: a size that differs between the two depends on the
    batch size and becomes None; everything else is concrete. ``batch_dims``, if given,
    receives per tensor which dims equal the batch size itself (2 and 3), as opposed to
    merely depending on it (a Reshape to [-1, ...] that folds heads into dim 0: 2N).
    """
    a = infer(with_batch(model, 2, light=True))
    b = infer(with_batch(model, 3, light=True))
    produced = [o for n in model.graph.node for o in n.output if o]
    unknown = [o for o in produced if a.get(o, (None, 0))[0] is None
               or any(not isinstance(d, int) for d in a[o][0])
               or b.get(o, (None, 0))[0] is None
               or any(not isinstance(d, int) for d in b[o][0])]
    if unknown:
        # onnx inference gives up on data-dependent shapes (e.g. Expand fed by Where);
        # onnxruntime knows them: run at both batch sizes and read the actual shapes.
        ra, rb = runtime_shapes_at(model, unknown, (2, 3))
        for name in unknown:
            if name in ra and name in rb:
                a[name] = (ra[name][0], ra[name][1])
                b[name] = (rb[name][0], rb[name][1])
    out = {}
    for name, (sa, ta) in a.items():
        sb = b.get(name, (None, ta))[0]
        if sa is None or sb is None or len(sa) != len(sb):
            out[name] = (None, ta)
            continue
        out[name] = (tuple(x if (isinstance(x, int) and x == y) else None
                           for x, y in zip(sa, sb)), ta)
        if batch_dims is not None:
            batch_dims[name] = tuple(x == 2 and y == 3 for x, y in zip(sa, sb))
    return out


def np_dtype(elem_type: int):
    return helper.tensor_dtype_to_np_dtype(elem_type)


def unique_namer(graph: onnx.GraphProto, prefix: str):
    """A function giving fresh tensor/node names that cannot clash with the graph's."""
    taken = {i.name for i in graph.input} | {o.name for o in graph.output}
    taken |= initializer_names(graph)
    for n in graph.node:
        taken.update(n.output)
        taken.add(n.name)
    counter = [0]

    def fresh(hint: str = "t") -> str:
        while True:
            counter[0] += 1
            name = f"{prefix}{hint}_{counter[0]}"
            if name not in taken:
                taken.add(name)
                return name

    return fresh


def shell(model: ModelProto, skip: Iterable[str] = ()) -> ModelProto:
    """A new model with ``model``'s fields except ``graph`` fields named in ``skip`` (no
    deep copy of what is skipped: building a sub-model of a 330 MB ViT-B costs nothing)."""
    m = ModelProto()
    copy_fields(m, model, "graph")
    copy_fields(m.graph, model.graph, set(skip))
    return m


def ancestor_nodes(graph: onnx.GraphProto, names: Iterable[str]) -> tuple[list[NodeProto], set[str]]:
    """The nodes ``names`` depend on (in topological order) and every tensor name they read."""
    needed = set(names)
    nodes = []
    for node in reversed(topo_sort(graph)):
        if any(o in needed for o in node.output):
            nodes.append(node)
            needed.update(i for i in node.input if i)
            needed.update(subgraph_inputs(node))
    nodes.reverse()
    return nodes, needed


def ancestors(model: ModelProto, names: Iterable[str]) -> ModelProto:
    """A model computing only ``names`` (its outputs, untyped): the nodes they depend on, the
    initializers those read, every real input of ``model``; no value_info (stale shapes)."""
    g = model.graph
    names = list(names)
    nodes, needed = ancestor_nodes(g, names)
    m = shell(model, ("node", "initializer", "output", "value_info", "input"))
    inits = initializer_names(g)
    m.graph.input.extend(i for i in g.input if i.name not in inits)
    m.graph.node.extend(nodes)
    m.graph.initializer.extend(t for t in g.initializer if t.name in needed)
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in dict.fromkeys(names))
    return m


def runtime_shapes(model: ModelProto, names: list[str], batch: int) -> dict:
    """Actual shapes of tensors when the model runs on zeros at the given batch size."""
    return runtime_shapes_at(model, names, (batch,))[0]


def runtime_shapes_at(model: ModelProto, names: list[str], batches: Iterable[int], *,
                      feeds: dict[int, dict[str, np.ndarray]] | None = None,
                      values: Sequence[str] = (), got: dict[str, np.ndarray] | None = None) -> list[dict]:
    """:func:`runtime_shapes` at several batch sizes: one session of only the nodes the
    names depend on (on ViT-B the class-token Expand needs the input's Shape, not the 12
    blocks), run once per batch size. Every symbolic dim 0 of an input takes the batch
    size; an entry is {} where onnxruntime cannot run the graph.

    ``feeds``: the inputs to run at a batch size (default zeros); ``values``: tensors whose
    values at the first batch size are written into ``got`` as well (graph preparation
    fetches the original model's outputs on the verification's inputs in the same run; the
    session has no graph optimisation, so these are the graph's own ONNX semantics)."""
    batches = list(batches)
    names = list(dict.fromkeys(names))
    values = [v for v in dict.fromkeys(values) if v not in names] if got is not None else []
    if not names and not values:
        return [{} for _ in batches]
    sub = ancestors(model, names + values)
    inputs = real_inputs(sub.graph)
    for vi in inputs:
        dims = list(value_info_shape(vi) or ())
        if dims and not isinstance(dims[0], int):
            dims[0] = "N"
            set_dims(vi, dims)
    try:
        # two runs: building pre-packed copies of every weight costs more than it saves
        sess = make_session(sub, "cpu", optimization="none", config={NO_PREPACK: "1"})
    except Exception:
        return [{} for _ in batches]
    results = []
    given_feeds = feeds or {}
    for k, batch in enumerate(batches):
        feeds = {}
        for vi in inputs:
            dims = list(value_info_shape(vi) or ())
            if dims and not isinstance(dims[0], int):
                dims[0] = batch
            if not dims or any(not isinstance(d, int) for d in dims):
                feeds = None
                break
            feeds[vi.name] = np.zeros(dims, np_dtype(vi.type.tensor_type.elem_type))
        if feeds is not None and batch in given_feeds:
            mine = given_feeds[batch]
            if set(mine) != set(feeds) or any(np.shape(mine[n]) != feeds[n].shape for n in feeds):
                raise GraphError(f"runtime_shapes_at: feeds at batch {batch} do not match the inputs "
                                 f"{ {n: v.shape for n, v in feeds.items()} }")
            feeds = dict(mine)
        fetch = names + (values if k == 0 else [])
        if not fetch:  # values only: nothing to run at the other sizes
            results.append({})
            continue
        try:
            res = sess.run(fetch, feeds) if feeds is not None else None
        except Exception:
            res = None
        if res is None:
            results.append({})
            continue
        if k == 0 and values:
            got.update(zip(values, res[len(names):]))
        out = {}
        for name, value in zip(names, res):
            value = np.asarray(value)
            out[name] = (tuple(int(d) for d in value.shape),
                         helper.np_dtype_to_tensor_dtype(value.dtype))
        results.append(out)
    return results
