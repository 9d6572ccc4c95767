"""The one result type every method returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import OnnxplainError


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

    def __repr__(self) -> str:
        m = np.asarray(self.score_map)
        labels = ", ".join(f"{i} {n!r}" for i, n in zip(self.labels, self.label_names))
        scores = ", ".join(f"{float(s):.3g}" for s in np.ravel(self.scores))
        rng = f" [{float(m.min()):.3g}, {float(m.max()):.3g}]" if m.size and np.all(np.isfinite(m)) else ""
        extras = ", ".join(sorted(self.extras))
        total = self.timings.get("total")
        return (f"Explanation(method={self.method!r}, labels=[{labels}], scores=[{scores}], "
                f"score_map={'x'.join(map(str, m.shape))} {m.dtype}{rng}"
                + (f", extras=[{extras}]" if extras else "") + (f", {total:.2f} s" if total is not None else "") + ")")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython: the same short form
        printer.text(repr(self))

    def plot(self, image: Any = None, path: Any = None, **options: Any):
        """A matplotlib Figure of the map (one panel per label) over ``image``.

        ``image``: the image the explanation was computed for (path, PIL image or array);
        without one the map is drawn over a plain grey background. ``path`` also writes a
        PNG. Other options as :func:`onnxplain.overlay_figure` (``kind``, ``sign``, ``alpha``, ...).
        """
        from .render import overlay_figure

        if image is None:
            image = np.full((*self.score_map.shape[:2], 3), 0.5, np.float32)
        return overlay_figure(image, self, path, **options)

    def save(self, path: Any) -> str:
        """Write the explanation to one ``.npz`` file (no pickles): every array and the metadata.

        Returns the path written (``.npz`` is appended when missing). Read it back with
        :func:`onnxplain.load_explanation`.
        """
        import json
        import os
        import pathlib

        p = pathlib.Path(os.fspath(path))
        if p.suffix != ".npz":
            p = p.with_name(p.name + ".npz")
        arrays = {f"extra__{k}": np.asarray(v) for k, v in self.extras.items()
                  if isinstance(v, np.ndarray) and v.dtype != object}
        meta = {"format": "onnxplain.Explanation", "version": 1, "method": self.method, "labels": list(map(int, self.labels)),
                "label_names": list(self.label_names), "params": _jsonable(self.params),
                "timings": {k: float(v) for k, v in self.timings.items()},
                "extras": _jsonable({k: v for k, v in self.extras.items() if f"extra__{k}" not in arrays})}
        tmp = p.with_name(p.name + ".partial.npz")
        np.savez_compressed(tmp, score_map=np.asarray(self.score_map), scores=np.asarray(self.scores),
                            meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, p)
        return str(p)

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


def load_explanation(path: Any) -> Explanation:
    """Read an explanation written by :meth:`Explanation.save` (a ``.npz`` file).

    Array extras come back as arrays; other extras and ``params`` as their JSON forms
    (callables and objects as their names).

    Raises
    ------
    OnnxplainError
        The file is missing, not a ``.npz`` archive, or not written by ``Explanation.save``.
    """
    import json
    import os
    import zipfile

    p = os.fspath(path)
    if not os.path.exists(p):
        raise OnnxplainError(f"explanation file {p!r} does not exist.")
    try:
        with np.load(p, allow_pickle=False) as data:
            if "meta" not in data.files or "score_map" not in data.files:
                raise OnnxplainError(f"{p}: not an explanation saved by Explanation.save (no 'meta'/'score_map' "
                                     f"arrays; found {sorted(data.files)}).")
            meta = json.loads(str(data["meta"]))
            arrays = {k[len("extra__"):]: data[k] for k in data.files if k.startswith("extra__")}
            score_map, scores = data["score_map"], data["scores"]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        if isinstance(exc, OnnxplainError):
            raise
        raise OnnxplainError(f"{p}: not a readable .npz explanation ({exc}).") from None
    if meta.get("format") != "onnxplain.Explanation":
        raise OnnxplainError(f"{p}: not an explanation saved by Explanation.save (format {meta.get('format')!r}).")
    return Explanation(meta["method"], score_map, list(meta["labels"]), list(meta["label_names"]), scores,
                       dict(meta.get("params", {})), {**meta.get("extras", {}), **arrays}, dict(meta.get("timings", {})))
