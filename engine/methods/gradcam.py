"""Grad-CAM (MATLAB ``gradCAM`` semantics), Grad-CAM++ and guided Grad-CAM on the gradient engine.

Grad-CAM: ``map = ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of
``dy/dA_k``; ``A`` is the feature layer's activation and ``y`` the reduced scalar (a class
score of the reduction layer, a weighted sum, a region of a segmentation output, or any
callable; see :mod:`onnxplain.methods._targets`). Several targets are one engine run: the
image is replicated once per target and every row carries its own seed.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from .._validation import shared_names

from ..images import resize_map
from ..model import Model
from ..result import Explanation
from ._cam import UPSAMPLING, GradientCAM, Progress
from .gradients import gradient_attribution
from .layers import tensor_shape
from ._targets import ClassRegion

__all__ = ["grad_cam", "grad_cam_plus_plus", "guided_grad_cam", "ClassRegion", "UPSAMPLING"]


class GradCAM(GradientCAM):
    """Grad-CAM: channel weight = spatial mean of the gradient."""

    name = "gradcam"

    def channel_weights(self, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
        return grads.astype(np.float64).mean(axis=(2, 3))


class GradCAMPlusPlus(GradientCAM):
    """Grad-CAM++ (Chattopadhay et al. 2018) in the closed form of pytorch-grad-cam.

    ``a_ij = g^2 / (2 g^2 + sum_ab(A) g^3)`` (0 where g = 0), weight = ``sum_ij a_ij ReLU(g)``;
    the higher derivatives are those of an exponential of the score, as in the paper.
    """

    name = "gradcam++"

    def channel_weights(self, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
        g = grads.astype(np.float64)
        g2, g3 = g * g, g * g * g
        sum_a = acts.astype(np.float64).sum(axis=(2, 3), keepdims=True)
        denom = 2.0 * g2 + sum_a * g3
        alpha = np.divide(g2, denom, out=np.zeros_like(g2), where=(g != 0) & (denom != 0))
        return (alpha * np.maximum(g, 0.0)).sum(axis=(2, 3))


_GRADCAM = GradCAM()
_GRADCAMPP = GradCAMPlusPlus()


@shared_names
def grad_cam(model: Model, image: Any, label: Any = None, *, reduction: Any = None, feature_layer: str | None = None,
             reduction_layer: str | None = None, output_upsampling: str = "bicubic",
             feature_layout: str | None = None, execution_environment: str | None = None,
             mini_batch_size: int = 32, progress: Progress = None) -> Explanation:
    """Grad-CAM map of an image for one or more targets (MATLAB ``gradCAM``).

    Parameters
    ----------
    model : Model
        From :func:`onnxplain.load_model`; its graph must be differentiable by the gradient
        engine (else use :func:`onnxplain.score_cam`, which is forward-only).
    image : path or ndarray (H, W[, C])
        Any image :func:`onnxplain.load_image` accepts; resized to the model's input size.
    label : int, str or list, optional
        Class(es) to explain; None = the model's top class. With a list, maps get a
        trailing K axis. Mutually exclusive with ``reduction``.
    reduction : optional
        What to explain instead of a class of the model output: a class (int/str); a
        weight array of the reduction tensor's per-sample shape (or (K, size) for K
        targets); :class:`onnxplain.ClassRegion` (or ``(label, mask)``) for a class of a dense
        [N, C, H, W] output summed over a mask; or a callable ``f(r) -> float`` on the
        per-sample float64 output ``r`` (its gradient at the image is taken by central
        differences; a linear ``f`` gives its exact weights). A list of these gives K targets.
    feature_layer : str, optional
        Tensor to explain with; default chosen automatically (:mod:`onnxplain.methods.layers`):
        the last activation/Add/Concat/Mul map with spatial size > 1 on every
        input-to-output path (ResNet: the last block's ReLU; EfficientNet: the head
        activation); token models: the last token tensor whose patch tokens get gradient.
    reduction_layer : str, optional
        The tensor the reduction applies to: None = the model output (probabilities for a
        model ending in Softmax, as MATLAB); ``"logits"`` = the tensor before a final
        Softmax/Sigmoid; or any tensor name.
    output_upsampling : {"bicubic", "bilinear", "nearest", "none"}
        Upsampling of the feature-map-sized map to the image size; "none" returns the
        feature-map size. Values stay raw (bicubic may dip slightly below 0).
    feature_layout : {"NCHW", "NHWC"}, optional
        Channel axis of a rank-4 feature tensor when the traced layout is wrong.
    execution_environment : {"auto", "cpu", "gpu"}, optional
        Default: the model's.
    mini_batch_size : int
        Targets per engine run.
    progress : callable(done, total), optional

    Returns
    -------
    Explanation
        ``score_map`` float32 (H, W) or (H, W, K) at the image's size (feature size with
        "none"); extras ``feature_layer`` and ``reduction_layer`` (tensor names used),
        ``cam`` (the raw map at the feature map's size, (h, w[, K])), ``channel_weights``
        ((C,) or (K, C)), ``feature_layout``. ``scores`` are the explained scalars ``y``.

    Raises
    ------
    ValueError
        Unknown layer names, bad reductions, labels or options; a graph the engine
        cannot differentiate (``GraphError`` names the node and op type).
    """
    return _GRADCAM.explain(model, image, label, reduction=reduction, feature_layer=feature_layer,
                            reduction_layer=reduction_layer, output_upsampling=output_upsampling,
                            feature_layout=feature_layout, execution_environment=execution_environment,
                            mini_batch_size=mini_batch_size, progress=progress)


@shared_names
def grad_cam_plus_plus(model: Model, image: Any, label: Any = None, *, reduction: Any = None,
                       feature_layer: str | None = None, reduction_layer: str | None = None,
                       output_upsampling: str = "bicubic", feature_layout: str | None = None,
                       execution_environment: str | None = None, mini_batch_size: int = 32,
                       progress: Progress = None) -> Explanation:
    """Grad-CAM++: like :func:`grad_cam` with the weights of :class:`GradCAMPlusPlus`.

    Parameters, returns and errors as :func:`grad_cam` (method name "gradcam++").
    """
    return _GRADCAMPP.explain(model, image, label, reduction=reduction, feature_layer=feature_layer,
                              reduction_layer=reduction_layer, output_upsampling=output_upsampling,
                              feature_layout=feature_layout, execution_environment=execution_environment,
                              mini_batch_size=mini_batch_size, progress=progress)


@shared_names
def guided_grad_cam(model: Model, image: Any, label: Any = None, *, reduction: Any = None,
                    feature_layer: str | None = None,
                    reduction_layer: str | None = None, feature_layout: str | None = None,
                    execution_environment: str | None = None, mini_batch_size: int = 32,
                    progress: Progress = None) -> Explanation:
    """Guided Grad-CAM: guided-backprop gradients times the Grad-CAM map (Selvaraju et al.).

    Parameters as :func:`grad_cam` (``label`` / ``reduction`` / ``reduction_layer`` apply to
    both halves).

    Both are computed at the model's input size (the Grad-CAM map upsampled bilinearly to
    it), multiplied per pixel and channel, and the product is resized to the image size.

    Returns
    -------
    Explanation
        ``score_map`` (H, W[, K]) = sum over channels of |guided Grad-CAM|; extras
        ``gradients`` (H, W, 3[, K]) the signed per-channel product, ``cam`` and
        ``feature_layer`` / ``reduction_layer`` as in :func:`grad_cam`.
    """

    started = time.perf_counter()
    if label is None and reduction is None:  # resolve the top class once for both halves
        label = model.classify(image, top_k=1)[0][0] if _is_classifier(model) else None
    cam = grad_cam(model, image, label, reduction=reduction, feature_layer=feature_layer,
                   reduction_layer=reduction_layer, output_upsampling="none", feature_layout=feature_layout,
                   execution_environment=execution_environment, mini_batch_size=mini_batch_size)
    guided = gradient_attribution(model, image, label, method="guided-backprop", reduction=reduction,
                                  reduction_layer=reduction_layer, execution_environment=execution_environment,
                                  mini_batch_size=mini_batch_size, progress=progress)
    working = guided.working_gradients                         # (h, w, 3[, K])
    maps = cam.cam if cam.cam.ndim == 3 else cam.cam[..., None]
    up = resize_map(maps, working.shape[:2], "bilinear")        # (h, w, K)
    multi = working.ndim == 4
    prod = (working if multi else working[..., None]) * up[:, :, None, :]
    original = guided.gradients.shape[:2]
    if tuple(original) != tuple(prod.shape[:2]):
        h, w, c, k = prod.shape
        prod = resize_map(prod.reshape(h, w, c * k), original, "bilinear").reshape(*original, c, k)
    score = np.abs(prod).sum(axis=2)
    prod = prod if multi else prod[..., 0]
    score = score if multi else score[..., 0]
    extras = {"gradients": prod.astype(np.float32), "cam": cam.cam, "feature_layer": cam.feature_layer,
              "reduction_layer": cam.reduction_layer}
    params = {**cam.params, "gradient_method": "guided-backprop",  # the graphs of both halves
              "runtime": model.runtime(cam.params["execution_environment"], since=started)}
    timings = {"gradcam": cam.timings["total"], "guided_backprop": guided.timings["total"],
               "total": time.perf_counter() - started}
    return Explanation("guided-gradcam", score.astype(np.float32), cam.labels, cam.label_names, guided.scores,
                       params, extras, timings)


def _is_classifier(model: Model) -> bool:

    shape = tensor_shape(model, model.output_name)
    return shape is None or len(shape) <= 1
