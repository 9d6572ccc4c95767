"""Never silently wrong: declared shapes are proven, onnxruntime's buffer-reuse warnings are
failures, and the build-time guard turns a wrong gradient graph into an error.

Oracles: torch float64 autograd on the same network; the shapes onnxruntime actually
produces (every declared tensor exposed and compared); onnxruntime's own warning log.
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
from onnxplain.graph import GraphError, build_gradient_model, prepare_model
from onnxplain.graph import prepare as prepare_mod
from onnxplain.graph.check import capture_ort_log, declared_shape_errors


class TokensFoldedIntoBatch(nn.Module):
    """LeViT's pattern: [B, T, C] tokens flattened to [B*T, C] for a BatchNorm1d, a
    Linear on the folded rows, then viewed back; plus heads folded into dim 0."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.bn = nn.BatchNorm1d(8)
        self.lin = nn.Linear(8, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)            # [B, 16, 8]
        b, n, c = t.shape
        t = self.bn(t.flatten(0, 1)).reshape(b, n, c)            # [B*16, 8]
        q = self.lin(t).reshape(b, n, 2, 8).transpose(1, 2)      # [B, 2, 16, 8]
        a = torch.softmax(q @ q.transpose(-1, -2) / 8 ** 0.5, -1)
        o = (a @ q).reshape(b * 2, n, 8)                         # heads folded into dim 0
        o = torch.nn.functional.hardswish(o).reshape(b, 2, n, 8).transpose(1, 2).reshape(b, n, 16)
        return self.head(o.mean(1))


@pytest.fixture(scope="module")
def folded():
    torch.manual_seed(0)
    net = TokensFoldedIntoBatch().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), buf, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return net, onnx.load_from_string(buf.getvalue())


def test_declared_shapes_are_the_runtime_shapes(folded):
    """Every value_info of the prepared and the gradient graph matches what onnxruntime
    computes at batch 1 and 3 (dims that are N * tokens must not be written 'N')."""
    _, proto = folded
    prepared = prepare_model(proto)
    assert declared_shape_errors(prepared, batches=(1, 3)) == []
    assert declared_shape_errors(build_gradient_model(prepared), batches=(1, 3)) == []


