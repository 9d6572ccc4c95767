"""Reverse-mode (VJP) graph construction: an ONNX model into its own gradient model.

The returned model runs in a plain onnxruntime InferenceSession: every backward rule is
written with standard ONNX ops (no training kernels). It takes the original inputs plus a
``seed`` tensor shaped like the reduction tensor (with the batch dim) and returns
``grad:<name>`` = d(sum(seed * R)) / d(name) for every requested tensor, per sample.

Rectifier modes (``relu_mode``) apply to every ``Relu`` node and, unless ``rectifiers``
says otherwise, to every ``Clip`` whose lower bound is 0 (ReLU6 exports): guided backprop
then passes ``mask(lo < x < hi) * relu(g)`` and deconvnet ``relu(g)``. Rationale: ReLU6 is
a rectifier and the bundled EfficientNet-Lite0 has no plain ReLU, so guided backprop
would otherwise equal the plain gradient. captum's GuidedBackprop overrides only
``nn.ReLU`` modules; pass ``rectifiers=("Relu",)`` for captum parity. LeakyRelu, HardSwish
and other activations always use their standard derivative.

The model should come from :func:`onnxplain.graph.prepare.prepare_model` (static non-batch
sizes, folded shape chains); the batch dim may be symbolic.

Precision: float16 / bfloat16 graphs are differentiated in float32 (:func:`widen_float16`:
the gradient of the float32 network on the half-precision weights, exact up to the
float16 rounding of activations). QDQ graphs (QuantizeLinear -> DequantizeLinear fake
quantization) use the straight-through estimator for the rounding and the exact mask of
the saturation (:func:`_vjp_quantize`); DequantizeLinear of constant weights is folded
by preparation, so weights stay constants.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from . import _util as U
from ..runtime import make_session
from .errors import GraphError, node_error

log = logging.getLogger(__name__)

RELU_MODES = ("standard", "guided", "deconvnet")
RECTIFIERS = ("Relu", "Clip")
SEED = "seed"
TARGET = "target"
SEED_MODES = ("input", "top")
GRAD_PREFIX = "grad:"
INT64_MAX = np.iinfo(np.int64).max

# Ops whose outputs carry no gradient (piecewise constant, boolean or shape-valued).
_NON_DIFFERENTIABLE = {
    "Shape", "Size", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not",
    "And", "Or", "Xor", "ArgMax", "ArgMin", "Floor", "Ceil", "Round", "Sign", "NonZero",
    "ConstantOfShape", "Constant", "IsNaN", "IsInf", "RandomNormalLike", "RandomUniformLike",
    "EyeLike", "Range", "OneHot",
}
# ONNX unary elementwise float ops without a closed-form rule here: central differences.
_FINITE_DIFFERENCE_OPS = {
    "Selu", "Celu", "Mish", "ThresholdedRelu", "Tan", "Asin", "Acos", "Atan", "Sinh",
    "Cosh", "Asinh", "Acosh", "Atanh", "Shrink",
}


def gradient_name(name: str) -> str:
    """The output name that carries the gradient of tensor ``name``."""
    return GRAD_PREFIX + name


def build_gradient_model(
    model: ModelProto,
    *,
    reduction: str | None = None,
    wrt: Sequence[str] | None = None,
    activations: Sequence[str] = (),
    relu_mode: str = "standard",
    rectifiers: Sequence[str] = RECTIFIERS,
    seed: str = "input",
) -> ModelProto:
    """Build the reverse-mode gradient model of ``model``.

    Parameters
    ----------
    model : onnx.ModelProto
        A prepared model (see :func:`prepare_model`); never modified.
    reduction : str, optional
        Tensor R whose seeded sum is differentiated; default the first graph output.
    wrt : sequence of str, optional
        Tensors to differentiate with respect to: graph inputs or inner tensors (the
        gradient at an inner tensor is the total gradient reaching it from its
        consumers). Default: the first graph input.
    activations : sequence of str
        Inner tensors to expose as extra outputs (same names).
    relu_mode : {"standard", "guided", "deconvnet"}
        Backward rule at rectifiers (see module docstring).
    rectifiers : sequence of {"Relu", "Clip"}
        Which ops ``relu_mode`` applies to; ``"Clip"`` means Clip nodes with min == 0.
    seed : {"input", "top"}
        ``"input"``: the seed is a graph input. ``"top"``: R must be (N, K); each sample's
        seed is the one-hot row of its first largest entry (numpy's argmax), computed in
        the graph, and the index is returned as output ``target`` (int64, (N,)). This is
        the default "explain the predicted class" run without a separate forward pass.

    Returns
    -------
    onnx.ModelProto
        Inputs: the original inputs and ``seed`` (float32, R's shape with the batch dim;
        not with ``seed="top"``). Outputs: the original outputs, the activations, R (if
        not an output), ``target`` (``seed="top"`` only) and ``grad:<name>`` (float32,
        the shape of ``name``) for each wrt tensor.

    Raises
    ------
    GraphError
        Unknown names or options, non-float32 tensors, or an op without a backward rule
        (the message names the node and op type).
    """
    if relu_mode not in RELU_MODES:
        raise GraphError(f"The 'relu_mode' parameter must be one of {set(RELU_MODES)}; "
                         f"got {relu_mode!r}")
    if seed not in SEED_MODES:
        raise GraphError(f"The 'seed' parameter must be one of {set(SEED_MODES)}; got {seed!r}")
    bad = [r for r in rectifiers if r not in RECTIFIERS]
    if bad:
        raise GraphError(f"The 'rectifiers' parameter items must be in {set(RECTIFIERS)}; "
                         f"got {bad}")
    m = U.ensure_opset(U.copy_model(model))
    m = widen_float16(m)
    if U.onnx_opset(m) < 16:
        # ScatterElements(reduction="add") (MaxPool backward) needs opset 16.
        try:
            m = _upgraded(m, 17)
        except Exception as exc:
            raise GraphError(f"cannot upgrade opset {U.onnx_opset(m)} to 17: {exc}") from exc
    if U.onnx_opset(m) < 18 and any(_strided_grouped_conv(n) for n in m.graph.node):
        # Col2Im (opset 18) interleaves the sub-pixel phases of strided depthwise Conv
        # gradients ~5x faster than the opset-17 ConvTranspose form; optional, so a
        # failed upgrade keeps the model as it is.
        try:
            up = _upgraded(m, 18)
            onnx.shape_inference.infer_shapes(up, check_type=True, strict_mode=True)
            m = up
        except Exception as exc:  # converter gaps on exotic graphs: keep the model's opset
            log.debug("opset 18 upgrade skipped: %s", exc)
    g = m.graph
    inputs = U.real_inputs(g)
    if not inputs:
        raise GraphError("model has no inputs")
    nodes = U.topo_sort(g)
    produced = {o for n in nodes for o in n.output if o}
    known = produced | {i.name for i in inputs}
    reduction = reduction or g.output[0].name
    wrt = list(wrt) if wrt is not None else [inputs[0].name]
    if not wrt:
        raise GraphError("The 'wrt' parameter must name at least one tensor; got none")
    for what, names in (("reduction", [reduction]), ("wrt", wrt), ("activations", activations)):
        missing = [n for n in names if n not in known]
        if missing:
            raise GraphError(f"The {what!r} parameter names tensors not in the graph: {missing}")
    if len(set(wrt)) != len(wrt):
        raise GraphError(f"The 'wrt' parameter has duplicates: {wrt}")
    for n in nodes:
        if n.op_type == "BatchNormalization" and U.attr(n, "training_mode", 0):
            raise node_error(n, "training_mode=1 is not supported (inference only)")
    batch_dims: dict[str, tuple[bool, ...]] = {}
    shapes = U.batched_shapes(m, batch_dims)
    for name in [reduction] + wrt:
        s, t = shapes.get(name, (None, 0))
        if t != TensorProto.FLOAT:
            raise GraphError(f"tensor {name!r} is {TensorProto.DataType.Name(t)}; gradients "
                             "are built for float32 tensors only")
        if s is None:
            raise GraphError(f"tensor {name!r} has no inferred shape; run prepare_model first")

    b = _Builder(m, shapes, relu_mode, set(rectifiers), batch_dims)
    if seed == "top":
        _top_class_seed(b, reduction)
    b.run(nodes, reduction, wrt)

    outputs = {o.name for o in g.output}
    for name in list(activations) + [reduction]:
        if name not in outputs:
            g.output.append(b.value_info(name, name))
            outputs.add(name)
    if seed == "input":
        g.input.append(b.value_info(reduction, SEED))
    else:
        like = b.value_info(reduction, TARGET).type.tensor_type.shape.dim[0]
        g.output.append(helper.make_tensor_value_info(
            TARGET, TensorProto.INT64, [like.dim_param or like.dim_value or None]))
    for w in wrt:
        g.output.append(b.value_info(w, gradient_name(w)))
    g.node.extend(b.nodes)
    g.initializer.extend(b.inits)
    g.value_info.extend(b.gradient_value_info({o.name for o in g.output} | {SEED}))
    return m


def _upgraded(model: ModelProto, version: int) -> ModelProto:
    from onnx import version_converter

    return version_converter.convert_version(model, version)


def _strided_grouped_conv(node: NodeProto) -> bool:
    return (node.op_type == "Conv" and U.attr(node, "group", 1) > 1
            and any(st > 1 for st in U.attr(node, "strides", [1])))


def _top_class_seed(b, reduction: str) -> None:
    """Nodes computing SEED = one-hot(argmax(R, axis 1)) and TARGET for an (N, K) tensor R."""
    shape = b.shapes.get(reduction, (None, 0))[0]
    if shape is None or len(shape) != 2 or not isinstance(shape[1], int):
        raise GraphError(f"seed='top' needs a reduction tensor of shape (N, K) with a known K; "
                         f"{reduction!r} has shape {shape}")
    top = b.op("ArgMax", [reduction], axis=1, keepdims=1, select_last_index=0)   # (N, 1)
    classes = b.const(np.arange(shape[1], dtype=np.int64).reshape(1, -1), dtype=np.int64)
    hot = b.op("Equal", [top, classes])                                          # (N, K)
    b.nodes.append(helper.make_node("Cast", [hot], [SEED], to=TensorProto.FLOAT,
                                    name=b.fresh("Cast_node")))
    b.nodes.append(helper.make_node("Squeeze", [top, b.ints([1])], [TARGET],
                                    name=b.fresh("Squeeze_node")))


_HALF_TYPES = (TensorProto.FLOAT16, TensorProto.BFLOAT16)


def widen_float16(model: ModelProto) -> ModelProto:
    """A copy computing in float32 where the model computes in float16 / bfloat16.

    Reverse mode runs in float32 (every rule emits float32 constants; onnxruntime's CPU
    provider runs most float16 ops through inserted casts anyway). Initializers, Constant
    / ConstantOfShape values, ``Cast(to=float16)`` and float16 graph inputs/outputs become
    float32; half values widen exactly, so the gradient is that of the float32 network
    with the float16 weights. Activations are no longer rounded to float16 between ops:
    outputs differ from the float16 model by float16 rounding (~1e-3 relative) and a
    rectifier mask can flip where an activation sits within rounding of a threshold.
    Returns the model itself when it has nothing in half precision.
    """
    g = model.graph

    def half_tensor(t: TensorProto) -> bool:
        return t.data_type in _HALF_TYPES

    def widen(t: TensorProto) -> None:
        arr = numpy_helper.to_array(t)
        if t.data_type == TensorProto.BFLOAT16 and arr.dtype != np.float32:
            arr = _bfloat16_to_float32(t)
        t.CopyFrom(numpy_helper.from_array(np.asarray(arr, np.float32), t.name))

    def has_half(graph: onnx.GraphProto) -> bool:
        vis = list(graph.input) + list(graph.output) + list(graph.value_info)
        if any(v.type.tensor_type.elem_type in _HALF_TYPES for v in vis):
            return True
        if any(half_tensor(t) for t in graph.initializer):
            return True
        for n in graph.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR and half_tensor(a.t):
                    return True
                if n.op_type == "Cast" and a.name == "to" and a.i in _HALF_TYPES:
                    return True
        return False

    if not has_half(g):
        return model
    m = U.copy_model(model)
    g = m.graph
    for t in g.initializer:
        if half_tensor(t):
            widen(t)
    for n in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in n.attribute):
            raise node_error(n, "float16 graphs with subgraphs are not supported")
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and half_tensor(a.t):
                widen(a.t)
            elif a.name in ("to", "dtype") and a.type == onnx.AttributeProto.INT \
                    and a.i in _HALF_TYPES:
                a.i = TensorProto.FLOAT
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type in _HALF_TYPES:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    g.ClearField("value_info")
    # Casts of constants (onnxruntime inserts them around float16 Clip bounds etc.) become
    # constants again, so rules that need constant operands still see them.
    inits = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output}
    kept = []
    for n in U.topo_sort(g):
        if (n.op_type == "Cast" and n.input[0] in inits and n.output[0] not in outputs):
            value = numpy_helper.to_array(inits[n.input[0]])
            t = numpy_helper.from_array(value.astype(U.np_dtype(U.attr(n, "to"))), n.output[0])
            g.initializer.append(t)
            inits[t.name] = t
            continue
        kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    inits_kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits_kept)
    return m


def _bfloat16_to_float32(t: TensorProto) -> np.ndarray:
    raw = np.asarray(numpy_helper.to_array(t))
    if raw.dtype == np.float32:
        return raw
    bits = raw.view(np.uint16).astype(np.uint32) << 16
    return bits.view(np.float32).reshape(tuple(t.dims))


class _Builder:
    """Emits backward nodes; one instance per gradient model."""

    def __init__(self, model: ModelProto, shapes, relu_mode: str, rectifiers: set[str],
                 batch_dims: dict[str, tuple[bool, ...]] | None = None):
        self.model = model
        self.batch_dims = batch_dims or {}
        self.g = model.graph
        self.opset = U.onnx_opset(model)
        self.shapes = shapes
        self.relu_mode = relu_mode
        self.rectifiers = rectifiers
        self.nodes: list[NodeProto] = []
        self.inits: list[TensorProto] = []
        self.grad_like: dict[str, str] = {}  # gradient tensor -> forward tensor it matches
        self.fresh = U.unique_namer(self.g, "grad/")
        self.consts = {t.name: t for t in self.g.initializer}
        for n in self.g.node:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = n
        self.producers = U.producers(self.g)
        self.consumers = U.consumers(self.g)
        self._const_cache: dict = {}
        self._shape_cache: dict[str, str] = {}
        self.active: set[str] = set()

    # ------------------------------------------------------------ emission helpers
    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, hint: str | None = None,
           **attrs):
        outs = [self.fresh(hint or op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs,
                                           name=self.fresh(f"{op_type}_node"), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype=np.float32, hint: str = "c") -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_cache:
            name = self.fresh(hint)
            self.inits.append(numpy_helper.from_array(arr, name))
            self._const_cache[key] = name
        return self._const_cache[key]

    def ints(self, values) -> str:
        return self.const(np.asarray(values, dtype=np.int64).reshape(-1), np.int64, "i")

    def value(self, name: str) -> np.ndarray | None:
        """The constant value of a tensor, or None if it is computed at run time."""
        c = self.consts.get(name)
        if c is None:
            return None
        if isinstance(c, NodeProto):
            return U.constant_node_value(c)
        return numpy_helper.to_array(c)

    def shape(self, name: str, node: NodeProto | None = None) -> tuple:
        s = self.shapes.get(name, (None, 0))[0]
        if s is None:
            raise (node_error(node, f"tensor {name!r} has no inferred shape") if node
                   else GraphError(f"tensor {name!r} has no inferred shape"))
        return s

    def static_dims(self, name: str, node: NodeProto, axes) -> list[int]:
        s = self.shape(name, node)
        out = []
        for a in axes:
            if s[a] is None:
                raise node_error(node, f"dim {a} of {name!r} must be static, got a "
                                 "batch-dependent size")
            out.append(s[a])
        return out

    def shape_of(self, name: str) -> str:
        """A shape tensor for Reshape/Expand: constant when at most one size is dynamic."""
        if name in self._shape_cache:
            return self._shape_cache[name]
        s = self.shapes.get(name, (None, 0))[0]
        if s is not None and sum(d is None for d in s) <= 1:
            out = self.ints([-1 if d is None else d for d in s])
        else:
            out = self.op("Shape", [name])
        self._shape_cache[name] = out
        return out

    def expand_shape_of(self, name: str) -> str:
        """A shape tensor valid for Expand (no -1 entries)."""
        s = self.shapes.get(name, (None, 0))[0]
        if s is not None and all(d is not None for d in s):
            return self.ints(list(s))
        key = "expand:" + name
        if key not in self._shape_cache:
            self._shape_cache[key] = self.op("Shape", [name])
        return self._shape_cache[key]

    def zeros_like(self, name: str) -> str:
        return self.op("ConstantOfShape", [self.expand_shape_of(name)],
                       value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))

    def reshape_like(self, g: str, like: str) -> str:
        return self.op("Reshape", [g, self.shape_of(like)])

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: int = 1) -> str:
        """ReduceSum/ReduceMean with axes written the way the model's opset wants."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes)], keepdims=keepdims)
        return self.op(op_type, [x], axes=list(axes), keepdims=keepdims)

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", [a, b])

    def mask(self, bool_name: str) -> str:
        return self.op("Cast", [bool_name], to=TensorProto.FLOAT)

    def unbroadcast(self, g: str, out: str, target: str) -> str:
        """Sum g (shaped like out) over the axes along which target was broadcast."""
        ts = self.shape(target)
        os_ = self.shape(out)
        if len(ts) == len(os_) and all(a == b for a, b in zip(ts, os_)):
            return g
        lead = len(os_) - len(ts)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(ts)
                                    if d == 1 and os_[lead + i] != 1]
        r = self.reduce("ReduceSum", g, axes, keepdims=1) if axes else g
        if lead:
            r = self.op("Squeeze", [r, self.ints(list(range(lead)))])
        return r

    def value_info(self, like: str, name: str) -> onnx.ValueInfoProto:
        s, t = self.shapes.get(like, (None, TensorProto.FLOAT))
        if s is None:
            return helper.make_tensor_value_info(name, t, None)
        # 'N' only where the size is the batch itself: a dim 0 of 2N (heads folded into
        # the batch by a Reshape) written as 'N' makes onnxruntime reuse buffers of the
        # wrong size at run time.
        exact = self.batch_dims.get(like, ())
        dims = ["N" if (d is None and k == 0 and k < len(exact) and exact[k]) else d
                for k, d in enumerate(s)]
        return helper.make_tensor_value_info(name, t, dims)

    # ------------------------------------------------------------ the backward walk
    def run(self, nodes: list[NodeProto], reduction: str, wrt: list[str]) -> None:
        float_types = U.FLOAT_TYPES
        active = set(wrt)
        for n in nodes:
            if n.op_type in _NON_DIFFERENTIABLE:
                continue
            if any(i in active for i in n.input if i):
                for o in n.output:
                    # QuantizeLinear's integer output carries the straight-through gradient.
                    if o and (self.shapes.get(o, (None, 0))[1] in float_types
                              or (n.op_type == "QuantizeLinear" and n.input[0] in active)):
                        active.add(o)
        self.active = active
        grads: dict[str, list[str]] = {}
        if reduction in active:
            grads[reduction] = [SEED]
        done: dict[str, str] = {}

        def total(name: str) -> str | None:
            if name in done:
                return done[name]
            parts = grads.get(name)
            if not parts:
                return None
            if len(parts) == 1:
                out = parts[0]
            elif len(parts) == 2:
                out = self.op("Add", parts)
            else:
                out = self.op("Sum", parts)
            self.grad_like.setdefault(out, name)
            done[name] = out
            return out

        for node in reversed(nodes):
            gy = [total(o) if o else None for o in node.output]
            if all(x is None for x in gy):
                continue
            if not any(i in active for i in node.input if i):
                continue
            for o, go in zip(node.output, gy):
                if go is not None and self.shapes.get(o, (None, 0))[1] == TensorProto.DOUBLE:
                    # Every rule emits float32 constants: a float64 gradient would not load.
                    raise node_error(node, f"output {o!r} is float64; gradients are built "
                                     "for float32 tensors only")
            rule = _RULES.get(node.op_type)
            if node.domain not in ("", "ai.onnx"):
                rule = None
            if rule is None and node.op_type in _FINITE_DIFFERENCE_OPS:
                rule = _vjp_finite_difference
            if rule is None:
                raise node_error(node, "no backward rule for this op type")
            gx = rule(self, node, gy)
            for i, gi in zip(node.input, gx):
                if gi is None or not i or i not in active:
                    continue
                grads.setdefault(i, []).append(gi)
                self.grad_like.setdefault(gi, i)
        for w in wrt:
            gw = total(w)
            if gw is None:
                gw = self.zeros_like(w)
            self.nodes.append(helper.make_node("Identity", [gw], [gradient_name(w)],
                                               name=self.fresh("grad_out")))

    def gradient_value_info(self, skip: set[str]) -> list[onnx.ValueInfoProto]:
        """Shapes of the float32 gradient tensors, batch dim written as 'N'.

        onnxruntime's shape inference loses the symbolic batch dim on the way back (Expand
        of a runtime shape, Reshape with -1); without it the NCHWc transformer cannot prove
        that the operands of a gradient Add match, so it wraps each in Reshapes instead of
        fusing it into the NCHWc Conv (~20% of the run time at batch 4 on
        EfficientNet-Lite0; a Mul needs the same proof to stay in the blocked layout).
        """
        out = []
        for gname, like in self.grad_like.items():
            s, t = self.shapes.get(like, (None, 0))
            if (gname in skip or gname in self.shapes or t != TensorProto.FLOAT or s is None
                    or any(d is None for d in s[1:])):
                continue
            out.append(self.value_info(like, gname))
        return out

    def needs(self, node: NodeProto, k: int) -> bool:
        return k < len(node.input) and bool(node.input[k]) and node.input[k] in self.active

    def const_operand(self, node: NodeProto, k: int, what: str) -> np.ndarray:
        if self.needs(node, k):
            raise node_error(node, f"{what} (input {k}) depends on the differentiated input; "
                             "only constant values are supported")
        v = self.value(node.input[k])
        if v is None:
            raise node_error(node, f"{what} (input {k}) must be a constant")
        return v


