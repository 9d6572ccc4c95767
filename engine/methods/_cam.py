"""The class-activation-map family on one template (pytorch-grad-cam's ``BaseCAM`` shape).

Every CAM method computes ``map = ReLU(sum_k w_k A_k)`` over the channels ``A_k`` of a
feature layer; the methods differ only in how the channel weights ``w_k`` are obtained:

- :class:`GradientCAM` subclasses run the gradient engine once per mini-batch of targets
  and turn (activations, gradients) into weights in :meth:`GradientCAM.channel_weights`
  (Grad-CAM: the spatial mean of the gradient; Grad-CAM++: the weighted positive gradient);
- Score-CAM (``scorecam.py``) is forward-only: it taps the feature layer and scores the
  image masked by each upsampled channel.

Maps stay raw (no normalisation); upsampling follows ``output_upsampling``.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._validation import check_choice, check_int
from ..errors import ModelError
from ..images import describe_image, resize_map
from ..model import Model
from ..result import Explanation
from . import _targets as T
from .context import check_finite_scores, start, start_batch
from .layers import FeatureLayer, engine_for, feature_layer_for

UPSAMPLING = ("bicubic", "bilinear", "nearest", "none")
Progress = Callable[[int, int], None] | None


class CAMMethod:
    """Template: resolve layer and targets, get (activations, weights), combine, upsample."""

    name = "cam"
    #: whether the method differentiates (forward-only methods skip the gradient probe and the
    #: numeric gradient of callables)
    uses_gradients = True

    def explain(self, model: Model, image: Any, label: Any = None, *, reduction: Any = None,
                feature_layer: str | list[str] | None = None, reduction_layer: str | None = None,
                output_upsampling: str = "bicubic", feature_layout: str | None = None,
                execution_environment: str | None = None, mini_batch_size: int = 32,
                progress: Progress = None) -> Explanation:
        started = time.perf_counter()
        if isinstance(feature_layer, (list, tuple)):
            return self._explain_fused(model, image, label, reduction=reduction, feature_layers=list(feature_layer),
                                       reduction_layer=reduction_layer, output_upsampling=output_upsampling,
                                       feature_layout=feature_layout, execution_environment=execution_environment,
                                       mini_batch_size=mini_batch_size, progress=progress, started=started)
        check_choice("output_upsampling", output_upsampling, UPSAMPLING)
        mini_batch_size = check_int("mini_batch_size", mini_batch_size, minimum=1)
        pixels, original, env = start(model, image, execution_environment)
        layer = feature_layer_for(model, feature_layer, feature_layout=feature_layout, environment=env,
                                  allow_probe=self.uses_gradients)
        tensor, is_output = T.resolve_reduction_layer(model, reduction_layer)
        shape = T.per_sample_shape(model, tensor, is_output)
        t0 = time.perf_counter()
        first = (self.top_class_run(model, pixels, layer, env)
                 if T.top_in_graph(model, label, reduction, is_output, shape) else None)
        targets = T.resolve_targets(model, pixels, label if first is None else int(first["target"][0]), reduction,
                                    tensor, is_output, shape,
                                    lambda: T.reduction_value(model, pixels, tensor, is_output, env),
                                    env, differentiate=self.uses_gradients)
        timings: dict[str, float] = {"setup": t0 - started}
        acts, weights, scores = self.activations_and_weights(model, pixels, layer, targets, env, mini_batch_size,
                                                              progress, first)
        timings["inference"] = time.perf_counter() - t0
        check_finite_scores(model, tensor, scores, image)
        if not (np.all(np.isfinite(weights)) and np.all(np.isfinite(acts))):
            raise ModelError(f"{model.path}: the activations of feature layer {layer.name!r} or their channel "
                             f"weights are NaN or inf on {describe_image(image)}.")
        cam = self.combine(acts, weights).astype(np.float32)  # (K, h, w) at the feature map's size
        cam_hwk = np.ascontiguousarray(cam.transpose(1, 2, 0))
        if output_upsampling == "none":
            maps = cam_hwk
        else:
            maps = resize_map(cam_hwk, original, output_upsampling)
        multi = T.is_multi(label, reduction)
        timings["total"] = time.perf_counter() - started
        return self._explanation(model, layer, tensor, targets, cam_hwk, maps, weights, scores, multi,
                                 output_upsampling, mini_batch_size, env, started, timings)

    def _explanation(self, model, layer, tensor, targets, cam_hwk, maps, weights, scores, multi, output_upsampling,
                     mini_batch_size, env, started, timings) -> Explanation:
        """The Explanation of one image's CAM (single and batched calls alike)."""
        params = {"feature_layer": layer.name, "reduction_layer": tensor, "output_upsampling": output_upsampling,
                  "feature_layout": layer.layout, "reduction": targets.kind, "mini_batch_size": mini_batch_size,
                  "execution_environment": env, "runtime": model.runtime(env, since=started)}
        extras = {"feature_layer": layer.name, "reduction_layer": tensor, "cam": cam_hwk if multi else cam_hwk[..., 0],
                  "channel_weights": weights if multi else weights[0], "feature_layout": layer.layout}
        return Explanation(self.name, maps if multi else maps[..., 0], list(targets.labels), list(targets.names),
                           np.asarray(scores, np.float32), params, extras, dict(timings))

    def _explain_fused(self, model, image, label, *, feature_layers, output_upsampling, started, **options):
        """Several feature layers (pytorch-grad-cam's multi-layer aggregation): each layer's map at
        the image size, clipped at 0 and min-max scaled to [0, 1] per target, then averaged."""
        if not feature_layers:
            raise ValueError("The 'feature_layer' parameter is an empty list; give one or more tensor names.")
        if len(feature_layers) == 1:
            return self.explain(model, image, label, feature_layer=feature_layers[0],
                                output_upsampling=output_upsampling, **options)
        if output_upsampling == "none":
            raise ValueError("several feature layers are fused at the image size; output_upsampling='none' gives "
                             "each layer's own size. Choose 'bicubic', 'bilinear' or 'nearest'.")
        parts = [self.explain(model, image, label, feature_layer=name, output_upsampling=output_upsampling,
                              **options) for name in feature_layers]
        scaled = []
        for part in parts:
            m = np.maximum(part.score_map.astype(np.float64), 0.0)
            m = m if m.ndim == 3 else m[..., None]
            lo = m.min(axis=(0, 1), keepdims=True)
            span = m.max(axis=(0, 1), keepdims=True) - lo
            scaled.append(np.divide(m - lo, span, out=np.zeros_like(m), where=span > 0))
        fused = np.mean(scaled, axis=0).astype(np.float32)
        first = parts[0]
        fused = fused if first.score_map.ndim == 3 else fused[..., 0]
        params = {**first.params, "feature_layer": list(feature_layers), "fusion": "mean of [0, 1]-scaled maps",
                  "runtime": model.runtime(first.params["execution_environment"], since=started)}
        extras = {"feature_layer": list(feature_layers), "layer_maps": [p.score_map for p in parts],
                  "cam": [p.cam for p in parts], "reduction_layer": first.reduction_layer}
        timings = {"total": time.perf_counter() - started}
        return Explanation(self.name, fused, first.labels, first.label_names, first.scores, params, extras, timings)

    def combine(self, acts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(K, h, w) map from activations (K, C, h, w) and channel weights (K, C), or
        element weights (K, C, h, w) (HiResCAM, LayerCAM): ReLU(sum_c w * A)."""
        a = acts.astype(np.float64)
        w = weights.astype(np.float64)
        # one target at a time: the same arithmetic whatever the number of targets (batched
        # labels must equal one call per label bit for bit, even for maps that are ~0)
        summed = np.stack([np.tensordot(w[k], a[k], axes=1) if w.ndim == 2 else (w[k] * a[k]).sum(axis=0)
                           for k in range(len(a))])
        return np.maximum(summed, 0.0)

    # ---- steps the subclasses provide ---------------------------------------------------
    def activations_and_weights(self, model: Model, pixels: np.ndarray, layer: FeatureLayer, targets: T.Targets,
                                env: str, mini_batch_size: int, progress: Progress, first: dict | None = None
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(activations (K, C, h, w), channel weights (K, C), explained scores (K,)).

        ``first`` is :meth:`top_class_run`'s output when the default target was chosen in
        the graph (then ``targets`` is that one class)."""
        raise NotImplementedError

    def top_class_run(self, model: Model, pixels: np.ndarray, layer: FeatureLayer, env: str) -> dict | None:
        """One run that also picks the default target (the top class), or None to resolve it
        with a forward pass first (the default)."""
        return None


class GradientCAM(CAMMethod):
    """CAM methods whose weights come from the gradient at the feature layer."""

    def channel_weights(self, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """(K, C) weights from activations and gradients (K, C, h, w)."""
        raise NotImplementedError

    def activations_and_weights(self, model, pixels, layer, targets, env, mini_batch_size, progress, first=None):
        if first is not None:
            acts, grads, r = _unpack(layer, first)
            if progress is not None:
                progress(1, 1)
        else:
            acts, grads, r = feature_gradients(model, pixels, layer, targets, env, mini_batch_size, progress)
        return acts, self.channel_weights(acts, grads), targets.scores(r)

    def top_class_run(self, model, pixels, layer, env):
        # the graph picks the top class: no separate forward pass to find it
        engine = engine_for(model, env, [layer.name])
        return engine.run(pixels[None], None, wrt=[layer.name], activations=[layer.name])

    def explain_batch(self, model: Model, pixels: np.ndarray, labels: Sequence[Any] | None = None, *,
                      feature_layer: str | None = None, reduction_layer: str | None = None,
                      output_upsampling: str = "bicubic", feature_layout: str | None = None,
                      execution_environment: str | None = None, mini_batch_size: int = 32
                      ) -> tuple[list[Explanation], np.ndarray]:
        """Explain B working images at once: many images per engine run (dataset mode).

        Parameters
        ----------
        pixels : float32 (B, h, w, 3)
            Images already at the model's input size (``model.prepare(image)[0]``); maps are
            returned at that size, exactly as :meth:`explain` on each image would return them.
        labels : None, or one entry per image: a class (int/str) or a list of classes
            None: each image's top class, chosen inside the gradient graph. An entry that is
            a list gives that image's map a trailing K axis, as ``label=[...]`` does.
        mini_batch_size : int
            Rows (image x class) per engine run.

        Returns
        -------
        (list of B Explanations, raw model output rows (B, ...) of each image's first row)
            Each Explanation equals :meth:`explain` on that image (same maps, scores, params).
        """
        started = time.perf_counter()
        check_choice("output_upsampling", output_upsampling, UPSAMPLING)
        mini_batch_size = check_int("mini_batch_size", mini_batch_size, minimum=1)
        pixels, env = start_batch(model, pixels, execution_environment, "explain_batch")
        layer = feature_layer_for(model, feature_layer, feature_layout=feature_layout, environment=env,
                                  allow_probe=self.uses_gradients)
        tensor, is_output = T.resolve_reduction_layer(model, reduction_layer)
        shape = T.per_sample_shape(model, tensor, is_output)
        count = len(pixels)
        if labels is None and not T.top_in_graph(model, None, None, is_output, shape):
            raise ValueError("explain_batch: the top class can be chosen in the graph only for a classifier output; "
                             "give labels (or explain image by image).")
        if labels is not None and len(labels) != count:
            raise ValueError(f"explain_batch: {len(labels)} label lists for {count} images.")
        t0 = time.perf_counter()
        rows: list[tuple[int, int]] = []          # (image, k) per engine row
        chosen: list[list[int]] = []
        if labels is None:
            engine = engine_for(model, env, [layer.name])
            outs = [engine.run(pixels[s:s + mini_batch_size], None, wrt=[layer.name], activations=[layer.name])
                    for s in range(0, count, mini_batch_size)]
            chosen = [[int(t)] for o in outs for t in o["target"]]
            rows = [(b, 0) for b in range(count)]
            targets = [T.resolve_targets(model, pixels[b], chosen[b][0], None, tensor, is_output, shape,
                                         _no_evaluate, env, differentiate=True) for b in range(count)]
        else:
            targets = [T.resolve_targets(model, pixels[b], labels[b], None, tensor, is_output, shape,
                                         _no_evaluate, env, differentiate=True) for b in range(count)]
            rows = [(b, k) for b in range(count) for k in range(targets[b].count)]
            engine = engine_for(model, env, [layer.name] + ([] if is_output else [tensor]))
            reduction = None if is_output else tensor
            outs = []
            for s in range(0, len(rows), mini_batch_size):
                chunk = rows[s:s + mini_batch_size]
                seeds = np.stack([targets[b].seeds[k] for b, k in chunk])
                batch = pixels[[b for b, _ in chunk]]
                outs.append(engine.run(batch, seeds, wrt=[layer.name], activations=[layer.name], reduction=reduction))
        acts, grads, r = (np.concatenate(v) for v in zip(*(_unpack(layer, o) for o in outs)))
        output = np.concatenate([np.asarray(o["output"]) for o in outs])
        inference = time.perf_counter() - t0
        results, first_rows = [], []
        for b in range(count):
            idx = [i for i, (bb, _) in enumerate(rows) if bb == b]
            first_rows.append(idx[0])
            multi = labels is not None and isinstance(labels[b], (list, tuple, np.ndarray))
            results.append(self._finish(model, pixels[b], layer, tensor, targets[b], acts[idx], grads[idx], r[idx],
                                        output_upsampling, mini_batch_size, env, multi,
                                        {"setup": t0 - started, "inference": inference, "batch_images": count},
                                        started))
        total = time.perf_counter() - started
        for e in results:
            e.timings["total"] = total
        return results, output[first_rows]

    def _finish(self, model, pixels, layer, tensor, targets, acts, grads, r, output_upsampling, mini_batch_size, env,
                multi, timings, started) -> Explanation:
        """One image's Explanation from its rows, as :meth:`explain` computes it."""
        weights, scores = self.channel_weights(acts, grads), targets.scores(r)
        check_finite_scores(model, tensor, scores, pixels)         # as explain(): NaN/inf are the model's
        if not (np.all(np.isfinite(weights)) and np.all(np.isfinite(acts))):
            raise ModelError(f"{model.path}: the activations of feature layer {layer.name!r} or their channel "
                             f"weights are NaN or inf on {describe_image(pixels)}.")
        cam = self.combine(acts, weights).astype(np.float32)     # the single call's arithmetic
        cam_hwk = np.ascontiguousarray(cam.transpose(1, 2, 0))
        maps = cam_hwk if output_upsampling == "none" else upsample(cam_hwk, pixels.shape[:2], output_upsampling)
        return self._explanation(model, layer, tensor, targets, cam_hwk, maps, weights, scores, multi,
                                 output_upsampling, mini_batch_size, env, started, timings)


def upsample(maps_hwk: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """:func:`resize_map` of a (h, w, 1) map as two matrix products ``A_y @ m @ A_x.T``.

    ``resize_map`` (scipy's spline zoom) is linear and separable, so resizing the identity
    along each axis gives its matrices (built once per shape and cached); the products run
    in float64 and are cast to float32 like ``resize_map``. About 1000 times faster than
    calling ``resize_map`` per map (a 7 x 7 -> 224 x 224 bicubic upsample costs more than
    the Grad-CAM engine run itself); the test suite checks the results equal
    ``resize_map``'s (the single-image Grad-CAM's maps) bit for bit.
    """
    h, w = maps_hwk.shape[:2]
    if (h, w) == tuple(size) or maps_hwk.shape[2] != 1:
        # several labels: resize_map's spline also runs along the label axis (a last-bit
        # effect the matrices would not reproduce), so those keep resize_map itself
        return resize_map(maps_hwk, size, method)
    ay, ax = _resize_matrices(h, w, int(size[0]), int(size[1]), method)
    m = maps_hwk.astype(np.float64)
    out = np.stack([ay @ m[:, :, k] @ ax.T for k in range(m.shape[2])], axis=2)
    return out.astype(np.float32)


@functools.lru_cache(maxsize=16)
def _resize_matrices(h: int, w: int, height: int, width: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 matrices of ``resize_map``'s resize along each axis (same call, kept in float64)."""
    from skimage.transform import resize

    order = {"nearest": 0, "bilinear": 1, "bicubic": 3}[method]
    kw = {"order": order, "mode": "edge", "anti_aliasing": False, "preserve_range": True, "clip": False}
    return resize(np.eye(h), (height, h), **kw), resize(np.eye(w), (width, w), **kw)


def _no_evaluate():
    raise AssertionError("class targets need no forward pass")


def _unpack(layer: FeatureLayer, out: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(activations, gradients) at the feature layer as NCHW, and R, from one engine run."""
    r = np.asarray(out["reduction"] if "reduction" in out else out["output"], np.float32)
    return layer.to_nchw(out[layer.name]), layer.to_nchw(out[f"grad:{layer.name}"]), r


def feature_gradients(model: Model, pixels: np.ndarray, layer: FeatureLayer, targets: T.Targets, env: str,
                      mini_batch_size: int, progress: Progress = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Activations and gradients (K, C, h, w) at the feature layer and R values (K, ...), one row per target.

    The image is replicated once per target; each row carries its own seed, so K targets
    cost ceil(K / mini_batch_size) engine runs.
    """
    engine = engine_for(model, env, [layer.name] + ([] if targets.is_output else [targets.tensor]))
    reduction = None if targets.is_output else targets.tensor
    acts, grads, rs = [], [], []
    total = targets.count
    for first in range(0, total, mini_batch_size):
        seeds = targets.seeds[first:first + mini_batch_size]
        batch = np.repeat(pixels[None], len(seeds), axis=0)
        out = engine.run(batch, seeds, wrt=[layer.name], activations=[layer.name], reduction=reduction)
        for part, value in zip((acts, grads, rs), _unpack(layer, out)):
            part.append(value)
        if progress is not None:
            progress(min(first + len(seeds), total), total)
    return np.concatenate(acts), np.concatenate(grads), np.concatenate(rs)
