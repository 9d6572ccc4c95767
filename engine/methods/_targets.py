"""What a gradient or CAM method explains: the reduction of a tensor to one scalar per target.

A *target* is a weight array ``s`` over the reduction tensor ``R`` (per sample): the
explained scalar is ``y = sum(s * R)``, so ``s`` is also the seed of the reverse pass.
Every form of the ``reduction`` parameter becomes such a seed:

- a class (index or name; also what ``label`` gives): a one-hot over a classifier output;
  on a dense output [N, C, H, W] the class channel summed over all pixels; on a single
  sigmoid output, +1 for class 1 and -1 for class 0 (``p`` and ``1 - p`` differ by a
  constant, so this is the gradient of the class-0 probability);
- :class:`ClassRegion` (or a tuple ``(label, mask)``): a class channel of a dense output
  summed over the pixels of ``mask`` (segmentation, MATLAB's ``reductionFcn`` example);
- a weight array of R's per-sample shape (or its flattened size): used as given;
- a Python callable ``f(r) -> float`` on the per-sample float64 output ``r``: its gradient
  at the working image's ``r`` is the seed, computed by central differences in float64
  (step ``h_i = 1e-5 * max(1, |r_i|)``; 2 * R.size calls of ``f``); a linear ``f`` gets its
  exact weights up to float64 rounding, a non-linear ``f`` its local linearisation. The
  explained score reported is ``f(r)`` itself.
"""
from __future__ import annotations

import difflib
import logging
import numbers
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import LabelError, OptionError, OptionTypeError
from ..images import resize_map
from ..model import Model
from .layers import tapped_run, tensor_names, tensor_shape

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassRegion:
    """Explain class ``label`` of a dense (segmentation) output summed over ``mask``.

    Parameters
    ----------
    label : int or str
        The class channel (an index, or a name when the model has one name per channel).
    mask : ndarray of bool, (H, W), optional
        Pixels to sum over, at the output's spatial size, the image's size or the model's
        input size (resized with nearest neighbour to the output's size); None = all pixels.
    """

    label: Any
    mask: np.ndarray | None = None


@dataclass
class Targets:
    """Resolved targets: the reduction tensor and one seed row per target."""

    tensor: str                    # reduction tensor name (model output or an inner tensor)
    is_output: bool                # R is the model's (first) output
    seeds: np.ndarray              # float32 (K, *R per-sample shape)
    labels: list[int]
    names: list[str]
    kind: str                      # "class", "region", "weights", "callable"
    functions: list[Callable | None] = field(default_factory=list)
    offsets: np.ndarray | None = None   # (K,) added to sum(s * R): 1 for class 0 of a sigmoid output (1 - p)

    @property
    def count(self) -> int:
        return len(self.seeds)

    def scores(self, r: np.ndarray) -> np.ndarray:
        """The explained scalar per target from R values (K, *shape) (one row per target)."""
        r = np.asarray(r, dtype=np.float64)
        out = (self.seeds.astype(np.float64) * r.reshape(self.seeds.shape)).reshape(len(r), -1).sum(axis=1)
        if self.offsets is not None:
            out += self.offsets
        for k, fn in enumerate(self.functions):
            if fn is not None:
                out[k] = float(fn(r[k].copy()))
        return out.astype(np.float32)


def resolve_reduction_layer(model: Model, reduction_layer: str | None) -> tuple[str, bool]:
    """(tensor name, is the model output) for ``reduction_layer`` (None, "logits" or a tensor name)."""

    if reduction_layer is not None and not isinstance(reduction_layer, str):
        raise OptionTypeError(f"The 'reduction_layer' parameter must be None, 'logits' or a tensor name; got "
                              f"{type(reduction_layer).__name__}.")
    if reduction_layer is None or reduction_layer == model.output_name:
        return model.output_name, True
    if reduction_layer == "logits":
        name = model.logits_name or _sigmoid_input(model)
        if name is None:
            if model.output_kind == "logits":
                return model.output_name, True
            raise OptionError(f"reduction_layer='logits': {model.path} does not end in Softmax or Sigmoid, so it "
                             f"has no logits tensor before its output (output kind {model.output_kind!r}); name a "
                             "tensor instead.")
        return name, False
    names = tensor_names(model)
    if reduction_layer not in names:

        close = difflib.get_close_matches(reduction_layer, names, n=3, cutoff=0.6)
        raise OptionError(f"The 'reduction_layer' parameter names no tensor of the model: {reduction_layer!r}."
                         + (f" Close names: {close}." if close else ""))
    return reduction_layer, False


