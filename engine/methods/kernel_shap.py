"""Kernel SHAP (Lundberg & Lee 2017) on image features, sharing LIME's segmentation and kernels.

The image is split into M features exactly as :func:`onnxplain.image_lime` does
(superpixels / grid / quickshift / felzenszwalb / a label matrix); a feature that is "off"
shows the fill image (the *background*: by default the image mean, as LIME). Coalitions
come from :func:`._coalitions.shapley_design` (shap's ``KernelExplainer`` scheme: complete
subset-size strata enumerated while the budget allows, the rest drawn stratified by size,
each subset paired with its complement); every coalition is written into the model's input
by LIME's numba kernels and scored by ONNX Runtime in mini-batches; the Shapley values come
from the weighted least-squares fit with the efficiency constraint enforced:

    sum_i phi_i = f(x) - f(all features off),   base_value = f(all features off).

With ``2^M - 2 <= num_samples`` every coalition is scored and the values are the exact
Shapley values of the masked-image game (``exact`` extra True). Scores are the model's
output as it is (probabilities for a model ending in Softmax, else logits), as shap explains
the function it is given.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._validation import as_generator, check_choice, check_int, describe_seed
from ..model import Model
from ..result import Explanation
from . import _coalitions as C
from ._limits import check_allow_long, check_work
from .context import begin
from .lime import (
    SEGMENTATIONS,
    UPSAMPLING,
    _check_fill,
    _check_matrix,
    _check_options,
    _custom_features,
    _feature_images,
    _resize_labels,
    _score_map,
    _score_samples,
    _segment,
)

__all__ = ["kernel_shap"]


def kernel_shap(model: Model, image: Any, label: Any = None, *, num_features: int = 49, num_samples: int = 2048,
                segmentation: str | np.ndarray = "superpixels", fill: str | float | Sequence[float] = "mean",
                paired: bool = True, output_upsampling: str = "nearest", mini_batch_size: int = 128,
                execution_environment: str | None = None, random_state: Any = None,
                segmentation_options: Mapping[str, Any] | None = None,
                progress: Callable[[int, int], None] | None = None, allow_long: bool = False) -> Explanation:
    """Shapley values of image features (Kernel SHAP) for one or more classes.

    Parameters
    ----------
    model, image, label
        As :func:`onnxplain.image_lime` (a list of labels shares one sampling pass).
    num_features, segmentation, segmentation_options, fill
        The features and the background, as :func:`onnxplain.image_lime`.
    num_samples : int, default 2048
        Coalitions scored besides the full and the empty one; all ``2^M - 2`` of them (the
        exact Shapley values) when that many fit.
    paired : bool, default True
        Score every sampled coalition together with its complement.
    output_upsampling, mini_batch_size, execution_environment, random_state, progress
        As :func:`onnxplain.image_lime`.
    allow_long : bool, default False
        Score more than the work bound of 100,000 coalitions (see ``onnxplain.methods._limits``).

    Returns
    -------
    Explanation
        ``score_map`` (H, W[, K]): each pixel carries its feature's Shapley value; extras
        ``feature_map``, ``feature_importance`` (F[, K]) the Shapley values, ``base_value``
        (K,) or scalar: the score with every feature off, ``exact`` (bool), ``num_features``.
        ``scores`` are the scores of the image: ``base_value + sum(feature_importance)``.

    Raises
    ------
    ValueError, TypeError
        Options out of range; fewer than 2 features.
    """
    num_features = check_int("num_features", num_features, minimum=2)
    num_samples = check_int("num_samples", num_samples, minimum=2)
    mini_batch_size = check_int("mini_batch_size", mini_batch_size, minimum=1)
    custom = not isinstance(segmentation, str)
    if custom:
        _check_matrix(segmentation, None)
    else:
        check_choice("segmentation", segmentation, SEGMENTATIONS)
    check_choice("output_upsampling", output_upsampling, UPSAMPLING)
    if not isinstance(paired, (bool, np.bool_)):
        raise TypeError(f"The 'paired' parameter must be True or False; got {paired!r}.")
    fill_spec = _check_fill(fill)
    seg_options = _check_options(segmentation_options, custom)
    rng = as_generator(random_state)
    # the design matrix (uint8 on/off, float64 weights and solver copies) is built before any scoring
    check_work(model, f"num_samples={num_samples:,}", num_samples + 2, allow_long=check_allow_long(allow_long),
               memory_bytes=num_samples * (17.0 * num_features + 16.0), environment=execution_environment)
    ctx = begin(model, image, label, execution_environment)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    if custom:
        matrix = _check_matrix(segmentation, ctx.original_size)
        feature_map, labels, n_feat = _custom_features(matrix, ctx.pixels.shape[:2])
        seg_name, grid_shape, seg_used = "custom", None, {}
    else:
        labels, grid_shape, seg_used = _segment(ctx.pixels, segmentation, num_features, seg_options, rng)
        n_feat = int(labels.max()) + 1
        feature_map = _resize_labels(labels, ctx.original_size)
        seg_name = segmentation
    if n_feat < 2:
        raise ValueError(f"kernel_shap: the segmentation gave {n_feat} feature; Shapley values need at least 2.")
    timings["segmentation"] = time.perf_counter() - t

    t = time.perf_counter()
    h, w = labels.shape
    spec, ptr, index, counts, runs, on, off, fill_used = _feature_images(model, ctx, labels, n_feat, fill_spec)
    z, weights, exact = C.shapley_design(n_feat, num_samples, rng, paired=bool(paired))
    onoff = np.concatenate([np.ones((1, n_feat), np.uint8), np.zeros((1, n_feat), np.uint8), z])
    sampling = time.perf_counter() - t
    scores, sampling, inference = _score_samples(ctx, spec, on, off, onoff, runs, mini_batch_size, progress,
                                                 sampling)
    timings["sampling"], timings["inference"] = sampling, inference

    t = time.perf_counter()
    full, empty = scores[0], scores[1]
    phi = C.constrained_shapley(z, weights, scores[2:], full, empty).astype(np.float32)   # (F, K)
    score_map = _score_map(ctx, phi, ptr, index, (h, w), grid_shape, output_upsampling)
    timings["fit"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - ctx.started
    params = {"num_features": num_features, "num_samples": num_samples, "segmentation": seg_name,
              "segmentation_options": seg_used, "fill": fill_used, "paired": bool(paired),
              "output_upsampling": output_upsampling, "mini_batch_size": mini_batch_size,
              "execution_environment": ctx.environment,
              "runtime": model.runtime(ctx.environment), "random_state": describe_seed(random_state),
              "working_size": [h, w], "coalitions_scored": len(z) + 2}
    extras: dict[str, Any] = {"feature_map": feature_map, "feature_importance": phi if ctx.multi else phi[:, 0],
                              "base_value": empty.astype(np.float32) if ctx.multi else np.float32(empty[0]),
                              "exact": bool(exact), "num_features": n_feat}
    if grid_shape is not None:
        extras["grid_shape"] = grid_shape
    return Explanation("kernelshap", score_map, list(ctx.labels), list(ctx.label_names), full.astype(np.float32),
                       params, extras, timings)
