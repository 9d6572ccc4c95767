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

from ..errors import OptionError
from ..images import MAX_PIXELS, block_reduce, load_image, resize_map
from ..model import Model, load_model
from ..render import overlay_figure
from ..result import Explanation
from ._output import RunRecord, atomic_npy, atomic_write

DEFAULT_IMAGE = "chelsea"  # skimage.data.chelsea(): the bundled sample photograph (a cat)


def add_model_args(p: argparse.ArgumentParser, *, image: bool = True) -> None:
    """--model/--preprocessing/--labels/--layout, the runtime options (and the optional IMAGE positional)."""
    if image:
        p.add_argument("image", nargs="?", default=None,
                       help="image file (default: the bundled sample photograph, skimage.data.chelsea)")
    p.add_argument("--model", "-m", default=None, help="ONNX model file (default: bundled EfficientNet-Lite0)")
    p.add_argument("--preprocessing", default=None,
                   help="'imagenet', 'none' or a JSON object (overrides the model's manifest/metadata)")
    p.add_argument("--labels", default=None,
                   help="class names: a file (.txt one per line, or .json list) or an inline JSON list '[\"cat\", \"dog\"]'")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), default=None, help="override the detected input layout")
    add_runtime_args(p)
    p.add_argument("--max-pixels", type=_pixels, default=MAX_PIXELS, metavar="N",
                   help=f"largest image file decoded, in pixels (default {MAX_PIXELS:_}; 'none' for no limit)")


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """--provider/--threads/--precision (and --device / --execution-environment, older spellings of --provider)."""
    p.add_argument("--provider", default=None, metavar="NAME",
                   help="ONNX Runtime provider for every graph: auto (default: cuda if available, else cpu), cpu, "
                        "cuda, tensorrt, openvino, or any ORT provider name; one that cannot run is an error")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="ONNX Runtime intra-op threads (default: one per core)")
    p.add_argument("--precision", choices=("f32", "reduced"), default="f32",
                   help="f32 (default) or reduced: let the provider lower precision (OpenVINO bf16/f16)")
    p.add_argument("--device", "--execution-environment", dest="device", choices=("auto", "cpu", "gpu"), default=None,
                   help="older spelling of --provider (gpu = cuda; Python: device=; MATLAB alias ExecutionEnvironment)")