def _sigmoid_input(model: Model) -> str | None:
    if model.output_kind != "sigmoid":
        return None
    for node in model.onnx_model.graph.node:
        if model.output_name in node.output and node.op_type == "Sigmoid":
            return node.input[0]
    return None


def reduction_value(model: Model, pixels: np.ndarray, tensor: str, is_output: bool, env: str) -> np.ndarray:
    """The reduction tensor's per-sample value at the working image (one forward run)."""
    if is_output:
        return model.run_native(model.to_native(pixels[None]), environment=env)[0]

    return tapped_run(model, env, [tensor], model.to_native(pixels[None]))[0][0]


def resolve_targets(model: Model, pixels: np.ndarray, label: Any, reduction: Any, tensor: str, is_output: bool,
                    shape: tuple[int, ...], evaluate: Callable[[], np.ndarray], env: str, *,
                    differentiate: bool = True) -> Targets:
    """Turn ``label`` / ``reduction`` into seeds over the reduction tensor of per-sample ``shape``.

    ``evaluate()`` returns R's per-sample value at the working image (needed for callables
    and for the default top class of a non-output reduction tensor). With
    ``differentiate=False`` (forward-only methods) a callable is only applied, never
    differentiated, and its seed row is zeros.
    """
    if reduction is not None and label is not None:
        raise OptionError("Give either 'label' or 'reduction', not both (a class reduction is the same as a label).")
    if reduction is None and label is not None:
        label = _check_label(label)
    spec = label if reduction is None else reduction
    items = list(spec) if _is_target_list(spec) else [spec]
    if isinstance(spec, np.ndarray) and spec.dtype.kind in "fiub" and spec.ndim >= 1 and reduction is not None:
        items = _weight_rows(spec, shape)
    if not items:
        raise OptionError("The 'label'/'reduction' parameter is an empty list; give at least one target.")
    seeds, labels, names, kinds, fns = [], [], [], set(), []
    for item in items:
        seed, lab, name, kind, fn = _one_target(model, pixels, item, tensor, is_output, shape, evaluate, env,
                                                differentiate)
        seeds.append(seed)
        labels.append(lab)
        names.append(name)
        kinds.add(kind)
        fns.append(fn)
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    offsets = np.array([1.0 if (is_output and model.output_kind == "sigmoid" and lab == 0 and fn is None
                                and names[k] == model.class_names[0]) else 0.0
                        for k, (lab, fn) in enumerate(zip(labels, fns))])
    return Targets(tensor, is_output, np.stack(seeds).astype(np.float32), labels, names, kind, fns, offsets)


def _check_label(label: Any) -> Any:
    """``label`` as a class (int/str) or a list of them, as the masking methods accept it.

    Without this a float label (1.5) or an index array fell through to the weight-array
    form of ``reduction`` (silently, on a one-output model)."""
    many = isinstance(label, (list, tuple, np.ndarray))
    items = [v.item() if isinstance(v, np.generic) else v for v in (label if many else [label])]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (numbers.Integral, str)):
            raise LabelError(f"label must be a class index or a class name; got {item!r} ({type(item).__name__}).")
    return items if many else items[0]


def _is_target_list(spec: Any) -> bool:
    if isinstance(spec, ClassRegion) or callable(spec) or spec is None:
        return False
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], np.ndarray) and not isinstance(
            spec[0], np.ndarray):
        return False  # (label, mask)
    if isinstance(spec, np.ndarray):
        return False
    return isinstance(spec, (list, tuple))


