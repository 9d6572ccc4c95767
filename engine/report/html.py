"""Write a RunRecord as a static, self-contained HTML report.

``DIR/index.html`` holds the CSS, the JavaScript and the run's data inline; the pictures are
PNG/JPEG files in ``DIR/report/`` beside it. It opens from disk (``file://``) with no server
and makes no network request (its Content-Security-Policy forbids any).
"""
from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
from importlib import resources
from typing import Any, Callable

import numpy as np

from ..render import OUTLIER_PERCENT, PNG_COMPRESS_LEVEL, colorize, scale_stops, style_for
from .records import ReportError, RunRecord
from ..images import resize_map

#: widths in pixels of the per-image view and of the table thumbnails
VIEW_WIDTH = 600
THUMB_HEIGHT = 64
#: default "low confidence" threshold of the table (changeable in the page)
LOW_CONFIDENCE = 0.5
METRIC_ORDER = ("deletion", "insertion", "pointing_game", "energy")


def write_report(run: RunRecord, out_dir: str | os.PathLike, *, sign: str = "absolute",
                 progress: Callable[[int, int], None] | None = None, pictures: str = "report",
                 written: list[str] | None = None) -> str:
    """Write ``out_dir/index.html`` and its pictures in ``out_dir/report/``; return the index path.

    ``sign``: how gradient maps are drawn ("absolute" or "signed", as in
    :func:`onnxplain.overlay_figure`; signed needs the per-channel gradients, else absolute).
    ``pictures``: the pictures' sub-folder, or "" for files named ``report_*`` beside
    index.html (``onnxplain explain``: every file of its folder is listed in its run record).
    ``written``: a list that receives every path written.
    """
    if not run.images:
        raise ReportError("the results hold no images; nothing to report.")
    out = pathlib.Path(os.fspath(out_dir))
    if out.exists() and not out.is_dir():
        raise ReportError(f"report folder {str(out)!r} is an existing file.")
    pics = out / pictures if pictures else out
    pics.mkdir(parents=True, exist_ok=True)
    prefix = "" if pictures else "report_"
    files: list[str] = [] if written is None else written

    def save(rgb01: np.ndarray, name: str) -> str:
        path = pics / (prefix + name)
        _save(rgb01, path)
        files.append(str(path))
        return f"{pictures}/{path.name}" if pictures else path.name

    images = []
    metric_names: list[str] = []
    for i, rec in enumerate(run.images):
        try:
            photo, problem = rec.load_image(), None
        except ReportError as exc:  # an unreadable image is a row that says so, not a failed report
            photo, problem = None, str(exc)
        entry: dict[str, Any] = {"problem": problem,
            "name": rec.name, "true": rec.true_label, "true_name": rec.true_name, "pred": rec.predicted,
            "pred_name": rec.predicted_name, "conf": _num(rec.confidence), "correct": rec.correct,
            "label": rec.label, "label_name": rec.label_name, "photo": None, "maps": {}}
        view = None
        if photo is not None:
            view = _fit(photo, VIEW_WIDTH)
            entry["photo"] = save(view / 255.0, f"i{i}.jpg")
        for j, mrec in enumerate(rec.maps):
            st = style_for(mrec.method, mrec.params)
            m_entry: dict[str, Any] = {
                "status": mrec.status, "seconds": _num(mrec.timings.get("total")), "caption": st.caption,
                "metrics": {k: _num(v) for k, v in mrec.metrics.items()},
                "curves": {k: [list(map(float, x)), list(map(float, y))] for k, (x, y) in mrec.curves.items()},
                "img": None, "thumb": None, "scale": None}
            metric_names += [k for k in mrec.metrics if k not in metric_names]
            smap = mrec.load_map()
            if smap is not None and view is not None:
                draw = smap
                use_sign = sign
                if st.kind == "gradient" and sign == "signed":
                    if mrec.gradients is not None:
                        g = np.asarray(mrec.gradients, np.float32)
                        draw = (g[..., 0] if g.ndim == 4 else g).sum(axis=2)
                    else:
                        use_sign = "absolute"
                draw = _resize(draw, view.shape[:2])
                shown, scale = colorize(view, draw, kind=st.kind, sign=use_sign, outlier_percent=OUTLIER_PERCENT,
                                        quantity=st.quantity)
                m_entry["img"] = save(shown, f"i{i}_m{j}.png")
                m_entry["thumb"] = save(_fit(shown * 255.0, None, THUMB_HEIGHT) / 255.0, f"i{i}_m{j}_t.png")
                m_entry["scale"] = {"stops": scale_stops(scale), "vmin": scale.vmin, "vmax": scale.vmax,
                                    "extend": scale.extend, "quantity": scale.quantity, "kind": st.kind}
            entry["maps"][mrec.method] = m_entry
        images.append(entry)
        if progress is not None:
            progress(i + 1, len(run.images))
    metric_names = [k for k in METRIC_ORDER if k in metric_names] + [k for k in metric_names if k not in METRIC_ORDER]
    data = {"title": run.title, "source": run.source,
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "model": _jsonable(run.model), "provider": run.provider, "methods": list(run.methods),
            "settings": _jsonable(run.settings), "timings": _jsonable(run.timings), "metric_names": metric_names,
            "low_confidence": LOW_CONFIDENCE, "images": images}
    html = _template().replace("/*CSS*/", _asset("report.css")).replace("/*JS*/", _asset("report.js"))
    payload = json.dumps(_jsonable(data), allow_nan=False).replace("</", "<\\/")
    html = html.replace("/*DATA*/", payload)
    index = out / "index.html"
    tmp = out / "index.html.partial"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, index)
    files.append(str(index))
    return str(index)


def _template() -> str:
    return _asset("index.html")


def _asset(name: str) -> str:
    return resources.files("onnxplain.report").joinpath("assets", name).read_text(encoding="utf-8")


def _fit(image: np.ndarray, width: int | None, height: int | None = None) -> np.ndarray:
    """Resize (H, W, 3) 0..255 to a width (or height), never enlarging; float32 0..255."""
    from PIL import Image

    h, w = image.shape[:2]
    if width is not None:
        size = (min(w, width), max(1, round(h * min(w, width) / w)))
    else:
        size = (max(1, round(w * min(h, height) / h)), min(h, height))
    if size == (w, h):
        return np.asarray(image, np.float32)
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    return np.asarray(pil.resize(size, Image.LANCZOS), np.float32)


def _resize(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if m.shape[:2] == size:
        return m
    return resize_map(np.asarray(m, np.float32)[..., None], size, "bilinear")[..., 0]


def _save(rgb01: np.ndarray, path: pathlib.Path) -> None:
    """Write a picture atomically (a temporary name in the same folder, then a rename)."""
    from PIL import Image

    img = Image.fromarray(np.clip(np.round(np.asarray(rgb01) * 255.0), 0, 255).astype(np.uint8))
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    if path.suffix == ".jpg":
        img.save(tmp, quality=90)
    else:
        img.save(tmp, compress_level=PNG_COMPRESS_LEVEL)
    os.replace(tmp, path)


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist()) if v.size <= 64 else f"array{list(v.shape)}"
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    return str(v)
