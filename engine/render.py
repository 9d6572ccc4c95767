"""Rendering maps for people: overlays with labelled colour bars, overview sheets, LIME masks.

Maps stay raw in results; normalising and colouring happen only here, by one set of rules
shared by the PNG figures, ``Explanation.plot()`` and the HTML report (:mod:`onnxplain.report`):

- **heat** (Grad-CAM family, RISE; maps that are non-negative by construction): MATLAB's
  ``jet`` over the photograph at ``alpha`` 0.5, colour scale from the map's minimum to its
  maximum.
- **gradient** (plain, guided, Zeiler-Fergus, integrated gradients, SmoothGrad,
  gradient x input, guided Grad-CAM): captum ``visualize_image_attr``'s normalisation: the
  scale ends at the value below which ``100 - outlier_percent`` % (98 %) of the map's
  absolute mass lies (a cumulative-sum percentile, so a few outlier pixels cannot wash the
  rest out); values beyond are clipped (the colour bar's triangle). Drawn as a blended heat
  overlay on a grey copy of the photo: opacity grows with the value, so the photo shows
  where the map is ~0. ``sign="absolute"`` (default: |attribution|, sequential colours) or
  ``"signed"`` (sum over RGB of the signed per-channel gradients, diverging colours centred
  on 0).
- **signed** (occlusion score drops, LIME linear surrogate weights): a diverging map
  (``RdBu_r``: red = positive, blue = negative) centred on zero with limits +-max|map|,
  blended on a grey copy of the photo with opacity growing with |value|.

Colour bars carry what the number means (``quantity``: "score drop when occluded",
"surrogate weight", "|gradient| (sum over RGB)", ...) with a power-of-ten factor in the
label instead of an unexplained "1e-6" offset, and are laid along the image's long side
(below a landscape photo, beside a portrait one) so they never leave wide margins.
"""
from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ._validation import check_choice, check_float
from .errors import ImageError, OptionError
from .registry import METHODS
from .images import load_image, resize_map
from .result import Explanation

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .result import Explanation

KINDS = ("heat", "gradient", "signed")
SIGNS = ("absolute", "signed")
#: colormaps: heat = MATLAB's jet; gradient magnitudes = a sequential map whose low end is
#: transparent in the blend; signed = diverging, red positive.
CMAPS = {"heat": "jet", "gradient": "inferno", "signed": "RdBu_r"}
#: captum's default share of outliers clipped by the cumulative-sum percentile
OUTLIER_PERCENT = 2.0

ZEILER_FERGUS_NOTE = ("Zeiler-Fergus (deconvnet) passes only positive signal back through each rectifier, "
                      "ignoring where the forward ReLU/ReLU6 was off; on networks with stride-2 convolutions the "
                      "transposed strides overlap unevenly, which paints a regular stripe/checkerboard grid "
                      "(Odena et al. 2016). The grid is the method's artefact, not evidence about the image.")


@dataclass(frozen=True)
class Style:
    """How one method's map is drawn: colour rule, what the number means, an optional caption."""

    kind: str
    quantity: str
    caption: str = ""


