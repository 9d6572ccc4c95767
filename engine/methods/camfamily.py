"""The rest of the CAM family on the CAM template (``_cam.CAMMethod``), as in pytorch-grad-cam.

All maps are ``ReLU(sum_c W_c * A_c)`` over the feature layer's channels ``A_c``; the
variants differ only in ``W`` (``g`` = the gradient of the explained score at the feature
layer, from the gradient engine):

==============  ========================================================  =================
method          weights                                                   reference
==============  ========================================================  =================
``hires_cam``   ``W = g`` element-wise (no spatial averaging)             Draelos & Carin 2020
``layer_cam``   ``W = ReLU(g)`` element-wise                              Jiang et al. 2021
``xgrad_cam``   ``w_c = sum_ij g * A / (sum_ij A + 1e-7)``                Fu et al. 2020
``eigen_cam``   no weights: the activations' first principal component   Muhammad & Yeasin 2020
``ablation_cam`` ``w_c = (y - y_c) / y``, ``y_c`` the score with channel   Desai & Ramaswamy 2020
                c set to 0 (one batch of ablated copies through the tail)
==============  ========================================================  =================

Eigen-CAM: the (h*w, C) activation matrix is centred per channel and projected on its
first right singular vector (pytorch-grad-cam's ``get_2d_projection``); the SVD's sign is
arbitrary, so it is fixed here: the projection correlates positively with the channel sum
of the activations (where the features fire). It explains no class: the map is the same
for every label (``scores`` still report the labels' scores).

Ablation-CAM runs no gradient: the graph is cut at the feature layer (``_tail``) and the
tail scores ``C`` copies of the feature map, copy ``c`` with channel ``c`` set to zero
(pytorch-grad-cam zeroes too when the layer's minimum is 0; for layers with negative values
it substitutes ``min - 1e7``, which we do not). ``y = 0`` makes the weights undefined:
an error.

``feature_layer`` takes a list of tensor names to fuse several layers (each map scaled to
[0, 1] at the image size, then averaged, as pytorch-grad-cam aggregates target layers).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model
from ..result import Explanation
from ._cam import CAMMethod, GradientCAM, Progress
from ._tail import tail_for
from .layers import tapped_run
from .scorecam import _row_scores

__all__ = ["CAM_FUNCTIONS", "ablation_cam", "eigen_cam", "hires_cam", "layer_cam", "xgrad_cam"]


class HiResCAM(GradientCAM):
    name = "hirescam"

    def channel_weights(self, acts, grads):
        return grads.astype(np.float64)


class LayerCAM(GradientCAM):
    name = "layercam"

    def channel_weights(self, acts, grads):
        return np.maximum(grads.astype(np.float64), 0.0)


class XGradCAM(GradientCAM):
    name = "xgradcam"

    def channel_weights(self, acts, grads):
        a = acts.astype(np.float64)
        total = a.sum(axis=(2, 3), keepdims=True)
        return (grads.astype(np.float64) * a / (total + 1e-7)).sum(axis=(2, 3))


class EigenCAM(CAMMethod):
    name = "eigencam"
    uses_gradients = False

    def activations_and_weights(self, model, pixels, layer, targets, env, mini_batch_size, progress, first=None):
        acts_raw, r0 = tapped_run(model, env, [layer.name, targets.tensor], model.to_native(pixels[None]))[:2]
        acts = layer.to_nchw(acts_raw)
        if progress is not None:
            progress(1, 1)
        base = targets.scores(np.repeat(np.asarray(r0, np.float32), targets.count, axis=0))
        return np.repeat(acts, targets.count, axis=0), np.zeros((targets.count, acts.shape[1])), base

    def combine(self, acts, weights):
        return np.maximum(np.stack([eigen_projection(a) for a in acts]), 0.0)


def eigen_projection(acts: np.ndarray) -> np.ndarray:
    """First principal component of (C, h, w) activations as an (h, w) map, sign fixed (module notes)."""
    c, h, w = acts.shape
    x = acts.reshape(c, h * w).T.astype(np.float64)              # (hw, C)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[0]
    total = x.sum(axis=1)
    if np.dot(proj, total - total.mean()) < 0:
        proj = -proj
    return proj.reshape(h, w)


class AblationCAM(CAMMethod):
    name = "ablationcam"
    uses_gradients = False

    def activations_and_weights(self, model, pixels, layer, targets, env, mini_batch_size, progress, first=None):
        if layer.layout == "tokens":
            raise ValueError(f"ablation_cam: feature layer {layer.name!r} is a token tensor; ablation of channels "
                             "is implemented for rank-4 feature maps. Name a rank-4 feature map.")
        acts_raw, r0 = tapped_run(model, env, [layer.name, targets.tensor], model.to_native(pixels[None]))[:2]
        acts = layer.to_nchw(acts_raw)
        channels = acts.shape[1]
        tail = tail_for(model, layer, env, output=targets.tensor)
        base = targets.scores(np.repeat(np.asarray(r0, np.float32), targets.count, axis=0)).astype(np.float64)
        if np.any(base == 0):
            raise ValueError("ablation_cam: the explained score is exactly 0, so the relative drop (y - y_c) / y is "
                             "undefined; explain another class or use grad_cam / score_cam.")
        ablated = np.zeros((targets.count, channels), np.float64)
        caxis = 1 if layer.layout == "NCHW" else 3
        for start in range(0, channels, mini_batch_size):
            stop = min(start + mini_batch_size, channels)
            batch = np.repeat(np.asarray(acts_raw), stop - start, axis=0)
            idx = np.arange(stop - start)
            if caxis == 1:
                batch[idx, start + idx] = 0
            else:
                batch[idx, :, :, start + idx] = 0
            r = tail.run(batch, mini_batch_size)
            for k in range(targets.count):
                rows = np.repeat(targets.seeds[k:k + 1], stop - start, axis=0)
                ablated[k, start:stop] = _row_scores(targets, k, rows, r)
            if progress is not None:
                progress(stop, channels)
        weights = (base[:, None] - ablated) / base[:, None]
        return np.repeat(acts, targets.count, axis=0), weights, base.astype(np.float32)


_METHODS = {"hirescam": HiResCAM(), "layercam": LayerCAM(), "xgradcam": XGradCAM(), "eigencam": EigenCAM(),
            "ablationcam": AblationCAM()}


def _run(name: str, model, image, label, **options) -> Explanation:
    return _METHODS[name].explain(model, image, label, **options)


def hires_cam(model: Model, image: Any, label: Any = None, *, reduction: Any = None,
              feature_layer: str | list[str] | None = None, reduction_layer: str | None = None,
              output_upsampling: str = "bicubic", feature_layout: str | None = None,
              execution_environment: str | None = None, mini_batch_size: int = 32,
              progress: Progress = None) -> Explanation:
    """HiResCAM: ``ReLU(sum_c g_c * A_c)`` element-wise (no averaging of the gradient).

    Parameters, returns and errors as :func:`onnxplain.grad_cam`; ``feature_layer`` may be
    a list of tensor names (fused, module notes). ``channel_weights`` holds the element
    weights (C, h, w)."""
    return _run("hirescam", model, image, label, reduction=reduction, feature_layer=feature_layer,
                reduction_layer=reduction_layer, output_upsampling=output_upsampling, feature_layout=feature_layout,
                execution_environment=execution_environment, mini_batch_size=mini_batch_size, progress=progress)


def layer_cam(model: Model, image: Any, label: Any = None, *, reduction: Any = None,
              feature_layer: str | list[str] | None = None, reduction_layer: str | None = None,
              output_upsampling: str = "bicubic", feature_layout: str | None = None,
              execution_environment: str | None = None, mini_batch_size: int = 32,
              progress: Progress = None) -> Explanation:
    """LayerCAM: ``ReLU(sum_c ReLU(g_c) * A_c)`` element-wise; suits shallow layers and fusing several.

    Parameters, returns and errors as :func:`onnxplain.grad_cam`; ``feature_layer`` may be
    a list (fused)."""
    return _run("layercam", model, image, label, reduction=reduction, feature_layer=feature_layer,
                reduction_layer=reduction_layer, output_upsampling=output_upsampling, feature_layout=feature_layout,
                execution_environment=execution_environment, mini_batch_size=mini_batch_size, progress=progress)


def xgrad_cam(model: Model, image: Any, label: Any = None, *, reduction: Any = None,
              feature_layer: str | list[str] | None = None, reduction_layer: str | None = None,
              output_upsampling: str = "bicubic", feature_layout: str | None = None,
              execution_environment: str | None = None, mini_batch_size: int = 32,
              progress: Progress = None) -> Explanation:
    """XGrad-CAM: channel weight ``sum_ij g * A / sum_ij A`` (activation-weighted gradient).

    Parameters, returns and errors as :func:`onnxplain.grad_cam`."""
    return _run("xgradcam", model, image, label, reduction=reduction, feature_layer=feature_layer,
                reduction_layer=reduction_layer, output_upsampling=output_upsampling, feature_layout=feature_layout,
                execution_environment=execution_environment, mini_batch_size=mini_batch_size, progress=progress)


def eigen_cam(model: Model, image: Any, label: Any = None, *, feature_layer: str | list[str] | None = None,
              output_upsampling: str = "bicubic", feature_layout: str | None = None,
              execution_environment: str | None = None, progress: Progress = None) -> Explanation:
    """Eigen-CAM: the first principal component of the feature maps (class-agnostic, forward-only).

    ``label`` only selects which scores are reported (and the K axis for a list); the map
    does not depend on it. Other parameters as :func:`onnxplain.grad_cam`."""
    return _run("eigencam", model, image, label, feature_layer=feature_layer, output_upsampling=output_upsampling,
                feature_layout=feature_layout, execution_environment=execution_environment, progress=progress)


def ablation_cam(model: Model, image: Any, label: Any = None, *, reduction: Any = None,
                 feature_layer: str | list[str] | None = None, reduction_layer: str | None = None,
                 output_upsampling: str = "bicubic", feature_layout: str | None = None,
                 execution_environment: str | None = None, mini_batch_size: int = 256,
                 progress: Progress = None) -> Explanation:
    """Ablation-CAM: channel weight = relative score drop when the channel is zeroed (forward-only).

    One batch of ``C`` ablated feature maps runs through the network's tail only
    (``mini_batch_size`` per run). Parameters as :func:`onnxplain.grad_cam` (callables are
    applied to each ablated output exactly). Raises ``ValueError`` when the explained score
    is 0 or the feature layer is bypassed by a connection."""
    return _run("ablationcam", model, image, label, reduction=reduction, feature_layer=feature_layer,
                reduction_layer=reduction_layer, output_upsampling=output_upsampling, feature_layout=feature_layout,
                execution_environment=execution_environment, mini_batch_size=mini_batch_size, progress=progress)


CAM_FUNCTIONS = {"hirescam": hires_cam, "layercam": layer_cam, "xgradcam": xgrad_cam, "eigencam": eigen_cam,
                 "ablationcam": ablation_cam}
