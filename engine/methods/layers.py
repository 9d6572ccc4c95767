"""Choosing and describing the feature layer of the CAM family (Grad-CAM, Grad-CAM++, Score-CAM).

The automatic rule: **the last feature map with a spatial or token-grid layout that feeds
the classifier head** (as MATLAB ``gradCAM`` picks its layer; see the README, "Grad-CAM
feature layer").

1. Candidates are float tensors on every path from the image input to the model output
   (articulation tensors: nothing inside a residual block or a branch) laid out as a map:

   - rank 4, [N, C, H, W] or [N, H, W, C] (layout below), with H * W > 1;
   - rank 3 tokens [N, T, D] on a patch grid: T = gh * gw + e with 0 <= e <= 8 leading
     class / distillation / register tokens, the grid (gh, gw) being that of the nearest
     earlier rank-4 tensor with gh * gw = T - e (a patch embedding, a token merge, a
     reshape inside a block), else the square T - e = g * g with the smallest e. Each
     token tensor gets its own grid, so later stages of hierarchical transformers
     (LeViT, CoaT, EfficientFormer, TinyViT) are candidates, not only the first.

2. Not candidates:

   - tensors made by data-movement ops (Slice, Gather, Reshape, Transpose, Flatten,
     Squeeze, Unsqueeze, Split, Expand, Identity, Dropout, Cast, Pad, Tile): they copy a
     map, they do not compute one; the map they copy is the candidate (BEiT's
     ``x[:, 1:]`` before its mean pool is not chosen, the last block's output is);
   - the class-score part of the head: every tensor from which the output is reached
     through pooling, reshaping and activations only (no Conv, Gemm or MatMul left), such
     as SqueezeNet's 1000-channel class-score Conv and its ReLU: the map feeding that
     Conv is the feature map.

3. Choice: the last candidate in topological order. Rank-4 maps count only when produced
   by an activation (Relu, Clip, HardSwish, Gelu, ...) or by Add / Concat / Mul / Sum (Mul
   covers swish and squeeze-excitation gates), unless no map is, so a block's output is
   taken rather than a normalisation or convolution inside it. When token candidates come
   after the last map (transformers), the choice is **measured**: one gradient run at a
   fixed random image takes the gradient with respect to every such token tensor, and
   the last one whose patch tokens receive non-zero gradient wins (a ViT whose head reads
   only the class token gives the last block's *output* exactly zero patch gradient, so
   the last block's input is chosen; a mean-pooled head (BEiT, DeiT-III, Swin, LeViT)
   chooses the last block's output). Token tensors count only when produced by one of the
   same ops as maps (activation, Add, Concat, Mul, Sum) and not by a constant per-channel
   scale or shift (``x * a + b`` with a constant a or b that does not vary over tokens),
   unless none is: the final ``norm`` before the pool (EfficientFormer's and Mixer's
   LayerNormalization, ResMLP's ``Affine``) is skipped for the last block's residual Add
   that feeds it, as a normalisation is for maps. With no live token tensor the last map
   is used.
   No candidate at all is an error asking for ``feature_layer``.

What this gives on the zoo (tests/graph/test_real_zoo.py checks it per row): ResNet's last
``layer4`` ReLU, MobileNet/EfficientNet's last HardSwish/SiLU map, SqueezeNet's last Fire
Concat (512 channels, not the class-score Conv), DenseNet's final ReLU, ConvNeXt's last
block Add, Swin's last block output (tokens, 2 x 2 grid), ViT's last block input (class-token
head), BEiT's last block output, LeViT's last-stage tokens (2 x 2 grid), CoaT-Lite's
last-stage tokens (2 x 2 grid + class token).

Channel axis of rank-4 tensors: ONNX convolutions and pools are channels-first, so a map
produced by them is NCHW; graphs converted from TensorFlow keep NHWC tensors between
``Transpose`` nodes. The layout is tracked from the image input through the graph
(Conv/Pool/BatchNormalization outputs are NCHW, Transpose permutes the channel axis,
elementwise ops, LayerNormalization and Concat keep their input's layout). A tensor whose
layout cannot be traced (e.g. after a Reshape) is read by its shape: the reading whose
spatial sizes come from one common stride of the input size (ceil(H_in / s),
ceil(W_in / s)) wins when only one reading does (timm's Swin keeps [N, H, W, C] maps built
by Reshape); when both or neither do it is taken as NCHW and logged. Pass
``feature_layout`` to override.
"""
from __future__ import annotations

