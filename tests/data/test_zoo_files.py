"""Smoke test of the committed test fixtures (tests/data/zoo, tests/data/rectangle).

Oracle: the torch forward of the module rebuilt from the committed weights
(``zoo.load`` / ``zoo.load_rectangle``) on the same random batch.
"""
import hashlib
import json
import os

import numpy as np
import onnxruntime as ort
import pytest
pytest.importorskip("torch")  # this module's oracles/zoo helpers import torch
import torch

from tests.data import zoo

TOL = 1e-4

with open(os.path.join(zoo.ZOO_DIR, "manifest.json")) as _f:
    MANIFEST = json.load(_f)


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_manifest_lists_every_model():
    assert sorted(k for k in MANIFEST if not k.startswith("_")) == sorted(zoo.NAMES)


@pytest.mark.parametrize("name", zoo.NAMES)
def test_zoo_onnx_matches_torch(name):
    entry = MANIFEST[name]
    assert _sha256(zoo.onnx_path(name)) == entry["onnx_sha256"], "stale onnx: rerun make_zoo"
    assert _sha256(zoo.pt_path(name)) == entry["pt_sha256"], "stale pt: rerun make_zoo"
    model = zoo.load(name)
    sess = _session(zoo.onnx_path(name))
    assert [i.name for i in sess.get_inputs()] == ["input"]
    n = 3 if zoo.SPECS[name].dynamic_batch else 1
    x = torch.randn(zoo.batch_shape(name, n), generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        ref = model(x).numpy()
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)


def test_tfsame_dynamic_spatial_size():
    model, sess = zoo.load("tfsame"), _session(zoo.onnx_path("tfsame"))
    x = torch.randn((2, 3, 37, 50), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], ref, rtol=0, atol=TOL)


def test_rectangle_model_accuracy_and_parity():
    with open(os.path.join(zoo.RECT_DIR, "manifest.json")) as f:
        manifest = json.load(f)
    onnx_file = os.path.join(zoo.RECT_DIR, manifest["model"])
    samples_file = os.path.join(zoo.RECT_DIR, "samples.npz")
    assert _sha256(onnx_file) == manifest["onnx_sha256"]
    assert _sha256(samples_file) == manifest["samples_sha256"]
    data = np.load(samples_file)
    images, labels, boxes = data["images"], data["labels"], data["boxes"]
    assert images.dtype == np.uint8 and images.shape[1:] == (64, 64, 3)
    # boxes: rectangle pixels are exactly grey 100; -1 rows for negatives
    for img, lab, (r0, c0, r1, c1) in zip(images, labels, boxes):
        if lab == 1:
            assert 0 <= r0 < 32 <= r1 < 64 and 0 <= c0 < 32 <= c1 < 64
            assert (img[r0:r1, c0:c1] == 100).all()
        else:
            assert r0 == c0 == r1 == c1 == -1
    x = images.astype(np.float32)  # raw pixels, no preprocessing
    probs = _session(onnx_file).run(None, {"input": x})[0]
    assert probs.shape == (len(images), 1)
    acc = float(((probs[:, 0] > 0.5).astype(np.int64) == labels).mean())
    assert acc >= 0.90, acc
    with torch.no_grad():
        ref = zoo.load_rectangle()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(probs, ref, rtol=0, atol=TOL)
