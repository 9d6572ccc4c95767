"""Image LIME with MATLAB ``imageLIME`` semantics (and the ``lime`` package's tree-free options).

Steps: segment the working image (the image resized to the model input) into features;
draw ``num_samples`` on/off vectors (each feature on with p = 0.5, drawn as stratified
antithetic pairs by default; sample 0 all on, i.e. the unperturbed image); write each
mini-batch of synthetic images straight into the model's native input buffer with numba
(``kernels.lime``); score it with ONNX Runtime; fit one surrogate per label on (on/off matrix
-> class score); paint each feature's importance onto its pixels.

Decisions (where MATLAB is vague or the Python ``lime`` package differs):

- Working size. Segmentation, sampling and painting happen at the model input size
  (``Context.pixels``). A custom segmentation matrix is given at the ORIGINAL image size
  and resized nearest-neighbour to the working size; ``feature_map`` is always at the
  original size (for built-in segmentations: the working labels resized nearest, so it
  lines up exactly with a "nearest" ``score_map``).
- "superpixels": ``skimage.segmentation.slic(n_segments=num_features, compactness=10,
  start_label=0)`` in Lab on the image min-max rescaled to [0, 1] (MATLAB's
  ``superpixels`` default compactness is 10 too). "quickshift": lime's defaults
  (``kernel_size=4, max_dist=200, ratio=0.2``), num_features is not used.
  "felzenszwalb": ``scale=100, sigma=0.8, min_size=h*w // (4*num_features)`` so
  num_features steers the count. ``segmentation_options`` overrides any of these.
  Labels are relabelled 0..F-1 in every case.
- "grid": ``gh x gw`` cells with ``gh * gw <= num_features``, gh from
  ``sqrt(num_features * h / w)`` (floor or ceil, whichever gives the squarer cells with
  the fewer dropped cells); a square image with num_features = k*k gives exactly k x k.
  Cell of row i is ``i * gh // h`` (near-equal cells).
- Fill of "off" features: "mean" (the working image's per-channel mean, MATLAB),
  "superpixel-mean" (each feature's own mean colour, lime's ``hide_color=None``), a
  constant (number or 3 values, in the image's units) or "blur" (``skimage.filters.
  gaussian`` of the working image with sigma = 5% of its larger side, ``BLUR_SIGMA``).
- Sample weights: lime's kernel ``sqrt(exp(-d**2 / kernel_width**2))`` (that is
  ``exp(-d**2 / (2 kernel_width**2))``) with d the cosine distance between the on/off
  vector and the all-on vector (``1 - sqrt(k / F)`` for k features on; 1 for all off, as
  scikit-learn's ``pairwise_distances(metric="cosine")`` that lime calls), width 0.25.
  ``sample_weights=False`` gives every sample weight 1.
- "tree" surrogate: ``DecisionTreeRegressor(min_samples_split=10, min_samples_leaf=1,
  max_depth=None)``, the defaults of MATLAB ``fitrtree`` (MinParentSize 10, MinLeafSize
  1, no split limit). Importance is MATLAB ``predictorImportance``: the summed decrease
  in risk (node-probability-weighted MSE) of the splits on a feature divided by the number
  of branch nodes. It is non-negative; normalised to sum 1 it equals scikit-learn's
  ``feature_importances_`` (same ranking). The tree's tie-breaking seed is drawn from
  ``random_state``.
- "linear" surrogate: ``Lasso(alpha=1/num_samples)``: MATLAB ``fitrlinear``'s default
  Lambda = 1/n with the same objective ``(1/2n)||y - Xb||^2 + lambda ||b||_1``.
  Importance = the signed coefficients. (lime fits ``Ridge(alpha=1)`` instead.)
- output_upsampling: "nearest" paints the feature map at the working size, then resizes
  it nearest to the original size. "bicubic": for "grid" the gh x gw grid of importances
  is resized bicubically to the original size (MATLAB's smooth map); for other
  segmentations the painted working-size map is resized bicubically (smooth only where
  the sizes differ; unchanged when the image already has the model's size). "none": for
  "grid" the map IS the gh x gw grid; for other segmentations the painted map at the
  working (model input) size.
- ``Explanation.scores`` are the scores of sample 0 (the unperturbed working image).
- Memory does not grow with num_samples beyond the (N, F) uint8 on/off matrix and the
  (N, K) scores: one native batch buffer (plus a float16 twin for float16 models) is reused,
  and only the features whose on/off state changed in a slot are rewritten.
- Fill caveat: a region whose colour is close to the fill (e.g. a grey object on an image
  whose mean is grey) barely changes when "off"; use a contrasting constant fill then.
"""
from __future__ import annotations

