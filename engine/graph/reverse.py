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
the saturation (:mod:`.rules.precision`); DequantizeLinear of constant weights is folded
by preparation, so weights stay constants.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper

from . import _util as U
from .builder import GRAD_PREFIX, SEED, Builder, gradient_name  # noqa: F401 (re-exported)
from .errors import GraphError, node_error
from .rules import RULES  # noqa: F401 (re-exported)
from .rules.precision import widen_float16

log = logging.getLogger(__name__)

RELU_MODES = ("standard", "guided", "deconvnet")
RECTIFIERS = ("Relu", "Clip")
TARGET = "target"
SEED_MODES = ("input", "top")
#: how rectifier-like rules write their 0/1 masks (see build_gradient_model)
STEP_MASKS = ("hardsigmoid", "compare")


def build_gradient_model(
    model: ModelProto,
    *,
    reduction: str | None = None,
    wrt: Sequence[str] | None = None,
    activations: Sequence[str] = (),
    relu_mode: str = "standard",
    rectifiers: Sequence[str] = RECTIFIERS,
    seed: str = "input",
    step_masks: str = "hardsigmoid",
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
    step_masks : {"hardsigmoid", "compare"}
        How the 0/1 masks of rectifier-like rules (Relu, Clip, HardSigmoid, HardSwish) are
        written. ``"hardsigmoid"``: ``HardSigmoid(y; +-2**100, ...)``, exact in float32 and
        kept by onnxruntime's CPU provider in its blocked layout next to the Convs (the fast
        form there). ``"compare"``: ``Cast(Greater/Less(...))``, the portable form for other
        providers: OpenVINO's CPU device computes the 2**100 HardSigmoid wrongly (relative
        error ~1 on the bundled model's first Clip mask, found by the build-time guard).

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
    if step_masks not in STEP_MASKS:
        raise GraphError(f"The 'step_masks' parameter must be one of {STEP_MASKS}; got {step_masks!r}")
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

    b = Builder(m, shapes, relu_mode, set(rectifiers), batch_dims, step_masks)
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
