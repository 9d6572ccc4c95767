"""Every exported architecture's input gradient against torch autograd (the issue's verification list).

Oracle: torch float64 autograd on the same network (tests/data/zoo.py + the exported state
dicts). The engine runs the ONNX export (float32) in plain onnxruntime; maps must agree with
correlation >= 0.9999 (ReLU-family kinks make float32 vs float64 differ slightly), for a batch
of two images each with its own random seed over the output. The bundled EfficientNet-Lite0
is checked in test_engine.py; the static-batch-1 export runs one image.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
pytest.importorskip("torch")  # this module's oracles/zoo helpers import torch
import torch

from onnxplain.autodiff import GradientEngine
from tests.data import zoo

NAMES = list(zoo.NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_input_gradient_matches_torch(name):
    spec = zoo.SPECS[name]
    shape = zoo.batch_shape(name, 2)
    proto = onnx.load(zoo.onnx_path(name))
    input_shape = None
    if spec.dynamic_hw:  # run-time "same" padding: pin H, W for folding
        input_shape = {proto.graph.input[0].name: ["N", *shape[1:]]}  # pin H, W; keep the batch free
    engine = GradientEngine(proto, input_shape=input_shape)
    rng = np.random.default_rng(sum(map(ord, name)))
    x = rng.standard_normal(shape).astype(np.float32)
    net = zoo.load(name).double()
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    out = net(xt)
    seed = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    (out * torch.from_numpy(seed.astype(np.float64))).sum().backward()
    expected = xt.grad.numpy()
    got = engine.run(x, seed, wrt=[engine.input_name])[f"grad:{engine.input_name}"]
    assert got.shape == expected.shape
    for i in range(shape[0]):
        corr = np.corrcoef(got[i].ravel(), expected[i].ravel())[0, 1]
        assert corr >= 0.9999, f"{name} image {i}: correlation {corr:.6f}"
    rel = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert rel < 1e-3, f"{name}: relative L2 error {rel:.2e}"
