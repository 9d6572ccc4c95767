"""``onnxplain evaluate``, ``onnxplain sanity`` and ``onnxplain compare``: can I trust this map?

Methods (any name in :data:`onnxplain.METHODS`) run at their "quick" preset by default (e.g.
LIME 256 samples on a grid, RISE 500 masks) so a folder of images stays quick; ``--full``
uses each function's own defaults.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import pathlib
import sys
from typing import Any

import numpy as np

from ..compare import compare_models
from ..evaluate import DEFAULT_BLUR_SIGMA, SUBSTRATES, evaluate, is_gradient_failure
from ..registry import METHODS, check_methods
from ..images import load_image
from ..model import load_model
from ..sanity import sanity_check
from ..variants import variant_model
from ._common import (DEFAULT_IMAGE, ProgressBar, add_model_args, add_output_args, add_runtime_args, image_from_args,
                      model_from_args, parse_label, parse_labels_arg, runtime_from_args)
from ._output import atomic_text, atomic_write

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
_METHOD_HELP = ", ".join(METHODS)


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="deletion/insertion AUC (and pointing game with --boxes) of methods' maps")
    p.add_argument("images", nargs="*", help="image files or folders (default: the bundled sample photograph)")
    add_model_args(p, image=False)
    p.add_argument("--methods", nargs="+", default=["gradcam", "occlusion"], metavar="METHOD",
                   help=f"methods to evaluate (default: gradcam occlusion): {_METHOD_HELP}")
    p.add_argument("--label", "-l", default=None, help="class index or name (default: each image's top class)")
    p.add_argument("--boxes", default=None, metavar="FILE.json",
                   help="ground-truth boxes: {\"image file name or stem\": [x_min, y_min, x_max, y_max] or a list "
                        "of boxes}; adds the pointing game and energy metrics")
    p.add_argument("--step", type=int, default=None, help="pixels per deletion/insertion step (default: 1/64 of the image)")
    p.add_argument("--deletion-substrate", choices=SUBSTRATES, default="zeros")
    p.add_argument("--insertion-substrate", choices=SUBSTRATES, default="blur")
    p.add_argument("--blur-sigma", type=float, default=DEFAULT_BLUR_SIGMA, help="sigma of the blur substrate (px)")
    p.add_argument("--tolerance", type=float, default=15.0, help="pointing-game tolerance in pixels (default 15)")
    p.add_argument("--full", action="store_true", help="each method's own default settings (slower)")
    add_output_args(p, "onnxplain-evaluate")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("sanity", help="model-randomisation sanity check (Adebayo et al. 2018) of methods")
    add_model_args(p)
    p.add_argument("--methods", nargs="+", default=["gradient", "guided-backprop", "gradcam"], metavar="METHOD",
                   help=f"methods (default: gradient guided-backprop gradcam): {_METHOD_HELP}")
    p.add_argument("--label", "-l", default=None, help="class index or name (default: the top class)")
    p.add_argument("--mode", choices=("cascading", "independent"), default="cascading")
    p.add_argument("--every", type=int, default=10, help="measure every N-th layer from the output (default 10)")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="layer indices to measure (0 = output side)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full", action="store_true", help="each method's own default settings (slower)")
    add_output_args(p, "onnxplain-sanity")
    p.set_defaults(func=run_sanity)

    p = sub.add_parser("compare", help="compare two models' predictions and explanations (e.g. float32 vs int8)")
    p.add_argument("inputs", nargs="*", metavar="IMAGE",
                   help="image files or folders (default: the bundled photograph); A.onnx B.onnx here also works")
    p.add_argument("--model", "-m", action="append", default=None, metavar="MODEL",
                   help="model A (default: bundled); give --model twice for model B, or use --variant")
    p.add_argument("--variant", choices=("int8", "fp16"), default=None,
                   help="compare model A with its int8 / float16 build (built on demand and cached)")
    p.add_argument("--cache-dir", default=None, help="where variant builds are cached (default $ONNXPLAIN_CACHE or "
                   "~/.cache/onnxplain/variants)")
    p.add_argument("--methods", nargs="+", default=["gradcam", "occlusion"], metavar="METHOD",
                   help=f"methods (default: gradcam occlusion): {_METHOD_HELP}")
    p.add_argument("--label", "-l", default=None, help="class index or name (default: model A's top class)")
    p.add_argument("--top-fraction", type=float, default=0.1, help="top-region share for the IoU (default 0.1)")
    p.add_argument("--drift-threshold", type=float, default=0.5, help="flag images with 1 - correlation >= this")
    p.add_argument("--full", action="store_true", help="each method's own default settings (slower)")
    for flag in ("--preprocessing", "--labels"):
        p.add_argument(flag, default=None, help="as for the other commands (applies to both models)")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), default=None)
    add_runtime_args(p)
    add_output_args(p, "onnxplain-compare")
    p.set_defaults(func=run_compare)


# ---- evaluate ------------------------------------------------------------------------------
def run_evaluate(args: argparse.Namespace) -> int:
    methods = check_methods(args.methods)
    model = model_from_args(args)
    images = collect_images(args.images)
    boxes = read_boxes(args.boxes) if args.boxes else {}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    label = parse_label([args.label] if args.label else None)
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    for name, image in images:
        box = boxes.get(name) or boxes.get(pathlib.Path(name).stem)
        metrics = ("deletion", "insertion") + (("pointing_game", "energy") if box is not None else ())
        lab = label if label is not None else model.classify(image, top_k=1)[0][0]
        curves = {}
        for method in methods:
            bar = ProgressBar(f"{pathlib.Path(name).stem}:{method}", enabled=not args.no_progress)
            row = {"image": name, "method": method, "label": None, "deletion": np.nan, "insertion": np.nan,
                   "pointing_game": np.nan, "energy": np.nan, "status": "ok"}
            try:
                result = METHODS[method](model, image, lab, progress=bar, **_params(method, args.full))
            except Exception as exc:
                bar.close()
                if not (METHODS[method].needs_gradients and is_gradient_failure(exc)):
                    raise
                row["status"] = f"fallback: forward-only ({str(exc).splitlines()[0][:120]})"
                log.warning("%s: %s", method, row["status"])
                rows.append(row)
                continue
            bar.close()
            ev = evaluate(model, image, lab, result, metrics=metrics, box=box, step=args.step,
                          deletion_substrate=args.deletion_substrate, insertion_substrate=args.insertion_substrate,
                          blur_sigma=args.blur_sigma, tolerance=args.tolerance)
            row.update(label=f"{ev.label_name} ({ev.label})", **ev.scores)
            rows.append(row)
            curves[method] = ev.curves
            details.setdefault(name, {})[method] = ev.summary()
        if curves:
            _plot_curves(curves, out / f"curves_{pathlib.Path(name).stem}.png", name)
    fields = ["image", "method", "label", "deletion", "insertion", "pointing_game", "energy", "status"]
    _write_csv(out / "evaluate.csv", rows, fields)
    table = _markdown(rows, fields) + "\n\n" + _means_markdown(rows, methods)
    atomic_text(out / "evaluate.md", table + "\n")
    atomic_text(out / "evaluate.json", json.dumps(_clean({"model": model.path, "rows": rows, "details": details,
                                                          "complete": True}),
                                                  indent=1, default=_json_default) + "\n")  # written last
    print(table)
    print(f"\nwrote {out / 'evaluate.csv'}, {out / 'evaluate.md'}, curves_*.png (lower deletion and higher "
          "insertion AUC are better)")
    return 0


def _plot_curves(curves: dict[str, dict], path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for ax, mode in zip(axes, ("deletion", "insertion")):
        for method, c in curves.items():
            if mode in c:
                x, y = c[mode]
                ax.plot(x, y, label=f"{method} (AUC {np.trapezoid(y, x):.3f})")
        ax.set_title(mode)
        ax.set_xlabel("fraction of pixels " + ("removed" if mode == "deletion" else "inserted"))
        ax.set_ylabel("class probability")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, fig.savefig)
    plt.close(fig)


# ---- sanity --------------------------------------------------------------------------------
def run_sanity(args: argparse.Namespace) -> int:
    methods = check_methods(args.methods)
    model = model_from_args(args)
    image, stem = image_from_args(args)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar("sanity", enabled=not args.no_progress)
    result = sanity_check(model, image, parse_label([args.label] if args.label else None), methods=methods,
                          mode=args.mode, layers=args.layers, every=args.every, seed=args.seed,
                          method_params={m: _params(m, args.full) for m in methods}, progress=bar)
    bar.close()
    base = out / f"sanity_{stem}_{args.mode}"
    atomic_write(str(base) + ".png", result.plot)
    atomic_text(base.with_suffix(".md"), result.markdown() + "\n")
    _write_csv(base.with_suffix(".csv"), result.rows, list(result.rows[0]))
    atomic_text(base.with_suffix(".json"), json.dumps(_clean(
        {"model": model.path, "image": stem, "mode": result.mode, "label": result.label, "label_name": result.label_name,
         "layers": [vars(layer) for layer in result.layers], "rows": result.rows, "params": result.params,
         "complete": True}), indent=1, default=_json_default) + "\n")  # written last
    print(f"model {model.path}: {len(result.layers)} weight layers; class {result.label_name} ({result.label}); "
          f"{result.params['seconds']:.1f} s")
    print(result.markdown())
    print(f"\nwrote {base}.png/.md/.csv/.json (a faithful method's correlation falls as layers are randomised)")
    return 0


# ---- compare -------------------------------------------------------------------------------
def run_compare(args: argparse.Namespace) -> int:
    methods = check_methods(args.methods)
    models = list(args.model or []) + [a for a in args.inputs if a.lower().endswith(".onnx")]
    rest = [a for a in args.inputs if not a.lower().endswith(".onnx")]
    if len(models) > 2:
        raise ValueError(f"compare takes at most two models; got {len(models)}: {models}.")
    if len(models) == 2 and args.variant:
        raise ValueError("give either two models or one model and --variant, not both.")
    if len(models) < 2 and not args.variant:
        raise ValueError("compare needs two models (--model A.onnx --model B.onnx) or one model (default: bundled) and "
                         "--variant int8|fp16.")
    common = dict(preprocessing=_pre(args.preprocessing), labels=parse_labels_arg(args.labels), layout=args.layout,
                  **runtime_from_args(args))
    model_a = load_model(models[0] if models else None, **common)
    if args.variant:
        print(f"building/using the {args.variant} build of {model_a.path} ...")
        sys.stdout.flush()
        model_b = variant_model(model_a, args.variant, directory=args.cache_dir)
    else:
        model_b = load_model(models[1], **common)
    images = collect_images(rest)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar("compare", enabled=not args.no_progress)
    result = compare_models(model_a, model_b, [im for _, im in images], methods=methods,
                            label=parse_label([args.label] if args.label else None), top_fraction=args.top_fraction,
                            method_params={m: _params(m, args.full) for m in METHODS},
                            drift_threshold=args.drift_threshold, names=[n for n, _ in images], progress=bar)
    bar.close()
    table = result.markdown()
    atomic_text(out / "compare.md", table + "\n")
    _write_csv(out / "compare_predictions.csv", result.predictions, list(result.predictions[0]))
    _write_csv(out / "compare_maps.csv", result.maps, list(result.maps[0]))
    atomic_text(out / "compare.json", json.dumps(_clean({"summary": result.summary(), "predictions": result.predictions,
                                                        "maps": result.maps, "drift": result.drift,
                                                        "params": result.params, "complete": True}),
                                                 indent=1, default=_json_default) + "\n")  # written last
    s = result.summary()
    print(table)
    print(f"\ntop-1 agreement {s['top1_agreement']:.2f}, mean top-5 overlap {s['mean_top5_overlap']:.2f}, "
          f"max prob diff {s['max_prob_diff']:.4f}; flagged: {s['flagged'] or 'none'}")
    print(f"wrote {out / 'compare.md'}, compare_*.csv, compare.json")
    return 0


# ---- helpers -------------------------------------------------------------------------------
def collect_images(items: list[str]) -> list[tuple[str, np.ndarray]]:
    """(name, canonical image) for files and the image files of folders; none -> the bundled photograph."""
    if not items:
        from skimage.data import chelsea

        return [(DEFAULT_IMAGE, load_image(chelsea()))]
    out = []
    for item in items:
        path = pathlib.Path(item)
        if item == DEFAULT_IMAGE and not path.exists():
            from skimage.data import chelsea

            out.append((DEFAULT_IMAGE, load_image(chelsea())))
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"folder {item!r} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
            out += [(p.name, load_image(p)) for p in files]
        else:
            out.append((path.name, load_image(item)))
    return out


def read_boxes(path: str) -> dict[str, Any]:
    """The --boxes file: {"name": box or [boxes]} with boxes as [x_min, y_min, x_max, y_max]."""
    p = pathlib.Path(path)
    if not p.exists():
        raise ValueError(f"boxes file {path!r} does not exist.")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"boxes file {path!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"boxes file {path!r} must hold a JSON object {{\"image name\": [x_min, y_min, x_max, y_max]}}; "
                         f"got {type(data).__name__}.")
    return data


def _params(method: str, full: bool) -> dict[str, Any]:
    return {} if full else dict(METHODS[method].presets["quick"])


def _pre(value: str | None) -> Any:
    if value is not None and value.strip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--preprocessing is not valid JSON: {exc}") from None
    return value


def _write_csv(path: pathlib.Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                writer.writerow({k: _cell(r.get(k)) for k in fields})
    atomic_write(path, write)


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.6g}"
    return v


def _markdown(rows: list[dict[str, Any]], fields: list[str]) -> str:
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k in fields) + " |")
    return "\n".join(lines)


def _means_markdown(rows: list[dict[str, Any]], methods: list[str]) -> str:
    keys = ["deletion", "insertion", "pointing_game", "energy"]
    lines = ["| method (mean over images) | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        vals = []
        for k in keys:
            v = [r[k] for r in sel if isinstance(r[k], float) and not np.isnan(r[k])]
            vals.append(f"{np.mean(v):.3f}" if v else "")
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.3f}"
    return "" if v is None else str(v)


def _clean(v: Any) -> Any:
    """NaN -> None (strict JSON), recursively."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (float, np.floating)) and np.isnan(v):
        return None
    return v


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, float) and np.isnan(v):
        return None
    return str(v)
