"""Explain a whole dataset: many images, several methods, one Parquet result, resumable.

:func:`explain_dataset` lists the images (:func:`list_images`), decodes and resizes them to
the model's input size in a small thread pool ahead of inference, and explains them in
batches of ``batch_size`` images:

- gradient methods with one sample per image (gradient, guided backprop, deconvnet,
  gradient x input) and Grad-CAM / Grad-CAM++ run the whole batch in one engine call
  (:meth:`GradientCAM.explain_batch`, :func:`gradient_attribution_batch`; each image's
  result is bit-identical to the single-image call);
- integrated gradients and SmoothGrad (several samples per image) pool the batch's images:
  each engine run takes ``mini_batch_size`` (image, class, sample) rows from as many images
  as fill it (:func:`gradient_attribution_samples_batch`; the classes come from the batch's
  predictions; maps equal the single-image call's up to ONNX Runtime's float32 rounding);
- every other method (LIME, occlusion, RISE, Score-CAM, guided Grad-CAM, ...) runs image by
  image as its own function does, streaming its masks or samples in mini-batches of
  ``mini_batch_size`` (already full batches: pooling images would not change the model
  calls);
- the model session (and the gradient graphs) are built once and reused.

Every finished batch is written as one Parquet part (atomically); the run ends by merging
the parts into ``out`` (schema: :mod:`onnxplain.results`), or, for a fresh run, by renaming
the file its rows were streamed into along the way. Re-running with the same ``out``
skips rows already written and refuses to mix rows made with other options.

What is explained per image is ``labels``: None / "top" = the model's top class; "true" =
the image's true label (from an ImageFolder tree, a listing's ``label`` column, or given
with an array); a class index or name; or a list of these (one row each).

Maps are stored at the working size (the model's input size): each method is given the
image already resized to it, so the stored map is exactly what the method returns for the
working image (CAMs upsampled from the feature map with their ``output_upsampling``).
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import csv
import glob
import inspect
import logging
import os
import pathlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import results as R
from ._validation import check_choice, check_int
from .errors import ImageError, LabelError, OnnxplainError, OptionError
from .model import Model, load_model
from .result import Explanation
from .methods import gradcam as G, gradients as GR, keep_batch_buffers
from .registry import METHODS
from .evaluate import DEFAULT_BLUR_SIGMA, DEFAULT_STEPS, auc, energy_in_region, perturbation_curve, pointing_game
from .images import resize_map

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
#: names accepted by ``metrics`` -> result column
METRIC_NAMES = {"deletion": "deletion", "insertion": "insertion", "pointing": "pointing_game",
                "pointing_game": "pointing_game", "energy": "energy"}
PRESETS = ("main", "quick")
DECODE_ERROR = "image: "   # prefix of the error of an image that could not be read


# ---- sources ------------------------------------------------------------------------------
@dataclass
class Item:
    """One image of a dataset: where it comes from and what is known about it."""

    index: int
    id: str                          # the ``image`` column: absolute path or an in-memory id
    path: str | None = None
    array: np.ndarray | None = None
    label: Any = None                # true label as given (name or index), None if unknown
    box: tuple[float, float, float, float] | None = None
    where: str = ""                  # for error messages: "listing.csv line 4", "folder cat/"


@dataclass
class Source:
    """The listed images: ``items`` (a list, or an iterator when the length is unknown)."""

    items: Iterable[Item]
    total: int | None
    kind: str                        # "folder", "image-folder", "glob", "listing", "file", "arrays"
    has_labels: bool = False
    has_boxes: bool = False


def list_images(images: Any, *, image_folder: bool | None = None) -> Source:
    """List a dataset's images (no decoding).

    ``images`` is one of:

    - a folder: every file with an image extension (:data:`IMAGE_EXTENSIONS`) below it,
      recursively, sorted by relative path; hidden files and folders are skipped. When all
      images lie exactly one level down (``root/<class>/<file>``) the tree is read as
      ImageFolder-style: the sub-folder names are the true labels (``image_folder=None``
      detects this; True requires it; False never reads labels);
    - a glob pattern (``"photos/**/*.jpg"``, recursive): the matching files, sorted;
    - a ``.csv`` listing with a header: column ``path`` (or ``image``), optional ``label``
      and ``x0, y0, x1, y1`` (a ground-truth box in pixels of the original image,
      end-exclusive); relative paths are relative to the listing's folder;
    - a ``.txt`` listing: one path per line (blank lines and ``#`` comments skipped);
    - one image file;
    - an iterable of arrays (H, W[, C]), paths, ``(image, label)`` pairs or dicts with keys
      ``image`` and optional ``id``, ``label``, ``box`` (ids default to ``"array:<i>"``;
      resuming needs the iterable to yield the same images in the same order).
    """
    if isinstance(images, (str, os.PathLike)):
        text = os.fspath(images)
        p = pathlib.Path(text)
        if p.is_dir():
            return _folder(p, image_folder)
        if image_folder:
            raise ValueError(f"image_folder=True needs a folder; {text!r} is not one.")
        if p.is_file():
            if p.suffix.lower() == ".csv":
                return _csv_listing(p)
            if p.suffix.lower() == ".txt":
                return _txt_listing(p)
            return Source([Item(0, str(p.resolve()), path=str(p.resolve()), where=text)], 1, "file")
        if any(c in text for c in "*?["):
            paths = sorted(q for q in glob.glob(text, recursive=True) if os.path.isfile(q))
            if not paths:
                raise ImageError(f"the glob pattern {text!r} matches no file.")
            return Source([Item(i, os.path.abspath(q), path=os.path.abspath(q), where=q) for i, q in enumerate(paths)],
                          len(paths), "glob")
        raise ImageError(f"images {text!r}: no such file or folder (expected a folder, a glob pattern, a .csv or "
                         ".txt listing, or an image file).")
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ImageError(f"an array of images must be (N, H, W, C); got shape {images.shape}. Pass one image "
                             "as a list of one array.")
        return Source(_iter_items(iter(images)), len(images), "arrays")
    if isinstance(images, Mapping) or not isinstance(images, Iterable):
        raise TypeError(f"images must be a folder, glob, listing file, or an iterable of images; got "
                        f"{type(images).__name__}.")
    total = len(images) if hasattr(images, "__len__") else None
    return Source(_iter_items(iter(images)), total, "arrays", has_labels=True, has_boxes=True)


def _iter_items(it: Iterator[Any]) -> Iterator[Item]:
    for i, obj in enumerate(it):
        label = box = None
        ident = None
        if isinstance(obj, Mapping):
            if "image" not in obj:
                raise ImageError(f"item {i} of the images iterable is a dict without an 'image' key (keys: "
                                 f"{sorted(obj)}).")
            unknown = set(obj) - {"image", "id", "label", "box"}
            if unknown:
                raise ImageError(f"item {i} of the images iterable has unknown keys {sorted(unknown)}; expected "
                                 "image, id, label, box.")
            image, label, box, ident = obj["image"], obj.get("label"), obj.get("box"), obj.get("id")
        elif isinstance(obj, tuple) and len(obj) == 2:
            image, label = obj
        else:
            image = obj
        if box is not None:
            box = _check_box(box, f"item {i} of the images iterable")
        if isinstance(image, (str, os.PathLike)):
            path = os.path.abspath(os.fspath(image))
            yield Item(i, str(ident) if ident is not None else path, path=path, label=label, box=box,
                       where=f"item {i}")
        elif isinstance(image, np.ndarray):
            yield Item(i, str(ident) if ident is not None else f"array:{i}", array=image, label=label, box=box,
                       where=f"item {i}")
        else:
            raise ImageError(f"item {i} of the images iterable is a {type(image).__name__}; expected an array "
                             "(H, W[, C]) or a path.")


def _visible_files(root: pathlib.Path) -> list[pathlib.Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                out.append(pathlib.Path(dirpath) / f)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _folder(root: pathlib.Path, image_folder: bool | None) -> Source:
    files = _visible_files(root)
    if not files:
        raise ImageError(f"folder {str(root)!r} holds no image files (extensions {', '.join(IMAGE_EXTENSIONS)}).")
    depth = {len(f.relative_to(root).parts) for f in files}
    tree = depth == {2}
    if image_folder and not tree:
        raise ImageError(f"image_folder=True: folder {str(root)!r} is not an ImageFolder tree (every image one level "
                         f"down, in a class sub-folder); its images lie at depths {sorted(depth)}.")
    use_tree = tree if image_folder is None else bool(image_folder)
    root_abs = root.resolve()
    items = []
    for i, f in enumerate(files):
        path = str(root_abs / f.relative_to(root))
        label = f.relative_to(root).parts[0] if use_tree else None
        items.append(Item(i, path, path=path, label=label, where=f"class folder {label!r}" if use_tree else path))
    return Source(items, len(items), "image-folder" if use_tree else "folder", has_labels=use_tree)


def _csv_listing(path: pathlib.Path) -> Source:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        col = "path" if "path" in fields else "image" if "image" in fields else None
        if col is None:
            raise ImageError(f"listing {str(path)!r}: needs a header with a 'path' (or 'image') column; got columns "
                             f"{fields}.")
        box_cols = ("x0", "y0", "x1", "y1")
        has_box = [c in fields for c in box_cols]
        if any(has_box) and not all(has_box):
            raise ImageError(f"listing {str(path)!r}: a box needs all of columns x0, y0, x1, y1; got {fields}.")
        known = {col, "label", *box_cols}
        extra = [f for f in fields if f not in known]
        if extra:
            raise ImageError(f"listing {str(path)!r}: unknown column(s) {extra}; columns are path (or image), label, "
                             "x0, y0, x1, y1.")
        items = []
        for n, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            where = f"{path.name} line {n}"
            if not row.get(col):
                raise ImageError(f"listing {str(path)!r} line {n}: empty {col!r}.")
            p = pathlib.Path(row[col])
            full = str((p if p.is_absolute() else path.parent / p).resolve())
            box = None
            if all(has_box) and any(row[c] for c in box_cols):
                box = _check_box([row[c] for c in box_cols], where)
            items.append(Item(len(items), full, path=full, label=row.get("label") or None, box=box, where=where))
    if not items:
        raise ImageError(f"listing {str(path)!r} lists no image.")
    return Source(items, len(items), "listing", has_labels="label" in fields, has_boxes=all(has_box))


def _txt_listing(path: pathlib.Path) -> Source:
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = pathlib.Path(line)
        full = str((p if p.is_absolute() else path.parent / p).resolve())
        items.append(Item(len(items), full, path=full, where=f"{path.name} line {n}"))
    if not items:
        raise ImageError(f"listing {str(path)!r} lists no image.")
    return Source(items, len(items), "listing")


def _check_box(box: Any, where: str) -> tuple[float, float, float, float]:
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise ImageError(f"{where}: box must be 4 numbers x0, y0, x1, y1; got {box!r}.") from None
    if len(values) != 4 or not all(np.isfinite(values)) or values[2] <= values[0] or values[3] <= values[1]:
        raise ImageError(f"{where}: box must be 4 finite numbers x0, y0, x1, y1 with x0 < x1 and y0 < y1; got "
                         f"{box!r}.")
    return tuple(values)  # type: ignore[return-value]


# ---- methods ------------------------------------------------------------------------------
@dataclass
class MethodRun:
    """One method as a dataset run calls it."""

    name: str
    func: Callable[..., Explanation]
    options: dict[str, Any]          # fixed + preset + overrides: what func gets
    options_json: str                # recorded in every row; a resume must match it
    batch: Callable[..., tuple[list[Explanation], np.ndarray]] | None = None
    batch_options: dict[str, Any] = field(default_factory=dict)
    needs_gradients: bool = False
    #: batched with explicit classes, after the predictions (several samples per image)
    pooled: Callable[..., tuple[list[Explanation], np.ndarray]] | None = None


def resolve_methods(methods: Sequence[str] | str, preset: str = "main",
                    options: Mapping[str, Mapping[str, Any]] | None = None) -> list[MethodRun]:
    """Check method names, presets and options (against each function's signature)."""
    check_choice("preset", preset, PRESETS)
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    if not names:
        raise OptionError("The 'methods' parameter is empty; give at least one of " + ", ".join(METHODS) + ".")
    options = dict(options or {})
    for name in list(options) + names:
        if name not in METHODS:
            raise OptionError(f"unknown method {name!r}; choose from {', '.join(METHODS)}.")
    if len(set(names)) != len(names):
        raise OptionError(f"The 'methods' parameter names a method twice: {names}.")
    unused = [m for m in options if m not in names]
    if unused:
        raise OptionError(f"options given for {unused}, which are not among the methods {names}.")
    runs = []
    for name in names:
        spec = METHODS[name]
        func, grads = spec.func, spec.needs_gradients
        over = dict(options.get(name, {}))
        accepted = [p for p in inspect.signature(func).parameters if p not in ("model", "image", "label", "progress")]
        for key in over:
            if key in ("image", "label", "progress"):
                raise OptionError(f"option {key!r} of method {name!r} is set by the dataset run.")
            if key not in accepted:
                raise OptionError(f"method {name!r} has no option {key!r}; its options are {', '.join(accepted)}.")
        opts = spec.options(preset, **over)
        record = R.jsonable({"preset": preset, **opts})
        run = MethodRun(name, func, opts, record, needs_gradients=grads)
        if func in (G.grad_cam, G.grad_cam_plus_plus):
            allowed = {"feature_layer", "reduction_layer", "output_upsampling", "feature_layout",
                       "execution_environment", "mini_batch_size"}
            if set(opts) <= allowed:
                cam = G._GRADCAM if func is G.grad_cam else G._GRADCAMPP
                run.batch, run.batch_options = cam.explain_batch, dict(opts)
        elif func is GR.gradient_attribution and opts.get("method", "gradient") in GR.BATCHABLE:
            allowed = {"method", "mini_batch_size", "reduction_layer", "execution_environment"}
            if set(opts) <= allowed:
                run.batch, run.batch_options = GR.gradient_attribution_batch, dict(opts)
        elif func is GR.gradient_attribution and opts.get("method") in GR.SAMPLED:
            allowed = {"method", "num_steps", "num_samples", "noise_level", "mini_batch_size", "random_state",
                       "reduction_layer", "execution_environment", "allow_long"}
            if set(opts) <= allowed and opts.get("baseline") is None:
                run.pooled, run.batch_options = GR.gradient_attribution_samples_batch, dict(opts)
        runs.append(run)
    return runs


def parse_targets(labels: Any) -> list[Any]:
    """``labels`` -> target specs: "top", "true" or class (int/str), in order, no repeats."""
    items = list(labels) if isinstance(labels, (list, tuple)) else [labels]
    if not items:
        raise ValueError("The 'labels' parameter is an empty list; give None, 'top', 'true', a class or a list.")
    out = []
    for v in items:
        v = "top" if v is None else (v.item() if isinstance(v, np.generic) else v)
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise LabelError(f"labels entries must be 'top', 'true', a class index or a class name; got {v!r}.")
        if v not in out:
            out.append(v)
    return out


# ---- the run ------------------------------------------------------------------------------
@dataclass
class DatasetRun:
    """What a dataset run did. ``read()`` gives the results."""

    out: str
    images: int                # images processed in this run (with at least one new row)
    rows_written: int
    rows_skipped: int          # rows already in ``out`` (resumed)
    errors: int                # error rows written in this run
    seconds: float
    backend: str = "embedded"

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def read(self) -> R.Results:
        return R.read_results(self.out)


@dataclass
class RunConfig:
    """Everything a worker needs besides the model (picklable, for Ray actors)."""

    methods: list[MethodRun]
    targets: list[Any]                # "top", "true" or class indices (resolved)
    metrics: list[str]                # result columns
    top_k: int
    map_dtype: str
    model_path: str
    metric_options: dict[str, Any] = field(default_factory=dict)
    done: dict[tuple[str, str, str], str] = field(default_factory=dict)


def explain_dataset(model: Model | str | os.PathLike | None, images: Any, methods: Sequence[str] | str = ("gradcam",),
                    labels: Any = None, *, out: str | os.PathLike, metrics: Sequence[str] | str | None = None,
                    preset: str = "main", options: Mapping[str, Mapping[str, Any]] | None = None,
                    batch_size: int = 16, top_k: int = 5, map_dtype: str = "float32", decode_threads: int = 2,
                    image_folder: bool | None = None, progress: bool | Callable[[dict], None] = True,
                    metric_options: Mapping[str, Any] | None = None, ray: bool | str | None = None,
                    ray_actors: int | None = None) -> DatasetRun:
    """Explain every image of a dataset with one or more methods into one Parquet file.

    Parameters
    ----------
    model : Model, path or None
        A loaded model, an ONNX file, or None for the bundled EfficientNet-Lite0.
    images : folder, glob, .csv/.txt listing, image file, or iterable of arrays
        See :func:`list_images` (ImageFolder trees give true labels; a CSV can give labels
        and boxes).
    methods : list of str or "a,b"
        Method names of the registry (``onnxplain.METHODS``), each run with its ``preset``.
    labels : None, "top", "true", class, or a list of these
        What to explain per image (one row per image, method and entry): None/"top" = the
        model's top class; "true" = the image's true label (an image without one gets an
        error row); a class index or name = that class for every image.
    out : path
        The results file (``.parquet``). An existing one is resumed: rows whose (image,
        method, target) are in it are skipped; the same rows asked with other options are
        refused. Parts of an unfinished run lie in ``<out>.parts/``.
    metrics : list of {"deletion", "insertion", "pointing" (= "pointing_game"), "energy"}, optional
        Quality metrics per row (:func:`onnxplain.evaluate` definitions); pointing and
        energy need boxes (a listing with x0, y0, x1, y1, or ``box`` with arrays) and are
        null for images without one.
    preset : {"main", "quick"}
        The registry's settings per method ("main" = ``onnxplain explain``'s, "quick" =
        lighter); ``options`` override them.
    options : {method: {option: value}}, optional
        Per-method options (any keyword of the method's function except image/label/progress).
    batch_size : int
        Images per batch: per engine call for the batched methods, and per part file (a
        killed run loses at most the batch in flight and the part being written beside it).
    top_k : int
        Predicted classes recorded per image.
    map_dtype : {"float32", "float16"}
        Storage of the maps (float16 is stored scaled by max|map|, see :mod:`onnxplain.results`).
    decode_threads : int
        Threads that read and resize images ahead of inference (0 = decode inline).
    image_folder : bool, optional
        For a folder: read class sub-folders as labels (None = when the tree has that shape).
    progress : bool or callable
        True: a progress line on stderr (images/s and ETA; periodic lines when stderr is not
        a terminal); a callable gets a dict (done, total, images_per_second, eta_seconds).
    metric_options : dict, optional
        Keyword options of the metrics (``step``, ``deletion_substrate``,
        ``insertion_substrate``, ``blur_sigma``, ``tolerance``, ``mini_batch_size``).
    ray : None, True or "ADDRESS"
        Run on Ray (True: a local Ray; "ray://host:10001" or "auto": an existing cluster);
        see :mod:`onnxplain.distributed`.
    ray_actors : int, optional
        Ray actors (model replicas); default: the cluster's CPUs / 2, at least 1.

    Returns
    -------
    DatasetRun
        Counts and timing; ``.read()`` -> :class:`onnxplain.results.Results`.
    """
    started = time.perf_counter()
    batch_size = check_int("batch_size", batch_size, minimum=1)
    top_k = check_int("top_k", top_k, minimum=1)
    decode_threads = check_int("decode_threads", decode_threads, minimum=0)
    check_choice("map_dtype", map_dtype, R.MAP_DTYPES)
    if out is None:
        raise TypeError("explain_dataset needs out= (the results .parquet file).")
    if not isinstance(model, Model):
        model = load_model(model)
    runs = resolve_methods(methods, preset, options)
    if model.input_dtype == np.uint8:
        grads = [r.name for r in runs if r.needs_gradients]
        if grads:
            raise OnnxplainError(f"{model.path}: the model takes uint8 input, which has no gradient; {grads} cannot "
                                 "run on it (the forward-only methods are lime, occlusion, rise, score-cam).")
    targets = [t if t in ("top", "true") else model.label_index(t) for t in parse_targets(labels)]
    metric_cols = _check_metrics(metrics)
    metric_opts = _check_metric_options(metric_options)
    source = list_images(images, image_folder=image_folder)
    if "true" in targets and not source.has_labels:
        raise LabelError(f"labels='true' needs true labels, and these images ({source.kind}) have none: use an "
                         "ImageFolder tree, a .csv listing with a 'label' column, or (image, label) items.")
    if {"pointing_game", "energy"} & set(metric_cols) and not source.has_boxes:
        raise ValueError(f"metrics {sorted({'pointing_game', 'energy'} & set(metric_cols))} need ground-truth boxes, "
                         f"and these images ({source.kind}) have none: use a .csv listing with x0, y0, x1, y1 "
                         "columns, or dict items with a 'box'.")
    if source.kind in ("image-folder", "listing") and source.has_labels:  # unknown labels fail before any work
        source.items = [_resolve_true_label(model, it, source.kind) for it in source.items]
    elif source.kind == "arrays":
        source.items = (_resolve_true_label(model, it, source.kind) for it in source.items)
    writer = R.ResultWriter(out)
    try:
        done = writer.done()
        config = RunConfig(runs, targets, metric_cols, top_k, map_dtype, model.path, metric_opts, {})
        _check_resume(done, config, writer.out)
        config.done = done
        report = _Progress(source.total, progress)
        if ray not in (None, False):
            from .distributed import run_on_ray

            stats = run_on_ray(model, source, config, writer, report, batch_size=batch_size, address=ray,
                               actors=ray_actors)
            backend = "ray"
        else:
            stats = _run_embedded(model, source, config, writer, report, batch_size, decode_threads)
            backend = "embedded"
        report.close()
        writer.finish()
    finally:
        writer.close()
    return DatasetRun(str(writer.out), stats["images"], stats["rows"], stats["skipped"], stats["errors"],
                      time.perf_counter() - started, backend)


def _check_metrics(metrics: Any) -> list[str]:
    if metrics is None:
        return []
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    cols = []
    for m in names:
        if m not in METRIC_NAMES:
            raise ValueError(f"unknown metric {m!r}; choose from {', '.join(METRIC_NAMES)}.")
        if METRIC_NAMES[m] not in cols:
            cols.append(METRIC_NAMES[m])
    return cols


def _check_metric_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    allowed = ("step", "deletion_substrate", "insertion_substrate", "blur_sigma", "tolerance", "mini_batch_size")
    options = dict(options or {})
    bad = [k for k in options if k not in allowed]
    if bad:
        raise ValueError(f"unknown metric option(s) {bad}; options are {', '.join(allowed)}.")
    return options


def _resolve_true_label(model: Model, item: Item, kind: str) -> Item:
    if item.label is None:
        return item
    try:
        item.label = model.label_index(item.label)
    except LabelError as exc:
        if kind == "image-folder":
            raise LabelError(f"{item.where}: the images lie in class sub-folders (ImageFolder layout), so folder "
                             f"names are read as labels, and this one is not a class of the model: {exc} Rename "
                             "the folder, or pass image_folder=False (--no-image-folder) to read it without "
                             "labels.") from None
        raise LabelError(f"{item.where}: {exc}") from None
    return item


def _check_resume(done: Mapping[tuple[str, str, str], str], config: RunConfig, out: pathlib.Path) -> None:
    if not done:
        return
    mine = {r.name: r.options_json for r in config.methods}
    seen: dict[str, str] = {}
    for (_, method, _), opts in done.items():
        if method in mine and method not in seen:
            seen[method] = opts
    for method, opts in seen.items():
        if opts != mine[method]:
            raise R.ResultsError(f"{str(out)!r} already holds {method!r} rows made with other options ({opts}); "
                                 f"this run asks for {mine[method]}. Use another --out, or the same options to "
                                 "resume.")


# ---- decoding -----------------------------------------------------------------------------
@dataclass
class Decoded:
    item: Item
    pixels: np.ndarray | None        # float32 (h, w, 3) at the model's input size
    size: tuple[int, int] | None     # original (H, W)
    error: str | None


def decode(model: Model, item: Item) -> Decoded:
    """Read and resize one image; an unreadable one becomes an error, not an exception."""
    try:
        source = item.array if item.array is not None else item.path
        pixels, size = model.prepare(source)
        return Decoded(item, pixels, size, None)
    except (ImageError, OSError, ValueError) as exc:
        return Decoded(item, None, None, DECODE_ERROR + " ".join(str(exc).split()))


def _decoded_batches(model: Model, items: Iterable[Item], batch_size: int, threads: int,
                     keep: Callable[[Item], bool]) -> Iterator[list[Decoded]]:
    """Batches of decoded images; with threads, the next batches decode while this one runs."""
    pending = (it for it in items if keep(it))
    if threads == 0:
        while True:
            chunk = [decode(model, it) for _, it in zip(range(batch_size), pending)]
            if not chunk:
                return
            yield chunk
    with cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="onnxplain-decode") as pool:
        queue: collections.deque = collections.deque()
        ahead = 2 * batch_size                 # this batch and the next in flight

        def fill() -> None:
            while len(queue) < ahead:
                it = next(pending, None)
                if it is None:
                    return
                queue.append(pool.submit(decode, model, it))

        fill()
        while queue:
            chunk = [queue.popleft().result() for _ in range(min(batch_size, len(queue)))]
            fill()
            yield chunk


# ---- one batch (shared by the embedded run and the Ray actors) ----------------------------
def process_batch(model: Model, decoded: Sequence[Decoded], config: RunConfig) -> list[dict[str, Any]]:
    """Every pending row of one batch of decoded images, as results rows."""
    rows: list[dict[str, Any]] = []
    ok = [d for d in decoded if d.error is None]
    bad = [d for d in decoded if d.error is not None]
    for d in bad:
        for run in config.methods:
            for t in config.targets:
                key = (d.item.id, run.name, str(t))
                if key not in config.done:
                    rows.append(_error_row(d, run, t, d.error, config))
    if not ok:
        return rows
    pixels = np.stack([d.pixels for d in ok])
    outputs: dict[int, np.ndarray] = {}          # image position in ok -> raw output row
    results: dict[tuple[int, str, str], tuple[Explanation | None, int, str | None, float]] = {}

    def pending(run: MethodRun, t: Any) -> list[int]:
        """Images of the batch still to do for (method, target); a "true" target on an image
        without a label is recorded as that error row's reason and left out."""
        idx = [b for b, d in enumerate(ok) if (d.item.id, run.name, str(t)) not in config.done]
        if t != "true":
            return idx
        for b in [b for b in idx if ok[b].item.label is None]:
            results[(b, run.name, "true")] = (None, 0, "no true label for this image", 0.0)
        return [b for b in idx if ok[b].item.label is not None]

    def grouped(kind: str, run: MethodRun, t: Any, idx: list[int], labels: Any, singles: list[Any]) -> Any:
        """One ``run.batch`` / ``run.pooled`` call for images ``idx``, recorded per image; when it
        fails, each image alone through :func:`_single` (label ``singles[i]``), so one bad image
        is its own error row. Returns the call's raw outputs, or None after the fallback."""
        call = run.batch if kind == "batched" else run.pooled
        try:
            exps, out = call(model, pixels[idx], labels, **run.batch_options)
        except Exception as exc:  # isolate the failing image: run them one by one
            log.info("%s %s failed (%s); retrying image by image", kind, run.name, exc)
            for b, c in zip(idx, singles):
                results[(b, run.name, str(t))] = _single(model, ok[b], run, t, c)
            return None
        share = exps[0].timings.get("total", 0.0) / len(idx)
        for b, e in zip(idx, exps):
            results[(b, run.name, str(t))] = (e, 0, None, share)
        return out

    # 1. batched gradient methods: one engine call per (method, target) for the whole batch
    for run in config.methods:
        if run.batch is None:
            continue
        for t in config.targets:
            idx = pending(run, t)
            if not idx:
                continue
            labels = None if t == "top" else [ok[b].item.label if t == "true" else t for b in idx]
            out = grouped("batched", run, t, idx, labels, [None] * len(idx))
            for b, o in zip(idx, () if out is None else out):
                outputs.setdefault(b, o)
    # 2. predictions for every image (from the engine's output where a batched run gave one)
    need = [b for b in range(len(ok)) if b not in outputs]
    scores = np.zeros((len(ok), model.num_classes), np.float32)
    if outputs:
        have = sorted(outputs)
        scores[have] = model.output_to_scores(np.stack([outputs[b] for b in have]))
    if need:
        scores[need] = model.scores_native(model.to_native(pixels[need]))
    probs = model.probabilities(scores)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :config.top_k]
    top = [int(order[b, 0]) for b in range(len(ok))]
    # 3. sampled gradient methods (integrated gradients, SmoothGrad): one pooled call per target,
    #    several images' samples per engine run, classes from the predictions
    for run in config.methods:
        if run.pooled is None:
            continue
        for t in config.targets:
            idx = pending(run, t)
            if not idx:
                continue
            classes = [top[b] if t == "top" else ok[b].item.label if t == "true" else t for b in idx]
            grouped("pooled", run, t, idx, classes, classes)
    # 4. every other method, image by image (all targets of an image in one call)
    for run in config.methods:
        if run.batch is not None or run.pooled is not None:
            continue
        for b, d in enumerate(ok):
            wanted = [t for t in config.targets if (d.item.id, run.name, str(t)) not in config.done]
            if not wanted:
                continue
            classes: list[int] = []
            for t in wanted:
                if t == "true" and d.item.label is None:
                    results[(b, run.name, "true")] = (None, 0, "no true label for this image", 0.0)
                    continue
                c = top[b] if t == "top" else d.item.label if t == "true" else t
                if c not in classes:
                    classes.append(c)
            if not classes:
                continue
            try:
                e = run.func(model, d.pixels, classes, **run.options)
                err = None
            except Exception as exc:  # one image's failure is its row's error
                e, err = None, f"{type(exc).__name__}: " + " ".join(str(exc).split())
            share = (e.timings.get("total", 0.0) / len(classes)) if e is not None else 0.0
            for t in wanted:
                if t == "true" and d.item.label is None:
                    continue
                c = top[b] if t == "top" else d.item.label if t == "true" else t
                results[(b, run.name, str(t))] = (e, classes.index(c), err, share)
    # 5. rows
    runs = {r.name: r for r in config.methods}
    for (b, name, t), (e, k, err, share) in sorted(results.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        d = ok[b]
        pred = (order[b], probs[b, order[b]])
        rows.append(_row(model, d, runs[name], t, e, k, err, share, pred, config))
    return rows


def _single(model: Model, d: Decoded, run: MethodRun, t: Any, label: Any = None
            ) -> tuple[Explanation | None, int, str | None, float]:
    """One image through the method's own function (after a batched call failed)."""
    if label is None:
        label = None if t == "top" else d.item.label if t == "true" else t
    try:
        e = run.func(model, d.pixels, label, **run.options)
        return e, 0, None, e.timings.get("total", 0.0)
    except Exception as exc:
        return None, 0, f"{type(exc).__name__}: " + " ".join(str(exc).split()), 0.0


def _base_row(d: Decoded, run: MethodRun, t: Any, config: RunConfig) -> dict[str, Any]:
    item = d.item
    return {"schema_version": R.SCHEMA_VERSION, "image": item.id, "image_index": item.index, "method": run.name,
            "target": str(t), "true_label": item.label if isinstance(item.label, (int, np.integer)) else None,
            "box": list(item.box) if item.box is not None else None, "options": run.options_json,
            "model": config.model_path,
            "image_height": d.size[0] if d.size else None, "image_width": d.size[1] if d.size else None}


def _error_row(d: Decoded, run: MethodRun, t: Any, error: str, config: RunConfig) -> dict[str, Any]:
    row = _base_row(d, run, t, config)
    row.update(error=error, seconds=0.0)
    return row


def _row(model: Model, d: Decoded, run: MethodRun, t: Any, e: Explanation | None, k: int, err: str | None,
         share: float, pred: tuple[np.ndarray, np.ndarray], config: RunConfig) -> dict[str, Any]:
    row = _base_row(d, run, t, config)
    names = model.class_names
    if row["true_label"] is not None:
        row["true_label_name"] = names[int(row["true_label"])]
    row.update(predicted_index=[int(i) for i in pred[0]], predicted_name=[names[int(i)] for i in pred[0]],
               predicted_score=[float(s) for s in pred[1]])
    if e is None:
        row.update(error=err, seconds=share)
        return row
    smap = e.score_map if e.score_map.ndim == 2 else e.score_map[..., k]
    data, dtype, shape, scale = R.encode_map(smap, config.map_dtype)
    label = int(e.labels[k])
    row.update(label=label, label_name=e.label_names[k], score=float(np.ravel(e.scores)[k]), map=data,
               map_dtype=dtype, map_shape=shape, map_scale=scale, params=R.jsonable(e.params), seconds=share,
               timings=R.jsonable(e.timings))
    if config.metrics:
        row.update(_metrics(model, d, smap, label, config))
    return row


def _metrics(model: Model, d: Decoded, smap: np.ndarray, label: int, config: RunConfig) -> dict[str, Any]:
    """The asked metrics of one working-size map (definitions of :func:`onnxplain.evaluate`)."""
    import math

    opts = config.metric_options
    out: dict[str, Any] = {}
    if not np.all(np.isfinite(smap)):
        return out
    h, w = d.pixels.shape[:2]
    working = smap if smap.shape == (h, w) else resize_map(smap, (h, w), "bilinear")
    step = opts.get("step") or math.ceil(h * w / DEFAULT_STEPS)
    for mode in ("deletion", "insertion"):
        if mode in config.metrics:
            sub = opts.get(f"{mode}_substrate", "zeros" if mode == "deletion" else "blur")
            x, y = perturbation_curve(model, d.pixels, label, working, mode=mode, step=step, substrate=sub,
                                      blur_sigma=opts.get("blur_sigma", DEFAULT_BLUR_SIGMA),
                                      mini_batch_size=opts.get("mini_batch_size", 64))
            out[mode] = auc(x, y)
    if d.item.box is not None and {"pointing_game", "energy"} & set(config.metrics):
        full = resize_map(smap, d.size, "bilinear")
        if "pointing_game" in config.metrics:
            out["pointing_game"] = float(pointing_game(full, box=d.item.box, tolerance=opts.get("tolerance", 15.0)))
        if "energy" in config.metrics:
            out["energy"] = energy_in_region(full, box=d.item.box)
    return out


# ---- the embedded run ---------------------------------------------------------------------
def _run_embedded(model: Model, source: Source, config: RunConfig, writer: R.ResultWriter, report: _Progress,
                  batch_size: int, threads: int) -> dict[str, int]:
    keys_per_image = [(r.name, str(t)) for r in config.methods for t in config.targets]
    done_images = collections.Counter(k[0] for k in config.done)
    skipped = 0

    def keep(item: Item) -> bool:
        nonlocal skipped
        if done_images.get(item.id, 0) and all((item.id, m, t) in config.done for m, t in keys_per_image):
            skipped += len(keys_per_image)
            report.skip(1)
            return False
        return True

    stats = {"images": 0, "rows": 0, "errors": 0}
    guard = _FirstBatchGuard(config)
    # One part is written (encoded, compressed, fsync'd, renamed) in a background thread while the
    # next batch runs: pyarrow and fsync release the GIL. At most one write is pending, so a
    # killed run loses at most the batch in flight and the part being written.
    # The masking methods' batch buffers (77 MB at 128 x 224 x 224 x 3) are kept from one image
    # to the next instead of being mapped and page-faulted in afresh (onnxplain.methods._masking).
    with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxplain-write") as pool, keep_batch_buffers():
        pending: cf.Future | None = None
        for chunk in _decoded_batches(model, source.items, batch_size, threads, keep):
            rows = process_batch(model, chunk, config)
            guard.check(rows)
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.write, rows)
            stats["images"] += len(chunk)
            stats["rows"] += len(rows)
            stats["errors"] += sum(r.get("error") is not None for r in rows)
            report.update(len(chunk))
        if pending is not None:
            pending.result()
    stats["skipped"] = skipped
    return stats