# ============================================================ per-op backward rules
Rule = Callable[[_Builder, NodeProto, list], list]
_RULES: dict[str, Rule] = {}


def _rule(*ops: str):
    def deco(fn):
        for op in ops:
            _RULES[op] = fn
        return fn
    return deco


@_rule("Identity", "Dropout")
def _vjp_identity(b, node, gy):
    return [gy[0]]


_QUANT_RANGE = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255),
                TensorProto.INT16: (-32768, 32767), TensorProto.UINT16: (0, 65535),
                TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15)}


def _quant_params(b, node):
    """(scale, zero point as float, axis, output type) of a Q/DQ node; constants only."""
    scale = b.const_operand(node, 1, "scale").astype(np.float64)
    if len(node.input) > 2 and node.input[2]:
        zp_arr = b.const_operand(node, 2, "zero_point")
        zp = zp_arr.astype(np.float64)
        qtype = helper.np_dtype_to_tensor_dtype(zp_arr.dtype)
    else:
        zp = np.zeros_like(scale)
        qtype = U.attr(node, "output_dtype", 0) or TensorProto.UINT8
    if U.attr(node, "block_size", 0):
        raise node_error(node, "blocked quantization is not supported")
    return scale, zp, U.attr(node, "axis", 1), qtype


def _quant_broadcast(b, node, x: str, value: np.ndarray, axis: int) -> np.ndarray:
    """A per-tensor or per-axis Q/DQ parameter shaped to broadcast against x."""
    if value.ndim == 0 or value.size == 1:
        return value.reshape(())
    rank = len(b.shape(x, node))
    shape = [1] * rank
    shape[axis % rank] = value.size
    return value.reshape(shape)


