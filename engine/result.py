"""The one result type every method returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Explanation:
    """An explanation of one image's classification by one method.

    Attributes
    ----------
    method : str
        The method's name (e.g. "lime", "gradcam").
    score_map : ndarray, float32, (H, W) or (H, W, K)
        Raw, signed importance at the size of the image given (K labels: last axis).
    labels : list of int
        The explained class indices (or reduction targets), in order.
    label_names : list of str
    scores : ndarray, float32, (K,)
        The model's score for each label on the (resized) original image.
    params : dict
        The parameters actually used (defaults resolved).
    extras : dict
        Method-specific outputs, also readable as attributes: e.g. ``feature_map``,
        ``feature_importance`` (LIME), ``feature_layer``, ``reduction_layer`` (Grad-CAM),
        ``gradients`` (gradient attribution).
    timings : dict
        Seconds spent per phase (e.g. "inference", "total").
    """

    method: str
    score_map: np.ndarray
    labels: list[int]
    label_names: list[str]
    scores: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        extras = self.__dict__.get("extras", {})
        if name in extras:
            return extras[name]
        raise AttributeError(f"{type(self).__name__!s} for method {self.__dict__.get('method')!r} has no "
                             f"attribute {name!r} (extras: {sorted(extras)})")

    @property
    def multi_label(self) -> bool:
        return self.score_map.ndim == 3

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (no arrays, except small ones as lists)."""
        out: dict[str, Any] = {
            "method": self.method, "labels": list(self.labels), "label_names": list(self.label_names),
            "scores": [float(s) for s in np.ravel(self.scores)], "params": _jsonable(self.params),
            "timings": {k: round(float(v), 6) for k, v in self.timings.items()},
            "map_shape": list(self.score_map.shape),
        }
        small = {k: v for k, v in self.extras.items() if not isinstance(v, np.ndarray) or v.size <= 4096}
        out["extras"] = _jsonable(small)
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value) if not callable(value) else getattr(value, "__name__", "callable")
