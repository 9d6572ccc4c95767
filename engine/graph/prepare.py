"""Prepare an exported classifier for gradient building: pin shapes, fold, verify.

Exporters leave shape arithmetic in graphs (TF "same" padding computed from ``x.shape``,
torch's decomposed LRN with an ``If``, ``Flatten`` as ``Shape/Gather/Concat/Reshape``). The
reverse-mode builder needs every non-batch size to be static, so :func:`prepare_model`
folds those chains away and then proves, numerically, that nothing changed.

Batch handling: the folding runs twice, at batch 2 and at batch 3. Folded values that
agree are batch-independent constants; a value that differs depends on the batch size and
is rewritten into a batch-agnostic form where the data flow allows it (a ``Reshape`` shape
entry equal to the batch becomes ``0`` when the data's own dim at that position is the
batch, else ``-1``; an ``Expand`` entry becomes ``1``). Anything else is refused with a
message asking for a concrete batch. The prepared graph therefore keeps a symbolic batch
``N`` and is verified at batch 1 and batch 2 (batch 2 against two batch-1 runs).

Graphs exported with a static batch of 1 get their constant ``Reshape`` shapes that start
with the hard-coded 1 rewritten to ``0`` (copy the batch) when the data's dim 0 is the
batch; if the graph still does not run batched (e.g. a folded ``[1, 1, D]`` class token
concatenated to the patch tokens), the prepared graph keeps batch 1 and records
``onnxplain.fixed_batch = 1`` in its metadata so callers run one sample at a time.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import onnx
from onnx import ModelProto, helper, numpy_helper

from . import _util as U
from ..runtime import make_session
from .diagnose import declared_shape_errors
from .errors import GraphError, node_error

log = logging.getLogger(__name__)

FIXED_BATCH_KEY = "onnxplain.fixed_batch"
BATCH_DIM = "N"
# Non-deterministic ops must never be folded.
_NO_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
            "Multinomial", "Bernoulli", "Loop", "Scan", "If", "SequenceConstruct"}
_MAX_FOLD_ELEMENTS = 1 << 20


def prepare_model(
    model: ModelProto,
    input_shape: Mapping[str, Sequence[int | str | None]] | None = None,
    *,
    verify: bool = True,
    keep: Sequence[str] = (),
    rtol: float = 1e-4,
    atol: float = 1e-5,
    prepared_session: Callable[[ModelProto], Any] | None = None,
    verified: dict | None = None,
) -> ModelProto:
    """Pin input shapes, fold constants and shape subgraphs, and verify the result.

    Parameters
    ----------
    model : onnx.ModelProto
        The exported model; never modified.
    input_shape : dict of str to list, optional
        Shape per graph input. Dim 0 may be an int (the graph is then fixed to that batch)
        or ``"N"``/None (symbolic batch, the default). Other dims must be ints where the
        model leaves them symbolic.
    verify : bool
        Compare outputs of the original and the prepared model on random inputs in
        onnxruntime (batch 1, and batch 2 when batched) and raise on mismatch.
    keep : sequence of str
        Intermediate tensor names that must survive (e.g. layers the user may tap).
        Graph outputs always survive.
    rtol, atol : float
        Verification tolerance: ``max|a - b| <= atol + rtol * max|a|`` per output.
    prepared_session : callable(prepared ModelProto) -> onnxruntime CPU session or None, optional
        The session the verification runs the prepared model in (the gradient engine's own
        forward session); None or returning None: a new one.
    verified : dict, optional
        Filled with ``"feeds"`` and ``"outputs"``: the verification's first inputs and the
        prepared model's outputs on them (the gradient engine's build-time guard reuses them).

    Returns
    -------
    onnx.ModelProto
        A new model, opset >= 13, shape-inferred, with the same input and output names.

    Raises
    ------
    GraphError
        On a symbolic non-batch input dim, a batch-dependent fold that cannot be made
        batch-agnostic, a kept name that does not exist, or a verification mismatch.
    """
    original = model  # only read (verification runs it)
    m = U.ensure_opset(U.copy_model(model))
    _drop_initializer_inputs(m)
    _check_keep(m, keep)
    batch, static1 = _pin_inputs(m, input_shape)
    # The verification's batch-2 inputs, drawn now: where the fold's shape probe runs (most
    # of) the original graph anyway, it runs it on these at batch 2 and fetches the outputs
    # too, so the verification needs no session and no run of the original of its own (on
    # ViT-B/16 ~1 s). Only where m still is the original graph (no opset conversion; a
    # batch-1 export is verified at batch 1) and the batch stays symbolic.
    probe = None
    if verify and batch is None and not static1 and U.onnx_opset(original) >= U.MIN_OPSET:
        try:
            probe = {"feeds": _random_feeds(_input_specs(m.graph), 2, np.random.default_rng(0)), "outputs": {}}
        except GraphError:  # inputs the verification cannot draw: it will say so itself
            probe = None
    keep_names = list(dict.fromkeys(list(keep) + [o.name for o in m.graph.output]))

    # Only a batch-1 export may be built twice (see below); otherwise the first build may
    # consume m itself (a copy of ViT-B/16's 330 MB proto costs ~0.25 s).
    second_build = batch is None and static1

    def build(fixed: int | None, consume: bool = False) -> ModelProto:
        # every step below rewrites the model it is given in place (there were six copies
        # per build); one copy of m unless m is no longer needed
        g = m if consume else U.copy_model(m)
        if fixed is not None:
            _set_batch(g, fixed)
            g = _fold(g, (fixed,), keep_names)
        else:
            if static1:
                g = _debatch_reshapes(g)
            g = _fold(g, (2, 3), keep_names, probe=probe if consume else None)
        g = _ort_basic(g, keep_names)
        g = _scalarize_uniform_constants(g)
        return _finalize(g, fixed)

    prepared = build(batch, consume=not second_build)
    if second_build:
        # A graph exported at batch 1 may hide the batch in constants we cannot see through.
        try:
            _check_batch_consistency(prepared, rtol, atol)
        except GraphError as exc:
            log.warning("graph exported with static batch 1 does not run batched after "
                        "preparation (%s); keeping batch 1", exc)
            batch = 1
            prepared = build(1, consume=True)
    if batch is not None:
        prepared.metadata_props.append(
            onnx.StringStringEntryProto(key=FIXED_BATCH_KEY, value=str(batch)))
    if verify:
        original_run = None
        if probe is not None and len(probe["outputs"]) == len(original.graph.output):
            original_run = (probe["feeds"], probe["outputs"])
        sess = prepared_session(prepared) if prepared_session is not None else None
        feeds, outputs = verify_equivalent(original, prepared, rtol=rtol, atol=atol, prepared_session=sess,
                                           original_run=original_run)
        if verified is not None:
            verified.update(feeds=feeds, outputs=outputs)
    return prepared


def fixed_batch(model: ModelProto) -> int | None:
    """The batch size a prepared model is pinned to, or None for a symbolic batch."""
    for p in model.metadata_props:
        if p.key == FIXED_BATCH_KEY:
            return int(p.value)
    return None


def verify_equivalent(
    original: ModelProto,
    prepared: ModelProto,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    seed: int = 0,
    prepared_session=None,
    original_run: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Raise GraphError unless prepared computes the original's outputs.

    Runs both on the same standard-normal inputs at batch 2 where both graphs accept it,
    else at batch 1; a symbolic-batch prepared graph must also give, for each row of that
    batch of 2 run alone, the batch-2 row (so prepared at batch 1 equals the original's row
    within twice the tolerance). Six sample-runs and one session of each graph (two and
    none of the original with ``original_run``): on ViT-B/16 each sample-run is ~0.3-0.7 CPU s.

    ``prepared_session``: an onnxruntime CPU session of ``prepared`` to run it in (the
    gradient engine's own forward session, so its build-time guard can reuse the outputs
    below instead of running the same batch again); default a new one.

    ``original_run``: (feeds, outputs by name) of the original model on the batch this
    comparison would draw (preparation's shape probe fetched them, running the original
    graph without optimisation); used where the feeds fit the prepared model's inputs at
    the batch chosen here, else the original runs in a session of its own.

    Returns
    -------
    (feeds, outputs)
        The inputs of the first comparison and the prepared model's outputs on them (by
        output name), as compared with the original's.
    """
    rng = np.random.default_rng(seed)
    prep_sess = prepared_session if prepared_session is not None else _session(prepared)
    orig_static1 = any((U.value_info_shape(i) or (None,))[0] == 1
                       for i in U.real_inputs(original.graph))
    batched = not (orig_static1 or fixed_batch(prepared) == 1)
    feeds = _random_feeds(prep_sess.get_inputs(), 2 if batched else 1, rng)
    names = [o.name for o in original.graph.output]
    if original_run is not None and _same_feeds(original_run[0], feeds) and set(names) <= set(original_run[1]):
        feeds = original_run[0]
        want = [original_run[1][n] for n in names]
    else:
        want = _session(original).run(names, feeds)
    prep_names = [o.name for o in prep_sess.get_outputs()]
    got = dict(zip(prep_names, _run_prepared(prepared, prep_sess, feeds, 2 if batched else 1)))
    _compare_all(names, want, got, rtol, atol, f"original vs prepared at batch {2 if batched else 1}")
    if batched and fixed_batch(prepared) is None:
        for k in range(2):
            one = _run_prepared(prepared, prep_sess, {n: v[k:k + 1] for n, v in feeds.items()}, 1)
            for name, a in zip(prep_names, one):
                _compare(name, a, got[name][k:k + 1], rtol, atol, f"batch 2 row {k} vs batch 1")
    return feeds, got


