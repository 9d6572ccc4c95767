"""Work limits: absurd counts are refused at once with an estimate, unless explicitly allowed.

Oracle: the documented bound (MAX_EVALUATIONS = 100,000 model evaluations) and wall-clock
"at once" (the refusal comes before any sampling: a billion LIME samples would need 49 GB
for the on/off matrix alone, and numpy's MemoryError used to end the CLI in a traceback).
"""
from __future__ import annotations

import pytest

import onnxplain
from onnxplain.cli import main
from onnxplain.errors import WorkLimitError
from onnxplain.methods._limits import MAX_EVALUATIONS
from tests import tiny_models as tm


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return onnxplain.load_model(tm.save(tm.make_classifier(size=16), tmp_path_factory.mktemp("t"), "m"),
                                preprocessing="none")


@pytest.fixture(scope="module")
def image():
    import numpy as np

    return np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.float32)


@pytest.mark.parametrize("call, option", [
    (lambda m, im: onnxplain.image_lime(m, im, 0, num_samples=10 ** 9), "num_samples=1,000,000,000"),
    (lambda m, im: onnxplain.rise(m, im, 0, num_masks=10 ** 9), "num_masks=1,000,000,000"),
    (lambda m, im: onnxplain.gradient_attribution(m, im, 0, method="smoothgrad", num_samples=MAX_EVALUATIONS + 1),
     "num_samples=100,001"),
    (lambda m, im: onnxplain.gradient_attribution(m, im, [0, 1], method="integrated-gradients",
                                                  num_steps=60_000), "num_steps=60,000 x 2 label(s)"),
    (lambda m, im: onnxplain.kernel_shap(m, im, 0, num_samples=10 ** 9), "num_samples=1,000,000,000"),
], ids=["lime", "rise", "smoothgrad", "ig", "kernelshap"])
def test_counts_above_the_bound_are_refused_with_an_estimate(model, image, call, option):
    with pytest.raises(WorkLimitError, match="above the work bound of 100,000: about .* on this machine") as info:
        call(model, image)
    assert option in str(info.value) and "allow_long=True" in str(info.value)


def test_lime_refusal_states_the_memory(model, image):
    with pytest.raises(WorkLimitError, match=r"GiB of memory"):
        onnxplain.image_lime(model, image, 0, num_samples=10 ** 9)


def test_allow_long_lifts_the_bound(model, image):
    """Allowed, a long run starts (and is stopped here by a progress callback, as Ctrl-C would)."""
    calls = []

    def stop(done, total):
        calls.append((done, total))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        onnxplain.rise(model, image, 0, num_masks=MAX_EVALUATIONS + 1, allow_long=True, progress=stop)
    assert calls == [(128, MAX_EVALUATIONS + 1)]
    with pytest.raises(TypeError, match="'allow_long' parameter must be True or False"):
        onnxplain.rise(model, image, 0, allow_long="yes")


def test_cli_refuses_in_one_line(capsys, tmp_path):
    assert main(["lime", "--num-samples", "1000000000", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "above the work bound" in err and "--allow-long" in err and len(err.strip().splitlines()) == 1


def test_num_features_beyond_the_pixel_count_is_an_error_not_a_silent_cap(model, image):
    """Oracle: the working image has 16 x 16 = 256 pixels, so 257 features cannot exist."""
    from onnxplain.errors import OptionError

    with pytest.raises(OptionError, match=r"'num_features' parameter \(257\) exceeds the 16 x 16 = 256 pixels"):
        onnxplain.image_lime(model, image, 0, num_features=257, segmentation="grid", num_samples=8)
    r = onnxplain.image_lime(model, image, 0, num_features=50, segmentation="grid", num_samples=8)
    assert r.params["num_features"] == 50 and r.params["num_features_used"] == 49  # 7 x 7: recorded, not hidden
