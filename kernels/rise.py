"""RISE kernels: random masks, masked batches in the model's native input, saliency sums.

Masks follow Petsiuk et al. 2018 and their reference code (eclique/RISE,
``generate_masks``): a binary ``gh x gw`` grid is upsampled bilinearly to
``((gh + 1) * ch, (gw + 1) * cw)`` with ``ch = ceil(H / gh)``, ``cw = ceil(W / gw)``, and an
``H x W`` crop starting at a random shift ``(dy, dx)`` in ``[0, ch) x [0, cw)`` is the mask.
The upsampling is that of ``skimage.transform.resize(order=1, mode="reflect",
anti_aliasing=False)``: half-pixel centres, ``src = (u + 0.5) * n_in / n_out - 0.5``,
mirrored about the first and last grid cell outside the grid. Only the cropped part is
ever computed, from per-axis (index, weight) tables built once per call
(:func:`upsample_table`).

A masked sample is ``pixel * m + (1 - m) * fill`` per pixel and channel (float32), converted
to the native input (layout, channel order, ``scale * v + offset``, dtype) in the same pass.
float16 inputs are written as float32 into a scratch buffer and cast in one vectorised
``copyto`` (numba has no float16 arithmetic).

Each kernel has a plain-numpy reference (``*_reference``) with the same operation order;
tests compare them exactly.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._native import to_native_reference


# ---- upsampling tables -----------------------------------------------------------------
def upsample_table(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per output coordinate: the two source indices (int64) and their weights (float32).

    Linear interpolation from ``n_in`` cells to ``n_out`` samples with half-pixel centres and
    mirror reflection (skimage ``mode="reflect"``); ``n_in >= 2``.
    """
    if n_in < 2 or n_out < 1:
        raise ValueError(f"upsample_table needs n_in >= 2 and n_out >= 1; got n_in={n_in}, n_out={n_out}")
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.where(src < 0, -src, src)
    src = np.where(src > n_in - 1, 2.0 * (n_in - 1) - src, src)
    i0 = np.floor(src).astype(np.int64)
    t = src - i0
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (1.0 - t).astype(np.float32), t.astype(np.float32)


# ---- masks -----------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _masks(grids, gw, shifts, iy0, iy1, wy0, wy1, ix0, ix1, wx0, wx1, h, w, out):  # pragma: no cover
    """out[i, y * w + x] = bilinear upsampled grid i at (y + dy_i, x + dx_i); grids (n, gh * gw)."""
    for i in prange(out.shape[0]):
        dy = shifts[i, 0]
        dx = shifts[i, 1]
        for y in range(h):
            u = y + dy
            a0 = iy0[u] * gw
            a1 = iy1[u] * gw
            p0 = wy0[u]
            p1 = wy1[u]
            for x in range(w):
                v = x + dx
                b0 = ix0[v]
                b1 = ix1[v]
                q0 = wx0[v]
                q1 = wx1[v]
                top = q0 * grids[i, a0 + b0] + q1 * grids[i, a0 + b1]
                bottom = q0 * grids[i, a1 + b0] + q1 * grids[i, a1 + b1]
                out[i, y * w + x] = p0 * top + p1 * bottom


def make_masks(grids: np.ndarray, shifts: np.ndarray, table_y, table_x, out: np.ndarray) -> np.ndarray:
    """Upsample and crop ``len(grids)`` masks into ``out[:n]`` (float32 (N, H, W)); return that view.

    Parameters
    ----------
    grids : ndarray (n, gh, gw) float32 of 0/1
    shifts : ndarray (n, 2) int64, (dy, dx) crop offsets into the upsampled grid
    table_y, table_x : the :func:`upsample_table` of each axis (length >= H + max dy, W + max dx)
    out : ndarray (N >= n, H, W) float32, C-contiguous
    """
    n = len(grids)
    if grids.dtype != np.float32 or grids.ndim != 3:
        raise ValueError(f"grids must be (n, gh, gw) float32; got {grids.shape} {grids.dtype}")
    if shifts.shape != (n, 2):
        raise ValueError(f"shifts must be ({n}, 2); got {shifts.shape}")
    if out.dtype != np.float32 or out.ndim != 3 or out.shape[0] < n or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous (>= {n}, H, W) float32; got {out.shape} {out.dtype}")
    h, w = out.shape[1:]
    if n and (shifts[:, 0].max() + h > len(table_y[0]) or shifts[:, 1].max() + w > len(table_x[0])
              or shifts.min() < 0):
        raise ValueError("shifts reach outside the upsampled grid")
    view = out[:n]
    _masks(np.ascontiguousarray(grids).reshape(n, -1), grids.shape[2], np.ascontiguousarray(shifts, dtype=np.int64),
           *table_y, *table_x, h, w, view.reshape(n, -1))
    return view


def make_masks_reference(grids, shifts, table_y, table_x, h: int, w: int) -> np.ndarray:
    """Reference for :func:`make_masks`, vectorised per mask."""
    out = np.empty((len(grids), h, w), dtype=np.float32)
    for i, (g, (dy, dx)) in enumerate(zip(grids, shifts)):
        iy0, iy1, wy0, wy1 = (a[dy:dy + h] for a in table_y)
        ix0, ix1, wx0, wx1 = (a[dx:dx + w] for a in table_x)
        top = wx0 * g[iy0][:, ix0] + wx1 * g[iy0][:, ix1]
        bottom = wx0 * g[iy1][:, ix0] + wx1 * g[iy1][:, ix1]
        out[i] = wy0[:, None] * top + wy1[:, None] * bottom
    return out