#: method name -> (kind, quantity). Names as in ``onnxplain.METHODS`` / ``onnxplain explain``.
_STYLES: dict[str, tuple[str, str]] = {
    "gradcam": ("heat", "Grad-CAM: ReLU(sum of weighted activations)"),
    "gradcam++": ("heat", "Grad-CAM++: ReLU(sum of weighted activations)"),
    "scorecam": ("heat", "Score-CAM: ReLU(score-weighted activations)"),
    "score-cam": ("heat", "Score-CAM: ReLU(score-weighted activations)"),
    "rise": ("heat", "mean score of random masks keeping the pixel"),
    "reciprocam": ("heat", "Recipro-CAM: class logit with the feature map kept around each location"),
    "layercam": ("heat", "LayerCAM: ReLU(sum of ReLU(gradient) x activations)"),
    "hirescam": ("heat", "HiResCAM: ReLU(sum of gradient x activations)"),
    "xgradcam": ("heat", "XGrad-CAM: ReLU(sum of weighted activations)"),
    "eigencam": ("heat", "Eigen-CAM: first principal component of the activations"),
    "ablationcam": ("heat", "Ablation-CAM: ReLU(sum of score-drop-weighted activations)"),
    "kernelshap": ("signed", "Shapley value of the superpixel (score units)"),
    "occlusion": ("signed", "score drop when occluded"),
    "lime": ("signed", "surrogate weight"),
    "guided-gradcam": ("gradient", "|guided backprop x Grad-CAM| (sum over RGB)"),
    "gradient": ("gradient", "|d score / d pixel| (sum over RGB)"),
    "guided-backprop": ("gradient", "|guided gradient| (sum over RGB)"),
    "zeiler-fergus": ("gradient", "|deconvnet signal| (sum over RGB)"),
    "integrated-gradients": ("gradient", "|attribution| in score units (sum over RGB)"),
    "smoothgrad": ("gradient", "|mean gradient over noisy copies| (sum over RGB)"),
    "gradient-x-input": ("gradient", "|gradient x pixel| in score units (sum over RGB)"),
}
_SIGNED_QUANTITY = {
    "gradient": "d score / d pixel (sum over RGB)", "guided-backprop": "guided gradient (sum over RGB)",
    "zeiler-fergus": "deconvnet signal (sum over RGB)", "integrated-gradients": "attribution in score units (sum over RGB)",
    "smoothgrad": "mean gradient over noisy copies (sum over RGB)",
    "gradient-x-input": "gradient x pixel in score units (sum over RGB)",
}


def style_for(method: str, params: dict[str, Any] | None = None) -> Style:
    """The drawing rule of a method's map (unknown methods: "heat", quantity "importance")."""
    kind, quantity = _STYLES.get(method, (None, "importance"))
    if kind is None:  # a method this table does not know: the registry's render field, else heat
        spec = METHODS.get(method)
        kind = spec.render if spec is not None and spec.render in KINDS else "heat"
    if method == "lime" and (params or {}).get("surrogate", "tree") == "tree":
        # predictorImportance of a regression tree is >= 0 (MSE reduction), not a signed weight
        kind, quantity = "heat", "surrogate importance (tree MSE reduction)"
    caption = ZEILER_FERGUS_NOTE if method == "zeiler-fergus" else ""
    return Style(kind, quantity, caption)


# ---- normalisation ---------------------------------------------------------------------------
def cumulative_threshold(values: np.ndarray, percentile: float) -> float:
    """captum's ``_cumulative_sum_threshold``: the smallest value at which the ascending
    cumulative sum reaches ``percentile`` % of the total (values must be >= 0)."""
    v = np.sort(np.ravel(np.asarray(values, dtype=np.float64)))
    if v.size == 0:
        return 0.0
    cums = np.cumsum(v)
    idx = int(np.searchsorted(cums, cums[-1] * 0.01 * percentile, side="left"))
    return float(v[min(idx, v.size - 1)])


def normalize_attribution(score_map: np.ndarray, *, sign: str = "absolute",
                          outlier_percent: float = OUTLIER_PERCENT) -> tuple[np.ndarray, float]:
    """captum ``_normalize_attr`` (``sign`` "absolute" -> |map| / t in [0, 1]; "signed" ->
    map / t in [-1, 1]), clipped; ``t`` = the cumulative-sum threshold of |map| at
    ``100 - outlier_percent``. Returns (normalised float32 map, t)."""
    check_choice("sign", sign, SIGNS)
    outlier_percent = check_float("outlier_percent", outlier_percent, minimum=0.0, maximum=100.0, strict_minimum=False)
    m = np.asarray(score_map, dtype=np.float64)
    a = np.abs(m)
    t = cumulative_threshold(a, 100.0 - outlier_percent)
    if not t > 0:
        t = float(a.max()) if a.max() > 0 else 1.0
    base = a if sign == "absolute" else m
    return np.clip(base / t, -1.0, 1.0).astype(np.float32), t


def normalize(score_map: np.ndarray, *, signed: bool = False) -> np.ndarray:
    """Rescale to [0, 1] (or [-1, 1] around 0 when ``signed``) by the extremes, for display only."""
    m = np.asarray(score_map, dtype=np.float64)
    if signed:
        peak = np.abs(m).max()
        return (m / peak if peak > 0 else m).astype(np.float32)
    lo, hi = m.min(), m.max()
    return ((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)).astype(np.float32)


