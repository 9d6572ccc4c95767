"""Image input: reading, canonical form, and the size rule.

Canonical form: float32 array (H, W, 3), RGB, values in the image's own units (uint8
images become 0..255 floats; float images are used as given, in the units the model's
preprocessing declares).

Conversion rules (stated once, applied everywhere):

- grayscale (H, W) or (H, W, 1): the single channel is repeated into R, G and B;
- RGBA (H, W, 4): the alpha channel is dropped (colour values are used as stored);
- files are read with Pillow and converted to RGB by the same rules (palette images via RGB);
  the EXIF orientation is applied (what a photo viewer shows is what is explained); of an
  animated image (GIF, APNG, WebP) the first frame is used, with an :class:`OnnxplainWarning`;
- integer arrays other than uint8, complex/bool arrays, other shapes, and any NaN/inf
  pixel are errors; so are truncated or corrupt files and decompression bombs.

Size rule: methods resize the image to the model's input size (bilinear, on the float
image) to compute, and return maps at the size of the image they were given.

Bounded memory for any image size:

- A file with more than ``max_pixels`` pixels (default :data:`MAX_PIXELS`, 100 megapixels;
  ``load_model(max_image_pixels=...)`` / CLI ``--max-pixels`` raise it) is refused with an
  ImageError naming its size, before it is decoded.
- Images are reduced while decoding: JPEG with Pillow's ``draft`` (DCT scaling by 1/2, 1/4,
  1/8: the full-size image is never in memory), other formats with ``Image.reduce`` right
  after decoding (the decoded 8-bit image, 4 bytes per pixel, is the peak: ~400 MB at the
  100 MP limit). Arrays are reduced by block means in row strips.
- Map cap: an image with more than :data:`MAX_MAP_PIXELS` (2**24, 16.8 MP, e.g. 4096 x 4096)
  pixels is reduced by the smallest integer factor that brings it within the cap, and that
  reduced image is the one explained: maps come back at its size (not at the original size,
  which would be a 576 MB float32 map for a 12000 x 12000 image). An OnnxplainWarning says so.
- For computing, an image more than twice the working (model input) size is first reduced by
  the largest integer factor that keeps it at least twice the working size (box average;
  JPEG: DCT scaling), then resized with anti-aliasing as above. Fidelity to a full decode +
  resize (tests/kernels/test_resize_kernels.py, a 1200 px JPEG photo to 224): mean
  |difference| below 2 and 99th percentile below 8 in 0..255 units (measured 0.6 and 5.1),
  correlation above 0.995. Images below 4x the working size are decoded in full (the
  margin keeps the DCT scaling's aliasing out of the working image).
"""
from __future__ import annotations

import math
import os
import threading
import warnings
from typing import Any

import numpy as np

from onnxplain.kernels.resize import resample

from .errors import ImageError, OnnxplainWarning

#: Default largest image file, in pixels, decoded (documented; ``max_pixels`` / ``--max-pixels`` raise it).
MAX_PIXELS = 100_000_000
#: Largest image explained at its own size; larger images are reduced by an integer factor (see module notes).
MAX_MAP_PIXELS = 2 ** 24

_PIL_LOCK = threading.Lock()  # Pillow's decompression-bomb threshold is a global; we check sizes ourselves
# EXIF orientation -> Pillow transpose (as PIL.ImageOps.exif_transpose)
_ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
                7: "TRANSVERSE", 8: "ROTATE_90"}


