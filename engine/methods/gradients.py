"""Gradient attribution (the MATLAB gradient-attribution example) on the gradient engine.

All methods differentiate the class score ``S_c`` (the model output's class entry:
the probability for a model ending in Softmax, as MATLAB's example; or any ``reduction``
as in Grad-CAM, see :mod:`onnxplain.methods._targets`) with respect to the raw image pixels:
preprocessing is fused in front of the graph, so gradients are in the
image's own units, laid out (H, W, C) like the image.

- "gradient": ``dS_c/dI`` (captum ``Saliency(abs=False)``);
- "guided-backprop": at rectifiers ``g_in = (x > 0) * max(g_out, 0)`` (Relu, and Clip with
  lower bound 0 = ReLU6; captum ``GuidedBackprop`` on ReLU networks);
- "zeiler-fergus": ``g_in = max(g_out, 0)`` (deconvnet; captum ``Deconvolution``);
- "integrated-gradients": ``(I - I0) * sum_n w_n dS_c/dI(I0 + a_n (I - I0))`` with
  ``a_n = n / (num_steps - 1)``, n = 0..num_steps-1, and trapezoid weights ``w`` (both ends
  halved): captum ``IntegratedGradients(method="riemann_trapezoid")``; the baseline ``I0``
  is black (zeros in pixel units) by default; all path images are batched;
- "smoothgrad": the mean gradient over ``num_samples`` copies of the image with Gaussian
  noise, ``sigma = noise_level * (max - min)`` of the image's values;
- "gradient-x-input": ``I * dS_c/dI`` (pixels as given, so the implicit baseline is black).

Size rule: gradients are computed for the working image (the image resized to the
model's input size). ``extras["working_gradients"]`` holds them exactly; ``gradients`` is
that array resized bilinearly to the image's own size (per-pixel values, not rescaled by
the area ratio), and ``score_map = sum_c |gradients|`` at that size. When the image
already has the model's size both are the same array.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .._validation import (
    as_generator,
    check_choice,
    check_float,
    check_int,
    describe_seed,
    shared_names,
)
from ..errors import ModelError, OptionError, OptionTypeError
from ..images import describe_image, load_image, resize_image, resize_map
from ..model import Model
from ..result import Explanation
from . import _targets as T
from ._limits import check_allow_long, check_work
from .context import Progress, check_finite_scores, start, start_batch
from .layers import engine_for, tapped_run

__all__ = ["BATCHABLE", "METHODS", "SAMPLED", "gradient_attribution", "gradient_attribution_batch",
           "gradient_attribution_samples_batch"]

METHODS = ("gradient", "guided-backprop", "zeiler-fergus", "integrated-gradients", "smoothgrad",
           "gradient-x-input")
_RELU_MODE = {"guided-backprop": "guided", "zeiler-fergus": "deconvnet"}


def _check_counts(method: str, choices: Sequence[str], mini_batch_size: Any, num_steps: Any, num_samples: Any,
                  noise_level: Any) -> tuple[int, int, int, float]:
    """The method name and the sample counts every gradient entry point takes."""
    check_choice("method", method, choices)
    return (check_int("mini_batch_size", mini_batch_size, minimum=1), check_int("num_steps", num_steps, minimum=2),
            check_int("num_samples", num_samples, minimum=1), check_float("noise_level", noise_level, minimum=0.0))


@shared_names
def gradient_attribution(model: Model, image: Any, label: Any = None, *, method: str = "gradient",
                         baseline: Any = None, num_steps: int = 25, num_samples: int = 25,
                         noise_level: float = 0.15, mini_batch_size: int = 32, random_state: Any = None,
                         reduction: Any = None, reduction_layer: str | None = None,
                         execution_environment: str | None = None, progress: Progress = None,
                         allow_long: bool = False) -> Explanation:
    """Pixel attribution of a class score by gradients (see the module docstring for the methods).

    Parameters
    ----------
    model : Model
        From :func:`onnxplain.load_model`, differentiable by the gradient engine (float input).
    image : path or ndarray (H, W[, C])
    label : int, str or list, optional
        Class(es) to explain; None = the model's top class; a list gives a trailing K axis.
    method : {"gradient", "guided-backprop", "zeiler-fergus", "integrated-gradients", "smoothgrad", "gradient-x-input"}
    baseline : None, float, (3,) or image-shaped array, optional
        Integrated-gradients baseline in pixel units: None = black (zeros); a number or a
        per-channel colour fills the image; an array of the image's or the model's size.
    num_steps : int
        Integrated-gradients path points (>= 2), both ends included.
    num_samples : int
        SmoothGrad noisy copies.
    noise_level : float
        SmoothGrad noise standard deviation as a fraction of the image's value range.
    mini_batch_size : int
        Images per engine run (path points / noisy copies of all labels are batched).
    random_state : int, Generator or None
        SmoothGrad noise; same seed -> identical output.
    reduction, reduction_layer : optional
        What to differentiate instead of a class of the model output, exactly as in
        :func:`onnxplain.grad_cam` (weights, :class:`onnxplain.ClassRegion`, a callable, or the
        tensor before a final Softmax with ``reduction_layer="logits"``).
    execution_environment : {"auto", "cpu", "gpu"}, optional
    progress : callable(done, total), optional
    allow_long : bool
        Run more than the work bound of 100,000 engine runs per call (``num_steps`` or
        ``num_samples`` times the number of labels; see ``onnxplain.methods._limits``).

    Returns
    -------
    Explanation
        ``score_map`` float32 (H, W[, K]) = sum over channels of |gradients|; extras
        ``gradients`` float32 (H, W, 3[, K]) signed per-channel attribution at the image's
        size, ``working_gradients`` (h, w, 3[, K]) at the model's input size. ``scores``
        are the class scores on the working image.

    Raises
    ------
    ValueError, TypeError
        Unknown method, bad counts/levels/baseline; a graph the engine cannot differentiate.
    """
    started = time.perf_counter()
    mini_batch_size, num_steps, num_samples, noise_level = _check_counts(
        method, METHODS, mini_batch_size, num_steps, num_samples, noise_level)
    if baseline is not None and method != "integrated-gradients":
        raise OptionError(f"The 'baseline' parameter applies only to method='integrated-gradients'; got "
                         f"method={method!r}.")
    per_label = num_steps if method == "integrated-gradients" else num_samples if method == "smoothgrad" else 1
    labels_n = len(label) if isinstance(label, (list, tuple, np.ndarray)) else 1
    option = "num_steps" if method == "integrated-gradients" else "num_samples"
    check_work(model, f"{option}={per_label:,} x {labels_n} label(s)", per_label * labels_n,
               allow_long=check_allow_long(allow_long), environment=execution_environment)
    pixels, original, env = start(model, image, execution_environment)
    tensor, is_output = T.resolve_reduction_layer(model, reduction_layer)
    shape = T.per_sample_shape(model, tensor, is_output)
    base = _baseline(baseline, pixels, original) if method == "integrated-gradients" else None
    rng = as_generator(random_state) if method == "smoothgrad" else None
    plan = _Plan.build(method, pixels, base, num_steps, num_samples, noise_level, rng)
    engine = engine_for(model, env, [] if is_output else [tensor])
    relu_mode = _RELU_MODE.get(method, "standard")
    t0 = time.perf_counter()
    first = None
    if plan.count == 1 and T.top_in_graph(model, label, reduction, is_output, shape):
        # The image is the only sample: let the graph pick the top class (one run, no
        # separate forward pass to find it); targets below then name that class.
        first = engine.run(pixels[None], None, wrt=[engine.input_name], relu_mode=relu_mode)
    targets = T.resolve_targets(model, pixels, label if first is None else int(first["target"][0]), reduction,
                                tensor, is_output, shape,
                                lambda: T.reduction_value(model, pixels, tensor, is_output, env), env)
    multi = T.is_multi(label, reduction)
    seeds = targets.seeds                                                          # (K, *R shape)
    k_count = targets.count
    total = k_count * plan.count
    acc = np.zeros((k_count, *pixels.shape), np.float64)
    r_at_image: dict[int, np.ndarray] = {}
    done = 0
    for rows in _batches(k_count, plan.count, mini_batch_size):
        if first is not None:  # the single row (k=0, s=0), already run
            out = first
        else:
            batch = np.stack([plan.image(s) for _, s in rows])
            out = engine.run(batch, seeds[[k for k, _ in rows]], wrt=[engine.input_name], relu_mode=relu_mode,
                             reduction=None if is_output else tensor)
        grads = np.asarray(out[f"grad:{engine.input_name}"], np.float64)
        ks = np.array([k for k, _ in rows])
        ss = np.array([s for _, s in rows])
        # unbuffered, in row order: the same sums as one += per row
        np.add.at(acc, ks, plan.weights[ss].reshape(-1, 1, 1, 1) * grads)
        for row in np.flatnonzero(ss == plan.exact):  # the image itself: keep R for the reported score
            r_at_image[int(ks[row])] = out["reduction"][row]
        done += len(rows)
        if progress is not None:
            progress(done, total)
    inference = time.perf_counter() - t0
    attribution = plan.finish(acc, pixels).astype(np.float32)                    # (K, h, w, 3)
    working = np.ascontiguousarray(attribution.transpose(1, 2, 3, 0))            # (h, w, 3, K)
    full = working
    if tuple(original) != tuple(working.shape[:2]):
        h, w, c, k = working.shape
        full = resize_map(working.reshape(h, w, c * k), original, "bilinear").reshape(*original, c, k)
    score = np.abs(full).sum(axis=2)
    if len(r_at_image) < k_count:
        r0 = np.asarray(T.reduction_value(model, pixels, tensor, is_output, env), np.float32)
        r_at_image = {k: r0 for k in range(k_count)}
    scores = targets.scores(np.stack([r_at_image[k] for k in range(k_count)]))
    check_finite_scores(model, targets.tensor, scores, image)
    if not np.all(np.isfinite(acc)):
        raise ModelError(f"{model.path}: the gradient of {targets.tensor!r} is NaN or inf on "
                         f"{describe_image(image)} although the scores are finite (an op whose derivative "
                         "is infinite at this input, e.g. sqrt or log at 0).")
    params = {"method": method, "mini_batch_size": mini_batch_size, "execution_environment": env,
              "runtime": model.runtime(env, since=started),
              "relu_mode": relu_mode, "reduction_layer": tensor, "reduction": targets.kind}
    if method == "integrated-gradients":
        params.update(num_steps=num_steps, baseline="black" if baseline is None else "custom")
    if method == "smoothgrad":
        params.update(num_samples=num_samples, noise_level=noise_level, noise_sigma=plan.sigma,
                      random_state=describe_seed(random_state))
    extras = {"gradients": full if multi else full[..., 0], "working_gradients": working if multi else working[..., 0]}
    timings = {"inference": inference, "total": time.perf_counter() - started}
    return Explanation(method, (score if multi else score[..., 0]).astype(np.float32), list(targets.labels),
                       list(targets.names), scores, params, extras, timings)


#: the methods with one sample per image (the image itself), which batch across images
BATCHABLE = ("gradient", "guided-backprop", "zeiler-fergus", "gradient-x-input")


def gradient_attribution_batch(model: Model, pixels: np.ndarray, labels: Sequence[Any] | None = None, *,
                               method: str = "gradient", mini_batch_size: int = 32,
                               reduction_layer: str | None = None, execution_environment: str | None = None
                               ) -> tuple[list[Explanation], np.ndarray]:
    """:func:`gradient_attribution` of B working images at once: many images per engine run.

    For the methods in :data:`BATCHABLE` (one sample per image; integrated gradients and
    SmoothGrad already fill mini-batches with one image's samples).

    Parameters
    ----------
    pixels : float32 (B, h, w, 3)
        Images already at the model's input size; maps come back at that size.
    labels : None, or one entry per image: a class (int/str) or a list of classes
        None: each image's top class, chosen inside the gradient graph.
    mini_batch_size : int
        Rows (image x class) per engine run.

    Returns
    -------
    (list of B Explanations, raw model output rows (B, ...) of each image's first row)
        Each Explanation equals :func:`gradient_attribution` on that image.
    """
    started = time.perf_counter()
    check_choice("method", method, BATCHABLE)
    mini_batch_size = check_int("mini_batch_size", mini_batch_size, minimum=1)
    pixels, env = start_batch(model, pixels, execution_environment, "gradient_attribution_batch")
    tensor, is_output = T.resolve_reduction_layer(model, reduction_layer)
    shape = T.per_sample_shape(model, tensor, is_output)
    engine = engine_for(model, env, [] if is_output else [tensor])
    relu_mode = _RELU_MODE.get(method, "standard")
    count = len(pixels)
    if labels is None and not T.top_in_graph(model, None, None, is_output, shape):
        raise ValueError("gradient_attribution_batch: the top class can be chosen in the graph only for a "
                         "classifier output; give labels (or explain image by image).")
    if labels is not None and len(labels) != count:
        raise ValueError(f"gradient_attribution_batch: {len(labels)} label entries for {count} images.")
    t0 = time.perf_counter()
    wrt = [engine.input_name]
    if labels is None:
        outs = [engine.run(pixels[s:s + mini_batch_size], None, wrt=wrt, relu_mode=relu_mode)
                for s in range(0, count, mini_batch_size)]
        chosen = [int(t) for o in outs for t in o["target"]]
        targets = [T.resolve_targets(model, pixels[b], chosen[b], None, tensor, is_output, shape, _no_evaluate, env)
                   for b in range(count)]
        rows = [(b, 0) for b in range(count)]
    else:
        targets = [T.resolve_targets(model, pixels[b], labels[b], None, tensor, is_output, shape, _no_evaluate, env)
                   for b in range(count)]
        rows = [(b, k) for b in range(count) for k in range(targets[b].count)]
        outs = []
        for s in range(0, len(rows), mini_batch_size):
            chunk = rows[s:s + mini_batch_size]
            seeds = np.stack([targets[b].seeds[k] for b, k in chunk])
            outs.append(engine.run(pixels[[b for b, _ in chunk]], seeds, wrt=wrt, relu_mode=relu_mode,
                                   reduction=None if is_output else tensor))
    grads = np.concatenate([np.asarray(o[f"grad:{engine.input_name}"], np.float64) for o in outs])
    r_all = np.concatenate([np.asarray(o["reduction"]) for o in outs])
    output = np.concatenate([np.asarray(o["output"]) for o in outs])
    inference = time.perf_counter() - t0
    params = {"method": method, "mini_batch_size": mini_batch_size, "execution_environment": env,
              "runtime": model.runtime(env, since=started),
              "relu_mode": relu_mode, "reduction_layer": tensor}
    results, first_rows = [], []
    for b in range(count):
        idx = [i for i, (bb, _) in enumerate(rows) if bb == b]
        first_rows.append(idx[0])
        px = pixels[b]
        # as gradient_attribution: 0 + 1.0 * g, then the method's finish (x input for gradient-x-input)
        acc = np.zeros((len(idx), *px.shape), np.float64) + grads[idx]
        scores = targets[b].scores(r_all[idx])
        check_finite_scores(model, targets[b].tensor, scores, px)   # as gradient_attribution
        if not np.all(np.isfinite(acc)):
            raise ModelError(f"{model.path}: the gradient of {targets[b].tensor!r} is NaN or inf on "
                             f"{describe_image(px)} although the scores are finite (an op whose derivative "
                             "is infinite at this input, e.g. sqrt or log at 0).")
        attribution = (acc * px.astype(np.float64) if method == "gradient-x-input" else acc).astype(np.float32)
        working = np.ascontiguousarray(attribution.transpose(1, 2, 3, 0))            # (h, w, 3, K)
        score = np.abs(working).sum(axis=2)
        multi = labels is not None and isinstance(labels[b], (list, tuple, np.ndarray))
        extras = {"gradients": working if multi else working[..., 0],
                  "working_gradients": working if multi else working[..., 0]}
        timings = {"inference": inference, "batch_images": count}
        results.append(Explanation(method, (score if multi else score[..., 0]).astype(np.float32),
                                   list(targets[b].labels), list(targets[b].names), scores,
                                   {**params, "reduction": targets[b].kind}, extras, timings))
    total = time.perf_counter() - started
    for e in results:
        e.timings["total"] = total
    return results, output[first_rows]


#: the methods with several samples per image (path points, noisy copies); their dataset batch
#: puts several images' samples into one engine run (:func:`gradient_attribution_samples_batch`)
SAMPLED = ("integrated-gradients", "smoothgrad")


def gradient_attribution_samples_batch(model: Model, pixels: np.ndarray, labels: Sequence[Any], *,
                                       method: str = "integrated-gradients", num_steps: int = 25,
                                       num_samples: int = 25, noise_level: float = 0.15, mini_batch_size: int = 32,
                                       random_state: Any = None, reduction_layer: str | None = None,
                                       execution_environment: str | None = None, allow_long: bool = False
                                       ) -> tuple[list[Explanation], np.ndarray]:
    """Integrated gradients or SmoothGrad of B working images with their samples pooled: each
    engine run takes ``mini_batch_size`` rows (image x class x sample) from as many images as
    fill it, instead of one image's samples at a time.

    Each Explanation is :func:`gradient_attribution` on that image with the same options (the
    image's rows, its sums in the same order; ``random_state`` is applied per image as the
    single call applies it: an int seeds each image's noise alike, a Generator is drawn from
    image after image). Equal up to ONNX Runtime's float32 rounding for another batch
    composition (the tests compare them).

    Parameters
    ----------
    pixels : float32 (B, h, w, 3)
        Images already at the model's input size; maps come back at that size.
    labels : one entry per image: a class (int/str) or a list of classes
        Given explicitly (a dataset run knows each image's top class from its predictions).

    Returns
    -------
    (list of B Explanations, raw model output rows (B, ...) of each image)
    """
    started = time.perf_counter()
    mini_batch_size, num_steps, num_samples, noise_level = _check_counts(
        method, SAMPLED, mini_batch_size, num_steps, num_samples, noise_level)
    pixels, env = start_batch(model, pixels, execution_environment, "gradient_attribution_samples_batch")
    count = len(pixels)
    if labels is None or len(labels) != count:
        raise ValueError(f"gradient_attribution_samples_batch: give one label entry per image ({count} images); got "
                         f"{None if labels is None else len(labels)}.")
    per_label = num_steps if method == "integrated-gradients" else num_samples
    option = "num_steps" if method == "integrated-gradients" else "num_samples"
    tensor, is_output = T.resolve_reduction_layer(model, reduction_layer)
    shape = T.per_sample_shape(model, tensor, is_output)
    targets = [T.resolve_targets(model, pixels[b], labels[b], None, tensor, is_output, shape, _no_evaluate, env)
               for b in range(count)]
    for b in range(count):
        check_work(model, f"{option}={per_label:,} x {targets[b].count} label(s)", per_label * targets[b].count,
                   allow_long=check_allow_long(allow_long), environment=env)
    plans, base = [], None
    for b in range(count):  # in image order: a Generator random_state is drawn from image after image
        if method == "integrated-gradients":
            base = np.zeros_like(pixels[b])
        rng = as_generator(random_state) if method == "smoothgrad" else None
        plans.append(_Plan.build(method, pixels[b], base, num_steps, num_samples, noise_level, rng))
    engine = engine_for(model, env, [] if is_output else [tensor])
    t0 = time.perf_counter()
    rows = [(b, k, s) for b in range(count) for k in range(targets[b].count) for s in range(plans[b].count)]
    accs = [np.zeros((targets[b].count, *pixels.shape[1:]), np.float64) for b in range(count)]
    r_at_image: list[dict[int, np.ndarray]] = [{} for _ in range(count)]
    out_at_image: dict[int, np.ndarray] = {}
    for start_row in range(0, len(rows), mini_batch_size):
        chunk = rows[start_row:start_row + mini_batch_size]
        batch = np.stack([plans[b].image(s) for b, _, s in chunk])
        seeds = np.stack([targets[b].seeds[k] for b, k, _ in chunk])
        out = engine.run(batch, seeds, wrt=[engine.input_name], relu_mode="standard",
                         reduction=None if is_output else tensor)
        grads = np.asarray(out[f"grad:{engine.input_name}"], np.float64)
        bs = np.array([b for b, _, _ in chunk])
        ks = np.array([k for _, k, _ in chunk])
        ss = np.array([s for _, _, s in chunk])
        for b in dict.fromkeys(bs.tolist()):   # each image's rows, in row order: the single call's sums
            mine = np.flatnonzero(bs == b)
            np.add.at(accs[b], ks[mine], plans[b].weights[ss[mine]].reshape(-1, 1, 1, 1) * grads[mine])
        for row in np.flatnonzero(ss == np.array([-1 if plans[b].exact is None else plans[b].exact for b in bs])):
            r_at_image[int(bs[row])][int(ks[row])] = out["reduction"][row]
            out_at_image.setdefault(int(bs[row]), np.asarray(out["output"][row]))
    missing = [b for b in range(count) if len(r_at_image[b]) < targets[b].count or b not in out_at_image]
    if missing:  # SmoothGrad has no sample at the image itself: one forward run for those images
        native = model.to_native(pixels[missing])
        outputs = model.run_native(native, environment=env)
        values = outputs if is_output else tapped_run(model, env, [tensor], native)[0]
        for i, b in enumerate(missing):
            r_at_image[b] = {k: np.asarray(values[i], np.float32) for k in range(targets[b].count)}
            out_at_image[b] = outputs[i]
    inference = time.perf_counter() - t0
    params = {"method": method, "mini_batch_size": mini_batch_size, "execution_environment": env,
              "runtime": model.runtime(env), "relu_mode": "standard", "reduction_layer": tensor}
    if method == "integrated-gradients":
        params.update(num_steps=num_steps, baseline="black")
    results = []
    for b in range(count):
        px, tg = pixels[b], targets[b]
        scores = tg.scores(np.stack([r_at_image[b][k] for k in range(tg.count)]))
        check_finite_scores(model, tg.tensor, scores, px)
        if not np.all(np.isfinite(accs[b])):
            raise ModelError(f"{model.path}: the gradient of {tg.tensor!r} is NaN or inf on {describe_image(px)} "
                             "although the scores are finite (an op whose derivative is infinite at this input, "
                             "e.g. sqrt or log at 0).")
        working = np.ascontiguousarray(plans[b].finish(accs[b], px).astype(np.float32).transpose(1, 2, 3, 0))
        score = np.abs(working).sum(axis=2)
        multi = isinstance(labels[b], (list, tuple, np.ndarray))
        p = {**params, "reduction": tg.kind}
        if method == "smoothgrad":
            p.update(num_samples=num_samples, noise_level=noise_level, noise_sigma=plans[b].sigma,
                     random_state=describe_seed(random_state))
        extras = {"gradients": working if multi else working[..., 0],
                  "working_gradients": working if multi else working[..., 0]}
        results.append(Explanation(method, (score if multi else score[..., 0]).astype(np.float32), list(tg.labels),
                                   list(tg.names), scores, p, extras, {"inference": inference, "batch_images": count}))
    total = time.perf_counter() - started
    for e in results:
        e.timings["total"] = total
    return results, np.stack([out_at_image[b] for b in range(count)])


def _no_evaluate():
    raise AssertionError("class targets need no forward pass")


class _Plan:
    """The images a method differentiates at, their weights, and the final combination."""

    def __init__(self, count: int, image: Callable[[int], np.ndarray], weights: np.ndarray,
                 finish: Callable[[np.ndarray, np.ndarray], np.ndarray], sigma: float = 0.0,
                 exact: int | None = 0) -> None:
        self.count, self.image, self.weights, self.finish, self.sigma = count, image, weights, finish, sigma
        self.exact = exact  # index of the sample that is the unperturbed image, if any

    @classmethod
    def build(cls, method, pixels, base, num_steps, num_samples, noise_level, rng) -> _Plan:
        keep = lambda acc, px: acc
        if method == "integrated-gradients":
            alphas = np.linspace(0.0, 1.0, num_steps)
            weights = np.full(num_steps, 1.0 / (num_steps - 1))
            weights[[0, -1]] *= 0.5
            diff = pixels - base
            return cls(num_steps, lambda s: pixels if s == num_steps - 1 else
                       (base + np.float32(alphas[s]) * diff).astype(np.float32), weights,
                       lambda acc, px: acc * diff.astype(np.float64), exact=num_steps - 1)
        if method == "smoothgrad":
            sigma = float(noise_level * (pixels.max() - pixels.min()))
            return cls(num_samples, _NoisyCopies(pixels, sigma, rng), np.full(num_samples, 1.0 / num_samples), keep,
                       sigma, exact=None)
        if method == "gradient-x-input":
            return cls(1, lambda s: pixels, np.ones(1), lambda acc, px: acc * px.astype(np.float64))
        return cls(1, lambda s: pixels, np.ones(1), keep)


class _NoisyCopies:
    """SmoothGrad image ``s``, drawn when asked: memory does not grow with num_samples.

    Samples are requested in order 0..N-1 once per label; each label replays the generator
    from its starting state, so every label sees the same noise, and the values equal one
    ``rng.normal(0, 1, (N, h, w, 3))`` draw."""

    def __init__(self, pixels: np.ndarray, sigma: float, rng: np.random.Generator) -> None:
        self.pixels, self.sigma, self.rng = pixels, np.float32(sigma), rng
        self.start = rng.bit_generator.state
        self.next = 0

    def __call__(self, s: int) -> np.ndarray:
        if s == 0 and self.next:
            self.rng.bit_generator.state = self.start
            self.next = 0
        assert s == self.next, "SmoothGrad samples must be requested in order"
        self.next += 1
        return self.pixels + self.rng.normal(0.0, 1.0, self.pixels.shape).astype(np.float32) * self.sigma


def _batches(k_count: int, per_label: int, size: int) -> Iterator[list[tuple[int, int]]]:
    rows: list[tuple[int, int]] = []
    for k in range(k_count):
        for s in range(per_label):
            rows.append((k, s))
            if len(rows) == size:
                yield rows
                rows = []
    if rows:
        yield rows


def _baseline(baseline: Any, pixels: np.ndarray, original: tuple[int, int]) -> np.ndarray:
    if baseline is None:
        return np.zeros_like(pixels)
    if isinstance(baseline, (int, float, np.number)) and not isinstance(baseline, bool):
        value = check_float("baseline", float(baseline))
        return np.full_like(pixels, value)
    arr = np.asarray(baseline)
    if arr.dtype.kind not in "uif":
        raise OptionTypeError(f"The 'baseline' parameter must be None, a number, a colour (3,) or an image; got dtype "
                        f"{arr.dtype}.")
    if arr.shape == (3,):
        return np.broadcast_to(arr.astype(np.float32), pixels.shape).copy()
    img = load_image(arr, name="baseline")
    if img.shape[:2] == pixels.shape[:2]:
        return img
    if img.shape[:2] == tuple(original):
        return resize_image(img, pixels.shape[:2])
    raise OptionError(f"The 'baseline' image has size {img.shape[:2]}; expected the image's size {tuple(original)} "
                     f"or the model's input size {pixels.shape[:2]}.")
