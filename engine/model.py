"""The model layer: load any ONNX image classifier and run it on batches of images.

``load_model`` turns an ONNX file into a :class:`Model` that knows its input layout,
dtype, size, preprocessing, output kind and class names. Methods talk to a Model through
a small interface:

- ``prepare(image)`` -> the working image (float32 (h, w, 3) at the model's input size)
  and the original (H, W);
- ``input_spec`` -> how raw pixels become the model's native input (for numba kernels that
  write batches straight into the native layout/dtype);
- ``scores_native(x)`` -> class scores for a native input batch; ``predict(images)`` for
  arrays/paths, streamed in mini-batches;
- ``gradient_engine(...)`` -> the reverse-mode engine on the graph with preprocessing fused
  in front (gradients are with respect to raw image pixels, H x W x C).
"""
from __future__ import annotations

import json
import importlib.resources
import logging
import os
import pathlib
import re
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import onnx
from onnx import TensorProto

from . import preprocessing as _pre
from .autodiff import GradientEngine, GradientGraphError
from .graph import GraphError, tap_model
from .graph.preprocess import fuse_preprocessing
from ._validation import check_choice, check_int, shared_names
from .errors import ModelError, OnnxplainWarning, OptionError
from .images import (MAX_MAP_PIXELS, MAX_PIXELS, describe_image, image_size, load_image, load_image_sized,
                     reduced_size, reduction_factor, resize_image)
from .labels import read_labels, resolve_label
from .runtime import (arena_shrinkage_run_options, check_precision, check_provider, check_threads, make_session, ort_provider,
                      return_free_memory, session_device, session_report, shared_arena_in_use)

log = logging.getLogger(__name__)

#: The bundled EfficientNet-Lite0 (package data of ``onnxplain.models``; its manifest and labels beside it).
BUNDLED_MODEL = pathlib.Path(str(importlib.resources.files("onnxplain.models") / "efficientnet_lite0.onnx"))
_DTYPES = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.UINT8: np.uint8}
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Cast"}
OUTPUT_KINDS = ("probabilities", "logits", "sigmoid", "score")


class RecordedSession:
    """An ONNX Runtime InferenceSession that notes the time of each ``run`` under its graph name
    (for :meth:`Model.runtime` ``since=``); every other attribute is the session's."""

    __slots__ = ("session", "_log", "_graph", "_nodes")

    def __init__(self, session: Any, log: dict, graph: str, nodes: dict[str, Any]) -> None:
        self.session, self._log, self._graph, self._nodes = session, log, graph, nodes

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self._log[self._graph] = (time.perf_counter(), self._nodes)
        return self.session.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


@dataclass(frozen=True)
class InputSpec:
    """How a float32 RGB pixel batch (N, H, W, 3) becomes the model's native input.

    ``native[n, c] = cast(scale[c] * pixels[n, :, :, channel_source[c]] + offset[c])`` laid
    out as ``layout`` with dtype ``dtype`` (uint8: rounded and clipped to 0..255).
    """

    layout: str
    dtype: np.dtype
    size: tuple[int, int]
    channel_source: np.ndarray
    scale: np.ndarray
    offset: np.ndarray

    def native_shape(self, n: int) -> tuple[int, int, int, int]:
        h, w = self.size
        return (n, 3, h, w) if self.layout == "NCHW" else (n, h, w, 3)


