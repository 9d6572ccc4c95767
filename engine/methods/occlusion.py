"""Occlusion sensitivity (MATLAB ``occlusionSensitivity`` semantics) on any ONNX classifier.

For each mask position a ``mask_size`` window (all channels) of the working image is
replaced by ``mask_value`` and the change ``score(original) - score(occluded)`` is
recorded; a pixel's value is the mean of that change over every window that covers it.
Positive values mark regions that support the class.

Window placement, per axis, for an image side ``H``, window ``k`` and stride ``s``:

- ``mask_clipping=False``: windows lie fully inside the image, starts ``0, s, 2s, ...,
  <= H - k``. Pixels no window covers (the last ``(H - k) mod s`` rows/columns) get 0.
  This equals captum's ``Occlusion`` with the same window, stride and baseline whenever
  ``(H - k)`` is a multiple of ``s``; otherwise captum adds one more, clipped, window
  that ends at the edge, which this mode by definition does not.
- ``mask_clipping=True`` (default): as MATLAB's ``MaskClipping="on"``, the first window is
  centred on the first row: window ``i`` spans ``i*s - floor(k/2) ... i*s - floor(k/2) + k - 1``
  for ``i = 0 .. n - 1``, ``n = ceil((H - ceil(k/2)) / s) + 1`` (the fewest positions whose
  last window reaches the last row), less a last window that would start past the edge
  (possible only when ``s > k``). Windows are clipped to the image (only their inside
  part is occluded). Every pixel is covered when ``s <= k``, and because a pixel's value
  is a mean over the windows covering it (not a sum), edge pixels are not down-weighted
  by being covered fewer times.

The map is computed at the working resolution (the model's input size); ``output_upsampling``
"bicubic"/"nearest" resizes it to the size of the image given. "none" returns the
working-resolution map (h, w); MATLAB's coarse map (one value per mask position) is always
returned as ``extras["position_map"]``.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from onnxplain.kernels.occlusion import accumulate_windows, occlude_batch

from ..errors import OptionError, OptionTypeError
from .._validation import check_choice, check_int, check_pair, shared_names
from ..model import Model
from ..result import Explanation
from ._limits import check_allow_long, check_work
from .context import begin
from ._masking import batch_buffers, resolve_fill, stream

UPSAMPLING = ("bicubic", "nearest", "none")
AUTO_MASK_FRACTION = 0.2
AUTO_STRIDE_FRACTION = 0.1


@shared_names
def occlusion_sensitivity(model: Model, image: Any, label: Any = None, *, mask_size: Any = "auto",
                          stride: Any = "auto", mask_value: Any = "auto", mask_clipping: bool = True,
                          output_upsampling: str = "bicubic", mini_batch_size: int = 128,
                          execution_environment: str | None = None,
                          progress: Callable[[int, int], None] | None = None, allow_long: bool = False) -> Explanation:
    """Occlusion sensitivity map of ``label`` for ``image``.

    Parameters
    ----------
    model : Model
    image : path or ndarray (H, W[, C])
    label : int, str, list of those, or None
        Class index or name; a list explains several classes from the same occluded batch
        (maps get a trailing K axis); None explains the top class.
    mask_size : "auto", int or (int, int)
        Window (h, w) in working-image pixels. "auto": ``max(1, floor(0.2 * side + 0.5))`` per
        axis (45 x 45 for a 224 x 224 input).
    stride : "auto", int or (int, int)
        Step between windows. "auto": ``max(1, floor(0.1 * side + 0.5))`` (22 for 224).
    mask_value : "auto", number or (R, G, B)
        Fill in image pixel units (before preprocessing); "auto" = the working image's
        per-channel mean.
    mask_clipping : bool
        Window placement, see the module notes: True lets windows overhang the edges so
        every pixel is covered; False keeps them inside (captum's placement).
    output_upsampling : {"bicubic", "nearest", "none"}
        Resize of the working-resolution map to the image size; "none" keeps (h, w).
    mini_batch_size : int
        Occluded images per model call.
    execution_environment : {"auto", "cpu", "gpu"}, optional
        Defaults to the model's.
    progress : callable(done, total), optional
        Called after each mini-batch.
    allow_long : bool
        Run more than the work bound of 100,000 windows (see ``onnxplain.methods._limits``).

    Returns
    -------
    Explanation
        ``score_map`` float32 (H, W) or (H, W, K); ``scores`` the unoccluded scores (K,);
        extras ``position_map`` float32 (n_rows, n_cols[, K]) (score change per window
        position), ``window_rows`` / ``window_cols`` int64 (window start per position,
        working pixels), ``coverage`` int64 (h, w) (windows covering each pixel);
        timings "inference", "masking", "total".

    Raises
    ------
    ValueError
        Unknown ``output_upsampling``, sizes < 1, a mask larger than the working image, a
        malformed ``mask_value``.
    TypeError
        Non-integer sizes, non-bool ``mask_clipping``.
    """
    check_choice("output_upsampling", output_upsampling, UPSAMPLING)
    if not isinstance(mask_clipping, (bool, np.bool_)):
        raise OptionTypeError(f"The 'mask_clipping' parameter must be True or False; got {mask_clipping!r}.")
    mini_batch_size = check_int("mini_batch_size", mini_batch_size, minimum=1)
    allow_long = check_allow_long(allow_long)
    _size_arg("mask_size", mask_size)
    _size_arg("stride", stride)
    resolve_fill("mask_value", mask_value, None, mean_word="auto")  # validate before the image work

    ctx = begin(model, image, label, execution_environment)
    pixels = ctx.pixels
    h, w = pixels.shape[:2]
    window = _resolve_size("mask_size", mask_size, (h, w), AUTO_MASK_FRACTION)
    step = _resolve_size("stride", stride, (h, w), AUTO_STRIDE_FRACTION)
    if window[0] > h or window[1] > w:
        raise OptionError(f"The 'mask_size' parameter must fit in the working image ({h} x {w}, the model's input "
                         f"size); got {window[0]} x {window[1]}.")
    fill = resolve_fill("mask_value", mask_value, pixels, mean_word="auto")

    timings = {"inference": 0.0, "masking": 0.0}
    t0 = time.perf_counter()
    base_scores = ctx.base_scores()
    timings["inference"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    row_starts = window_starts(h, window[0], step[0], bool(mask_clipping))
    col_starts = window_starts(w, window[1], step[1], bool(mask_clipping))
    rows = np.repeat(row_starts, len(col_starts))
    cols = np.tile(col_starts, len(row_starts))
    total = len(rows)
    check_work(model, f"mask_size={list(window)}, stride={list(step)} ({len(row_starts)} x {len(col_starts)} windows)",
               total, allow_long=allow_long, environment=ctx.environment)
    spec = model.spec_for(pixels.shape[:2])
    base = model.to_native(pixels[None])[0]
    fill_native = model.to_native(fill.reshape(1, 1, 1, 3)).reshape(3)
    slots = 2 if total > mini_batch_size else 1   # the next batch is written while the model runs (see stream)
    buffers: list[np.ndarray] = []     # filled below, for the time of the stream
    deltas = np.empty((total, len(ctx.labels)), dtype=np.float64)
    base64 = base_scores.astype(np.float64)
    labels = ctx.labels
    timings["masking"] += time.perf_counter() - t0

    def write(start: int, n: int, slot: int) -> np.ndarray:
        return occlude_batch(base, fill_native, rows[start:start + n], cols[start:start + n], window, spec.layout,
                             buffers[slot])

    def consume(start: int, n: int, scores: np.ndarray, slot: int) -> None:
        deltas[start:start + n] = base64 - scores[:, labels]

    with batch_buffers((min(mini_batch_size, total),) + base.shape, base.dtype, slots) as arrays:
        buffers.extend(arrays)
        stream(model, ctx.environment, total, mini_batch_size, write, consume, progress, timings,
               source=f"masked copies of {ctx.source}")

    t0 = time.perf_counter()
    sums = np.zeros((h, w, len(labels)), dtype=np.float64)
    counts = np.zeros((h, w), dtype=np.int64)
    accumulate_windows(deltas, rows, cols, window, sums, counts)
    maps = np.divide(sums, counts[..., None], out=np.zeros_like(sums), where=counts[..., None] > 0)
    timings["masking"] += time.perf_counter() - t0
    score_map = ctx.finish(maps.astype(np.float32), output_upsampling)
    position_map = deltas.astype(np.float32).reshape(len(row_starts), len(col_starts), len(labels))
    timings["total"] = time.perf_counter() - ctx.started
    params = {"mask_size": list(window), "stride": list(step), "mask_value": [float(v) for v in fill],
              "mask_clipping": bool(mask_clipping), "output_upsampling": output_upsampling,
              "mini_batch_size": mini_batch_size, "execution_environment": ctx.environment,
              "runtime": model.runtime(ctx.environment, since=ctx.started),
              "num_positions": [len(row_starts), len(col_starts)], "working_size": [h, w]}
    extras = {"position_map": position_map if ctx.multi else position_map[..., 0],
              "window_rows": row_starts, "window_cols": col_starts, "coverage": counts}
    return Explanation("occlusion", score_map, list(labels), list(ctx.label_names), base_scores.astype(np.float32),
                       params, extras, timings)


def window_starts(side: int, k: int, s: int, clipping: bool) -> np.ndarray:
    """Window start positions (int64) along one axis; see the module notes for the rule."""
    if not clipping:
        return np.arange(0, side - k + 1, s, dtype=np.int64)
    n = math.ceil((side - (k - k // 2)) / s) + 1
    starts = np.arange(n, dtype=np.int64) * s - k // 2
    return starts[starts < side]  # with stride > mask the last one can start past the edge: it occludes nothing


def _size_arg(name: str, value: Any) -> None:
    """Early type/range check of a size option ("auto", int or pair)."""
    if isinstance(value, str):
        if value != "auto":
            raise OptionError(f"The {name!r} parameter must be 'auto', an integer or an (h, w) pair; got {value!r}.")
        return
    check_pair(name, value, minimum=1)


def _resolve_size(name: str, value: Any, size: tuple[int, int], fraction: float) -> tuple[int, int]:
    """(h, w) of a size option; "auto" is ``fraction`` of each side, rounded half up, at least 1."""
    if isinstance(value, str):
        return tuple(max(1, math.floor(fraction * side + 0.5)) for side in size)  # type: ignore[return-value]
    return check_pair(name, value, minimum=1)
