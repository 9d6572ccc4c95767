"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko, BMVC 2018).

``num_masks`` random masks are drawn; each keeps the image where the mask is 1 and fades
to ``fill`` where it is 0. The saliency of a pixel is the expected score given the pixel's
mask value, ``E[f(I . M) M(x)] / p`` with ``p`` the keep probability (the paper's Eq. 6).

Estimators (``estimator``):

- ``"paper"``: the paper's Monte-Carlo sum ``S = sum_i s_i M_i / (N p)`` (its reference
  code's ``sal / N / p1``), reproduced exactly.
- ``"centered"`` (default): ``S = sum_i (s_i - s_mean) M_i / (N p) + s_mean`` with
  ``s_mean`` the mean score of the N masked images. Every mask pixel is a convex combination
  of Bernoulli(p) cells (bilinear upsampling of the grid, then a crop), so ``E[M_i(x)] = p``
  at every pixel and subtracting any constant c from the scores changes the sum's expectation
  by ``-c p / p`` and adding c back restores it: both estimators converge to the same map.
  The paper's sum carries the noise of ``s_mean * sum_i M_i / (N p)``, a speckle whose size
  is set by the mean score, not by where the class evidence is; the centred sum removes it
  (a control variate; using the sample mean adds an O(1/N) bias). Measured on the bundled
  model and the cat (``python -m bench.stability --convergence``,
  ``bench/results/convergence-rise-2026-11-29.md``: Spearman of the map with a 16000-mask
  reference): 500 masks 0.89 centred vs 0.26 paper, 1000 masks 0.93 vs 0.39, 2000 masks
  0.96 vs 0.67.

Masks (the reference code's ``generate_masks``): a binary ``cell_size`` grid, each cell
kept with probability ``p``, is upsampled bilinearly to ``(cell_size + 1) * ceil(H /
cell_size)`` pixels per side and cropped to ``H x W`` at a random shift in
``[0, ceil(H / cell_size))`` per axis (see :mod:`kernels.rise` for the exact interpolation).

Fill: the reference code multiplies the *normalised* input tensor by the mask, so masked
pixels become 0 in the network's input space, i.e. the normalisation mean colour (for
ImageNet preprocessing, (123.675, 116.28, 103.53) in 0..255 pixels), not black. Because
preprocessing differs between models, the default here is the image's own per-channel mean
(``fill="mean"``, the same choice as occlusion's and LIME's MATLAB default); ``"zero"``
gives black (0 in pixel units), and a number or (R, G, B) gives any pixel value, e.g. the
dataset mean to reproduce the reference code exactly.

Masks are generated as they are needed (memory does not grow with ``num_masks``), in
blocks of :data:`DRAW_BLOCK` (64) masks whatever the mini-batch size: per block the
Generator draws the grids (``random((64, gh, gw)) < p``), then the row shifts, then the
column shifts (``integers(0, ch, 64)``, ``integers(0, cw, 64)``). Mask ``i`` therefore
depends only on the seed and ``i``: the same seed gives the same masks, and the same map up
to ONNX Runtime's batch-size rounding, at any ``mini_batch_size`` (and the first ``n`` masks
of a longer run are the masks of an ``n``-mask run). Saliency sums run in mask order in
float64.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from onnxplain.kernels.rise import accumulate_saliency, apply_masks, make_masks, upsample_table

from ..errors import OptionError
from .._validation import as_generator, check_choice, check_float, check_int, check_pair, describe_seed, shared_names
from ..model import Model
from ..result import Explanation
from ._limits import check_allow_long, check_work
from .context import begin
from ._masking import batch_buffers, resolve_fill, stream

UPSAMPLING = ("bilinear", "bicubic", "nearest", "none")
ESTIMATORS = ("centered", "paper")
#: masks drawn per Generator call, independent of the mini-batch size (see the module notes)
DRAW_BLOCK = 64