def _same_feeds(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """Same input names, shapes, dtypes and values (the arrays are compared in full)."""
    return set(a) == set(b) and all(a[n].shape == b[n].shape and a[n].dtype == b[n].dtype
                                    and np.array_equal(a[n], b[n]) for n in a)


def _compare_all(names, want, got, rtol, atol, what):
    for name, a in zip(names, want):
        if name not in got:
            raise GraphError(f"prepared model lost output {name!r}")
        _compare(name, a, got[name], rtol, atol, what)


# --------------------------------------------------------------------------- helpers


def _compare(name, want, got, rtol, atol, what):
    want = np.asarray(want)
    got = np.asarray(got)
    if want.shape != got.shape:
        raise GraphError(f"{what}: output {name!r} has shape {got.shape}, expected {want.shape}")
    if want.dtype.kind not in "fc":
        if not np.array_equal(want, got):
            raise GraphError(f"{what}: output {name!r} differs")
        return
    err = float(np.max(np.abs(want.astype(np.float64) - got))) if want.size else 0.0
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    if not np.isfinite(err) or err > atol + rtol * scale:
        raise GraphError(
            f"{what}: output {name!r} differs by max |diff| {err:.3g} "
            f"(allowed {atol + rtol * scale:.3g} = atol {atol:g} + rtol {rtol:g} * {scale:.3g})")


def _check_batch_consistency(model: ModelProto, rtol: float, atol: float) -> None:
    """A batch of 2 must equal two batch-1 runs."""
    sess = _session(model)
    rng = np.random.default_rng(1)
    feeds = _random_feeds(sess.get_inputs(), 2, rng)
    both = _run_prepared(model, sess, feeds, 2)
    for k in range(2):
        one = sess.run(None, {n: v[k:k + 1] for n, v in feeds.items()})
        for out, a, b in zip(sess.get_outputs(), one, both):
            _compare(out.name, a, b[k:k + 1], rtol, atol, f"batch 2 row {k} vs batch 1")


def _run_prepared(model: ModelProto, sess, feeds, batch: int):
    """Run the prepared model; a failure names the first wrongly declared shape, if any."""
    try:
        return sess.run(None, feeds)
    except Exception as exc:
        first = str(exc).splitlines()[0][:300]
        try:
            detail = declared_shape_errors(model, batches=(batch,), limit=1)
        except Exception:  # the diagnosis itself failed: report the run error alone
            detail = []
        hint = f"; first wrongly declared shape: {detail[0]}" if detail else ""
        raise GraphError(f"prepared model does not run at batch {batch}: {first}{hint}") from exc


def _session(model: ModelProto):
    # Compare ONNX semantics: a QDQ graph means float arithmetic with fake quantization.
    # onnxruntime would otherwise fuse DequantizeLinear -> Conv -> QuantizeLinear of the
    # original into int8 kernels (QLinearConv) whose requantisation rounds differently,
    # while the prepared graph (weights folded to float) stays float: a difference of
    # one quantisation step that says nothing about the folding. No effect on float graphs.
    try:
        return make_session(model, "cpu", config={"session.disable_quant_qdq": "1"})
    except Exception as exc:
        raise GraphError(f"onnxruntime cannot load the model: {exc}") from exc


_ORT_TYPES = {onnx.TensorProto.FLOAT: "tensor(float)", onnx.TensorProto.DOUBLE: "tensor(double)",
              onnx.TensorProto.FLOAT16: "tensor(float16)", onnx.TensorProto.UINT8: "tensor(uint8)"}


class _Input(NamedTuple):
    """A graph input as onnxruntime describes it (``NodeArg``'s name, type and shape)."""

    name: str
    type: str
    shape: list


def _input_specs(graph: onnx.GraphProto) -> list[_Input]:
    """The real inputs of a graph, described like ``session.get_inputs()``."""
    return [_Input(vi.name, _ORT_TYPES.get(vi.type.tensor_type.elem_type, "other"),
                   list(U.value_info_shape(vi) or ())) for vi in U.real_inputs(graph)]


def _random_feeds(inputs, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Standard-normal (float) or uniform (uint8) inputs at ``batch``; ``inputs`` are
    onnxruntime ``NodeArg``s or :func:`_input_specs`."""
    feeds = {}
    for i in inputs:
        dims = [batch if k == 0 else d for k, d in enumerate(i.shape)]
        if any(not isinstance(d, int) for d in dims):
            raise GraphError(f"input {i.name!r} has non-static shape {i.shape}")
        if "float" in i.type:
            dtype = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                     "tensor(float16)": np.float16}.get(i.type, np.float32)
            feeds[i.name] = rng.standard_normal(dims).astype(dtype)
        elif "uint8" in i.type:
            feeds[i.name] = rng.integers(0, 256, dims).astype(np.uint8)
        else:
            raise GraphError(f"input {i.name!r} has type {i.type}; only float and uint8 "
                             "inputs can be verified")
    return feeds


def _drop_initializer_inputs(m: ModelProto) -> None:
    """Old IR versions list initializers as inputs; they are constants, not inputs."""
    inits = U.initializer_names(m.graph)
    keep = [i for i in m.graph.input if i.name not in inits]
    del m.graph.input[:]
    m.graph.input.extend(keep)


def _check_keep(m: ModelProto, keep: Sequence[str]) -> None:
    names = {o for n in m.graph.node for o in n.output} | {i.name for i in m.graph.input}
    missing = [k for k in keep if k not in names]
    if missing:
        raise GraphError(f"keep names not produced by the graph: {missing}")


def _pin_inputs(m: ModelProto, input_shape) -> tuple[int | None, bool]:
    """Write the requested shapes; return (concrete batch or None, exported-at-batch-1)."""
    given = dict(input_shape or {})
    inputs = U.real_inputs(m.graph)
    unknown = set(given) - {i.name for i in inputs}
    if unknown:
        raise GraphError(f"input_shape names unknown inputs {sorted(unknown)}; "
                         f"graph inputs are {[i.name for i in inputs]}")
    batch = None
    static1 = False
    for vi in inputs:
        model_dims = list(U.value_info_shape(vi) or ())
        dims = list(given.get(vi.name, model_dims))
        if model_dims and len(dims) != len(model_dims):
            raise GraphError(f"input_shape[{vi.name!r}] has rank {len(dims)}; the model "
                             f"input has rank {len(model_dims)} ({model_dims})")
        if not dims:
            raise GraphError(f"input {vi.name!r} has no shape; pass input_shape")
        for k, d in enumerate(dims[1:], start=1):
            if not isinstance(d, (int, np.integer)) or d <= 0:
                raise GraphError(
                    f"input {vi.name!r} dim {k} is {d!r}; every non-batch dim must be a "
                    f"positive int (pass input_shape={{{vi.name!r}: [...]}})")
        d0 = dims[0]
        if isinstance(d0, (int, np.integer)) and vi.name in given:
            batch = int(d0)
        elif isinstance(d0, (int, np.integer)) and int(d0) == 1:
            static1 = True
            dims[0] = BATCH_DIM
        elif isinstance(d0, (int, np.integer)):
            batch = int(d0)
        else:
            dims[0] = BATCH_DIM
        U.set_dims(vi, dims)
    return batch, static1


def _set_batch(m: ModelProto, batch: int) -> None:
    for vi in U.real_inputs(m.graph):
        dims = list(U.value_info_shape(vi))
        dims[0] = batch
        U.set_dims(vi, dims)


def _fold(model: ModelProto, batches: Sequence[int], keep: Sequence[str], probe: dict | None = None) -> ModelProto:
    """Fold Constant/Shape/Size/If-on-constant and small all-constant nodes, to a fixpoint.

    The graph is evaluated at every batch size in ``batches`` in lockstep. A node whose
    values agree across them becomes an initializer. An integer vector that differs (a
    shape that contains the batch) is remembered per batch but its node stays; at the end
    its Reshape/Expand consumers get a batch-agnostic constant where possible
    (:func:`_batch_agnostic`), and the dynamic chain is kept where not.

    ``probe`` (``{"feeds": ..., "outputs": {}}``, batch 2 first in ``batches``): where the
    shape probe below runs at least half of the graph's nodes anyway, its first run takes
    these feeds instead of zeros and writes the graph outputs into ``probe["outputs"]``
    (the original model's outputs for the verification). A shape that depends on the data
    then differs between that run and the zeros at batch 3, so it is not folded.
    """
    m = model  # in place (see prepare_model's build)
    _set_batch(m, BATCH_DIM)
    g = m.graph
    keep = set(keep)
    dyn: dict[str, list[np.ndarray]] = {}
    # The shapes Shape/Size nodes read, as onnxruntime computes them at each batch size:
    # onnx inference learns a Reshape's output shape only after its shape input is folded,
    # so chains through 12 transformer blocks took one re-inference each (~100 passes,
    # minutes on ViT-B). Facts from one run per batch fold them all in one pass; the
    # result is verified against the original model like every fold.
    probed = [n.input[0] for n in g.node if n.op_type in ("Shape", "Size") and n.input]
    share: dict = {}
    if probe is not None and probed and batches[0] == 2 and 2 * len(U.ancestor_nodes(g, probed)[0]) >= len(g.node):
        # onnxruntime runs every node of a session whatever is fetched: fetching the outputs
        # too costs little only where the probe runs most of the graph already
        share = dict(feeds={2: probe["feeds"]}, values=[o.name for o in g.output], got=probe["outputs"])
    runtime = U.runtime_shapes_at(m, probed, batches, **share)
    lazy = _LazyConstants(g)
    unfoldable: set[str] = set()
    for _ in range(100):
        shapes = [U.infer(U.with_batch(m, b, light=True)) for b in batches]
        for k in range(len(batches)):
            for name, (shape, t) in runtime[k].items():
                known = shapes[k].get(name, (None, 0))[0]
                if known is None or not all(isinstance(d, int) for d in known):
                    shapes[k][name] = (shape, t)
        consts = lazy
        changed = False
        new_nodes = []
        for node in U.topo_sort(g):
            if node.op_type == "If" and node.input[0] in consts and not any(
                    o in keep for o in node.output):
                cond = bool(np.asarray(consts[node.input[0]]).reshape(-1)[0])
                nodes, inits = _inline_branch(
                    node, U.attr(node, "then_branch" if cond else "else_branch"))
                new_nodes.extend(nodes)
                g.initializer.extend(inits)
                changed = True
                continue
            if any(o in dyn or o in unfoldable for o in node.output):
                new_nodes.append(node)
                continue
            values = [_try_fold(node, consts, dyn, k, shapes[k], keep)
                      for k in range(len(batches))]
            if any(v is None for v in values):
                new_nodes.append(node)
                continue
            same = all(set(v) == set(values[0]) and all(
                v[o].shape == values[0][o].shape and np.array_equal(v[o], values[0][o])
                for o in v) for v in values[1:])
            changed = True
            if same:
                for name, value in values[0].items():
                    g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
                    consts.put(name, value)
                continue
            new_nodes.append(node)
            for name in values[0]:
                v0 = values[0][name]
                if v0.dtype.kind in "iu" and v0.ndim <= 1:
                    dyn[name] = [v[name] for v in values]
                else:
                    # batch-dependent and not a shape vector (e.g. a class token expanded
                    # to the batch): stays computed; never retried (it kept the loop
                    # running to its 100-pass cap on ViT-B)
                    unfoldable.add(name)
        del g.node[:]
        g.node.extend(new_nodes)
        if not changed:
            break
    if dyn:
        shapes = [U.infer(U.with_batch(m, b, light=True)) for b in batches]
        replaced = {}
        for node in g.node:
            if any(o in dyn for o in node.output):
                continue
            for k, i in enumerate(node.input):
                if i not in dyn:
                    continue
                try:
                    fixed = _batch_agnostic(node, k, dyn[i][0], dyn[i][1], shapes[0], shapes[1])
                except GraphError as exc:
                    log.debug("keeping a dynamic shape chain: %s", exc)
                    continue
                name = f"{i}__batch_agnostic_{len(replaced)}"
                replaced[name] = fixed
                node.input[k] = name
        for name, value in replaced.items():
            g.initializer.append(numpy_helper.from_array(value.astype(np.int64), name))
    _remove_unused(m)
    if len(batches) == 1:
        _set_batch(m, batches[0])
    return m


class _LazyConstants:
    """Initializer values by name, converted to numpy on first use (weights rarely are)."""

    def __init__(self, graph):
        self.graph = graph
        self.cache: dict[str, np.ndarray] = {}
        self.protos: dict[str, onnx.TensorProto] = {}
        self.seen = 0

    def _sync(self):
        inits = self.graph.initializer
        for t in inits[self.seen:]:
            self.protos[t.name] = t
        self.seen = len(inits)

    def __contains__(self, name) -> bool:
        self._sync()
        return name in self.protos

    def __getitem__(self, name) -> np.ndarray:
        if name not in self.cache:
            self._sync()
            self.cache[name] = numpy_helper.to_array(self.protos[name])
        return self.cache[name]

    def size(self, name) -> int:
        self._sync()
        return math.prod(self.protos[name].dims)

    def put(self, name, value) -> None:
        self._sync()
        self.cache[name] = value


def _try_fold(node, consts, dyn, k, shapes, keep):
    """Values for the node's outputs at the k-th batch size, or None."""
    if any(o in keep for o in node.output):
        return None
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return None
    if op == "Constant":
        return {node.output[0]: U.constant_node_value(node)}
    if op in ("Shape", "Size"):
        shape = shapes.get(node.input[0], (None, 0))[0]
        if shape is None or not all(isinstance(d, int) for d in shape):
            return None
        if op == "Size":
            return {node.output[0]: np.array(int(np.prod(shape)), dtype=np.int64)}
        start = U.attr(node, "start", 0)
        end = U.attr(node, "end", None)
        return {node.output[0]: np.array(shape[start:end], dtype=np.int64)}
    if op in _NO_FOLD or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                             for a in node.attribute):
        return None
    ins = [i for i in node.input if i]
    if not ins or not all(i in consts or i in dyn for i in ins):
        return None
    if sum(consts.size(i) if i in consts else dyn[i][k].size for i in ins) > _MAX_FOLD_ELEMENTS:
        return None  # big weight transforms are left to onnxruntime's folding
    values = {i: (consts[i] if i in consts else dyn[i][k]) for i in ins}
    for o in node.output:
        s = shapes.get(o, (None, 0))[0]
        if s is not None and all(isinstance(d, int) for d in s) and np.prod(s) > _MAX_FOLD_ELEMENTS:
            return None
    return _evaluate(node, values)


def _evaluate(node, values):
    from onnx.reference import ReferenceEvaluator

    inputs = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for i, v in values.items()]
    outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
               for o in node.output if o]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    try:
        ev = ReferenceEvaluator(helper.make_model(graph))
        res = ev.run(None, values)
    except Exception as exc:  # an op the reference runtime lacks: leave it in the graph
        log.debug("not folding %s (%s): %s", node.name, node.op_type, exc)
        return None
    return {o: np.asarray(r) for o, r in zip([o for o in node.output if o], res)}