import difflib
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import onnx

from ..errors import OptionError, OptionTypeError
from .._validation import check_choice
from ..graph import articulation_tensors, list_tensors, tap_model, topo_sort
from ..model import Model

log = logging.getLogger(__name__)

#: producers that make a tensor a preferred Grad-CAM feature layer
PREFERRED_OPS = frozenset({
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu",
    "Gelu", "Tanh", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Swish",
    "Add", "Concat", "Mul", "Sum",
})
#: ops whose rank-4 output is channels-first whatever their input
_CHANNELS_FIRST_OPS = frozenset({
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "BatchNormalization", "InstanceNormalization",
    "LRN", "DepthToSpace", "SpaceToDepth", "MaxRoiPool", "RoiAlign",
})
#: ops through which a rank-4 layout passes unchanged (anything elementwise or channel-preserving)
_LAYOUT_KEEPING_OPS = PREFERRED_OPS | frozenset({
    "LayerNormalization", "Sub", "Div", "Max", "Min", "Mean", "Neg", "Abs", "Exp", "Log", "Sqrt", "Pow", "Reciprocal", "Erf",
    "Identity", "Dropout", "Cast", "Pad", "Slice", "Resize", "Upsample", "Where", "Floor", "Ceil",
    "Round", "Sign", "Sin", "Cos", "DequantizeLinear", "QuantizeLinear",
})
#: ops that only move, select or re-type data: their outputs are never feature-layer candidates
DATA_MOVEMENT_OPS = frozenset({
    "Slice", "Gather", "GatherElements", "GatherND", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze",
    "Split", "Expand", "Identity", "Dropout", "Cast", "CastLike", "Pad", "Tile", "Shape", "Size",
})
#: ops that may sit between a class-score map and the output (pooling, reshaping, activations)
_HEAD_ONLY_OPS = DATA_MOVEMENT_OPS | frozenset({
    "GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool", "ReduceMean", "ReduceMax", "ReduceSum",
    "Relu", "Clip", "Sigmoid", "Softmax", "LogSoftmax", "HardSigmoid", "LeakyRelu", "Concat", "Div", "Mul",
    "Add", "Sub",
})
FEATURE_LAYOUTS = ("NCHW", "NHWC")
#: at most this many non-patch tokens (class, distillation, register tokens) lead a token tensor
_MAX_EXTRA_TOKENS = 8


@dataclass(frozen=True)
class FeatureLayer:
    """A feature tensor and how to read it as (C, H, W) maps.

    ``layout`` is "NCHW", "NHWC" or "tokens" ([N, T, D] with ``extra_tokens`` leading
    non-patch tokens and the remaining tokens on a ``grid`` = (gh, gw) patch grid).
    ``shape`` is the per-sample shape (without the batch axis).
    """

    name: str
    op_type: str
    shape: tuple[int, ...]
    layout: str
    grid: tuple[int, int]
    extra_tokens: int = 0

    @property
    def num_channels(self) -> int:
        return int(self.shape[-1] if self.layout in ("NHWC", "tokens") else self.shape[0])

    def to_nchw(self, batch: np.ndarray) -> np.ndarray:
        """A batch of this tensor's values (N, *shape) as float32 (N, C, H, W) maps."""
        x = np.asarray(batch, dtype=np.float32)
        if self.layout == "NCHW":
            return x
        if self.layout == "NHWC":
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        gh, gw = self.grid
        patches = x[:, self.extra_tokens:, :]
        return np.ascontiguousarray(patches.reshape(len(x), gh, gw, -1).transpose(0, 3, 1, 2))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "op_type": self.op_type, "shape": list(self.shape), "layout": self.layout,
                "grid": list(self.grid), "extra_tokens": self.extra_tokens}


@dataclass(frozen=True)
class _Tensor:
    name: str
    op_type: str
    shape: tuple | None     # per-sample shape; None when unknown
    is_float: bool


# Automatic choices are cached per model (the token probe costs a gradient run).
_AUTO_CACHE: "weakref.WeakKeyDictionary[Model, FeatureLayer]" = weakref.WeakKeyDictionary()
_FACTS_CACHE: "weakref.WeakKeyDictionary[Model, tuple]" = weakref.WeakKeyDictionary()