def _same_quant(a: NodeProto, c: NodeProto, b) -> bool:
    if len(a.input) != len(c.input) or U.attr(a, "axis", 1) != U.attr(c, "axis", 1):
        return False
    for k in range(1, len(a.input)):
        va, vc = b.value(a.input[k]), b.value(c.input[k])
        if va is None or vc is None or va.dtype != vc.dtype or not np.array_equal(va, vc):
            return False
    return True


def _paired_quantize(b, q: NodeProto) -> bool:
    """Q whose every consumer is a DequantizeLinear with the same parameters (fake quant)."""
    users = b.consumers.get(q.output[0], [])
    outputs = {o.name for o in b.g.output}
    return (bool(users) and q.output[0] not in outputs
            and all(u.op_type == "DequantizeLinear" and u.input[0] == q.output[0]
                    and _same_quant(q, u, b) for u in users))


@_rule("DequantizeLinear")
def _vjp_dequantize(b, node, gy):
    """y = (q - zero_point) * scale: dy/dq = scale.

    When q comes from a QuantizeLinear with the same parameters (a fake-quant pair), the
    gradient is handed to the QuantizeLinear in units of x instead (scale and 1/scale
    cancel exactly), see :func:`_vjp_quantize`.
    """
    if b.needs(node, 1) or (len(node.input) > 2 and b.needs(node, 2)):
        raise node_error(node, "scale / zero point depend on the differentiated input")
    q = b.producers.get(node.input[0])
    if q is not None and q.op_type == "QuantizeLinear" and _paired_quantize(b, q):
        return [gy[0], None, None]
    scale, _, axis, _ = _quant_params(b, node)
    s = _quant_broadcast(b, node, node.input[0], scale, axis)
    return [b.mul(gy[0], b.const(s.astype(np.float32), hint="dq_scale")), None, None]


