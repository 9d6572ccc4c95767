"""``onnxplain report RESULTS -o DIR``: a static HTML report of a run's results.

RESULTS: an ``onnxplain explain`` output folder (or its ``summary.json``), or the Parquet
results of ``onnxplain run``. DIR/index.html opens from disk with no server and no network.
"""
from __future__ import annotations

import argparse

from ._common import ProgressBar
from ..report import read_results, write_report


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="static HTML report (DIR/index.html) of explain or run results")
    p.add_argument("results", help="explain output folder, its summary.json, or Parquet results of `onnxplain run`")
    p.add_argument("--out", "-o", default=None, help="report folder (default: the results folder itself)")
    p.add_argument("--sign", choices=("absolute", "signed"), default="absolute",
                   help="gradient maps as |attribution| (default) or signed where per-channel gradients were kept")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pathlib

    records = read_results(args.results)
    src = pathlib.Path(args.results)
    out = args.out or str(src if src.is_dir() else src.parent)
    with ProgressBar("report", enabled=not args.no_progress, unit="images") as bar:
        index = write_report(records, out, sign=args.sign, progress=bar)
    print(f"{len(records.images)} image(s), {len(records.methods)} method(s) -> {index}")
    return 0
