"""Occlusion kernels: occluded batches in the model's native input, and map accumulation.

The unoccluded image is converted to the native input (layout, dtype, preprocessing) once,
outside these kernels. An occluded sample is then a copy of that native image with one
window overwritten by the fill value *already converted to native*: because preprocessing
is per-pixel and per-channel, this equals converting the occluded pixel image, bit for bit,
while touching only the window's elements with arithmetic-free copies. The copy kernel is
therefore dtype-agnostic; float16 arrays are handled as their uint16 bit patterns (numba
has no float16 type).

Window ``i`` covers rows ``rows[i] .. rows[i] + kh - 1`` and columns
``cols[i] .. cols[i] + kw - 1``; starts may be negative and windows may extend past the
image: only the part inside the image is written (clipped).

Each kernel has a plain-numpy reference (``*_reference``); tests compare them exactly.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._native import to_native_reference

_BITS = {np.dtype(np.float16): np.uint16}


# ---- occluded batch --------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _occlude(base, fill, rows, cols, kh, kw, h, w, nchw, out):  # pragma: no cover - compiled
    """out[i] = base with window i set to fill; images flattened to (3 * h * w,) in native order."""
    size = base.shape[0]
    for i in prange(rows.shape[0]):
        for j in range(size):
            out[i, j] = base[j]
        r0 = max(rows[i], 0)
        r1 = min(rows[i] + kh, h)
        c0 = max(cols[i], 0)
        c1 = min(cols[i] + kw, w)
        for y in range(r0, r1):
            for x in range(c0, c1):
                for c in range(3):
                    if nchw:
                        out[i, (c * h + y) * w + x] = fill[c]
                    else:
                        out[i, (y * w + x) * 3 + c] = fill[c]


def occlude_batch(base: np.ndarray, fill: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                  window: tuple[int, int], layout: str, out: np.ndarray) -> np.ndarray:
    """Write ``len(rows)`` occluded copies of ``base`` into ``out[:len(rows)]``; return that view.

    Parameters
    ----------
    base : ndarray (3, H, W) for "NCHW" or (H, W, 3) for "NHWC", native dtype, C-contiguous
        The unoccluded image as the model takes it.
    fill : ndarray (3,), same dtype as ``base``
        The fill value per model channel, already in native units.
    rows, cols : ndarray (n,), int64
        Window top-left corners (may be negative / overhang; windows are clipped).
    window : (kh, kw)
    layout : {"NCHW", "NHWC"}
    out : ndarray (N >= n, *base.shape), same dtype as ``base``, C-contiguous
    """
    n = len(rows)
    _check_batch(base, out, n, layout)
    if fill.shape != (3,) or fill.dtype != base.dtype:
        raise ValueError(f"fill must be (3,) {base.dtype}; got {fill.shape} {fill.dtype}")
    if len(cols) != n:
        raise ValueError(f"rows and cols differ in length ({n} vs {len(cols)})")
    view = out[:n]
    h, w = base.shape[1:] if layout == "NCHW" else base.shape[:2]
    bits = _BITS.get(base.dtype)
    b, f, o = (base, fill, view) if bits is None else (base.view(bits), fill.view(bits), view.view(bits))
    # flat 1-D/2-D views: numba compiles these several times faster than 3-D/4-D indexing
    _occlude(b.reshape(-1), f, np.ascontiguousarray(rows, dtype=np.int64), np.ascontiguousarray(cols, dtype=np.int64),
             int(window[0]), int(window[1]), int(h), int(w), layout == "NCHW", o.reshape(n, -1))
    return view


def occlude_batch_reference(pixels: np.ndarray, fill_pixels: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                            window: tuple[int, int], layout: str, dtype, channel_source: np.ndarray,
                            scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Reference: occlude the float32 (H, W, 3) *pixel* image window by window (fill in RGB
    pixel units), then convert the whole batch with :func:`to_native_reference`."""
    batch = np.repeat(pixels[None], len(rows), axis=0)
    h, w = pixels.shape[:2]
    for i, (r, c) in enumerate(zip(rows, cols)):
        batch[i, _span(r, window[0], h), _span(c, window[1], w), :] = fill_pixels
    return to_native_reference(batch, layout, dtype, channel_source, scale, offset)


# ---- accumulation ----------------------------------------------------------------------
@njit(cache=True)
def _accumulate(deltas, rows, cols, kh, kw, sums, counts):  # pragma: no cover - compiled
    """sums[y, x, :] += deltas[i] and counts[y, x] += 1 over window i's clipped pixels."""
    h, w, k = sums.shape
    for i in range(deltas.shape[0]):
        r0 = max(rows[i], 0)
        r1 = min(rows[i] + kh, h)
        c0 = max(cols[i], 0)
        c1 = min(cols[i] + kw, w)
        for y in range(r0, r1):
            for x in range(c0, c1):
                counts[y, x] += 1
                for j in range(k):
                    sums[y, x, j] += deltas[i, j]


def accumulate_windows(deltas: np.ndarray, rows: np.ndarray, cols: np.ndarray, window: tuple[int, int],
                       sums: np.ndarray, counts: np.ndarray) -> None:
    """Add each window's score change (deltas (n, K) float64) onto the pixels it covers.

    ``sums`` (H, W, K) float64 and ``counts`` (H, W) int64 are updated in place; the map is
    ``sums / counts`` where counts > 0.
    """
    if deltas.dtype != np.float64 or sums.dtype != np.float64 or counts.dtype != np.int64:
        raise ValueError("deltas and sums must be float64 and counts int64")
    if sums.ndim != 3 or counts.shape != sums.shape[:2] or deltas.shape[1] != sums.shape[2]:
        raise ValueError(f"shape mismatch: deltas {deltas.shape}, sums {sums.shape}, counts {counts.shape}")
    _accumulate(np.ascontiguousarray(deltas), np.ascontiguousarray(rows, dtype=np.int64),
                np.ascontiguousarray(cols, dtype=np.int64), int(window[0]), int(window[1]), sums, counts)


def accumulate_windows_reference(deltas, rows, cols, window, sums, counts) -> None:
    """Reference for :func:`accumulate_windows` with numpy slices, window by window."""
    h, w = counts.shape
    for i, (r, c) in enumerate(zip(rows, cols)):
        sl = (_span(r, window[0], h), _span(c, window[1], w))
        counts[sl] += 1
        sums[sl] += deltas[i]


def _span(start: int, k: int, side: int) -> slice:
    """The clipped slice of a window (never a negative index, which numpy would wrap)."""
    return slice(min(max(start, 0), side), min(max(start + k, 0), side))


def _check_batch(base: np.ndarray, out: np.ndarray, n: int, layout: str) -> None:
    """Shared shape/dtype/contiguity checks of the batch kernels."""
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC'; got {layout!r}")
    channel_axis = 0 if layout == "NCHW" else 2
    if base.ndim != 3 or base.shape[channel_axis] != 3:
        raise ValueError(f"base must be a single {layout} image with 3 channels; got shape {base.shape}")
    if out.dtype != base.dtype or out.shape[1:] != base.shape or out.shape[0] < n:
        raise ValueError(f"out must be (>= {n}, {base.shape}) {base.dtype}; got {out.shape} {out.dtype}")
    if not (base.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("base and out must be C-contiguous")