@_rule("QuantizeLinear")
def _vjp_quantize(b, node, gy):
    """Straight-through estimator (STE) for the rounding, exact derivative of the saturation.

    q = saturate(round(x / scale) + zero_point) is differentiated as if it were
    clamp(x / scale + zero_point, qmin, qmax): the rounding passes the gradient unchanged
    (the STE convention of quantization-aware training) and the gradient is blocked where
    x lies outside the representable range [(qmin - zp) * scale, (qmax - zp) * scale]
    (strict bounds, like the Clip rule). That saturation matters: onnxruntime's quantizer
    drops a ReLU / ReLU6 whose range the following QuantizeLinear covers, so the range
    test is the rectifier mask of the float model. (torch.fake_quantize_* tests the
    rounded value instead, which lets the gradient through up to half a step beyond the
    range, i.e. through slightly negative pre-ReLU activations; on EfficientNet-Lite0 int8
    that decorrelates the input gradient from the float model's.)
    """
    if b.needs(node, 1) or (len(node.input) > 2 and b.needs(node, 2)):
        raise node_error(node, "scale / zero point depend on the differentiated input")
    x = node.input[0]
    scale, zp, axis, qtype = _quant_params(b, node)
    if qtype not in _QUANT_RANGE:
        raise node_error(node, f"quantized type {TensorProto.DataType.Name(qtype)} "
                         "is not supported")
    qmin, qmax = _QUANT_RANGE[qtype]
    s = _quant_broadcast(b, node, x, scale, axis)
    z = _quant_broadcast(b, node, x, zp, axis)
    lo = ((qmin - z) * s).astype(np.float32)
    hi = ((qmax - z) * s).astype(np.float32)
    inside = b.op("And", [b.op("Greater", [x, b.const(lo, hint="q_lo")]),
                          b.op("Less", [x, b.const(hi, hint="q_hi")])])
    g = b.mul(gy[0], b.mask(inside))
    if not _paired_quantize(b, node):
        g = b.mul(g, b.const((1.0 / s).astype(np.float32), hint="q_inv_scale"))
    return [g, None, None]