def reduction_factor(size: tuple[int, int], working_size: tuple[int, int] | None = None) -> int:
    """The integer factor an image of ``size`` (H, W) is reduced by: within the map cap and,
    when ``working_size`` is given, as far as keeps it at least twice the working size."""
    h, w = int(size[0]), int(size[1])
    k = max(1, math.isqrt(max(0, h * w - 1) // MAX_MAP_PIXELS))  # a lower bound; a header may claim 2^31 a side
    while math.ceil(h / k) * math.ceil(w / k) > MAX_MAP_PIXELS:
        k += 1
    if working_size is not None:
        k = max(k, int(min(h / working_size[0], w / working_size[1]) // 2))
    return max(k, 1)


def reduced_size(size: tuple[int, int], k: int) -> tuple[int, int]:
    """(ceil(H / k), ceil(W / k)): the size after reducing by ``k`` (partial edge blocks kept)."""
    return math.ceil(size[0] / k), math.ceil(size[1] / k)


def map_size(image: Any) -> tuple[int, int]:
    """The size (H, W) maps for ``image`` come back at: its own size, or reduced within the map cap."""
    size = image_size(image)
    return reduced_size(size, reduction_factor(size))


def image_size(image: Any) -> tuple[int, int]:
    """(H, W) of an array or an image file as displayed (EXIF orientation applied), without decoding it."""
    if isinstance(image, (str, os.PathLike)):
        with _open(os.fspath(image)) as (im, _):
            return _oriented_size(im)
    if isinstance(image, np.ndarray) and image.ndim >= 2:
        return int(image.shape[0]), int(image.shape[1])
    return tuple(load_image(image).shape[:2])  # type: ignore[return-value]  (raises the right error)


def load_image(image: Any, *, name: str = "image", max_pixels: int | None = MAX_PIXELS,
               working_size: tuple[int, int] | None = None, keep_uint8: bool = False) -> np.ndarray:
    """Return the canonical float32 (H, W, 3) RGB form of a path or an array.

    Parameters
    ----------
    image : path or ndarray
    name : str
        How the image is named in error messages.
    max_pixels : int or None
        Largest image file decoded (None: no limit); arrays are already in memory and not limited.
    working_size : (h, w), optional
        The size the image will be resized to: allows reducing it further while decoding
        (to at least twice this size). Without it, the image comes back at its own size, or
        reduced within :data:`MAX_MAP_PIXELS` (with an :class:`OnnxplainWarning`).
    keep_uint8 : bool
        Return an 8-bit image (a file, a uint8 array) as uint8 RGB (H, W, 3) instead of its
        float32 copy: the same values, for a caller that resizes it next
        (:func:`resize_image` takes uint8 and gives float32, the bits of the float32 path)
        and so skips converting the full-size image. Reduced images are float32 either way.

    Raises
    ------
    ImageError
        If the file cannot be read, is truncated, is larger than ``max_pixels``, or the array
        has an unsupported shape/dtype or NaN/inf.
    """
    if isinstance(image, (str, os.PathLike)):
        return _read_file(os.fspath(image), max_pixels, working_size, keep_uint8)[0]
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
    if arr.dtype.kind == "f":
        _check_finite(arr, name)
    k = reduction_factor(arr.shape[:2], working_size)
    if k > 1:
        if working_size is None:
            _warn_capped(name, arr.shape[:2], k)
        return _block_reduce(arr, k)
    if keep_uint8 and arr.dtype == np.uint8:
        return np.ascontiguousarray(_to_rgb(arr))
    return np.ascontiguousarray(_to_rgb(arr), dtype=np.float32)


def load_image_sized(image: Any, *, max_pixels: int | None = MAX_PIXELS, working_size: tuple[int, int] | None = None,
                     keep_uint8: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`load_image` and :func:`image_size` of the same image, a file opened once.

    (A PNG's EXIF orientation may sit after its pixel data, so Pillow decodes the whole
    image to read it: asking for the size and then the pixels decoded a PNG twice.)
    """
    if isinstance(image, (str, os.PathLike)):
        return _read_file(os.fspath(image), max_pixels, working_size, keep_uint8)
    size = image_size(image)
    return load_image(image, max_pixels=max_pixels, working_size=working_size, keep_uint8=keep_uint8), size


def describe_image(image: Any) -> str:
    """A short name for an image in messages: the file name, or the array's shape and dtype."""
    if isinstance(image, (str, os.PathLike)):
        return f"image file {os.fspath(image)!r}"
    if isinstance(image, np.ndarray):
        return f"image array {tuple(image.shape)} {image.dtype}"
    return f"image {type(image).__name__}"


def _warn_capped(name: str, size: tuple[int, int], k: int) -> None:
    h, w = reduced_size(size, k)
    warnings.warn(f"{name} is {size[1]} x {size[0]} pixels, above the map cap of {MAX_MAP_PIXELS / 1e6:.1f} MP; "
                  f"it is reduced by {k} to {w} x {h} and explained at that size (maps are {w} x {h}).",
                  OnnxplainWarning, stacklevel=4)


def _check_finite(arr: np.ndarray, name: str) -> None:
    """NaN/inf (and, for float64, beyond-float32) pixels are errors; checked in row strips."""
    limit = np.finfo(np.float32).max
    rows = max(1, 8_000_000 // max(1, arr.shape[1] * arr.shape[2]))
    for r0 in range(0, arr.shape[0], rows):
        strip = arr[r0:r0 + rows, :, :3] if arr.shape[2] == 4 else arr[r0:r0 + rows]
        finite = np.isfinite(strip)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            raise ImageError(f"{name} contains NaN or inf pixels (first at row {bad[0] + r0}, column {bad[1]}, "
                             f"channel {bad[2] if strip.shape[2] > 1 else 0}).")
        if arr.dtype.itemsize > 4:
            big = np.abs(strip) > limit
            if big.any():
                bad = np.argwhere(big)[0]
                raise ImageError(f"{name} has pixels beyond the float32 range (first at row {bad[0] + r0}, column "
                                 f"{bad[1]}, channel {bad[2]}); expected values in the units the preprocessing "
                                 "declares.")


def block_reduce(arr: np.ndarray, k: int) -> np.ndarray:
    """Mean over ``k`` x ``k`` blocks of an (H, W) or (H, W, C) array -> float32 (ceil(H/k), ceil(W/k)[, C])."""
    a = np.asarray(arr)
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    out = np.stack([_block_reduce(np.repeat(flat[..., c:c + 1], 3, axis=2), k)[..., 0]
                    for c in range(flat.shape[2])], axis=2)
    return out.reshape(out.shape[:2] + a.shape[2:])


def _block_reduce(arr: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks (partial edge blocks: the mean of what they hold), float32 RGB;
    row strips keep the float copy small whatever the image size."""
    h, w = arr.shape[:2]
    oh, ow = reduced_size((h, w), k)
    out = np.empty((oh, ow, 3), np.float32)
    cols = np.arange(0, w, k)
    col_counts = np.diff(np.append(cols, w)).astype(np.float64)
    step = max(1, 4_000_000 // max(1, k * w * 3))  # output rows per strip
    for o0 in range(0, oh, step):
        o1 = min(oh, o0 + step)
        strip = _to_rgb(arr[o0 * k:min(h, o1 * k)]).astype(np.float64)
        rows = np.arange(0, strip.shape[0], k)
        row_counts = np.diff(np.append(rows, strip.shape[0])).astype(np.float64)
        sums = np.add.reduceat(np.add.reduceat(strip, rows, axis=0), cols, axis=1)
        out[o0:o1] = sums / (row_counts[:, None, None] * col_counts[None, :, None])
    return out


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        return arr[:, :, :3]
    return arr


class _open:
    """Context manager: (Pillow image opened lazily, its header read; frame count)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self):
        from PIL import Image, UnidentifiedImageError

        path = self.path
        if not os.path.exists(path):
            raise ImageError(f"image file {path!r} does not exist.")
        if os.path.isdir(path):
            raise ImageError(f"image file {path!r} is a folder; expected an image file.")
        with _PIL_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own limit is checked next
            try:
                self.im = Image.open(path)
            except UnidentifiedImageError:
                raise ImageError(f"image file {path!r} is not an image Pillow can read.") from None
            except Exception as exc:  # OSError, SyntaxError, struct.error ...: a broken header
                raise ImageError(f"image file {path!r} cannot be read: {_first_line(exc)}") from None
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        return self.im, getattr(self.im, "n_frames", 1)

    def __exit__(self, *exc: object) -> None:
        self.im.close()


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block: the image is used as stored
        return 1


def _oriented_size(im) -> tuple[int, int]:
    w, h = im.size
    return (w, h) if _orientation(im) in (5, 6, 7, 8) else (h, w)


def _read_file(path: str, max_pixels: int | None, working_size: tuple[int, int] | None, keep_uint8: bool = False
               ) -> tuple[np.ndarray, tuple[int, int]]:
    """(canonical image, its size (H, W) as displayed)."""
    from PIL import Image

    name = f"image file {path!r}"
    with _open(path) as (im, frames):
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageError(f"{name} is {w} x {h} pixels ({w * h / 1e6:.1f} MP), above the limit of "
                             f"{max_pixels / 1e6:g} MP (decoding needs about {w * h * 4 / 2 ** 20:.0f} MB); "
                             "raise it with load_model(max_image_pixels=...) / load_image(max_pixels=...) or the "
                             "CLI's --max-pixels.")
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise ImageError(f"{name} has Pillow mode {im.mode!r}; expected an 8-bit image "
                             "(L, RGB, RGBA, P); load it yourself and pass a float array.")
        if frames > 1:
            warnings.warn(f"{name} is animated ({frames} frames); the first frame is explained.", OnnxplainWarning,
                          stacklevel=4)
        orientation = _orientation(im)
        shown = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
        k = reduction_factor(shown, working_size)
        target = reduced_size((h, w), k)[::-1]  # Pillow sizes are (W, H), stored orientation
        try:
            if k > 1 and im.format == "JPEG":
                im.draft("RGB" if im.mode not in ("L", "1") else "L", target)  # DCT scaling while decoding
            im.load()
            out = im
            if out.mode not in ("L", "RGB", "RGBA"):
                out = out.convert("RGBA" if "A" in out.mode or "transparency" in out.info else "RGB")
            if out.size != target:
                ratio = out.size[0] / target[0]
                if ratio == int(ratio) and reduced_size(out.size[::-1], int(ratio))[::-1] == target:
                    out = out.reduce(int(ratio))
                else:
                    out = out.resize(target, Image.Resampling.BOX)
            if orientation in _ORIENTATION:
                out = out.transpose(getattr(Image.Transpose, _ORIENTATION[orientation]))
            arr = np.asarray(out)
        except ImageError:
            raise
        except MemoryError:
            raise ImageError(f"{name} ({w} x {h}) does not fit in memory when decoded; lower --max-pixels or "
                             "pass a smaller image.") from None
        except Exception as exc:  # truncated data, broken chunks, decoder errors
            raise ImageError(f"{name} cannot be decoded: {_first_line(exc)}") from None
    if k > 1 and working_size is None:
        _warn_capped(name, shown, k)
    return load_image(arr, name=name, max_pixels=None, keep_uint8=keep_uint8), (int(shown[0]), int(shown[1]))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 (H, W, C) image to ``size`` = (H, W); unchanged if equal.

    A uint8 (H, W, C) image (``load_image(..., keep_uint8=True)``) gives float32, bit for bit
    what its float32 copy gives (converted only when no resize is needed).

    Downsizing uses anti-aliasing (a Gaussian pre-filter) so thin structures do not alias.
    This is ``skimage.transform.resize(order=1, mode="edge", anti_aliasing=<downsizing>,
    preserve_range=True)``; float32 images go through :func:`onnxplain.kernels.resize.resample`,
    the same arithmetic in float64 with one rounding (within a few float32 ulps of it).
    """
    if tuple(image.shape[:2]) == tuple(size):
        return image.astype(np.float32) if image.dtype == np.uint8 else image
    anti = size[0] < image.shape[0] or size[1] < image.shape[1]
    if image.dtype in (np.float32, np.uint8) and image.ndim == 3:
        # scikit-image's resize below as two tap tables in a GIL-free kernel: within a few
        # float32 ulps of it (onnxplain.kernels.resize), 4-6x faster
        return resample(image, (int(size[0]), int(size[1])), anti)
    from skimage.transform import resize

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
    if score_map.ndim == 3 and order > 1:
        # one channel at a time: a cubic spline over (h, w, K) also prefilters along K, which
        # leaks ~1e-20 of one label's map into another's (batched labels must equal single ones)
        out = np.stack([resize(score_map[..., k].astype(np.float64), tuple(size), order=order, mode="edge",
                               anti_aliasing=False, preserve_range=True, clip=False)
                        for k in range(score_map.shape[2])], axis=-1)
        return out.astype(np.float32)
    out = resize(score_map.astype(np.float64), shape, order=order, mode="edge", anti_aliasing=False,
                 preserve_range=True, clip=False)
    return out.astype(np.float32)
