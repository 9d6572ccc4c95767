"""onnxplain.rise.

Oracles: (1) the RISE reference code (eclique/RISE ``generate_masks`` + ``explain``:
``skimage.transform.resize(grid, up_size, order=1, mode="reflect", anti_aliasing=False)``,
random crop, ``sal = scores.T @ masks / N / p1``) retyped in numpy, drawing from the
Generator in the documented order (``estimator="paper"``); the default centred estimator is
checked against the same reference's sums recombined by its formula, ``(sal - mean(s) *
sum(M)) / (N p) + mean(s)``, and its premise (every mask pixel is a convex combination of
grid cells, so an all-ones grid gives an all-ones mask and E[M] = p) against the kernel;
(2) keep_probability = 1, where every mask is all ones
and the map is the score everywhere; (3) the rectangle toy task's ground-truth boxes;
(4) the documented option rules and errors.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from skimage.transform import resize

import onnxplain
from onnxplain.cli import main
pytest.importorskip("torch")  # this module's oracles/zoo helpers import torch
from tests.data import zoo

from ._linear import linear_model

VARIANTS = [
    ("NCHW", "float32", {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),
    ("NHWC", "float16", {"scale": 1 / 127.5, "mean": [1, 1, 1], "std": [1, 1, 1], "channel_order": "BGR"}),
    ("NCHW", "uint8", "none"),
]


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    folder = tmp_path_factory.mktemp("linear")
    out = {}
    for layout, dtype, pre in VARIANTS:
        path, _ = linear_model(folder, layout=layout, dtype=dtype, size=16)
        out[(layout, dtype)] = onnxplain.load_model(path, preprocessing=pre)
    return out


def _image(size=16, seed=0):
    return (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.float32)


def _reference_rise(model, pixels, labels, n, s, p, fill, batch, seed, estimator="paper"):
    """The reference code's algorithm, batch by batch, same Generator draws as documented (blocks of 64);
    ``estimator="centered"`` recombines its sums by the centred formula."""
    rng = np.random.default_rng(seed)
    h, w = pixels.shape[:2]
    cell = np.ceil(np.array([h, w]) / s).astype(int)
    up = (s + 1) * cell
    sal = np.zeros((len(labels), h * w))
    mask_sum, score_sum = np.zeros(h * w), np.zeros(len(labels))
    blocks = []
    for _ in range(-(-n // 64)):  # drawn in blocks of 64 masks, whatever the batch size
        g = (rng.random((64, s, s)) < p).astype("float32")
        blocks.append((g, rng.integers(0, cell[0], 64), rng.integers(0, cell[1], 64)))
    grids, dys, dxs = (np.concatenate(parts)[:n] for parts in zip(*blocks))
    for start in range(0, n, batch):
        b = min(batch, n - start)
        grid, dy, dx = grids[start:start + b], dys[start:start + b], dxs[start:start + b]
        masks = np.stack([resize(grid[i], up, order=1, mode="reflect", anti_aliasing=False)
                          [dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)]).astype(np.float32)
        masked = pixels[None] * masks[..., None] + (1 - masks[..., None]) * fill
        scores = model.scores_native(model.to_native(masked.astype(np.float32)))[:, labels]
        sal += scores.T.astype(np.float64) @ masks.reshape(b, -1)
        mask_sum += masks.reshape(b, -1).sum(axis=0)
        score_sum += scores.sum(axis=0)
    if estimator == "centered":
        mean = (score_sum / n)[:, None]
        return ((sal - mean * mask_sum) / n / p + mean).T.reshape(h, w, len(labels))
    return (sal / n / p).T.reshape(h, w, len(labels))


@pytest.mark.parametrize("estimator", ["paper", "centered"])
@pytest.mark.parametrize("layout, dtype", [(v[0], v[1]) for v in VARIANTS])
def test_equals_the_reference_code(linear, layout, dtype, estimator):
    model = linear[(layout, dtype)]
    pixels = _image()
    res = onnxplain.rise(model, pixels, [0, 1], num_masks=50, cell_size=4, keep_probability=0.4, fill="zero",
                      mini_batch_size=16, random_state=7, output_upsampling="none", estimator=estimator)
    want = _reference_rise(model, pixels, [0, 1], 50, 4, 0.4, np.zeros(3, np.float32), 16, 7, estimator)
    assert res.params["estimator"] == estimator
    assert res.score_map.shape == (16, 16, 2) and res.score_map.dtype == np.float32
    np.testing.assert_allclose(res.score_map, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_equals_the_reference_code_on_a_zoo_network():
    model = onnxplain.load_model(zoo.onnx_path("resnet"), preprocessing="none")
    pixels = np.random.default_rng(3).normal(size=(32, 32, 3)).astype(np.float32)
    fill = pixels.reshape(-1, 3).mean(axis=0)
    res = onnxplain.rise(model, pixels, 4, num_masks=40, cell_size=7, mini_batch_size=32, random_state=1,
                      output_upsampling="none")
    want = _reference_rise(model, pixels, [4], 40, 7, 0.5, fill, 32, 1, "centered")[..., 0]
    np.testing.assert_allclose(res.score_map, want, rtol=0, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(res.params["fill"], fill, rtol=1e-6)


def test_masks_are_convex_combinations_of_grid_cells():
    """The centred estimator's premise: E[M(x)] = p at every pixel, because each mask pixel
    weighs grid cells with weights summing to 1 (an all-ones grid gives exactly ones), all
    weights >= 0 (masks of a 0/1 grid stay in [0, 1]); at every shift."""
    from onnxplain.kernels.rise import make_masks, upsample_table

    h, w, grid = 37, 52, (5, 7)
    cell = (-(-h // grid[0]), -(-w // grid[1]))
    ty, tx = upsample_table((grid[0] + 1) * cell[0], grid[0]), upsample_table((grid[1] + 1) * cell[1], grid[1])
    shifts = np.array([(dy, dx) for dy in range(cell[0]) for dx in range(cell[1])], np.int64)
    ones = make_masks(np.ones((len(shifts), *grid), np.float32), shifts, ty, tx,
                      np.empty((len(shifts), h, w), np.float32))
    np.testing.assert_allclose(ones, 1.0, rtol=0, atol=1e-6)
    rng = np.random.default_rng(0)
    grids = (rng.random((len(shifts), *grid)) < 0.5).astype(np.float32)
    m = make_masks(grids, shifts, ty, tx, np.empty((len(shifts), h, w), np.float32))
    assert m.min() >= 0.0 and m.max() <= 1.0 + 1e-6


def test_centred_is_the_default_and_estimator_is_checked(linear):
    model = linear[("NCHW", "float32")]
    kw = dict(num_masks=64, cell_size=4, mini_batch_size=16, random_state=5, output_upsampling="none")
    centred = onnxplain.rise(model, _image(), 0, **kw)
    paper = onnxplain.rise(model, _image(), 0, estimator="paper", **kw)
    assert centred.params["estimator"] == "centered" and paper.params["estimator"] == "paper"
    assert not np.allclose(paper.score_map, centred.score_map)
    with pytest.raises(ValueError, match="estimator"):
        onnxplain.rise(model, _image(), 0, estimator="mean", **kw)


def test_keep_probability_one_gives_the_score_everywhere(linear):
    model = linear[("NCHW", "float32")]
    res = onnxplain.rise(model, _image(), 1, num_masks=10, keep_probability=1.0, output_upsampling="none")
    np.testing.assert_allclose(res.score_map, res.scores[0], rtol=1e-5)


def test_same_seed_same_map_and_label_slices(linear):
    model = linear[("NHWC", "float16")]
    kw = dict(num_masks=40, cell_size=(3, 5), mini_batch_size=16, output_upsampling="none")
    a = onnxplain.rise(model, _image(), [1, 0], random_state=3, **kw)
    b = onnxplain.rise(model, _image(), [1, 0], random_state=np.random.default_rng(3), **kw)
    c = onnxplain.rise(model, _image(), 0, random_state=3, **kw)
    d = onnxplain.rise(model, _image(), [1, 0], random_state=4, **kw)
    assert np.array_equal(a.score_map, b.score_map)
    assert np.array_equal(a.score_map[..., 1], c.score_map)
    assert not np.array_equal(a.score_map, d.score_map)
    assert a.labels == [1, 0] and a.scores.shape == (2,) and c.score_map.shape == (16, 16)
    assert set(a.timings) == {"inference", "masking", "total"}
    assert a.params["cell_size"] == [3, 5] and a.params["random_state"] == 3


def test_upsampled_to_the_image_size_and_input_not_mutated(linear):
    model = linear[("NCHW", "uint8")]
    image = (np.random.default_rng(2).random((24, 40, 3)) * 255).astype(np.uint8)
    keep = image.copy()
    res = onnxplain.rise(model, image, 0, num_masks=8, random_state=0)
    assert res.score_map.shape == (24, 40) and np.all(np.isfinite(res.score_map))
    assert np.array_equal(image, keep)


def test_memory_does_not_grow_with_num_masks(linear):
    """Masks live one mini-batch at a time: 10x the masks, about the same peak memory."""
    model = linear[("NCHW", "float32")]
    peaks = []
    for n in (64, 640):
        tracemalloc.start()
        onnxplain.rise(model, _image(), 0, num_masks=n, mini_batch_size=32, random_state=0)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(keep_probability=0.0), ValueError, "'keep_probability' parameter must be > 0"),
    (dict(keep_probability=1.5), ValueError, "'keep_probability' parameter must be <= 1"),
    (dict(num_masks=0), ValueError, "'num_masks' parameter must be >= 1"),
    (dict(cell_size=1), ValueError, "'cell_size' parameter must be >= 2"),
    (dict(cell_size=17), ValueError, "'cell_size' parameter must not exceed the working image"),
    (dict(fill="black"), ValueError, "'fill' parameter must be one of"),
    (dict(fill=(1, 2)), ValueError, "'fill' parameter must have 3 values"),
    (dict(output_upsampling="cubic"), ValueError, "'output_upsampling' parameter must be one of"),
    (dict(random_state="x"), TypeError, "'random_state' parameter"),
])
def test_bad_options_raise_clear_errors(linear, kwargs, error, match):
    with pytest.raises(error, match=match):
        onnxplain.rise(linear[("NCHW", "float32")], _image(), 0, **kwargs)


def test_localizes_the_rectangle():
    """Rectangle images: the above-mean mass of the 'rectangle' map lies in the box far more
    than the box's share of the image."""
    data = np.load(zoo.RECT_DIR + "/samples.npz")
    model = onnxplain.load_model(zoo.RECT_DIR + "/rectangle_cnn.onnx", preprocessing="none",
                              labels=["no_rectangle", "rectangle"])
    chosen = np.where((data["labels"] == 1) & (data["probs"] > 0.5))[0][:8]
    mass, share = [], []
    for i in chosen:
        res = onnxplain.rise(model, data["images"][i], "rectangle", num_masks=400, cell_size=5, random_state=1,
                          mini_batch_size=200)
        r0, c0, r1, c1 = data["boxes"][i]
        inside = np.zeros((64, 64), bool)
        inside[r0:r1, c0:c1] = True
        above = np.clip(res.score_map - res.score_map.mean(), 0, None)
        mass.append(above[inside].sum() / above.sum())
        share.append(inside.mean())
    assert np.mean(mass) > 1.5 * np.mean(share), (mass, share)  # measured 1.86 (seed 1)
    assert np.mean(np.array(mass) > np.array(share)) >= 0.6, (mass, share)


def test_bundled_model_smoke():
    from skimage.data import chelsea

    model = onnxplain.load_model()
    res = onnxplain.rise(model, chelsea(), None, num_masks=32, mini_batch_size=16, random_state=0)
    assert res.score_map.shape == (300, 451) and np.all(np.isfinite(res.score_map))
    assert "cat" in res.label_names[0] and res.score_map.max() > 0


def test_cli_rise(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["rise", "--num-masks", "16", "--cell-size", "4", "--seed", "2", "--batch-size", "8",
               "--upsampling", "none", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert np.load(out / "chelsea_rise.npy").shape == (224, 224)
    assert (out / "chelsea_rise.png").exists() and (out / "chelsea_rise.json").exists()
    rc = main(["rise", "--keep-probability", "0", "--out", str(out)])
    assert rc == 2 and "'keep_probability' parameter must be > 0" in capsys.readouterr().err
