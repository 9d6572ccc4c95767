"""The model layer: loading any single-image-input ONNX classifier, preprocessing, labels, errors.

Oracles: hand-computed logits of the tiny models (tests/tiny_models.py), torch forward for the
exported zoo models (their manifests record ORT-vs-torch agreement), and the bundled model's
known answer on skimage's chelsea (a cat).
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import onnxplain
from onnxplain import LabelError, ModelError
from tests import tiny_models as tm

NONE = "none"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


def _load(folder, name, preprocessing=NONE, **kw):
    build = {k: v for k, v in kw.items() if k in ("layout", "batch", "dtype", "head", "hardcoded_batch_reshape",
                                                  "classes", "extra_output", "size")}
    load = {k: v for k, v in kw.items() if k not in build}
    return onnxplain.load_model(tm.save(tm.make_classifier(**build), folder, name), preprocessing=preprocessing, **load)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_layout_detected_and_scores_match_hand_computation(folder, layout):
    model = _load(folder, f"l_{layout}", layout=layout)
    assert model.layout == layout and model.input_size == (8, 8) and model.output_kind == "logits"
    rng = np.random.default_rng(1)
    pixels = rng.uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)
    scores = model.scores_native(model.to_native(pixels))
    np.testing.assert_allclose(scores, tm.expected_logits(pixels), rtol=1e-5, atol=1e-4)


def test_layout_override(folder):
    model = _load(folder, "override", layout="NHWC")  # built NHWC; detection agrees with override
    assert onnxplain.load_model(model.path, preprocessing="none", layout="NHWC").layout == "NHWC"
    with pytest.raises(ValueError, match="'layout' parameter must be one of"):
        onnxplain.load_model(model.path, preprocessing="none", layout="CHW")


def test_static_batch_1_is_rewritten_to_run_batched(folder):
    model = _load(folder, "static", batch=1)
    assert model.static_batch == 1 and not model.describe()["input"]["batched_by_loop"]
    pixels = np.random.default_rng(2).uniform(0, 255, (7, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(model.scores_native(model.to_native(pixels)), tm.expected_logits(pixels), rtol=1e-5, atol=1e-4)


def test_static_batch_1_with_hardcoded_reshape_runs_image_by_image(folder):
    model = _load(folder, "static_reshape", batch=1, hardcoded_batch_reshape=True)
    assert model.describe()["input"]["batched_by_loop"]
    pixels = np.random.default_rng(3).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(model.scores_native(model.to_native(pixels)), tm.expected_logits(pixels), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_float16_and_uint8_inputs(folder, dtype):
    model = _load(folder, f"dt_{dtype}", dtype=dtype)
    assert model.input_dtype == np.dtype(dtype)
    pixels = np.random.default_rng(4).integers(0, 256, (4, 8, 8, 3)).astype(np.float32)
    native = model.to_native(pixels)
    assert native.dtype == np.dtype(dtype)
    rtol = 2e-3 if dtype == "float16" else 1e-5
    np.testing.assert_allclose(model.scores_native(native), tm.expected_logits(pixels), rtol=rtol, atol=0.1)


def test_uint8_model_refuses_gradients(folder):
    model = _load(folder, "u8g", dtype="uint8")
    with pytest.raises(ModelError, match="uint8 input, which has no gradient"):
        model.gradient_engine()


def test_softmax_output_detected(folder):
    model = _load(folder, "softmax", head="softmax")
    assert model.output_kind == "probabilities" and model.logits_name == "logits"
    top = model.classify(np.full((8, 8, 3), 100, np.uint8), top_k=4)
    assert abs(sum(s for _, _, s in top) - 1.0) < 1e-5


def test_sigmoid_output_is_binary(folder):
    model = _load(folder, "sigmoid", head="sigmoid")
    assert model.output_kind == "sigmoid" and model.num_classes == 2
    pixels = np.random.default_rng(5).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    p = 1 / (1 + np.exp(-tm.expected_logits(pixels, classes=1)[:, 0]))
    scores = model.scores_native(model.to_native(pixels))
    np.testing.assert_allclose(scores[:, 1], p, rtol=1e-5)
    np.testing.assert_allclose(scores[:, 0], 1 - p, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.seed_for(0), [-1.0])


def test_logits_classify_reports_probabilities_and_extra_outputs_ignored(folder):
    model = _load(folder, "extra", extra_output=True)
    assert model.output_name == "out"
    top = model.classify(np.zeros((8, 8, 3), np.uint8), top_k=2)
    assert len(top) == 2 and 0 < top[0][2] <= 1


def test_preprocessing_imagenet_preset_and_bgr(folder):
    model = _load(folder, "pre", preprocessing={"preset": "imagenet", "channel_order": "BGR"})
    pixels = np.random.default_rng(6).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    bgr = pixels[..., ::-1]
    native_ref = (bgr / 255.0 - mean) / std
    np.testing.assert_allclose(model.to_native(pixels), native_ref.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


def test_preprocessing_from_manifest_and_metadata(folder):
    proto = tm.make_classifier()
    path = tm.save(proto, folder, "manifested")
    path.with_suffix(".json").write_text(json.dumps({
        "preprocessing": {"scale": 0.5, "mean": [1, 2, 3], "std": [2, 2, 2]}, "labels": ["a", "b", "c", "d"]}))
    model = onnxplain.load_model(path)
    assert model.preprocessing.scale == 0.5 and model.class_names == ["a", "b", "c", "d"]
    meta = tm.make_classifier()
    for k, v in {"onnxplain.preprocessing": json.dumps({"preset": "imagenet"}),
                 "onnxplain.labels": json.dumps(["w", "x", "y", "z"])}.items():
        e = meta.metadata_props.add()
        e.key, e.value = k, v
    model = onnxplain.load_model(tm.save(meta, folder, "meta"))
    assert model.preprocessing.scale == pytest.approx(1 / 255) and model.class_names[3] == "z"


def test_missing_preprocessing_is_an_error(folder):
    path = tm.save(tm.make_classifier(), folder, "nopre")
    with pytest.raises(ValueError, match="declares no preprocessing"):
        onnxplain.load_model(path)


def test_labels_from_text_file_and_resolution(folder, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\nfish\n")
    model = _load(folder, "labels", labels=str(labels))
    assert model.label_index("dog") == 1 and model.label_index(3) == 3 and model.label_index("Bird") == 2
    with pytest.raises(LabelError, match="Close matches: 'dog'"):
        model.label_index("dgo")
    with pytest.raises(LabelError, match="out of range; the model has 4 classes"):
        model.label_index(4)
    with pytest.raises(ModelError, match="gives 3 class names but the model has 4"):
        _load(folder, "labels3", labels=["a", "b", "c"])


def test_plain_index_labels(folder):
    assert _load(folder, "plain").class_names == ["0", "1", "2", "3"]


def test_bad_files_give_one_line_errors(tmp_path, folder):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf at all \x00\xff" * 10)
    with pytest.raises(ModelError, match="not an ONNX model file or corrupt"):
        onnxplain.load_model(junk)
    with pytest.raises(ModelError, match="does not exist"):
        onnxplain.load_model(tmp_path / "missing.onnx")


def test_more_than_one_input_and_non_image_input(folder):
    from onnx import TensorProto, helper

    two = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3, 4, 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 3, 4, 4])]))
    with pytest.raises(ModelError, match=r"2 required inputs \['a', 'b'\]"):
        onnxplain.load_model(tm.save(two, folder, "two"), preprocessing="none")
    flat = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["a"], ["c"])], "flat",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 10])]))
    with pytest.raises(ModelError, match="rank 2 .* expected an image batch of rank 4"):
        onnxplain.load_model(tm.save(flat, folder, "flat"), preprocessing="none")
    i64 = helper.make_model(helper.make_graph(
        [helper.make_node("Cast", ["a"], ["c"], to=TensorProto.FLOAT)], "i64",
        [helper.make_tensor_value_info("a", TensorProto.INT64, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 3, 4, 4])]))
    with pytest.raises(ModelError, match="type INT64; expected float32, float16 or uint8"):
        onnxplain.load_model(tm.save(i64, folder, "i64"), preprocessing="none")


def test_gpu_without_cuda_is_a_clear_error(folder):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA; the error path cannot be exercised")
    with pytest.raises(onnxplain.EnvironmentUnavailableError, match="needs onnxruntime-gpu"):
        _load(folder, "gpu", execution_environment="gpu")


def test_predict_streams_mini_batches(folder):
    model = _load(folder, "stream")
    seen = []
    images = (np.full((8, 8, 3), i, np.uint8) for i in range(10))  # a generator: never materialised
    scores = model.predict(images, mini_batch_size=4, progress=lambda d, t: seen.append(d))
    assert scores.shape == (10, 4) and seen == [4, 8, 10]
    pixels = np.stack([np.full((8, 8, 3), i, np.float32) for i in range(10)])
    np.testing.assert_allclose(scores, tm.expected_logits(pixels), rtol=1e-5, atol=1e-4)


def test_resize_rule_applies_to_other_sizes(folder):
    model = _load(folder, "resize")
    img = np.random.default_rng(7).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    pixels, original = model.prepare(img)
    assert pixels.shape == (8, 8, 3) and original == (20, 30)


def test_bundled_model_classifies_chelsea_as_a_cat():
    from skimage.data import chelsea

    model = onnxplain.load_model()
    assert model.input_size == (224, 224) and model.num_classes == 1000 and model.output_kind == "probabilities"
    top = model.classify(chelsea(), top_k=3)
    assert top[0][1] in {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    assert top[0][2] > 0.5


def test_exported_zoo_models_load_nhwc_and_static_batch():
    """Models exported from torch by tests/data/make_zoo.py (oracle: torch forward via the zoo manifest)."""
    import pathlib

    zoo = pathlib.Path(__file__).parent / "data" / "zoo"
    nhwc = onnxplain.load_model(zoo / "nhwc.onnx", preprocessing="none")
    assert nhwc.layout == "NHWC"
    static = onnxplain.load_model(zoo / "static1.onnx", preprocessing="none")
    assert static.static_batch == 1
    rng = np.random.default_rng(8)
    for model in (nhwc, static):
        pixels = rng.uniform(0, 1, (3, *model.input_size, 3)).astype(np.float32)
        batched = model.scores_native(model.to_native(pixels))
        single = np.concatenate([model.scores_native(model.to_native(pixels[i:i + 1])) for i in range(3)])
        np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)
    # the independent oracle: the torch network the files were exported from, image by image
    torch = pytest.importorskip("torch")
    from tests.data import zoo as torch_zoo

    for name, model in (("nhwc", nhwc), ("static1", static)):
        net = torch_zoo.load(name)
        pixels = rng.uniform(0, 1, (3, *model.input_size, 3)).astype(np.float32)
        torch_in = pixels if name == "nhwc" else pixels.transpose(0, 3, 1, 2)
        with torch.no_grad():
            ref = np.concatenate([net(torch.from_numpy(np.ascontiguousarray(torch_in[i:i + 1]))).numpy()
                                  for i in range(3)])
        np.testing.assert_allclose(model.scores_native(model.to_native(pixels)), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(layout="NCHW"), dict(layout="NHWC"), dict(dtype="float16"),
                                dict(layout="NCHW", pre={"preset": "imagenet", "channel_order": "BGR"})])
def test_fused_preprocessing_graph_equals_preprocess_then_run(folder, kw):
    """Oracle: Model.to_native followed by the original graph (the fused graph must compute the same)."""
    import onnxruntime as ort

    pre = kw.pop("pre", NONE)
    model = _load(folder, "fuse_" + "_".join(f"{k}{v}" for k, v in kw.items()) + str(len(str(pre))),
                  preprocessing=pre, **kw)
    fused = model.fused_model()
    onnx.checker.check_model(fused, full_check=True)
    assert model.onnx_model.graph.input[0].name == "image"  # the original is not mutated
    sess = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(9).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    out = sess.run([model.output_name], {"pixels": pixels})[0]
    ref = model.run_native(model.to_native(pixels))
    np.testing.assert_allclose(out, ref, rtol=1e-3 if "dtype" in kw else 1e-5, atol=1e-3)


# ---- malformed declarations: specific one-line errors, nothing silently ignored ----------------
@pytest.mark.parametrize("manifest, match", [
    ([1, 2], "must hold a JSON object"),
    ({"preprocessing": "none", "input": "NCHW"}, "'input' must be a JSON object"),
    ({"preprocessing": "none", "output": []}, "'output' must be a JSON object"),
    ({"preprocessing": "none", "output": {"kind": "logit"}}, "manifest output kind must be one of"),
    ({"preprocessing": "none", "input": {"layout": "CHW"}}, "input layout must be 'NCHW' or 'NHWC'"),
    ({"preprocessing": [1, 2]}, "preprocessing must be 'imagenet', 'none' or an object"),
    ({"preprocessing": "imagnet"}, "got 'imagnet'"),
    ({"preprocessing": {"input_size": 8}}, "'input_size' must be \\[H, W\\]"),
    ({"preprocessing": {"input_size": [8, 8, 3]}}, "'input_size' must be \\[H, W\\]"),
    ({"preprocessing": {"input_size": ["a", "b"]}}, "'input_size' must be \\[H, W\\]"),
    ({"preprocessing": {"scale": "x"}}, "'scale' must be a number"),
    ({"preprocessing": {"scale": float("nan")}}, "must be finite"),
    ({"preprocessing": {"mean": "abc"}}, "invalid preprocessing"),
    ({"preprocessing": {"resize": "center_crop"}}, "'resize' 'center_crop' is not supported"),
    ({"preprocessing": {"layout": "CHW"}}, "'layout' must be 'NCHW' or 'NHWC'"),
    ({"preprocessing": "none", "labels": {"0": "a", "1": "b", "2": "c", "5": "d"}}, "integer keys 0..C-1"),
])
def test_malformed_manifest_is_a_specific_model_error(tmp_path, manifest, match):
    path = tm.save(tm.make_classifier(), tmp_path, "net")
    (tmp_path / "net.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=match):
        onnxplain.load_model(path)


def test_manifest_preprocessing_may_name_a_preset(tmp_path):
    path = tm.save(tm.make_classifier(), tmp_path, "net")
    (tmp_path / "net.json").write_text(json.dumps({"preprocessing": "imagenet"}))
    assert onnxplain.load_model(path).preprocessing == onnxplain.load_model(path, preprocessing="imagenet").preprocessing


def test_labels_file_that_is_a_folder_or_not_utf8(folder, tmp_path):
    with pytest.raises(LabelError, match="is not a file"):
        _load(folder, "lab_dir", labels=str(tmp_path))
    bad = tmp_path / "labels.txt"
    bad.write_bytes(b"\xff\xfe\x00a\nb\nc\nd\n")
    with pytest.raises(LabelError, match="not UTF-8"):
        _load(folder, "lab_utf", labels=str(bad))


def test_labels_mapping_keys_must_be_0_to_c_minus_1(folder):
    """{1..4} would otherwise shift every name by one class."""
    with pytest.raises(LabelError, match="integer keys 0..C-1"):
        _load(folder, "lab_map", labels={"1": "a", "2": "b", "3": "c", "4": "d"})
    model = _load(folder, "lab_map_ok", labels={"3": "d", "0": "a", "2": "c", "1": "b"})
    assert model.class_names == ["a", "b", "c", "d"]


def test_layout_declared_in_preprocessing_metadata_is_used(tmp_path):
    """A fully dynamic NHWC input [N, ?, ?, ?] has no axis of size 3: the declared layout decides."""
    proto = tm.make_classifier(layout="NHWC")
    for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]:
        d.dim_param = "d"
    onnx.helper.set_model_props(proto, {"onnxplain.preprocessing": json.dumps(
        {"preset": "none", "input_size": [8, 8], "layout": "NHWC"})})
    path = tm.save(proto, tmp_path, "dyn")
    model = onnxplain.load_model(path)
    assert model.layout == "NHWC"
    pixels = np.random.default_rng(3).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(model.scores_native(model.to_native(pixels)), tm.expected_logits(pixels),
                               rtol=1e-5, atol=1e-4)


def test_unknown_label_without_close_matches_says_what_is_expected(folder):
    model = _load(folder, "lab_expected", labels=["cat", "dog", "bird", "fish"])
    with pytest.raises(LabelError, match="Expected a class index 0..3 or one of the model's 4 class names"):
        model.label_index("zebra")
    with pytest.raises(LabelError, match="unknown label ''. Expected"):  # '' is in every name: no "matches"
        model.label_index("")


def _reshape_model(folder, name, target):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "shape"], ["out"])], name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array(target, np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnxplain.load_model(tm.save(model, folder, name), preprocessing=NONE)


def test_run_time_failures_are_model_errors_not_ort_tracebacks(folder):
    """A graph that loads but cannot run, or returns a row count unlike the batch, names the model and shapes."""
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ModelError, match=r"failed to run the model on input 'image' of shape \(1, 3, 8, 8\).*"
                                         r"cannot be reshaped"):
        _reshape_model(folder, "reshape_fail", [-1, 7]).classify(img)
    with pytest.raises(ModelError, match=r"has shape \(48, 4\) for a batch of 1 images"):
        _reshape_model(folder, "reshape_rows", [-1, 4]).classify(img)
