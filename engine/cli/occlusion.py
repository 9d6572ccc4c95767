"""``onnxplain occlusion`` (MATLAB occlusionSensitivity semantics) and ``onnxplain rise``.

Each writes ``<image>_<method>.png`` (overlay; one per label when several),
``<image>_<method>.npy`` (the raw map at the image size, or at the model input size with
``--upsampling none``) and ``<image>_<method>.json`` (labels, scores, options, timings).
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ..errors import OptionError
from ..methods.occlusion import UPSAMPLING, occlusion_sensitivity
from ..methods.rise import rise
from ._common import (ProgressBar, add_allow_long, add_model_args, add_output_args, image_from_args, model_from_args,
                      parse_label, parse_value, write_result)

__all__ = ["add_parser", "run_occlusion", "run_rise"]


def add_parser(sub) -> None:
    p = sub.add_parser("occlusion", help="occlusion sensitivity: score drop when a window of the image is covered")
    add_model_args(p)
    _label_arg(p)
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
    p.add_argument("--batch-size", "--mini-batch-size", dest="batch_size", type=int, default=128, help="occluded images per model call (default 128)")
    add_allow_long(p)
    add_output_args(p, "onnxplain-out")
    p.set_defaults(func=run_occlusion)

    p = sub.add_parser("rise", help="RISE: score-weighted average of random masks (Petsiuk et al. 2018)")
    add_model_args(p)
    _label_arg(p)
    p.add_argument("--num-masks", type=int, default=4000, help="random masks (default 4000)")
    p.add_argument("--cell-size", default="7", metavar="N|H,W", help="mask grid cells per side (default 7)")
    p.add_argument("--keep-probability", type=float, default=0.5, help="probability a cell is kept (default 0.5)")
    p.add_argument("--fill", default="mean", metavar="mean|zero|V|R,G,B",
                   help="what masked pixels fade to, image pixel units (default mean: the image's mean colour)")
    p.add_argument("--upsampling", choices=("bilinear", "bicubic", "nearest", "none"), default="bilinear",
                   help="resize of the map to the image size (default bilinear)")
    p.add_argument("--batch-size", "--mini-batch-size", dest="batch_size", type=int, default=128, help="masked images per model call (default 128)")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same result)")
    add_allow_long(p)
    add_output_args(p, "onnxplain-out")
    p.set_defaults(func=run_rise)


def run_occlusion(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    image, name = image_from_args(args)
    with ProgressBar("occlusion", enabled=not args.no_progress) as bar:
        result = occlusion_sensitivity(
            model, image, parse_label(args.label), mask_size=_pair("--mask-size", args.mask_size),
            stride=_pair("--stride", args.stride), mask_value=parse_value("--mask-value", args.mask_value, ("auto",)),
            mask_clipping=not args.no_mask_clipping, output_upsampling=args.upsampling,
            mini_batch_size=args.batch_size, allow_long=args.allow_long, progress=bar)
    p = result.params
    _write(result, image, model, args.out, f"{name}_occlusion",
           f"{p['num_positions'][0]} x {p['num_positions'][1]} windows of {p['mask_size'][0]} x {p['mask_size'][1]}")
    return 0


def run_rise(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    image, name = image_from_args(args)
    with ProgressBar("rise", enabled=not args.no_progress) as bar:
        result = rise(model, image, parse_label(args.label), num_masks=args.num_masks,
                      cell_size=_pair("--cell-size", args.cell_size, auto=False),
                      keep_probability=args.keep_probability,
                      fill=parse_value("--fill", args.fill, ("mean", "zero")), output_upsampling=args.upsampling,
                      mini_batch_size=args.batch_size, allow_long=args.allow_long, random_state=args.seed, progress=bar)
    _write(result, image, model, args.out, f"{name}_rise", f"{result.params['num_masks']} masks")
    return 0


def _write(result, image: np.ndarray, model, out: str, stem: str, what: str) -> None:
    """Write the result files and print a one-line summary per label."""
    written = write_result(result, image, out, stem, model=model)
    for k, (idx, label) in enumerate(zip(result.labels, result.label_names)):
        m = result.score_map if result.score_map.ndim == 2 else result.score_map[..., k]
        print(f"{label} ({idx}), score {float(result.scores[k]):.4g}: map range [{m.min():.3g}, {m.max():.3g}]")
    print(f"{result.method}: {what}, {result.timings['total']:.1f} s -> " + ", ".join(written))


def _label_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label", "-l", nargs="+", action="extend", default=None, metavar="L",
                   help="class index or name, several from one pass (default: the top class)")


def _pair(flag: str, value: str, *, auto: bool = True) -> Any:
    """'auto', 'N' or 'H,W' -> 'auto', int or (int, int)."""
    if auto and value == "auto":
        return value
    try:
        numbers = [int(v) for v in value.split(",")]
    except ValueError:
        raise OptionError(f"{flag} must be {'auto, ' if auto else ''}an integer N or H,W; got {value!r}.") from None
    if len(numbers) not in (1, 2):
        raise OptionError(f"{flag} must be N or H,W; got {value!r}.")
    return numbers[0] if len(numbers) == 1 else tuple(numbers)


