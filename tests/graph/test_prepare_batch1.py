"""prepare_model on graphs exported with a static batch of 1: Reshape shapes [1, ...] become [0, ...]."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxplain.graph import fixed_batch, prepare_model
from onnxplain.graph import prepare as prep

from graph_helpers import session


def _chain(reshapes: int, batch=1) -> onnx.ModelProto:
    """x [1, 4, 6] through ``reshapes`` Reshapes alternating [1, 24] / [1, 4, 6] (each one's batch
    is only visible once the one before copies it), then Tanh."""
    nodes, inits, cur = [], [], "x"
    for k in range(reshapes):
        shape = [1, 24] if k % 2 == 0 else [1, 4, 6]
        inits.append(numpy_helper.from_array(np.array(shape, np.int64), f"s{k}"))
        nodes.append(helper.make_node("Reshape", [cur, f"s{k}"], [f"r{k}"], name=f"reshape_{k}"))
        cur = f"r{k}"
    nodes.append(helper.make_node("Tanh", [cur], ["y"]))
    out_shape = [1, 24] if reshapes % 2 else [1, 4, 6]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_every_batch1_reshape_is_debatched_beyond_64():
    """Oracle: the rewritten graph run at batch 3 equals three batch-1 runs of the original (by hand:
    a Reshape chain is the identity on each sample's values). The rewrite loop once stopped silently
    after 64 rewrites, leaving the rest at batch 1 (the model then stayed batch 1)."""
    model = _chain(71)
    debatched = prep._debatch_reshapes(_chain(71, batch="N"))       # the input as prepare_model pins it
    firsts = [int(numpy_helper.to_array(i)[0]) for i in debatched.graph.initializer]
    assert len(firsts) == 71 and set(firsts) == {0}
    prepared = prepare_model(model)
    assert fixed_batch(prepared) is None
    x = np.random.default_rng(0).standard_normal((3, 4, 6)).astype(np.float32)
    got = session(prepared).run(None, {prepared.graph.input[0].name: x})[0]
    np.testing.assert_allclose(got, np.tanh(x.reshape(3, 24)), rtol=1e-6)


def test_debatch_rematch_is_an_error_naming_the_node(monkeypatch):
    """A Reshape matched again after its rewrite (constant_value made to ignore the rewrite) is an
    error naming it, not an endless loop or a silent stop."""
    real = prep.U.constant_value
    monkeypatch.setattr(prep.U, "constant_value", lambda g, name: real(g, name.split("__batch0_")[0]))
    with pytest.raises(prep.GraphError, match=r"reshape_0.*Reshape.*already rewritten"):
        prep._debatch_reshapes(_chain(3, batch="N"))
