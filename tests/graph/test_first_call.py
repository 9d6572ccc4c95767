"""The first gradient call's shared runs (ViT-B/16's first call, issue 12) keep every check.

Preparation's shape probe fetches the original model's outputs on the verification's inputs,
the verification runs the prepared model in the gradient engine's forward session, and the
build-time guard reuses those outputs. Each shortcut must still catch what the check it
replaces catches.

Oracles: onnxruntime running the original model on its own (a session of the untouched
proto); torch float64 autograd for the gradient.
"""
from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from onnxplain.autodiff import GradientEngine
from onnxplain.graph import GraphError, prepare_model
from onnxplain.graph import prepare as prepare_mod
from onnxplain.graph import reverse as reverse_mod


class DeepFlatten(nn.Module):
    """A conv stack flattened with ``x.reshape(x.shape[0], -1)``: the classic exporter reads
    the last feature map's Shape, so the fold's shape probe runs most of the graph."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(*[m for c in range(5) for m in (nn.Conv2d(3 if c == 0 else 6, 6, 3, padding=1),
                                                                   nn.Tanh())])
        self.head = nn.Linear(6 * 8 * 8, 4)

    def forward(self, x):
        f = self.convs(x)
        return self.head(f.reshape(f.shape[0], -1))


@pytest.fixture(scope="module")
def deep():
    torch.manual_seed(0)
    net = DeepFlatten().eval()
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), buf, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    model = onnx.load_from_string(buf.getvalue())
    assert any(n.op_type == "Shape" for n in model.graph.node)
    return net, model


def _spy_sessions(monkeypatch):
    """Record every model verification opens a session of."""
    opened = []
    real = prepare_mod._session

    def spy(m):
        opened.append(m)
        return real(m)
    monkeypatch.setattr(prepare_mod, "_session", spy)
    return opened


def test_the_probe_gives_the_verification_the_originals_outputs(deep, monkeypatch):
    """No session of the original is opened; the outputs it was compared with are the
    original's (oracle: the untouched proto in onnxruntime on the same feeds)."""
    _, model = deep
    opened = _spy_sessions(monkeypatch)
    verified: dict = {}
    prepared = prepare_model(model, verified=verified)
    assert not any(m is model for m in opened)
    x = verified["feeds"]["x"]
    assert x.shape == (2, 3, 8, 8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(["y"], {"x": x})[0]
    np.testing.assert_allclose(verified["outputs"]["y"], want, rtol=1e-5, atol=1e-6)
    assert prepared.graph.output[0].name == "y"


def test_a_corrupted_fold_is_refused_on_the_shared_path(deep, monkeypatch):
    """A weight changed by 1 % after folding fails the verification that compares with the
    probe's outputs of the original (the path without a session of the original)."""
    _, model = deep
    opened = _spy_sessions(monkeypatch)
    real = prepare_mod._ort_basic

    def corrupt(m, keep):
        out = real(m, keep)
        t = next(t for t in out.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4)
        t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) * np.float32(1.01), t.name))
        return out

    monkeypatch.setattr(prepare_mod, "_ort_basic", corrupt)
    with pytest.raises(GraphError, match="original vs prepared at batch 2.*differs by max"):
        prepare_model(model)
    assert not any(m is model for m in opened)
    with pytest.raises(GraphError, match="differs by max"):  # and through the engine
        GradientEngine(model)


def test_the_engine_verifies_in_its_forward_session_and_the_guard_reuses_the_outputs(deep):
    """One forward session serves the verification, the guard and later forward calls; the
    gradient is right (oracle: torch float64 autograd)."""
    net, model = deep
    engine = GradientEngine(model)
    assert list(engine._sessions) == [("forward",)]
    assert engine._verified is not None and engine._verified[0].shape == (2, 3, 8, 8)
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    seed = np.random.default_rng(4).standard_normal((2, 4)).astype(np.float32)
    got = engine.run(x, seed)["grad:x"]
    assert sum(k[0] == "forward" for k in engine._sessions) == 1
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    (net.double()(xt) * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    net.float()
    want = xt.grad.numpy()
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


def test_the_guard_still_compares_forward_outputs_with_reused_outputs(deep, monkeypatch):
    """A gradient graph whose forward pass is off (a conv weight scaled by 1.01 in the built
    graph) is refused by the guard's forward comparison, which now reads the verification's
    outputs instead of running the prepared model again."""
    _, model = deep
    real = reverse_mod.build_gradient_model

    def off(m, **kw):
        gm = real(m, **kw)
        t = next(t for t in gm.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4)
        t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) * np.float32(1.01), t.name))
        return gm

    import onnxplain.autodiff as autodiff_mod

    monkeypatch.setattr(autodiff_mod, "build_gradient_model", off)
    engine = GradientEngine(model)
    assert engine._verified is not None
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with pytest.raises(GraphError, match="forward output 'y' differs from the model's"):
        engine.run(x, None)


def test_ort_pass_falls_back_to_disk_when_the_ram_dir_fails(deep, monkeypatch):
    """ORT's optimised graph goes through /dev/shm; a failure there (a container's 64 MB
    /dev/shm full) is retried in the default temporary folder, not reported as a bad model.
    Oracle: the prepared model equals the one prepared without the failure (same nodes and
    outputs on the same input)."""
    import os
    import tempfile

    _, model = deep
    want = prepare_model(model)
    real = prepare_mod.make_session
    paths = []

    def full(*args, **kwargs):
        path = kwargs.get("optimized_model_path")
        if path is not None:
            paths.append(path)
            if len(paths) == 1:
                raise RuntimeError("No space left on device")
        return real(*args, **kwargs)

    tmp = tempfile.mkdtemp()
    monkeypatch.setattr(prepare_mod, "_RAM_DIR", tmp)
    monkeypatch.setattr(prepare_mod, "make_session", full)
    got = prepare_model(model)
    assert [os.path.dirname(p) for p in paths] == [tmp, tempfile.gettempdir()]
    assert [n.op_type for n in got.graph.node] == [n.op_type for n in want.graph.node]
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for m in (want, got)]
    np.testing.assert_array_equal(run[0], run[1])
    os.rmdir(tmp)
