"""The session factory (onnxplain.runtime): providers, threads, precision, and the record of
which provider ran which graph. Oracles: ONNX Runtime's own account of each session (its
session options, get_providers(), the graph-assignment record) and the CPU provider's outputs
for the OpenVINO comparison."""
from __future__ import annotations

import pathlib

import numpy as np
import onnxruntime as ort
import pytest

import onnxplain
from onnxplain import runtime
from onnxplain.errors import OptionError
from onnxplain.cli import main

RECT = pathlib.Path(__file__).parent / "data" / "rectangle"
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.parametrize("name, want", [("cpu", "cpu"), ("CPU", "cpu"), ("gpu", "cuda"), ("cuda", "cuda"),
                                        ("auto", "auto"), ("openvino", "openvino"),
                                        ("OpenVINOExecutionProvider", "openvino"),
                                        ("DmlExecutionProvider", "DmlExecutionProvider")])
def test_provider_names(name, want):
    assert runtime.check_provider(name) == want


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(provider="tpu"), OptionError, "'provider' parameter must be 'auto'"),
    (dict(threads=0), OptionError, "'threads' parameter must be >= 1"),
    (dict(threads=1.5), TypeError, "'threads' parameter must be a positive integer"),
    (dict(precision="bf16"), OptionError, "'precision' parameter"),
    (dict(provider="cpu", execution_environment="gpu"), OptionError, "not both"),
    (dict(provider="NoSuchExecutionProvider"), onnxplain.EnvironmentUnavailableError, "offers"),
])
def test_bad_runtime_options(kwargs, err, match):
    with pytest.raises(err, match=match):
        onnxplain.load_model(**kwargs)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA; the refusal cannot be exercised")
@pytest.mark.parametrize("provider", ["cuda", "gpu", "tensorrt"])
def test_gpu_request_without_gpu_is_refused_not_downgraded(provider):
    with pytest.raises(onnxplain.EnvironmentUnavailableError, match="onnxruntime-gpu"):
        onnxplain.load_model(provider=provider)


def test_threads_reach_every_session_and_results_record_the_providers():
    """Model, tapped (Score-CAM) and gradient sessions all carry the thread count (ORT's own
    session options say so), and each result lists every graph with ORT's node placement."""
    model = onnxplain.load_model(RECT / "rectangle_cnn.onnx", preprocessing="none",
                                 labels=["no_rectangle", "rectangle"], provider="cpu", threads=2)
    image = np.load(RECT / "samples.npz")["images"][0]
    grad = onnxplain.METHODS["gradcam"](model, image, 1)
    onnxplain.METHODS["score-cam"](model, image, 1)
    sessions = [model.session]
    sessions += [s for engine in model._engines.values() for s in engine._sessions.values()]
    from onnxplain.methods.layers import _TAPPED

    sessions += list(_TAPPED[model].values())
    assert len(sessions) >= 3
    for s in sessions:
        assert s.get_session_options().intra_op_num_threads == 2
        assert s.get_providers() == ["CPUExecutionProvider"]
    record = model.runtime()
    assert record["provider"] == "cpu" and record["threads"] == 2 and record["precision"] == "f32"
    assert {"model", "tapped graph", "gradient graph (standard)"} <= set(record["graphs"])
    for graph, placed in record["graphs"].items():
        assert set(placed) == {"CPUExecutionProvider"} and min(placed.values()) > 0, graph
    # the model graph: one assigned node per node ORT kept after optimisation
    report = runtime.session_report(model.session)
    assert report["nodes"]["CPUExecutionProvider"] == len(model.session.get_provider_graph_assignment_info())
    # each result lists the graphs that call ran (params["runtime"]), with the model-wide record's placement
    assert set(grad.params["runtime"]["graphs"]) <= set(record["graphs"])
    for graph, placed in grad.params["runtime"]["graphs"].items():
        assert placed == record["graphs"][graph]


