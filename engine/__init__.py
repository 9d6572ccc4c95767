"""onnxplain: explanations for image classifiers exported to ONNX, run on ONNX Runtime.

Public API (everything else is private)::

    model = onnxplain.load_model()                       # bundled EfficientNet-Lite0
    model.classify(image, top_k=5)
    onnxplain.METHODS["gradcam"](model, image, preset="main")   # any method by name
    onnxplain.explain_dataset(model, "photos/", ["gradcam", "rise"], out="results.parquet")
    onnxplain.read_results("results.parquet").to_pandas()
"""
from __future__ import annotations

from .compare import Comparison, compare_models
from .errors import (EnvironmentUnavailableError, ImageError, LabelError, ModelError, OnnxplainError, OptionError,
                     OptionTypeError)
from .images import load_image
from .methods.gradcam import ClassRegion, grad_cam, grad_cam_plus_plus, guided_grad_cam
from .methods.gradients import gradient_attribution
from .methods.scorecam import score_cam
from .methods.camfamily import ablation_cam, eigen_cam, hires_cam, layer_cam, xgrad_cam
from .methods.reciprocam import recipro_cam
from .methods.occlusion import occlusion_sensitivity
from .methods.rise import rise
from .methods.lime import image_lime
from .methods.kernel_shap import kernel_shap
from .export import export_explainer
from .model import InputSpec, Model, load_model
from .preprocessing import Preprocessing
from .render import image_and_mask, overlay_figure, overview_figure
from .result import Explanation, load_explanation
from .registry import METHODS, MethodSpec
from .sanity import SanityResult, sanity_check
from .dataset import DatasetRun, explain_dataset, list_images
from .results import Results, read_results
from .evaluate import Evaluation, energy_in_region, evaluate, pointing_game  # onnxplain.evaluate is the function

__all__ = [
    "METHODS", "MethodSpec",
    "grad_cam", "grad_cam_plus_plus", "guided_grad_cam", "score_cam", "gradient_attribution", "ClassRegion",
    "kernel_shap", "export_explainer", "hires_cam", "layer_cam", "xgrad_cam", "eigen_cam", "ablation_cam", "recipro_cam",
    "evaluate", "Evaluation", "pointing_game", "energy_in_region", "sanity_check", "SanityResult",
    "compare_models", "Comparison", "explain_dataset", "DatasetRun", "list_images", "read_results", "Results",
    "load_model", "Model", "InputSpec", "Preprocessing", "load_image", "Explanation", "load_explanation",
    "overlay_figure", "overview_figure", "image_and_mask", "occlusion_sensitivity", "rise", "image_lime",
    "OnnxplainError", "ModelError", "ImageError", "LabelError", "EnvironmentUnavailableError",
    "OptionError", "OptionTypeError",
]
__version__ = "0.1.0"
