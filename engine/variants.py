"""Derived builds of a model for "did my edge build change what the model looks at?": int8 and float16.

- int8: ``onnxruntime.quantization.quantize_static`` in QDQ format (QuantizeLinear /
  DequantizeLinear pairs around standard ops), int8 weights per channel and int8
  activations, MinMax calibration on a few sample images (scikit-image's bundled
  photographs by default) pushed through the model's own preprocessing.
- float16: our own conversion (onnxconverter-common is not a dependency): every float32
  initializer, Constant / ConstantOfShape value and ``Cast(to=FLOAT)`` becomes float16, and
  the graph keeps float32 input and output with one Cast after the input and one before
  each output ("keep_io_types"), so the model's preprocessing and :class:`~onnxplain.model.InputSpec`
  are unchanged. Values outside the float16 range are clipped to ±65504. ONNX Runtime's CPU
  provider runs float16 nodes that lack a float16 kernel through inserted casts.

Builds are made on demand and cached (``variant_model``): the cache folder is
``$ONNXPLAIN_CACHE`` or ``~/.cache/onnxplain``, and the file name carries the first 16 hex
digits of the source model's sha256, so a changed model gets a new build. The script
``models/make_variants.py`` writes the bundled model's builds with manifests.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import tempfile
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ._validation import check_choice, check_int
from .errors import ModelError, OptionError
from .model import Model

log = logging.getLogger(__name__)

VARIANTS = ("int8", "fp16")
#: calibration images for int8 (scikit-image's bundled colour photographs, no download).
CALIBRATION_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel")
_F16_MAX = float(np.finfo(np.float16).max)
#: inputs that must stay float32 whatever the data type (op type -> input positions).
_KEEP_FLOAT32 = {"Resize": (1, 2), "Upsample": (1,)}


def sample_images(names: Sequence[str] = CALIBRATION_IMAGES) -> list[np.ndarray]:
    """scikit-image sample photographs by name (uint8 (H, W, 3))."""
    import skimage.data

    return [getattr(skimage.data, n)() for n in names]


def quantize_int8(model: Model, path: str | os.PathLike, *, calibration_images: Sequence[Any] | None = None,
                  per_channel: bool = True) -> Model:
    """Write a static int8 QDQ build of ``model`` to ``path`` and load it.

    Parameters
    ----------
    model : Model
        A float32 model.
    path : str or PathLike
        Where the .onnx file goes.
    calibration_images : sequence of images, optional
        Arrays or paths for MinMax calibration; default :data:`CALIBRATION_IMAGES`.
    per_channel : bool
        Per-channel weight scales (recommended for conv nets).

    Returns
    -------
    Model
        The int8 model with ``model``'s preprocessing, labels, layout and output kind.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if model.input_dtype != np.float32:
        raise ModelError(f"{model.path}: int8 quantization needs a float32 model; the input is {model.input_dtype}.")
    images = list(calibration_images) if calibration_images is not None else sample_images()
    if not images:
        raise OptionError("The 'calibration_images' parameter is empty.")
    feeds = [model.to_native(model.prepare(im)[0][None]) for im in images]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {model.input_name: x}

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "float32.onnx"
        onnx.save(model.onnx_model, str(src))
        quantize_static(str(src), str(path), _Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return model.with_graph(onnx.load(str(path)), path=str(path))


def convert_float16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of a float32 graph with float32 input/output kept (see the module docstring).

    Raises
    ------
    ModelError
        If the converted graph fails ``onnx.checker``.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    keep = set()
    for n in g.node:
        for pos in _KEEP_FLOAT32.get(n.op_type, ()):
            if pos < len(n.input):
                keep.add(n.input[pos])
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            init.CopyFrom(numpy_helper.from_array(_to_f16(numpy_helper.to_array(init)), init.name))
    for n in g.node:
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT and not any(o in keep for o in n.output):
                    a.i = TensorProto.FLOAT16
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT \
                    and not any(o in keep for o in n.output):
                a.t.CopyFrom(numpy_helper.from_array(_to_f16(numpy_helper.to_array(a.t)), a.t.name))
    # float32 at the borders: a Cast after each float input and before each float output
    inits = {i.name for i in g.initializer}
    new_nodes = []
    for inp in g.input:
        if inp.name in inits or inp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = f"{inp.name}_onnxplain_f16"
        for n in g.node:
            n.input[:] = [inner if i == inp.name else i for i in n.input]
        new_nodes.append(helper.make_node("Cast", [inp.name], [inner], to=TensorProto.FLOAT16,
                                          name=f"onnxplain_f16_in_{inp.name}"))
    tail = []
    for o in g.output:
        if o.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = f"{o.name}_onnxplain_f16"
        for n in g.node:
            n.output[:] = [inner if x == o.name else x for x in n.output]
            n.input[:] = [inner if x == o.name else x for x in n.input]
        tail.append(helper.make_node("Cast", [inner], [o.name], to=TensorProto.FLOAT, name=f"onnxplain_f32_out_{o.name}"))
    nodes = new_nodes + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # stale float32 annotations
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as exc:
        raise ModelError(f"float16 conversion produced an invalid graph: {str(exc).splitlines()[0][:300]}") from None
    return out


def float16_model(model: Model, path: str | os.PathLike | None = None) -> Model:
    """The float16 build of ``model`` (written to ``path`` when given)."""
    proto = convert_float16(model.onnx_model)
    if path is not None:
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(proto, str(path))
    return model.with_graph(proto, path=str(path) if path else f"{model.path} (float16)")


def cache_dir() -> pathlib.Path:
    """``$ONNXPLAIN_CACHE`` or ``~/.cache/onnxplain``."""
    return pathlib.Path(os.environ.get("ONNXPLAIN_CACHE") or pathlib.Path.home() / ".cache" / "onnxplain")


def variant_model(model: Model, kind: str, *, directory: str | os.PathLike | None = None) -> Model:
    """The ``kind`` ("int8" or "fp16") build of ``model``, built on first use and cached.

    The cached file is ``<directory>/<stem>_<sha16>_<kind>.onnx``; ``directory`` defaults
    to :func:`cache_dir`.
    """
    kind = check_choice("kind", kind, VARIANTS)
    digest = hashlib.sha256(model.onnx_model.SerializeToString()).hexdigest()[:16]
    stem = pathlib.Path(str(model.path).split(" (")[0]).stem or "model"
    folder = pathlib.Path(directory) if directory is not None else cache_dir() / "variants"
    path = folder / f"{stem}_{digest}_{kind}.onnx"
    if path.exists():
        log.info("using cached %s build %s", kind, path)
        return model.with_graph(onnx.load(str(path)), path=str(path))
    log.info("building the %s variant of %s into %s", kind, model.path, path)
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
    built = quantize_int8(model, tmp) if kind == "int8" else float16_model(model, tmp)
    os.replace(tmp, path)
    return model.with_graph(built.onnx_model, path=str(path))


def agreement_check(model: Model, other: Model, images: Sequence[Any] | None = None, *, top_k: int = 5) -> dict[str, Any]:
    """Top-1 agreement, mean top-k overlap and max |Δprob| of two models on a few images (for manifests)."""
    top_k = check_int("top_k", top_k, minimum=1)
    images = list(images) if images is not None else sample_images()
    pa = model.probabilities(model.predict(images))
    pb = other.probabilities(other.predict(images))
    ta, tb = np.argsort(-pa, axis=1)[:, :top_k], np.argsort(-pb, axis=1)[:, :top_k]
    return {"images": len(images), "top1_agreement": float(np.mean(ta[:, 0] == tb[:, 0])),
            "topk_overlap": float(np.mean([len(set(a) & set(b)) / top_k for a, b in zip(ta, tb)])),
            "max_abs_prob_diff": float(np.abs(pa - pb).max())}


def _to_f16(a: np.ndarray) -> np.ndarray:
    return np.clip(a, -_F16_MAX, _F16_MAX).astype(np.float16)
