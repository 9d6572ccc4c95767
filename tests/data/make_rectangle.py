"""The "grey rectangle" toy task of a LIME-for-CNN blog post (a small CNN learns whether a grey
rectangle is in a noise image), rebuilt without Keras or ``randimage``.

Regenerate (from the repository root, CPU, ~45 s on one thread):

    python -m tests.data.make_rectangle

Writes tests/data/rectangle/:

    rectangle_cnn.onnx  NHWC float32 input "input" [N, 64, 64, 3] of RAW pixel
                        values 0..255 (the /255 is inside the graph), output
                        "output" [N, 1] = sigmoid = P(rectangle).
    samples.npz         40 held-out images (uint8 [40, 64, 64, 3]), labels
                        (int64, 1 = rectangle), boxes (int64 [40, 4] as
                        row0, col0, row1, col1 = the blog's a, b, c, d; the
                        rectangle is img[row0:row1, col0:col1]; -1 for images
                        without a rectangle) and probs (the ONNX model's output).
    manifest.json       held-out accuracy, preprocessing, labels, layout, ...

There is no .pt: the ONNX initializers carry the torch parameter names, and
``tests.data.zoo.load_rectangle()`` rebuilds the torch module from them (keeps
the folder < 1 MB).

Data (following the blog's code, not its prose):

* Images are 64x64x3 "natural-ish" smooth random colour fields instead of
  ``randimage.get_random_image`` (which is not used): per image, a scalar field
  = white Gaussian noise filtered with ``scipy.ndimage.gaussian_filter`` at
  sigmas 2, 5 and 12 pixels (weights 0.3, 0.6, 1.0, each normalised to unit
  std; ``mode='reflect'``), min-max scaled to [0, 1] and mapped through a
  matplotlib colormap drawn from ``COLORMAPS`` (colourful maps, like randimage
  does), then to uint8 0..255.  None of these colormaps comes within 35 grey
  levels (max-norm) of (100, 100, 100), so the rectangle colour never occurs
  naturally.  (A first try with per-channel filtered noise mixed across
  channels - greyish colours everywhere - only reached ~86-93 % held-out
  accuracy with this tiny model: it learns a loose "near grey" detector.)
* With probability 1/2 a flat grey rectangle of value 100 in all channels is
  painted at ``img[a:c, b:d]`` with a, b uniform in [0, 32) and c, d uniform in
  [32, 64) (``random.randrange`` in the blog).  NB: that always covers pixel
  (31, 31); the model may use the image centre as a shortcut.
* Labels: 1 = rectangle, 0 = no rectangle.  The blog appends ``value`` (False
  when it paints the rectangle) and then flips with ``1 - x``, so in its *code*
  the rectangle class is also 1; its *prose* and its ``get_image_and_mask(0)``
  call treat class 0 as "rectangle", i.e. the text contradicts the code.  The
  blog's rectangle is also described as "white": ``randimage`` images are
  floats in [0, 1], so 100 is far out of range there; here pixels are 0..255
  and 100 is a mid-dark grey.

Model: Keras-style, NHWC input, conv(8, 3x3, same)-relu-maxpool(2)-flatten-
dense(16)-relu-dense(1)-sigmoid (the blog has 32 filters / 32 units, i.e.
~4.2 MB of float32 weights; shrunk to fit the 1 MB budget).  Trained with
torch (Adam 1e-3, batch 32, BCE, 12 epochs, 2000 images, seed 0;
~97-98 % held-out accuracy on 1000 fresh images).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings

import matplotlib
import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.data import zoo  # noqa: E402

SIZE = 64
GREY = 100
SCALES = ((2.0, 0.3), (5.0, 0.6), (12.0, 1.0))
# colourful matplotlib colormaps (like randimage); none comes closer than 35 grey
# levels (max-norm) to the rectangle colour (100, 100, 100)
COLORMAPS = ("viridis", "plasma", "inferno", "magma", "turbo", "rainbow", "jet", "summer",
             "twilight", "Spectral", "coolwarm", "gist_earth", "cubehelix", "ocean", "gnuplot",
             "YlGnBu", "RdYlBu", "PiYG")
N_TRAIN, N_HELDOUT, N_SAMPLES = 2000, 1000, 40
EPOCHS, BATCH, LR = 12, 32, 1e-3
OUT_DIR = zoo.RECT_DIR


def random_field(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A smooth random colour image, uint8 [size, size, 3] (randimage-like).

    A scalar field = sum over SCALES of (white noise * gaussian(sigma)) each
    normalised to unit std and weighted, min-max scaled to [0, 1] and mapped
    through a colormap drawn from COLORMAPS, then to 0..255.
    """
    field = np.zeros((size, size), np.float64)
    for sigma, weight in SCALES:
        f = gaussian_filter(rng.standard_normal((size, size)), sigma=sigma, mode="reflect")
        field += weight * f / (f.std() + 1e-12)
    field = (field - field.min()) / (field.max() - field.min() + 1e-12)
    cmap = matplotlib.colormaps[COLORMAPS[rng.integers(len(COLORMAPS))]]
    return np.round(cmap(field)[..., :3] * 255.0).astype(np.uint8)