def feature_layer_for(model: Model, feature_layer: str | None = None, *, feature_layout: str | None = None,
                      environment: str | None = None, allow_probe: bool = True) -> FeatureLayer:
    """The feature layer to use: the automatic choice, or the named tensor validated.

    Parameters
    ----------
    model : Model
    feature_layer : str, optional
        A tensor name of the model graph (see ``onnxplain inspect --all``); None chooses
        automatically (module docstring).
    feature_layout : {"NCHW", "NHWC"}, optional
        Channel axis of a rank-4 feature tensor when the traced layout is wrong.
    environment : str, optional
        Execution environment for the token-model gradient probe.
    allow_probe : bool
        Whether the automatic choice may run the gradient engine (token models); forward-only
        callers (Score-CAM on graphs the engine cannot reverse) pass False.

    Raises
    ------
    ValueError
        Unknown tensor, a tensor that is not a float rank-3/4 map on the input's data flow,
        or no usable automatic choice (the message asks for ``feature_layer``).
    """
    if feature_layout is not None:
        check_choice("feature_layout", feature_layout, FEATURE_LAYOUTS)
    tensors, order, articulation = _facts(model)
    if feature_layer is None:
        if feature_layout is None and model in _AUTO_CACHE:
            return _AUTO_CACHE[model]
        chosen = _choose(model, tensors, order, articulation, feature_layout, environment, allow_probe)
        if feature_layout is None:
            _AUTO_CACHE[model] = chosen
        return chosen
    if not isinstance(feature_layer, str):
        raise OptionTypeError(f"The 'feature_layer' parameter must be a tensor name (str) or None; got "
                        f"{type(feature_layer).__name__}.")
    if feature_layer not in tensors:
        close = _close_names(feature_layer, order)
        hint = f" Close names: {close}." if close else " List them with `onnxplain inspect --all`."
        raise OptionError(f"The 'feature_layer' parameter names no tensor of the model: {feature_layer!r}.{hint}")
    t = tensors[feature_layer]
    if not t.is_float:
        raise OptionError(f"feature layer {feature_layer!r} is not a float tensor; choose an activation map.")
    if t.shape is None or len(t.shape) not in (2, 3):
        shape = "unknown" if t.shape is None else f"[N, {', '.join(str(d) for d in t.shape)}]"
        raise OptionError(f"feature layer {feature_layer!r} has shape {shape}; expected a rank-4 map [N, C, H, W] "
                         "(or [N, H, W, C]) or a rank-3 token tensor [N, T, D].")
    if len(t.shape) == 3:
        return _as_map(model, t, feature_layout)
    return _as_tokens(model, t, order, tensors)


def _choose(model, tensors, order, articulation, feature_layout, environment, allow_probe) -> FeatureLayer:
    position = {n: k for k, n in enumerate(order)}
    grids = _token_grids(model, order, tensors)
    head = _class_score_tensors(model, order)
    maps, tokens = [], []
    for name in order:
        t = tensors[name]
        if name not in articulation or name in head or not t.is_float or t.shape is None \
                or t.op_type in DATA_MOVEMENT_OPS or name == model.input_name:
            continue
        if len(t.shape) == 3:
            layer = _as_map(model, t, feature_layout)
            if layer.grid[0] * layer.grid[1] > 1:
                maps.append(layer)
        elif len(t.shape) == 2 and name in grids:
            tokens.append(t)
    preferred = [m for m in maps if m.op_type in PREFERRED_OPS] or maps
    last_map = preferred[-1] if preferred else None
    tokens = [t for t in tokens if last_map is None or position[t.name] > position[last_map.name]]
    # a token trunk's block output is a residual Add (or an activation, Concat, gated Mul), not a
    # normalisation or its constant per-channel scale-and-shift (the final `norm` before the pool)
    affine = _constant_affine_outputs(model.onnx_model.graph)
    tokens = [t for t in tokens if t.op_type in PREFERRED_OPS and t.name not in affine] or tokens
    if last_map is not None and not tokens:
        log.info("Grad-CAM feature layer: %s (%s, %s)", last_map.name, last_map.op_type, last_map.layout)
        return last_map
    if not tokens and model.input_size is None:
        raise OptionError(f"{model.path}: cannot choose a Grad-CAM feature layer automatically: the model's input "
                         "size is dynamic, so its feature-map sizes are unknown; declare preprocessing input_size "
                         "or pass feature_layer=<tensor name>.")
    if not tokens:
        raise OptionError(f"{model.path}: cannot choose a Grad-CAM feature layer automatically (no rank-4 map "
                         "with spatial size > 1 lies on every input-to-output path, and no token tensor with a "
                         "patch grid was found); pass feature_layer=<tensor name> (list tensors with "
                         "`onnxplain inspect --all`).")
    if not allow_probe:
        raise OptionError(f"{model.path}: choosing a token model's feature layer needs a gradient probe; pass "
                         "feature_layer=<tensor name> for forward-only methods.")
    live = _tokens_with_patch_gradient(model, [(t.name, grids[t.name]) for t in tokens], environment)
    if not live:
        if last_map is not None:
            log.info("Grad-CAM feature layer: %s (no token tensor's patch tokens receive gradient)", last_map.name)
            return last_map
        raise OptionError(f"{model.path}: no token tensor's patch tokens receive gradient; pass "
                         "feature_layer=<tensor name>.")
    t = tensors[live[-1]]
    grid, extra = grids[t.name]
    log.info("Grad-CAM feature layer: %s (tokens on a %dx%d grid, %d extra)", t.name, *grid, extra)
    return FeatureLayer(t.name, t.op_type, tuple(t.shape), "tokens", grid, extra)