@_rule("Cast")
def _vjp_cast(b, node, gy):
    src = b.shapes.get(node.input[0], (None, 0))[1]
    if src not in U.FLOAT_TYPES:
        return [None]
    dst = U.attr(node, "to")
    return [gy[0] if dst == src else b.op("Cast", [gy[0]], to=src)]


@_rule("Relu")
def _vjp_relu(b, node, gy):
    g = gy[0]
    mode = b.relu_mode if "Relu" in b.rectifiers else "standard"
    if mode == "deconvnet":
        return [b.op("Relu", [g])]
    # (y > 0) == (x > 0); reading y keeps Conv -> Relu fusable.
    mask = _open_interval_mask(b, node.output[0], 0.0, None)
    if mode == "guided":
        g = b.op("Relu", [g])
    return [b.mul(g, mask)]


@_rule("Clip")
def _vjp_clip(b, node, gy):
    lo = b.const_operand(node, 1, "min") if len(node.input) > 1 and node.input[1] else None
    hi = b.const_operand(node, 2, "max") if len(node.input) > 2 and node.input[2] else None
    g = gy[0]
    # The mask is read from the output (y > lo iff x > lo, y < hi iff x < hi), so the
    # forward Conv -> Clip pair stays fusable in onnxruntime.
    x = node.output[0]
    mode = "standard"
    if "Clip" in b.rectifiers and lo is not None and float(np.asarray(lo)) == 0.0:
        mode = b.relu_mode
    if mode == "deconvnet":
        return [b.op("Relu", [g])]
    if mode == "guided":
        g = b.op("Relu", [g])
    fast = _open_interval_mask(b, x, lo, hi)
    if fast is not None:
        return [b.mul(g, fast)]
    conds = []
    if lo is not None:
        conds.append(b.op("Greater", [x, b.const(np.asarray(lo, np.float32))]))
    if hi is not None:
        conds.append(b.op("Less", [x, b.const(np.asarray(hi, np.float32))]))
    if not conds:
        return [g]
    # Mul by a cast mask: Where is about twice as slow, Sign(...) tricks slower still.
    cond = conds[0] if len(conds) == 1 else b.op("And", conds)
    return [b.mul(g, b.mask(cond))]


_BIG = 2.0 ** 100
_BIG_LIMIT = 2.0 ** 27  # |bound| below this keeps BIG * bound finite


def _open_interval_mask(b, y: str, lo, hi) -> str | None:
    """Float 0/1 mask of lo < y < hi for a rectifier output y (lo <= y <= hi), or None.

    HardSigmoid(y; a, c) = clip(a*y + c, 0, 1) with a = +-2**100: clip(B*(y - lo)) is 0 at
    y == lo and 1 from y >= lo + 2**-100 (for lo == 0; an ulp of lo above it otherwise),
    likewise below hi. a*y is exact (a power of two) and the one rounding of a*y + c
    cannot turn a nonzero difference into zero, so the mask is exact 0/1 outside that
    2**-100 sliver. Why not Greater/Less/And/Cast: onnxruntime runs HardSigmoid and Mul in
    its blocked NCHWc layout next to the Convs, the comparisons only in plain NCHW (two
    reorders out, one back, five passes per rectifier).
    """
    parts = []
    for bound, sign in ((lo, 1.0), (hi, -1.0)):
        if bound is None:
            continue
        bound = float(np.asarray(bound))
        if not abs(bound) < _BIG_LIMIT:
            return None
        parts.append(b.op("HardSigmoid", [y], alpha=sign * _BIG, beta=-sign * _BIG * bound))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b.mul(parts[0], parts[1])


@_rule("LeakyRelu")
def _vjp_leaky_relu(b, node, gy):
    alpha = U.attr(node, "alpha", 0.01)
    pos = b.mask(b.op("Greater", [node.input[0], b.const(0.0)]))
    slope = b.op("Add", [b.mul(pos, b.const(1.0 - alpha)), b.const(alpha)])
    return [b.mul(gy[0], slope)]


@_rule("PRelu")
def _vjp_prelu(b, node, gy):
    b.const_operand(node, 1, "slope")
    x = node.input[0]
    pos = b.mask(b.op("Greater", [x, b.const(0.0)]))
    neg = b.op("Sub", [b.const(1.0), pos])
    slope = b.op("Add", [pos, b.mul(neg, node.input[1])])
    return [b.mul(gy[0], slope), None]


@_rule("Sigmoid")
def _vjp_sigmoid(b, node, gy):
    y = node.output[0]
    d = b.mul(y, b.op("Sub", [b.const(1.0), y]))
    return [b.mul(gy[0], d)]


@_rule("Tanh")
def _vjp_tanh(b, node, gy):
    y = node.output[0]
    d = b.op("Sub", [b.const(1.0), b.mul(y, y)])
    return [b.mul(gy[0], d)]


@_rule("HardSigmoid")
def _vjp_hard_sigmoid(b, node, gy):
    alpha = U.attr(node, "alpha", 0.2)
    y = node.output[0]
    inside = b.op("And", [b.op("Greater", [y, b.const(0.0)]), b.op("Less", [y, b.const(1.0)])])
    return [b.mul(b.mul(gy[0], b.const(alpha)), b.mask(inside))]


@_rule("HardSwish")
def _vjp_hard_swish(b, node, gy):
    # torch: 0 for x < -3, x/3 + 1/2 for -3 <= x <= 3, 1 above.
    x = node.input[0]
    mid = b.op("Add", [b.mul(x, b.const(1.0 / 3.0)), b.const(0.5)])
    d = b.op("Where", [b.op("Greater", [x, b.const(3.0)]), b.const(1.0), mid])
    d = b.op("Where", [b.op("Less", [x, b.const(-3.0)]), b.const(0.0), d])
    return [b.mul(gy[0], d)]


@_rule("Erf")
def _vjp_erf(b, node, gy):
    x = node.input[0]
    e = b.op("Exp", [b.op("Neg", [b.mul(x, x)])])
    return [b.mul(gy[0], b.mul(e, b.const(2.0 / math.sqrt(math.pi))))]


@_rule("Gelu")
def _vjp_gelu(b, node, gy):
    x = node.input[0]
    approx = U.decode(U.attr(node, "approximate", "none"))
    if approx == "tanh":
        k = math.sqrt(2.0 / math.pi)
        x2 = b.mul(x, x)
        inner = b.mul(b.mul(x, b.op("Add", [b.const(1.0), b.mul(x2, b.const(0.044715))])),
                      b.const(k))
        t = b.op("Tanh", [inner])
        du = b.mul(b.op("Add", [b.const(1.0), b.mul(x2, b.const(3 * 0.044715))]), b.const(k))
        sech2 = b.op("Sub", [b.const(1.0), b.mul(t, t)])
        d = b.op("Add", [b.mul(b.op("Add", [b.const(1.0), t]), b.const(0.5)),
                         b.mul(b.mul(x, b.const(0.5)), b.mul(sech2, du))])
    else:
        cdf = b.mul(b.op("Add", [b.const(1.0), b.op("Erf", [b.mul(x, b.const(1 / math.sqrt(2)))])]),
                    b.const(0.5))
        pdf = b.mul(b.op("Exp", [b.mul(b.mul(x, x), b.const(-0.5))]),
                    b.const(1 / math.sqrt(2 * math.pi)))
        d = b.op("Add", [cdf, b.mul(x, pdf)])
    return [b.mul(gy[0], d)]


