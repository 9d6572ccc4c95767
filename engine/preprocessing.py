"""Declared preprocessing: how raw image pixels become the model's input tensor.

Preprocessing is declared, never guessed. A :class:`Preprocessing` says

- ``input_size`` (H, W): the size the image is resized to (bilinear), or None to take it
  from the model's input shape (an image whose size already matches is used unchanged);
- per channel: ``model_value = (pixel * scale - mean) / std`` where ``pixel`` is the image
  value as given (0..255 for uint8 images);
- ``channel_order``: "RGB" (the image's order) or "BGR" (the model expects reversed channels).

Presets: ``"imagenet"`` (scale 1/255, torchvision mean/std, RGB) and ``"none"`` (identity:
image values go to the model as they are).
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from .errors import OptionError, OptionTypeError
from ._validation import check_choice
from .errors import OnnxplainWarning

_PRESETS: dict[str, dict[str, Any]] = {
    "imagenet": {"scale": 1.0 / 255.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    "none": {"scale": 1.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)},
}
_KEYS = {"input_size", "scale", "mean", "std", "channel_order", "resize", "layout", "preset"}


@dataclass(frozen=True)
class Preprocessing:
    """Per-channel affine preprocessing plus the model input size.

    Parameters
    ----------
    input_size : (int, int) or None
        Target (H, W); None means "the model's static input size, else the image's own size".
    scale : float
        Multiplies raw pixel values first (e.g. 1/255).
    mean, std : tuple of 3 floats
        Subtracted / divided after scaling, in the model's channel order.
    channel_order : {"RGB", "BGR"}
        Channel order the model expects (images are always RGB).
    """

    input_size: tuple[int, int] | None = None
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        check_choice("channel_order", self.channel_order, ("RGB", "BGR"))
        for key in ("mean", "std"):
            value = getattr(self, key)
            if len(value) != 3:
                raise OptionError(f"preprocessing {key!r} must have 3 values (one per channel); got {list(value)}.")
        values = [self.scale, *self.mean, *self.std]
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
            raise OptionError(f"preprocessing scale/mean/std must be finite numbers; got scale {self.scale}, "
                             f"mean {list(self.mean)}, std {list(self.std)}.")
        if any(s == 0 for s in self.std):
            raise OptionError(f"preprocessing 'std' must be non-zero; got {list(self.std)}.")
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 1):
            raise OptionError(f"preprocessing 'input_size' must be (H, W) with positive sizes; got {self.input_size}.")

    @property
    def channel_source(self) -> np.ndarray:
        """For each model channel, the index of the RGB image channel it reads (int64, (3,))."""
        return np.array([0, 1, 2] if self.channel_order == "RGB" else [2, 1, 0], dtype=np.int64)

    @property
    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b), float32 (3,) each, in model channel order: model_value = a * pixel + b."""
        std = np.asarray(self.std, dtype=np.float64)
        a = self.scale / std
        b = -np.asarray(self.mean, dtype=np.float64) / std
        return a.astype(np.float32), b.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description."""
        d = asdict(self)
        d["input_size"] = list(self.input_size) if self.input_size else None
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def preset(name: str, input_size: tuple[int, int] | None = None) -> Preprocessing:
    """Return the preset ``"imagenet"`` or ``"none"``."""
    check_choice("preprocessing", name, tuple(_PRESETS))
    return Preprocessing(input_size=input_size, name=name, **_PRESETS[name])


def from_mapping(spec: Mapping[str, Any], *, where: str) -> Preprocessing:
    """Build a Preprocessing from a manifest/metadata mapping; ``where`` names the source for errors."""
    if isinstance(spec, str):
        try:
            return preset(spec)
        except ValueError as exc:
            raise OptionError(f"{where}: {exc}") from None
    if not isinstance(spec, Mapping):
        raise OptionError(f"{where}: preprocessing must be 'imagenet', 'none' or an object with keys "
                         f"{sorted(_KEYS)}; got {type(spec).__name__}.")
    unknown = set(spec) - _KEYS
    if unknown:
        raise OptionError(f"{where}: unknown preprocessing keys {sorted(map(str, unknown))}; expected some of "
                         f"{sorted(_KEYS)}.")
    if spec.get("resize", "bilinear") != "bilinear":
        raise OptionError(f"{where}: preprocessing 'resize' {spec['resize']!r} is not supported; onnxplain resizes "
                         "images bilinearly ('bilinear'); resize or crop the image yourself for other schemes.")
    if "layout" in spec and spec["layout"] not in ("NCHW", "NHWC"):
        raise OptionError(f"{where}: preprocessing 'layout' must be 'NCHW' or 'NHWC'; got {spec['layout']!r}.")
    size = _input_size(spec.get("input_size"), where)
    if "preset" in spec:
        base = preset(spec["preset"], size)
        extra = {k: spec[k] for k in ("scale", "mean", "std", "channel_order") if k in spec}
        if not extra:
            return base
        spec = {**base.to_dict(), **extra}
    scale = spec.get("scale", 1.0)
    if isinstance(scale, (str, bool)) or not isinstance(scale, numbers.Real):
        raise OptionError(f"{where}: preprocessing 'scale' must be a number; got {scale!r}.")
    try:
        return Preprocessing(
            input_size=size,
            scale=float(scale),
            mean=tuple(float(v) for v in _three(spec.get("mean", 0.0))),
            std=tuple(float(v) for v in _three(spec.get("std", 1.0))),
            channel_order=str(spec.get("channel_order", "RGB")).upper(),
            name=where,
        )
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{where}: invalid preprocessing: {exc}") from None


def declared_layout(preprocessing: Any, *, manifest: Mapping[str, Any] | None,
                    metadata: Mapping[str, str]) -> str | None:
    """The "layout" the chosen preprocessing source declares (same precedence as :func:`resolve`), or None.

    Malformed sources give None here; :func:`resolve` reports them.
    """
    if preprocessing is not None:
        spec = preprocessing
    elif isinstance(manifest, Mapping) and "preprocessing" in manifest:
        spec = manifest["preprocessing"]
    elif "onnxplain.preprocessing" in metadata:
        try:
            spec = json.loads(metadata["onnxplain.preprocessing"])
        except json.JSONDecodeError:
            return None
    else:
        return None
    layout = spec.get("layout") if isinstance(spec, Mapping) else None
    return layout if layout in ("NCHW", "NHWC") else None


def _input_size(size: Any, where: str) -> tuple[int, int] | None:
    if size is None:
        return None
    ok = (isinstance(size, (list, tuple)) and len(size) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in size))
    if not ok:
        raise OptionError(f"{where}: preprocessing 'input_size' must be [H, W] (two integers); got {size!r}.")
    return int(size[0]), int(size[1])


def _three(v: Any) -> list[float]:
    if isinstance(v, str) or isinstance(v, bool):
        raise OptionTypeError(f"expected a number or a list of 3 numbers; got {v!r}")
    if isinstance(v, numbers.Real):
        return [v, v, v]
    v = list(v)
    if any(isinstance(x, (str, bool)) for x in v):
        raise OptionTypeError(f"expected numbers; got {v!r}")
    return v * 3 if len(v) == 1 else v


def resolve(preprocessing: Any, *, manifest: Mapping[str, Any] | None, metadata: Mapping[str, str],
            model_size: tuple[int, int] | None) -> Preprocessing:
    """Pick the preprocessing: argument, else manifest, else ONNX metadata, else an error.

    A model without declared preprocessing and without an argument is refused: guessing
    would silently give wrong explanations.
    """
    if isinstance(preprocessing, Preprocessing):
        result = preprocessing
    elif isinstance(preprocessing, str):
        result = preset(preprocessing)
    elif isinstance(preprocessing, Mapping):
        result = from_mapping(preprocessing, where="preprocessing argument")
    elif preprocessing is not None:
        raise OptionTypeError("The 'preprocessing' parameter must be 'imagenet', 'none', a mapping or a "
                        f"Preprocessing; got {type(preprocessing).__name__}.")
    elif manifest is not None and "preprocessing" in manifest:
        result = from_mapping(manifest["preprocessing"], where="manifest preprocessing")
    elif "onnxplain.preprocessing" in metadata:
        try:
            spec = json.loads(metadata["onnxplain.preprocessing"])
        except json.JSONDecodeError as exc:
            raise OptionError(f"ONNX metadata 'onnxplain.preprocessing' is not valid JSON: {exc}") from None
        result = from_mapping(spec, where="ONNX metadata 'onnxplain.preprocessing'")
    else:
        raise OptionError(
            "The model declares no preprocessing (no manifest beside it, no 'onnxplain.preprocessing' "
            "ONNX metadata); pass preprocessing='imagenet', 'none' or a mapping with "
            "scale/mean/std/channel_order (CLI: --preprocessing).")
    if result.input_size is None and model_size is not None:
        result = Preprocessing(model_size, result.scale, result.mean, result.std, result.channel_order, result.name)
    if result.input_size is not None and model_size is not None and tuple(result.input_size) != tuple(model_size):
        raise OptionError(f"preprocessing input_size {tuple(result.input_size)} does not match the model's "
                         f"static input size {tuple(model_size)}.")
    return result


def expected_pixel_range(pre: Preprocessing) -> float | None:
    """The pixel range the declared preprocessing is written for: 255 (0..255 pixels map to
    moderate model values), 1 (0..1 pixels do and 0..255 ones land far outside), or None
    when it cannot tell (the identity: the model may take any range)."""
    a, b = (v.astype(np.float64) for v in pre.affine)

    def moderate(v: float) -> bool:
        return bool(np.all(np.abs(a * v + b) <= 10.0))

    if moderate(0.0) and moderate(255.0):
        return 255.0
    identity = np.allclose(a, 1.0) and np.allclose(b, 0.0)
    if not identity and moderate(0.0) and moderate(1.0) and bool(np.all(np.abs(a * 255.0 + b) > 50.0)):
        return 1.0
    return None


def warn_if_out_of_range(pixels: np.ndarray, pre: Preprocessing, what: str) -> None:
    """An OnnxplainWarning when an image's values are far from what ``pre`` expects: a 0..1
    float image given to a model that declares 0..255 pixels, or 0..255 values given to one
    that declares 0..1 (the model would see a flat or saturated image and answer nonsense)."""
    expected = expected_pixel_range(pre)
    if expected is None:
        return
    lo, hi = float(pixels.min()), float(pixels.max())
    if expected == 255.0 and 0.0 < hi <= 1.0:
        hint = "multiply a 0..1 image by 255, or declare preprocessing for 0..1 pixels"
    elif expected == 1.0 and hi > 2.0:
        hint = "divide a 0..255 image by 255, or declare preprocessing for 0..255 pixels (e.g. scale 1/255)"
    else:
        return
    import warnings

    warnings.warn(f"{what} has values in [{lo:.3g}, {hi:.3g}] but the model's preprocessing ({pre.name}: scale "
                  f"{pre.scale:g}, mean {list(pre.mean)}, std {list(pre.std)}) expects pixels in 0..{expected:g}; "
                  f"{hint}.", OnnxplainWarning, stacklevel=4)
