"""Shared CLI pieces: common flags, model loading, progress bar, writing results."""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from typing import Any

import numpy as np

from ..images import MAX_PIXELS, load_image
from ..model import Model, load_model
from ..render import overlay_figure
from ..result import Explanation
from ._output import RunRecord, atomic_npy, atomic_write

DEFAULT_IMAGE = "chelsea"  # skimage.data.chelsea(): the bundled sample photograph (a cat)


def add_model_args(p: argparse.ArgumentParser, *, image: bool = True) -> None:
    """--model/--preprocessing/--labels/--device (and the optional IMAGE positional)."""
    if image:
        p.add_argument("image", nargs="?", default=None,
                       help="image file (default: the bundled sample photograph, skimage.data.chelsea)")
    p.add_argument("--model", "-m", default=None, help="ONNX model file (default: bundled EfficientNet-Lite0)")
    p.add_argument("--preprocessing", default=None,
                   help="'imagenet', 'none' or a JSON object (overrides the model's manifest/metadata)")
    p.add_argument("--labels", default=None, help="class names file (.txt one per line, or .json list)")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), default=None, help="override the detected input layout")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto", help="execution environment")
    p.add_argument("--max-pixels", type=_pixels, default=MAX_PIXELS, metavar="N",
                   help=f"largest image file decoded, in pixels (default {MAX_PIXELS:_}; 'none' for no limit)")


def add_allow_long(p: argparse.ArgumentParser) -> None:
    """--allow-long: run sample/mask/step counts above the work bound (100,000 model evaluations)."""
    p.add_argument("--allow-long", action="store_true",
                   help="run more than 100,000 model evaluations (refused by default with a time estimate)")


def add_output_args(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--out", "-o", default=default_out, help=f"output folder (default: {default_out})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def model_from_args(args: argparse.Namespace) -> Model:
    pre = args.preprocessing
    if pre is not None and pre.strip().startswith("{"):
        try:
            pre = json.loads(pre)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--preprocessing is not valid JSON: {exc}") from None
    return load_model(args.model, preprocessing=pre, labels=args.labels, execution_environment=args.device,
                      layout=args.layout, max_image_pixels=getattr(args, "max_pixels", MAX_PIXELS))


def _pixels(text: str) -> int | None:
    """--max-pixels: an integer (1e8, 100_000_000 and 100000000 all work) or 'none'."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or 'none'; got {text!r}") from None
    if not value >= 4 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels >= 4; got {text!r}")
    return int(value)


def image_from_args(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    """The image array and a short name for output files."""
    if args.image is None or args.image == DEFAULT_IMAGE:
        from skimage.data import chelsea

        return load_image(chelsea()), DEFAULT_IMAGE
    # files above the map cap come back reduced (with a warning): maps and overlays are at that size
    return (load_image(args.image, max_pixels=getattr(args, "max_pixels", MAX_PIXELS)),
            pathlib.Path(args.image).stem)


def parse_value(flag: str, text: str, words: tuple[str, ...] = ()) -> Any:
    """A named value from ``words``, a number, or R,G,B (a list of 3 floats) from a CLI flag."""
    if text in words:
        return text
    named = f"one of {', '.join(words)}, " if words else ""
    try:
        numbers = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} must be {named}a number or R,G,B; got {text!r}.") from None
    if len(numbers) not in (1, 3):
        raise ValueError(f"{flag} must be {named}a number or R,G,B; got {len(numbers)} values.")
    return numbers[0] if len(numbers) == 1 else numbers


def parse_label(values: list[str] | None) -> Any:
    """CLI labels: integers stay integers, anything else is a class name; None -> top class."""
    if not values:
        return None
    out: list[Any] = [int(v) if v.lstrip("-").isdigit() else v for v in values]
    return out[0] if len(out) == 1 else out


class ProgressBar:
    """A one-line progress bar on stderr (only when stderr is a terminal, unless forced)."""

    def __init__(self, desc: str, *, enabled: bool = True) -> None:
        self.desc = desc
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        if total:
            frac = min(done / total, 1.0)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{self.desc:<22} [{bar:<30}] {done}/{total} {elapsed:5.1f}s")
        else:
            sys.stderr.write(f"\r{self.desc:<22} {done} {elapsed:5.1f}s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_result(result: Explanation, image: np.ndarray, out_dir: str | os.PathLike, stem: str, *,
                 kind: str = "heat", model: Model | None = None, extra: dict | None = None,
                 boundaries: np.ndarray | None = None, arrays: dict[str, np.ndarray] | None = None) -> list[str]:
    """Write ``stem.png`` (one per label when several), ``stem.npy`` (raw map), ``stem_<name>.npy``
    for each of ``arrays``, and last ``stem.json`` (the run's record, ``"complete": true``).

    Every file is written atomically; files of an earlier run of the same stem in the folder
    are removed first (see :mod:`onnxplain.cli._output`). A map not at the image's size
    (``output_upsampling="none"``) is shown upsampled (nearest) in the PNG; the .npy keeps it
    raw and the JSON records its shape.
    """
    out = pathlib.Path(out_dir)
    record = RunRecord(out, f"{stem}.json", method=result.method).start()
    written = []
    maps = result.score_map if result.score_map.ndim == 3 else result.score_map[..., None]
    if maps.shape[:2] != image.shape[:2]:
        from ..images import resize_map

        maps = resize_map(maps, image.shape[:2], "nearest")
        extra = {**(extra or {}), "map_shape": list(result.score_map.shape), "png": "map upsampled nearest for display"}
    shown_image, maps, boundaries = _for_display(image, maps, boundaries)
    for k, (idx, name) in enumerate(zip(result.labels, result.label_names)):
        png = out / (f"{stem}.png" if maps.shape[2] == 1 else f"{stem}_{idx}.png")
        title = f"{result.method}: {name} ({idx}), score {float(np.ravel(result.scores)[k]):.3g}"
        atomic_write(png, lambda tmp: overlay_figure(shown_image, maps[..., k], tmp, kind=kind,
                                                     boundaries=boundaries, title=title))
        written.append(str(png))
        record.add(str(png))
    for path, array in [(out / f"{stem}.npy", result.score_map),
                        *((out / f"{stem}_{name}.npy", a) for name, a in (arrays or {}).items())]:
        written.append(atomic_npy(path, array))
        record.add(str(path))
    summary = result.summary()
    if model is not None:
        summary["model"] = {"path": model.path, "output_kind": model.output_kind, "device": model.device}
    summary.update(extra or {})
    written.append(record.finish(summary))
    return written


#: largest side of the image drawn in an overlay PNG (the figure itself is ~520 x 440 pixels)
DISPLAY_SIDE = 1024


def _for_display(image: np.ndarray, maps: np.ndarray, boundaries: np.ndarray | None):
    """Image, maps and boundaries reduced by block means (boundaries: every k-th label) to at
    most DISPLAY_SIDE per side for drawing; the .npy files keep the maps as computed."""
    k = -(-max(image.shape[:2]) // DISPLAY_SIDE)
    if k <= 1:
        return image, maps, boundaries
    from ..images import block_reduce

    small = block_reduce(image, k)
    return small, block_reduce(maps, k), None if boundaries is None else np.asarray(boundaries)[::k, ::k]
