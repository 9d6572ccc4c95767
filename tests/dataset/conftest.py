"""Real files for the dataset tests: scikit-image photos written as JPEG/PNG in an
ImageFolder tree (class folders named after ImageNet classes of the bundled model), with a
corrupt file among them, and one embedded run on it shared by the tests that read it."""
from __future__ import annotations

import pathlib

import numpy as np
import onnxplain
import pytest
from PIL import Image
from skimage import data

#: occlusion light enough for tests: 4 x 4 windows of 56 px on the 224 px working image
OCCLUSION = {"mask_size": 56, "stride": 56}
#: deletion with 8 steps (9 model calls per curve)
METRIC_OPTIONS = {"step": 224 * 224 // 8}


@pytest.fixture(scope="session")
def bundled():
    return onnxplain.load_model()


def write_tree(root: pathlib.Path) -> pathlib.Path:
    """tabby/ (chelsea as JPEG, its mirror as PNG, a crop as JPEG), cup/ (coffee as PNG and a
    truncated JPEG that no decoder reads)."""
    chelsea, coffee = data.chelsea(), data.coffee()
    (root / "tabby").mkdir(parents=True)
    (root / "cup").mkdir()
    Image.fromarray(chelsea).save(root / "tabby" / "chelsea.jpg", quality=92)
    Image.fromarray(chelsea[:, ::-1]).save(root / "tabby" / "chelsea_mirror.png")
    Image.fromarray(chelsea[40:260, 60:400]).save(root / "tabby" / "chelsea_crop.jpg", quality=90)
    Image.fromarray(coffee).save(root / "cup" / "coffee.png")
    good = (root / "tabby" / "chelsea.jpg").read_bytes()
    (root / "cup" / "broken.jpg").write_bytes(good[:200])  # a JPEG header and nothing else
    return root


@pytest.fixture(scope="session")
def photo_tree(tmp_path_factory) -> pathlib.Path:
    return write_tree(tmp_path_factory.mktemp("photos") / "tree")


@pytest.fixture(scope="session")
def embedded_run(bundled, photo_tree, tmp_path_factory):
    """gradcam (batched) + occlusion (per image), top and true label, deletion metric."""
    out = tmp_path_factory.mktemp("results") / "results.parquet"
    run = onnxplain.explain_dataset(bundled, photo_tree, ["gradcam", "occlusion"], ["top", "true"], out=out,
                                    options={"occlusion": OCCLUSION}, metrics=["deletion"],
                                    metric_options=METRIC_OPTIONS, batch_size=2, progress=False)
    return run


def working(model, path) -> np.ndarray:
    return model.prepare(str(path))[0]
