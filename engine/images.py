"""Image input: reading, canonical form, and the size rule.

Canonical form: float32 array (H, W, 3), RGB, values in the image's own units (uint8
images become 0..255 floats; float images are used as given, in the units the model's
preprocessing declares).

Conversion rules (stated once, applied everywhere):

- grayscale (H, W) or (H, W, 1): the single channel is repeated into R, G and B;
- RGBA (H, W, 4): the alpha channel is dropped (colour values are used as stored);
- files are read with Pillow and converted to RGB by the same rules (palette images via RGB);
- integer arrays other than uint8, complex/bool arrays, other shapes, and any NaN/inf
  pixel are errors.

Size rule: methods resize the image to the model's input size (bilinear, on the float
image) to compute, and return maps at the size of the image they were given.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import ImageError


def load_image(image: Any, *, name: str = "image") -> np.ndarray:
    """Return the canonical float32 (H, W, 3) RGB form of a path or an array.

    Raises
    ------
    ImageError
        If the file cannot be read, or the array has an unsupported shape/dtype or NaN/inf.
    """
    if isinstance(image, (str, os.PathLike)):
        return _read_file(os.fspath(image))
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{name} must be a file path or a numpy array (H, W, 3); got {type(image).__name__}.")
    arr = image
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.complexfloating) or arr.dtype.kind not in "uif":
        raise ImageError(f"{name} has dtype {arr.dtype}; expected uint8 or a float dtype.")
    if arr.dtype.kind in "ui" and arr.dtype != np.uint8:
        raise ImageError(f"{name} has integer dtype {arr.dtype}; expected uint8 (0..255) or a float dtype.")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ImageError(f"{name} has shape {image.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).")
    if arr.shape[2] not in (1, 3, 4):
        hint = " (channels-first arrays must be transposed to H x W x C)" if arr.shape[0] in (1, 3, 4) else ""
        raise ImageError(f"{name} has shape {image.shape}; expected H x W x C with C in 1, 3 or 4{hint}.")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ImageError(f"{name} has shape {image.shape}; an image needs at least 2 x 2 pixels.")
    rgb = _to_rgb(arr)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(rgb)):
        bad = np.argwhere(~np.isfinite(rgb))[0]
        raise ImageError(f"{name} contains NaN or inf pixels (first at row {bad[0]}, column {bad[1]}, channel {bad[2]}).")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4 and np.abs(rgb).max() > np.finfo(np.float32).max:
        bad = np.argwhere(np.abs(rgb) > np.finfo(np.float32).max)[0]
        raise ImageError(f"{name} has pixels beyond the float32 range (first at row {bad[0]}, column {bad[1]}, "
                         f"channel {bad[2]}); expected values in the units the preprocessing declares.")
    return np.ascontiguousarray(rgb, dtype=np.float32)


def describe_image(image: Any) -> str:
    """A short name for an image in messages: the file name, or the array's shape and dtype."""
    if isinstance(image, (str, os.PathLike)):
        return f"image file {os.fspath(image)!r}"
    if isinstance(image, np.ndarray):
        return f"image array {tuple(image.shape)} {image.dtype}"
    return f"image {type(image).__name__}"


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        return arr[:, :, :3]
    return arr


def _read_file(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not os.path.exists(path):
        raise ImageError(f"image file {path!r} does not exist.")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I", "F"):
                raise ImageError(f"image file {path!r} has Pillow mode {im.mode!r}; expected an 8-bit image "
                                 "(L, RGB, RGBA, P); load it yourself and pass a float array.")
            if im.mode not in ("L", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            arr = np.asarray(im)
    except UnidentifiedImageError:
        raise ImageError(f"image file {path!r} is not an image Pillow can read.") from None
    except OSError as exc:
        raise ImageError(f"image file {path!r} cannot be read: {exc}") from None
    return load_image(arr, name=f"image file {path!r}")


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 (H, W, C) image to ``size`` = (H, W); unchanged if equal.

    Downsizing uses anti-aliasing (a Gaussian pre-filter) so thin structures do not alias.
    """
    if tuple(image.shape[:2]) == tuple(size):
        return image
    from skimage.transform import resize

    anti = size[0] < image.shape[0] or size[1] < image.shape[1]
    out = resize(image, (size[0], size[1], image.shape[2]), order=1, mode="edge", anti_aliasing=anti,
                 preserve_range=True)
    return np.ascontiguousarray(out, dtype=np.float32)


def resize_map(score_map: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """Resize a (h, w) or (h, w, K) map to ``size`` with "nearest", "bilinear" or "bicubic".

    Values are raw (no clipping to the input range): bicubic may overshoot, as MATLAB's imresize.
    """
    if tuple(score_map.shape[:2]) == tuple(size):
        return score_map.astype(np.float32, copy=False)
    from skimage.transform import resize

    order = {"nearest": 0, "bilinear": 1, "bicubic": 3}[method]
    shape = tuple(size) + tuple(score_map.shape[2:])
    out = resize(score_map.astype(np.float64), shape, order=order, mode="edge", anti_aliasing=False,
                 preserve_range=True, clip=False)
    return out.astype(np.float32)
