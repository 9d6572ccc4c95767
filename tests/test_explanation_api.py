"""Explanation as a notebook user meets it: short repr, plot, save/load, evaluate(model, image, exp),
option errors in the OnnxplainError family, shared option names.

Oracles: the arrays themselves (a saved and re-read explanation is bit-identical), the
evaluate() result computed the old way (label and map passed separately), and the model's
own parameters echoed in ``params``.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from skimage import data  # noqa: E402

import onnxplain  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return onnxplain.load_model()


@pytest.fixture(scope="module")
def cam(model):
    return onnxplain.grad_cam(model, data.coffee())


def test_repr_is_one_short_line(cam):
    text = repr(cam)
    assert "\n" not in text and len(text) < 300
    assert text.startswith("Explanation(method='gradcam', labels=[967 'espresso']") and "400x600 float32" in text


def test_save_and_load_round_trip(cam, tmp_path):
    path = cam.save(tmp_path / "cam")
    assert path.endswith("cam.npz")
    back = onnxplain.load_explanation(path)
    assert back.method == cam.method and back.labels == cam.labels and back.label_names == cam.label_names
    np.testing.assert_array_equal(back.score_map, cam.score_map)
    np.testing.assert_array_equal(back.scores, cam.scores)
    np.testing.assert_array_equal(back.cam, cam.cam)  # array extras come back as arrays
    assert back.feature_layer == cam.feature_layer and back.params["output_upsampling"] == "bicubic"
    assert back.timings == pytest.approx(cam.timings)


def test_load_refuses_what_it_did_not_write(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(onnxplain.OnnxplainError, match="not an explanation"):
        onnxplain.load_explanation(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(onnxplain.OnnxplainError, match="junk.npz"):
        onnxplain.load_explanation(tmp_path / "junk.npz")
    with pytest.raises(onnxplain.OnnxplainError, match="does not exist"):
        onnxplain.load_explanation(tmp_path / "missing.npz")


def test_plot_returns_a_figure_with_and_without_the_image(cam, tmp_path):
    import matplotlib.pyplot as plt

    fig = cam.plot(data.coffee(), tmp_path / "cam.png")
    assert isinstance(fig, matplotlib.figure.Figure) and (tmp_path / "cam.png").stat().st_size > 10_000
    plt.close(fig)
    plt.close(cam.plot())


def test_evaluate_takes_the_explanation_as_third_argument(model, cam):
    image = data.coffee()
    new = onnxplain.evaluate(model, image, cam, step=224 * 224 // 8)
    old = onnxplain.evaluate(model, image, cam.labels[0], cam.score_map, step=224 * 224 // 8)
    assert new.label == old.label == 967 and new.scores == old.scores
    assert onnxplain.pointing_game(cam, box=(0, 0, 600, 400)) is True
    with pytest.raises(onnxplain.OptionError, match="needs a map"):
        onnxplain.evaluate(model, image)


def test_option_errors_are_onnxplain_errors(model):
    with pytest.raises(onnxplain.OptionError) as err:
        onnxplain.occlusion_sensitivity(model, data.coffee(), output_upsampling="sideways")
    assert isinstance(err.value, onnxplain.OnnxplainError) and isinstance(err.value, ValueError)
    with pytest.raises(onnxplain.OptionTypeError) as err:
        onnxplain.rise(model, data.coffee(), num_masks=2.5)
    assert isinstance(err.value, onnxplain.OnnxplainError) and isinstance(err.value, TypeError)


def test_cli_names_work_in_python_and_matlab_names_stay(model):
    image = data.coffee()
    a = onnxplain.occlusion_sensitivity(model, image, stride=56, batch_size=7, device="cpu")
    b = onnxplain.occlusion_sensitivity(model, image, stride=56, mini_batch_size=7, execution_environment="cpu")
    assert a.params["mini_batch_size"] == b.params["mini_batch_size"] == 7
    np.testing.assert_array_equal(a.score_map, b.score_map)
    with pytest.raises(onnxplain.OptionError, match="both 'batch_size' and .*'mini_batch_size'"):
        onnxplain.occlusion_sensitivity(model, image, batch_size=7, mini_batch_size=7)
    assert onnxplain.load_model(device="cpu").execution_environment == "cpu"
