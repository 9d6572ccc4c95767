"""ReciproCAM (Byun & Lee 2022, "ReciproCAM: Lightweight Gradient-free Class Activation Map").

One forward pass taps the feature map ``A`` (C, h, w); the network's *tail* (the layers
after the feature layer, cut out as its own ONNX graph by :mod:`._tail`) then scores one
batch of ``h * w`` spatially masked copies of ``A``: copy ``(i, j)`` keeps only the
neighbourhood of location ``(i, j)``, weighted by the paper's 3x3 Gaussian kernel
``[[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16`` (centre 1/4, zero outside the map;
``kernel="point"`` keeps the location alone with weight 1, as OpenVINO XAI's CNN
ReciproCAM does). The map of class ``c`` at ``(i, j)`` is the class-``c`` score of copy
``(i, j)``, so the one batch gives the maps of **every** class (extra ``class_maps``).

Scores (``score``): "logits" (default) reads the tensor before a final Softmax (the
model's output when it has none), as OpenVINO XAI's ReciproCAM does (it matches that
implementation to float rounding, see tests); "probabilities" applies softmax to the
logits; "raw" is the model's output as it is. Maps are raw (no min-max normalisation: the paper
and OpenVINO XAI normalise each class map to [0, 1] / [0, 255] for display, which
rendering does here). No gradients: any model ONNX Runtime runs, including graphs the
gradient engine cannot reverse and uint8/float16 builds, provided the feature layer
separates the input from the output (the automatic CAM feature layer does).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from .._validation import check_choice, check_int
from ..images import resize_map
from ..model import Model
from ..result import Explanation
from ._cam import UPSAMPLING, Progress
from .context import start
from ._tail import tail_for
from .layers import feature_layer_for
from .layers import tapped_run

__all__ = ["KERNELS", "SCORES", "recipro_cam", "spatial_masks"]

KERNELS = ("gaussian", "point")
SCORES = ("logits", "probabilities", "raw")
GAUSSIAN = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16.0


def spatial_masks(h: int, w: int, kernel: str = "gaussian") -> np.ndarray:
    """The ``h * w`` masks (h*w, h, w) float32; mask ``i * w + j`` is centred on location (i, j)."""
    check_choice("kernel", kernel, KERNELS)
    masks = np.zeros((h * w, h + 2, w + 2), np.float32)
    k = np.arange(h * w)
    ii, jj = np.divmod(k, w)
    if kernel == "point":
        masks[k, ii + 1, jj + 1] = 1.0
    else:
        for di in range(3):
            for dj in range(3):
                masks[k, ii + di, jj + dj] = GAUSSIAN[di, dj]
    return np.ascontiguousarray(masks[:, 1:-1, 1:-1])


def recipro_cam(model: Model, image: Any, label: Any = None, *, feature_layer: str | None = None,
                feature_layout: str | None = None, kernel: str = "gaussian", score: str = "logits",
                output_upsampling: str = "bicubic", execution_environment: str | None = None,
                mini_batch_size: int = 256, progress: Progress = None) -> Explanation:
    """ReciproCAM maps of an image: every class from one batch of the network's tail, no gradients.

    Parameters
    ----------
    model : Model
        Any model :func:`onnxplain.load_model` loads (gradients are not needed).
    image : path or ndarray (H, W[, C])
    label : int, str or list, optional
        Class(es) whose maps become ``score_map``; None = the top class. The maps of all
        classes are in the ``class_maps`` extra either way.
    feature_layer : str, optional
        Where to cut the graph; default the automatic CAM feature layer
        (:mod:`onnxplain.methods.layers`). Must be a rank-4 map every input-to-output path
        goes through.
    feature_layout : {"NCHW", "NHWC"}, optional
        Channel axis of the feature tensor when the traced layout is wrong.
    kernel : {"gaussian", "point"}
        The spatial mask: the paper's 3x3 Gaussian neighbourhood, or the location alone
        (OpenVINO XAI's CNN ReciproCAM).
    score : {"logits", "probabilities", "raw"}
        What the masked copies are scored by: the logits (the tensor before a final
        Softmax, else the output), class probabilities (softmax of the logits), or the
        model's output as it is.
    output_upsampling : {"bicubic", "bilinear", "nearest", "none"}
        Upsampling of the (h, w) maps to the image size.
    execution_environment : {"auto", "cpu", "gpu"}, optional
    mini_batch_size : int
        Masked copies per tail run (the h*w copies are one run at the default 256 for
        feature maps up to 16x16).
    progress : callable(done, total), optional

    Returns
    -------
    Explanation
        ``score_map`` float32 (H, W) or (H, W, K); extras ``class_maps`` float32
        (h, w, num_classes): every class's map at the feature map's size; ``feature_layer``,
        ``feature_layout``, ``kernel``. ``scores`` are the labels' scores of the image
        (in the units of ``score``).

    Raises
    ------
    ValueError
        A token (ViT) feature layer, a feature layer that a connection bypasses, bad options.
    """
    started = time.perf_counter()
    check_choice("kernel", kernel, KERNELS)
    check_choice("score", score, SCORES)
    check_choice("output_upsampling", output_upsampling, UPSAMPLING)
    mini_batch_size = check_int("mini_batch_size", mini_batch_size, minimum=1)
    pixels, original, env = start(model, image, execution_environment)
    layer = feature_layer_for(model, feature_layer, feature_layout=feature_layout, environment=env, allow_probe=False)
    if layer.layout == "tokens":
        raise ValueError(f"recipro_cam: feature layer {layer.name!r} is a token tensor; this ReciproCAM masks "
                         "rank-4 feature maps (ViT-ReciproCAM is not implemented). Name a rank-4 feature map.")
    target = score_tensor(model, score)
    tail = tail_for(model, layer, env, output=target)
    t0 = time.perf_counter()
    timings: dict[str, float] = {"setup": t0 - started}
    acts, out = tapped_run(model, env, [layer.name, target], model.to_native(pixels[None]))[:2]
    h, w = layer.grid
    masks = spatial_masks(h, w, kernel)                           # (hw, h, w)
    m = masks[:, None] if layer.layout == "NCHW" else masks[..., None]
    batch = (acts.astype(np.float32) * m).astype(acts.dtype)     # (hw, C, h, w) or (hw, h, w, C)
    raw = []
    for first in range(0, len(batch), mini_batch_size):
        raw.append(tail.run(batch[first:first + mini_batch_size], mini_batch_size))
        if progress is not None:
            progress(min(first + mini_batch_size, len(batch)), len(batch))
    scores_all = _as_scores(model, np.concatenate(raw), target)
    base = _as_scores(model, out, target)
    if score == "probabilities" and (target != model.output_name or model.output_kind == "logits"):
        scores_all, base = _softmax(scores_all), _softmax(base)
    timings["inference"] = time.perf_counter() - t0
    class_maps = np.ascontiguousarray(scores_all.reshape(h, w, -1))
    multi = isinstance(label, (list, tuple, np.ndarray))
    labels = [int(np.argmax(base[0]))] if label is None else model.label_indices(label)
    maps = class_maps[:, :, labels]
    if output_upsampling != "none":
        maps = resize_map(maps, original, output_upsampling)
    timings["total"] = time.perf_counter() - started
    params = {"feature_layer": layer.name, "feature_layout": layer.layout, "kernel": kernel, "score": score,
              "output_upsampling": output_upsampling, "mini_batch_size": mini_batch_size,
              "execution_environment": env, "runtime": model.runtime(env, since=started)}
    extras = {"class_maps": class_maps, "feature_layer": layer.name, "feature_layout": layer.layout,
              "kernel": kernel}
    return Explanation("reciprocam", maps if multi else maps[..., 0], labels,
                       [model.class_names[i] for i in labels], base[0, labels].astype(np.float32), params, extras,
                       timings)


def score_tensor(model: Model, score: str) -> str:
    """The tensor the masked copies are scored by (module notes)."""
    if score in ("logits", "probabilities") and model.output_kind == "probabilities" and model.logits_name:
        return model.logits_name
    return model.output_name


def _as_scores(model: Model, values: np.ndarray, tensor: str) -> np.ndarray:
    values = np.asarray(values, np.float32)
    if tensor == model.output_name:
        return model.output_to_scores(values)
    return values.reshape(len(values), -1)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)
