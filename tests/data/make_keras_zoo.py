"""The zoo's Keras row: keras.applications.MobileNetV2 through tf2onnx, with a TensorFlow oracle.

TensorFlow cannot share onnxplain's environment (tensorflow-cpu 2.21 and tf2onnx 1.17 pin
protobuf / numpy ranges of their own), so the TensorFlow side runs in a separate virtual
environment, found at ``$ONNXPLAIN_TF_PYTHON`` or ``~/.cache/onnxplain/tfenv/bin/python``:

    python3 -m venv ~/.cache/onnxplain/tfenv
    ~/.cache/onnxplain/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0

Without it the row is reported as "no TensorFlow environment" (the test skips, naming this
command). In that environment ``_tf_main`` (this file run as a script) builds MobileNetV2
(alpha 0.35, 96 x 96, ``weights=None``, seeded; constant BatchNorm/bias parameters redrawn;
BatchNorm moving statistics set from real photos in one training-mode pass with momentum
0), exports it with ``tf2onnx.convert.from_function`` (opset 17, NHWC input, dynamic
batch) and writes the oracle: the float32 logits and the float64 gradient (a float64 copy
of the network, ``tf.GradientTape``) of the top logit with respect to the raw 0..255
pixels through Keras' ``preprocess_input`` (``x / 127.5 - 1``), which onnxplain gets as the
declared preprocessing ``scale 1/127.5, mean 1, std 1``.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 96
ALPHA = 0.35
PREPROCESSING = {"scale": 1 / 127.5, "mean": 1.0, "std": 1.0, "layout": "NHWC", "input_size": [SIZE, SIZE]}


def tf_python() -> str | None:
    p = os.environ.get("ONNXPLAIN_TF_PYTHON") or os.path.join(os.path.expanduser("~"), ".cache", "onnxplain",
                                                                "tfenv", "bin", "python")
    return p if os.path.exists(p) else None


NO_TF = ("no TensorFlow environment: python3 -m venv ~/.cache/onnxplain/tfenv && "
         "~/.cache/onnxplain/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 "
         "(or set ONNXPLAIN_TF_PYTHON)")


def paths() -> tuple[str, str]:
    """(onnx file, oracle npz) in the zoo cache, keyed by the TensorFlow-side source and sizes."""
    import inspect

    from tests.data.make_real_zoo import cache_dir

    key = hashlib.sha256(f"{SIZE}:{ALPHA}:{inspect.getsource(_tf_main)}".encode()).hexdigest()[:12]
    base = os.path.join(cache_dir(), f"keras_mobilenetv2.tf2onnx.{key}")
    return base + ".onnx", base + ".oracle.npz"


def ensure() -> tuple[str, str]:
    """Export (in the TensorFlow environment) unless cached; returns (onnx path, oracle path)."""
    from tests.data import real_zoo

    onnx_path, oracle = paths()
    if os.path.exists(onnx_path) and os.path.exists(oracle):
        return onnx_path, oracle
    py = tf_python()
    if py is None:
        raise RuntimeError(NO_TF)
    inputs = onnx_path[:-5] + ".inputs.npz"
    np.savez(inputs, calib=real_zoo.calibration_images(SIZE, 16), image=real_zoo.test_image(SIZE))
    p = subprocess.run([py, __file__, inputs, onnx_path, oracle], capture_output=True, text=True, timeout=1200,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
    if p.returncode != 0 or not os.path.exists(onnx_path):
        tail = " / ".join(p.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"tf2onnx export failed (exit {p.returncode}): {tail[:400]}")
    with open(onnx_path[:-5] + ".json", "w") as f:
        json.dump({"preprocessing": PREPROCESSING, "exporter": "tf2onnx"}, f, indent=1)
    return onnx_path, oracle


def check() -> dict:
    """The zoo checks of make_real_zoo.check, with the TensorFlow float64 oracle."""
    from tests.data.make_real_zoo import CORR_BAR, StageError, _first_line, captured_stderr, check_onnxplain, finish

    res: dict = {"row": "keras_mobilenetv2", "exporter": "tf2onnx", "family": "Keras MobileNetV2"}
    stage = "export"
    with captured_stderr() as log:
        try:
            path, oracle = ensure()
            o = np.load(oracle)
            label, expected, logits = int(o["label"]), o["grad64"], o["logits"]
            top2 = np.sort(logits)[-2:]
            res.update(top1_torch=label, margin=float(top2[1] - top2[0]))
            stage = check_onnxplain(res, path, o["image"], label, expected)
        except StageError as e:
            stage = e.stage
            res["error"] = f"{stage}: {_first_line(e.__cause__)}"
        except Exception as e:
            res["error"] = f"{stage}: {_first_line(e)}"
    return finish(res, stage, log, CORR_BAR)


# ---- runs inside the TensorFlow environment ------------------------------------------------
def _tf_main(inputs: str, onnx_path: str, oracle: str) -> None:
    import keras
    import tensorflow as tf
    import tf2onnx

    data = np.load(inputs)
    keras.utils.set_random_seed(0)

    def make():
        return keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=ALPHA, weights=None,
                                              classes=1000, classifier_activation=None)

    model = make()
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
            layer.gamma.assign(rng.uniform(0.8, 1.2, layer.gamma.shape).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.05, layer.beta.shape).astype(np.float32))
    head = model.layers[-1]
    head.bias.assign(rng.normal(0, 0.05, head.bias.shape).astype(np.float32))
    calib = data["calib"].astype(np.float32) / 127.5 - 1.0
    model(calib, training=True)                     # momentum 0: moving stats = this batch's

    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="input"),)
    fn = tf.function(lambda x: model(x, training=False))
    tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=onnx_path + ".part")
    os.replace(onnx_path + ".part", onnx_path)

    image = data["image"]
    logits = model(image[None].astype(np.float32) / 127.5 - 1.0, training=False).numpy()[0]
    label = int(np.argmax(logits))
    keras.config.set_floatx("float64")
    m64 = make()
    m64.set_weights([w.astype(np.float64) for w in model.get_weights()])
    px = tf.Variable(image[None].astype(np.float64))
    with tf.GradientTape() as tape:
        out = m64(px / 127.5 - 1.0, training=False)[0, label]
    grad = tape.gradient(out, px).numpy()[0]
    np.savez(oracle, image=image, logits=logits, label=label, grad64=grad)


if __name__ == "__main__":
    _tf_main(*sys.argv[1:4])