# ---- masked batch ----------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _apply(pixels, masks, fill, channel_source, scale, offset, nchw, quantize, out):  # pragma: no cover
    """out[i] = native(pixels * m_i + (1 - m_i) * fill); pixels (P * 3,), masks (n, P), out (n, 3 * P)."""
    n, size = masks.shape
    one = np.float32(1.0)
    lo = np.float32(0.0)
    hi = np.float32(255.0)
    for i in prange(n):
        for p in range(size):
            m = masks[i, p]
            inv = one - m
            for c in range(3):
                s = channel_source[c]
                v = pixels[p * 3 + s] * m + inv * fill[s]
                z = scale[c] * v + offset[c]
                if quantize:
                    z = min(max(np.rint(z), lo), hi)
                if nchw:
                    out[i, c * size + p] = z
                else:
                    out[i, p * 3 + c] = z


def apply_masks(pixels: np.ndarray, masks: np.ndarray, fill: np.ndarray, layout: str, channel_source: np.ndarray,
                scale: np.ndarray, offset: np.ndarray, out: np.ndarray,
                scratch: np.ndarray | None = None) -> np.ndarray:
    """Write the masked images of ``masks`` into ``out[:n]`` in native layout/dtype; return that view.

    Parameters
    ----------
    pixels : ndarray (H, W, 3) float32, RGB pixel units
    masks : ndarray (n, H, W) float32
    fill : ndarray (3,) float32, RGB pixel units
    layout : {"NCHW", "NHWC"}
    channel_source : ndarray (3,) int64; scale, offset : ndarray (3,) float32 (model channel order)
    out : ndarray (N >= n, 3, H, W) or (N >= n, H, W, 3); float32, uint8 or float16
    scratch : float32 array shaped like ``out``; required for float16 ``out``
    """
    n, h, w = masks.shape
    if pixels.shape != (h, w, 3) or pixels.dtype != np.float32 or masks.dtype != np.float32:
        raise ValueError(f"pixels must be ({h}, {w}, 3) float32 and masks float32; got {pixels.shape} "
                         f"{pixels.dtype}, {masks.dtype}")
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC'; got {layout!r}")
    shape = (3, h, w) if layout == "NCHW" else (h, w, 3)
    if out.shape[1:] != shape or out.shape[0] < n or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous (>= {n}, {shape}); got {out.shape}")
    target = out
    if out.dtype == np.float16:
        if scratch is None or scratch.dtype != np.float32 or scratch.shape[1:] != shape or scratch.shape[0] < n:
            raise ValueError("float16 output needs a float32 scratch buffer of the same shape")
        target = scratch
    elif out.dtype not in (np.float32, np.uint8):
        raise ValueError(f"out dtype must be float32, float16 or uint8; got {out.dtype}")
    _apply(np.ascontiguousarray(pixels).reshape(-1), np.ascontiguousarray(masks).reshape(n, -1),
           np.asarray(fill, dtype=np.float32), np.asarray(channel_source, dtype=np.int64),
           np.asarray(scale, dtype=np.float32), np.asarray(offset, dtype=np.float32), layout == "NCHW",
           out.dtype == np.uint8, target[:n].reshape(n, -1))
    if target is not out:
        np.copyto(out[:n], target[:n], casting="unsafe")
    return out[:n]


def apply_masks_reference(pixels, masks, fill, layout, channel_source, scale, offset, dtype) -> np.ndarray:
    """Reference for :func:`apply_masks`: numpy masking, then :func:`to_native_reference`."""
    m = masks[..., None]
    masked = pixels[None] * m + (np.float32(1.0) - m) * np.asarray(fill, dtype=np.float32)
    return to_native_reference(masked, layout, dtype, channel_source, scale, offset)


# ---- saliency accumulation -------------------------------------------------------------
@njit(cache=True, parallel=True)
def _accumulate(masks, scores, sal):  # pragma: no cover - compiled
    """sal[p, k] += sum_i scores[i, k] * masks[i, p], summed in i order; masks (n, P), sal (P, K)."""
    n, size = masks.shape
    kk = scores.shape[1]
    chunk = 1024
    for start in prange((size + chunk - 1) // chunk):
        stop = min(size, (start + 1) * chunk)
        for i in range(n):
            for p in range(start * chunk, stop):
                m = np.float64(masks[i, p])
                for k in range(kk):
                    sal[p, k] += scores[i, k] * m


def accumulate_saliency(masks: np.ndarray, scores: np.ndarray, sal: np.ndarray) -> None:
    """Add ``sum_i scores[i, k] * masks[i]`` to ``sal`` (H, W, K) float64 in place.

    ``masks`` (n, H, W) float32; ``scores`` (n, K) (used as float64).
    """
    n, h, w = masks.shape
    if sal.dtype != np.float64 or sal.shape[:2] != (h, w) or scores.shape != (n, sal.shape[2]):
        raise ValueError(f"shape mismatch: masks {masks.shape}, scores {scores.shape}, sal {sal.shape} {sal.dtype}")
    if not sal.flags.c_contiguous:
        raise ValueError("sal must be C-contiguous")
    _accumulate(np.ascontiguousarray(masks, dtype=np.float32).reshape(n, -1),
                np.ascontiguousarray(scores, dtype=np.float64), sal.reshape(h * w, -1))


def accumulate_saliency_reference(masks, scores, sal) -> None:
    """Reference for :func:`accumulate_saliency`, mask by mask."""
    s = scores.astype(np.float64)
    for i in range(len(masks)):
        sal += masks[i].astype(np.float64)[..., None] * s[i]
