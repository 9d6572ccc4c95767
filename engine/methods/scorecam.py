"""Score-CAM (Wang et al. 2020): forward-only class activation maps.

Each channel ``A_k`` of the feature layer is upsampled (bilinear) to the model's input
size and min-max normalised to a mask ``H_k`` in [0, 1] (a constant channel gives an
all-zero mask); the model scores the image masked by every ``H_k`` and the channel weight
is the explained score of that masked image: ``map = ReLU(sum_k s_k A_k)``.

Masking follows the paper on the model's own input, ``X * H_k``: with preprocessing
``native = a * pixel + b`` this is the pixel image blended towards the colour whose native
value is 0 (black for raw-pixel models, the mean colour for mean/std-normalised ones).
The score is the reduction of the reduction layer as for Grad-CAM, except that a class of
a logits model is scored by its softmax probability, as the paper's code does (raw logits
can all be negative, and the ReLU would leave an empty map); a callable is applied to each
masked output exactly. No baseline score is subtracted.

Only a tap of the feature layer is needed, no gradient: Score-CAM serves models whose
ops the gradient engine cannot reverse, and uint8-input models (an automatic choice on a
token model needs the gradient probe, so name the layer there).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import shared_names

from ..images import resize_map
from ..model import Model
from ..result import Explanation
from ._cam import CAMMethod, Progress
from .layers import tapped_run

__all__ = ["score_cam"]



def native_zero_pixel(model: Model) -> np.ndarray:
    """The RGB pixel value (3,) whose native input is 0 in every channel (float32)."""
    a, b = model.preprocessing.affine
    value = np.zeros(3, np.float32)
    value[model.preprocessing.channel_source] = -b / a
    return value


class ScoreCAM(CAMMethod):
    name = "score-cam"
    uses_gradients = False

    def activations_and_weights(self, model, pixels, layer, targets, env, mini_batch_size, progress, first=None):
        out_names = [layer.name, targets.tensor]
        acts_raw, r0 = tapped_run(model, env, out_names, model.to_native(pixels[None]))[:2]
        acts = layer.to_nchw(acts_raw)                                  # (1, C, h, w)
        channels = acts.shape[1]
        up = resize_map(np.ascontiguousarray(acts[0].transpose(1, 2, 0)), pixels.shape[:2], "bilinear")
        lo = up.min(axis=(0, 1), keepdims=True)
        hi = up.max(axis=(0, 1), keepdims=True)
        span = hi - lo
        masks = np.divide(up - lo, span, out=np.zeros_like(up), where=span > 0)   # (h, w, C)
        zero = native_zero_pixel(model)
        delta = pixels - zero
        scores = np.zeros((targets.count, channels), np.float64)
        for start in range(0, channels, mini_batch_size):
            stop = min(start + mini_batch_size, channels)
            m = masks[:, :, start:stop].transpose(2, 0, 1)[..., None]          # (B, h, w, 1)
            batch = (zero + m * delta).astype(np.float32)
            r = tapped_run(model, env, out_names, model.to_native(batch))[1]
            if targets.is_output and targets.kind == "class" and model.output_kind == "logits":
                # the paper scores masked images by the class probability (softmax of the
                # output): raw logits can all be negative and ReLU the map away
                r = model.probabilities(np.asarray(r, np.float64).reshape(len(r), -1))
            for k in range(targets.count):
                rows = np.repeat(targets.seeds[k:k + 1], stop - start, axis=0)
                scores[k, start:stop] = _row_scores(targets, k, rows, r)
            if progress is not None:
                progress(stop, channels)
        base = targets.scores(np.repeat(np.asarray(r0, np.float32), targets.count, axis=0))
        return np.repeat(acts, targets.count, axis=0), scores, base


def _row_scores(targets, k: int, seeds: np.ndarray, r: np.ndarray) -> np.ndarray:
    fn = targets.functions[k] if targets.functions else None
    r = np.asarray(r, np.float64)
    if fn is not None:
        return np.array([float(fn(row.copy())) for row in r])
    out = (seeds.astype(np.float64) * r.reshape(seeds.shape)).reshape(len(r), -1).sum(axis=1)
    if targets.offsets is not None:  # class 0 of a sigmoid output is 1 - p
        out += targets.offsets[k]
    return out


_SCORECAM = ScoreCAM()


@shared_names
def score_cam(model: Model, image: Any, label: Any = None, *, reduction: Any = None, feature_layer: str | None = None,
              reduction_layer: str | None = None, output_upsampling: str = "bicubic",
              feature_layout: str | None = None, execution_environment: str | None = None,
              mini_batch_size: int = 32, progress: Progress = None) -> Explanation:
    """Score-CAM map (forward-only); parameters and result as :func:`onnxplain.grad_cam`.

    Costs one model run per feature channel (``mini_batch_size`` masked images per run):
    1280 runs for EfficientNet-Lite0's head. ``channel_weights`` in the extras are the
    masked-image scores.

    Raises
    ------
    ValueError
        As :func:`onnxplain.grad_cam`; a token model without ``feature_layer``.
    """
    return _SCORECAM.explain(model, image, label, reduction=reduction, feature_layer=feature_layer,
                             reduction_layer=reduction_layer, output_upsampling=output_upsampling,
                             feature_layout=feature_layout, execution_environment=execution_environment,
                             mini_batch_size=mini_batch_size, progress=progress)
