"""numba kernels for image LIME: native source images, synthetic batches, map painting.

Pipeline (see ``onnxplain.methods.lime``):

1. :func:`native_image` converts a float32 (h, w, 3) RGB pixel image into one native model
   input image (layout, channel order, affine preprocessing, uint8 rounding) written flat.
   It is run twice per explanation: on the working image ("on" source) and on the fill
   image ("off" source). Conversion is per pixel, so converting the two sources once and
   then selecting per feature equals selecting pixels first and converting every synthetic
   image (what :func:`synthetic_batch_reference` does), bit for bit.
2. :func:`synthetic_batch` writes a mini-batch of synthetic images straight into the
   model's native input buffer: for every sample and feature it copies that feature's
   native elements from the "on" or the "off" source. Features are stored CSR style
   (per-feature pixel lists, turned into per-feature runs of consecutive native
   elements): cost is proportional to pixels, not pixels x features, the copies are
   contiguous slices, and the layout lives in the runs, so the kernel is layout-agnostic.
   The buffer is reused across mini-batches and a per-slot ``state`` records which
   source each feature currently holds, so only changed features are rewritten.
3. :func:`paint` writes feature importances onto their pixels.

Every kernel has a plain-numpy reference (``*_reference``); tests compare them exactly.
Wrappers check dtype, shape and contiguity; kernels assume them.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["feature_csr", "element_csr", "element_runs", "native_image", "native_image_reference", "new_state",
           "synthetic_batch",
           "synthetic_batch_reference", "paint", "paint_reference"]


# ---- CSR feature index lists ---------------------------------------------------------------
def feature_csr(labels: np.ndarray, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature pixel lists of a flat label array: (ptr (F+1,) int64, index (P,) int64).

    Pixels of feature f are ``index[ptr[f]:ptr[f + 1]]``, in raster order.
    """
    flat = np.ascontiguousarray(labels, dtype=np.int64).ravel()
    if flat.size and (flat.min() < 0 or flat.max() >= num_features):
        raise ValueError(f"labels must lie in 0..{num_features - 1}; got {flat.min()}..{flat.max()}.")
    index = np.argsort(flat, kind="stable").astype(np.int64)
    ptr = np.zeros(num_features + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat, minlength=num_features), out=ptr[1:])
    return ptr, index


