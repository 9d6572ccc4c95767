"""onnxplain.occlusion_sensitivity.

Oracles: (1) a linear ONNX model, whose occlusion map follows by hand from the definition
(score change per window, mean over the windows covering each pixel), for both placements;
(2) captum ``Occlusion`` on the torch twins of exported zoo networks; (3) the rectangle toy
task's ground-truth boxes; (4) the documented option rules and errors.
"""
from __future__ import annotations


import numpy as np
import pytest

import onnxplain
from onnxplain.cli import main
pytest.importorskip("torch")  # this module's oracles/zoo helpers import torch
from tests.data import zoo

from ._linear import linear_model, linear_scores

# (layout, dtype, preprocessing): float32 with an ImageNet-like affine, float16 BGR, raw uint8
VARIANTS = [
    ("NCHW", "float32", {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),
    ("NHWC", "float16", {"scale": 1 / 127.5, "mean": [1, 1, 1], "std": [1, 1, 1], "channel_order": "BGR"}),
    ("NCHW", "uint8", "none"),
]


def _starts(side, k, s, clipping):
    """The documented placement: inside windows 0, s, ... <= side - k; or (clipping) window i
    centred on row i*s, as many as needed for the last window to reach the last row."""
    if not clipping:
        return list(range(0, side - k + 1, s))
    out = [-(k // 2)]
    while out[-1] + k < side:
        out.append(out[-1] + s)
    return out


def _expected(model, weights, pixels, fill, k, s, clipping, label):
    """Occlusion map by the definition, with hand-computed linear scores in float64."""
    h, w = pixels.shape[:2]
    base = linear_scores(weights, model.to_native(pixels[None]))[0, label]
    sums, counts, deltas = np.zeros((h, w)), np.zeros((h, w)), []
    for r in _starts(h, k[0], s[0], clipping):
        for c in _starts(w, k[1], s[1], clipping):
            occluded = pixels.copy()
            rows, cols = slice(max(r, 0), max(r + k[0], 0)), slice(max(c, 0), max(c + k[1], 0))
            occluded[rows, cols] = fill
            delta = base - linear_scores(weights, model.to_native(occluded[None]))[0, label]
            deltas.append(delta)
            sums[rows, cols] += delta
            counts[rows, cols] += 1
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0), np.array(deltas), counts


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    folder = tmp_path_factory.mktemp("linear")
    out = {}
    for layout, dtype, pre in VARIANTS:
        path, weights = linear_model(folder, layout=layout, dtype=dtype)
        out[(layout, dtype)] = (onnxplain.load_model(path, preprocessing=pre), weights)
    return out


def _image(size=12, seed=0):
    return (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.float32)


@pytest.mark.parametrize("layout, dtype", [(v[0], v[1]) for v in VARIANTS])
@pytest.mark.parametrize("clipping", [False, True])
@pytest.mark.parametrize("k, s", [((4, 4), (2, 2)), ((5, 3), (3, 2))])
def test_linear_model_map_is_the_definition(linear, layout, dtype, clipping, k, s):
    model, weights = linear[(layout, dtype)]
    pixels = _image()
    fill = pixels.reshape(-1, 3).mean(axis=0)
    res = onnxplain.occlusion_sensitivity(model, pixels, 1, mask_size=k, stride=s, mask_clipping=clipping,
                                       output_upsampling="none", mini_batch_size=7)
    want, deltas, counts = _expected(model, weights, pixels, fill, k, s, clipping, 1)
    scale = np.abs(weights[1]).sum() * 3.0  # |score| bound for natives of order 1..255 -> float32 rounding
    tol = 1e-6 * scale * (255 if dtype == "uint8" else 1)
    assert res.score_map.shape == (12, 12) and res.score_map.dtype == np.float32
    np.testing.assert_allclose(res.score_map, want, rtol=0, atol=tol)
    np.testing.assert_allclose(res.position_map.ravel(), deltas, rtol=0, atol=tol)
    assert np.array_equal(res.coverage, counts)
    if clipping:
        assert counts.min() > 0  # every pixel covered when stride <= window
    assert res.params["mask_size"] == list(k) and res.params["stride"] == list(s)
    assert res.params["mask_clipping"] is clipping
    np.testing.assert_allclose(res.params["mask_value"], fill, rtol=1e-6)


def test_clipped_placement_centres_the_first_window_on_the_edge(linear):
    model, _ = linear[("NCHW", "float32")]
    res = onnxplain.occlusion_sensitivity(model, _image(), 0, mask_size=5, stride=2, output_upsampling="none")
    assert list(res.window_rows) == [-2, 0, 2, 4, 6, 8]  # centres 0, 2, ..., 10; last reaches row 11
    unclipped = onnxplain.occlusion_sensitivity(model, _image(), 0, mask_size=5, stride=2, mask_clipping=False,
                                             output_upsampling="none")
    assert list(unclipped.window_rows) == [0, 2, 4, 6]
    assert np.all(unclipped.score_map[-1] == 0)  # row 11 is in no inside window
    assert unclipped.coverage[-1].sum() == 0


def test_no_clipped_window_lies_wholly_outside_the_image():
    """Oracle: by hand, side 12, window 2, stride 5: starts -1, 4, 9 (the formula's fourth, 14,
    starts past the edge; it occluded nothing and cost a model run)."""
    from onnxplain.methods.occlusion import window_starts

    assert list(window_starts(12, 2, 5, True)) == [-1, 4, 9]
    for side, k, s in [(12, 2, 5), (64, 2, 5), (64, 8, 100), (7, 3, 3), (64, 45, 22)]:
        starts = window_starts(side, k, s, True)
        assert np.all(starts < side) and np.all(starts + k > 0)


def test_auto_sizes_follow_the_documented_rounding(linear):
    model, _ = linear[("NCHW", "float32")]
    res = onnxplain.occlusion_sensitivity(model, _image(), 0, output_upsampling="none")
    # 12 px side: mask floor(0.2 * 12 + 0.5) = 2, stride floor(1.2 + 0.5) = 1
    assert res.params["mask_size"] == [2, 2] and res.params["stride"] == [1, 1]
    assert res.params["num_positions"] == [12, 12]


def test_mask_value_forms(linear):
    model, weights = linear[("NCHW", "float32")]
    pixels = _image()
    for value, fill in [(0, np.zeros(3)), ((10, 20, 30), np.array([10.0, 20, 30]))]:
        res = onnxplain.occlusion_sensitivity(model, pixels, 0, mask_size=4, stride=4, mask_value=value,
                                           mask_clipping=False, output_upsampling="none")
        want, _, _ = _expected(model, weights, pixels, fill.astype(np.float32), (4, 4), (4, 4), False, 0)
        np.testing.assert_allclose(res.score_map, want, rtol=0, atol=1e-4 * np.abs(want).max())
        assert res.params["mask_value"] == list(fill)


def test_several_labels_batching_and_input_not_mutated(linear):
    model, _ = linear[("NHWC", "float16")]
    pixels = _image()
    keep = pixels.copy()
    both = onnxplain.occlusion_sensitivity(model, pixels, [1, 0], mask_size=3, stride=2, output_upsampling="none")
    assert both.score_map.shape == (12, 12, 2) and both.position_map.shape == (6, 6, 2)
    assert both.labels == [1, 0] and both.scores.shape == (2,)
    one = onnxplain.occlusion_sensitivity(model, pixels, 0, mask_size=3, stride=2, output_upsampling="none",
                                       mini_batch_size=1)
    np.testing.assert_allclose(both.score_map[..., 1], one.score_map, rtol=1e-5, atol=1e-4)
    assert np.array_equal(pixels, keep)
    assert set(both.timings) == {"inference", "masking", "total"}


def test_upsampling_to_the_image_size(linear):
    model, _ = linear[("NCHW", "float32")]
    image = (np.random.default_rng(1).random((20, 30, 3)) * 255).astype(np.uint8)
    kw = dict(mask_size=4, stride=2)
    none = onnxplain.occlusion_sensitivity(model, image, 0, output_upsampling="none", **kw)
    bicubic = onnxplain.occlusion_sensitivity(model, image, 0, **kw)
    nearest = onnxplain.occlusion_sensitivity(model, image, 0, output_upsampling="nearest", **kw)
    assert none.score_map.shape == (12, 12) and bicubic.score_map.shape == (20, 30)
    assert nearest.score_map.shape == (20, 30)
    assert set(np.unique(nearest.score_map)) <= set(np.unique(none.score_map))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(mask_size=13), ValueError, "'mask_size' parameter must fit"),
    (dict(mask_size=(4, 20)), ValueError, "'mask_size' parameter must fit"),
    (dict(stride=0), ValueError, "'stride' parameter must be >= 1"),
    (dict(stride=(1, 0)), ValueError, r"'stride\[1\]' parameter must be >= 1"),
    (dict(mask_size="big"), ValueError, "'auto', an integer"),
    (dict(stride=2.5), TypeError, "'stride' parameter must be an integer"),
    (dict(output_upsampling="bilinear"), ValueError, "'output_upsampling' parameter must be one of"),
    (dict(mask_value=(1, 2)), ValueError, "'mask_value' parameter must have 3 values"),
    (dict(mask_value="mean"), ValueError, "'mask_value' parameter must be one of"),
    (dict(mask_clipping="yes"), TypeError, "'mask_clipping' parameter must be True or False"),
    (dict(mini_batch_size=0), ValueError, "'mini_batch_size' parameter must be >= 1"),
    (dict(execution_environment="tpu"), ValueError, "'execution_environment' parameter"),
])
def test_bad_options_raise_clear_errors(linear, kwargs, error, match):
    model, _ = linear[("NCHW", "float32")]
    with pytest.raises(error, match=match):
        onnxplain.occlusion_sensitivity(model, _image(), 0, **kwargs)