@_rule("Exp")
def _vjp_exp(b, node, gy):
    return [b.mul(gy[0], node.output[0])]


@_rule("Log")
def _vjp_log(b, node, gy):
    return [b.op("Div", [gy[0], node.input[0]])]


@_rule("Sqrt")
def _vjp_sqrt(b, node, gy):
    return [b.op("Div", [b.mul(gy[0], b.const(0.5)), node.output[0]])]


@_rule("Reciprocal")
def _vjp_reciprocal(b, node, gy):
    y = node.output[0]
    return [b.op("Neg", [b.mul(gy[0], b.mul(y, y))])]


@_rule("Neg")
def _vjp_neg(b, node, gy):
    return [b.op("Neg", [gy[0]])]


@_rule("Abs")
def _vjp_abs(b, node, gy):
    return [b.mul(gy[0], b.op("Sign", [node.input[0]]))]


@_rule("Sin")
def _vjp_sin(b, node, gy):
    return [b.mul(gy[0], b.op("Cos", [node.input[0]]))]


@_rule("Cos")
def _vjp_cos(b, node, gy):
    return [b.op("Neg", [b.mul(gy[0], b.op("Sin", [node.input[0]]))])]


@_rule("Softplus")
def _vjp_softplus(b, node, gy):
    return [b.mul(gy[0], b.op("Sigmoid", [node.input[0]]))]


@_rule("Softsign")
def _vjp_softsign(b, node, gy):
    d = b.op("Add", [b.const(1.0), b.op("Abs", [node.input[0]])])
    return [b.op("Div", [gy[0], b.mul(d, d)])]


@_rule("Elu")
def _vjp_elu(b, node, gy):
    alpha = U.attr(node, "alpha", 1.0)
    x, y = node.input[0], node.output[0]
    pos = b.mask(b.op("Greater", [x, b.const(0.0)]))
    neg = b.op("Sub", [b.const(1.0), pos])
    d = b.op("Add", [pos, b.mul(neg, b.op("Add", [y, b.const(alpha)]))])
    return [b.mul(gy[0], d)]


def _vjp_finite_difference(b, node, gy):
    """Central difference of a unary elementwise op, computed in-graph."""
    if len(node.input) != 1 or len(node.output) != 1:
        raise node_error(node, "no backward rule for this op type")
    log.warning("node %r (%s): no closed-form backward rule; using an in-graph central "
                "difference (float32, step 1e-3 * max(1, |x|))", node.name, node.op_type)
    x = node.input[0]
    h = b.mul(b.op("Max", [b.op("Abs", [x]), b.const(1.0)]), b.const(1e-3))
    outs = []
    for sign in ("Add", "Sub"):
        shifted = b.op(sign, [x, h])
        y = b.fresh(node.op_type)
        b.nodes.append(helper.make_node(node.op_type, [shifted], [y], name=b.fresh("fd"),
                                        domain=node.domain, **{
                                            a.name: helper.get_attribute_value(a)
                                            for a in node.attribute}))
        outs.append(y)
    d = b.op("Div", [b.op("Sub", outs), b.mul(h, b.const(2.0))])
    return [b.mul(gy[0], d)]


@_rule("Add", "Sub")
def _vjp_add(b, node, gy):
    g, y = gy[0], node.output[0]
    ga = b.unbroadcast(g, y, node.input[0]) if b.needs(node, 0) else None
    gb = None
    if b.needs(node, 1):
        gb = b.unbroadcast(g, y, node.input[1])
        if node.op_type == "Sub":
            gb = b.op("Neg", [gb])
    return [ga, gb]


@_rule("Sum")
def _vjp_sum(b, node, gy):
    return [b.unbroadcast(gy[0], node.output[0], i) if b.needs(node, k) else None
            for k, i in enumerate(node.input)]


@_rule("Mean")
def _vjp_mean(b, node, gy):
    g = b.mul(gy[0], b.const(1.0 / len(node.input)))
    return [b.unbroadcast(g, node.output[0], i) if b.needs(node, k) else None
            for k, i in enumerate(node.input)]


@_rule("Mul")
def _vjp_mul(b, node, gy):
    g, y = gy[0], node.output[0]
    a, c = node.input[0], node.input[1]
    ga = b.unbroadcast(b.mul(g, c), y, a) if b.needs(node, 0) else None
    gc = b.unbroadcast(b.mul(g, a), y, c) if b.needs(node, 1) else None
    return [ga, gc]


@_rule("Div")
def _vjp_div(b, node, gy):
    g, y = gy[0], node.output[0]
    a, c = node.input[0], node.input[1]
    ga = gc = None
    if b.needs(node, 0):
        inv = b.value(c)
        if inv is not None and inv.dtype.kind == "f":
            ga = b.mul(g, b.const((1.0 / inv).astype(np.float32)))
        else:
            ga = b.op("Div", [g, c])
        ga = b.unbroadcast(ga, y, a)
    if b.needs(node, 1):
        gc = b.op("Neg", [b.op("Div", [b.mul(g, y), c])])
        gc = b.unbroadcast(gc, y, c)
    return [ga, gc]


@_rule("Pow")
def _vjp_pow(b, node, gy):
    g, y = gy[0], node.output[0]
    x, e = node.input[0], node.input[1]
    gx = ge = None
    if b.needs(node, 0):
        ev = b.value(e)
        if ev is not None and ev.size == 1:
            ef = float(ev.reshape(-1)[0])
            if ef == 2.0:
                d = b.mul(x, b.const(2.0))
            elif ef == 1.0:
                d = None
            else:
                d = b.mul(b.op("Pow", [x, b.const(ef - 1.0)]), b.const(ef))
        else:
            ecast = e if b.shapes.get(e, (0, 1))[1] == TensorProto.FLOAT else b.op(
                "Cast", [e], to=TensorProto.FLOAT)
            d = b.mul(b.op("Pow", [x, b.op("Sub", [ecast, b.const(1.0)])]), ecast)
        gx = b.unbroadcast(g if d is None else b.mul(g, d), y, x)
    if b.needs(node, 1):
        ge = b.unbroadcast(b.mul(b.mul(g, y), b.op("Log", [x])), y, e)
    return [gx, ge]


@_rule("Where")
def _vjp_where(b, node, gy):
    g, y = gy[0], node.output[0]
    c = node.input[0]
    zero = b.const(0.0)
    ga = b.unbroadcast(b.op("Where", [c, g, zero]), y, node.input[1]) if b.needs(node, 1) else None
    gb = b.unbroadcast(b.op("Where", [c, zero, g]), y, node.input[2]) if b.needs(node, 2) else None
    return [None, ga, gb]