class MaskDraws:
    """The random grids and shifts of masks 0, 1, 2, ... drawn in fixed blocks of DRAW_BLOCK.

    ``take(n)`` returns the next ``n`` masks' grids (n, gh, gw) float32 and shifts (n, 2) int64.
    """

    def __init__(self, rng: np.random.Generator, grid: tuple[int, int], p: float, cell: tuple[int, int]) -> None:
        self.rng, self.grid, self.p, self.cell = rng, grid, p, cell
        self.grids = np.empty((0, *grid), np.float32)
        self.shifts = np.empty((0, 2), np.int64)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        while len(self.grids) < n:
            b = DRAW_BLOCK
            grids = (self.rng.random((b, *self.grid)) < self.p).astype(np.float32)
            shifts = np.stack([self.rng.integers(0, self.cell[0], b), self.rng.integers(0, self.cell[1], b)], axis=1)
            self.grids = np.concatenate([self.grids, grids])
            self.shifts = np.concatenate([self.shifts, shifts.astype(np.int64)])
        grids, shifts = self.grids[:n], self.shifts[:n]
        self.grids, self.shifts = self.grids[n:], self.shifts[n:]
        return grids, shifts


@shared_names
def rise(model: Model, image: Any, label: Any = None, *, num_masks: int = 4000, cell_size: Any = 7,
         keep_probability: float = 0.5, fill: Any = "mean", output_upsampling: str = "bilinear",
         mini_batch_size: int = 128, estimator: str = "centered", random_state: Any = None,
         execution_environment: str | None = None,
         progress: Callable[[int, int], None] | None = None, allow_long: bool = False) -> Explanation:
    """RISE saliency map of ``label`` for ``image``.

    Parameters
    ----------
    model : Model
    image : path or ndarray (H, W[, C])
    label : int, str, list of those, or None
        Class index or name; a list explains several classes from the same masks (maps get
        a trailing K axis); None explains the top class.
    num_masks : int
        Number of random masks N (the paper uses 4000 for ResNet50 / 8000 for VGG16).
    cell_size : int or (int, int)
        Grid size s (cells per side) of the random binary masks, >= 2 (paper: 7).
    keep_probability : float in (0, 1]
        Probability p that a cell is kept (paper: 0.5).
    fill : "mean", "zero", number or (R, G, B)
        What masked-out pixels fade to, in image pixel units; see the module notes.
    output_upsampling : {"bilinear", "bicubic", "nearest", "none"}
        Resize of the working-resolution map to the image size; "none" keeps (h, w).
    mini_batch_size : int
        Masked images per model call (and masks held in memory at a time).
    estimator : {"centered", "paper"}
        ``"centered"`` subtracts the mean score before summing and adds it back (same
        expectation, far less noise; module notes); ``"paper"`` is the reference code's sum.
    random_state : int, Generator or None
        Same seed -> identical output.
    execution_environment : {"auto", "cpu", "gpu"}, optional
    progress : callable(done, total), optional
    allow_long : bool
        Run more than the work bound of 100,000 masks (see ``onnxplain.methods._limits``).

    Returns
    -------
    Explanation
        ``score_map`` float32 (H, W) or (H, W, K) (scores are the model's outputs, e.g.
        probabilities for a model ending in Softmax); ``scores`` float32 (K,);
        timings "inference", "masking", "total".

    Raises
    ------
    ValueError
        ``num_masks`` < 1, ``cell_size`` < 2 or larger than the working image,
        ``keep_probability`` outside (0, 1], unknown ``output_upsampling`` or ``estimator``,
        bad ``fill``.
    """
    num_masks = check_int("num_masks", num_masks, minimum=1)
    grid = check_pair("cell_size", cell_size, minimum=2)
    p = check_float("keep_probability", keep_probability, minimum=0.0, maximum=1.0, strict_minimum=True)
    check_choice("output_upsampling", output_upsampling, UPSAMPLING)
    check_choice("estimator", estimator, ESTIMATORS)
    mini_batch_size = check_int("mini_batch_size", mini_batch_size, minimum=1)
    rng = as_generator(random_state)
    resolve_fill("fill", fill, None, mean_word="mean")  # validate before the image work
    check_work(model, f"num_masks={num_masks:,}", num_masks, allow_long=check_allow_long(allow_long),
               environment=execution_environment)

    ctx = begin(model, image, label, execution_environment)
    pixels = ctx.pixels
    h, w = pixels.shape[:2]
    if grid[0] > h or grid[1] > w:
        raise OptionError(f"The 'cell_size' parameter must not exceed the working image ({h} x {w}); got "
                         f"{grid[0]} x {grid[1]}.")
    fill_rgb = resolve_fill("fill", fill, pixels, mean_word="mean")

    timings = {"inference": 0.0, "masking": 0.0}
    t0 = time.perf_counter()
    base_scores = ctx.base_scores()
    timings["inference"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    cell = (math.ceil(h / grid[0]), math.ceil(w / grid[1]))
    table_y = upsample_table((grid[0] + 1) * cell[0], grid[0])
    table_x = upsample_table((grid[1] + 1) * cell[1], grid[1])
    spec = model.spec_for(pixels.shape[:2])
    b = min(mini_batch_size, num_masks)
    slots = 2 if num_masks > b else 1     # the next batch is written while the model runs (see stream)
    masks: list[np.ndarray] = []         # batch buffers, filled below for the time of the stream
    out: list[np.ndarray] = []
    scratch = np.empty(spec.native_shape(b), dtype=np.float32) if spec.dtype == np.float16 else None
    sal = np.zeros((h, w, len(ctx.labels)), dtype=np.float64)
    mask_sum = np.zeros((h, w), dtype=np.float64)
    score_sum = np.zeros(len(ctx.labels), dtype=np.float64)
    labels = ctx.labels
    timings["masking"] += time.perf_counter() - t0

    draws = MaskDraws(rng, grid, p, cell)

    def write(start: int, n: int, slot: int) -> np.ndarray:
        grids, shifts = draws.take(n)
        m = make_masks(grids, shifts, table_y, table_x, masks[slot])
        return apply_masks(pixels, m, fill_rgb, spec.layout, spec.channel_source, spec.scale, spec.offset, out[slot],
                           scratch)

    def consume(start: int, n: int, scores: np.ndarray, slot: int) -> None:
        picked = scores[:, labels]
        accumulate_saliency(masks[slot][:n], picked, sal)
        if estimator == "centered":
            np.add(mask_sum, masks[slot][:n].sum(axis=0, dtype=np.float64), out=mask_sum)
            np.add(score_sum, picked.sum(axis=0, dtype=np.float64), out=score_sum)

    with batch_buffers((b, h, w), np.float32, slots) as m, batch_buffers(spec.native_shape(b), spec.dtype, slots) as o:
        masks.extend(m)
        out.extend(o)
        stream(model, ctx.environment, num_masks, mini_batch_size, write, consume, progress, timings,
               source=f"masked copies of {ctx.source}")
    if estimator == "centered":  # sum_i (s_i - mean) M_i / (N p) + mean (module notes)
        mean = score_sum / num_masks
        saliency = ((sal - mask_sum[..., None] * mean) / (num_masks * p) + mean).astype(np.float32)
    else:
        saliency = (sal / (num_masks * p)).astype(np.float32)
    score_map = ctx.finish(saliency, output_upsampling)
    timings["total"] = time.perf_counter() - ctx.started
    params = {"num_masks": num_masks, "cell_size": list(grid), "keep_probability": p,
              "fill": [float(v) for v in fill_rgb], "fill_rule": fill if isinstance(fill, str) else "value",
              "output_upsampling": output_upsampling, "mini_batch_size": mini_batch_size, "estimator": estimator,
              "execution_environment": ctx.environment,
              "runtime": model.runtime(ctx.environment, since=ctx.started), "random_state": describe_seed(random_state),
              "working_size": [h, w], "cell_pixels": list(cell)}
    return Explanation("rise", score_map, list(labels), list(ctx.label_names), base_scores.astype(np.float32),
                       params, {}, timings)
