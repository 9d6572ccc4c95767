"""Deletion / insertion batches (Petsiuk et al. 2018) written straight into a model's native input.

Image ``b`` of a batch takes, for every pixel ``p``, the value of ``other`` when
``rank[p] < counts[b]`` (the pixel is among the ``counts[b]`` most salient ones) and the
value of ``base`` otherwise:

- deletion: ``base`` = the image, ``other`` = the substrate (zeros, mean, blur);
- insertion: ``base`` = the substrate, ``other`` = the image.

The blended pixel is mapped to the model's native input as in
:meth:`onnxplain.model.Model.to_native`: ``native[c] = scale[c] * pixel[channel_source[c]] + offset[c]``
in float32, laid out NCHW or NHWC; uint8 inputs are rounded half-to-even and clipped to
0..255; float16 inputs are written in float32 and converted with one ``astype`` (numba has
no float16 arithmetic). :func:`perturbation_batch_reference` is the plain-numpy reference
that the tests compare exactly.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._native import to_native_reference

__all__ = ["rank_from_map", "perturbation_batch", "perturbation_batch_reference"]


@njit(parallel=True, cache=True)
def _blend_native(base, other, rank, counts, channel_source, scale, offset, nchw, quantize, out):  # pragma: no cover - numba
    """Kernel: out[b] = native(other where rank < counts[b] else base); see the module docstring."""
    h, w = base.shape[0], base.shape[1]
    for b in prange(counts.shape[0]):
        k = counts[b]
        for i in range(h):
            for j in range(w):
                src = other if rank[i * w + j] < k else base
                for c in range(3):
                    v = scale[c] * src[i, j, channel_source[c]] + offset[c]
                    if quantize:
                        v = min(max(np.rint(v), np.float32(0.0)), np.float32(255.0))
                    if nchw:
                        out[b, c, i, j] = v
                    else:
                        out[b, i, j, c] = v


def rank_from_map(score_map: np.ndarray) -> np.ndarray:
    """Rank of each pixel (int64, (h*w,)): 0 for the largest map value; ties in raster order."""
    order = np.argsort(-np.asarray(score_map, dtype=np.float64).ravel(), kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size, dtype=np.int64)
    return rank


def _check(base: np.ndarray, other: np.ndarray, rank: np.ndarray, counts: np.ndarray, spec) -> None:
    for name, arr in (("base", base), ("other", other)):
        if arr.dtype != np.float32 or arr.ndim != 3 or arr.shape[2] != 3 or not arr.flags.c_contiguous:
            raise ValueError(f"{name} must be a C-contiguous float32 (h, w, 3) array; got {arr.dtype} {arr.shape}.")
    if base.shape != other.shape:
        raise ValueError(f"base and other must have the same shape; got {base.shape} and {other.shape}.")
    if tuple(base.shape[:2]) != tuple(spec.size):
        raise ValueError(f"the images are {base.shape[:2]} but the model input is {tuple(spec.size)}.")
    if rank.dtype != np.int64 or rank.shape != (base.shape[0] * base.shape[1],):
        raise ValueError(f"rank must be int64 of shape ({base.shape[0] * base.shape[1]},); got {rank.dtype} {rank.shape}.")
    if counts.dtype != np.int64 or counts.ndim != 1:
        raise ValueError(f"counts must be a 1-D int64 array; got {counts.dtype} {counts.shape}.")


def perturbation_batch(base: np.ndarray, other: np.ndarray, rank: np.ndarray, counts: np.ndarray, spec) -> np.ndarray:
    """Native input batch (len(counts), ...) in ``spec``'s layout and dtype (numba kernel).

    ``spec`` is an :class:`onnxplain.model.InputSpec`.
    """
    _check(base, other, rank, counts, spec)
    quantize = np.dtype(spec.dtype) == np.uint8
    out = np.empty(spec.native_shape(len(counts)), dtype=np.uint8 if quantize else np.float32)
    _blend_native(base, other, rank, counts, np.ascontiguousarray(spec.channel_source, np.int64),
                  np.ascontiguousarray(spec.scale, np.float32), np.ascontiguousarray(spec.offset, np.float32),
                  spec.layout == "NCHW", quantize, out)
    return out.astype(np.float16) if np.dtype(spec.dtype) == np.float16 else out


def perturbation_batch_reference(base: np.ndarray, other: np.ndarray, rank: np.ndarray, counts: np.ndarray,
                                 spec) -> np.ndarray:
    """Plain-numpy reference of :func:`perturbation_batch` (same arithmetic, float32)."""
    _check(base, other, rank, counts, spec)
    h, w = base.shape[:2]
    take = (rank[None, :] < counts[:, None]).reshape(len(counts), h, w, 1)
    pixels = np.where(take, other[None], base[None])
    return to_native_reference(pixels, spec.layout, spec.dtype, np.asarray(spec.channel_source),
                               np.asarray(spec.scale), np.asarray(spec.offset))
