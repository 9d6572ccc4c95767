"""The benchmark cases: for each method of ``onnxplain.METHODS``, the sizes it runs at, its
raw-inference floor and its peer.

Every method in the registry has exactly one case (tests/bench/test_plan.py checks it), and a
case runs its method through the registry (``METHODS[name](model, pixels, label, **params)``),
so the fixed options (e.g. ``method="smoothgrad"``) are the ones every other tool uses.
Every measurement in ``bench/`` reads this table (the main run, the smoke run, the scaling
study), so one method is measured one way. A case calls its method on the
*working image* (``model.prepare(image)``: already at the model's input size) so that
neither side pays for resizing, and CAM/occlusion/RISE maps stay at the working size
(``output_upsampling="none"``) as captum's do.

The raw floor of a case is the list of ``(images, batch)`` segments that plain ONNX Runtime
inference of the same number of images at the same batch size costs: LIME N samples ->
N images; occlusion P positions -> 1 + P images; RISE M masks -> 1 + M; a gradient method
-> the forward pass at the batch the engine runs (input gradient: 1 image at batch 1;
integrated gradients with 25 steps: 25 images in one batch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

Segments = list[tuple[int, int]]


@dataclass(frozen=True)
class Case:
    """One method as the bench runs it."""

    name: str                                     #: a name in onnxplain.METHODS
    params: dict[str, Any]                        #: the full run's keyword arguments
    smoke: dict[str, Any]                         #: tiny sizes: smoke runs and numba compile timing
    raw: Callable[[Any, dict[str, Any]], Segments]  #: (result, params) -> raw-inference segments
    peer: str | None = None                       #: key of bench.peers.PEERS
    agreement: Callable[[Any], np.ndarray] | None = None  #: what is compared with the peer's map
    targets: dict[str, dict[str, float]] = field(default_factory=dict)  #: device -> {"raw"|"peer": max}
    default: bool = True                          #: in the default method list
    note: str = ""


def _same_batch(n_key: str) -> Callable[[Any, dict[str, Any]], Segments]:
    """n images at the method's mini-batch size (the sample/step count parameter n_key)."""
    def raw(result: Any, params: dict[str, Any]) -> Segments:
        n = int(params[n_key])
        return [(n, min(n, int(params.get("mini_batch_size", 32))))]
    return raw


def _lime_raw(result: Any, params: dict[str, Any]) -> Segments:
    return [(int(params["num_samples"]), int(params["mini_batch_size"]))]


def _occlusion_raw(result: Any, params: dict[str, Any]) -> Segments:
    positions = math.prod(int(v) for v in result.params["num_positions"])
    return [(1, 1), (positions, int(params["mini_batch_size"]))]


def _rise_raw(result: Any, params: dict[str, Any]) -> Segments:
    return [(1, 1), (int(params["num_masks"]), int(params["mini_batch_size"]))]


def _scorecam_raw(result: Any, params: dict[str, Any]) -> Segments:
    channels = int(np.size(result.channel_weights))
    return [(1, 1), (channels, int(params["mini_batch_size"]))]


def _one_image(result: Any, params: dict[str, Any]) -> Segments:
    return [(1, 1)]


def _working_gradients(result: Any) -> np.ndarray:
    return np.asarray(result.working_gradients, np.float32)


def _score_map(result: Any) -> np.ndarray:
    return np.asarray(result.score_map, np.float32)


_NONE = {"output_upsampling": "none"}
_GRAD_TARGET = {"cpu": {"raw": 2.5}}