import logging
import math
import numbers
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import OptionError, OptionTypeError, WorkLimitError
from .._validation import as_generator, check_choice, check_float, check_int, describe_seed, shared_names
from ..images import resize_map
from ..kernels import lime as K
from ..model import InputSpec, Model
from ..result import Explanation
from ._limits import check_allow_long, check_work
from ._masking import batch_buffers
from .context import Context, begin
from ._coalitions import random_coalitions, stratified_sizes

log = logging.getLogger(__name__)

SEGMENTATIONS = ("superpixels", "grid", "quickshift", "felzenszwalb")
SURROGATES = ("tree", "linear", "ridge")
SAMPLINGS = ("paired", "bernoulli")
UPSAMPLING = ("nearest", "bicubic", "none")
FILLS = ("mean", "superpixel-mean", "blur")
#: "blur" fill: gaussian sigma as a fraction of the working image's larger side.
BLUR_SIGMA = 0.05
#: MATLAB fitrtree defaults (MinParentSize 10, MinLeafSize 1, no split limit).
#: "ridge" surrogate: the ``lime`` package's ``Ridge(alpha=1)``.
RIDGE_ALPHA = 1.0
TREE_OPTIONS = {"min_samples_split": 10, "min_samples_leaf": 1, "max_depth": None}


