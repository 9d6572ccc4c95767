"""The report's record model: what one run of explanations holds, whatever wrote it.

Every source (``onnxplain explain``'s folder, the dataset run's Parquet results, explanations
made in Python) is read into these records, and the HTML writer only reads records.

- :class:`RunRecord`: model, provider, methods, settings, timings, and the images.
- :class:`ImageRecord`: one image: file name, the photo (path or array), true label (when
  known), predicted label and its confidence, the explained label, and one MapRecord per method.
- :class:`MapRecord`: one method's map of one image: the raw map (array, or a ``.npy`` path
  read on demand), params, timings, quality metrics (deletion, insertion, pointing game,
  energy) and deletion/insertion curves ``{"deletion": (x, y), ...}`` when computed.
"""
from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import OnnxplainError
from ..images import load_image

#: the name ``onnxplain explain`` records for the bundled photograph (skimage.data.chelsea)
SAMPLE_IMAGE = "chelsea"


class ReportError(OnnxplainError):
    """A results file or folder cannot be turned into a report."""


@dataclass
class MapRecord:
    method: str
    score_map: Any = None                   # ndarray (H, W[, K]) or a .npy path
    label: int | None = None
    label_name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, tuple[Sequence[float], Sequence[float]]] = field(default_factory=dict)
    status: str = "ok"
    gradients: Any = None                   # per-channel signed gradients (H, W, 3[, K]), optional

    def load_map(self) -> np.ndarray | None:
        m = self.score_map
        if m is None:
            return None
        if isinstance(m, (str, os.PathLike)):
            try:
                m = np.load(os.fspath(m), allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise ReportError(f"map file {os.fspath(self.score_map)!r} cannot be read: {exc}") from None
        m = np.asarray(m, dtype=np.float32)
        return m[..., 0] if m.ndim == 3 else m  # the first label's map


@dataclass
class ImageRecord:
    name: str
    image: Any = None                       # path, array, or SAMPLE_IMAGE
    true_label: int | None = None
    true_name: str = ""
    predicted: int | None = None
    predicted_name: str = ""
    confidence: float | None = None
    label: int | None = None                # the explained class
    label_name: str = ""
    maps: list[MapRecord] = field(default_factory=list)

    @property
    def correct(self) -> bool | None:
        if self.true_label is None or self.predicted is None:
            return None
        return self.true_label == self.predicted

    def load_image(self) -> np.ndarray | None:
        if self.image is None:
            return None
        if isinstance(self.image, str) and self.image == SAMPLE_IMAGE and not os.path.exists(self.image):
            from skimage.data import chelsea

            return load_image(chelsea())
        try:
            return load_image(self.image)
        except OnnxplainError as exc:
            raise ReportError(f"image of {self.name!r} cannot be read: {exc}") from None


@dataclass
class RunRecord:
    model: dict[str, Any] = field(default_factory=dict)
    provider: str = ""
    methods: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    images: list[ImageRecord] = field(default_factory=list)
    source: str = ""
    title: str = "onnxplain report"


# ---- sources ---------------------------------------------------------------------------------
def read_results(path: str | os.PathLike) -> RunRecord:
    """A RunRecord from an ``explain`` folder / its ``summary.json``, or Parquet results of ``run``."""
    p = pathlib.Path(os.fspath(path))
    if not p.exists():
        raise ReportError(f"results {str(p)!r} do not exist (give an `onnxplain explain` output folder, its "
                          "summary.json, or the Parquet results of `onnxplain run`).")
    if p.is_dir():
        if (p / "summary.json").exists():
            return from_explain_summary(p / "summary.json")
        parquet = sorted(p.glob("*.parquet")) + sorted(p.glob("**/*.parquet"))
        if parquet:
            return from_parquet(p)
        raise ReportError(f"folder {str(p)!r} holds neither summary.json (from `onnxplain explain`) nor .parquet "
                          "results (from `onnxplain run`).")
    if p.suffix == ".json":
        return from_explain_summary(p)
    if p.suffix == ".parquet":
        return from_parquet(p)
    raise ReportError(f"{str(p)!r}: expected an explain folder, summary.json or a .parquet file.")


def from_explain_summary(path: str | os.PathLike) -> RunRecord:
    """The RunRecord of one ``onnxplain explain`` run (its ``summary.json`` and ``.npy`` maps)."""
    p = pathlib.Path(os.fspath(path))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{str(p)!r} cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict) or "methods" not in data or "top5" not in data:
        raise ReportError(f"{str(p)!r} is not an `onnxplain explain` summary (no 'methods'/'top5').")
    return explain_record(data, p.parent, str(p))


