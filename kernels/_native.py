"""The pixel -> native-input conversion every batch kernel fuses, as a plain-numpy reference.

``native[n, c] = cast(scale[c] * pixels[n, :, :, channel_source[c]] + offset[c])`` in
float32, laid out NCHW or NHWC; uint8 is rounded half to even and clipped to 0..255;
float16 is one ``astype`` of the float32 values. This is the same arithmetic, in the same
order, as ``onnxplain.model.Model.to_native`` (kernels do not import the engine).
"""
from __future__ import annotations

import numpy as np


def to_native_reference(pixels: np.ndarray, layout: str, dtype, channel_source: np.ndarray,
                        scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Convert a float32 (N, H, W, 3) pixel batch to the native input (N, 3, H, W) or (N, H, W, 3)."""
    x = pixels[..., channel_source] * scale.astype(np.float32) + offset.astype(np.float32)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    if np.dtype(dtype) == np.uint8:
        x = np.clip(np.rint(x), 0, 255)
    return np.ascontiguousarray(x, dtype=dtype)