def _inline_branch(node, branch: onnx.GraphProto):
    """The branch's nodes (local names made unique) writing the If's outputs."""
    prefix = f"{node.name or node.output[0]}/"
    local = {t.name for t in branch.initializer} | {o for n in branch.node for o in n.output}
    rename = {name: prefix + name for name in local}
    nodes = []
    for n in branch.node:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.name = prefix + (n.name or n.output[0])
        for k, i in enumerate(c.input):
            c.input[k] = rename.get(i, i)
        for k, o in enumerate(c.output):
            c.output[k] = rename.get(o, o)
        nodes.append(c)
    inits = []
    for t in branch.initializer:
        c = onnx.TensorProto()
        c.CopyFrom(t)
        c.name = rename[t.name]
        inits.append(c)
    for out, bo in zip(node.output, branch.output):
        nodes.append(helper.make_node("Identity", [rename.get(bo.name, bo.name)], [out],
                                      name=f"{prefix}out_{out}"))
    return [nodes, inits]


def _remove_unused(m: ModelProto) -> None:
    """Drop nodes and initializers that no graph output depends on."""
    g = m.graph
    needed = {o.name for o in g.output}
    keep_nodes = []
    for node in reversed(U.topo_sort(g)):
        if any(o in needed for o in node.output):
            keep_nodes.append(node)
            needed.update(i for i in node.input if i)
            needed.update(U.subgraph_inputs(node))
    keep_nodes.reverse()
    del g.node[:]
    g.node.extend(keep_nodes)
    _drop_initializers(g, needed)


