"""``onnxplain rise``: RISE (Petsiuk et al. 2018) on one image.

Writes ``<image>_rise.png`` (overlay; one per label when several), ``<image>_rise.npy`` (the
raw map at the image size, or at the model input size with ``--upsampling none``) and
``<image>_rise.json`` (labels, scores, options, timings).
"""
from __future__ import annotations

import argparse

from ..methods.rise import rise
from ._common import (ProgressBar, add_label_arg, add_model_args, add_sampling_args, image_from_args,
                      model_from_args, parse_label, parse_pair, parse_value, write_and_report)

__all__ = ["add_parser", "run_rise"]


def add_parser(sub) -> None:
    p = sub.add_parser("rise", help="RISE: score-weighted average of random masks (Petsiuk et al. 2018)")
    add_model_args(p)
    add_label_arg(p)
    p.add_argument("--num-masks", type=int, default=4000, help="random masks (default 4000)")
    p.add_argument("--cell-size", default="7", metavar="N|H,W", help="mask grid cells per side (default 7)")
    p.add_argument("--keep-probability", type=float, default=0.5, help="probability a cell is kept (default 0.5)")
    p.add_argument("--fill", default="mean", metavar="mean|zero|V|R,G,B",
                   help="what masked pixels fade to, image pixel units (default mean: the image's mean colour)")
    p.add_argument("--upsampling", choices=("bilinear", "bicubic", "nearest", "none"), default="bilinear",
                   help="resize of the map to the image size (default bilinear)")
    p.add_argument("--estimator", choices=("centered", "paper"), default="centered",
                   help="centered (default): the mean score subtracted before summing and added back, same "
                        "expectation, far less noise; paper: the reference code's sum")
    add_sampling_args(p, "masked images")
    p.set_defaults(func=run_rise)


def run_rise(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    image, name = image_from_args(args)
    with ProgressBar("rise", enabled=not args.no_progress) as bar:
        result = rise(model, image, parse_label(args.label), num_masks=args.num_masks,
                      cell_size=parse_pair("--cell-size", args.cell_size, auto=False),
                      keep_probability=args.keep_probability,
                      fill=parse_value("--fill", args.fill, ("mean", "zero")), output_upsampling=args.upsampling,
                      estimator=args.estimator, mini_batch_size=args.batch_size, allow_long=args.allow_long,
                      random_state=args.seed, progress=bar)
    write_and_report(result, image, model, args.out, f"{name}_rise", f"{result.params['num_masks']} masks")
    return 0