def _constant_affine_outputs(graph) -> set[str]:
    """Outputs of Mul / Add / Sub / Div nodes with one constant per-channel operand (x * a, x + b).

    Constant: an initializer, a Constant node's output or an Identity of one, whose dims are all 1 but the last
    (a scalar or a per-channel vector): a normalisation's scale-and-shift such as ResMLP's
    ``Affine`` norm or LayerScale, never a position embedding (it varies over tokens).
    """
    const = {i.name: tuple(i.dims) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            const[node.output[0]] = tuple(node.attribute[0].t.dims)
        elif node.op_type == "Identity" and node.input[0] in const:    # torch's shared-weight aliases
            const[node.output[0]] = const[node.input[0]]
    out = set()
    for node in graph.node:
        if node.op_type not in ("Mul", "Add", "Sub", "Div") or len(node.input) != 2:
            continue
        shapes = [const.get(i) for i in node.input]
        if sum(s is not None for s in shapes) == 1:
            dims = next(s for s in shapes if s is not None)
            if all(d == 1 for d in dims[:-1]):
                out.add(node.output[0])
    return out


def _class_score_tensors(model: Model, order) -> set[str]:
    """Tensors from which the output is reached through head-only ops (no Conv/Gemm/MatMul left)."""
    graph = model.onnx_model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for i in node.input:
            if i:
                consumers.setdefault(i, []).append(node)
    head = {model.output_name}
    for name in reversed(order):
        users = consumers.get(name, [])
        if name in head or not users:
            continue
        if all(u.op_type in _HEAD_ONLY_OPS and all(o in head for o in u.output if o) for u in users):
            head.add(name)
    return head


def _token_grids(model, order, tensors) -> dict[str, tuple[tuple[int, int], int]]:
    """name -> ((gh, gw), extra tokens) for every rank-3 float tensor that reads as a patch grid."""
    grids: dict[str, tuple[tuple[int, int], int]] = {}
    recent: list[tuple[int, int]] = []          # spatial sizes of rank-4 tensors seen so far, newest last
    for name in order:
        t = tensors[name]
        if t.shape is None or not t.is_float:
            continue
        if len(t.shape) == 3:
            layer = _as_map(model, t, None, quiet=True)
            if layer.grid[0] * layer.grid[1] > 1:
                recent.append(layer.grid)
        elif len(t.shape) == 2:
            found = _grid_for(int(t.shape[0]), recent)
            if found is not None:
                grids[name] = found
    return grids


def _grid_for(tokens: int, recent) -> tuple[tuple[int, int], int] | None:
    for grid in reversed(recent):
        extra = tokens - grid[0] * grid[1]
        if 0 <= extra <= _MAX_EXTRA_TOKENS:
            return (int(grid[0]), int(grid[1])), int(extra)
    for extra in range(_MAX_EXTRA_TOKENS + 1):
        side = round(float(np.sqrt(max(tokens - extra, 0))))
        if side >= 2 and side * side == tokens - extra:
            return (side, side), extra
    return None


def _as_map(model, t: _Tensor, feature_layout, quiet: bool = False) -> FeatureLayer:
    layout = feature_layout or _traced_layout(model, t.name) or _layout_from_strides(model, t.shape)
    if layout is None:
        if not quiet:
            log.info("feature layer %s: layout not traceable; assuming NCHW (pass feature_layout to override)",
                     t.name)
        layout = "NCHW"
    c, a, b = t.shape
    grid = (a, b) if layout == "NCHW" else (c, a)
    return FeatureLayer(t.name, t.op_type, tuple(t.shape), layout, (int(grid[0]), int(grid[1])))


def _layout_from_strides(model, shape) -> str | None:
    """The reading of a rank-4 per-sample shape whose spatial sizes share one stride of the input."""
    if model.input_size is None or shape is None or len(shape) != 3:
        return None
    h_in, w_in = model.input_size

    def strided(h, w):
        return any(-(-h_in // s) == h and -(-w_in // s) == w for s in range(1, max(h_in, w_in) + 1))

    nchw, nhwc = strided(shape[1], shape[2]), strided(shape[0], shape[1])
    if nchw != nhwc:
        return "NCHW" if nchw else "NHWC"
    return None


def _as_tokens(model, t: _Tensor, order, tensors) -> FeatureLayer:
    tokens = int(t.shape[0])
    found = _token_grids(model, order, tensors).get(t.name)
    if found is None:
        raise OptionError(f"feature layer {t.name!r} is a token tensor [N, {tokens}, {t.shape[1]}] but no patch "
                          f"grid can be found (no earlier map with H * W = T - e, 0 <= e <= {_MAX_EXTRA_TOKENS}, "
                          "and no square T - e); choose a rank-4 feature map.")
    grid, extra = found
    return FeatureLayer(t.name, t.op_type, tuple(t.shape), "tokens", grid, extra)


def _tokens_with_patch_gradient(model: Model, named_grids, environment) -> list[str]:
    """Token tensors (in the given order) whose patch tokens get non-zero gradient at a random image."""

    names = [n for n, _ in named_grids]
    engine = engine_for(model, environment or model.execution_environment, names)
    h, w = model.input_size
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (1, h, w, 3)).astype(np.float32)
    width = int(np.prod(_output_shape(model)))
    seed = rng.standard_normal((1, width)).astype(np.float32).reshape((1, *_output_shape(model)))
    out = engine.run(pixels, seed, wrt=names)
    live = []
    for name, (_grid, extra) in named_grids:
        g = np.asarray(out[f"grad:{name}"])
        patches = g[:, extra:, :]
        if np.any(patches != 0):
            live.append(name)
    return live


def _output_shape(model: Model) -> tuple[int, ...]:
    tensors, _, _ = _facts(model)
    t = tensors.get(model.output_name)
    if t is not None and t.shape is not None and all(isinstance(d, int) for d in t.shape):
        return tuple(t.shape)
    x = model.to_native(np.zeros((1, *model.input_size, 3), np.float32))
    return tuple(model.run_native(x).shape[1:])


def tensor_shape(model: Model, name: str) -> tuple | None:
    """Per-sample shape of a tensor of the model graph (None if unknown or no such tensor)."""
    t = _facts(model)[0].get(name)
    return None if t is None else t.shape


def tensor_names(model: Model) -> list[str]:
    """All tensor names of the model graph in topological order."""
    return list(_facts(model)[1])


# ---- graph facts ------------------------------------------------------------------------
def _facts(model: Model) -> tuple[dict[str, _Tensor], list[str], set[str]]:
    """(tensors by name, names in topological order, articulation names) of the model graph."""
    if model in _FACTS_CACHE:
        return _FACTS_CACHE[model]

    proto = model.onnx_model
    tensors: dict[str, _Tensor] = {}
    order: list[str] = []
    unknown = []
    for info in list_tensors(proto):
        shape = _per_sample(info.shape)
        is_float = _is_float(info.dtype) or info.dtype == "unknown"
        tensors[info.name] = _Tensor(info.name, info.op_type or "", shape, is_float)
        order.append(info.name)
        if shape is None and is_float and (info.shape is None or len(info.shape) in (3, 4)):
            unknown.append(info.name)
    if unknown and model.input_size is not None:
        # Shape inference gives up behind run-time padding arithmetic (TF "same" exports):
        # one forward run of a zero image tells the sizes.
        for name, (shape, dtype) in model.probe_shapes(unknown).items():
            tensors[name] = _Tensor(name, tensors[name].op_type, shape or None, dtype.startswith("float"))
    articulation = set(articulation_tensors(proto, model.input_name, model.output_name))
    facts = (tensors, order, articulation)
    _FACTS_CACHE[model] = facts
    return facts


def _per_sample(shape) -> tuple | None:
    if shape is None:
        return None
    dims = tuple(shape)
    if len(dims) == 0:
        return None
    rest = dims[1:]
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in rest):
        return None
    return tuple(int(d) for d in rest)


def _is_float(dtype) -> bool:
    if isinstance(dtype, (int, np.integer)):
        return int(dtype) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                              onnx.TensorProto.BFLOAT16)
    try:
        return np.dtype(dtype).kind == "f"
    except TypeError:
        return "float" in str(dtype).lower() or "double" in str(dtype).lower()