@dataclass(frozen=True)
class ColorScale:
    """The colour scale of one drawn map, in the map's raw units."""

    cmap: str
    vmin: float
    vmax: float
    extend: str          # "neither" | "max" | "both": values beyond the ends were clipped
    quantity: str


def colorize(image: Any, score_map: np.ndarray, *, kind: str = "heat", sign: str = "absolute",
             alpha: float = 0.5, outlier_percent: float = OUTLIER_PERCENT, quantity: str = "importance",
             boundaries: np.ndarray | None = None) -> tuple[np.ndarray, ColorScale]:
    """The overlay as an RGB float image in [0, 1] (H, W, 3) and its :class:`ColorScale`.

    The one place the colour rules live (module docstring); figures and the HTML report
    both draw through it.
    """
    check_choice("kind", kind, KINDS)
    check_choice("sign", sign, SIGNS)
    alpha = check_float("alpha", alpha, minimum=0.0, maximum=1.0)
    import matplotlib

    img = display_image(image)
    m = np.asarray(score_map, dtype=np.float64)
    if m.ndim != 2:
        raise OptionError(f"colorize() draws one (H, W) map at a time; got shape {m.shape}.")
    if m.shape != img.shape[:2]:
        raise OptionError(f"map shape {m.shape} does not match image shape {img.shape[:2]}; upsample first.")
    if not np.all(np.isfinite(m)):
        raise OptionError(f"the map has {int(np.count_nonzero(~np.isfinite(m)))} NaN/inf values; nothing to draw.")
    if boundaries is not None:
        from skimage.segmentation import mark_boundaries

        img = mark_boundaries(img, np.asarray(boundaries), color=(1, 1, 0)).astype(np.float64)
    cm = matplotlib.colormaps
    if kind == "heat":
        lo, hi = float(m.min()), float(m.max())
        u = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        color = cm[CMAPS["heat"]](u)[..., :3]
        out = (1 - alpha) * img + alpha * color
        return np.clip(out, 0, 1), ColorScale(CMAPS["heat"], lo, hi if hi > lo else lo + 1e-12, "neither", quantity)
    grey = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2) * 0.85 + 0.15 * img
    strength = min(1.0, alpha * 1.7)  # full-scale opacity (0.85 at the default alpha 0.5)
    if kind == "gradient":
        norm, t = normalize_attribution(m, sign=sign, outlier_percent=outlier_percent)
        clipped = bool(np.abs(m).max() > t)
        if sign == "absolute":
            color = cm[CMAPS["gradient"]](0.35 + 0.65 * norm)[..., :3]
            a = strength * norm[..., None] ** 0.6  # mid values stay visible, ~0 stays the photo
            scale = ColorScale(CMAPS["gradient"] + "@0.35", 0.0, t, "max" if clipped else "neither", quantity)
        else:
            color = cm[CMAPS["signed"]](0.5 + 0.5 * norm)[..., :3]
            a = strength * np.sqrt(np.abs(norm))[..., None]
            scale = ColorScale(CMAPS["signed"], -t, t, "both" if clipped else "neither", quantity)
        return np.clip((1 - a) * grey + a * color, 0, 1), scale
    peak = float(np.abs(m).max()) or 1.0
    norm = m / peak
    color = cm[CMAPS["signed"]](0.5 + 0.5 * norm)[..., :3]
    a = strength * np.sqrt(np.abs(norm))[..., None]
    return np.clip((1 - a) * grey + a * color, 0, 1), ColorScale(CMAPS["signed"], -peak, peak, "neither", quantity)