@shared_names
def image_lime(model: Model, image: Any, label: Any = None, *, num_features: int = 49, num_samples: int = 2048,
               segmentation: str | np.ndarray = "superpixels", surrogate: str = "ridge",
               output_upsampling: str = "nearest", mini_batch_size: int = 128,
               execution_environment: str | None = None, random_state: Any = None,
               fill: str | float | Sequence[float] = "mean", sample_weights: bool = True,
               kernel_width: float = 0.25, segmentation_options: Mapping[str, Any] | None = None,
               sampling: str = "paired",
               progress: Callable[[int, int], None] | None = None, allow_long: bool = False) -> Explanation:
    """Explain a classification with LIME (MATLAB ``imageLIME`` semantics).

    Parameters
    ----------
    model : Model
        From :func:`onnxplain.load_model`.
    image : path or ndarray (H, W[, C])
        The image; it is resized to the model input to compute, maps come back at (H, W).
    label : int, str, list of them, or None
        Class index or name; a list explains K labels from ONE sampling pass (maps get a
        trailing K axis); None = the model's top class.
    num_features : int, default 49
        Target number of features (superpixels / grid cells). Ignored for a custom matrix.
    num_samples : int, default 2048
        Synthetic images, including sample 0 (the unperturbed image). At least 2.
    segmentation : {"superpixels", "grid", "quickshift", "felzenszwalb"} or ndarray (H, W) int
        How to split the image into features. A matrix gives each pixel's feature at the
        original image size; its unique values are the features (relabelled 0..F-1).
    surrogate : {"ridge", "tree", "linear"}, default "ridge"
        Ridge regression (``Ridge(alpha=1)``, the ``lime`` package's surrogate; signed
        coefficients), regression tree (MATLAB's default: importance = impurity decrease,
        >= 0) or lasso (MATLAB ``fitrlinear``, signed coefficients). Ridge is the default
        because its importances are stable: on the bundled model and cat with the same 34
        quickshift segments, Spearman between two seeds at 1000 samples is 0.93 for ridge,
        0.75 for the tree and 0.78 for lasso (``bench/results/stability.md``). MATLAB
        ``imageLIME``: ``surrogate="tree", sampling="bernoulli"``.
    output_upsampling : {"nearest", "bicubic", "none"}, default "nearest"
        See the module notes; "none" with "grid" returns the grid itself.
    mini_batch_size : int, default 128
        Synthetic images per model call (one reused buffer of this size).
    execution_environment : {"auto", "cpu", "gpu"} or None
        None = the model's own environment.
    random_state : int, numpy Generator or None
        Same int -> bit-identical output.
    fill : "mean", "superpixel-mean", "blur", number or 3 numbers, default "mean"
        What replaces the pixels of an "off" feature (numbers in the image's units).
    sample_weights : bool, default True
        Weight samples by lime's exponential kernel on cosine distance.
    kernel_width : float, default 0.25
        Kernel width of the sample weights.
    segmentation_options : mapping, optional
        Extra keyword arguments for the skimage segmentation function.
    progress : callable(done, total), optional
        Called after each mini-batch.
    allow_long : bool, default False
        Run more than the work bound of 100,000 samples (see ``onnxplain.methods._limits``).

    Returns
    -------
    Explanation
        ``score_map`` float32 (H, W) or (H, W, K) (see output_upsampling for the sizes of
        "none"); extras ``feature_map`` int32 (H, W), 0-based feature per pixel at the
        original size; ``feature_importance`` float32 (F,) or (F, K); ``num_features``
        (F actually used); ``grid_shape`` (gh, gw) for "grid"; ``surrogate_r2`` (weighted
        R^2 of each surrogate on its training samples). Timings: "segmentation",
        "sampling", "inference", "surrogate" (fits and painting), "total".

    Raises
    ------
    ValueError, TypeError
        An option out of range or unknown; a segmentation matrix of the wrong shape or dtype.
    """
    num_features = check_int("num_features", num_features, minimum=1)
    num_samples = check_int("num_samples", num_samples, minimum=2)
    mini_batch_size = check_int("mini_batch_size", mini_batch_size, minimum=1)
    custom = not isinstance(segmentation, str)
    if custom:
        _check_matrix(segmentation, None)  # type and dtype now, the shape once the image is read
    else:
        check_choice("segmentation", segmentation, SEGMENTATIONS)
    check_choice("surrogate", surrogate, SURROGATES)
    sampling_mode = check_choice("sampling", sampling, SAMPLINGS)   # `sampling` is reused below for a timing
    check_choice("output_upsampling", output_upsampling, UPSAMPLING)
    kernel_width = check_float("kernel_width", kernel_width, minimum=0.0, strict_minimum=True)
    if not isinstance(sample_weights, (bool, np.bool_)):
        raise OptionTypeError(f"The 'sample_weights' parameter must be True or False; got {sample_weights!r}.")
    fill_spec = _check_fill(fill)
    seg_options = _check_options(segmentation_options, custom)
    if progress is not None and not callable(progress):
        raise OptionTypeError(f"The 'progress' parameter must be a callable(done, total) or None; got {progress!r}.")
    rng = as_generator(random_state)
    check_work(model, f"num_samples={num_samples:,}", num_samples, allow_long=check_allow_long(allow_long),
               memory_bytes=num_samples * (17.0 * num_features + 16.0), environment=execution_environment)

    ctx = begin(model, image, label, execution_environment)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    if custom:
        matrix = _check_matrix(segmentation, ctx.original_size)
        feature_map, labels, n_feat = _custom_features(matrix, ctx.pixels.shape[:2])
        seg_name, grid_shape, seg_used = "custom", None, {}
    else:
        h, w = ctx.pixels.shape[:2]
        if num_features > h * w:  # never capped silently
            raise OptionError(f"The 'num_features' parameter ({num_features:,}) exceeds the {h} x {w} = {h * w:,} "
                              "pixels of the working image (the model's input size); use at most that many.")
        labels, grid_shape, seg_used = _segment(ctx.pixels, segmentation, num_features, seg_options, rng)
        n_feat = int(labels.max()) + 1
        feature_map = _resize_labels(labels, ctx.original_size)
        seg_name = segmentation
    timings["segmentation"] = time.perf_counter() - t

    t = time.perf_counter()
    h, w = labels.shape
    spec, ptr, index, counts, runs, on, off, fill_used = _feature_images(model, ctx, labels, n_feat, fill_spec)
    try:
        onoff = draw_onoff(num_samples, n_feat, sampling_mode, rng)
    except MemoryError:
        raise WorkLimitError(f"num_samples={num_samples:,} with {n_feat} features needs "
                             f"{num_samples * n_feat * 17 / 2 ** 30:.1f} GiB; use fewer samples.") from None
    sampling = time.perf_counter() - t

    scores, sampling, inference = _score_samples(ctx, spec, on, off, onoff, runs, mini_batch_size,
                                                 progress, sampling)
    timings["sampling"], timings["inference"] = sampling, inference

    t = time.perf_counter()
    weights = _kernel_weights(onoff, kernel_width) if sample_weights else np.ones(num_samples)
    present = counts > 0
    if not present.all():
        log.warning("%d of %d features have no pixels at the working size %dx%d; their importance is 0.",
                    int((~present).sum()), n_feat, h, w)
    importance, r2, sur_used = _fit_surrogates(onoff[:, present], scores, weights, surrogate, rng)
    full = np.zeros((n_feat, scores.shape[1]), dtype=np.float32)
    full[present] = importance
    score_map = _score_map(ctx, full, ptr, index, (h, w), grid_shape, output_upsampling)
    timings["surrogate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - ctx.started

    params = {
        "num_features": num_features, "num_features_used": n_feat, "num_samples": num_samples,
        "segmentation": seg_name,
        "segmentation_options": seg_used, "surrogate": surrogate, "surrogate_options": sur_used,
        "output_upsampling": output_upsampling, "mini_batch_size": mini_batch_size,
        "execution_environment": ctx.environment, "runtime": model.runtime(ctx.environment, since=ctx.started),
        "random_state": describe_seed(random_state),
        "fill": fill_used, "sample_weights": bool(sample_weights), "kernel_width": kernel_width,
        "sampling": sampling_mode,
        "working_size": [h, w],
    }
    extras: dict[str, Any] = {
        "feature_map": feature_map,
        "feature_importance": full if ctx.multi else full[:, 0],
        "num_features": n_feat,
        "surrogate_r2": r2 if ctx.multi else r2[0],
    }
    if grid_shape is not None:
        extras["grid_shape"] = grid_shape
    return Explanation("lime", score_map, list(ctx.labels), list(ctx.label_names),
                       scores[0].astype(np.float32), params, extras, timings)


# ---- validation --------------------------------------------------------------------------
def _check_fill(fill: Any) -> str | tuple[float, float, float]:
    """"mean" / "superpixel-mean" / "blur", or a constant as 3 floats."""
    if isinstance(fill, str):
        return check_choice("fill", fill, FILLS)
    if isinstance(fill, numbers.Real) and not isinstance(fill, bool):
        value = check_float("fill", fill)
        return (value, value, value)
    try:
        items = [check_float(f"fill[{i}]", v) for i, v in enumerate(fill)]
    except TypeError:
        raise OptionTypeError(f"The 'fill' parameter must be one of {FILLS}, a number or 3 numbers; got {fill!r}.") from None
    if len(items) != 3:
        raise OptionError(f"The 'fill' parameter as a constant must have 1 or 3 values; got {len(items)}.")
    return tuple(items)  # type: ignore[return-value]


def _check_options(options: Mapping[str, Any] | None, custom: bool) -> dict[str, Any]:
    """Segmentation keyword arguments as a dict."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise OptionTypeError("The 'segmentation_options' parameter must be a mapping or None; got "
                        f"{type(options).__name__}.")
    if custom and options:
        raise OptionError("The 'segmentation_options' parameter applies to the built-in segmentations, not to a "
                         "segmentation matrix.")
    return dict(options)


def _check_matrix(segmentation: Any, size: tuple[int, int] | None) -> np.ndarray:
    """A 2-D integer matrix of the original image size (shape not checked when ``size`` is None)."""
    if not isinstance(segmentation, (np.ndarray, list, tuple)):
        raise OptionTypeError(f"The 'segmentation' parameter must be one of {SEGMENTATIONS} or an integer matrix "
                        f"(H, W); got {type(segmentation).__name__}.")
    matrix = np.asarray(segmentation)
    if matrix.dtype.kind not in "iu":
        raise OptionTypeError(f"The 'segmentation' matrix must have an integer dtype; got {matrix.dtype} "
                        "(convert with .astype(int) if the values are whole numbers).")
    if matrix.ndim != 2 or (size is not None and matrix.shape != tuple(size)):
        expected = "2-D (H, W)" if size is None else f"the image's shape {tuple(size)} (H, W)"
        raise OptionError(f"The 'segmentation' matrix must have {expected}; got {matrix.shape}.")
    return matrix


# ---- segmentation ------------------------------------------------------------------------
def _segment(pixels: np.ndarray, method: str, num_features: int, options: dict[str, Any],
             rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int] | None, dict[str, Any]]:
    """Working-size labels 0..F-1, the grid shape for "grid", and the options used."""
    h, w = pixels.shape[:2]
    if method == "grid":
        if options:
            raise OptionError(f"segmentation 'grid' takes no segmentation_options; got {sorted(options)}.")
        gh, gw = _grid_shape(h, w, num_features)
        rows = np.arange(h) * gh // h
        cols = np.arange(w) * gw // w
        return (rows[:, None] * gw + cols[None, :]).astype(np.int64), (gh, gw), {"grid_shape": [gh, gw]}
    from skimage import segmentation as seg

    lo, hi = float(pixels.min()), float(pixels.max())
    img01 = (pixels - lo) / (hi - lo) if hi > lo else np.zeros_like(pixels)
    if method == "superpixels":
        used = {"n_segments": num_features, "compactness": 10.0, "start_label": 0, **options}
        fn = seg.slic
        used.setdefault("channel_axis", -1)
    elif method == "quickshift":
        used = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2, "rng": int(rng.integers(2**31 - 1)), **options}
        fn = seg.quickshift
    else:
        used = {"scale": 100.0, "sigma": 0.8, "min_size": max(1, h * w // (4 * num_features)), **options}
        fn = seg.felzenszwalb
    try:
        raw = fn(img01.astype(np.float64), **used)
    except TypeError as exc:
        raise OptionTypeError(f"segmentation {method!r}: bad segmentation_options {sorted(options)}: {exc}") from None
    _, labels = np.unique(raw, return_inverse=True)
    return labels.reshape(h, w).astype(np.int64), None, used


def _grid_shape(h: int, w: int, num_features: int) -> tuple[int, int]:
    """(gh, gw) with gh * gw <= num_features and roughly square cells on an h x w image."""
    target = math.sqrt(num_features * h / w)
    best, best_key = (1, 1), None
    for gh in sorted({max(1, math.floor(target)), max(1, math.ceil(target))}):
        gh = min(gh, num_features, h)
        gw = max(1, min(num_features // gh, w))
        cost = abs(math.log((h / gh) / (w / gw))) + abs(math.log(num_features / (gh * gw)))
        key = (round(cost, 9), -gh * gw)
        if best_key is None or key < best_key:
            best, best_key = (gh, gw), key
    return best


def _custom_features(matrix: np.ndarray, working: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """Relabel 0..F-1: (feature_map at original size int32, working labels int64, F)."""
    values, inverse = np.unique(matrix, return_inverse=True)
    feature_map = inverse.reshape(matrix.shape).astype(np.int32)
    labels = _resize_labels(feature_map, working).astype(np.int64)
    return feature_map, labels, len(values)


def _resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize of a label image with the same sampling as ``resize_map(..., "nearest")``."""
    if tuple(labels.shape) == tuple(size):
        return labels.astype(np.int32)
    return np.rint(resize_map(labels.astype(np.float32), size, "nearest")).astype(np.int32)


# ---- sampling and inference --------------------------------------------------------------
def _fill_image(pixels: np.ndarray, fill: Any, labels: np.ndarray,
                counts: np.ndarray) -> tuple[np.ndarray, Any]:
    """The "off" image (h, w, 3) float32 and a JSON-friendly description of it."""
    if fill == "mean":
        mean = pixels.reshape(-1, 3).mean(axis=0, dtype=np.float64).astype(np.float32)
        return np.broadcast_to(mean, pixels.shape).copy(), {"mean": mean.tolist()}
    if fill == "superpixel-mean":
        flat = labels.ravel()
        n = len(counts)
        sums = np.stack([np.bincount(flat, weights=pixels[..., c].ravel(), minlength=n) for c in range(3)], axis=1)
        means = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        return means[labels], "superpixel-mean"
    if fill == "blur":
        from skimage.filters import gaussian

        sigma = BLUR_SIGMA * max(pixels.shape[:2])
        out = gaussian(pixels.astype(np.float64), sigma=sigma, channel_axis=-1, preserve_range=True, mode="nearest")
        return out.astype(np.float32), {"blur": {"sigma": sigma}}
    const = np.asarray(fill, dtype=np.float32)
    return np.broadcast_to(const, pixels.shape).copy(), {"constant": const.tolist()}



def _feature_images(model: Model, ctx: Context, labels: np.ndarray, n_feat: int, fill_spec: Any) -> tuple:
    """What LIME and Kernel SHAP sample from, for a working-size label image: the input spec, the
    features' pixel lists (CSR ``ptr``/``index`` and ``counts``), the kernel's element runs, and
    the image with every feature on / off in the model's native layout (plus the fill used)."""
    h, w = labels.shape
    spec = model.spec_for((h, w))
    ptr, index = K.feature_csr(labels.ravel(), n_feat)
    counts = np.diff(ptr)
    fill_image, fill_used = _fill_image(ctx.pixels, fill_spec, labels, counts)
    runs = K.element_runs(ptr, index, h * w, spec.layout)
    on = K.native_image(ctx.pixels, spec.channel_source, spec.scale, spec.offset, spec.layout, spec.dtype)
    off = K.native_image(fill_image, spec.channel_source, spec.scale, spec.offset, spec.layout, spec.dtype)
    return spec, ptr, index, counts, runs, on, off, fill_used

def _score_samples(ctx: Context, spec: InputSpec, on: np.ndarray, off: np.ndarray, onoff: np.ndarray,
                   runs: tuple[np.ndarray, np.ndarray, np.ndarray], batch: int, progress: Any,
                   sampling: float) -> tuple[np.ndarray, float, float]:
    """Scores (N, K) float64 of the explained labels; returns (scores, sampling s, inference s)."""
    n = onoff.shape[0]
    batch = min(batch, n)
    slots = 2 if n > batch else 1   # the next batch is written in a helper thread while the model runs
    with batch_buffers(spec.native_shape(batch), on.dtype, slots) as bufs:   # kept across a dataset run's calls
        return _stream_samples(ctx, spec, on, off, onoff, runs, batch, progress, sampling, bufs)


def _stream_samples(ctx: Context, spec: InputSpec, on: np.ndarray, off: np.ndarray, onoff: np.ndarray,
                    runs: tuple[np.ndarray, np.ndarray, np.ndarray], batch: int, progress: Any, sampling: float,
                    bufs: list[np.ndarray]) -> tuple[np.ndarray, float, float]:
    n = onoff.shape[0]
    slots = len(bufs)
    halves = [np.empty(bufs[0].shape, dtype=np.float16) if spec.dtype == np.float16 else None for _ in range(slots)]
    states = [K.new_state(batch, onoff.shape[1]) for _ in range(slots)]  # what each buffer holds: only changes
    scores = np.empty((n, len(ctx.labels)), dtype=np.float64)              # are rewritten
    inference = 0.0

    def write(start: int, slot: int) -> np.ndarray:
        b = min(batch, n - start)
        buf, half = bufs[slot], halves[slot]
        K.synthetic_batch(on, off, onoff[start:start + b], runs, buf[:b], states[slot])
        if half is None:
            return buf[:b]
        half[:b] = buf[:b]
        return half[:b]

    starts = list(range(0, n, batch))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxplain-lime") as pool:
        pending = pool.submit(write, 0, 0)
        for i, start in enumerate(starts):
            t = time.perf_counter()
            b = min(batch, n - start)
            x = pending.result()
            if i + 1 < len(starts):   # the other buffer: its batch's scores were taken last round
                pending = pool.submit(write, starts[i + 1], (i + 1) % 2)
            t2 = time.perf_counter()
            out = ctx.model.scores_native(x, environment=ctx.environment, source=f"LIME samples of {ctx.source}")
            scores[start:start + b] = out[:, ctx.labels]
            t3 = time.perf_counter()
            sampling += t2 - t
            inference += t3 - t2
            if progress is not None:
                progress(start + b, n)
    return scores, sampling, inference


def draw_onoff(num_samples: int, num_features: int, sampling: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 (num_samples, F) on/off matrix; row 0 is all on (the unperturbed image).

    "bernoulli": every feature on with p = 0.5 independently (MATLAB ``imageLIME``).
    "paired": the same distribution (every on/off vector equally likely) drawn with less
    noise: the numbers of features on are stratified (the Binomial(F, 1/2) proportions by
    largest remainders instead of a random draw), each subset is uniformly random given its
    size, and each is followed by its complement (antithetic pairs; the complement of a
    uniform vector is uniform, so the distribution, and so the surrogate the samples
    estimate, is MATLAB's). An odd leftover row is a uniform random vector.
    """
    from math import comb

    if sampling == "bernoulli" or num_features < 2:
        onoff = rng.integers(0, 2, size=(num_samples, num_features), dtype=np.uint8)
        onoff[0] = 1
        return onoff
    pairs = (num_samples - 1) // 2
    k = np.arange(num_features + 1)
    # sizes s and F - s have the same probability: stratify over s <= F / 2 and pair
    half = k[: num_features // 2 + 1]
    prob = np.array([comb(num_features, int(s)) for s in half], np.float64)
    if num_features % 2 == 0:
        prob[-1] /= 2.0                                 # s = F/2 is its own mirror
    counts = stratified_sizes(prob, pairs)
    sizes = np.repeat(half, counts)
    flip = rng.random(len(sizes)) < 0.5                 # which of the pair comes first: s or F - s
    sizes = np.where(flip, num_features - sizes, sizes)
    order = rng.permutation(len(sizes))
    rows = [np.ones((1, num_features), np.uint8), random_coalitions(sizes[order], num_features, rng, paired=True)]
    if (num_samples - 1) % 2:
        rows.append(rng.integers(0, 2, size=(1, num_features), dtype=np.uint8))
    return np.concatenate(rows)


# ---- surrogate ---------------------------------------------------------------------------
def _kernel_weights(onoff: np.ndarray, kernel_width: float) -> np.ndarray:
    """lime's weights sqrt(exp(-d^2 / width^2)), d = cosine distance to the all-on vector."""
    k = onoff.sum(axis=1, dtype=np.float64)
    d = 1.0 - np.sqrt(k / onoff.shape[1])  # all off: similarity 0 -> distance 1, as scikit-learn
    return np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))


def _fit_surrogates(onoff: np.ndarray, scores: np.ndarray, weights: np.ndarray, surrogate: str,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One surrogate per label: importance (F, K) float32, weighted R^2 (K,), options used."""
    x = onoff.astype(np.float64)
    n_feat, k = x.shape[1], scores.shape[1]
    importance = np.zeros((n_feat, k), dtype=np.float64)
    r2 = np.zeros(k, dtype=np.float64)
    if n_feat == 0:
        return importance.astype(np.float32), r2.astype(np.float32), {}
    if surrogate == "tree":
        from sklearn.tree import DecisionTreeRegressor

        used = dict(TREE_OPTIONS, random_state=int(rng.integers(2**31 - 1)))
        for j in range(k):
            tree = DecisionTreeRegressor(**used).fit(x, scores[:, j], sample_weight=weights)
            raw = tree.tree_.compute_feature_importances(normalize=False)
            branches = int(np.count_nonzero(tree.tree_.children_left != -1))
            importance[:, j] = raw / max(branches, 1)
            r2[j] = tree.score(x, scores[:, j], sample_weight=weights)
    elif surrogate == "ridge":
        used = {"alpha": RIDGE_ALPHA, "fit_intercept": True}
        importance[:], r2[:] = _weighted_ridge(x, scores.astype(np.float64), weights, RIDGE_ALPHA)
    else:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import Lasso

        used = {"alpha": 1.0 / len(x), "fit_intercept": True, "max_iter": 10000}
        for j in range(k):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                lasso = Lasso(**used).fit(x, scores[:, j], sample_weight=weights)
            if caught:
                log.warning("lasso surrogate for label %d did not fully converge: %s", j, caught[0].message)
            importance[:, j] = lasso.coef_
            r2[j] = lasso.score(x, scores[:, j], sample_weight=weights)
            if not np.any(lasso.coef_):
                log.warning("lasso surrogate for label %d set every feature's weight to 0: the score changes "
                            "are below the penalty alpha = 1/num_samples = %.3g; use more samples or "
                            "surrogate='tree'", j, used["alpha"])
    return importance.astype(np.float32), r2.astype(np.float32), used


def _weighted_ridge(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``Ridge(alpha, fit_intercept=True).fit(x, y, sample_weight=w)`` in closed form:
    coefficients (F, K) and the weighted R^2 (K,) of ``score``.

    Centre x and y on their weighted means (the intercept absorbs them), then solve
    (Xc' W Xc + alpha I) b = Xc' W yc. numpy only: importing scikit-learn pulls in pandas and
    pyarrow here (~2 s and ~120 MB of resident memory in ``onnxplain explain``) for a 49 x 49 solve.
    """
    w = np.asarray(w, np.float64)
    xm = w @ x / w.sum()
    ym = w @ y / w.sum()
    xc, yc = x - xm, y - ym
    xw = xc * w[:, None]
    coef = np.linalg.solve(xw.T @ xc + alpha * np.eye(x.shape[1]), xw.T @ yc)        # (F, K)
    resid = yc - xc @ coef
    total = w @ (yc ** 2)
    r2 = np.where(total > 0, 1.0 - (w @ resid ** 2) / np.where(total > 0, total, 1.0), 0.0)
    return coef, r2


def _score_map(ctx: Context, importance: np.ndarray, ptr: np.ndarray, index: np.ndarray, size: tuple[int, int],
               grid: tuple[int, int] | None, upsampling: str) -> np.ndarray:
    """Paint importances and resize per ``upsampling``; drops the K axis for a single label."""
    if grid is not None and upsampling in ("bicubic", "none"):
        cells = importance.reshape(grid[0], grid[1], -1)
        out = cells if upsampling == "none" else resize_map(cells, ctx.original_size, "bicubic")
        return out if ctx.multi else out[..., 0]
    painted = K.paint(importance, ptr, index, size)
    return ctx.finish(painted, upsampling)