class _FirstBatchGuard:
    """Stop the run when a method fails on every readable image of its first batch with one
    message: that is a problem of the model or the options, not of the images."""

    def __init__(self, config: RunConfig) -> None:
        self.open = {r.name for r in config.methods}

    def check(self, rows: Sequence[dict[str, Any]]) -> None:
        for name in list(self.open):
            mine = [r for r in rows if r["method"] == name and not (r.get("error") or "").startswith(DECODE_ERROR)
                    and r.get("error") != "no true label for this image"]
            if not mine:
                continue
            self.open.discard(name)
            errors = {r.get("error") for r in mine}
            if None not in errors and len(errors) == 1:
                raise OnnxplainError(f"method {name!r} failed on every image of the first batch ({len(mine)} rows), "
                                     f"so the run stops: {errors.pop()}")


class _Progress:
    """images/s and ETA on stderr: one rewritten line on a terminal, a line every 10 s when piped."""

    def __init__(self, total: int | None, enabled: bool | Callable[[dict], None], stream=None) -> None:
        self.total, self.done, self.skipped = total, 0, 0
        self.callback = enabled if callable(enabled) else None
        self.stream = stream or sys.stderr
        self.enabled = bool(enabled) and self.callback is None
        self.tty = self.enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.last_line = self.start
        self.written_at = -1

    def skip(self, n: int) -> None:
        self.skipped += n

    def state(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = None if self.total is None else max(self.total - self.done - self.skipped, 0)
        eta = left / rate if (left is not None and rate > 0) else None
        return {"done": self.done, "skipped": self.skipped, "total": self.total, "elapsed": elapsed,
                "images_per_second": rate, "eta_seconds": eta}

    def update(self, n: int) -> None:
        self.done += n
        s = self.state()
        if self.callback is not None:
            self.callback(s)
            return
        if not self.enabled:
            return
        now = time.perf_counter()
        if not self.tty and now - self.last_line < 10.0:
            return
        self.last_line = now
        self._write(s)

    def _write(self, s: dict[str, Any]) -> None:
        total = "?" if s["total"] is None else str(s["total"])
        eta = "?" if s["eta_seconds"] is None else _fmt_seconds(s["eta_seconds"])
        skipped = f" ({s['skipped']} done before)" if s["skipped"] else ""
        line = (f"explain: {s['done'] + s['skipped']}/{total} images{skipped}, {s['images_per_second']:.2f} images/s, "
                f"ETA {eta}, {_fmt_seconds(s['elapsed'])} elapsed")
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()
        self.written_at = self.done + self.skipped

    def close(self) -> None:
        if self.enabled and (self.done or self.skipped):
            if self.written_at != self.done + self.skipped:
                self._write(self.state())
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()


def _fmt_seconds(s: float) -> str:
    s = round(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
