"""The one table of explanation methods: ``onnxplain.METHODS``.

Every tool that runs methods by name iterates this table: ``onnxplain explain`` (preset
"main"), evaluate / sanity / compare (preset "quick"), ``python -m bench`` and the contract
test. Adding a method is one entry here.

Presets (one meaning per method, written down once):

- ``"main"``: the settings of ``onnxplain explain`` with no options: every method in the
  default run on the bundled model, aimed at under a minute on 2 CPU cores and at most 1 GB
  resident (README "Memory"). The sampling budgets are the smallest measured to sit near what
  each method converges to (``python -m bench.stability --convergence``,
  bench/results/convergence-2026-11-29.md: Spearman of the result with an 8x-budget
  reference): LIME 1024 samples on ~49 SLIC superpixels (0.979 with 16384 samples, the same
  as 2048; the ``lime`` package's default is 1000, MATLAB's 2048); RISE 1000 masks with the
  centred estimator (0.93 with a 16000-mask reference, where the paper's sum at 2000 masks
  reached 0.67: bench/results/convergence-rise-2026-11-29.md); Kernel SHAP 1024 coalitions
  (0.795 with 8192; 512 falls to 0.62). ~3,200 forward passes in all (was ~5,250).
- ``"quick"``: the settings of evaluate / sanity / compare, which run each method on many
  images (or many randomised models): LIME 256 samples on a 7 x 7 grid (no SLIC, so the
  features are the same on every model and image), RISE 500 masks, integrated gradients
  16 steps, SmoothGrad 10 samples. Maps are coarser; the rankings they are judged by are
  stable enough for a quick comparison. ``onnxplain evaluate --full`` uses each function's
  own defaults instead.

Both presets fix every random seed (``random_state=0``) so reruns are identical, and run the
perturbation methods (LIME, Kernel SHAP, occlusion, RISE) 8 images per model call, as fast per image
as larger batches on 2 cores and small in the shared arena (see ``_BATCH``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from ._validation import check_choice
from .errors import OptionError
from .methods.camfamily import ablation_cam, eigen_cam, hires_cam, layer_cam, xgrad_cam
from .methods.gradcam import grad_cam, grad_cam_plus_plus, guided_grad_cam
from .methods.kernel_shap import kernel_shap
from .methods.reciprocam import recipro_cam
from .methods.gradients import gradient_attribution
from .methods.lime import image_lime
from .methods.occlusion import occlusion_sensitivity
from .methods.rise import rise
from .methods.scorecam import score_cam
from .result import Explanation

RENDERS = ("heat", "gradient", "signed")
PRESETS = ("main", "quick")


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, eq=False)
class MethodSpec:
    """One explanation method as the tools run it by name.

    Attributes
    ----------
    name : str
        The name used by ``--methods``, output files and summaries (e.g. "smoothgrad").
    func : callable
        The public function ``func(model, image, label=None, **options) -> Explanation``.
    fixed : mapping
        Options always passed (e.g. ``{"method": "smoothgrad"}``); a caller may not override them.
    needs_gradients : bool
        True when the method runs the gradient engine (impossible on uint8-input models).
    render : {"heat", "gradient", "signed"}
        How a map is drawn (:mod:`onnxplain.render`): a jet overlay of a non-negative map, a
        percentile-clipped blended overlay of a gradient map, or a diverging map centred on 0.
    presets : mapping of {"main", "quick"} to mapping
        Named option sets (see the module notes); an empty set means the function's defaults.
    summary : str
        One line for help texts.
    in_main_job : bool
        Part of ``onnxplain explain``'s default run (False for methods too slow for its one-minute
        budget; they run with ``--methods NAME`` or ``--methods all``).
    """

    name: str
    func: Callable[..., Explanation]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    needs_gradients: bool = True
    render: str = "heat"
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    summary: str = ""
    in_main_job: bool = True

    def __post_init__(self) -> None:
        check_choice("render", self.render, RENDERS)
        unknown = set(self.presets) - set(PRESETS)
        if unknown:
            raise OptionError(f"method {self.name!r}: unknown preset(s) {sorted(unknown)}; presets are {PRESETS}.")
        object.__setattr__(self, "fixed", _frozen(self.fixed))
        object.__setattr__(self, "presets", _frozen({p: _frozen(self.presets.get(p)) for p in PRESETS}))

    def options(self, preset: str | None = None, **options: Any) -> dict[str, Any]:
        """The keyword arguments a call passes: the preset, then ``options``, then the fixed ones."""
        clash = sorted(k for k in options if k in self.fixed and options[k] != self.fixed[k])
        if clash:
            raise OptionError(f"method {self.name!r} fixes {', '.join(f'{k}={self.fixed[k]!r}' for k in clash)}; "
                             f"got {', '.join(f'{k}={options[k]!r}' for k in clash)}.")
        base = {} if preset is None else dict(self.presets[check_choice("preset", preset, PRESETS)])
        return {**base, **options, **self.fixed}

    def __call__(self, model: Any, image: Any, label: Any = None, preset: str | None = None,
                 **options: Any) -> Explanation:
        """Run the method: ``func(model, image, label, **options(preset, **options))``."""
        if options.get("progress", 0) is None:
            del options["progress"]
        return self.func(model, image, label, **self.options(preset, **options))


_SEED = {"random_state": 0}
#: images per model call. The shared CPU arena (onnxplain.runtime) grows to the largest batch any session ran
#: and keeps it: on EfficientNet-Lite0 at 224, batch 8 holds ~80 MB, 32 ~450 MB, 64 ~0.9 GB, 128 ~1.6 GB.
#: Measured on 2 cores (bench/results/mainjob-*.md): 8 images per call is as fast per image as 32 or 64.
_BATCH = {"mini_batch_size": 8}
#: gradient images per engine run: a reverse pass keeps every activation of its batch in the shared arena
#: (EfficientNet-Lite0: ~60 MB per image). Measured on 2 cores (same process, integrated gradients 16 steps
#: and SmoothGrad 10 samples): batch 1 costs the same CPU time as 4 (1.87 vs 1.96 s) and leaves the process
#: ~250 MB smaller.
_GRAD_BATCH = {"mini_batch_size": 1}

#: name -> MethodSpec, in the order the tools run and list them.
METHODS: Mapping[str, MethodSpec] = MappingProxyType({s.name: s for s in [
    MethodSpec("lime", image_lime, needs_gradients=False, render="heat",
               presets={"main": {"num_samples": 1024, "num_features": 49, "segmentation": "superpixels", **_BATCH, **_SEED},
                        "quick": {"num_samples": 256, "num_features": 49, "segmentation": "grid", **_BATCH, **_SEED}},
               summary="LIME: a surrogate model of the class score over on/off superpixels"),
    MethodSpec("gradcam", grad_cam, render="heat",
               summary="Grad-CAM: feature-layer activations weighted by their pooled class gradient"),
    MethodSpec("gradcam++", grad_cam_plus_plus, render="heat",
               summary="Grad-CAM++: Grad-CAM with higher-order pixel weights"),
    MethodSpec("score-cam", score_cam, needs_gradients=False, render="heat",
               presets={"main": {"mini_batch_size": 64}, "quick": {"mini_batch_size": 64}}, in_main_job=False,
               summary="Score-CAM: feature channels weighted by the class score of the image they mask "
                       "(one model run per channel; forward-only)"),
    MethodSpec("reciprocam", recipro_cam, needs_gradients=False, render="heat",
               summary="ReciproCAM: every class's map from one batch of the network's tail on masked copies of the "
                       "feature map (forward-only)"),
    MethodSpec("layercam", layer_cam, render="heat",
               summary="LayerCAM: activations weighted element-wise by their positive class gradient"),
    MethodSpec("hirescam", hires_cam, render="heat",
               summary="HiResCAM: activations times their class gradient, element-wise"),
    MethodSpec("xgradcam", xgrad_cam, render="heat",
               summary="XGrad-CAM: channels weighted by their activation-weighted class gradient"),
    MethodSpec("eigencam", eigen_cam, needs_gradients=False, render="heat",
               summary="Eigen-CAM: first principal component of the feature maps (class-agnostic, forward-only)"),
    MethodSpec("ablationcam", ablation_cam, needs_gradients=False, render="heat",
               summary="Ablation-CAM: channels weighted by the relative score drop when zeroed (forward-only, one "
                       "batch through the network's tail)"),
    MethodSpec("guided-gradcam", guided_grad_cam, render="gradient",
               summary="Guided Grad-CAM: Grad-CAM times guided backpropagation"),
    MethodSpec("gradient", gradient_attribution, {"method": "gradient"}, render="gradient",
               summary="input gradient of the class score (saliency)"),
    MethodSpec("guided-backprop", gradient_attribution, {"method": "guided-backprop"}, render="gradient",
               summary="guided backpropagation: gradient with negative signals stopped at each rectifier"),
    MethodSpec("zeiler-fergus", gradient_attribution, {"method": "zeiler-fergus"}, render="gradient",
               summary="deconvolution (Zeiler & Fergus): rectifiers pass the positive gradient"),
    MethodSpec("integrated-gradients", gradient_attribution, {"method": "integrated-gradients"}, render="gradient",
               presets={"main": {"num_steps": 16, **_GRAD_BATCH}, "quick": {"num_steps": 16, **_GRAD_BATCH}},
               summary="integrated gradients from a black baseline"),
    MethodSpec("smoothgrad", gradient_attribution, {"method": "smoothgrad"}, render="gradient",
               presets={"main": {"num_samples": 10, **_GRAD_BATCH, **_SEED},
                        "quick": {"num_samples": 10, **_GRAD_BATCH, **_SEED}},
               summary="SmoothGrad: input gradients averaged over noisy copies"),
    MethodSpec("gradient-x-input", gradient_attribution, {"method": "gradient-x-input"}, render="gradient",
               summary="input gradient times the input"),
    MethodSpec("occlusion", occlusion_sensitivity, needs_gradients=False, render="signed",
               presets={"main": {"stride": 16, **_BATCH}, "quick": {**_BATCH}},
               summary="occlusion sensitivity: score drop when a sliding window is filled"),
    MethodSpec("kernelshap", kernel_shap, needs_gradients=False, render="signed",
               presets={"main": {"num_samples": 1024, "num_features": 49, "segmentation": "superpixels", **_BATCH, **_SEED},
                        "quick": {"num_samples": 256, "num_features": 49, "segmentation": "grid", **_BATCH, **_SEED}},
               summary="Kernel SHAP: Shapley values of superpixels (efficiency: they add up to f(x) - base_value)"),
    MethodSpec("rise", rise, needs_gradients=False, render="heat",
               presets={"main": {"num_masks": 1000, "cell_size": 7, **_BATCH, **_SEED},
                        "quick": {"num_masks": 500, **_BATCH, **_SEED}},
               summary="RISE: class score averaged over random coarse masks"),
]})


def forward_only() -> list[str]:
    """Names of the methods that need no gradient (the only ones a uint8-input model can run)."""
    return [n for n, s in METHODS.items() if not s.needs_gradients]


def check_methods(methods: Any, *, param: str = "methods") -> list[str]:
    """Validate method names against :data:`METHODS`; return them as a list (one name is a list of one)."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise OptionError(f"The {param!r} parameter is empty; give at least one of " + ", ".join(METHODS) + ".")
    for m in methods:
        check_choice(param, m, METHODS)
    return methods