def _traced_layout(model: Model, name: str) -> str | None:
    """"NCHW"/"NHWC" of a rank-4 tensor traced from the input through the graph; None if unknown."""
    axes = _channel_axes(model)
    axis = axes.get(name)
    return {1: "NCHW", 3: "NHWC"}.get(axis)


_AXES_CACHE: "weakref.WeakKeyDictionary[Model, dict]" = weakref.WeakKeyDictionary()


def _channel_axes(model: Model) -> dict[str, int]:
    if model in _AXES_CACHE:
        return _AXES_CACHE[model]
    tensors, order, _ = _facts(model)
    rank = {n: (len(t.shape) + 1 if t.shape is not None else None) for n, t in tensors.items()}
    axes: dict[str, int] = {model.input_name: 1 if model.layout == "NCHW" else 3}
    graph = model.onnx_model.graph

    for node in topo_sort(graph):
        outs = [o for o in node.output if o and rank.get(o) == 4]
        if not outs:
            continue
        if node.op_type in _CHANNELS_FIRST_OPS:
            axis = 1
        else:
            known = [axes[i] for i in node.input if i in axes and rank.get(i) == 4]
            if not known:
                continue
            if node.op_type == "Transpose":
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [3, 2, 1, 0])
                axis = perm.index(known[0])
            elif node.op_type in _LAYOUT_KEEPING_OPS:
                axis = known[0]
            else:
                continue
        for o in outs:
            axes[o] = axis
    _AXES_CACHE[model] = axes
    return axes


