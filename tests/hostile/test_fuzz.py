"""Property-based fuzzing: whatever goes in, out comes a result or an onnxplain error.

Random bytes and random small ONNX graphs into ``load_model``; random arrays, files and
option values into every method of ``onnxplain.METHODS``. The property (the oracle): each
case ends, within the hypothesis deadline (20 s), either normally or with an
``OnnxplainError`` (ValueError/TypeError-based, naming what was wrong) - never another
exception (numpy, Pillow, ONNX Runtime, a bare ValueError) and never a hang.
Profiles: tests/hostile/conftest.py ("default" ~25 examples per test; "long" for soak runs).
"""
from __future__ import annotations

import inspect
import pathlib
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import onnxplain
from onnxplain.errors import OnnxplainError
from tests import tiny_models as tm

pytestmark = pytest.mark.filterwarnings("ignore")
WORK = pathlib.Path(tempfile.mkdtemp(prefix="onnxplain-fuzz-"))


def _ends_well(fn, *args, **kwargs):
    """Run ``fn``: a result or an OnnxplainError passes; anything else fails the property."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs)
        except OnnxplainError:
            return None


# ---- load_model ----------------------------------------------------------------------------
@given(st.binary(max_size=2048))
def test_random_bytes_into_load_model(data):
    path = WORK / "random.onnx"
    path.write_bytes(data)
    _ends_well(onnxplain.load_model, path, preprocessing="none")


@given(st.binary(min_size=1, max_size=512), st.integers(0, 4000))
def test_corrupted_real_model_into_load_model(noise, where):
    good = tm.make_classifier().SerializeToString()
    where = min(where, len(good))
    path = WORK / "corrupt.onnx"
    path.write_bytes(good[:where] + noise + good[where + len(noise):])
    model = _ends_well(onnxplain.load_model, path, preprocessing="none")
    if model is not None:
        _ends_well(model.classify, np.zeros((8, 8, 3), np.uint8))


_DTYPES = [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8, TensorProto.DOUBLE, TensorProto.INT64]
_UNARY = ["Relu", "Sigmoid", "Neg", "Exp", "Log", "Sqrt", "Abs", "Identity", "Softmax", "Flatten", "Tanh"]


@st.composite
def small_graphs(draw):
    """A small, often invalid, ONNX graph: random input rank/dims/dtype, a chain of ops, an output."""
    rank = draw(st.integers(1, 5))
    dims = [draw(st.one_of(st.integers(0, 9), st.sampled_from(["N", "H", None]))) for _ in range(rank)]
    dtype = draw(st.sampled_from(_DTYPES))
    nodes, inits, x = [], [], "image"
    if dtype != TensorProto.FLOAT and draw(st.booleans()):
        nodes.append(helper.make_node("Cast", [x], ["c0"], to=TensorProto.FLOAT))
        x = "c0"
    for i in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(_UNARY + ["ReduceMean", "Add", "Transpose", "Bogus"]))
        out = f"t{i}"
        if op == "ReduceMean":
            nodes.append(helper.make_node(op, [x], [out], axes=draw(st.lists(st.integers(-3, 3), min_size=1, max_size=2)),
                                          keepdims=draw(st.integers(0, 1))))
        elif op == "Add":
            value = draw(st.sampled_from([0.0, 1.0, np.nan, np.inf, -1e30]))
            inits.append(numpy_helper.from_array(np.array([value], np.float32), f"k{i}"))
            nodes.append(helper.make_node(op, [x, f"k{i}"], [out]))
        elif op == "Transpose":
            nodes.append(helper.make_node(op, [x], [out], perm=draw(st.permutations(range(rank)))))
        elif op == "Bogus":
            nodes.append(helper.make_node("NoSuchOp", [x], [out], domain=draw(st.sampled_from(["", "x.y"]))))
        else:
            nodes.append(helper.make_node(op, [x], [out]))
        x = out
    if not nodes:
        nodes.append(helper.make_node("Identity", [x], ["t_out"]))
        x = "t_out"
    out_dims = draw(st.one_of(st.none(), st.lists(st.one_of(st.integers(0, 9), st.just("N")), max_size=4)))
    out_type = draw(st.sampled_from([TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT64]))
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("image", dtype, dims)],
                              [helper.make_tensor_value_info(x, out_type, out_dims)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", draw(st.sampled_from([7, 13, 17, 30])))])
    model.ir_version = draw(st.sampled_from([3, 8, 10, 99]))
    return model


@given(small_graphs(), st.sampled_from(["none", "imagenet", {"input_size": [8, 8]}]))
def test_random_small_graphs_into_load_model_and_classify(proto, pre):
    path = WORK / "graph.onnx"
    path.write_bytes(proto.SerializeToString())
    model = _ends_well(onnxplain.load_model, path, preprocessing=pre)
    if model is not None:
        _ends_well(model.classify, np.random.default_rng(0).uniform(0, 255, (9, 7, 3)).astype(np.float32))


# ---- methods --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    m = onnxplain.load_model(tm.save(tm.make_classifier(), WORK, "tiny"), preprocessing="none")
    image = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    for spec in onnxplain.METHODS.values():  # warm up: compile numba kernels, build gradient engines
        _ends_well(spec, m, image, 0, preset="quick")
    return m


def _arrays():
    shapes = st.lists(st.integers(0, 12), min_size=0, max_size=4).map(tuple)
    dtypes = st.sampled_from([np.uint8, np.float32, np.float64, np.int16, np.bool_, np.complex64, np.float16])
    values = st.sampled_from([0.0, 1.0, 255.0, -1.0, np.nan, np.inf, 1e39, 0.5])

    @st.composite
    def build(draw):
        shape, dtype = draw(shapes), draw(dtypes)
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
        arr = (rng.uniform(0, 255, shape) if shape else np.array(rng.uniform(0, 255)))
        if arr.size and draw(st.booleans()):
            arr.flat[draw(st.integers(0, arr.size - 1))] = draw(values)
        with np.errstate(all="ignore"):
            return arr.astype(dtype)
    return build()


@st.composite
def image_files(draw):
    kind = draw(st.sampled_from(["png", "jpg", "gif", "bmp", "bytes", "txt"]))
    path = WORK / f"fuzz.{kind if kind not in ('bytes', 'txt') else 'png'}"
    if kind in ("bytes", "txt"):
        path.write_bytes(draw(st.binary(max_size=300)) if kind == "bytes" else b"hello")
    else:
        from PIL import Image

        h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1", "I;16"] if kind == "png" else ["RGB", "L"]))
        arr = np.random.default_rng(h * w).integers(0, 255, (h, w, 3)).astype(np.uint8)
        im = Image.fromarray(arr).convert(mode) if mode != "I;16" else Image.fromarray(arr[..., 0].astype(np.uint16))
        im.save(path)
        if draw(st.booleans()):  # truncate
            data = path.read_bytes()
            path.write_bytes(data[: draw(st.integers(0, len(data)))])
    return path


@given(name=st.sampled_from(sorted(onnxplain.METHODS)), image=st.one_of(_arrays(), image_files()),
       label=st.one_of(st.none(), st.integers(-2, 5), st.sampled_from(["0", "cat", "", "3"]),
                       st.lists(st.integers(-1, 4), max_size=3), st.floats(allow_nan=True)))
def test_random_images_and_labels_into_every_method(model, name, image, label):
    _ends_well(onnxplain.METHODS[name], model, image, label, preset="quick")


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3000), st.sampled_from([10 ** 12, -(10 ** 9), 2 ** 63]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["auto", "mean", "zero", "none", "bilinear", "nearest", "bicubic", "grid", "superpixels",
                     "quickshift", "felzenszwalb", "tree", "linear", "logits", "blur", "NCHW", "cpu", "gpu"]),
    st.lists(st.one_of(st.integers(-2, 9), st.floats(allow_nan=True)), max_size=4),
    st.builds(lambda s: np.random.default_rng(0).uniform(-1, 1, s).astype(np.float32),
              st.lists(st.integers(0, 9), max_size=3).map(tuple)),
    st.just(lambda r: float(np.nan)), st.just({"a": 1}),
)
_SKIP = {"model", "image", "label", "progress", "method", "allow_long"}


@given(name=st.sampled_from(sorted(onnxplain.METHODS)), data=st.data())
def test_random_option_values_into_every_method(model, name, data):
    spec = onnxplain.METHODS[name]
    params = [p for p in inspect.signature(spec.func).parameters if p not in _SKIP and p not in spec.fixed]
    chosen = data.draw(st.lists(st.sampled_from(params), min_size=1, max_size=3, unique=True), label="options")
    options = {p: data.draw(_VALUES, label=p) for p in chosen}
    image = np.random.default_rng(1).uniform(0, 255, (10, 12, 3)).astype(np.float32)
    _ends_well(spec, model, image, 0, preset="quick", **options)