@_rule("Max", "Min")
def _vjp_max(b, node, gy):
    # The gradient goes to the inputs equal to the result, split evenly among ties (torch's
    # maximum / minimum convention; giving each tie the full gradient would double it for
    # Max(x, Relu(x)) at x > 0).
    g, y = gy[0], node.output[0]
    masks = [b.mask(b.op("Equal", [i, y])) for i in node.input]
    if len(masks) == 1:
        return [g]
    count = b.op("Add", masks) if len(masks) == 2 else b.op("Sum", masks)
    share = b.op("Div", [g, count])
    out = []
    for k, (i, m) in enumerate(zip(node.input, masks)):
        if not b.needs(node, k):
            out.append(None)
            continue
        out.append(b.unbroadcast(b.mul(share, m), y, i))
    return out


def _transpose_last2(b, name: str, rank: int) -> str:
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    v = b.value(name)
    if v is not None:
        return b.const(np.ascontiguousarray(np.transpose(v, perm)).astype(np.float32), hint="wT")
    return b.op("Transpose", [name], perm=perm)


@_rule("MatMul")
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


@_rule("Gemm")
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


@_rule("Conv")
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


@_rule("BatchNormalization")
def _vjp_batchnorm(b, node, gy):
    if U.attr(node, "training_mode", 0):
        raise node_error(node, "training_mode=1 is not supported (inference only)")
    if len([o for o in node.output if o]) > 1:
        raise node_error(node, "running-statistics outputs (training) are not supported")
    scale = b.const_operand(node, 1, "scale")
    var = b.const_operand(node, 4, "input_var")
    for k, what in ((2, "B"), (3, "input_mean")):
        b.const_operand(node, k, what)
    eps = U.attr(node, "epsilon", 1e-5)
    rank = len(b.shape(node.input[0], node))
    k = (scale / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)
    k = k.reshape((-1,) + (1,) * (rank - 2))
    return [b.mul(gy[0], b.const(k, hint="bn_scale")), None, None, None, None]


@_rule("MaxPool")
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


@_rule("GlobalMaxPool")
def _vjp_global_maxpool(b, node, gy):
    # Split evenly among tied maxima (like ReduceMax; ties are common after a nearest
    # upsample, where the full gradient at each copy would multiply it).
    x = node.input[0]
    m = b.mask(b.op("Equal", [x, node.output[0]]))
    count = b.reduce("ReduceSum", m, list(range(2, len(b.shape(x, node)))), keepdims=1)
    return [b.mul(b.op("Div", [gy[0], count]), m)]


@_rule("GlobalAveragePool")
def _vjp_global_avgpool(b, node, gy):
    x = node.input[0]
    s = b.shape(x, node)
    spatial = b.static_dims(x, node, range(2, len(s)))
    scaled = b.mul(gy[0], b.const(1.0 / float(np.prod(spatial))))
    return [b.op("Expand", [scaled, b.expand_shape_of(x)])]


@_rule("AveragePool")
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
    weights = _avgpool_weights(b, node, in_sizes, out_sizes, kernel, strides, dilations, begin)
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


def _avgpool_weights(b, node, in_sizes, out_sizes, kernel, strides, dilations, begin):
    """1/divisor per output window, as the runtime itself computes it.

    AveragePool(ones) gives valid/divisor per window (valid = input elements covered);
    the valid counts follow from the geometry, so 1/divisor = AveragePool(ones)/valid.
    This honours count_include_pad and ceil_mode overhang exactly as onnxruntime does.
    """
    rank = len(kernel)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["y"], **attrs)], "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1] + list(in_sizes))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)],
                              ir_version=U.PROBE_IR_VERSION)
    sess = make_session(probe, "cpu")
    avg = sess.run(None, {"x": np.ones([1, 1] + list(in_sizes), np.float32)})[0][0, 0]
    if list(avg.shape) != list(out_sizes):
        raise node_error(node, f"probe output {avg.shape} differs from inferred {out_sizes}")
    valid = np.ones(out_sizes, np.float64)
    for a in range(rank):
        starts = np.arange(out_sizes[a]) * strides[a] - begin[a]
        taps = starts[:, None] + np.arange(kernel[a])[None, :] * dilations[a]
        count = ((taps >= 0) & (taps < in_sizes[a])).sum(1).astype(np.float64)
        shape = [1] * rank
        shape[a] = out_sizes[a]
        valid = valid * count.reshape(shape)
    return avg / np.maximum(valid, 1.0)


@_rule("ReduceMax", "ReduceMin")
def _vjp_reduce_max(b, node, gy):
    """The gradient goes to the positions that attain the extreme, split evenly among ties
    (torch.amax / amin convention). onnxruntime emits ReduceMax when it inlines Softmax
    (x - max(x)); softmax is shift invariant, so that path contributes ~0 anyway."""
    x, y = node.input[0], node.output[0]
    s = b.shape(x, node)
    rank = len(s)
    axes = U.attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = b.const_operand(node, 1, "axes").tolist()
    if not axes:
        if U.attr(node, "noop_with_empty_axes", 0):
            return [gy[0], None]
        axes = list(range(rank))
    axes = sorted(a % rank for a in axes)
    g = gy[0]
    if not U.attr(node, "keepdims", 1):
        g = b.op("Unsqueeze", [g, b.ints(axes)])
        y = b.op("Unsqueeze", [y, b.ints(axes)])
    hit = b.mask(b.op("Equal", [x, y]))
    count = b.reduce("ReduceSum", hit, axes, keepdims=1)
    return [b.mul(hit, b.op("Div", [g, count])), None]


@_rule("ReduceMean", "ReduceSum")
def _vjp_reduce(b, node, gy):
    x = node.input[0]
    s = b.shape(x, node)
    rank = len(s)
    axes = U.attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = b.const_operand(node, 1, "axes").tolist()
    if not axes:
        if U.attr(node, "noop_with_empty_axes", 0):
            return [gy[0]]
        axes = list(range(rank))
    axes = sorted(a % rank for a in axes)
    g = gy[0]
    if not U.attr(node, "keepdims", 1):
        g = b.op("Unsqueeze", [g, b.ints(axes)])
    if node.op_type == "ReduceMean":
        count = np.prod(b.static_dims(x, node, axes))
        g = b.mul(g, b.const(1.0 / float(count)))
    return [b.op("Expand", [g, b.expand_shape_of(x)]), None]


@_rule("LRN")
def _vjp_lrn(b, node, gy):
    x = node.input[0]
    s = b.shape(x, node)
    size = U.attr(node, "size")
    alpha = U.attr(node, "alpha", 1e-4)
    beta = U.attr(node, "beta", 0.75)
    bias = U.attr(node, "bias", 1.0)
    channels = b.static_dims(x, node, [1])[0]
    rest = int(np.prod(b.static_dims(x, node, range(2, len(s)))))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    kernel = b.const(np.ones((1, 1, size, 1), np.float32), hint="lrn_k")
    as_image = b.ints([-1, 1, channels, rest])

    def window_sum(t, begin, end):
        t4 = b.op("Reshape", [t, as_image])
        c = b.op("Conv", [t4, kernel], pads=[begin, 0, end, 0], kernel_shape=[size, 1])
        return b.reshape_like(c, x)

    # y = x * S^-beta, S = bias + alpha/size * sum_{window} x^2
    S = b.op("Add", [b.mul(window_sum(b.mul(x, x), lo, hi), b.const(alpha / size)),
                     b.const(bias)])
    s_beta = b.op("Pow", [S, b.const(-beta)])
    g = gy[0]
    t = b.op("Div", [b.mul(b.mul(g, x), s_beta), S])
    # Channel j receives from every window i that contains it: the transposed window.
    back = window_sum(t, hi, lo)
    gx = b.op("Sub", [b.mul(g, s_beta),
                      b.mul(b.mul(x, back), b.const(2.0 * beta * alpha / size))])
    return [gx]


