"""Explanation quality: deletion / insertion faithfulness, pointing game and energy in a region.

- Deletion and insertion (Petsiuk et al. 2018, "RISE"): rank the pixels by the map (most
  salient first) and, in steps of ``step`` pixels, replace them by a substrate (deletion,
  starting from the image) or restore them from the image (insertion, starting from the
  substrate). After each step the model's probability of the explained class is recorded;
  the score is the trapezoid area under that curve with x = fraction of pixels changed in
  [0, 1]. Lower deletion AUC and higher insertion AUC are better.
- Pointing game (Zhang et al. 2016, "Top-down neural attention by excitation backprop"):
  a hit when a maximum of the map lies within ``tolerance`` pixels (15 by default, as in
  the paper) of the ground-truth region.
- Energy (the "energy-based pointing game" of Score-CAM, Wang et al. 2020): the share of
  the map's positive mass inside the region.

The perturbed images are built by a numba kernel straight into the model's native layout
and dtype (:mod:`kernels.perturb`) and scored in mini-batches.

The quality tools run methods by name from :data:`onnxplain.METHODS` (preset "quick").
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import ModelError, OptionError
from .graph import GraphError
from .kernels.perturb import perturbation_batch, rank_from_map
from .methods.context import begin
from ._validation import check_choice, check_float, check_int, shared_names
from .images import resize_map
from .model import Model
from .result import Explanation

log = logging.getLogger(__name__)

METRICS = ("deletion", "insertion", "pointing_game", "energy")
SUBSTRATES = ("zeros", "mean", "blur")
#: default number of deletion/insertion steps: ``step`` = ceil(h * w / 64) pixels per step.
DEFAULT_STEPS = 64
#: default Gaussian sigma (pixels at the model's input size) of the "blur" substrate; Petsiuk
#: et al. blur 224 x 224 inputs with sigma 5 (kernel 11) for insertion.
DEFAULT_BLUR_SIGMA = 5.0


@dataclass
class Evaluation:
    """Quality metrics of one map for one image and class.

    Attributes
    ----------
    label : int
        The explained class index.
    label_name : str
    scores : dict of str to float
        One number per metric: "deletion" / "insertion" (normalised AUC in [0, 1] for
        probability outputs), "pointing_game" (1.0 hit, 0.0 miss), "energy" (share in [0, 1]).
    curves : dict of str to (x, y)
        For deletion / insertion: x float64 (S,) fraction of pixels changed, 0 .. 1; y
        float64 (S,) the class probability after each step.
    params : dict
        The parameters actually used.
    """

    label: int
    label_name: str
    scores: dict[str, float]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (curves as lists)."""
        return {"label": self.label, "label_name": self.label_name, "scores": dict(self.scores),
                "curves": {k: {"x": x.tolist(), "y": y.tolist()} for k, (x, y) in self.curves.items()},
                "params": dict(self.params)}