def make_dataset(n: int, seed: int):
    """images uint8 [n,64,64,3], labels int64 [n] (1 = rectangle), boxes int64 [n,4] (-1: none)."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    labels = np.empty(n, np.int64)
    boxes = np.full((n, 4), -1, np.int64)
    half = SIZE // 2
    for i in range(n):
        img = random_field(rng)
        a, b = rng.integers(0, half, 2)
        c, d = rng.integers(half, SIZE, 2)
        rect = bool(rng.integers(0, 2))
        if rect:
            img[a:c, b:d, :] = GREY
            boxes[i] = (a, b, c, d)
        images[i] = img
        labels[i] = int(rect)
    return images, labels, boxes


def train(images, labels, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = zoo.RectangleCNN()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    lossf = nn.BCEWithLogitsLoss()
    x = torch.from_numpy(images.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.float32))[:, None]
    g = torch.Generator().manual_seed(seed)
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        tot, correct = 0.0, 0
        for i in range(0, len(x), BATCH):
            idx = perm[i:i + BATCH]
            logits = model.logits(x[idx])
            loss = lossf(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
            correct += int(((logits > 0).float() == y[idx]).sum())
        print(f"epoch {epoch + 1}: loss {tot / len(x):.4f} train acc {correct / len(x):.4f}")
    return model.eval()


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main() -> None:
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    t0 = time.time()
    train_x, train_y, _ = make_dataset(N_TRAIN, seed=1)
    test_x, test_y, test_boxes = make_dataset(N_HELDOUT, seed=2)
    print(f"data {time.time() - t0:.1f}s; train positives {train_y.mean():.3f}")
    model = train(train_x, train_y)
    print(f"trained {time.time() - t0:.1f}s")

    onnx_file = os.path.join(OUT_DIR, "rectangle_cnn.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy exporter deprecation warning
        torch.onnx.export(model, (torch.zeros(1, SIZE, SIZE, 3),), onnx_file, dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    proto = onnx.load(onnx_file)
    onnx.checker.check_model(proto, full_check=True)

    # the ONNX initializers must carry the state_dict names (zoo.load_rectangle relies on it)
    reloaded = zoo.load_rectangle()
    for k, v in model.state_dict().items():
        assert torch.equal(v, reloaded.state_dict()[k]), k

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_file, so, providers=["CPUExecutionProvider"])
    probs = sess.run(None, {"input": test_x.astype(np.float32)})[0][:, 0]
    with torch.no_grad():
        ref = model(torch.from_numpy(test_x.astype(np.float32)))[:, 0].numpy()
    diff = float(np.abs(probs - ref).max())
    assert diff < 1e-4, diff
    acc = float(((probs > 0.5).astype(np.int64) == test_y).mean())
    train_probs = sess.run(None, {"input": train_x.astype(np.float32)})[0][:, 0]
    train_acc = float(((train_probs > 0.5).astype(np.int64) == train_y).mean())
    print(f"held-out accuracy (ORT) {acc:.4f} on {N_HELDOUT}; train {train_acc:.4f}; ORT vs torch {diff:.2e}")

    # 40 held-out samples: the first 20 of each class
    pos = np.flatnonzero(test_y == 1)[: N_SAMPLES // 2]
    neg = np.flatnonzero(test_y == 0)[: N_SAMPLES // 2]
    idx = np.sort(np.concatenate([pos, neg]))
    samples_file = os.path.join(OUT_DIR, "samples.npz")
    np.savez_compressed(samples_file, images=test_x[idx], labels=test_y[idx], boxes=test_boxes[idx],
                        probs=probs[idx].astype(np.float32), heldout_index=idx.astype(np.int64))
    sample_acc = float(((probs[idx] > 0.5).astype(np.int64) == test_y[idx]).mean())

    manifest = {
        "_about": "generated by tests/data/make_rectangle.py; torch " + torch.__version__
                  + ", onnx " + onnx.__version__ + ", onnxruntime " + ort.__version__,
        "model": "rectangle_cnn.onnx",
        "input_name": "input",
        "output_name": "output",
        "input_shape": ["N", SIZE, SIZE, 3],
        "input_dtype": "float32",
        "layout": "NHWC",
        "preprocessing": "none: raw pixel values 0..255 as float32 (the /255 scaling is inside the graph)",
        "output_shape": ["N", 1],
        "output": "sigmoid probability of class 1 (rectangle); P(no_rectangle) = 1 - output",
        "labels": ["no_rectangle", "rectangle"],
        "architecture": "Transpose(NHWC->NCHW), Mul(1/255), conv(8,3x3,same)-relu-maxpool(2)-flatten-"
                        "dense(16)-relu-dense(1)-sigmoid",
        "heldout_accuracy": acc,
        "heldout_size": N_HELDOUT,
        "train_accuracy": train_acc,
        "train_size": N_TRAIN,
        "samples_accuracy": sample_acc,
        "samples": {"file": "samples.npz", "n": int(len(idx)),
                    "keys": {"images": "uint8 [n,64,64,3]", "labels": "int64 [n], 1 = rectangle",
                             "boxes": "int64 [n,4] row0,col0,row1,col1 (img[row0:row1, col0:col1] == 100); "
                                      "-1 when no rectangle",
                             "probs": "float32 [n] ONNX output", "heldout_index": "index in the held-out set"}},
        "max_abs_diff_ort_vs_torch": diff,
        "data": {"image": "smooth random colour field: gaussian-filtered white noise scalar field, "
                          f"sigmas/weights {[list(s) for s in SCALES]}, min-max to [0,1], random matplotlib "
                          f"colormap from {list(COLORMAPS)}, to 0..255 uint8",
                 "rectangle": f"value {GREY} in all channels at img[a:c, b:d], a,b in [0,32), c,d in [32,64), p=0.5",
                 "seeds": {"train": 1, "heldout": 2, "torch": 0},
                 "regenerate_images": "tests.data.make_rectangle.make_dataset(n, seed)"},
        "training": {"optimizer": "Adam", "lr": LR, "batch": BATCH, "epochs": EPOCHS, "loss": "BCE"},
        "onnx_bytes": os.path.getsize(onnx_file),
        "onnx_sha256": sha256(onnx_file),
        "samples_bytes": os.path.getsize(samples_file),
        "samples_sha256": sha256(samples_file),
        "op_types": sorted({n.op_type for n in proto.graph.node}),
    }
    with open(os.path.join(OUT_DIR, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"done in {time.time() - t0:.1f}s; held-out accuracy {acc:.4f}, samples {sample_acc:.4f}")
    if acc < 0.95:
        raise SystemExit(f"held-out accuracy {acc:.4f} < 0.95")


if __name__ == "__main__":
    main()