@_rule("Concat")
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


@_rule("Split")
def _vjp_split(b, node, gy):
    axis = U.attr(node, "axis", 0)
    parts = [g if g is not None else b.zeros_like(o) for g, o in zip(gy, node.output)]
    return [b.op("Concat", parts, axis=axis), None]


@_rule("Slice")
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


@_rule("Pad")
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


@_rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _vjp_reshape(b, node, gy):
    return [b.reshape_like(gy[0], node.input[0])] + [None] * (len(node.input) - 1)


@_rule("Transpose")
def _vjp_transpose(b, node, gy):
    rank = len(b.shape(node.input[0], node))
    perm = U.attr(node, "perm", list(range(rank))[::-1])
    inv = list(np.argsort(perm))
    return [b.op("Transpose", [gy[0]], perm=[int(p) for p in inv])]


@_rule("Expand")
def _vjp_expand(b, node, gy):
    return [b.unbroadcast(gy[0], node.output[0], node.input[0]), None]


@_rule("Tile")
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


@_rule("Gather")
def _vjp_gather(b, node, gy):
    x = node.input[0]
    s = b.shape(x, node)
    rank = len(s)
    axis = U.attr(node, "axis", 0) % rank
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


@_rule("Softmax")
def _vjp_softmax(b, node, gy):
    y = node.output[0]
    rank = len(b.shape(y, node))
    axis = U.attr(node, "axis", -1) % rank
    g = gy[0]
    dot = b.reduce("ReduceSum", b.mul(g, y), [axis], keepdims=1)
    return [b.mul(y, b.op("Sub", [g, dot]))]


@_rule("LogSoftmax")
def _vjp_log_softmax(b, node, gy):
    y = node.output[0]
    rank = len(b.shape(y, node))
    axis = U.attr(node, "axis", -1) % rank
    g = gy[0]
    tot = b.reduce("ReduceSum", g, [axis], keepdims=1)
    return [b.op("Sub", [g, b.mul(b.op("Exp", [y]), tot)])]


@_rule("LayerNormalization")
def _vjp_layer_norm(b, node, gy):
    if any(go is not None for go in gy[1:]):
        raise node_error(node, "gradients through the Mean / InvStdDev outputs are not "
                         "supported")
    x = node.input[0]
    rank = len(b.shape(x, node))
    axis = U.attr(node, "axis", -1) % rank
    eps = U.attr(node, "epsilon", 1e-5)
    scale = b.const_operand(node, 1, "Scale")
    if len(node.input) > 2 and node.input[2]:
        b.const_operand(node, 2, "B")
    axes = list(range(axis, rank))
    mu = b.reduce("ReduceMean", x, axes)
    xc = b.op("Sub", [x, mu])
    var = b.reduce("ReduceMean", b.mul(xc, xc), axes)
    rstd = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.const(eps)])])])
    xhat = b.mul(xc, rstd)
    gh = b.mul(gy[0], b.const(scale.astype(np.float32), hint="ln_scale"))
    m1 = b.reduce("ReduceMean", gh, axes)
    m2 = b.reduce("ReduceMean", b.mul(gh, xhat), axes)
    inner = b.op("Sub", [b.op("Sub", [gh, m1]), b.mul(xhat, m2)])
    return [b.mul(rstd, inner), None, None]


@_rule("Resize")
def _vjp_resize(b, node, gy):
    x = node.input[0]
    s = b.shape(x, node)
    ys = b.shape(node.output[0], node)
    rank = len(s)
    mats = _resize_matrices(b, node, s, ys)
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


def _resize_matrices(b, node, s, ys) -> dict[int, np.ndarray]:
    """Per-axis interpolation matrices [out, in], measured by running the node itself."""
    if any(d is None for d in s[1:]) or any(d is None for d in ys[1:]):
        raise node_error(node, "Resize needs static non-batch sizes")
    axes = [a for a in range(1, len(s)) if s[a] != ys[a]]
    if s[0] is not None and s[0] != ys[0]:
        raise node_error(node, "resizing the batch axis is not supported")
    extra = {}
    for k, name in enumerate(node.input[1:], start=1):
        if not name:
            continue
        if k == 3 and b.value(name) is None:
            # Output sizes computed at run time from the batch: the static ones suffice.
            extra[name] = np.array([1] + list(ys[1:]), np.int64)
        else:
            extra[name] = b.const_operand(node, k, ["", "roi", "scales", "sizes"][k])
    shape1 = [1] + list(s[1:])
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape1)]
    inits = [numpy_helper.from_array(v, n) for n, v in extra.items()]
    probe_node = helper.make_node("Resize", ["x"] + list(node.input[1:]), ["y"],
                                  **{a.name: helper.get_attribute_value(a)
                                     for a in node.attribute})
    graph = helper.make_graph([probe_node], "resize", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=inits)
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)],
                              ir_version=U.PROBE_IR_VERSION)
    sess = make_session(probe, "cpu")
    mats = {}
    for a in axes:
        d = s[a]
        mat = np.zeros((ys[a], d), np.float32)
        for j in range(d):
            e = np.ones(shape1, np.float32)
            sl = [slice(None)] * len(shape1)
            sl[a] = slice(None)
            basis = np.zeros(d, np.float32)
            basis[j] = 1.0
            shp = [1] * len(shape1)
            shp[a] = d
            e = e * basis.reshape(shp)
            out = sess.run(None, {"x": e})[0]
            if list(out.shape[1:]) != list(ys[1:]):
                # e.g. float scales whose product rounds differently in onnx shape
                # inference and in onnxruntime (5 * 1.8f: 8 vs 9)
                raise node_error(node, f"runtime output shape {list(out.shape[1:])} differs "
                                 f"from the inferred {list(ys[1:])}; pass 'sizes' instead "
                                 "of 'scales'")
            line = [0] * len(shape1)
            line[a] = slice(None)
            mat[:, j] = out[tuple(line)]
        mats[a] = mat
    # The product of per-axis matrices must reproduce the node (separable modes only).
    rng = np.random.default_rng(0)
    r = rng.standard_normal(shape1).astype(np.float32)
    want = sess.run(None, {"x": r})[0]
    got = r
    for a, mat in mats.items():
        got = np.moveaxis(np.tensordot(mat, np.moveaxis(got, a, 0), axes=(1, 0)), 0, a)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise node_error(node, "this Resize mode is not separable per axis; no backward rule")
    return mats
