"""onnxplain: explanations for image classifiers exported to ONNX, run on ONNX Runtime.

Public API (everything else is private)::

    model = engine.load_model()                       # bundled EfficientNet-Lite0
    model.classify(image, top_k=5)
"""
from __future__ import annotations

from .errors import EnvironmentUnavailableError, ImageError, LabelError, ModelError, OnnxplainError
from .images import load_image
from .model import InputSpec, Model, load_model
from .preprocessing import Preprocessing
from .render import image_and_mask, overlay_figure
from .result import Explanation

__all__ = [
    "load_model", "Model", "InputSpec", "Preprocessing", "load_image", "Explanation",
    "overlay_figure", "image_and_mask",
    "OnnxplainError", "ModelError", "ImageError", "LabelError", "EnvironmentUnavailableError",
]
__version__ = "0.1.0"