def _weight_rows(spec: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    size = int(np.prod(shape))
    if spec.shape == tuple(shape) or spec.size == size and spec.ndim == 1:
        return [spec]
    if spec.ndim >= 2 and spec[0].size == size:
        return list(spec)
    raise OptionError(f"The 'reduction' weights have shape {spec.shape}; expected the reduction tensor's per-sample "
                     f"shape {tuple(shape)} (or {size} values), or (K, {size}) for K targets.")


def _one_target(model, pixels, item, tensor, is_output, shape, evaluate, env, differentiate):
    size = int(np.prod(shape))
    if item is None:
        if len(shape) > 1:
            raise OptionError(f"reduction tensor {tensor!r} has per-sample shape {tuple(shape)} (a dense output); "
                             "give a class label, ClassRegion(label, mask), weights or a callable.")
        if is_output:
            scores = model.scores_native(model.to_native(pixels[None]), environment=env)[0]
            item = int(np.argmax(scores))
        else:
            r = np.asarray(evaluate(), dtype=np.float64).reshape(-1)
            if size == 1:  # a pre-sigmoid logit: the class the model predicts
                item = int(model.output_kind == "sigmoid" and r[0] > 0)
            else:
                item = int(np.argmax(r))
    if isinstance(item, ClassRegion) or (isinstance(item, tuple) and len(item) == 2):
        region = item if isinstance(item, ClassRegion) else ClassRegion(*item)
        seed, idx, name = _region_seed(model, region, shape, pixels.shape[:2])
        return seed, idx, name, "region", None
    if isinstance(item, (numbers.Integral, str, np.integer)) and not isinstance(item, bool):
        item = item.item() if isinstance(item, np.generic) else item
        if len(shape) >= 3:  # dense output: a class is its channel summed over all pixels
            seed, idx, name = _region_seed(model, ClassRegion(item), shape, pixels.shape[:2])
            return seed, idx, name, "region", None
        return (*_class_seed(model, item, tensor, is_output, shape), "class", None)
    if callable(item):
        if not differentiate:
            return np.zeros(shape, np.float32), -1, getattr(item, "__name__", "callable"), "callable", item
        r = np.asarray(evaluate(), dtype=np.float64).reshape(shape)
        seed = numeric_gradient(item, r)
        return seed.astype(np.float32), -1, getattr(item, "__name__", "callable"), "callable", item
    arr = np.asarray(item)
    if arr.dtype.kind not in "fiub":
        raise OptionTypeError(f"The 'reduction' parameter must be a class (int/str), ClassRegion, (label, mask), a weight "
                        f"array or a callable; got {type(item).__name__}.")
    if arr.size != size:
        raise OptionError(f"The 'reduction' weights have {arr.size} values; the reduction tensor {tensor!r} has "
                         f"per-sample shape {tuple(shape)} ({size} values).")
    w = arr.astype(np.float32).reshape(shape)
    if not np.all(np.isfinite(w)):
        raise OptionError("The 'reduction' weights contain NaN or inf.")
    return w, -1, "weights", "weights", None


def _class_seed(model: Model, label: Any, tensor: str, is_output: bool, shape):
    size = int(np.prod(shape))
    idx = model.label_index(label)
    name = model.class_names[idx]
    if is_output:
        seed = model.seed_for(idx)
        return seed.reshape(shape), idx, name
    if size == model.num_classes:
        seed = np.zeros(size, np.float32)
        seed[idx] = 1.0
        return seed.reshape(shape), idx, name
    if size == 1 and model.output_kind == "sigmoid":  # the logit before the sigmoid
        return np.full(shape, 1.0 if idx == 1 else -1.0, np.float32), idx, name
    raise OptionError(f"label {label!r} cannot select an entry of reduction tensor {tensor!r} (per-sample shape "
                     f"{tuple(shape)}, the model has {model.num_classes} classes); give reduction weights or a "
                     "callable.")


def _region_seed(model: Model, region: ClassRegion, shape, working_size):
    if len(shape) != 3:
        raise OptionError(f"ClassRegion needs a dense output [N, C, H, W]; the reduction tensor has per-sample shape "
                         f"{tuple(shape)}.")
    channels, h, w = shape
    label = region.label
    if isinstance(label, np.generic):
        label = label.item()
    if isinstance(label, str):
        names = model.class_names if len(model.class_names) == channels else None
        if names is None or label not in names:
            raise LabelError(f"class name {label!r} is not one of the output's {channels} channel names; give the "
                             "channel index.")
        idx = names.index(label)
    elif isinstance(label, numbers.Integral) and not isinstance(label, bool):
        idx = int(label)
        if not 0 <= idx < channels:
            raise LabelError(f"class index {idx} is out of range; the dense output has {channels} channels "
                             f"(0..{channels - 1}).")
    else:
        raise OptionTypeError(f"ClassRegion label must be an int or str; got {type(label).__name__}.")
    seed = np.zeros(shape, np.float32)
    if region.mask is None:
        seed[idx] = 1.0
    else:
        mask = np.asarray(region.mask)
        if mask.ndim != 2 or mask.dtype.kind not in "biuf":
            raise OptionError(f"ClassRegion mask must be a 2-D boolean array; got shape {mask.shape}, dtype "
                             f"{mask.dtype}.")
        if mask.shape != (h, w):

            mask = resize_map(mask.astype(np.float32), (h, w), "nearest")
        seed[idx] = (mask != 0).astype(np.float32)
        if not seed[idx].any():
            raise OptionError("ClassRegion mask selects no pixel.")
    names = model.class_names if len(model.class_names) == channels else None
    return seed, idx, (names[idx] if names else str(idx))


def numeric_gradient(fn: Callable[[np.ndarray], Any], r: np.ndarray) -> np.ndarray:
    """Central-difference gradient of a scalar ``fn`` at ``r`` (float64; step 1e-5 * max(1, |r_i|))."""
    r = np.array(r, dtype=np.float64)
    base = _scalar(fn, r.copy())
    if not np.isfinite(base):
        raise OptionError(f"the reduction callable returned {base} at the image's output.")
    flat = r.reshape(-1)
    grad = np.empty(flat.size, dtype=np.float64)
    steps = 1e-5 * np.maximum(1.0, np.abs(flat))
    work = flat.copy()
    for i in range(flat.size):
        h = steps[i]
        work[i] = flat[i] + h
        up = _scalar(fn, work.reshape(r.shape).copy())
        work[i] = flat[i] - h
        down = _scalar(fn, work.reshape(r.shape).copy())
        work[i] = flat[i]
        grad[i] = (up - down) / (2.0 * h)
    return grad.reshape(r.shape)


def _scalar(fn, x) -> float:
    value = np.asarray(fn(x))
    if value.size != 1:
        raise OptionError(f"the reduction callable must return a scalar; got an array of shape {value.shape}.")
    return float(value.reshape(()))


def top_in_graph(model: Model, label: Any, reduction: Any, is_output: bool, shape: tuple[int, ...]) -> bool:
    """Whether the default target, the model's top class, can be chosen inside the gradient
    graph (``GradientEngine.run(seed=None)``) instead of by a separate forward pass: no
    label or reduction given, and the reduction tensor is the model output's (K,) scores
    (argmax of the raw output = argmax of the scores; a single sigmoid output is not)."""
    return (label is None and reduction is None and is_output and model.output_kind != "sigmoid"
            and len(shape) == 1 and shape[0] > 1)


def is_multi(label: Any, reduction: Any) -> bool:
    """Whether maps get a trailing K axis (several targets were asked for)."""
    spec = label if reduction is None else reduction
    if isinstance(spec, np.ndarray):
        return reduction is None or (spec.ndim >= 2)
    return _is_target_list(spec)


_OUTPUT_SHAPES: "weakref.WeakKeyDictionary[Model, tuple[int, ...]]" = weakref.WeakKeyDictionary()


def per_sample_shape(model: Model, tensor: str, is_output: bool) -> tuple[int, ...]:
    """The per-sample shape of the reduction tensor (from the graph's static shapes, else a forward run).

    The model output's shape comes from one forward run of a zero image, cached per model: the
    graph facts behind :func:`tensor_shape` tap every tensor of unknown shape (a session of the
    whole graph with hundreds of outputs, ~3 s of a ViT-B/16's first call) and the output
    needs none of them.
    """
    if is_output and model.input_size is not None:
        if model not in _OUTPUT_SHAPES:
            x = model.to_native(np.zeros((1, *model.input_size, 3), np.float32))
            _OUTPUT_SHAPES[model] = tuple(int(d) for d in model.run_native(x).shape[1:])
        return _OUTPUT_SHAPES[model]
    shape = tensor_shape(model, tensor)
    if shape is not None:
        return tuple(int(d) for d in shape)
    if is_output:
        raise OptionError(f"the shape of the model output {tensor!r} is not static and the model's input size "
                          "is unknown; declare preprocessing input_size.")
    raise OptionError(f"the shape of reduction tensor {tensor!r} is not static; name a tensor with a known shape.")
