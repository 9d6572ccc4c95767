"""Steps every method shares: image preparation, label resolution, map finishing."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .._validation import check_choice
from ..errors import OptionError, OptionTypeError
from ..images import describe_image, resize_map
from ..model import Model, check_finite_output
from ..runtime import ENVIRONMENTS, check_provider

Progress = Callable[[int, int], None] | None


@dataclass
class Context:
    """The prepared inputs of one explanation call."""

    model: Model
    pixels: np.ndarray            # float32 (h, w, 3) working image at the model input size
    original_size: tuple[int, int]
    labels: list[int]
    label_names: list[str]
    multi: bool                   # label was given as a list: maps get a trailing K axis
    environment: str
    source: str = "the image"    # the image in error messages (file name or array shape)
    started: float = field(default_factory=time.perf_counter)

    def base_scores(self) -> np.ndarray:
        """Scores (K,) of the explained labels on the unperturbed working image."""
        native = self.model.to_native(self.pixels[None])
        return self.model.scores_native(native, environment=self.environment, source=self.source)[0, self.labels]

    def finish(self, maps_k: np.ndarray, method: str) -> np.ndarray:
        """(h, w, K) working-size maps -> (H, W[, K]) at the original image size."""
        out = resize_map(maps_k, self.original_size, method) if method != "none" else maps_k
        return out if self.multi else out[..., 0]



def start_batch(model: Model, pixels: Any, execution_environment: str | None, who: str) -> tuple[np.ndarray, str]:
    """The batched entry points' :func:`start`: working images (B, h, w, 3) as float32 and the
    execution environment (the model's unless given), checked."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"{who} takes working images (B, h, w, 3); got shape {pixels.shape}.")
    env = model.execution_environment if execution_environment is None else execution_environment
    check_choice("execution_environment", env, ENVIRONMENTS)
    return pixels, env

def start(model: Model, image: Any, execution_environment: str | None) -> tuple[np.ndarray, tuple[int, int], str]:
    """Validate model and environment, prepare the image: (pixels (h, w, 3), original size, environment)."""
    if not isinstance(model, Model):
        raise OptionTypeError(f"The 'model' parameter must be an engine Model (see onnxplain.load_model); got "
                        f"{type(model).__name__}.")
    env = model.provider if execution_environment is None else execution_environment
    try:
        env = check_provider(env)
    except OptionError as exc:
        raise type(exc)(str(exc).replace("'provider'", "'execution_environment'")) from None
    model.session_for(env)  # "gpu" without a GPU fails here, before any work
    pixels, original = model.prepare(image)
    return pixels, original, env


def begin(model: Model, image: Any, label: Any, execution_environment: str | None,
          *, default_label_top: bool = True) -> Context:
    """Prepare image and labels; ``label=None`` means the model's top class."""
    started = time.perf_counter()  # before the top-class run: timings and the runtime record include it
    pixels, original, env = start(model, image, execution_environment)
    multi = isinstance(label, (list, tuple, np.ndarray))
    if label is None:
        if not default_label_top:
            raise OptionError("The 'label' parameter is required for this method.")
        scores = model.scores_native(model.to_native(pixels[None]), environment=env, source=describe_image(image))[0]
        labels = [int(np.argmax(scores))]
    else:
        labels = model.label_indices(label)
    names = [model.class_names[i] for i in labels]
    return Context(model, pixels, original, labels, names, multi, env, describe_image(image), started)


def check_finite_scores(model: Model, tensor: str, values: np.ndarray, image: Any) -> None:
    """ModelError naming ``tensor`` and the image when explained scores (K,) are NaN/inf."""
    check_finite_output(np.asarray(values, np.float64).reshape(1, -1), model.path, tensor, describe_image(image))
