"""``onnxplain run``: explain a whole dataset into one Parquet file (resumable; optionally on Ray).

    onnxplain run --images photos/ --methods gradcam,rise --out results.parquet
    onnxplain run --images val.csv --methods gradcam --label true --metrics deletion,pointing
    onnxplain run --images photos/ --methods lime --set lime.num_samples=512 --ray
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import add_model_args, model_from_args
from ..registry import METHODS
from ..dataset import explain_dataset
from ..report import read_results, write_report
from ._common import ProgressBar


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="explain every image of a folder / listing into one Parquet file (resumable)",
                       description="Explain a dataset with one or more methods into one Parquet file, one row per "
                       "(image, method, label); re-running with the same --out resumes. Schema: "
                       "onnxplain.results (README 'Datasets').")
    add_model_args(p, image=False)
    p.add_argument("--images", required=True, metavar="SRC",
                   help="folder (recursive; class sub-folders = true labels), glob pattern, .csv listing (path, "
                        "label, x0, y0, x1, y1) or .txt listing (one path per line)")
    p.add_argument("--methods", default="gradcam", metavar="M[,M...]",
                   help="comma-separated, default gradcam; any of: " + ", ".join(METHODS))
    p.add_argument("--label", "-l", nargs="+", default=None, metavar="LABEL",
                   help="what to explain per image: 'top' (default), 'true' (the true label), class indices or "
                        "names; several give one row each")
    p.add_argument("--out", "-o", dest="results_out", default="onnxplain-results.parquet", metavar="FILE",
                   help="results file (default: onnxplain-results.parquet); an existing one is resumed")
    p.add_argument("--metrics", default=None, metavar="M[,M...]",
                   help="deletion, insertion, pointing (= pointing_game), energy; pointing/energy need boxes")
    p.add_argument("--preset", choices=("main", "quick"), default="main",
                   help="per-method settings of the registry (default: main, as 'onnxplain explain')")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                   help="a method option (VALUE is JSON, else a string), e.g. rise.num_masks=1000; repeatable")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch and per part file (default 16)")
    p.add_argument("--top-k", type=int, default=5, help="predicted classes recorded per image (default 5)")
    p.add_argument("--map-dtype", choices=("float32", "float16"), default="float32",
                   help="map storage (float16: scaled by max|map|)")
    p.add_argument("--decode-threads", type=int, default=2, help="image decoding threads ahead of inference")
    folder = p.add_mutually_exclusive_group()
    folder.add_argument("--image-folder", dest="image_folder", action="store_true", default=None,
                        help="require an ImageFolder tree (class sub-folders = labels)")
    folder.add_argument("--no-image-folder", dest="image_folder", action="store_false",
                        help="read a folder without labels even if it has class sub-folders")
    p.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="run on Ray: alone = a local Ray; ADDRESS = an existing cluster ('auto', 'ray://host:10001')")
    p.add_argument("--ray-actors", type=int, default=None, help="Ray actors (model replicas)")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="HTML report folder (default: beside the results, <results stem>-report/)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.set_defaults(func=run)


def parse_sets(values: list[str]) -> dict[str, dict[str, Any]]:
    """``METHOD.OPTION=VALUE`` flags -> {method: {option: value}} (VALUE as JSON, else a string)."""
    out: dict[str, dict[str, Any]] = {}
    for text in values:
        key, sep, raw = text.partition("=")
        method, dot, option = key.rpartition(".")
        if not sep or not dot or not method or not option:
            raise ValueError(f"--set {text!r}: expected METHOD.OPTION=VALUE, e.g. rise.num_masks=1000.")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(method.strip(), {})[option.strip()] = value
    return out


def run(args: argparse.Namespace) -> int:
    labels = None
    if args.label:
        labels = [int(v) if v.lstrip("-").isdigit() else v for v in args.label]
    model = model_from_args(args)
    result = explain_dataset(model, args.images, args.methods, labels, out=args.results_out, metrics=args.metrics,
                             preset=args.preset, options=parse_sets(args.set), batch_size=args.batch_size,
                             top_k=args.top_k, map_dtype=args.map_dtype, decode_threads=args.decode_threads,
                             image_folder=args.image_folder, progress=not args.no_progress, ray=args.ray,
                             ray_actors=args.ray_actors)
    print(f"{result.out}: {result.rows_written} rows written ({result.errors} errors), {result.rows_skipped} already "
          f"done; {result.images} images in {result.seconds:.1f} s ({result.images_per_second:.2f} images/s, "
          f"{result.backend})")
    if not args.no_report:
        import pathlib

        out = pathlib.Path(str(result.out))
        folder = args.report or str(out.with_name(out.stem + "-report"))
        with ProgressBar("report", enabled=not args.no_progress, unit="images") as bar:
            index = write_report(read_results(out), folder, progress=bar)
        print(f"report: {index}")
    return 0