def _drop_initializers(g: onnx.GraphProto, needed: set[str]) -> None:
    """Delete the initializers not in ``needed``, in place: re-adding the kept ones would copy
    every weight (~0.2 s per pass over ViT-B/16's 330 MB)."""
    for k in reversed([k for k, t in enumerate(g.initializer) if t.name not in needed]):
        del g.initializer[k]


def _batch_agnostic(node, k, a, b, sa, sb) -> np.ndarray:
    """Rewrite a folded shape vector that differs between batch 2 (a) and 3 (b)."""
    what = "a folded value that depends on the batch size"
    if node.op_type not in ("Reshape", "Expand") or k != 1 or a.ndim != 1 or a.shape != b.shape:
        raise node_error(node, f"input {k} is {what}; pass a concrete batch in input_shape")
    data_a = sa.get(node.input[0], (None, 0))[0]
    data_b = sb.get(node.input[0], (None, 0))[0]
    if data_a is None or data_b is None:
        raise node_error(node, f"input {k} is {what} and the data shape is unknown")
    out = a.copy()
    for i in np.nonzero(a != b)[0]:
        if not (a[i] == 2 and b[i] == 3):
            raise node_error(node, f"shape entry {i} ({a[i]} at batch 2, {b[i]} at batch 3) "
                             "is not the batch size; pass a concrete batch in input_shape")
        if node.op_type == "Reshape":
            if i < len(data_a) and data_a[i] == 2 and data_b[i] == 3:
                out[i] = 0
            elif -1 not in np.delete(a, i):
                out[i] = -1
            else:
                raise node_error(node, f"cannot express shape entry {i} without the batch "
                                 "size; pass a concrete batch in input_shape")
        else:  # Expand broadcasts right-aligned; 1 keeps the data's own (batch) size
            j = len(data_a) - (len(a) - i)
            if j >= 0 and data_a[j] == 2 and data_b[j] == 3:
                out[i] = 1
            else:
                raise node_error(node, f"expands to the batch size at entry {i}; pass a "
                                 "concrete batch in input_shape")
    return out