def scale_colormap(scale: ColorScale):
    """The matplotlib colormap of a :class:`ColorScale` (a "name@start" suffix keeps the top part)."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    name, _, start = scale.cmap.partition("@")
    base = matplotlib.colormaps[name]
    if not start:
        return base
    return ListedColormap(base(np.linspace(float(start), 1.0, 256)), name=scale.cmap)


def scale_stops(scale: ColorScale, n: int = 11) -> list[str]:
    """``n`` hex colours along the scale (for CSS gradients in the HTML report)."""
    from matplotlib.colors import to_hex

    cmap = scale_colormap(scale)
    return [to_hex(cmap(x)) for x in np.linspace(0, 1, n)]


# ---- images --------------------------------------------------------------------------------
def display_image(image: Any) -> np.ndarray:
    """A path, PIL image or array (uint8 0..255 or float 0..1 / 0..255) as float (H, W, 3) in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        arr = load_image(image)
    elif _is_pil(image):
        arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        raise ImageError(f"image must be a file path, a PIL image or a numpy array (H, W[, 3]); got "
                         f"{type(image).__name__}.")
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"image has shape {np.shape(arr)}; expected (H, W), (H, W, 3) or (H, W, 4).")
    img = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(img)):
        raise ImageError("image contains NaN or inf pixels.")
    scale = 255.0 if (arr.dtype == np.uint8 or img.max() > 1.0) else 1.0
    return np.clip(img / scale, 0.0, 1.0)


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, Image.Image)


# ---- figures -------------------------------------------------------------------------------
#: zlib level of the PNGs onnxplain writes (figures, report pictures). Pillow's default (6) made PNG
#: encoding the largest single cost of ``onnxplain explain`` after inference (2.2 s of 17 s for ten
#: methods, cProfile); level 1 encodes a 500 x 420 overlay ~3x faster for ~12 % more bytes.
PNG_COMPRESS_LEVEL = 1


#: room around a figure's content in its file (matplotlib's ``pad_inches``)
PAD_INCHES = 0.05
#: blank canvas left and right of the panels, for the half of a colour bar's end tick label that
#: sticks out (e.g. "-1.6e+03" at 7 pt); cropped away by save_figure, which draws once only when
#: nothing reaches outside the canvas
SIDE_INCHES = 0.3


