"""Pictures: colour rules, colour bars, input types and panels of the figure functions.

Oracles: captum's ``visualization._normalize_attr`` (percentile clipping of gradient maps),
values known by hand (a zero-centred diverging scale, an outlier that must not set the
scale), and the rendered pixels themselves (RGB read back from the figure canvas).
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

import onnxplain  # noqa: E402
from onnxplain.render import colorize, normalize_attribution, overlay_figure, overview_figure, style_for  # noqa: E402
from onnxplain.result import Explanation  # noqa: E402


def _photo() -> np.ndarray:
    return data.chelsea()[::4, ::4]  # 75 x 113, landscape


def _gradient_like(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.abs(rng.standard_normal(shape)) * 1e-4
    m[:3, 0] = 3e-3  # three outlier pixels (~1.3 % of the mass), ~40x the typical value: min-max would wash the rest out
    return m


@pytest.mark.parametrize("sign", ["absolute", "signed"])
def test_normalisation_matches_captum(sign):
    from captum.attr._utils.visualization import _normalize_attr

    rng = np.random.default_rng(1)
    attr = rng.standard_normal((40, 50)) ** 3
    ours, t = normalize_attribution(attr, sign=sign, outlier_percent=2)
    theirs = _normalize_attr(attr, "absolute_value" if sign == "absolute" else "all", outlier_perc=2)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert 0 < t < np.abs(attr).max()


def test_outlier_does_not_set_the_gradient_scale():
    img = _photo()
    m = _gradient_like(img.shape[:2])
    _, scale = colorize(img, m, kind="gradient", quantity="|gradient|")
    # the scale ends where 98% of the absolute mass lies: far below the outlier, and it says values are clipped
    assert scale.vmax < 1e-3 and scale.extend == "max" and scale.vmin == 0.0
    norm, _ = normalize_attribution(m)
    assert np.median(norm) > 0.15 > np.median(m / m.max())  # the rest stays visible; min-max would dim it


def test_signed_maps_are_centred_on_zero():
    img = _photo()
    m = np.linspace(-0.01, 0.05, img.shape[0] * img.shape[1]).reshape(img.shape[:2])
    shown, scale = colorize(img, m, kind="signed", quantity="score drop when occluded")
    assert scale.vmin == -scale.vmax == pytest.approx(-0.05) and scale.cmap == "RdBu_r"
    # a pixel whose map value is ~0 keeps the (grey) photo: no colour is blended in
    zero = np.unravel_index(np.argmin(np.abs(m)), m.shape)
    px = img[zero] / 255.0
    grey = px.mean() * 0.85 + 0.15 * px
    np.testing.assert_allclose(shown[zero], grey, atol=0.03)
    # the most positive pixel is red, the most negative blue
    hi, lo = np.unravel_index(np.argmax(m), m.shape), np.unravel_index(np.argmin(m), m.shape)
    assert shown[hi][0] > shown[hi][2] and shown[lo][2] > shown[lo][0]


def test_method_styles_say_what_the_number_means():
    assert style_for("occlusion").kind == "signed" and style_for("occlusion").quantity == "score drop when occluded"
    assert style_for("lime", {"surrogate": "linear"}).quantity == "surrogate weight"
    assert style_for("lime", {"surrogate": "tree"}).kind == "heat"  # tree importance is >= 0
    assert style_for("gradient").kind == "gradient" and "|d score / d pixel|" in style_for("gradient").quantity
    assert "checkerboard" in style_for("zeiler-fergus").caption


def _fig_text(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in [ax.xaxis.label, ax.yaxis.label, ax.title])


@pytest.mark.parametrize("kind", ["path", "pil", "uint8", "float01", "gray"])
def test_overlay_figure_accepts_paths_pil_and_arrays(kind, tmp_path):
    img = _photo()
    if kind == "path":
        Image.fromarray(img).save(tmp_path / "coffee.jpg")
        image = str(tmp_path / "coffee.jpg")
    elif kind == "pil":
        image = Image.fromarray(img)
    elif kind == "uint8":
        image = img
    elif kind == "float01":
        image = img / 255.0
    else:
        image = img.mean(axis=2).astype(np.uint8)
    m = np.random.default_rng(0).random(img.shape[:2])
    fig = overlay_figure(image, m, quantity="my units")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert "my units" in _fig_text(fig)
    plt.close(fig)


def test_multi_label_maps_get_one_panel_per_label_and_a_file_when_asked(tmp_path):
    img = _photo()
    for k in (2, 3, 4):
        m = np.random.default_rng(k).random((*img.shape[:2], k)).astype(np.float32)
        exp = Explanation("occlusion", m, list(range(k)), [f"c{i}" for i in range(k)], np.arange(k, dtype=np.float32))
        fig = overlay_figure(img, exp, tmp_path / f"k{k}.png")
        images = [ax for ax in fig.axes if ax.images and ax.get_title()]
        assert [ax.get_title().split(":")[1].strip().split(" ")[0] for ax in images] == [f"c{i}" for i in range(k)]
        assert sum("score drop when occluded" in ax.xaxis.label.get_text() for ax in fig.axes) == k
        plt.close(fig)
        saved = np.asarray(Image.open(tmp_path / f"k{k}.png").convert("RGB"), np.float64)
        assert saved.shape[1] > saved.shape[0] * k * 0.8 and saved.std() > 20


def test_colour_bar_lies_along_the_long_side_and_leaves_no_wide_margin(tmp_path):
    img = _photo()  # landscape
    m = np.random.default_rng(0).random(img.shape[:2])
    fig = overlay_figure(img, m, tmp_path / "l.png", kind="heat", quantity="q")
    cbar = [ax for ax in fig.axes if ax.xaxis.label.get_text() == "q"]
    assert len(cbar) == 1  # horizontal, below the image
    plt.close(fig)
    saved = np.asarray(Image.open(tmp_path / "l.png").convert("L"), np.float64)
    cols = np.where((saved < 250).any(axis=0))[0]
    assert cols[0] < 0.05 * saved.shape[1] and cols[-1] > 0.95 * saved.shape[1]  # content spans the width
    portrait = np.ascontiguousarray(np.transpose(img, (1, 0, 2)))
    fig = overlay_figure(portrait, m.T, kind="heat", quantity="q")
    assert [ax for ax in fig.axes if ax.yaxis.label.get_text() == "q"]  # vertical, beside the image
    plt.close(fig)


def test_tiny_values_get_a_power_of_ten_in_the_label_not_an_offset():
    img = _photo()
    m = np.random.default_rng(0).random(img.shape[:2]) * 6e-6
    fig = overlay_figure(img, m, kind="heat", quantity="surrogate importance")
    labels = [ax.xaxis.label.get_text() for ax in fig.axes]
    assert "surrogate importance (x 1e-6)" in labels
    plt.close(fig)


def test_map_of_another_size_is_refused_with_the_shapes():
    with pytest.raises(onnxplain.OptionError, match=r"\(10, 10\).*\(75, 113\)"):
        overlay_figure(_photo(), np.zeros((10, 10)))


def test_overview_sheet_has_every_method_and_the_caption(tmp_path):
    img = _photo()
    exps = [Explanation(name, np.random.default_rng(i).random(img.shape[:2]).astype(np.float32), [285],
                        ["Egyptian cat"], np.array([0.8], np.float32), timings={"total": 1.0})
            for i, name in enumerate(["gradcam", "gradient", "zeiler-fergus", "occlusion", "rise"])]
    fig = overview_figure(img, exps, tmp_path / "sheet.png", title="cat")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "image" and [t.split(" ")[0] for t in titles[1:]] == [e.method for e in exps]
    assert any("checkerboard" in t.get_text() for t in fig.texts)
    plt.close(fig)
    assert np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"), np.float64).std() > 20


def test_colour_bar_labels_of_neighbouring_panels_do_not_touch(tmp_path):
    # oracle: the rendered text boxes themselves; Recipro-CAM's and Eigen-CAM's long quantities
    # ran into their neighbours' labels before they were wrapped to the panel width
    img = data.chelsea()
    names = ["reciprocam", "layercam", "eigencam", "ablationcam", "xgradcam", "guided-gradcam"]
    exps = [Explanation(name, np.random.default_rng(i).random(img.shape[:2]).astype(np.float32), [285],
                        ["Egyptian cat"], np.array([0.8], np.float32)) for i, name in enumerate(names)]
    fig = overview_figure(img, exps, tmp_path / "sheet.png")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.xaxis.label.get_window_extent(renderer) for ax in fig.axes if ax.xaxis.label.get_text()]
    assert len(boxes) == len(names)
    overlaps = [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    assert not overlaps, [(names[i], names[j]) for i, j in overlaps]
    panels = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    assert all(not b.overlaps(p) for b in boxes for p in panels)  # nor into the images of the row below
    plt.close(fig)


def test_signed_gradient_pictures_use_the_per_channel_gradients():
    img = _photo()
    g = np.random.default_rng(2).standard_normal((*img.shape[:2], 3)).astype(np.float32)
    exp = Explanation("gradient", np.abs(g).sum(axis=2), [285], ["Egyptian cat"], np.array([0.8], np.float32),
                      extras={"gradients": g})
    fig = overlay_figure(img, exp, sign="signed")
    labels = [ax.xaxis.label.get_text() for ax in fig.axes]
    assert "d score / d pixel (sum over RGB)" in labels  # the signed quantity, not |...|
    bar = [ax for ax in fig.axes if ax.xaxis.label.get_text().startswith("d score")][0]
    lo, hi = bar.get_xlim()
    assert lo == pytest.approx(-hi)  # diverging, centred on zero
    plt.close(fig)
    bare = Explanation("gradient", exp.score_map, [285], ["Egyptian cat"], np.array([0.8], np.float32))
    fig = overlay_figure(img, bare, sign="signed")  # no per-channel gradients: |attribution|, and it says so
    assert any("drawn as |attribution|" in t.get_text() for t in fig.texts)
    assert "|d score / d pixel| (sum over RGB)" in [ax.xaxis.label.get_text() for ax in fig.axes]
    plt.close(fig)


@pytest.mark.parametrize("outside", [False, True])
def test_save_figure_crops_like_tight_and_never_clips(tmp_path, outside):
    """save_figure draws once and crops where the content lies inside the canvas, else takes
    matplotlib's tight path. Oracle: matplotlib's own ``bbox_inches="tight"`` file of the same
    figure (same size within a pixel of rounding; the same pixels where nothing was clipped)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from onnxplain.render import PAD_INCHES, save_figure

    fig = plt.figure(figsize=(4, 3), dpi=100)
    ax = fig.add_axes([0.2, 0.2, 0.6, 0.6])
    ax.imshow(np.arange(64, dtype=float).reshape(8, 8))
    fig.text(-0.05 if outside else 0.05, 0.5, "a label at the edge", fontsize=9)
    save_figure(fig, tmp_path / "ours.png")
    fig.savefig(tmp_path / "tight.png", bbox_inches="tight", pad_inches=PAD_INCHES)
    plt.close(fig)
    ours, tight = Image.open(tmp_path / "ours.png"), Image.open(tmp_path / "tight.png")
    assert abs(ours.size[0] - tight.size[0]) <= 1 and abs(ours.size[1] - tight.size[1]) <= 1
    if outside:  # matplotlib's path, so the same pixels, the whole label included
        assert np.array_equal(np.asarray(ours), np.asarray(tight))
