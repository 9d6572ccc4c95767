"""Export an explainer: one standalone ONNX file that returns a model's scores and a saliency map.

:func:`export_explainer` writes a graph with

- input ``pixels``: float32 (N, H, W, 3) raw RGB pixels at the model's input size, in the
  units the model's preprocessing declares (0..255 for the usual presets): the declared
  preprocessing (channel order, scale, mean/std, layout, float16 cast) is fused in front;
- optional input ``class_index``: int64 (N,) or (1,), default ``[-1]`` (an initializer:
  runtimes that are not given it use the default): a negative entry explains the predicted
  class (the argmax of the scores), else the given class;
- outputs ``scores`` (N, K): the model's output as it is (probabilities for a model ending
  in Softmax), and ``saliency`` float32 (N, H, W): the map at the input size.

Methods (all in one run of the file, no Python, any ONNX Runtime: server, mobile, web):

- ``"gradcam"``: the reverse-mode graph of :mod:`onnxplain.graph` at the automatic (or
  named) feature layer, ``ReLU(sum_c mean_ij(dy/dA_c) A_c)``, upsampled bilinearly
  (``Resize`` linear, half-pixel: equal to ``grad_cam(..., output_upsampling="bilinear")``);
- ``"reciprocam"``: the network's tail inlined after the feature layer and run on the
  ``h * w`` Gaussian-masked copies of the feature map (:func:`onnxplain.recipro_cam`'s
  defaults: logits), upsampled bilinearly; no gradients;
- ``"gradient"``: the input gradient, ``sum_c |dy/dx_c|`` per pixel
  (:func:`onnxplain.gradient_attribution` ``method="gradient"``).

The file passes ``onnx.checker.check_model(full_check=True)`` before it is written.
Refused: models whose output is not (N, K) class scores (a single sigmoid output, dense
outputs), token (ViT) feature layers for ReciproCAM, uint8 models for the gradient methods.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import ModelError
from .model import Model
from ._validation import check_choice
from .graph import (SEED, build_gradient_model, gradient_name, prepare_model, subgraph_inputs, topo_sort,
                    value_info_shape)
from .methods import FEATURES, per_sample_shape, tail_model
from .methods.layers import _facts, engine_for, feature_layer_for
from .methods.reciprocam import score_tensor, spatial_masks

__all__ = ["EXPORT_METHODS", "export_explainer"]

EXPORT_METHODS = ("gradcam", "reciprocam", "gradient")
PIXELS = "pixels"
CLASS = "class_index"
SCORES = "scores"
SALIENCY = "saliency"
_P = "onnxplain_x/"


def export_explainer(model: Model, method: str = "gradcam", path: str | os.PathLike | None = None, *,
                     feature_layer: str | None = None, kernel: str = "gaussian") -> onnx.ModelProto:
    """Write (and return) a standalone ONNX explainer for ``model`` (module docstring).

    Parameters
    ----------
    model : Model
        From :func:`onnxplain.load_model`, with a known input size.
    method : {"gradcam", "reciprocam", "gradient"}
    path : path, optional
        Where to write the file; None only returns the ModelProto.
    feature_layer : str, optional
        The CAM feature layer (default the automatic choice).
    kernel : {"gaussian", "point"}
        ReciproCAM's spatial mask.

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker.check_model(full_check=True)``.

    Raises
    ------
    ValueError
        Unknown method; a model or layer the method cannot export (message says which).
    """
    check_choice("method", method, EXPORT_METHODS)
    if not isinstance(model, Model):
        raise TypeError(f"The 'model' parameter must be an onnxplain Model; got {type(model).__name__}.")
    if model.input_size is None:
        raise ModelError(f"{model.path}: the model's input size is dynamic and none is declared; an exported "
                         "explainer takes pixels at a fixed size: declare preprocessing input_size.")
    if model.output_kind == "sigmoid":
        raise ValueError(f"{model.path}: export_explainer needs an (N, K) class-score output; this model has a "
                         "single sigmoid output.")
    shape = per_sample_shape(model, model.output_name, True)
    if len(shape) != 1:
        raise ValueError(f"{model.path}: export_explainer needs an (N, K) class-score output; output "
                         f"{model.output_name!r} is [N, {', '.join(str(d) for d in shape)}] (a dense output: "
                         "explain it with grad_cam(reduction=ClassRegion(...)) in Python).")
    if method == "reciprocam":
        out = _reciprocam(model, feature_layer, kernel)
    else:
        out = _gradient_method(model, method, feature_layer)
    out.doc_string = f"onnxplain explainer: {method} of {os.path.basename(str(model.path))}"
    helper.set_model_props(out, {"onnxplain.explainer": method,
                                 "onnxplain.preprocessing": _json(model.preprocessing.to_dict())})
    onnx.checker.check_model(out, full_check=True)
    if path is not None:
        onnx.save(out, os.fspath(path))
    return out


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


# ---- shared pieces ------------------------------------------------------------------------
class _Builder:
    def __init__(self, graph: onnx.GraphProto, opset: int):
        self.g = graph
        self.opset = opset
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{_P}{hint}_{self.count}"

    def const(self, value, hint="c") -> str:
        n = self.name(hint)
        self.g.initializer.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def node(self, op: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.name(hint or op.lower())
        self.g.node.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def reduce(self, op: str, x: str, axes: list[int], keepdims: int = 1) -> str:
        if self.opset >= 18 or (op == "ReduceSum" and self.opset >= 13):
            return self.node(op, [x, self.const(np.asarray(axes, np.int64), "axes")], keepdims=keepdims)
        return self.node(op, [x], axes=axes, keepdims=keepdims)

    def chosen_class(self, scores: str, num_classes: int) -> str:
        """int64 (N,): argmax of scores where class_index < 0, else class_index."""
        top = self.node("ArgMax", [scores], axis=1, keepdims=0)
        neg = self.node("Less", [CLASS, self.const(np.array(0, np.int64), "zero")])
        return self.node("Where", [neg, top, CLASS], "class")

    def onehot(self, index: str, num_classes: int) -> str:
        return self.node("OneHot", [index, self.const(np.array([num_classes], np.int64), "depth"),
                                    self.const(np.array([0.0, 1.0], np.float32), "values")], axis=-1)

    def upsample(self, cam_n1hw: str, size: tuple[int, int]) -> str:
        """(N, 1, h, w) -> float32 (N, H, W), bilinear half-pixel."""
        shape = self.node("Shape", [cam_n1hw])
        lead = self.node("Slice", [shape, self.const(np.array([0], np.int64)), self.const(np.array([2], np.int64))])
        sizes = self.node("Concat", [lead, self.const(np.asarray(size, np.int64), "hw")], axis=0)
        up = self.node("Resize", [cam_n1hw, "", "", sizes], mode="linear",
                       coordinate_transformation_mode="half_pixel")
        return self.node("Squeeze", [up, self.const(np.array([1], np.int64), "axis1")])

    def finish(self, scores_src: str, saliency_src: str, num_classes: int, size: tuple[int, int]) -> None:
        g = self.g
        g.node.append(helper.make_node("Identity", [scores_src], [SCORES], name=f"{_P}scores"))
        g.node.append(helper.make_node("Identity", [saliency_src], [SALIENCY], name=f"{_P}saliency"))
        del g.output[:]
        g.output.extend([helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["N", num_classes]),
                         helper.make_tensor_value_info(SALIENCY, TensorProto.FLOAT, ["N", *size])])


def _add_class_input(graph: onnx.GraphProto) -> None:
    graph.input.append(helper.make_tensor_value_info(CLASS, TensorProto.INT64, ["M"]))
    graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), CLASS))


def _opset(m: onnx.ModelProto) -> int:
    return max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=13)


def _float_scores(b: _Builder, model: Model, output: str) -> str:
    """The model output as float32 (N, K)."""
    out = output
    if model.input_dtype == np.float16:
        out = b.node("Cast", [out], to=TensorProto.FLOAT)
    return b.node("Flatten", [out], axis=1)


def _layer(model: Model, feature_layer: str | None, forward_only: bool):
    layer = feature_layer_for(model, feature_layer, allow_probe=not forward_only)
    if layer.layout == "tokens":
        raise ValueError(f"export_explainer: feature layer {layer.name!r} is a token tensor; exported CAMs take a "
                         "rank-4 feature map (name one with feature_layer=).")
    return layer


# ---- gradient methods ----------------------------------------------------------------------
def _gradient_method(model: Model, method: str, feature_layer: str | None) -> onnx.ModelProto:
    if model.input_dtype == np.uint8:
        raise ModelError(f"{model.path}: the model takes uint8 input, which has no gradient; export 'reciprocam'.")
    layer = _layer(model, feature_layer, False) if method == "gradcam" else None
    keep = [layer.name] if layer else []
    engine = engine_for(model, "cpu", keep)
    prepared = engine.model
    wrt = [layer.name] if layer else [engine.input_name]
    gm = build_gradient_model(prepared, reduction=engine.output_name, wrt=wrt, activations=keep, seed="input")
    g = gm.graph
    b = _Builder(g, _opset(gm))
    k = model.num_classes
    scores = _float_scores(b, model, engine.output_name)
    _add_class_input(g)
    chosen = b.chosen_class(scores, k)
    onehot = b.onehot(chosen, k)
    # the seed becomes a node: its consumers only lie on the backward path
    seed_vi = next(i for i in g.input if i.name == SEED)
    seed_type = seed_vi.type.tensor_type.elem_type
    g.input.remove(seed_vi)
    seed_src = onehot if seed_type == TensorProto.FLOAT else b.node("Cast", [onehot], to=seed_type)
    seed_shape = U_shape(seed_vi)
    if len(seed_shape) != 2:
        seed_src = b.node("Reshape", [seed_src, b.const(np.array([-1, *seed_shape[1:]], np.int64))])
    g.node.append(helper.make_node("Identity", [seed_src], [SEED], name=f"{_P}seed"))
    grad = gradient_name(wrt[0])
    if method == "gradient":
        sal = b.reduce("ReduceSum", b.node("Abs", [grad]), [3], keepdims=0)   # pixels are (N, H, W, 3)
    else:
        acts, g_nchw = keep[0], grad
        if layer.layout == "NHWC":
            acts = b.node("Transpose", [acts], perm=[0, 3, 1, 2])
            g_nchw = b.node("Transpose", [grad], perm=[0, 3, 1, 2])
        weights = b.reduce("ReduceMean", g_nchw, [2, 3])
        cam = b.node("Relu", [b.reduce("ReduceSum", b.node("Mul", [weights, acts]), [1])])
        sal = b.upsample(cam, model.input_size)
    _order(g)
    b.finish(scores, sal, k, model.input_size)
    _order(g)
    return _clean(gm)


def U_shape(vi) -> list:
    return list(value_info_shape(vi) or [])


# ---- ReciproCAM ---------------------------------------------------------------------------
def _reciprocam(model: Model, feature_layer: str | None, kernel: str) -> onnx.ModelProto:
    layer = _layer(model, feature_layer, True)
    fused = model.fused_model()
    tensors = _facts(model)[0]
    shapes = {n: t.shape for n, t in tensors.items() if t.shape is not None}
    base = prepare_model(fused, keep=[layer.name]) if model.input_dtype != np.uint8 else fused
    output = model.output_name
    target = score_tensor(model, "logits")
    feature_type = TensorProto.FLOAT16 if model.input_dtype == np.float16 else TensorProto.FLOAT
    tail = tail_model(base, layer.name, target, layer.shape, feature_type, shapes)
    m = onnx.ModelProto()
    m.CopyFrom(base)
    g = m.graph
    b = _Builder(g, _opset(m))
    k = model.num_classes
    h, w = layer.grid
    masks = spatial_masks(h, w, kernel)
    if layer.layout == "NCHW":
        mask = masks[None, :, None]                    # (1, hw, 1, h, w)
        flat = [-1, *layer.shape]
    else:
        mask = masks[None, :, :, :, None]              # (1, hw, h, w, 1)
        flat = [-1, *layer.shape]
    mask_c = b.const(mask.astype(np.float16 if feature_type == TensorProto.FLOAT16 else np.float32), "masks")
    expanded = b.node("Mul", [b.node("Unsqueeze", [layer.name, b.const(np.array([1], np.int64))]), mask_c])
    copies = b.node("Reshape", [expanded, b.const(np.asarray(flat, np.int64))], "copies")
    # inline the tail with fresh names for everything it produces
    produced = {o for n in tail.graph.node for o in n.output if o}
    rename = {FEATURES: copies, **{o: f"{_P}tail/{o}" for o in produced}}
    existing = {t.name for t in g.initializer}
    for init in tail.graph.initializer:
        if init.name not in existing:
            g.initializer.append(init)
    for node in tail.graph.node:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.name = f"{_P}tail/{node.name}"
        for i, x in enumerate(n.input):
            n.input[i] = rename.get(x, x)
        for i, x in enumerate(n.output):
            n.output[i] = rename.get(x, x)
        g.node.append(n)
    tail_out = rename[target]
    scores = _float_scores(b, model, output)
    copy_scores = _float_scores(b, model, tail_out)
    per_image = b.node("Reshape", [copy_scores, b.const(np.array([-1, h * w, k], np.int64))])   # (N, hw, K)
    _add_class_input(g)
    onehot = b.onehot(b.chosen_class(scores, k), k)                                         # (N, K)
    picked = b.node("MatMul", [per_image, b.node("Unsqueeze", [onehot, b.const(np.array([2], np.int64))])])
    cam = b.node("Reshape", [picked, b.const(np.array([-1, 1, h, w], np.int64))])
    sal = b.upsample(cam, model.input_size)
    b.finish(scores, sal, k, model.input_size)
    _order(g)
    return _clean(m)


def _order(g: onnx.GraphProto) -> None:
    nodes = topo_sort(g)
    del g.node[:]
    g.node.extend(nodes)


def _clean(m: onnx.ModelProto) -> onnx.ModelProto:
    """Drop stale value_info (shapes are re-inferred by the checker) and unused nodes."""
    del m.graph.value_info[:]
    needed = {o.name for o in m.graph.output}
    keep = []
    for node in reversed(list(m.graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
            needed.update(subgraph_inputs(node))
    keep.reverse()
    del m.graph.node[:]
    m.graph.node.extend(keep)
    used = needed
    inits = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    inputs = [i for i in m.graph.input if i.name in used or i.name == PIXELS]
    del m.graph.input[:]
    m.graph.input.extend(inputs)
    return m