def element_csr(ptr: np.ndarray, index: np.ndarray, num_pixels: int, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixel CSR -> native element CSR (3 elements per pixel) for one image laid out as ``layout``.

    NCHW element of (channel c, pixel p) is ``c * P + p``; NHWC is ``p * 3 + c``.
    """
    counts = np.diff(ptr)
    feat = np.repeat(np.arange(len(counts), dtype=np.int64), counts)  # feature of each index entry
    c = np.arange(3, dtype=np.int64)
    if layout == "NCHW":
        elems = c[None, :] * num_pixels + index[:, None]
    elif layout == "NHWC":
        elems = index[:, None] * 3 + c[None, :]
    else:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC'; got {layout!r}.")
    # each feature's block is 3 * count long; inside it, NCHW goes channel by channel so
    # consecutive writes stay within one plane (NHWC: pixel by pixel, channels adjacent)
    key = (feat[:, None] * 3 + (c[None, :] if layout == "NCHW" else np.zeros((1, 3), np.int64))).ravel()
    elems = elems.ravel()[np.argsort(key, kind="stable")]
    return (ptr * 3).astype(np.int64), np.ascontiguousarray(elems)


def element_runs(ptr: np.ndarray, index: np.ndarray, num_pixels: int,
                 layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature runs of consecutive native elements: (run_ptr (F+1,), start (R,), length (R,)).

    Runs of feature f are ``run_ptr[f]:run_ptr[f + 1]``; run r covers native elements
    ``start[r] : start[r] + length[r]``. A row segment of a feature is one run per channel
    (NCHW) or one run of 3 x pixels (NHWC), so the batch kernel copies slices instead of
    gathering element by element.
    """
    eptr, elems = element_csr(ptr, index, num_pixels, layout)
    n = elems.size
    feat = np.repeat(np.arange(len(eptr) - 1, dtype=np.int64), np.diff(eptr))
    first = np.ones(n, dtype=bool)
    first[1:] = (np.diff(elems) != 1) | (feat[1:] != feat[:-1])
    pos = np.flatnonzero(first)
    length = np.diff(np.append(pos, n)).astype(np.int64)
    run_ptr = np.zeros(len(eptr), dtype=np.int64)
    np.cumsum(np.bincount(feat[pos], minlength=len(eptr) - 1), out=run_ptr[1:])
    return run_ptr, elems[pos].astype(np.int64), length


# ---- native conversion ----------------------------------------------------------------------
@njit(cache=True)
def _native_image_kernel(pixels, channel_source, scale, offset, nchw, quantize, out):
    """pixels (P, 3) f32 -> out (3P,) native layout; uint8 models: round half-even, clip."""
    n_pix = pixels.shape[0]
    for p in range(n_pix):
        for c in range(3):
            v = scale[c] * pixels[p, channel_source[c]] + offset[c]
            if quantize:
                v = min(max(np.rint(v), np.float32(0.0)), np.float32(255.0))
            if nchw:
                out[c * n_pix + p] = v
            else:
                out[p * 3 + c] = v


def native_image(pixels: np.ndarray, channel_source: np.ndarray, scale: np.ndarray, offset: np.ndarray,
                 layout: str, dtype: np.dtype) -> np.ndarray:
    """One float32 (h, w, 3) image -> flat native image (3*h*w,) in the kernel write dtype.

    The write dtype is uint8 for uint8 models and float32 otherwise (float16 models are
    written as float32 and cast once per batch: numba has no float16 arithmetic).
    """
    pixels = _check(pixels, np.float32, 3, "pixels")
    if pixels.shape[2] != 3:
        raise ValueError(f"pixels must be (h, w, 3); got {pixels.shape}.")
    quantize = np.dtype(dtype) == np.uint8
    out = np.empty(pixels.shape[0] * pixels.shape[1] * 3, dtype=np.uint8 if quantize else np.float32)
    cs = np.ascontiguousarray(channel_source, dtype=np.int64)
    _native_image_kernel(pixels.reshape(-1, 3), cs, np.ascontiguousarray(scale, dtype=np.float32),
                         np.ascontiguousarray(offset, dtype=np.float32), _nchw(layout), quantize, out)
    return out


def native_image_reference(pixels: np.ndarray, channel_source: np.ndarray, scale: np.ndarray,
                           offset: np.ndarray, layout: str, dtype: np.dtype) -> np.ndarray:
    """Numpy reference of :func:`native_image` (the same expression as ``Model.to_native``)."""
    x = pixels[..., np.asarray(channel_source)] * np.asarray(scale, np.float32) + np.asarray(offset, np.float32)
    if layout == "NCHW":
        x = x.transpose(2, 0, 1)
    if np.dtype(dtype) == np.uint8:
        return np.clip(np.rint(x), 0, 255).astype(np.uint8).ravel()
    return np.ascontiguousarray(x, dtype=np.float32).ravel()


# ---- synthetic batches ----------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _synthetic_batch_kernel(on, off, onoff, run_ptr, start, length, state, out):
    """out[n] = on over the runs of features on in onoff[n], else off; skip features whose
    state (what out[n] already holds) matches."""
    n_features = run_ptr.shape[0] - 1
    for n in prange(onoff.shape[0]):
        for f in range(n_features):
            want = onoff[n, f]
            if state[n, f] == want:
                continue
            src = on if want else off
            for r in range(run_ptr[f], run_ptr[f + 1]):
                s = start[r]
                e = s + length[r]
                out[n, s:e] = src[s:e]
            state[n, f] = want


def new_state(batch: int, num_features: int) -> np.ndarray:
    """A buffer state for :func:`synthetic_batch`: (B, F) uint8, all "unknown" (255)."""
    return np.full((batch, num_features), UNKNOWN, dtype=np.uint8)


UNKNOWN = 255


def synthetic_batch(on: np.ndarray, off: np.ndarray, onoff: np.ndarray, runs: tuple[np.ndarray, np.ndarray, np.ndarray],
                    out: np.ndarray, state: np.ndarray | None = None) -> np.ndarray:
    """Write ``len(onoff)`` synthetic native images into ``out`` (B, ...) and return it.

    Parameters
    ----------
    on, off : ndarray (E,)
        Flat native "on" and "off" images (from :func:`native_image`), same dtype as ``out``.
    onoff : ndarray uint8 (B, F)
        1 = feature kept, 0 = replaced by ``off``.
    runs : (run_ptr, start, length)
        From :func:`element_runs`; together they must cover every element exactly once.
    out : ndarray (B, ...) C-contiguous, dtype of ``on``
        Preallocated native batch buffer (any trailing shape with E elements per image).
    state : ndarray uint8 (>= B, F), optional
        What each slot of ``out`` holds per feature (0 off, 1 on, 255 unknown), updated in
        place. With a buffer reused across mini-batches only the features that changed
        are rewritten (half of them on average). None: write everything.
    """
    run_ptr, start, length = runs
    if on.dtype != out.dtype or off.dtype != out.dtype:
        raise TypeError(f"on/off/out dtypes differ: {on.dtype}, {off.dtype}, {out.dtype}.")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous.")
    if onoff.ndim != 2 or onoff.shape[0] != out.shape[0] or onoff.shape[1] != len(run_ptr) - 1:
        raise ValueError(f"onoff shape {onoff.shape} does not match out batch {out.shape[0]} and "
                         f"{len(run_ptr) - 1} features.")
    flat = out.reshape(out.shape[0], -1)
    covered = int(length.sum())
    if flat.shape[1] != on.size or on.size != off.size or covered != on.size:
        raise ValueError(f"element counts differ: out {flat.shape[1]}, on {on.size}, off {off.size}, "
                         f"runs {covered}.")
    if state is None:
        state = new_state(*onoff.shape)
    elif (state.dtype != np.uint8 or state.ndim != 2 or state.shape[0] < onoff.shape[0]
          or state.shape[1] != onoff.shape[1] or not state.flags.c_contiguous):
        raise ValueError(f"state must be C-contiguous uint8 (>= {onoff.shape[0]}, {onoff.shape[1]}); got "
                         f"{state.dtype} {state.shape}.")
    _synthetic_batch_kernel(on, off, np.ascontiguousarray(onoff, dtype=np.uint8), run_ptr, start, length,
                            state[:onoff.shape[0]], flat)
    return out


def synthetic_batch_reference(pixels: np.ndarray, fill: np.ndarray, labels: np.ndarray, onoff: np.ndarray,
                              channel_source: np.ndarray, scale: np.ndarray, offset: np.ndarray, layout: str,
                              dtype: np.dtype) -> np.ndarray:
    """Numpy reference: composite pixel images first, then convert to native (B, ...) ``dtype``.

    ``labels`` (h, w) feature per pixel; ``fill`` (h, w, 3) the "off" image.
    """
    keep = onoff.astype(bool)[:, labels]                          # (B, h, w)
    images = np.where(keep[..., None], pixels[None], fill[None])  # (B, h, w, 3) float32
    x = images[..., np.asarray(channel_source)] * np.asarray(scale, np.float32) + np.asarray(offset, np.float32)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    if np.dtype(dtype) == np.uint8:
        x = np.clip(np.rint(x), 0, 255)
    return np.ascontiguousarray(x, dtype=dtype)


# ---- painting -------------------------------------------------------------------------------
@njit(cache=True)
def _paint_kernel(importance, ptr, index, out):
    """out[p, :] = importance[f, :] for every pixel p of feature f."""
    for f in range(ptr.shape[0] - 1):
        for k in range(ptr[f], ptr[f + 1]):
            p = index[k]
            for j in range(importance.shape[1]):
                out[p, j] = importance[f, j]


def paint(importance: np.ndarray, ptr: np.ndarray, index: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Feature importances (F, K) float32 -> map (h, w, K) float32 via the pixel CSR."""
    importance = _check(importance, np.float32, 2, "importance")
    if importance.shape[0] != len(ptr) - 1:
        raise ValueError(f"importance has {importance.shape[0]} rows for {len(ptr) - 1} features.")
    n_pix = shape[0] * shape[1]
    if index.size != n_pix:
        raise ValueError(f"index covers {index.size} pixels; the map has {n_pix}.")
    out = np.empty((n_pix, importance.shape[1]), dtype=np.float32)
    _paint_kernel(importance, ptr, index, out)
    return out.reshape(shape[0], shape[1], importance.shape[1])


def paint_reference(importance: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Numpy reference of :func:`paint`: ``importance[labels]``."""
    return np.asarray(importance, dtype=np.float32)[labels]


# ---- helpers --------------------------------------------------------------------------------
def _check(a: np.ndarray, dtype, ndim: int, name: str) -> np.ndarray:
    """Validate ndim and return a C-contiguous array of ``dtype``."""
    a = np.asarray(a)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {a.shape}.")
    if a.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype)}; got {a.dtype}.")
    return np.ascontiguousarray(a)


def _nchw(layout: str) -> bool:
    """True for NCHW, False for NHWC."""
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC'; got {layout!r}.")
    return layout == "NCHW"
