"""Faithfulness and localisation metrics (onnxplain.evaluate).

Oracles: a toy model whose probability depends only on the top-left quadrant, so the map that
ranks that quadrant first must delete fastest and insert fastest (Petsiuk et al.'s criterion);
pointing game and energy on hand-made maps and boxes whose answers are computed by hand.
"""
from __future__ import annotations

import numpy as np
import pytest

import onnxplain
from onnxplain.evaluate import auc, make_substrate, region_mask

from .conftest import SIZE


def _maps():
    perfect = np.zeros((SIZE, SIZE), np.float32)
    perfect[: SIZE // 2, : SIZE // 2] = 1.0
    perfect += np.linspace(0, 0.01, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)[::-1, ::-1]
    random = np.random.default_rng(3).normal(size=(SIZE, SIZE)).astype(np.float32)
    return perfect, random, -perfect


def test_perfect_map_beats_random_and_inverted(quadrant, texture):
    perfect, random, inverted = _maps()
    res = {name: onnxplain.evaluate(quadrant, texture, 1, m, insertion_substrate="zeros", step=8)
           for name, m in (("perfect", perfect), ("random", random), ("inverted", inverted))}
    d = {k: r.scores["deletion"] for k, r in res.items()}
    i = {k: r.scores["insertion"] for k, r in res.items()}
    assert d["perfect"] < d["random"] < d["inverted"], d
    assert i["perfect"] > i["random"] > i["inverted"], i
    # the perfect deletion curve is at chance level once the quadrant (1/4 of the pixels) is gone
    x, y = res["perfect"].curves["deletion"]
    assert x[0] == 0.0 and x[-1] == 1.0 and len(x) == SIZE * SIZE // 8 + 1
    assert y[x >= 0.25].max() < 0.01 and y[0] > 0.99
    assert d["perfect"] < 0.2 and d["inverted"] > 0.7


def test_curve_is_the_model_probability_on_hand_built_images(quadrant, texture):
    """Oracle: building step 3's image by hand and running the model gives the same probability."""
    perfect, _, _ = _maps()
    ev = onnxplain.evaluate(quadrant, texture, 1, perfect, metrics=("deletion",), step=10, deletion_substrate="mean")
    order = np.argsort(-perfect.ravel(), kind="stable")
    img = texture.copy().reshape(-1, 3)
    img[order[:30]] = texture.reshape(-1, 3).mean(axis=0)
    p = quadrant.probabilities(quadrant.scores_native(quadrant.to_native(img.reshape(1, SIZE, SIZE, 3))))[0, 1]
    assert ev.curves["deletion"][1][3] == pytest.approx(p, abs=1e-6)
    assert ev.scores["deletion"] == pytest.approx(auc(*ev.curves["deletion"]))


def test_explanation_and_label_default(quadrant, texture):
    result = onnxplain.occlusion_sensitivity(quadrant, texture, 1, mask_size=4, stride=4)
    ev = onnxplain.evaluate(quadrant, texture, None, result, metrics=("deletion",))
    assert ev.label == 1 and ev.params["step"] == 4  # ceil(256 / 64)


def test_substrates():
    px = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    assert not make_substrate(px, "zeros").any()
    np.testing.assert_allclose(make_substrate(px, "mean")[2, 3], px.reshape(-1, 3).mean(axis=0))
    blurred = make_substrate(px, "blur", 1.0)
    assert blurred.shape == px.shape and blurred.dtype == np.float32
    np.testing.assert_allclose(blurred.reshape(-1, 3).mean(axis=0), px.reshape(-1, 3).mean(axis=0), rtol=0.05)


def test_pointing_game_with_tolerance():
    m = np.zeros((60, 60), np.float32)
    m[10, 10] = 5.0                              # peak at x=10, y=10
    box = (20, 20, 30, 30)                      # nearest box pixel (20, 20): distance sqrt(200) = 14.14
    assert onnxplain.pointing_game(m, box=box, tolerance=15)
    assert not onnxplain.pointing_game(m, box=box, tolerance=14)
    assert onnxplain.pointing_game(m, box=[(0, 0, 11, 11), (40, 40, 50, 50)], tolerance=0)
    mask = np.zeros((60, 60), bool)
    mask[10, 10] = True
    assert onnxplain.pointing_game(m, mask=mask, tolerance=0)
    # equal maxima: a hit when any of them is inside
    m[25, 25] = 5.0
    assert onnxplain.pointing_game(m, box=box, tolerance=0)


def test_energy_share_of_positive_mass():
    m = np.full((10, 10), -1.0, np.float32)
    m[:5, :5] = 3.0                               # 25 px * 3 inside
    m[9, 9] = 25.0                                # 25 outside; negatives ignored
    assert onnxplain.energy_in_region(m, box=(0, 0, 5, 5)) == pytest.approx(75 / 100)
    assert np.isnan(onnxplain.energy_in_region(-np.ones((4, 4)), box=(0, 0, 2, 2)))


def test_region_metrics_through_evaluate(quadrant, texture):
    perfect, _, _ = _maps()
    ev = onnxplain.evaluate(quadrant, texture, 1, perfect, metrics=("pointing_game", "energy"), box=(0, 0, 8, 8),
                         tolerance=0)
    assert ev.scores["pointing_game"] == 1.0 and ev.scores["energy"] > 0.95
    assert set(ev.summary()["scores"]) == {"pointing_game", "energy"}


@pytest.mark.parametrize("kwargs, match", [
    ({"metrics": ("deletion", "auc")}, "'metrics' parameter must be one of"),
    ({"metrics": ("pointing_game",)}, "give 'box' or 'mask'"),
    ({"deletion_substrate": "noise"}, "'deletion_substrate' parameter must be one of"),
    ({"metrics": ("energy",), "box": (5, 5, 5, 9)}, "is empty"),
    ({"step": 0}, "'step' parameter must be >= 1"),
])
def test_bad_options(quadrant, texture, kwargs, match):
    with pytest.raises(ValueError, match=match):
        onnxplain.evaluate(quadrant, texture, 1, np.zeros((SIZE, SIZE)), **kwargs)


def test_bad_map_shape_and_region():
    with pytest.raises(ValueError, match="2-D"):
        onnxplain.pointing_game(np.zeros((4, 4, 2)), box=(0, 0, 1, 1))
    with pytest.raises(ValueError, match="expected the map's"):
        region_mask((4, 4), mask=np.ones((3, 3), bool))


@pytest.mark.parametrize("box", ["abc", [[0, 0, 4], [0, 0, 4, 4]], (0, 0, float("nan"), 4)])
def test_malformed_box_is_a_specific_error(box):
    with pytest.raises(ValueError, match="The 'box' parameter must"):
        region_mask((8, 8), box=box)