def test_no_buffer_reuse_warnings_and_gradient_matches_torch(folded):
    """onnxruntime's log at warning level has no 'Shape mismatch' while the gradient graph
    runs at batch 4; the gradient equals torch float64 autograd."""
    net, proto = folded
    gm = build_gradient_model(prepare_model(proto))
    so = ort.SessionOptions()
    so.log_severity_level = 1
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    seed = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    with capture_ort_log() as log:
        sess = ort.InferenceSession(gm.SerializeToString(), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        got = dict(zip(names, sess.run(None, {"x": x, "seed": seed})))
    assert log.mismatches() == []
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    (net.double()(xt) * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    net.float()
    want = xt.grad.numpy()
    assert np.linalg.norm(got["grad:x"] - want) / np.linalg.norm(want) < 1e-4


def test_guard_refuses_a_wrongly_declared_graph(folded, monkeypatch):
    """The pre-fix declaration (every batch-dependent dim 0 written 'N') is caught at build
    time with the first wrongly declared tensor named, before any map is computed."""
    _, proto = folded
    monkeypatch.setattr(prepare_mod, "_batch_aware", lambda dims, exact: [
        "N" if (d is None and k == 0) else d for k, d in enumerate(dims)])
    with pytest.raises(GraphError, match=r"declared \['N', 8\] but is \[\d+, 8\] at batch"):
        GradientEngine(proto)
    # the gradient-graph guard, given the wrong declarations without preparation's check
    prepared = prepare_model(proto, verify=False)
    engine = GradientEngine(prepared, prepare=False)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with pytest.raises(GraphError, match=r"declared \['N', 8\] but is \[32, 8\] at batch 2"):
        engine.run(x, None)


def test_guard_passes_and_costs_one_check_per_graph(folded):
    """The guard runs once per gradient graph (the second call reuses the session)."""
    net, proto = folded
    engine = GradientEngine(proto)
    x = np.random.default_rng(2).standard_normal((3, 3, 16, 16)).astype(np.float32)
    a = engine.run(x, None)["grad:x"]
    b = engine.run(x, None)["grad:x"]
    np.testing.assert_array_equal(a, b)
    assert sum(k[0] == "grad" for k in engine._sessions) == 1


class TinyMhaViT(nn.Module):
    """A ViT block on nn.MultiheadAttention (the classic exporter writes its in-projection
    as a Gemm on [tokens * batch, C] rows: Grad-CAM's layer probe crashed in onnxruntime
    with 'Gemm /blk/self_attn/Gemm: {1,32} != {65,32}')."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 32, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 32) * 0.1)
        self.blk = nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, batch_first=False)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        t = self.embed(x).flatten(2).permute(2, 0, 1)                 # [T, B, C]
        t = torch.cat([self.cls.expand(1, t.shape[1], -1), t], 0)   # [T + 1, B, C]
        return self.head(self.blk(t)[0])


def test_multihead_attention_vit_gradient_and_grad_cam_probe(tmp_path):
    """Oracle: torch float64 autograd; Grad-CAM's automatic layer probe runs (it crashed)."""
    import onnxplain

    torch.manual_seed(0)
    net = TinyMhaViT().eval()
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), buf, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    proto = onnx.load_from_string(buf.getvalue())
    prepared = prepare_model(proto)
    assert declared_shape_errors(build_gradient_model(prepared), batches=(1, 3)) == []
    engine = GradientEngine(proto)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    seed = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    got = engine.run(x, seed)["grad:x"]
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    (net.double()(xt) * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    want = xt.grad.numpy()
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
    path = tmp_path / "mha_vit.onnx"
    onnx.save(proto, path)
    model = onnxplain.load_model(str(path), preprocessing="none")
    img = np.random.default_rng(2).standard_normal((32, 32, 3)).astype(np.float32)
    ex = onnxplain.grad_cam(model, img, label=1)
    assert np.all(np.isfinite(np.asarray(ex.score_map)))


def test_guard_directional_check_catches_a_wrong_rule(monkeypatch):
    """A rule that is off (here Tanh's derivative doubled) on a smooth model is refused at
    build time by the directional-derivative check. Oracle: central finite differences."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxplain.graph.rules import RULES, Rule

    rng = np.random.default_rng(0)
    W = (rng.standard_normal((12, 5)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["m"]),
             helper.make_node("Tanh", ["m"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                          [numpy_helper.from_array(W, "W")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    GradientEngine(model).run(x, None)  # the true rule passes
    good = RULES["Tanh"]

    def doubled(b, node, gy):
        return [b.mul(good.fn(b, node, gy)[0], b.const(2.0))]
    monkeypatch.setitem(RULES, "Tanh", Rule("Tanh", doubled, good.grads, good.const))
    with pytest.raises(GraphError, match="directional derivative"):
        GradientEngine(model).run(x, None)


@pytest.mark.parametrize("level", [100.0, 0.0])  # p(class 1) = 0.5, and saturated at 4.5e-5
def test_guard_accepts_a_saturated_softmax_and_the_gradient_is_the_hand_derived_one(tmp_path, level):
    """The guard's finite differences cannot resolve a saturated Softmax in float32 (1 - p does
    not move); it must skip that check, not refuse a right graph. Oracle, by hand:
    p1 = sigmoid(2 (m / 20 - 5)) with m the mean of the top-left 8 x 8 quadrant over 3
    channels, so dp1/dx = p1 (1 - p1) * 2 / 20 / (3 * 64) inside the quadrant, 0 outside."""
    import onnxplain
    from tests.quality.conftest import quadrant_model

    onnx.save(quadrant_model(), str(tmp_path / "quadrant.onnx"))
    model = onnxplain.load_model(tmp_path / "quadrant.onnx", preprocessing="none")
    image = np.full((16, 16, 3), level, np.float32)
    res = onnxplain.gradient_attribution(model, image, 1, method="gradient")
    p1 = 1.0 / (1.0 + np.exp(-2.0 * (level / 20.0 - 5.0)))
    want = np.zeros((16, 16, 3))
    want[:8, :8, :] = p1 * (1.0 - p1) * 2.0 / 20.0 / (3 * 64)
    np.testing.assert_allclose(res.gradients, want, rtol=1e-3, atol=1e-12)


def test_runtime_shapes_from_the_pruned_graph_are_the_full_graphs(folded):
    """Run-time shape probes run only the nodes the names depend on, in one session for both
    batch sizes. Oracle: onnxruntime running the whole graph with every tensor exposed."""
    from onnxplain.graph import _util as U
    from onnxplain.graph import tap_model

    _, proto = folded
    names = [o for n in proto.graph.node for o in n.output if o and n.op_type != "Constant"]
    got = U.runtime_shapes_at(proto, names, (2, 3))
    sess = ort.InferenceSession(tap_model(proto, names).SerializeToString(), providers=["CPUExecutionProvider"])
    for k, batch in enumerate((2, 3)):
        x = np.zeros((batch, 3, 16, 16), np.float32)
        want = {n: v.shape for n, v in zip(names, sess.run(names, {"x": x}))}
        assert {n: s for n, (s, _) in got[k].items()} == want
    early = next(n for n in names if "embed" in n)
    sub = U.ancestors(proto, [early])
    assert 0 < len(sub.graph.node) < len(proto.graph.node) / 4
    assert [o.name for o in sub.graph.output] == [early]