CASES: list[Case] = [
    Case("lime",
         {"num_samples": 1024, "mini_batch_size": 128, "random_state": 0},
         {"num_samples": 16, "mini_batch_size": 8, "random_state": 0},
         _lime_raw, peer="lime-package",
         targets={"cpu": {"raw": 1.05}, "gpu": {"raw": 1.2, "peer": 0.2}},
         note="superpixels (49), tree surrogate, mean fill"),
    Case("occlusion",
         {"mask_size": 32, "stride": 16, "mask_clipping": False, "mini_batch_size": 128, **_NONE},
         {"mask_size": 112, "stride": 112, "mask_clipping": False, "mini_batch_size": 4, **_NONE},
         _occlusion_raw, peer="captum-occlusion", agreement=_score_map,
         targets={"cpu": {"raw": 1.05, "peer": 0.3}},
         note="32x32 windows, stride 16, inside the image: 13x13 positions (captum's placement)"),
    Case("rise",
         {"num_masks": 500, "mini_batch_size": 128, "random_state": 0, **_NONE},
         {"num_masks": 8, "mini_batch_size": 8, "random_state": 0, **_NONE},
         _rise_raw, targets={"cpu": {"raw": 1.05}}, note="7x7 cells, p = 0.5; no peer (captum has no RISE)"),
    Case("gradient", {}, {},
         _one_image, peer="captum-saliency", agreement=_working_gradients, targets=_GRAD_TARGET,
         note="input gradient, batch 1"),
    Case("guided-backprop", {}, {},
         _one_image, peer="captum-guided-backprop", agreement=_working_gradients),
    Case("zeiler-fergus", {}, {},
         _one_image, peer="captum-deconvolution", agreement=_working_gradients),
    Case("integrated-gradients",
         {"num_steps": 25, "mini_batch_size": 32},
         {"num_steps": 3, "mini_batch_size": 32},
         _same_batch("num_steps"), peer="captum-integrated-gradients", agreement=_working_gradients,
         targets={"cpu": {"peer": 0.5}}, note="black baseline, all path points in one batch"),
    Case("smoothgrad",
         {"num_samples": 25, "mini_batch_size": 32, "random_state": 0},
         {"num_samples": 3, "mini_batch_size": 32, "random_state": 0},
         _same_batch("num_samples"), peer="captum-smoothgrad", note="noise 0.15 of the value range"),
    Case("gradcam", dict(_NONE), dict(_NONE), _one_image, peer="captum-layer-gradcam",
         agreement=_score_map, note="head activation (Clip, 1280x7x7), class probability"),
    Case("gradcam++", dict(_NONE), dict(_NONE), _one_image,
         note="no captum peer"),
    Case("guided-gradcam", {}, {}, _one_image, peer="captum-guided-gradcam",
         note="Grad-CAM + guided backprop (two gradient passes)"),
    Case("gradient-x-input", {}, {}, _one_image, default=False,
         note="input gradient times the input: the gradient case plus one product; not in the default list"),
    Case("reciprocam", dict(_NONE), dict(_NONE), _one_image, targets={"cpu": {"raw": 2.0}},
         note="every class's map: one forward + one tail batch of 49 masked 1280x7x7 maps; target <= 2x one forward"),
    Case("layercam", dict(_NONE), dict(_NONE), _one_image, targets=_GRAD_TARGET, default=False,
         note="one gradient run, as gradcam"),
    Case("hirescam", dict(_NONE), dict(_NONE), _one_image, targets=_GRAD_TARGET, default=False,
         note="one gradient run, as gradcam"),
    Case("xgradcam", dict(_NONE), dict(_NONE), _one_image, targets=_GRAD_TARGET, default=False,
         note="one gradient run, as gradcam"),
    Case("eigencam", dict(_NONE), dict(_NONE), _one_image, default=False,
         note="one tapped forward + an SVD of the 49x1280 activations"),
    Case("ablationcam", {"mini_batch_size": 256, **_NONE}, {"mini_batch_size": 256, **_NONE}, _one_image,
         default=False, note="one forward + 1280 ablated maps through the tail (pooling + classifier); raw = one forward"),
    Case("kernelshap",
         {"num_samples": 1024, "mini_batch_size": 128, "random_state": 0},
         {"num_samples": 16, "mini_batch_size": 8, "random_state": 0},
         _lime_raw, targets={"cpu": {"raw": 1.05}}, default=False,
         note="superpixels (49), 1024 coalitions + full + empty; LIME's kernels"),
    Case("score-cam", {"mini_batch_size": 64, **_NONE}, {"mini_batch_size": 64, **_NONE},
         _scorecam_raw, default=False,
         note="one forward per channel (1280); not in the default list: ~15-45 s per call on 2 cores"),
]
BY_NAME = {c.name: c for c in CASES}
DEFAULT_METHODS = [c.name for c in CASES if c.default]


def select(names: list[str] | None) -> list[Case]:
    """Cases for ``--methods`` names (None or [] -> the default list; "all" -> every case)."""
    if not names:
        return [BY_NAME[n] for n in DEFAULT_METHODS]
    if names == ["all"]:
        return list(CASES)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"The 'methods' parameter must name cases from {sorted(BY_NAME)} (or 'all'); "
                         f"got {unknown}.")
    return [BY_NAME[n] for n in dict.fromkeys(names)]


def run_case(engine: Any, case: Case, model: Any, pixels: np.ndarray, label: int, params: dict[str, Any]) -> Any:
    """One call of the case's method through the registry (``engine`` is the onnxplain module)."""
    return engine.METHODS[case.name](model, pixels, label, **params)


def run_raw(model: Any, native: np.ndarray, segments: Segments) -> None:
    """Plain ORT inference of the segments' images (``native`` holds at least the largest batch)."""
    for count, batch in segments:
        for start in range(0, count, batch):
            model.run_native(native[:min(batch, count - start)])


def raw_images(segments: Segments) -> int:
    return sum(n for n, _ in segments)