def explain_record(data: dict[str, Any], folder: str | os.PathLike, source: str = "") -> RunRecord:
    """The RunRecord of an ``onnxplain explain`` summary (as in summary.json) whose files lie in ``folder``."""
    folder = pathlib.Path(os.fspath(folder))
    top = data["top5"][0] if data["top5"] else {}
    image_ref = data.get("image_file") or data.get("image")
    if image_ref and image_ref != SAMPLE_IMAGE and not os.path.isabs(image_ref):
        image_ref = str((folder / image_ref)) if (folder / image_ref).exists() else image_ref
    label = data.get("label")
    label_name = ""
    maps = []
    for name, info in data["methods"].items():
        npy = next((f for f in info.get("files", []) if str(f).endswith(".npy")), None)
        if npy is not None and not os.path.exists(npy):  # the folder was moved: look beside summary.json
            npy = str(folder / pathlib.Path(npy).name)
        labels, names = info.get("labels") or [label], info.get("label_names") or [""]
        label_name = label_name or names[0]
        maps.append(MapRecord(name, npy, labels[0], names[0], info.get("params", {}), info.get("timings", {}),
                              info.get("metrics", {}), {k: (v["x"], v["y"]) for k, v in info.get("curves", {}).items()}))
    model = data.get("model", {})
    image = ImageRecord(str(data.get("image", "image")), image_ref, None, "", top.get("index"), top.get("name", ""),
                        top.get("score"), label if isinstance(label, int) else None, label_name, maps)
    return RunRecord(model, model.get("device", ""), list(data["methods"]),
                     {"label": label, "skipped": data.get("skipped", {})},
                     {"total_seconds": data.get("total_seconds"),
                      **{m: info.get("seconds") for m, info in data["methods"].items()}},
                     [image], source or str(folder / "summary.json"), f"onnxplain explain: {data.get('image', '')}")