def _debatch_reshapes(model: ModelProto) -> ModelProto:
    """Constant Reshape shapes [1, ...] in a batch-1 export: copy the batch (0) instead.

    One Reshape per pass (its fix makes later data shapes batch-symbolic, which the next
    shape inference sees). Terminates: a rewritten node's shape constant starts with 0,
    which no later pass matches, so there are at most as many passes as Reshape nodes;
    a node matched twice would be a bug and is an error naming it, never a silent stop.
    """
    m = model  # in place (see prepare_model's build)
    g = m.graph
    rewritten: set[str] = set()
    while True:
        shapes = U.batched_shapes(m)
        changed = False
        for node in U.topo_sort(g):
            if node.op_type != "Reshape":
                continue
            data = shapes.get(node.input[0], (None, 0))[0]
            if not data or data[0] is not None:
                continue
            value = U.constant_value(g, node.input[1])
            if value is None or value.ndim != 1 or not len(value) or value[0] != 1:
                continue
            key = node.name or node.output[0]
            if key in rewritten:
                raise node_error(node, "its batch-1 shape was already rewritten to copy the batch "
                                 "and matched again (internal error in prepare._debatch_reshapes)")
            rewritten.add(key)
            new = value.copy()
            new[0] = 0
            name = f"{node.input[1]}__batch0_{key}"
            g.initializer.append(numpy_helper.from_array(new.astype(np.int64), name))
            node.input[1] = name
            changed = True
            break  # later shapes depend on this fix
        if not changed:
            break
    _remove_unused(m)
    return m


