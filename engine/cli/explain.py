"""``onnxplain explain``: every method on one image, written into one folder.

With no arguments it explains the bundled model's decision on the bundled photograph with
every method of :data:`onnxplain.METHODS` in the default run, at each method's "main" preset
(chosen so the whole job takes about a minute on 2 CPU cores); each method's own command
has the heavier options.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from ..registry import METHODS, forward_only
from ._common import (ProgressBar, add_model_args, add_output_args, image_from_args, model_from_args,
                      parse_label, write_result)

def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="explain one image with every method (default: bundled model and image)")
    add_model_args(p)
    p.add_argument("--label", "-l", nargs="+", default=None, help="class index or name (default: top class)")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="methods to run, or 'all' (default: every method but the slow "
                        + ", ".join(n for n, s in METHODS.items() if not s.in_main_job) + "): " + ", ".join(METHODS))
    add_output_args(p, "onnxplain-out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = list(METHODS)
    if args.methods == ["all"]:
        chosen = names
    else:
        chosen = args.methods or [n for n, s in METHODS.items() if s.in_main_job]
    unknown = [m for m in chosen if m not in names]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {names} or 'all'.")
    t0 = time.perf_counter()
    model = model_from_args(args)
    image, stem = image_from_args(args)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skipped = {}
    if model.input_dtype == np.uint8:  # no gradient through uint8 input: only forward-only methods can run
        needs_grad = [m for m in chosen if METHODS[m].needs_gradients]
        if args.methods and needs_grad:
            raise ValueError(f"{model.path}: the model takes uint8 input, which has no gradient; {needs_grad} cannot "
                             f"run on it; choose from the forward-only methods {forward_only()}.")
        skipped = {m: "uint8 model input has no gradient" for m in needs_grad}
        chosen = [m for m in chosen if not METHODS[m].needs_gradients]
    top = model.classify(image, top_k=5)
    label = parse_label(args.label)
    label = top[0][0] if label is None else label
    print(f"model  {model.path} ({model.device})")
    print(f"image  {stem} {image.shape[1]}x{image.shape[0]}; top-5: "
          + ", ".join(f"{n} ({i}) {s:.3f}" for i, n, s in top))
    summary = {"model": model.describe(), "image": stem, "top5": [{"index": i, "name": n, "score": s} for i, n, s in top],
               "label": label, "methods": {}, "skipped": skipped}
    if skipped:
        print(f"skipped {', '.join(skipped)}: the model takes uint8 input, which has no gradient")
    for name, spec in METHODS.items():
        if name not in chosen:
            continue
        bar = ProgressBar(name, enabled=not args.no_progress)
        t = time.perf_counter()
        result = spec(model, image, label, preset="main", progress=bar)
        bar.close()
        files = write_result(result, image, out, f"{stem}_{name}", kind=spec.render, model=model,
                             boundaries=result.extras.get("feature_map") if name == "lime" else None)
        elapsed = time.perf_counter() - t
        summary["methods"][name] = {"seconds": round(elapsed, 3), "files": files, **result.summary()}
        print(f"{name:<22} {elapsed:6.2f} s  -> {files[0]}")
        sys.stdout.flush()
    summary["total_seconds"] = round(time.perf_counter() - t0, 3)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"done in {summary['total_seconds']:.1f} s; summary: {out / 'summary.json'}")
    return 0