def test_each_result_records_the_graphs_it_ran_not_every_graph_the_model_ran():
    """Oracle: known by construction. Occlusion runs only the model graph; after Grad-CAM built its
    gradient graph, occlusion's record must not list it (it once grew with every graph the model had
    ever run), while Grad-CAM's and guided Grad-CAM's (both halves) list their gradient graphs."""
    model = onnxplain.load_model(RECT / "rectangle_cnn.onnx", preprocessing="none",
                                 labels=["no_rectangle", "rectangle"], provider="cpu", threads=2)
    image = np.load(RECT / "samples.npz")["images"][0]
    occ0 = onnxplain.METHODS["occlusion"](model, image, 1, preset="quick")
    grad = onnxplain.METHODS["gradcam"](model, image, 1)
    guided = onnxplain.METHODS["guided-gradcam"](model, image, 1)
    occ = onnxplain.METHODS["occlusion"](model, image, 1, preset="quick")
    every = model.runtime()["graphs"]
    assert {"model", "gradient graph (standard)", "gradient graph (guided)"} <= set(every)
    assert set(occ0.params["runtime"]["graphs"]) == set(occ.params["runtime"]["graphs"]) == {"model"}
    assert "gradient graph (standard)" in grad.params["runtime"]["graphs"]
    assert "gradient graph (guided)" not in grad.params["runtime"]["graphs"]
    assert {"gradient graph (standard)", "gradient graph (guided)"} <= set(guided.params["runtime"]["graphs"])
    for r in (occ, grad, guided):
        for graph, placed in r.params["runtime"]["graphs"].items():
            assert placed == every[graph] and set(placed) == {"CPUExecutionProvider"}


def test_release_memory_drops_old_gradient_sessions_and_methods_still_agree():
    """Model.release_memory keeps the most recently used gradient sessions, shrinks the shared arena and
    trims the heap; a dropped session is rebuilt on demand. Oracle: the same call before the release
    (the maps are deterministic), and the count of sessions the engine holds."""
    model = onnxplain.load_model(RECT / "rectangle_cnn.onnx", preprocessing="none",
                                 labels=["no_rectangle", "rectangle"], provider="cpu", threads=2)
    image = np.load(RECT / "samples.npz")["images"][0]
    before = {m: onnxplain.METHODS[m](model, image, 1) for m in ("gradient", "guided-backprop", "zeiler-fergus")}
    engine = next(iter(model._engines.values()))
    grads = lambda: [k for k in engine._sessions if k[0] == "grad"]  # noqa: E731
    assert len(grads()) == 3
    last = grads()[-1]
    model.release_memory(keep_gradient_sessions=1)
    assert grads() == [last]  # the deconvnet graph, used last
    for m, ref in before.items():
        np.testing.assert_array_equal(onnxplain.METHODS[m](model, image, 1).score_map, ref.score_map)
    model.release_memory(keep_gradient_sessions=0)
    assert grads() == []
    mem = runtime.process_memory()
    assert mem["peak_rss_mib"] >= mem["rss_mib"] > 0