def _close_names(name: str, names: list[str]) -> list[str]:

    return difflib.get_close_matches(name, names, n=3, cutoff=0.6)


# ---- the gradient engine ----------------------------------------------------------------
def engine_for(model: Model, env: str, names: Sequence[str] = ()):
    """The model's gradient engine for ``env`` whose prepared graph still has every tensor in ``names``.

    Preparation (folding) may remove or rename inner tensors that nobody asked to keep; a
    name the shared engine lost gets an engine prepared with ``keep=names`` (cached by the model).
    """
    base = model.gradient_engine(env)
    if _has_tensors(base, names):
        return base
    log.info("preparing a gradient engine that keeps %s", sorted(set(names)))
    return model.gradient_engine(env, keep=names)


def _has_tensors(engine, names: Sequence[str]) -> bool:
    if not names:
        return True
    graph = engine.model.graph
    produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    return all(n in produced for n in names)


# ---- tapped graphs ---------------------------------------------------------------------------
#: model -> {(provider, tensor names): session of the graph with those tensors as outputs}
_TAPPED: "weakref.WeakKeyDictionary[Model, dict]" = weakref.WeakKeyDictionary()


def tapped_run(model: Model, env: str, names: Sequence[str], native: np.ndarray) -> list[np.ndarray]:
    """Values of the named tensors for a native input batch (a cached session of the tapped graph)."""
    cache = _TAPPED.setdefault(model, {})
    key = (env, tuple(names))
    if key not in cache:
        cache[key] = model.new_session(tap_model(model.onnx_model, list(names)), env, graph="tapped graph")
    session = cache[key]
    if model.static_batch == 1 and len(native) > 1:
        parts = [session.run(list(names), {model.input_name: native[i:i + 1]}) for i in range(len(native))]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(names))]
    return session.run(list(names), {model.input_name: native})