_RAM_DIR = "/dev/shm"
_ITEMSIZE = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.BFLOAT16: 2,
             onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1, onnx.TensorProto.BOOL: 1,
             onnx.TensorProto.INT16: 2, onnx.TensorProto.UINT16: 2, onnx.TensorProto.INT32: 4}
NO_PREPACK = U.NO_PREPACK


def _ort_basic(model: ModelProto, keep: Sequence[str]) -> ModelProto:
    """onnxruntime's basic (portable) optimisations, kept names exposed so they survive."""

    m = model  # in place (see prepare_model's build)
    outputs = {o.name for o in m.graph.output}
    extra = [k for k in keep if k not in outputs]
    for name in extra:
        m.graph.output.append(helper.make_empty_tensor_value_info(name))
    # In memory where the system has a RAM file system with room for it (twice the model: a
    # container's /dev/shm may be 64 MB): on disk, writing, reading back and deleting
    # ViT-B/16's 330 MB cost ~1 s more. Any failure there is retried on disk.
    dirs = [None]
    try:
        st = os.statvfs(_RAM_DIR)
        # the weights' size from their dims (ByteSize() serialises the whole model in upb)
        size = sum(math.prod(t.dims) * _ITEMSIZE.get(t.data_type, 8) for t in m.graph.initializer)
        if st.f_bavail * st.f_frsize > 2 * size + (1 << 26):
            dirs.insert(0, _RAM_DIR)
    except (OSError, AttributeError):  # no /dev/shm (macOS, Windows)
        pass
    for k, where in enumerate(dirs):
        try:
            fd, path = tempfile.mkstemp(suffix=".onnx", dir=where)
        except OSError:
            if k + 1 < len(dirs):
                continue
            raise
        os.close(fd)
        try:
            # onnxruntime's QDQ transformers (Q/DQ propagation, DQ duplication, S8->U8, ...)
            # run at the basic level too and are not value-preserving for a QDQ graph
            # evaluated in float (EfficientNet-Lite0 int8: probabilities off by 0.06-0.2);
            # only folding is wanted here.
            try:
                # the session never runs: no pre-packed weight copies (~0.3 s on ViT-B/16)
                make_session(m, "cpu", optimization="basic", optimized_model_path=path,
                             config={"session.disable_quant_qdq": "1", NO_PREPACK: "1"})
                opt = onnx.load(path)
                break
            except Exception as exc:
                if k + 1 < len(dirs):
                    log.info("onnxruntime's optimised graph in %s failed (%s); retrying on disk", where, exc)
                    continue
                raise GraphError(f"onnxruntime cannot load the folded model: {exc}") from exc
        finally:
            os.unlink(path)
    foreign = {n.domain for n in opt.graph.node if n.domain not in ("", "ai.onnx")}
    if foreign - {n.domain for n in model.graph.node}:
        raise GraphError(f"onnxruntime basic optimisation introduced ops from {foreign}")
    keep_out = [o for o in opt.graph.output if o.name in outputs]
    del opt.graph.output[:]
    opt.graph.output.extend(keep_out)
    # ORT may add opset imports for domains it no longer uses; keep the model's own.
    del opt.opset_import[:]
    opt.opset_import.extend(model.opset_import)
    opt.ir_version = model.ir_version
    return opt


