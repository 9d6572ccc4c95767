"""Rendering maps for people: heat-map overlays with a colour bar, feature boundaries, masks.

Maps stay raw in results; normalising and colouring happen only here. matplotlib supplies
the colormaps and colour bars, scikit-image the boundaries.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .errors import OptionError
from ._validation import check_choice, check_float

#: colormap per map kind: heat maps use "jet" (MATLAB's imageLIME/gradCAM figures); gradient
#: maps are shown white-to-black ("gray_r") after rescaling to [0, 1], as in the MATLAB example.
CMAPS = {"heat": "jet", "gradient": "gray_r", "signed": "RdBu_r"}


def normalize(score_map: np.ndarray, *, signed: bool = False) -> np.ndarray:
    """Rescale to [0, 1] (or [-1, 1] around 0 when ``signed``) for display only."""
    m = np.asarray(score_map, dtype=np.float64)
    if signed:
        peak = np.abs(m).max()
        return (m / peak if peak > 0 else m).astype(np.float32)
    lo, hi = m.min(), m.max()
    return ((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)).astype(np.float32)


def overlay_figure(image: np.ndarray, score_map: np.ndarray, path: str | os.PathLike, *, kind: str = "heat",
                   alpha: float = 0.5, title: str | None = None, boundaries: np.ndarray | None = None) -> None:
    """Write a PNG: the image with the map over it and a colour bar of the map's raw values.

    ``kind``: "heat" (jet over the image), "gradient" (white-to-black map beside the image,
    as in the MATLAB gradient-attribution example) or "signed" (diverging, centred at 0).
    """
    check_choice("kind", kind, tuple(CMAPS))
    alpha = check_float("alpha", alpha, minimum=0.0, maximum=1.0)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    img = _display_image(image)
    m = np.asarray(score_map, dtype=np.float32)
    if m.shape[:2] != img.shape[:2]:
        raise OptionError(f"map shape {m.shape[:2]} does not match image shape {img.shape[:2]}; upsample first.")
    if boundaries is not None:
        from skimage.segmentation import mark_boundaries

        img = mark_boundaries(img, boundaries, color=(1, 1, 0))
    if kind == "gradient":
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 4), dpi=100)
        axes[0].imshow(img)
        axes[0].set_title("image")
        shown = axes[1].imshow(normalize(m), cmap=CMAPS[kind], vmin=0, vmax=1)
        axes[1].set_title("attribution (rescaled to [0, 1])", fontsize=9)
        if title:
            fig.suptitle(title, fontsize=9)
        for ax in axes:
            ax.axis("off")
        fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
    else:
        fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=100)
        ax.imshow(img)
        if kind == "signed":
            peak = float(np.abs(m).max()) or 1.0
            shown = ax.imshow(m, cmap=CMAPS[kind], alpha=alpha, vmin=-peak, vmax=peak)
        else:
            shown = ax.imshow(m, cmap=CMAPS[kind], alpha=alpha)
        ax.axis("off")
        if title:
            ax.set_title(title, fontsize=9)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(os.fspath(path))
    plt.close(fig)


def _display_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    hi = img.max()
    return np.clip(img / 255.0 if hi > 1.0 else img, 0.0, 1.0)


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