def runtime_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The load_model keyword arguments of --provider/--threads/--precision/--device."""
    if args.provider is not None and args.device is not None:
        raise OptionError("give --provider or its older spelling --device, not both.")
    return {"provider": args.provider or args.device, "threads": args.threads, "precision": args.precision}


def add_allow_long(p: argparse.ArgumentParser) -> None:
    """--allow-long: run sample/mask/step counts above the work bound (100,000 model evaluations)."""
    p.add_argument("--allow-long", action="store_true",
                   help="run more than 100,000 model evaluations (refused by default with a time estimate)")


def add_sampling_args(p: argparse.ArgumentParser, what: str, *, batch_size: int = 128, seeded: bool = True) -> None:
    """The tail every sampling command shares: --batch-size, --seed, --allow-long, --out, --no-progress.

    ``what`` names one model input of the method ("masked images", "coalitions", ...).
    """
    p.add_argument("--batch-size", "--mini-batch-size", dest="batch_size", type=int, default=batch_size,
                   help=f"{what} per model call (default {batch_size})")
    if seeded:
        p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same result)")
    add_allow_long(p)
    add_output_args(p, "onnxplain-out")


def add_output_args(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--out", "-o", default=default_out, help=f"output folder (default: {default_out})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def model_from_args(args: argparse.Namespace) -> Model:
    pre = args.preprocessing
    if pre is not None and pre.strip().startswith("{"):
        try:
            pre = json.loads(pre)
        except json.JSONDecodeError as exc:
            raise OptionError(f"--preprocessing is not valid JSON: {exc}") from None
    return load_model(args.model, preprocessing=pre, labels=parse_labels_arg(args.labels),
                      layout=args.layout, max_image_pixels=getattr(args, "max_pixels", MAX_PIXELS),
                      **runtime_from_args(args))


def parse_labels_arg(value: str | None) -> Any:
    """--labels: a file path, or an inline JSON list of class names (like --preprocessing's JSON)."""
    if value is None or not value.strip().startswith("["):
        return value
    try:
        names = json.loads(value)
    except json.JSONDecodeError as exc:
        raise OptionError(f"--labels is not valid JSON: {exc}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise OptionError("--labels as inline JSON must be a list of class-name strings, e.g. '[\"cat\", \"dog\"]'.")
    return names


#: file suffixes taken as images when they trail a many-valued option (``--label 3 cat.jpg``)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def looks_like_image(value: str) -> bool:
    return value.lower().endswith(IMAGE_SUFFIXES) or (value == DEFAULT_IMAGE)


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
        raise OptionError(f"{flag} must be {named}a number or R,G,B; got {text!r}.") from None
    if len(numbers) not in (1, 3):
        raise OptionError(f"{flag} must be {named}a number or R,G,B; got {len(numbers)} values.")
    return numbers[0] if len(numbers) == 1 else numbers


def parse_label(values: list[str] | None) -> Any:
    """CLI labels: integers stay integers, anything else is a class name; None -> top class."""
    if not values:
        return None
    out: list[Any] = [int(v) if v.lstrip("-").isdigit() else v for v in values]
    return out[0] if len(out) == 1 else out


class ProgressBar:
    """Progress on stderr: a redrawn bar on a terminal, plain lines otherwise (logs, pipes, CI).

    Off a terminal a line is written every :attr:`interval` seconds and at the end, with the
    rate in ``unit``/s and the estimated time left, so a long LIME run is never silent::

        lime: 512/2048 samples (25%), 41.3 samples/s, ETA 37 s
    """

    #: seconds between progress lines when stderr is not a terminal
    interval = 5.0

    def __init__(self, desc: str, *, enabled: bool = True, unit: str = "steps") -> None:
        self.desc = desc
        self.unit = unit
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()
        self.last_line = self.start
        self.state: tuple[int, int | None] | None = None
        self.lines = 0

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = now - self.start
        self.state = (done, total)
        if self.tty:
            if total:
                frac = min(done / total, 1.0)
                bar = "#" * int(frac * 30)
                sys.stderr.write(f"\r{self.desc:<22} [{bar:<30}] {done}/{total} {elapsed:5.1f}s")
            else:
                sys.stderr.write(f"\r{self.desc:<22} {done} {elapsed:5.1f}s")
            sys.stderr.flush()
        elif now - self.last_line >= self.interval and (total is None or total > 1):  # "1/1" tells nothing
            self.last_line = now
            self._line(done, total, elapsed)

    def _line(self, done: int, total: int | None, elapsed: float, final: bool = False) -> None:
        rate = done / elapsed if elapsed > 0 else float("inf")
        text = f"{self.desc}: {done}" + (f"/{total} {self.unit} ({100 * done / total:.0f}%)" if total else f" {self.unit}")
        text += f", {rate:.3g} {self.unit}/s"
        if final:
            text += f", done in {elapsed:.1f} s"
        elif total and done < total and rate > 0:
            text += f", ETA {(total - done) / rate:.0f} s"
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        self.lines += 1

    def close(self) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
        elif self.state is not None and self.lines:  # a closing line only where progress lines were written
            self._line(*self.state, time.perf_counter() - self.start, final=True)
        self.enabled = False

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_result(result: Explanation, image: np.ndarray, out_dir: str | os.PathLike, stem: str, *,
                 kind: str | None = None, model: Model | None = None, extra: dict | None = None,
                 boundaries: np.ndarray | None = None, arrays: dict[str, np.ndarray] | None = None,
                 sign: str = "absolute") -> list[str]:
    """Write ``stem.png`` (one panel per label), ``stem.npy`` (raw map), ``stem_<name>.npy``
    for each of ``arrays``, and last ``stem.json`` (the run's record, ``"complete": true``).

    The PNG follows the method's colour rule (:func:`onnxplain.render.style_for`) unless
    ``kind`` is given. Every file is written atomically; files of an earlier run of the same
    stem in the folder are removed first (see :mod:`onnxplain.cli._output`). A map not at the
    image's size (``output_upsampling="none"``) is shown upsampled (nearest) in the PNG; the
    .npy keeps it raw and the JSON records its shape.
    """
    import matplotlib.pyplot as plt

    out = pathlib.Path(out_dir)
    record = RunRecord(out, f"{stem}.json", method=result.method).start()
    written = []
    maps = result.score_map if result.score_map.ndim == 3 else result.score_map[..., None]
    grads = result.extras.get("gradients") if sign == "signed" else None
    if maps.shape[:2] != image.shape[:2]:
        maps = resize_map(maps, image.shape[:2], "nearest")
        grads = None  # per-channel gradients come at the image size only; signed needs them
        extra = {**(extra or {}), "map_shape": list(result.score_map.shape), "png": "map upsampled nearest for display"}
    if isinstance(grads, np.ndarray):  # reduced for display with the maps, as one array
        flat = grads.reshape(*grads.shape[:2], -1)
        shown_image, both, boundaries = _for_display(image, np.concatenate([maps, flat], axis=2), boundaries)
        maps, grads = both[..., :maps.shape[2]], both[..., maps.shape[2]:].reshape(*both.shape[:2], *grads.shape[2:])
    else:
        shown_image, maps, boundaries = _for_display(image, maps, boundaries)
    shown = Explanation(result.method, maps if result.multi_label else maps[..., 0], result.labels,
                        result.label_names, result.scores, result.params,
                        {} if grads is None else {"gradients": grads}, result.timings)
    png = out / f"{stem}.png"

    def draw(tmp: str) -> None:
        plt.close(overlay_figure(shown_image, shown, tmp, kind=kind, boundaries=boundaries, sign=sign))

    atomic_write(png, draw)
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


def write_and_report(result, image: np.ndarray, model, out: str, stem: str, what: str) -> None:
    """Write the result files and print a one-line summary per label."""
    written = write_result(result, image, out, stem, model=model)
    for k, (idx, label) in enumerate(zip(result.labels, result.label_names)):
        m = result.score_map if result.score_map.ndim == 2 else result.score_map[..., k]
        print(f"{label} ({idx}), score {float(result.scores[k]):.4g}: map range [{m.min():.3g}, {m.max():.3g}]")
    print(f"{result.method}: {what}, {result.timings['total']:.1f} s -> " + ", ".join(written))


def add_label_arg(p: argparse.ArgumentParser) -> None:
    """--label/-l: one or more class indices or names."""
    p.add_argument("--label", "-l", nargs="+", action="extend", default=None, metavar="L",
                   help="class index or name, several from one pass (default: the top class)")


def parse_pair(flag: str, value: str, *, auto: bool = True) -> Any:
    """'auto', 'N' or 'H,W' -> 'auto', int or (int, int)."""
    if auto and value == "auto":
        return value
    try:
        numbers = [int(v) for v in value.split(",")]
    except ValueError:
        raise OptionError(f"{flag} must be {'auto, ' if auto else ''}an integer N or H,W; got {value!r}.") from None
    if len(numbers) not in (1, 2):
        raise OptionError(f"{flag} must be N or H,W; got {value!r}.")
    return numbers[0] if len(numbers) == 1 else tuple(numbers)


#: largest side of the image drawn in an overlay PNG (the figure itself is ~520 x 440 pixels)
DISPLAY_SIDE = 1024


def _for_display(image: np.ndarray, maps: np.ndarray, boundaries: np.ndarray | None):
    """Image, maps and boundaries reduced by block means (boundaries: every k-th label) to at
    most DISPLAY_SIDE per side for drawing; the .npy files keep the maps as computed."""
    k = -(-max(image.shape[:2]) // DISPLAY_SIDE)
    if k <= 1:
        return image, maps, boundaries
    small = block_reduce(image, k)
    return small, block_reduce(maps, k), None if boundaries is None else np.asarray(boundaries)[::k, ::k]