_ELEMENTWISE_BINARY = {"Add", "Sub", "Mul", "Div"}


def _scalarize_uniform_constants(model: ModelProto) -> ModelProto:
    """Replace a constant operand whose elements are all equal by a scalar (bit-exact).

    Fused preprocessing multiplies NHWC pixels by a per-channel vector ``[3]``; when the
    three values are equal (mean/std shared by all channels) the broadcast along the
    innermost axis is ~10x slower in onnxruntime than a scalar, in the forward pass and in
    its backward rule alike. Only done where the other operand already has the output's
    shape, so shapes and values are unchanged.
    """
    m = model  # in place (see prepare_model's build)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    shapes = None
    added = {}
    for node in g.node:
        if node.op_type not in _ELEMENTWISE_BINARY or len(node.input) != 2:
            continue
        for k in (0, 1):
            t = inits.get(node.input[k])
            if t is None or len(t.dims) == 0 or int(np.prod(t.dims)) < 2:
                continue
            value = numpy_helper.to_array(t)
            flat = value.reshape(-1)
            if not np.all(flat.view(np.uint8).reshape(flat.size, -1) ==
                          flat[:1].view(np.uint8).reshape(1, -1)):
                continue  # not bitwise uniform (also keeps -0.0 / NaN patterns exact)
            if shapes is None:
                shapes = U.infer(m)
            other = shapes.get(node.input[1 - k], (None, 0))[0]
            if other is None or len(other) < value.ndim:
                continue
            tail = other[len(other) - value.ndim:]
            if not all(c == 1 or (isinstance(d, int) and c == d)
                       for c, d in zip(value.shape, tail)):
                continue  # the constant would widen the output
            key = (value.dtype.str, flat[:1].tobytes())
            if key not in added:
                name = f"{t.name}__scalar"
                while name in inits:
                    name += "_"
                scalar = numpy_helper.from_array(flat[:1].reshape(()).copy(), name)
                g.initializer.append(scalar)
                inits[name] = scalar
                added[key] = name
            node.input[k] = added[key]
    if added:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        for n in g.node:
            used |= U.subgraph_inputs(n)
        _drop_initializers(g, used)
    return m


