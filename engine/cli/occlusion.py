"""``onnxplain occlusion`` (MATLAB occlusionSensitivity semantics).

Writes ``<image>_<method>.png`` (overlay; one per label when several),
``<image>_<method>.npy`` (the raw map at the image size, or at the model input size with
``--upsampling none``) and ``<image>_<method>.json`` (labels, scores, options, timings).
"""
from __future__ import annotations

import argparse

from ..methods.occlusion import UPSAMPLING, occlusion_sensitivity
from ._common import (ProgressBar, add_label_arg, add_model_args, add_sampling_args, image_from_args,
                      model_from_args, parse_label, parse_pair, parse_value, write_and_report)

__all__ = ["add_parser", "run_occlusion"]


def add_parser(sub) -> None:
    p = sub.add_parser("occlusion", help="occlusion sensitivity: score drop when a window of the image is covered")
    add_model_args(p)
    add_label_arg(p)
    p.add_argument("--mask-size", default="auto", metavar="auto|N|H,W",
                   help="occluding window in model-input pixels (default auto: 20%% of the side)")
    p.add_argument("--stride", default="auto", metavar="auto|N|H,W",
                   help="step between windows (default auto: 10%% of the side)")
    p.add_argument("--mask-value", default="auto", metavar="auto|V|R,G,B",
                   help="fill in image pixel units (default auto: the image's per-channel mean)")
    p.add_argument("--no-mask-clipping", action="store_true",
                   help="keep windows fully inside the image (captum's placement; edge strips may stay 0)")
    p.add_argument("--upsampling", choices=UPSAMPLING, default="bicubic",
                   help="resize of the map to the image size (default bicubic; none: model-input size)")
    add_sampling_args(p, "occluded images", seeded=False)
    p.set_defaults(func=run_occlusion)


def run_occlusion(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    image, name = image_from_args(args)
    with ProgressBar("occlusion", enabled=not args.no_progress) as bar:
        result = occlusion_sensitivity(
            model, image, parse_label(args.label), mask_size=parse_pair("--mask-size", args.mask_size),
            stride=parse_pair("--stride", args.stride), mask_value=parse_value("--mask-value", args.mask_value, ("auto",)),
            mask_clipping=not args.no_mask_clipping, output_upsampling=args.upsampling,
            mini_batch_size=args.batch_size, allow_long=args.allow_long, progress=bar)
    p = result.params
    write_and_report(result, image, model, args.out, f"{name}_occlusion",
           f"{p['num_positions'][0]} x {p['num_positions'][1]} windows of {p['mask_size'][0]} x {p['mask_size'][1]}")
    return 0