class Model:
    """An ONNX image classifier ready for explanation. Build with :func:`load_model`."""

    def __init__(self, proto: onnx.ModelProto, *, path: str, preprocessing: Any, labels: Any,
                 provider: str = "auto", threads: int | None = None, precision: str = "f32",
                 layout: str | None, output_kind: str | None,
                 manifest: dict | None, folder: str | None = None,
                 max_image_pixels: int | None = MAX_PIXELS) -> None:
        self.path = path
        #: largest image file decoded (None: no limit); see onnxplain.images
        self.max_image_pixels = (None if max_image_pixels is None else
                                 check_int("max_image_pixels", max_image_pixels, minimum=4))
        # the folder paths inside the model file or its manifest are resolved in (and confined to);
        # None for derived graphs, whose labels come as a list
        self._folder = folder if folder is not None else os.path.dirname(os.path.abspath(path))
        self._proto = proto
        self.manifest = manifest
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        graph = proto.graph
        inits = {i.name for i in graph.initializer}
        required = [i for i in graph.input if i.name not in inits]
        if len(required) != 1:
            names = [i.name for i in required]
            raise ModelError(f"{path}: the model has {len(required)} required inputs {names}; onnxplain explains "
                             "models with exactly one image input.")
        inp = required[0]
        self.input_name = inp.name
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type") or tt.elem_type not in _DTYPES:
            dtype_name = TensorProto.DataType.Name(tt.elem_type) if tt.elem_type else "non-tensor"
            raise ModelError(f"{path}: input {inp.name!r} has type {dtype_name}; expected float32, float16 or uint8.")
        self.input_dtype = np.dtype(_DTYPES[tt.elem_type])
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if len(dims) != 4:
            raise ModelError(f"{path}: input {inp.name!r} has rank {len(dims)} (shape {_fmt(dims)}); expected an "
                             "image batch of rank 4 (N, C, H, W) or (N, H, W, C).")
        if layout is None:  # a layout declared with the preprocessing is a declaration, not a guess
            layout = _pre.declared_layout(preprocessing, manifest=manifest, metadata=self.metadata)
        self.layout = _detect_layout(dims, layout, path, inp.name)
        c_axis, hw = (1, (2, 3)) if self.layout == "NCHW" else (3, (1, 2))
        if dims[c_axis] not in (None, 3):
            raise ModelError(f"{path}: input {inp.name!r} has {dims[c_axis]} channels in layout {self.layout}; "
                             "expected 3 (RGB).")
        model_size = (dims[hw[0]], dims[hw[1]]) if None not in (dims[hw[0]], dims[hw[1]]) else None
        self.static_batch = dims[0] if dims[0] not in (None, 0) else None
        self.preprocessing = _pre.resolve(preprocessing, manifest=manifest, metadata=self.metadata,
                                          model_size=model_size)
        self._output_index, self.output_name = self._find_output(path)
        self.output_kind, self.logits_name = self._detect_output_kind(output_kind)
        self.provider = check_provider(provider)
        self.threads = check_threads(threads)
        self.precision = check_precision(precision)
        self._sessions: dict[str, Any] = {}
        self._ran_on: dict[str, dict[str, dict[str, Any]]] = {}  # provider -> graph -> session_report
        # provider -> graph -> (perf_counter of its latest run, its report): runtime(since=...)
        self._last_run: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {}
        self._run_proto, self._loop = self._batchable_graph()
        self.session_for(self.provider)  # create now: a broken graph fails at load time, not in a method
        self.class_names = self._resolve_labels(labels)
        self._engines: dict[str, Any] = {}

    # ---- description -------------------------------------------------------------------
    @property
    def onnx_model(self) -> onnx.ModelProto:
        """The ONNX graph as loaded (do not mutate)."""
        return self._proto

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) the model takes; None when the model accepts any size and none is declared."""
        return self.preprocessing.input_size

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_spec(self) -> InputSpec:
        """The affine pixel -> native-input mapping; needs a known input size."""
        if self.input_size is None:
            raise ModelError(f"{self.path}: the model's input size is dynamic and none is declared; set "
                             "preprocessing input_size.")
        return self.spec_for(self.input_size)

    def spec_for(self, size: tuple[int, int]) -> InputSpec:
        """The pixel -> native-input mapping at ``size`` (h, w): the working image's size, which
        for a dynamic-size model is the image's own."""
        a, b = self.preprocessing.affine
        return InputSpec(self.layout, self.input_dtype, (int(size[0]), int(size[1])),
                         self.preprocessing.channel_source, a, b)

    @property
    def execution_environment(self) -> str:
        """The provider requested at load time (older name of :attr:`provider`)."""
        return self.provider

    @property
    def device(self) -> str:
        """"gpu" or "cpu": where the default session runs."""
        return session_device(self.session)

    def runtime(self, provider: str | None = None, *, since: float | None = None) -> dict[str, Any]:
        """What ran this model: the requested provider, threads, precision, and per graph the
        providers ONNX Runtime assigned its nodes to (:func:`onnxplain.runtime.session_report`).

        ``since=None``: every graph onnxplain built on ``provider`` for this model (the model,
        tapped graphs, gradient graphs). ``since=t`` (a ``time.perf_counter()`` value): only the
        graphs run at or after ``t``, which is what each method records in
        ``Explanation.params["runtime"]`` (taken at its start). Calls running concurrently on one
        Model share the record, so each lists the other's graphs as well.
        """
        provider = self.provider if provider is None else check_provider(provider)
        if since is None:
            graphs = {k: dict(v) for k, v in self._ran_on.get(provider, {}).items()}
        else:
            graphs = {k: dict(v) for k, (t, v) in self._last_run.get(provider, {}).items() if t >= since}
        return {"provider": provider, "threads": self.threads, "precision": self.precision, "graphs": graphs}

    def new_session(self, model: Any, provider: str | None = None, *, graph: str, **kwargs: Any):
        """A session on this model's runtime options, recorded under ``graph`` in :meth:`runtime`.

        Returns the InferenceSession wrapped so that each ``run`` is noted (:meth:`runtime`
        ``since=``); every other attribute is the session's own.
        """
        provider = self.provider if provider is None else check_provider(provider)
        session = make_session(model, provider, threads=self.threads, precision=self.precision, **kwargs)
        report = session_report(session)
        nodes = report["nodes"] or {"providers": report["providers"]}
        self._ran_on.setdefault(provider, {})[graph] = nodes
        return RecordedSession(session, self._last_run.setdefault(provider, {}), graph, nodes)

    def release_memory(self, keep_gradient_sessions: int = 2) -> None:
        """Drop cached gradient sessions but the most recently used ones and return freed heap to the OS.

        Methods stay callable: a dropped gradient session is rebuilt when a method needs it again
        (about a second on EfficientNet-Lite0). ``onnxplain explain`` calls this after each
        method; a program that calls several gradient methods in a loop need not.
        """
        for engine in self._engines.values():
            engine.release(keep_gradient_sessions)
        self._shrink_arena()
        return_free_memory()

    def _shrink_arena(self) -> None:
        """Free the chunks of the shared CPU arena no session is using (see onnxplain.runtime): one
        batch-1 run of the model with ORT's ``memory.enable_memory_arena_shrinkage``. The arena
        otherwise keeps the sum of every graph's largest batch for the process's lifetime (measured in
        ``onnxplain explain``: ~360 MB after the gradient methods); the next run re-grows what it needs."""
        if self.input_size is None or not shared_arena_in_use():
            return
        options = arena_shrinkage_run_options()
        x = self.to_native(np.zeros((self.static_batch or 1, *self.input_size, 3), np.float32))
        try:
            self.session.run([self.output_name], {self.input_name: x}, options)
        except Exception as exc:  # noqa: BLE001 - a provider without that arena: nothing to shrink
            log.debug("arena shrinkage run failed: %s", exc)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (used by ``onnxplain inspect`` and result files)."""
        return {"path": self.path, "input": {"name": self.input_name, "layout": self.layout,
                                             "dtype": str(self.input_dtype), "size": self.input_size,
                                             "static_batch": self.static_batch, "batched_by_loop": self._loop},
                "output": {"name": self.output_name, "kind": self.output_kind, "logits": self.logits_name,
                           "num_classes": self.num_classes},
                "preprocessing": self.preprocessing.to_dict(), "device": self.device,
                "runtime": self.runtime(),
                "opset": max((o.version for o in self._proto.opset_import if o.domain in ("", "ai.onnx")), default=None)}

    def with_graph(self, proto: onnx.ModelProto, *, path: str | None = None) -> "Model":
        """A Model on another graph with this model's preprocessing, labels, layout and output kind.

        For derived graphs: randomised weights (sanity checks), quantized or float16 builds.
        """
        return Model(proto, path=path or f"{self.path} (derived)", preprocessing=self.preprocessing,
                     labels=list(self.class_names), provider=self.provider, threads=self.threads,
                     precision=self.precision,
                     layout=self.layout, output_kind=self.output_kind, manifest=None,
                     max_image_pixels=self.max_image_pixels)

    def probe_shapes(self, names: Sequence[str]) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per-sample shape and dtype of inner tensors from one run on a zero image.

        Static shape inference gives up behind run-time shape arithmetic (TF "same" padding
        exports); one forward run tells the sizes.
        """
        names = list(names)
        if not names:
            return {}
        session = make_session(tap_model(self._run_proto, names), "cpu", threads=self.threads)
        x = self.to_native(np.zeros((1, *self.input_spec.size, 3), np.float32))
        values = session.run(names, {self.input_name: x})
        return {n: (tuple(int(d) for d in v.shape[1:]), str(v.dtype)) for n, v in zip(names, values)}

    # ---- sessions ----------------------------------------------------------------------
    @property
    def session(self):
        """The InferenceSession for the model's own provider."""
        return self.session_for(self.provider)

    def session_for(self, environment: str):
        """A cached InferenceSession of the batch-ready graph for the provider ``environment``."""
        environment = check_provider(environment)
        if environment not in self._sessions:
            try:
                self._sessions[environment] = self.new_session(self._run_proto, environment, graph="model")
            except Exception as exc:  # ORT raises its own types with long messages
                if isinstance(exc, ValueError) and type(exc).__module__.startswith("onnxplain"):
                    raise
                raise ModelError(f"{self.path}: ONNX Runtime cannot load the model: {_first_line(exc)}") from None
        return self._sessions[environment]

    # ---- images ------------------------------------------------------------------------
    def prepare(self, image: Any) -> tuple[np.ndarray, tuple[int, int]]:
        """Canonical image resized to the model input: (float32 (h, w, 3), map size (H, W)).

        The map size is the image's own size, or for an image above the map cap
        (:data:`onnxplain.images.MAX_MAP_PIXELS`) its size reduced by an integer factor (with
        an :class:`OnnxplainWarning`). Large images are reduced while decoding (see
        :mod:`onnxplain.images`), so memory stays bounded whatever the image size.
        """
        if self.input_size is not None:
            # one read for the size and the pixels (a PNG is decoded to read its EXIF orientation)
            # 8-bit images stay uint8 until the resize, which reads them as they are (no float
            # copy of the full-size image; the same bits as resizing that copy)
            img, given = load_image_sized(image, max_pixels=self.max_image_pixels, working_size=self.input_size,
                                          keep_uint8=True)
            k = reduction_factor(given)
            original = reduced_size(given, k)
        else:  # the working size is the (capped) image size itself: known only from the size
            given = image_size(image)
            k = reduction_factor(given)
            original = reduced_size(given, k)
            img = load_image(image, max_pixels=self.max_image_pixels, working_size=original)
        if k > 1:
            warnings.warn(f"{describe_image(image)} is {given[1]} x {given[0]} pixels, above the map cap of "
                          f"{MAX_MAP_PIXELS / 1e6:.1f} MP; maps are returned at {original[1]} x {original[0]} "
                          f"(the image reduced by {k}).", OnnxplainWarning, stacklevel=3)
        _pre.warn_if_out_of_range(img, self.preprocessing, describe_image(image))
        size = self.input_size or img.shape[:2]
        return resize_image(img, size), original

    def to_native(self, pixels: np.ndarray) -> np.ndarray:
        """Vectorised reference conversion of a float32 (N, h, w, 3) pixel batch to native input."""
        a, b = self.preprocessing.affine
        x = pixels[..., self.preprocessing.channel_source] * a + b
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        if self.input_dtype == np.uint8:
            x = np.clip(np.rint(x), 0, 255)
        return np.ascontiguousarray(x, dtype=self.input_dtype)

    # ---- inference ---------------------------------------------------------------------
    def run_native(self, x: np.ndarray, *, environment: str | None = None) -> np.ndarray:
        """Raw first classification output for a native input batch."""
        session = self.session_for(environment or self.execution_environment)
        try:
            if self._loop:
                outs = [session.run([self.output_name], {self.input_name: x[i:i + 1]})[0] for i in range(len(x))]
                out = np.concatenate(outs, axis=0)
            else:
                out = session.run([self.output_name], {self.input_name: x})[0]
        except Exception as exc:  # ORT's own exception types carry long C++ messages
            if isinstance(exc, (ValueError, TypeError)) and type(exc).__module__.startswith("onnxplain"):
                raise
            shape = getattr(x, "shape", None)
            raise ModelError(f"{self.path}: ONNX Runtime failed to run the model on input {self.input_name!r} "
                             f"of shape {shape} ({getattr(x, 'dtype', '?')}): {_first_line(exc)}") from None
        if out.ndim == 0 or out.shape[0] != len(x):
            raise ModelError(f"{self.path}: output {self.output_name!r} has shape {out.shape} for a batch of {len(x)} "
                             "images; expected one row of class scores per image (batch first).")
        return out

    def scores_native(self, x: np.ndarray, *, environment: str | None = None, source: str | None = None
                      ) -> np.ndarray:
        """Class scores (N, num_classes) float32 for a native input batch.

        Scores are the model's output as it is: probabilities for a model ending in Softmax,
        logits otherwise; a single sigmoid output p becomes the two columns (1 - p, p).
        ``source`` names the image(s) in error messages (NaN/inf scores, dense outputs).
        """
        return self.output_to_scores(self.run_native(x, environment=environment), source=source)

    def output_to_scores(self, out: np.ndarray, *, source: str | None = None) -> np.ndarray:
        """Convert a raw output batch into (N, num_classes) scores.

        Refuses a dense output (more than one axis of size > 1 per image: a segmentation map
        is not C x H x W classes) and NaN/inf scores, naming the output and ``source`` (the
        image the batch came from).
        """
        per_image = tuple(int(d) for d in np.shape(out)[1:])
        if sum(d > 1 for d in per_image) > 1:
            raise ModelError(f"{self.path}: output {self.output_name!r} has shape {_fmt(['N', *per_image])} per "
                             "batch: a dense map, not one score per class; classification (classify, LIME, "
                             "occlusion, RISE, Score-CAM, evaluate) needs an output of shape (N, classes). For a "
                             "dense (segmentation) output use grad_cam / gradient_attribution with "
                             "reduction=ClassRegion(label, mask), reduction=weights or a callable.")
        check_finite_output(out, self.path, self.output_name, source)
        out = np.asarray(out, dtype=np.float32).reshape(out.shape[0], -1)
        expected = 1 if self.output_kind == "sigmoid" else len(getattr(self, "class_names", ())) or out.shape[1]
        if out.shape[1] != expected:
            raise ModelError(f"{self.path}: output {self.output_name!r} gave {out.shape[1]} values per image; "
                             f"expected {expected} (the number of classes the model declared at load time).")
        if self.output_kind == "sigmoid":
            return np.concatenate([1.0 - out, out], axis=1)
        return out

    def predict(self, images: Iterable[Any] | np.ndarray, *, mini_batch_size: int = 128,
                environment: str | None = None, progress: Callable[[int, int | None], None] | None = None) -> np.ndarray:
        """Class scores (N, num_classes) for images, streamed in mini-batches.

        ``images`` is an array (N, H, W, 3) or any iterable of arrays/paths; only one
        mini-batch of images is held at a time.
        """
        mini_batch_size = check_int("mini_batch_size", mini_batch_size, minimum=1)
        total = len(images) if hasattr(images, "__len__") else None
        results, done = [], 0
        for chunk in _chunks(images, mini_batch_size):
            pixels = np.stack([self.prepare(im)[0] for im in chunk])
            source = f"images {done}..{done + len(chunk) - 1} of the input ({describe_image(chunk[0])} first)"
            results.append(self.scores_native(self.to_native(pixels), environment=environment, source=source))
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        if not results:
            raise OptionError("predict() got no images.")
        return np.concatenate(results, axis=0)

    def classify(self, image: Any, top_k: int = 5) -> list[tuple[int, str, float]]:
        """Top-k classes for one image: list of (index, name, score).

        Scores are probabilities (softmax is applied to a logits output for display).
        """
        top_k = check_int("top_k", top_k, minimum=1)
        pixels, _ = self.prepare(image)
        scores = self.scores_native(self.to_native(pixels[None]), source=describe_image(image))[0]
        probs = self.probabilities(scores[None])[0]
        order = np.argsort(-probs, kind="stable")[: min(top_k, len(probs))]
        return [(int(i), self.class_names[i], float(probs[i])) for i in order]

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Scores (N, C) as probabilities: unchanged for probability/sigmoid outputs, softmax of logits."""
        if self.output_kind in ("probabilities", "sigmoid", "score"):
            return scores
        z = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def label_index(self, label: Any) -> int:
        """Class index for an index or a class name (unknown names list close matches)."""
        return resolve_label(label, self.class_names)

    def label_indices(self, label: Any) -> list[int]:
        """Indices for one label or a list of labels."""
        if isinstance(label, (list, tuple, np.ndarray)):
            if len(label) == 0:
                raise OptionError("The 'label' parameter is an empty list; give at least one class.")
            return [self.label_index(lab.item() if isinstance(lab, np.generic) else lab) for lab in label]
        return [self.label_index(label.item() if isinstance(label, np.generic) else label)]

    # ---- gradients ---------------------------------------------------------------------
    def fused_model(self) -> onnx.ModelProto:
        """The graph with preprocessing in front: input ``pixels`` float32 (N, h, w, 3) raw pixels."""
        return fuse_preprocessing(self._run_proto, self.input_name, self.input_spec)

    def gradient_engine(self, environment: str | None = None, keep: Sequence[str] = ()):
        """The cached reverse-mode engine on :meth:`fused_model` for ``environment``.

        ``keep`` names inner tensors that graph preparation must not fold away or rename
        (layers a method will ask for); one engine is cached per (environment, keep).
        """
        env = check_provider(environment or self.provider)
        key = (env, tuple(sorted(set(keep))))
        if key not in self._engines:
            if self.input_dtype == np.uint8:
                raise ModelError(f"{self.path}: the model takes uint8 input, which has no gradient; use a "
                                 "forward-only method (LIME, occlusion, RISE, Score-CAM).")
            def session(proto: onnx.ModelProto, graph: str, **options: Any):
                return self.new_session(proto, env, graph=graph, **options)

            try:
                # ORT's CPU provider runs the fast HardSigmoid masks exactly; others get comparisons
                masks = "hardsigmoid" if ort_provider(env) == "CPUExecutionProvider" else "compare"
                self._engines[key] = GradientEngine(self.fused_model(), session_factory=session, keep=list(key[1]),
                                                    step_masks=masks)
            except GraphError as exc:
                # preparation compares its graph with the original on random images: a model whose
                # own output is NaN/inf fails that check, and the fault is the model's, not preparation's
                self._check_finite_on_probes()
                raise GradientGraphError(f"{self.path}: the gradient engine cannot use this graph: {exc}") from None
        return self._engines[key]

    def seed_for(self, index: int) -> np.ndarray:
        """Weights over the raw output that select class ``index`` (sigmoid class 0 = -p)."""
        if self.output_kind == "sigmoid":
            return np.array([1.0 if index == 1 else -1.0], dtype=np.float32)
        seed = np.zeros(self.num_classes, dtype=np.float32)
        seed[index] = 1.0
        return seed

    def _check_finite_on_probes(self) -> None:
        """Raise ModelError if the model's output is NaN/inf on a mid-grey or a random image."""
        if self.input_size is None:
            return
        h, w = self.input_size
        rng = np.random.default_rng(0)
        for what, pixels in (("a mid-grey image", np.full((1, h, w, 3), 127.5, np.float32)),
                             ("a random image", rng.uniform(0, 255, (1, h, w, 3)).astype(np.float32))):
            check_finite_output(self.run_native(self.to_native(pixels)), self.path, self.output_name, what)

    # ---- loading helpers ---------------------------------------------------------------
    def _find_output(self, path: str) -> tuple[int, str]:
        for i, out in enumerate(self._proto.graph.output):
            tt = out.type.tensor_type
            if tt.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
                return i, out.name
        raise ModelError(f"{path}: the model has no floating-point output to explain.")

    def _producer(self, name: str):
        for node in self._proto.graph.node:
            if name in node.output:
                return node
        return None

    def _detect_output_kind(self, override: str | None) -> tuple[str, str | None]:
        name = self.output_name
        node = self._producer(name)
        while node is not None and node.op_type in _PASS_THROUGH:
            name = node.input[0]
            node = self._producer(name)
        out = self._proto.graph.output[self._output_index].type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in out.shape.dim]
        width = int(np.prod([d for d in dims[1:] if d is not None])) if len(dims) > 1 else 1
        where = "output_kind"
        if override is None and self.manifest is not None:
            override = self.manifest.get("output", {}).get("kind")
            where = "manifest output kind"
        if override is not None:
            if override not in OUTPUT_KINDS:
                raise ModelError(f"{self.path}: {where} must be one of {list(OUTPUT_KINDS)}; got {override!r}.")
            kind = override
        elif node is not None and node.op_type in ("Softmax",):
            kind = "probabilities"
        elif node is not None and node.op_type == "Sigmoid" and width == 1:
            kind = "sigmoid"
        elif width == 1 and len(dims) <= 2:
            kind = "score"
        else:
            kind = "logits"
        logits = node.input[0] if node is not None and node.op_type == "Softmax" else None
        return kind, logits

    def _batchable_graph(self) -> tuple[onnx.ModelProto, bool]:
        """The graph to run: a static batch-1 graph is rewritten to a dynamic batch when that
        provably gives the same answers, else it is run image by image (``_loop``)."""
        if self.static_batch is None:
            return self._proto, False
        if self.static_batch != 1:
            raise ModelError(f"{self.path}: the model's input has a static batch of {self.static_batch}; "
                             "onnxplain supports a dynamic batch or a static batch of 1.")
        proto = onnx.ModelProto()
        proto.CopyFrom(self._proto)
        for vi in list(proto.graph.input) + list(proto.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
                dims[0].dim_param = "N"
        del proto.graph.value_info[:]
        try:
            batched = make_session(proto, "cpu", threads=self.threads)
            single = make_session(self._proto, "cpu", threads=self.threads)
            shape = list(self.input_spec.native_shape(2)) if self.input_size else None
            if shape is None:
                raise ModelError("dynamic size")
            rng = np.random.default_rng(0)
            x = rng.uniform(0, 1, shape).astype(self.input_dtype)
            both = batched.run([self.output_name], {self.input_name: x})[0]
            each = np.concatenate([single.run([self.output_name], {self.input_name: x[i:i + 1]})[0] for i in range(2)])
            if both.shape == each.shape and np.allclose(both, each, rtol=1e-4, atol=1e-5):
                return proto, False
        except Exception as exc:  # a hard-coded batch in a Reshape is the usual reason
            log.info("%s: batch rewrite failed (%s); running image by image", self.path, _first_line(exc))
        log.warning("%s: the model was exported with a static batch of 1 that cannot be rewritten; images "
                    "run one at a time (slower).", self.path)
        return self._proto, True

    def _resolve_labels(self, labels: Any) -> list[str]:
        n_out = self._probe_width()
        if labels is not None:
            names = read_labels(labels)
            where = "the labels argument"
        elif self.manifest is not None and "labels" in self.manifest:
            # trust boundary: a path from the manifest stays inside the model's folder
            names = read_labels(self.manifest["labels"], where="manifest labels", folder=self._folder)
            where = "the manifest"
        elif "onnxplain.labels" in self.metadata:
            try:
                raw = json.loads(self.metadata["onnxplain.labels"])
            except json.JSONDecodeError as exc:
                raise ModelError(f"ONNX metadata 'onnxplain.labels' is not valid JSON: {exc}") from None
            # inline list/mapping, or a file name inside the model's folder (never anywhere else)
            names = read_labels(raw, where="ONNX metadata 'onnxplain.labels'", folder=self._folder)
            where = "the ONNX metadata"
        else:
            width = 2 if self.output_kind == "sigmoid" else n_out
            return [str(i) for i in range(width)]
        expected = 2 if self.output_kind == "sigmoid" else n_out
        if len(names) != expected:
            raise ModelError(f"{self.path}: {where} gives {len(names)} class names but the model has "
                             f"{expected} classes.")
        return names

    def _probe_width(self) -> int:
        out = self._proto.graph.output[self._output_index].type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in out.shape.dim]
        if len(dims) >= 2 and all(d is not None for d in dims[1:]):
            return int(np.prod(dims[1:]))
        if self.input_size is None:
            raise ModelError(f"{self.path}: cannot tell the number of classes (dynamic output shape and no input size).")
        x = np.zeros(self.input_spec.native_shape(1), dtype=self.input_dtype)
        return int(np.prod(self.run_native(x).shape[1:]))


