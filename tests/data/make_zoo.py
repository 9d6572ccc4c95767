"""Build and export the tiny reference networks of ``zoo.py``.

Regenerate (from the repository root, CPU only, ~20 s):

    python -m tests.data.make_zoo            # all models
    python -m tests.data.make_zoo resnet vit # a subset (manifest entries of the others are kept)

Writes, for every name in ``zoo.SPECS``:

    tests/data/zoo/<name>.onnx   opset 17, input "input", output "output"
    tests/data/zoo/<name>.pt     the exported state_dict (``zoo.load(name)`` reloads it)
    tests/data/zoo/manifest.json name -> input shape, layout, output kind, ORT-vs-torch
                                 max abs diff, sizes, op-type counts, sha256

Export uses the legacy TorchScript exporter, ``torch.onnx.export(..., dynamo=False)``:
it gives a stable, well-known op set (Conv+BN folded, Flatten/Gemm, HardSwish,
decomposed LRN with an If, Erf-based GELU, ...) and keeps run-time shape
arithmetic (Shape/Gather/...) in the graph where the module computes with
``x.shape`` (tfsame, vit), which is what these fixtures are meant to exercise.
The dynamo exporter would specialise / re-decompose these differently from one
torch release to the next.  Every model has a dynamic batch axis "N" except
``static1`` (batch fixed to 1); ``tfsame`` also has dynamic "H" and "W".

Each export is checked: ONNX checker, then ONNX Runtime (CPU) vs torch on a
random batch of 2 (recorded), 1 and 3 (static1: 1 only), tfsame also at 33x33
and 31x45; the script fails if any max abs diff >= 1e-4.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.data import zoo  # noqa: E402

OPSET = 17
TOL = 1e-4


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def op_counts(model: onnx.ModelProto) -> dict:
    """Op types of the main graph and of any subgraph (If branches)."""
    counts: collections.Counter = collections.Counter()

    def walk(graph):
        for node in graph.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return dict(sorted(counts.items()))


def export(name: str) -> dict:
    spec = zoo.SPECS[name]
    model = spec.builder().eval()
    onnx_file, pt_file = zoo.onnx_path(name), zoo.pt_path(name)
    torch.save(model.state_dict(), pt_file)

    # reload through the public path so what we check is what the tests see
    model = zoo.load(name)
    example = torch.randn(zoo.batch_shape(name, 1), generator=torch.Generator().manual_seed(0))
    dynamic_axes = None
    if spec.dynamic_batch:
        in_axes = {0: "N"}
        out_axes = {0: "N"}
        if spec.dynamic_hw:
            h, w = (1, 2) if spec.layout == "NHWC" else (2, 3)
            in_axes.update({h: "H", w: "W"})
        dynamic_axes = {"input": in_axes, "output": out_axes}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation + tracer warnings
        torch.onnx.export(
            model, (example,), onnx_file, dynamo=False, opset_version=OPSET,
            input_names=["input"], output_names=["output"], dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    proto = onnx.load(onnx_file)
    onnx.checker.check_model(proto, full_check=True)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_file, so, providers=["CPUExecutionProvider"])

    def diff(shape, seed) -> float:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == ref.shape, (name, shape, got.shape, ref.shape)
        return float(np.max(np.abs(got - ref)))

    d2 = diff(zoo.batch_shape(name, 2), 2) if spec.dynamic_batch else None
    checks = {}
    batches = (1, 3) if spec.dynamic_batch else (1,)
    for n in batches:
        checks[f"batch{n}"] = diff(zoo.batch_shape(name, n), 10 + n)
    if spec.dynamic_hw:
        for hw in [(33, 33), (31, 45), (64, 64)]:
            shape = (2, 3, *hw) if spec.layout == "NCHW" else (2, *hw, 3)
            checks[f"{hw[0]}x{hw[1]}"] = diff(shape, 20 + hw[0])
    worst = max([d for d in [d2, *checks.values()] if d is not None])
    if worst >= TOL:
        raise SystemExit(f"{name}: ORT vs torch max abs diff {worst:.3g} >= {TOL}")

    # input sensitivity: std over a randn batch of 16 (mean over output entries)
    with torch.no_grad():
        g16 = torch.Generator().manual_seed(16)
        if spec.dynamic_batch:
            out = model(torch.randn(zoo.batch_shape(name, 16), generator=g16))
        else:
            out = torch.cat([model(torch.randn(zoo.batch_shape(name, 1), generator=g16)) for _ in range(16)])
    in_shape = (["N"] if spec.dynamic_batch else [1]) + list(spec.input_shape)
    if spec.dynamic_hw:
        in_shape[-2:] = ["H", "W"] if spec.layout == "NCHW" else in_shape[-2:]
    return {
        "input_name": "input",
        "output_name": "output",
        "input_shape": in_shape,
        "nominal_input_shape": list(zoo.batch_shape(name, 1)),
        "layout": spec.layout,
        "output": spec.output,
        "output_shape": (["N"] if spec.dynamic_batch else [1]) + list(out.shape[1:]),
        "output_std_over_randn_batch": round(float(out.std(0).mean()), 4),
        "dynamic_axes": dynamic_axes,
        "opset": OPSET,
        "max_abs_diff_ort_vs_torch_batch2": d2,
        "max_abs_diff_other_checks": checks,
        "onnx_bytes": os.path.getsize(onnx_file),
        "pt_bytes": os.path.getsize(pt_file),
        "onnx_sha256": sha256(onnx_file),
        "pt_sha256": sha256(pt_file),
        "op_types": op_counts(proto),
        "notes": spec.notes,
    }


def main(argv) -> None:
    torch.set_num_threads(1)
    os.makedirs(zoo.ZOO_DIR, exist_ok=True)
    names = argv or zoo.NAMES
    unknown = set(names) - set(zoo.NAMES)
    if unknown:
        raise SystemExit(f"unknown model(s): {sorted(unknown)}; known: {zoo.NAMES}")
    manifest_path = os.path.join(zoo.ZOO_DIR, "manifest.json")
    manifest = {}
    if argv and os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    for name in names:
        manifest[name] = export(name)
        m = manifest[name]
        print(f"{name:15s} onnx {m['onnx_bytes']:7d} B  pt {m['pt_bytes']:7d} B  "
              f"diff2 {m['max_abs_diff_ort_vs_torch_batch2']}  checks {m['max_abs_diff_other_checks']}")
    manifest = {k: manifest[k] for k in zoo.NAMES if k in manifest}
    with open(manifest_path, "w") as f:
        json.dump({"_about": "generated by tests/data/make_zoo.py; torch " + torch.__version__
                   + ", onnx " + onnx.__version__ + ", onnxruntime " + ort.__version__,
                   **manifest}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
