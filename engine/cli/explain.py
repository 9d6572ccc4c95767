"""``onnxplain explain``: every method on one image, written into one folder.

With no arguments it explains the bundled model's decision on the bundled photograph with
every method of :data:`onnxplain.METHODS` in the default run, at each method's "main" preset
(chosen so the whole job takes about a minute on 2 CPU cores); each method's own command
has the heavier options.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

from ..errors import OnnxplainError, OptionError
from ..methods import release_sessions
from ..registry import METHODS, forward_only
from ..runtime import process_memory
from ._common import (DEFAULT_IMAGE, ProgressBar, add_model_args, add_output_args, image_from_args, model_from_args,
                      parse_label, write_result)
from ._output import RunRecord, atomic_write
from ..render import overview_figure
from ..report import explain_record, write_report

#: what each method's progress counts (for the rate and ETA of progress lines)
UNITS = {"lime": "samples", "occlusion": "images", "rise": "images", "integrated-gradients": "samples",
         "smoothgrad": "samples", "score-cam": "channels", "scorecam": "channels"}

def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="explain one image with every method (default: bundled model and image)")
    add_model_args(p)
    p.add_argument("--label", "-l", nargs="+", default=None, help="class index or name (default: top class)")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="methods to run, or 'all' (default: every method but the slow "
                        + ", ".join(n for n, s in METHODS.items() if not s.in_main_job) + "): " + ", ".join(METHODS))
    p.add_argument("--sign", choices=("absolute", "signed"), default="absolute",
                   help="gradient maps drawn as |attribution| (default) or signed (diverging colours)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report (index.html)")
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
        raise OptionError(f"unknown method(s) {unknown}; choose from {names} or 'all'.")
    t0 = time.perf_counter()
    model = model_from_args(args)
    image, stem = image_from_args(args)
    out = pathlib.Path(args.out)
    skipped = {}
    if model.input_dtype == np.uint8:  # no gradient through uint8 input: only forward-only methods can run
        needs_grad = [m for m in chosen if METHODS[m].needs_gradients]
        if args.methods and needs_grad:
            raise OptionError(f"{model.path}: the model takes uint8 input, which has no gradient; {needs_grad} cannot "
                             f"run on it; choose from the forward-only methods {forward_only()}.")
        skipped = {m: "uint8 model input has no gradient" for m in needs_grad}
        chosen = [m for m in chosen if not METHODS[m].needs_gradients]
    top = model.classify(image, top_k=5)
    label = parse_label(args.label)
    label = top[0][0] if label is None else label
    print(f"model  {model.path} ({_runtime_line(model)})")
    print(f"image  {stem} {image.shape[1]}x{image.shape[0]}; top-5: "
          + ", ".join(f"{n} ({i}) {s:.3f}" for i, n, s in top))
    image_file = DEFAULT_IMAGE if args.image in (None, DEFAULT_IMAGE) else str(pathlib.Path(args.image).resolve())
    summary = {"model": model.describe(), "image": stem, "image_file": image_file,
               "top5": [{"index": i, "name": n, "score": s} for i, n, s in top],
               "label": label, "methods": {}, "skipped": skipped}
    if skipped:
        print(f"skipped {', '.join(skipped)}: the model takes uint8 input, which has no gradient")
    # summary.json is this run's record: the previous run's files go, and until the end it says "complete": false
    record = RunRecord(out, "summary.json", command="explain", image=stem, label=label).start()
    results = []
    for name, spec in METHODS.items():
        if name not in chosen:
            continue
        bar = ProgressBar(name, enabled=not args.no_progress, unit=UNITS.get(name, "samples"))
        t = time.perf_counter()
        try:
            result = spec(model, image, label, preset="main", progress=bar)
        except OnnxplainError as exc:  # e.g. no feature map for a CAM: the default job names it and goes on
            bar.close()
            if args.methods:
                raise
            skipped[name] = str(exc)
            print(f"skipped {name}: {exc}")
            continue
        bar.close()
        results.append(result)
        files = write_result(result, image, out, f"{stem}_{name}", model=model, sign=args.sign,
                             boundaries=result.extras.get("feature_map") if name == "lime" else None)
        record.add(*files)
        # one method after another: drop tapped/tail sessions and all but the last two gradient sessions,
        # shrink the shared arena, hand freed heap back (README, Memory)
        release_sessions(model)
        model.release_memory(keep_gradient_sessions=2)
        elapsed = time.perf_counter() - t
        summary["methods"][name] = {"seconds": round(elapsed, 3), "files": files, **process_memory(),
                                    **result.summary()}
        print(f"{name:<22} {elapsed:6.2f} s  -> {files[0]}")
        sys.stdout.flush()
    if results:
        import matplotlib.pyplot as plt

        sheet = out / f"{stem}_overview.png"
        title = (f"{stem}: {top[0][1]} ({top[0][0]}) {top[0][2]:.3f}; explained {results[0].label_names[0]} "
                 f"({results[0].labels[0]})")
        atomic_write(sheet, lambda tmp: plt.close(overview_figure(image, results, tmp, sign=args.sign, title=title)))
        record.add(str(sheet))
        summary["overview"] = str(sheet)
        print(f"overview sheet         -> {sheet}")
    summary["total_seconds"] = round(time.perf_counter() - t0, 3)
    if results and not args.no_report:
        run_record = explain_record(summary, out, str(out / "summary.json"))
        for mrec, result in zip(run_record.images[0].maps, results):  # signed pictures need the gradients
            mrec.gradients = result.extras.get("gradients")
        report_files: list[str] = []
        index = write_report(run_record, out, sign=args.sign, pictures="", written=report_files)
        record.add(*report_files)
        summary["report"] = index
        print(f"report                 -> {index}")
    record.finish(summary)  # last: "complete": true
    print(f"done in {summary['total_seconds']:.1f} s; summary: {out / 'summary.json'}")
    return 0


def _runtime_line(model) -> str:
    """e.g. "cpu, 2 threads, f32": what the sessions run on (details per graph in summary.json)."""
    rt = model.runtime()
    threads = "default threads" if rt["threads"] is None else f"{rt['threads']} threads"
    ran = sorted({p for graph in rt["graphs"].values() for p in graph})
    return f"provider {rt['provider']} ({', '.join(ran)}), {threads}, {rt['precision']}"