@shared_names
def load_model(path: str | os.PathLike | None = None, *, preprocessing: Any = None, labels: Any = None,
               provider: str | None = None, threads: int | None = None, precision: str = "f32",
               layout: str | None = None, output_kind: str | None = None,
               execution_environment: str | None = None, max_image_pixels: int | None = MAX_PIXELS) -> Model:
    """Load an ONNX image classifier.

    Parameters
    ----------
    path : str or PathLike, optional
        The .onnx file; None loads the bundled EfficientNet-Lite0 (ImageNet).
    preprocessing : {"imagenet", "none"}, mapping or Preprocessing, optional
        Overrides the declared preprocessing. Otherwise read from a manifest beside the
        model (``model.json`` for ``model.onnx``) or from ONNX metadata
        ``onnxplain.preprocessing``; a model declaring none must be given one.
    labels : list of str, or path to a .txt / .json file, optional
        Class names; else from the manifest, ONNX metadata ``onnxplain.labels``, or indices.
    provider : str, optional
        Where ONNX Runtime runs every graph: "auto" (default: CUDA when onnxruntime-gpu sees a
        GPU, else CPU), "cpu", "cuda" (or "gpu"), "tensorrt", "openvino" (needs
        ``onnxplain[openvino]``), or any ONNX Runtime provider name. A provider that cannot be
        used is an EnvironmentUnavailableError, never a silent CPU fallback (see
        :mod:`onnxplain.runtime`; :meth:`Model.runtime` tells which provider ran which graph).
    threads : int, optional
        ONNX Runtime intra-op threads for every session (default: ORT's, one per core).
    precision : {"f32", "reduced"}
        "f32" (default) keeps float32 arithmetic where a provider could lower it (OpenVINO's
        bf16 / f16); "reduced" lets the provider choose, and results record it.
    execution_environment : {"auto", "cpu", "gpu"}, optional
        The older name of ``provider`` (give one or the other).
    layout : {"NCHW", "NHWC"}, optional
        Overrides the layout detected from the input shape.
    output_kind : {"probabilities", "logits", "sigmoid", "score"}, optional
        Overrides the detected output kind.
    max_image_pixels : int or None, default 100_000_000
        Largest image file the model's methods decode (an ImageError names larger ones);
        None removes the limit. See :mod:`onnxplain.images` for the memory this bounds.

    Returns
    -------
    Model

    Raises
    ------
    ModelError
        Not an ONNX file or corrupt; not exactly one required input; input not image-like.
    """
    path = BUNDLED_MODEL if path is None else pathlib.Path(os.fspath(path))
    if not path.exists():
        raise ModelError(f"model file {str(path)!r} does not exist.")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: not an ONNX model file or corrupt ({_first_line(exc)}).") from None
    if not proto.graph.node:
        raise ModelError(f"{path}: not an ONNX model file or corrupt (the graph has no nodes).")
    manifest = None
    manifest_path = path.with_suffix(".json")
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelError(f"manifest {str(manifest_path)!r} is not valid JSON: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"manifest {str(manifest_path)!r} cannot be read: {exc}") from None
        _check_manifest(manifest, str(manifest_path))
        if layout is None:
            layout = manifest.get("input", {}).get("layout")
            if layout is not None and layout not in ("NCHW", "NHWC"):
                raise ModelError(f"manifest {str(manifest_path)!r}: input layout must be 'NCHW' or 'NHWC'; "
                                 f"got {layout!r}.")
    if execution_environment is not None and provider is not None and \
            check_provider(execution_environment) != check_provider(provider):
        raise OptionError(f"give 'provider' or its older name 'execution_environment', not both "
                          f"(got {provider!r} and {execution_environment!r}).")
    provider = provider or execution_environment or "auto"
    return Model(proto, path=str(path), preprocessing=preprocessing, labels=labels,
                 provider=provider, threads=threads, precision=precision, layout=layout, output_kind=output_kind,
                 manifest=manifest, max_image_pixels=max_image_pixels)


def _check_manifest(manifest: Any, where: str) -> None:
    """The manifest's shape: an object whose "input"/"output" entries (when present) are objects."""
    if not isinstance(manifest, dict):
        raise ModelError(f"manifest {where!r} must hold a JSON object with keys such as 'preprocessing', "
                         f"'labels', 'input', 'output'; got {type(manifest).__name__}.")
    for key in ("input", "output"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise ModelError(f"manifest {where!r}: {key!r} must be a JSON object (e.g. "
                             f"{{\"layout\": \"NCHW\"}} / {{\"kind\": \"logits\"}}); got {type(manifest[key]).__name__}.")


def check_finite_output(out: np.ndarray, path: str, output_name: str, source: str | None) -> None:
    """ModelError naming the output and the image(s) if ``out`` (batch first) holds NaN or inf."""
    out = np.asarray(out)
    if out.dtype.kind != "f" or out.size == 0:
        return
    finite = np.isfinite(out)
    if finite.all():
        return
    bad_rows = np.flatnonzero(~finite.reshape(len(out), -1).all(axis=1))
    kind = "NaN" if np.isnan(out).any() else "inf"
    where = source or "the input batch"
    rows = f"for {len(bad_rows)} of {len(out)} images in the batch " if len(out) > 1 else ""
    raise ModelError(f"{path}: output {output_name!r} is {kind} {rows}on {where}; the model gives no usable "
                     "scores there (a broken export, a float16 overflow, or input far outside what the "
                     "preprocessing expects).")


def _detect_layout(dims: Sequence[int | None], override: str | None, path: str, name: str) -> str:
    if override is not None:
        return check_choice("layout", override, ("NCHW", "NHWC"))
    c_first, c_last = dims[1] in (1, 3), dims[3] in (1, 3)
    if c_first and not c_last:
        return "NCHW"
    if c_last and not c_first:
        return "NHWC"
    if c_first and c_last:
        return "NCHW"
    raise ModelError(f"{path}: cannot tell the layout of input {name!r} with shape {_fmt(dims)} (no axis of size 3); "
                     "pass layout='NCHW' or 'NHWC'.")


def _fmt(dims: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    line = text[-1]
    # ONNX Runtime messages: drop the error-code prefix, C++ source paths and function signatures
    line = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", line)
    line = re.sub(r"/onnxruntime_src/\S+:\d+ ", "", line)
    line = re.sub(r"onnxruntime::[\w:<>]+\([^)]*\)( const)? ", "", line)
    return line[:400]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    iterable = items if not isinstance(items, np.ndarray) or items.ndim != 3 else [items]
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