def from_parquet(path: str | os.PathLike) -> RunRecord:
    """The RunRecord of a dataset run's Parquet results (``onnxplain run``, schema version 1 of
    ``onnxplain.results``: one row per image, method and target).

    Read: ``image`` (absolute path, or an in-memory id such as "array:3" with no photo),
    ``method``, ``target`` (rows with several targets per image and method are shown as
    "method (target)"), ``label``/``label_name``, ``predicted_index``/``predicted_name``/
    ``predicted_score`` (best first), ``true_label``/``true_label_name``, ``map`` (bytes of
    ``map_dtype`` at ``map_shape``, times ``map_scale``), ``params``/``timings`` (JSON),
    ``seconds``, ``deletion``/``insertion``/``pointing_game``/``energy``, ``error``, ``model``.
    A file or a folder of part files; ``run.json``/``summary.json`` beside it adds settings.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover
        raise ReportError("reading Parquet results needs pyarrow (pip install pyarrow).") from None
    p = pathlib.Path(os.fspath(path))
    try:
        table = pq.read_table(str(p))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise ReportError(f"{str(p)!r} cannot be read as Parquet: {str(exc).splitlines()[0]}") from None
    missing = [c for c in ("image", "method") if c not in table.column_names]
    if missing:
        raise ReportError(f"{str(p)!r} lacks the column(s) {missing} (has {table.column_names}).")
    rows = table.to_pylist()
    if not rows:
        raise ReportError(f"{str(p)!r} holds no result rows.")
    folder = p if p.is_dir() else p.parent
    meta: dict[str, Any] = {}
    for name in ("run.json", "summary.json"):
        if (folder / name).exists():
            try:
                meta = json.loads((folder / name).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                meta = {}
            break
    targets: dict[tuple[str, str], set] = {}
    for r in rows:
        targets.setdefault((str(r["image"]), str(r["method"])), set()).add(r.get("target"))
    several = any(len(t) > 1 for t in targets.values())
    images: dict[str, ImageRecord] = {}
    for r in sorted(rows, key=lambda r: (r.get("image_index") or 0, str(r["image"]))):
        key = str(r["image"])
        rec = images.get(key)
        if rec is None:
            ref = key if os.path.exists(key) else (str(folder / key) if (folder / key).exists() else None)
            pred_i, pred_n, pred_s = (_first(r.get("predicted_index")), _first(r.get("predicted_name")),
                                      _first(r.get("predicted_score")))
            rec = images[key] = ImageRecord(
                pathlib.Path(key).name, ref, _int(r.get("true_label")),
                str(r.get("true_label_name") or r.get("true_name") or ""),
                _int(pred_i if pred_i is not None else r.get("predicted")),
                str(pred_n if pred_n is not None else (r.get("predicted_name") or "")),
                _float(pred_s if pred_s is not None else r.get("confidence")),
                _int(r.get("label")), str(r.get("label_name") or ""))
        method = str(r["method"]) + (f" ({r.get('target')})" if several and r.get("target") is not None else "")
        timings = _obj(r.get("timings"))
        if r.get("seconds") is not None:
            timings = {**timings, "total": float(r["seconds"])}
        metrics = {k: float(r[k]) for k in ("deletion", "insertion", "pointing_game", "energy")
                   if r.get(k) is not None and np.isfinite(r[k])}
        curves = {mode: (r[f"{mode}_x"], r[f"{mode}_y"]) for mode in ("deletion", "insertion")
                  if r.get(f"{mode}_x") is not None and r.get(f"{mode}_y") is not None}
        rec.maps.append(MapRecord(method, _decode_map(r, folder), _int(r.get("label")), str(r.get("label_name") or ""),
                                  _obj(r.get("params")), timings, metrics, curves,
                                  "ok" if not r.get("error") else f"error: {r['error']}"))
    methods = list(dict.fromkeys(m.method for im in images.values() for m in im.maps))
    model = meta.get("model") if isinstance(meta.get("model"), dict) else \
        {"path": meta.get("model") or next((r.get("model") for r in rows if r.get("model")), "")}
    total = sum(float(r["seconds"]) for r in rows if r.get("seconds") is not None)
    return RunRecord(model, str(meta.get("provider", model.get("device", ""))), methods,
                     {k: v for k, v in meta.items() if k not in ("model", "timings")},
                     {"compute_seconds": total} if total else {}, list(images.values()), str(p),
                     f"onnxplain run: {p.name}")


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, (list, tuple)) and v else None


def _decode_map(r: dict[str, Any], folder: pathlib.Path) -> Any:
    m = r.get("map")
    if m is None:
        return None
    if isinstance(m, str):  # a .npy path
        return m if os.path.isabs(m) else str(folder / m)
    shape = tuple(int(v) for v in (r.get("map_shape") or ()))
    if not shape:
        raise ReportError(f"row ({r.get('image')}, {r.get('method')}) has a map but no map_shape.")
    dtype = np.dtype(str(r.get("map_dtype") or "float32")).newbyteorder("<")
    values = np.frombuffer(m, dtype) if isinstance(m, (bytes, bytearray)) else np.asarray(m, np.float32)
    if values.size != int(np.prod(shape)):
        raise ReportError(f"row ({r.get('image')}, {r.get('method')}): map has {values.size} values for shape "
                          f"{list(shape)}.")
    scale = r.get("map_scale")
    return values.reshape(shape).astype(np.float32) * np.float32(1.0 if scale is None else scale)


def from_explanations(model: Any, items: Sequence[tuple[Any, Sequence[Any]]], *, names: Sequence[str] | None = None,
                      true_labels: Sequence[Any] | None = None, evaluations: Sequence[Sequence[Any]] | None = None,
                      title: str = "onnxplain report") -> RunRecord:
    """A RunRecord from Python: ``items`` = [(image, [Explanation, ...]), ...].

    ``evaluations`` (optional) = one list of :class:`onnxplain.Evaluation` per image, in the
    order of its explanations (None for none); ``true_labels`` = one class per image.
    """
    images = []
    methods: list[str] = []
    for i, (image, explanations) in enumerate(items):
        name = names[i] if names is not None else (pathlib.Path(os.fspath(image)).name
                                                    if isinstance(image, (str, os.PathLike)) else f"image{i}")
        top = model.classify(image, top_k=1)[0]
        truth = None if true_labels is None or true_labels[i] is None else model.label_index(true_labels[i])
        maps = []
        evs = evaluations[i] if evaluations is not None else [None] * len(explanations)
        for exp, ev in zip(explanations, evs):
            methods.append(exp.method)
            maps.append(MapRecord(exp.method, exp.score_map, exp.labels[0], exp.label_names[0], dict(exp.params),
                                  dict(exp.timings), dict(ev.scores) if ev is not None else {},
                                  {k: (list(map(float, x)), list(map(float, y))) for k, (x, y) in ev.curves.items()}
                                  if ev is not None else {}, gradients=exp.extras.get("gradients")))
        first = explanations[0] if explanations else None
        images.append(ImageRecord(name, image, truth, model.class_names[truth] if truth is not None else "",
                                  top[0], top[1], float(top[2]), first.labels[0] if first else None,
                                  first.label_names[0] if first else "", maps))
    info = model.describe() if hasattr(model, "describe") else {"path": getattr(model, "path", "")}
    return RunRecord(info, str(info.get("device", "")), list(dict.fromkeys(methods)), {}, {}, images, "python", title)


def _int(v: Any) -> int | None:
    try:
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _obj(v: Any) -> dict[str, Any]:
    if isinstance(v, dict):
        return v
    if isinstance(v, str) and v.strip().startswith("{"):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return {"raw": v}
    return {}