@shared_names
def evaluate(model: Model, image: Any, label: Any = None, score_map: np.ndarray | Explanation | None = None, *,
             metrics: Sequence[str] = ("deletion", "insertion"), box: Any = None, mask: np.ndarray | None = None,
             step: int | None = None, deletion_substrate: str = "zeros", insertion_substrate: str = "blur",
             blur_sigma: float = DEFAULT_BLUR_SIGMA, tolerance: float = 15.0, mini_batch_size: int = 64,
             execution_environment: str | None = None) -> Evaluation:
    """Measure how faithful and how well localised a map is.

    Parameters
    ----------
    model : Model
    image : path or ndarray (H, W, 3)
    label : int, str, None or Explanation
        The class the map explains; None takes the label of an Explanation given as
        ``score_map``, else the model's top class. An Explanation here is taken as the map
        (``evaluate(model, image, explanation)``).
    score_map : ndarray (H, W) or Explanation (required unless ``label`` is an Explanation)
        The map to judge, at the image's size (any other size is resized bilinearly).
        Higher = more important; signed maps are ranked by their signed value.
    metrics : sequence of {"deletion", "insertion", "pointing_game", "energy"}
        The last two need ``box`` or ``mask``.
    box : (x_min, y_min, x_max, y_max) or list of them, optional
        Ground-truth box(es) in pixels of the image, end-exclusive (the region is
        ``image[y_min:y_max, x_min:x_max]``); several boxes are united.
    mask : bool ndarray (H, W), optional
        Ground-truth region (united with ``box`` when both are given).
    step : int, optional
        Pixels changed per deletion/insertion step, at the model's input size; default
        ceil(h * w / 64), i.e. 64 steps and 65 model calls per curve.
    deletion_substrate, insertion_substrate : {"zeros", "mean", "blur"}
        What removed pixels become / what the insertion starts from: black (raw pixel value
        0), the image's per-channel mean, or the image blurred with a Gaussian of
        ``blur_sigma`` pixels. Defaults follow Petsiuk et al.: "zeros" and "blur".
    blur_sigma : float
        Gaussian sigma of the "blur" substrate in pixels at the model input size (default 5).
    tolerance : float
        Pointing-game tolerance in pixels of the image (default 15, as Zhang et al.).
    mini_batch_size : int
        Perturbed images per model call.
    execution_environment : {"auto", "cpu", "gpu"}, optional
        Defaults to the model's.

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        Unknown metric or substrate; a region metric without ``box``/``mask``; a map or
        mask that is not 2-D; an empty region.
    """
    if isinstance(label, Explanation):
        if score_map is not None:
            raise OptionError("evaluate() got an Explanation as 'label' and a 'score_map' as well; give one map.")
        label, score_map = None, label
    if score_map is None:
        raise OptionError("evaluate() needs a map: evaluate(model, image, explanation) or "
                          "evaluate(model, image, label, score_map).")
    if isinstance(score_map, Explanation):
        if score_map.multi_label:
            k = 0 if label is None else score_map.labels.index(model.label_index(label)) \
                if model.label_index(label) in score_map.labels else None
            if k is None:
                raise OptionError(f"label {label!r} is not among the explanation's labels {score_map.labels}.")
            label, score_map = score_map.labels[k], score_map.score_map[..., k]
        elif label is None:
            label = score_map.labels[0]
        score_map = getattr(score_map, "score_map", score_map)
    metrics = _check_metrics(metrics)
    smap = _as_map(score_map)
    deletion_substrate = check_choice("deletion_substrate", deletion_substrate, SUBSTRATES)
    insertion_substrate = check_choice("insertion_substrate", insertion_substrate, SUBSTRATES)
    blur_sigma = check_float("blur_sigma", blur_sigma, minimum=0.0, strict_minimum=True)
    tolerance = check_float("tolerance", tolerance, minimum=0.0)
    mini_batch_size = check_int("mini_batch_size", mini_batch_size, minimum=1)
    if isinstance(label, (list, tuple, np.ndarray)):
        raise OptionError("evaluate() explains one class at a time; the 'label' parameter must be one class, "
                         f"got a list of {len(label)}.")
    ctx = begin(model, image, label, execution_environment)
    h, w = ctx.pixels.shape[:2]
    step = math.ceil(h * w / DEFAULT_STEPS) if step is None else check_int("step", step, minimum=1)
    scores: dict[str, float] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    params = {"metrics": list(metrics), "step": step, "deletion_substrate": deletion_substrate,
              "insertion_substrate": insertion_substrate, "blur_sigma": blur_sigma, "tolerance": tolerance,
              "input_size": [h, w]}
    if "deletion" in metrics or "insertion" in metrics:
        working = resize_map(smap, (h, w), "bilinear")
        for mode in ("deletion", "insertion"):
            if mode in metrics:
                sub = deletion_substrate if mode == "deletion" else insertion_substrate
                x, y = perturbation_curve(model, ctx.pixels, ctx.labels[0], working, mode=mode, step=step,
                                          substrate=sub, blur_sigma=blur_sigma, mini_batch_size=mini_batch_size,
                                          execution_environment=ctx.environment)
                curves[mode] = (x, y)
                scores[mode] = auc(x, y)
    if "pointing_game" in metrics or "energy" in metrics:
        full = resize_map(smap, ctx.original_size, "bilinear")
        region = region_mask(ctx.original_size, box=box, mask=mask)
        if "pointing_game" in metrics:
            scores["pointing_game"] = float(pointing_game(full, mask=region, tolerance=tolerance))
        if "energy" in metrics:
            scores["energy"] = energy_in_region(full, mask=region)
    return Evaluation(ctx.labels[0], ctx.label_names[0], scores, curves, params)


