"""Helpers for the graph-rewrite tests: tiny inline ONNX models, torch oracles."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxplain.graph import build_gradient_model, prepare_model
from onnxplain.graph.reverse import SEED


def make_model(nodes, x_shape, out_name="y", inits=None, opset=17, x_name="x"):
    """One-input float32 model; x_shape[0] may be 'N'."""
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def onnx_grad(model, x, seed_rng=1, **kw):
    """(output, seed, grad of sum(seed * output) wrt x) from the gradient graph."""
    prepared = prepare_model(model)
    gm = build_gradient_model(prepared, **kw)
    sess = session(gm)
    y = session(prepared).run(None, {"x": x})[0]
    seed = np.random.default_rng(seed_rng).standard_normal(y.shape).astype(np.float32)
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x, SEED: seed})))
    return out, seed, gm


def torch_grad(fn, x, seed):
    """Oracle: torch autograd in float64."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = fn(xt)
    (y * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy()


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


def t(value):
    return torch.tensor(np.asarray(value), dtype=torch.float64)