def save_figure(fig: "Figure", path: str | os.PathLike) -> None:
    """Write a figure cropped to its content plus :data:`PAD_INCHES` (what
    ``bbox_inches="tight"`` gives); PNGs at :data:`PNG_COMPRESS_LEVEL`.

    PNGs are drawn once: the content box is read from that drawing and the canvas cropped to
    it. matplotlib's ``bbox_inches="tight"`` draws the whole figure twice (once to measure,
    once into a canvas of the measured size), which was ~55 % of the overview sheet's time.
    Where content reaches outside the canvas (which only a re-sized canvas can show) the file
    is written by matplotlib's tight path instead, so the result is never clipped.
    """
    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() not in ("", ".png"):
        fig.savefig(path, bbox_inches="tight", pad_inches=PAD_INCHES)
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    box = fig.get_tightbbox(canvas.get_renderer())  # inches, origin bottom left
    width, height = fig.get_size_inches()
    if box.x0 < 0 or box.y0 < 0 or box.x1 > width or box.y1 > height:
        fig.savefig(path, bbox_inches="tight", pad_inches=PAD_INCHES,
                    pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
        return
    dpi = fig.dpi
    rgba = np.asarray(canvas.buffer_rgba())
    rows, cols = rgba.shape[:2]
    x0 = max(0, math.floor((box.x0 - PAD_INCHES) * dpi))
    x1 = min(cols, math.ceil((box.x1 + PAD_INCHES) * dpi))
    top = max(0, rows - math.ceil((box.y1 + PAD_INCHES) * dpi))
    bottom = min(rows, rows - math.floor((box.y0 - PAD_INCHES) * dpi))
    Image.fromarray(np.ascontiguousarray(rgba[top:bottom, x0:x1])).save(
        path, format="PNG", compress_level=PNG_COMPRESS_LEVEL, dpi=(dpi, dpi))


def overlay_figure(image: Any, score_map: "np.ndarray | Explanation", path: str | os.PathLike | None = None, *,
                   kind: str | None = None, sign: str = "absolute", alpha: float = 0.5,
                   outlier_percent: float = OUTLIER_PERCENT, title: str | None = None,
                   titles: Sequence[str] | None = None, quantity: str | None = None,
                   caption: str | None = None, boundaries: np.ndarray | None = None,
                   width: float = 5.0, dpi: int = 100) -> "Figure":
    """A matplotlib Figure of the map over the image with a labelled colour bar.

    Parameters
    ----------
    image : path, PIL image or ndarray (H, W[, 3])
    score_map : ndarray (H, W) or (H, W, K), or an :class:`~onnxplain.Explanation`
        K labels (last axis) give one panel per label. An Explanation supplies the map,
        the panel titles, ``kind``, ``quantity`` and caption by its method.
    path : path, optional
        Also write the figure there (PNG by the suffix); the figure stays open for notebooks.
    kind : {"heat", "gradient", "signed"}, optional
        The colour rule (module docstring); default from the Explanation's method, else "heat".
    sign : {"absolute", "signed"}
        For "gradient": |attribution| or signed (an Explanation with per-channel
        ``gradients`` is summed over RGB with signs).
    alpha : float
        Overlay opacity (heat) / full-scale opacity factor (gradient, signed).
    outlier_percent : float
        Share of the absolute mass clipped at the top of a "gradient" scale (captum: 2).
    title, titles : str, optional
        A title over the figure; one title per panel.
    quantity : str, optional
        The colour bar's label: what the number means (default from the method).
    boundaries : int ndarray (H, W), optional
        A label image (e.g. LIME's ``feature_map``) whose borders are drawn in yellow.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if kind is not None:
        check_choice("kind", kind, KINDS)
    check_choice("sign", sign, SIGNS)
    img = display_image(image)
    panel_titles: list[str] = list(titles) if titles is not None else []
    if isinstance(score_map, Explanation):
        exp = score_map
        st = style_for(exp.method, exp.params)
        kind = kind or st.kind
        caption = st.caption if caption is None else caption
        if kind == "gradient" and sign == "signed" and not isinstance(exp.extras.get("gradients"), np.ndarray):
            sign = "absolute"  # said in the caption, never silently: the signed form needs per-channel gradients
            caption = ((caption + "\n") if caption else "") + (f"{exp.method}: drawn as |attribution| (this result "
                                                                "keeps no signed per-channel gradients).")
        maps = _explanation_maps(exp, sign if kind == "gradient" else "absolute")
        if quantity is None:
            quantity = _SIGNED_QUANTITY.get(exp.method, st.quantity) if (kind == "gradient" and sign == "signed") \
                else st.quantity
        if not panel_titles:
            panel_titles = [f"{exp.method}: {n} ({i}), score {s:.3g}"
                            for i, n, s in zip(exp.labels, exp.label_names, np.ravel(exp.scores))]
        if boundaries is None and exp.method == "lime" and isinstance(exp.extras.get("feature_map"), np.ndarray):
            fm = exp.extras["feature_map"]
            boundaries = fm if fm.shape[:2] == img.shape[:2] else None
    else:
        maps = np.asarray(score_map, dtype=np.float32)
        if maps.ndim not in (2, 3):
            raise OptionError(f"score_map must be (H, W) or (H, W, K); got shape {maps.shape}.")
        maps = maps if maps.ndim == 3 else maps[..., None]
        kind = kind or "heat"
    if maps.shape[:2] != img.shape[:2]:
        if maps.shape[0] > img.shape[0] or maps.shape[1] > img.shape[1] or not isinstance(score_map, Explanation):
            raise OptionError(f"map shape {maps.shape[:2]} does not match image shape {img.shape[:2]}; upsample "
                              "first (onnxplain.images.resize_map) or pass the image the map was computed for.")
        maps = resize_map(maps, img.shape[:2], "nearest")
    k = maps.shape[2]
    if panel_titles and len(panel_titles) != k:
        raise OptionError(f"titles has {len(panel_titles)} entries for {k} map panel(s).")
    quantity = quantity or "importance"
    fig = _panels_figure(img, [maps[..., i] for i in range(k)], [kind] * k, [quantity] * k,
                         panel_titles or [None] * k, sign=sign, alpha=alpha, outlier_percent=outlier_percent,
                         boundaries=boundaries, width=width, dpi=dpi, ncols=k, title=title, caption=caption,
                         photo=False)
    if path is not None:
        save_figure(fig, path)
    return fig


def overview_figure(image: Any, explanations: "Sequence[Explanation]", path: str | os.PathLike | None = None, *,
                    title: str | None = None, ncols: int | None = None, sign: str = "absolute",
                    alpha: float = 0.5, label_position: int = 0, width: float = 3.2, dpi: int = 100) -> "Figure":
    """One sheet: the photo and every explanation's map side by side, each by its method's rule.

    ``label_position`` picks the label of multi-label maps. Captions (e.g. Zeiler-Fergus's
    checkerboard) are collected under the sheet.
    """
    img = display_image(image)
    maps, kinds, quantities, titles, captions, signs = [], [], [], [], [], []
    for exp in explanations:
        st = style_for(exp.method, exp.params)
        signed = st.kind == "gradient" and sign == "signed" and isinstance(exp.extras.get("gradients"), np.ndarray)
        m = _explanation_maps(exp, "signed" if signed else "absolute")[..., label_position]
        if m.shape != img.shape[:2]:
            m = resize_map(m[..., None], img.shape[:2], "nearest")[..., 0]
        maps.append(m)
        kinds.append(st.kind)
        quantities.append(_SIGNED_QUANTITY.get(exp.method, st.quantity) if signed else st.quantity)
        signs.append("signed" if signed else "absolute")
        total = exp.timings.get("total")
        titles.append(exp.method + (f" ({total:.1f} s)" if total is not None else ""))
        if st.caption:
            captions.append(f"{exp.method}: {st.caption}")
    n = len(maps) + 1
    ncols = ncols or min(4, n)
    fig = _panels_figure(img, maps, kinds, quantities, titles, sign=signs, alpha=alpha,
                         outlier_percent=OUTLIER_PERCENT, boundaries=None, width=width, dpi=dpi, ncols=ncols,
                         title=title, caption="\n".join(captions), photo=True)
    if path is not None:
        save_figure(fig, path)
    return fig


def _explanation_maps(exp: "Explanation", sign: str) -> np.ndarray:
    """(H, W, K) float32 maps of an Explanation; signed gradient maps from the per-channel gradients."""
    if sign == "signed" and isinstance(exp.extras.get("gradients"), np.ndarray):
        g = np.asarray(exp.extras["gradients"], dtype=np.float32)
        m = g.sum(axis=2)  # (H, W[, K])
    else:
        m = np.asarray(exp.score_map, dtype=np.float32)
    return m if m.ndim == 3 else m[..., None]


def _panels_figure(img: np.ndarray, maps: list[np.ndarray], kinds: list[str], quantities: list[str],
                   titles: list[str | None], *, sign: str | list[str], alpha: float, outlier_percent: float,
                   boundaries: np.ndarray | None, width: float, dpi: int, ncols: int, title: str | None,
                   caption: str | None, photo: bool) -> "Figure":
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    h, w = img.shape[:2]
    landscape = w >= h
    n = len(maps) + (1 if photo else 0)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    # panel box: the image plus room for its colour bar (below a landscape image, right of a portrait)
    img_h = width * h / w
    panel_w = width + (0 if landscape else 0.9)
    # colour-bar labels wrap to the panel width (about 15 characters of 8 pt text per inch) so
    # neighbouring panels' labels never run into each other; room is kept for the longest one
    label_chars = max(12, int(15 * (width if landscape else img_h)))
    label_lines = max((len(textwrap.wrap(q + " (x 1e-10)", label_chars)) for q in quantities), default=1)
    panel_h = img_h + (0.62 + 0.13 * (label_lines - 1) if landscape else 0.05) + 0.28
    cap_lines = 0 if not caption else sum(1 + len(line) // int(18 * panel_w * ncols / 1.3) for line in caption.split("\n"))
    fig_h = nrows * panel_h + (0.35 if title else 0) + 0.16 * cap_lines
    fig = plt.figure(figsize=(panel_w * ncols + 2 * SIDE_INCHES, fig_h), dpi=dpi)
    top = 1 - (0.35 / fig_h if title else 0)
    bottom = 0.16 * cap_lines / fig_h
    side = SIDE_INCHES / (panel_w * ncols + 2 * SIDE_INCHES)
    grid = fig.add_gridspec(nrows, ncols, left=side, right=1 - side, top=top, bottom=bottom, wspace=0.06, hspace=0.02)
    slots = iter(range(n))
    if photo:
        ax = fig.add_subplot(grid[0, 0])
        ax.imshow(img)
        ax.set_title("image", fontsize=9, y=1.0)  # y given: no per-draw title placement search (below)
        ax.axis("off")
        next(slots)
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    signs = sign if isinstance(sign, list) else [sign] * len(maps)
    for m, kind, quantity, ptitle, slot, s in zip(maps, kinds, quantities, titles, slots, signs):
        ax = fig.add_subplot(grid[slot // ncols, slot % ncols])
        shown, scale = colorize(img, m, kind=kind, sign=s, alpha=alpha, outlier_percent=outlier_percent,
                                quantity=quantity, boundaries=boundaries)
        ax.imshow(shown)
        ax.axis("off")
        if ptitle:
            # an explicit y=1.0 is where matplotlib puts it anyway over an axis-off image, without
            # its per-draw search for tick labels to dodge (~20 % of a figure's drawing time)
            ax.set_title(ptitle, fontsize=9, y=1.0)
        div = make_axes_locatable(ax)
        cax = div.append_axes("bottom" if landscape else "right", size="5%", pad=0.06)
        factor, label = _scaled_label(scale)
        mappable = ScalarMappable(Normalize(scale.vmin / factor, scale.vmax / factor), scale_colormap(scale))
        cb = fig.colorbar(mappable, cax=cax, orientation="horizontal" if landscape else "vertical",
                          extend=scale.extend)
        cb.set_label(textwrap.fill(label, label_chars), fontsize=8)
        cb.ax.tick_params(labelsize=7)
        if landscape:
            cb.ax.xaxis.set_major_locator(__import__("matplotlib.ticker", fromlist=["MaxNLocator"]).MaxNLocator(5))
    if title:
        fig.suptitle(title, fontsize=10)
    if caption:
        fig.text(0.01, 0.005, caption, fontsize=7.5, style="italic", va="bottom", ha="left", wrap=True)
    return fig


def _scaled_label(scale: ColorScale) -> tuple[float, str]:
    """A power-of-ten factor for the ticks (stated in the label) when the values are tiny or huge."""
    peak = max(abs(scale.vmin), abs(scale.vmax))
    if peak == 0 or 1e-2 <= peak < 1e4:
        return 1.0, scale.quantity
    exp = int(math.floor(math.log10(peak)))
    return 10.0 ** exp, f"{scale.quantity} (x 1e{exp})"


def image_and_mask(feature_map: np.ndarray, feature_importance: np.ndarray, image: np.ndarray, *,
                   label_position: int = 0, positive_only: bool = True, negative_only: bool = False,
                   hide_rest: bool = False, num_features: int = 5, min_weight: float = 0.0,
                   hide_color: Sequence[float] | float | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top features of a LIME explanation, in the spirit of lime's ``get_image_and_mask``.

    Returns ``(image, mask)``: the image (float32, H x W x 3; pixels outside the selected
    features replaced by ``hide_color`` when ``hide_rest``) and an int mask that is 1 on
    positive selected features and -1 on negative ones (0 elsewhere).
    """
    if positive_only and negative_only:
        raise OptionError("positive_only and negative_only cannot both be True.")
    imp = np.asarray(feature_importance, dtype=np.float64)
    if imp.ndim == 2:
        imp = imp[:, label_position]
    order = np.argsort(-np.abs(imp), kind="stable")
    if positive_only:
        chosen = [f for f in order if imp[f] > 0 and imp[f] > min_weight][:num_features]
    elif negative_only:
        chosen = [f for f in order if imp[f] < 0 and abs(imp[f]) > min_weight][:num_features]
    else:
        chosen = [f for f in order if abs(imp[f]) > min_weight][:num_features]
    fm = np.asarray(feature_map)
    if fm.ndim == 3:
        fm = fm[..., 0]
    signs = np.zeros(len(imp), dtype=np.int8)
    signs[chosen] = np.where(imp[chosen] > 0, 1, -1)
    mask = signs[fm].astype(np.int64)
    out = np.array(image, dtype=np.float32, copy=True)
    if hide_rest:
        fill = np.zeros(3, np.float32) if hide_color is None else np.broadcast_to(np.asarray(hide_color, np.float32), (3,))
        out[mask == 0] = fill
    return out, mask