# ---- captum parity ---------------------------------------------------------------------
def _captum(name, image, labels, window, stride, fill):
    import torch
    from captum.attr import Occlusion

    net = zoo.load(name)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None]))
    base = torch.from_numpy(np.asarray(fill, np.float32).reshape(1, 3, 1, 1))
    out = []
    for label in labels:
        attr = Occlusion(net).attribute(x, sliding_window_shapes=(3, *window), strides=(3, *stride),
                                        baselines=base, target=label, perturbations_per_eval=64)
        a = attr[0].detach().numpy()
        assert np.allclose(a, a[:1], rtol=0, atol=1e-7)  # all-channel window: same value per channel
        out.append(a[0])
    return np.stack(out, axis=-1)


@pytest.mark.parametrize("name", ["resnet", "vgg"])
def test_equals_captum_occlusion(name):
    """mask_clipping=False, (32 - 8) divisible by 4: captum's windows are exactly ours."""
    model = onnxplain.load_model(zoo.onnx_path(name), preprocessing="none")
    image = np.random.default_rng(5).normal(size=(32, 32, 3)).astype(np.float32)
    res = onnxplain.occlusion_sensitivity(model, image, [3, 7], mask_size=8, stride=4, mask_clipping=False,
                                       output_upsampling="none")
    want = _captum(name, image, [3, 7], (8, 8), (4, 4), res.params["mask_value"])
    np.testing.assert_allclose(res.score_map, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_captum_adds_a_clipped_last_window_when_not_divisible():
    """(32 - 8) = 24 is not a multiple of 5: captum adds windows starting at 25 (clipped);
    ours stop at 20. Pixels covered by the same windows agree; rows/cols 28.. are ours = 0."""
    model = onnxplain.load_model(zoo.onnx_path("resnet"), preprocessing="none")
    image = np.random.default_rng(6).normal(size=(32, 32, 3)).astype(np.float32)
    res = onnxplain.occlusion_sensitivity(model, image, 2, mask_size=8, stride=5, mask_clipping=False,
                                       mask_value=0.0, output_upsampling="none")
    want = _captum("resnet", image, [2], (8, 8), (5, 5), [0.0, 0.0, 0.0])[..., 0]
    np.testing.assert_allclose(res.score_map[:25, :25], want[:25, :25], rtol=0, atol=1e-5 * np.abs(want).max())
    assert np.all(res.score_map[28:] == 0) and np.all(res.score_map[:, 28:] == 0)


# ---- toy task, bundled model, CLI ------------------------------------------------------
def test_localizes_the_rectangle():
    """Rectangle images: the positive mass of the 'rectangle' map lies in the box far more than
    the box's share of the image, and the peak is in the box for most images."""
    data = np.load(zoo.RECT_DIR + "/samples.npz")
    model = onnxplain.load_model(zoo.RECT_DIR + "/rectangle_cnn.onnx", preprocessing="none",
                              labels=["no_rectangle", "rectangle"])
    chosen = np.where((data["labels"] == 1) & (data["probs"] > 0.5))[0][:10]
    mass, share, peaks = [], [], []
    for i in chosen:
        res = onnxplain.occlusion_sensitivity(model, data["images"][i], "rectangle", mask_size=8, stride=4)
        r0, c0, r1, c1 = data["boxes"][i]
        inside = np.zeros((64, 64), bool)
        inside[r0:r1, c0:c1] = True
        pos = np.clip(res.score_map, 0, None)
        mass.append(pos[inside].sum() / pos.sum())
        share.append(inside.mean())
        peaks.append(inside[np.unravel_index(np.argmax(res.score_map), (64, 64))])
    assert np.mean(mass) > 1.6 * np.mean(share), (mass, share)  # measured 2.2
    assert np.mean(peaks) >= 0.7, peaks


def test_bundled_model_smoke():
    from skimage.data import chelsea

    model = onnxplain.load_model()
    res = onnxplain.occlusion_sensitivity(model, chelsea(), None, mask_size=112, stride=56, mask_clipping=False)
    assert res.score_map.shape == (300, 451) and np.all(np.isfinite(res.score_map))
    assert "cat" in res.label_names[0] and res.params["num_positions"] == [3, 3]
    assert res.position_map.shape == (3, 3)


def test_registry_presets_reach_occlusion():
    """Oracle: the module's "auto" rule (20 % window, 10 % stride) and the main preset's 16-pixel stride."""
    model = onnxplain.load_model(zoo.RECT_DIR + "/rectangle_cnn.onnx", preprocessing="none",
                                 labels=["no_rectangle", "rectangle"])
    image = np.load(zoo.RECT_DIR + "/samples.npz")["images"][0]
    main = onnxplain.METHODS["occlusion"](model, image, 1, preset="main")
    assert main.params["mask_size"] == [13, 13] and main.params["stride"] == [16, 16]
    quick = onnxplain.METHODS["occlusion"](model, image, 1, preset="quick")
    assert quick.params["mask_size"] == [13, 13] and quick.params["stride"] == [6, 6]  # floor(6.4 + 0.5)


def test_cli_occlusion(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["occlusion", "--mask-size", "112", "--stride", "112,56", "--no-mask-clipping",
               "--mask-value", "0,0,0", "--upsampling", "nearest", "--label", "Egyptian cat", "tabby",
               "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    files = sorted(p.name for p in out.iterdir())
    assert "chelsea_occlusion.npy" in files and "chelsea_occlusion.json" in files
    assert [f for f in files if f.endswith(".png")] == ["chelsea_occlusion.png"]  # one panel per label
    saved = np.load(out / "chelsea_occlusion.npy")
    assert saved.shape == (300, 451, 2)
    rc = main(["occlusion", "--mask-size", "300", "--out", str(out)])
    assert rc == 2 and "'mask_size' parameter must fit" in capsys.readouterr().err
