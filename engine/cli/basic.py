"""``onnxplain classify`` and ``onnxplain inspect``."""
from __future__ import annotations

import argparse
import json

import onnx

from ..errors import OptionError
from ..graph import list_tensors
from ._common import add_model_args, image_from_args, model_from_args
from ..model import BUNDLED_MODEL


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="top-k classes for an image")
    add_model_args(p)
    p.add_argument("--top-k", "-k", type=int, default=5, help="number of classes to show (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_classify)

    p = sub.add_parser("inspect", help="inputs, outputs, layout, preprocessing and tensors of a model")
    add_model_args(p, image=False)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--all", action="store_true", help="list every tensor (default: the last 40)")
    p.set_defaults(func=run_inspect)


def run_classify(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    image, name = image_from_args(args)
    top = model.classify(image, top_k=args.top_k)
    if args.json:
        print(json.dumps([{"index": i, "name": n, "score": s} for i, n, s in top], indent=1))
    else:
        print(f"{name}: {model.path}")
        for i, n, s in top:
            print(f"  {s:8.4f}  {i:5d}  {n}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    try:
        model = model_from_args(args)
    except OptionError as exc:
        if args.preprocessing is not None or "declares no preprocessing" not in str(exc):
            raise
        return _inspect_graph_only(args, str(exc))
    info = model.describe()
    tensors = [{"name": t.name, "op_type": t.op_type, "shape": list(t.shape) if t.shape is not None else None,
                "dtype": t.dtype} for t in list_tensors(model.onnx_model)]
    unknown = [t["name"] for t in tensors if t["shape"] is None or not all(isinstance(d, int) for d in t["shape"][1:])]
    if unknown and model.input_size is not None:
        # static inference gives up behind run-time padding arithmetic; one run tells the sizes
        for t, (shape, dtype) in zip([t for t in tensors if t["name"] in set(unknown)],
                                     model.probe_shapes(unknown).values()):
            t["shape"], t["dtype"] = ["N", *shape], dtype
    info["tensors"] = tensors
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    rt = info["runtime"]
    print(f"model   {info['path']} (opset {info['opset']}, provider {rt['provider']}: "
          f"{', '.join(f'{g} on {sorted(p)}' for g, p in rt['graphs'].items())})")
    i, o = info["input"], info["output"]
    print(f"input   {i['name']}: {i['dtype']} {i['layout']} size {i['size']}"
          + (" static batch 1 (run image by image)" if i["batched_by_loop"] else ""))
    print(f"output  {o['name']}: {o['kind']}, {o['num_classes']} classes" + (f", logits {o['logits']!r}" if o["logits"] else ""))
    p = info["preprocessing"]
    print(f"preproc scale {p['scale']:g}, mean {p['mean']}, std {p['std']}, {p['channel_order']} (from {p['name']})")
    shown = tensors if args.all else tensors[-40:]
    if shown:
        print(f"tensors ({len(tensors)} total{'' if args.all else ', last 40; --all for every one'}):")
        for t in shown:
            print(f"  {t['op_type']:<20} {str(t['shape']):<24} {t['name']}")
    return 0


def _inspect_graph_only(args: argparse.Namespace, why: str) -> int:
    """inspect for a model that declares no preprocessing: inputs, outputs and tensors of the graph,
    and a note that the methods need --preprocessing (nothing is guessed)."""
    path = args.model or str(BUNDLED_MODEL)
    proto = onnx.load(path)
    init = {t.name for t in proto.graph.initializer}

    def desc(v) -> dict:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else None,
                "shape": dims}

    tensors = [{"name": t.name, "op_type": t.op_type, "shape": list(t.shape) if t.shape is not None else None,
                "dtype": t.dtype} for t in list_tensors(proto)]
    info = {"path": path, "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "inputs": [desc(v) for v in proto.graph.input if v.name not in init],
            "outputs": [desc(v) for v in proto.graph.output], "preprocessing": None,
            "note": "no preprocessing declared: " + why, "tensors": tensors}
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    print(f"model   {path} (opset {info['opset']})")
    for v in info["inputs"]:
        print(f"input   {v['name']}: {v['dtype']} {v['shape']}")
    for v in info["outputs"]:
        print(f"output  {v['name']}: {v['dtype']} {v['shape']}")
    print("preproc not declared: classify, explain and the methods need --preprocessing "
          "('imagenet', 'none' or JSON); nothing is guessed")
    shown = tensors if args.all else tensors[-40:]
    if shown:
        print(f"tensors ({len(tensors)} total{'' if args.all else ', last 40; --all for every one'}):")
        for t in shown:
            print(f"  {t['op_type']:<20} {str(t['shape']):<24} {t['name']}")
    return 0