def _finalize(model: ModelProto, fixed: int | None) -> ModelProto:
    """Order nodes, refresh shape info, and write batch-aware output shapes."""
    m = model  # in place (see prepare_model's build)
    g = m.graph
    nodes = U.topo_sort(g)
    del g.node[:]
    g.node.extend(nodes)
    g.ClearField("value_info")
    batch_dims: dict[str, tuple[bool, ...]] = {}
    if fixed is None:
        shapes = U.batched_shapes(m, batch_dims)
    else:
        shapes = U.infer(m)
    for o in g.output:
        s, t = shapes.get(o.name, (None, o.type.tensor_type.elem_type))
        if s is not None:
            U.set_dims(o, _batch_aware(s, batch_dims.get(o.name, ())))
    # value_info straight from the proven shapes (no second inference over the weights)
    declared = {i.name for i in g.input} | {o.name for o in g.output} | U.initializer_names(g)
    for n in g.node:
        for o in n.output:
            s, t = shapes.get(o, (None, 0))
            if o and o not in declared and s is not None and t:
                g.value_info.append(helper.make_tensor_value_info(
                    o, t, _batch_aware(s, batch_dims.get(o, ())) if fixed is None else list(s)))
    return m


def _batch_aware(dims, exact) -> list:
    """Dims with 'N' only where the size is the batch itself (not e.g. N * tokens).

    A batch-dependent size that is not the batch (a Reshape folding tokens or heads into
    dim 0) is left unknown: declaring it 'N' lets onnxruntime's memory planner reuse a
    buffer of the wrong size (the "Shape mismatch attempting to re-use buffer" warnings,
    and wrong gradients on LeViT / EfficientFormer).
    """
    return [BATCH_DIM if (d is None and k < len(exact) and exact[k]) else d
            for k, d in enumerate(dims)]
