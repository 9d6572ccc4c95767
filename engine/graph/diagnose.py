"""Diagnostics of graphs onnxruntime runs: its C++ log captured, declared shapes checked at run time.

Used by graph preparation (a failing prepared graph names its first wrongly declared shape)
and by the gradient engine's build-time guard (onnxruntime's buffer-reuse shape warnings);
a module of its own so that :mod:`.prepare` and :mod:`.check` both use it without importing
each other.
"""
from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Sequence

import numpy as np
from onnx import ModelProto, helper

from . import _util as U
from ..runtime import make_session

# ----------------------------------------------------------------- build-time guard
ORT_SHAPE_MISMATCH = "Shape mismatch attempting to re-use buffer"


class OrtLog:
    """Lines onnxruntime wrote to stderr while :func:`capture_ort_log` was active."""

    def __init__(self):
        self.lines: list[str] = []

    def mismatches(self) -> list[str]:
        return [ln for ln in self.lines if ORT_SHAPE_MISMATCH in ln]


@contextmanager
def capture_ort_log():
    """Capture onnxruntime's C++ log (written to file descriptor 2) for inspection.

    onnxruntime has no Python logging hook; its warnings go to stderr. The descriptor is
    redirected to a temporary file for the duration; afterwards every captured line that
    is not an onnxruntime warning is written back to stderr, so nothing else is lost.
    Sessions must be created with ``log_severity_level <= 1`` for warnings to appear.
    """
    result = OrtLog()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield result
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            result.lines = text.splitlines()
            rest = [ln for ln in result.lines if ":onnxruntime:" not in ln]
            if rest:
                sys.stderr.write("\n".join(rest) + "\n")


def declared_shape_errors(model: ModelProto, batches: Sequence[int] = (1, 3),
                          limit: int = 5) -> list[str]:
    """Tensors whose declared value_info shape differs from the shape at run time.

    Runs the model (graph optimisations off, every declared tensor exposed) on random
    inputs at each batch size; ``N`` must equal the batch, ints must match, unnamed dims
    are free. Returns up to ``limit`` messages naming tensor and producing node, in
    topological order. Costs one run holding every declared tensor: a diagnostic, not a
    hot path.
    """
    m = U.copy_model(model)
    declared = {v.name: U.value_info_shape(v) for v in list(m.graph.value_info) + list(m.graph.output)
                if U.value_info_shape(v) is not None}
    del m.graph.value_info[:]
    have = {o.name for o in m.graph.output}
    order = [o for n in U.topo_sort(m.graph) for o in n.output if o in declared]
    producer = {o: n for n in m.graph.node for o in n.output}
    for name in order:
        if name not in have:
            m.graph.output.append(helper.make_empty_tensor_value_info(name))
    sess = make_session(m, "cpu", optimization="none", log_severity=3)
    rng = np.random.default_rng(0)
    errors: list[str] = []
    for b in batches:
        feeds = {}
        for i in sess.get_inputs():
            dims = [b if not isinstance(d, int) else d for d in i.shape]
            feeds[i.name] = rng.standard_normal(dims).astype(
                {"tensor(float)": np.float32, "tensor(double)": np.float64,
                 "tensor(float16)": np.float16}.get(i.type, np.float32))
        values = dict(zip(order, sess.run(order, feeds)))
        for name in order:
            want, got = declared[name], np.shape(values[name])
            ok = len(want) == len(got) and all(
                d is None or (d == "N" and g == b) or (isinstance(d, str) and d != "N") or d == g
                for d, g in zip(want, got))
            if not ok:
                n = producer[name]
                errors.append(f"tensor {name!r} (output of node {n.name!r} ({n.op_type})) is "
                              f"declared {list(want)} but is {list(got)} at batch {b}")
                if len(errors) >= limit:
                    return errors
    return errors