def perturbation_curve(model: Model, pixels: np.ndarray, label: int, score_map: np.ndarray, *, mode: str,
                       step: int, substrate: str, blur_sigma: float = DEFAULT_BLUR_SIGMA, mini_batch_size: int = 64,
                       execution_environment: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Deletion or insertion curve of a working-size map on a working-size image.

    Parameters
    ----------
    pixels : float32 ndarray (h, w, 3)
        The image at the model's input size (``model.prepare(image)[0]``).
    score_map : ndarray (h, w)
        The map at the same size.
    mode : {"deletion", "insertion"}

    Returns
    -------
    x : float64 ndarray (S,)
        Fraction of pixels changed, from 0 to 1 (S = ceil(h*w / step) + 1).
    y : float64 ndarray (S,)
        The class probability after each step.
    """
    check_choice("mode", mode, ("deletion", "insertion"))
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if score_map.shape != pixels.shape[:2]:
        raise OptionError(f"score_map has shape {score_map.shape}; expected the working image's {pixels.shape[:2]}.")
    n_pix = pixels.shape[0] * pixels.shape[1]
    counts = np.minimum(np.arange(math.ceil(n_pix / step) + 1, dtype=np.int64) * step, n_pix)
    sub = make_substrate(pixels, substrate, blur_sigma)
    base, other = (pixels, sub) if mode == "deletion" else (sub, pixels)
    rank = rank_from_map(score_map)
    spec = model.spec_for(pixels.shape[:2])
    y = np.empty(len(counts), dtype=np.float64)
    for s in range(0, len(counts), mini_batch_size):
        x = perturbation_batch(base, other, rank, counts[s:s + mini_batch_size], spec)
        scores = model.scores_native(x, environment=execution_environment)
        y[s:s + len(x)] = model.probabilities(scores)[:, label]
    return counts / n_pix, y


def make_substrate(pixels: np.ndarray, substrate: str, blur_sigma: float = DEFAULT_BLUR_SIGMA) -> np.ndarray:
    """The substrate image (float32, like ``pixels``): "zeros", "mean" (per channel) or "blur"."""
    check_choice("substrate", substrate, SUBSTRATES)
    if substrate == "zeros":
        return np.zeros_like(pixels, dtype=np.float32)
    if substrate == "mean":
        mean = pixels.reshape(-1, pixels.shape[-1]).astype(np.float64).mean(axis=0)
        return np.ascontiguousarray(np.broadcast_to(mean.astype(np.float32), pixels.shape))
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(pixels.astype(np.float32), sigma=(blur_sigma, blur_sigma, 0), mode="nearest")
    return np.ascontiguousarray(out, dtype=np.float32)


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under y(x); with x spanning 0..1 this is the normalised AUC."""
    return float(np.trapezoid(np.asarray(y, np.float64), np.asarray(x, np.float64)))


def region_mask(shape: tuple[int, int], *, box: Any = None, mask: np.ndarray | None = None) -> np.ndarray:
    """Bool (H, W) union of ``box`` (one or a list of (x_min, y_min, x_max, y_max)) and ``mask``.

    Box coordinates are clipped to the image; end-exclusive, as slicing.
    """
    if box is None and mask is None:
        raise OptionError("the pointing game and energy need a ground-truth region: give 'box' or 'mask'.")
    region = np.zeros(tuple(shape), dtype=bool)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != tuple(shape):
            raise OptionError(f"The 'mask' parameter has shape {m.shape}; expected the map's (H, W) = {tuple(shape)}.")
        region |= m.astype(bool)
    if box is not None:
        for b in _boxes(box):
            x0, y0, x1, y1 = b
            region[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    if not region.any():
        pixels = 0 if mask is None else int(np.count_nonzero(mask))
        raise OptionError(f"the ground-truth region is empty (box={box!r}, mask with {pixels} "
                         f"pixels) in an image of {tuple(shape)}.")
    return region


def pointing_game(score_map: np.ndarray, *, box: Any = None, mask: np.ndarray | None = None,
                  tolerance: float = 15.0) -> bool:
    """True when a maximum of the map lies within ``tolerance`` pixels of the region.

    Parameters
    ----------
    score_map : ndarray (H, W)
    box : (x_min, y_min, x_max, y_max) or a list of them, end-exclusive, optional
    mask : bool ndarray (H, W), optional
    tolerance : float
        Euclidean distance in pixels (Zhang et al. use 15). With several equal maxima, one
        within the tolerance is a hit.

    Returns
    -------
    bool
    """
    from scipy.ndimage import distance_transform_edt

    smap = _as_map(score_map)
    tolerance = check_float("tolerance", tolerance, minimum=0.0)
    region = region_mask(smap.shape, box=box, mask=mask)
    dist = distance_transform_edt(~region)
    peak = smap.max()
    return bool(np.any(dist[smap == peak] <= tolerance))


def energy_in_region(score_map: np.ndarray, *, box: Any = None, mask: np.ndarray | None = None) -> float:
    """Share of the map's positive mass inside the region: Σ_region max(m, 0) / Σ max(m, 0).

    Returns NaN for a map with no positive value.
    """
    smap = _as_map(score_map).astype(np.float64)
    region = region_mask(smap.shape, box=box, mask=mask)
    pos = np.maximum(smap, 0.0)
    total = pos.sum()
    return float(pos[region].sum() / total) if total > 0 else float("nan")


# ---- failures the quality tools fall back from -------------------------------------------
def is_gradient_failure(exc: BaseException) -> bool:
    """True for the errors that mean "this model has no usable gradient graph" (fallback to forward-only)."""
    return isinstance(exc, (GraphError, ModelError))


# ---- helpers -------------------------------------------------------------------------------
def _check_metrics(metrics: Sequence[str] | str) -> tuple[str, ...]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics:
        raise OptionError("The 'metrics' parameter is empty; give at least one of " + ", ".join(METRICS) + ".")
    for m in metrics:
        check_choice("metrics", m, METRICS)
    return metrics


def _as_map(score_map: Any) -> np.ndarray:
    if isinstance(score_map, Explanation):
        score_map = score_map.score_map
    m = np.asarray(score_map)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.ndim != 2:
        raise OptionError(f"The 'score_map' parameter must be a 2-D (H, W) map; got shape {m.shape} "
                         "(for several labels, pass one map at a time).")
    if not np.all(np.isfinite(m)):
        raise OptionError("The 'score_map' parameter contains NaN or inf.")
    return m.astype(np.float32, copy=False)


def _boxes(box: Any) -> list[tuple[int, int, int, int]]:
    try:
        arr = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError):  # strings, ragged lists
        raise OptionError(f"The 'box' parameter must be (x_min, y_min, x_max, y_max) or a list of them, in "
                         f"numbers; got {box!r}.") from None
    if not np.all(np.isfinite(arr)):
        raise OptionError(f"The 'box' parameter must hold finite numbers; got {box!r}.")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise OptionError(f"The 'box' parameter must be (x_min, y_min, x_max, y_max) or a list of them; got {box!r}.")
    out = []
    for b in arr:
        x0, y0, x1, y1 = (int(round(v)) for v in b)
        if x1 <= x0 or y1 <= y0:
            raise OptionError(f"The 'box' parameter {tuple(b.tolist())} is empty: need x_min < x_max and y_min < y_max "
                             "(x_min, y_min, x_max, y_max).")
        out.append((x0, y0, x1, y1))
    return out