def test_cli_runtime_flags(tmp_path, capsys):
    assert main(["classify", "--provider", "cpu", "--threads", "2"]) == 0
    assert "Egyptian cat" in capsys.readouterr().out
    assert main(["classify", "--provider", "cpu", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--provider or its older spelling --device" in err and len(err.splitlines()) == 1
    if not HAS_CUDA:
        assert main(["classify", "--provider", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert "onnxruntime-gpu" in err and len(err.splitlines()) == 1


# ---- OpenVINO (the onnxruntime-openvino build, or the onnxruntime-ep-openvino plugin) ---------
def _openvino_usable() -> bool:
    try:
        runtime.make_session(str(onnxplain.model.BUNDLED_MODEL), "openvino")
    except onnxplain.EnvironmentUnavailableError:
        return False
    return True


def test_openvino_is_used_or_refused_never_replaced():
    """With the plugin installed, --provider openvino either runs on OpenVINO or is an error
    that says why (on hardware the plugin offers no device for); never a CPU session."""
    pytest.importorskip("onnxruntime_ep_openvino")
    if _openvino_usable():
        pytest.skip("OpenVINO offers a device here: test_openvino_matches_cpu_in_f32 covers it")
    with pytest.raises(onnxplain.EnvironmentUnavailableError, match="offers no device on this machine"):
        onnxplain.load_model(provider="openvino", threads=2)


def test_openvino_matches_cpu_in_f32(tmp_path):
    """Oracle: ORT's CPU provider. In f32 the two agree to 1e-4 in probability (measured where
    OpenVINO runs: bf16 moves them by up to ~3e-2, which is why f32 is the default), and the
    gradient maps agree too: the gradient graphs run on OpenVINO with comparison masks
    (its CPU device gets the 2**100 HardSigmoid masks wrong; the build-time guard caught it).
    Runs wherever OpenVINO runs: the onnxruntime-openvino build (verified on the AMD EPYC VM,
    onnxruntime-openvino 1.24.1) or the plugin on Intel hardware."""
    if not _openvino_usable():
        pytest.skip("OpenVINO does not run here (neither onnxruntime-openvino nor a plugin device)")
    ov = onnxplain.load_model(provider="openvino", threads=2)
    cpu = onnxplain.load_model(provider="cpu", threads=2)
    assert ov.session.get_providers()[0] == "OpenVINOExecutionProvider"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 224, 224, 3)).astype(np.uint8)
    np.testing.assert_allclose(ov.predict(images), cpu.predict(images), atol=1e-4)
    placed = ov.runtime()["graphs"]["model"]
    assert "OpenVINOExecutionProvider" in placed
    for method in ("gradient", "gradcam"):
        a = onnxplain.METHODS[method](ov, images[0], 285, preset="quick")
        b = onnxplain.METHODS[method](cpu, images[0], 285, preset="quick")
        scale = np.abs(b.score_map).max()
        np.testing.assert_allclose(a.score_map, b.score_map, rtol=0, atol=2e-3 * scale)
        assert any("OpenVINOExecutionProvider" in nodes for nodes in a.params["runtime"]["graphs"].values())
    assert main(["explain", "--provider", "openvino", "--threads", "2", "--methods", "occlusion", "gradient",
                 "--out", str(tmp_path), "--no-progress"]) == 0


def _matmul_model(w: np.ndarray, bias: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w.shape[1]])],
                          [numpy_helper.from_array(w, "W"), numpy_helper.from_array(bias, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_large_weights_are_shared_between_sessions_and_compared_in_full():
    """Sessions of protos with byte-identical large initializers share one OrtValue; a weight
    that differs in its last byte under the same name gets its own. Oracle: a plain
    onnxruntime session of the serialized proto (weights inline), and numpy."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 128)).astype(np.float32)            # 128 KB: shared
    bias = rng.standard_normal(128).astype(np.float32)                 # 512 B: stays inline
    x = rng.standard_normal((3, 256)).astype(np.float32)
    model = _matmul_model(w, bias)
    assert w.nbytes >= runtime.SHARED_WEIGHT_BYTES > bias.nbytes
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = runtime.make_session(model, "cpu")
    b = runtime.make_session(_matmul_model(w.copy(), bias), "cpu")   # a different proto, same bytes
    w2 = w.copy()
    w2[-1, -1] = np.nextafter(w2[-1, -1], np.float32(np.inf))
    c = runtime.make_session(_matmul_model(w2, bias), "cpu")
    assert [x_.raw for x_ in a._onnxplain_weights] == [w.tobytes()]
    assert a._onnxplain_weights[0] is b._onnxplain_weights[0]
    assert c._onnxplain_weights[0] is not a._onnxplain_weights[0]
    want = plain.run(None, {"x": x})[0]
    np.testing.assert_array_equal(a.run(None, {"x": x})[0], want)
    np.testing.assert_array_equal(b.run(None, {"x": x})[0], want)
    np.testing.assert_allclose(c.run(None, {"x": x})[0], x @ w2 + bias, rtol=1e-5, atol=1e-5)
    del a, b, c
    import gc

    gc.collect()
    assert not any(key[0] == "W" and key[2] == (256, 128) for key in runtime._WEIGHTS)  # nothing kept alive


def test_sessions_do_not_spin_unless_asked():
    """ORT's spinning workers of idle sessions took the cores from the running one (module
    notes); a config entry still overrides. Oracle: ORT's own session config."""
    model = _matmul_model(np.ones((4, 2), np.float32), np.zeros(2, np.float32))
    assert runtime.make_session(model).get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning") == "0"
    s = runtime.make_session(model, config={"session.intra_op.allow_spinning": "1"})
    assert s.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
