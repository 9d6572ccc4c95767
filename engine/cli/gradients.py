"""``onnxplain gradients``: gradient attribution maps (the MATLAB gradient-attribution example).

Writes ``<image>_<method>.png`` (the white-to-black map beside the image, as in the MATLAB
example), ``<image>_<method>.npy`` (score map: sum over channels of |attribution|),
``<image>_<method>_gradients.npy`` (signed per-channel attribution, H x W x C) and
``<image>_<method>.json``.
"""
from __future__ import annotations

import argparse

import numpy as np

from ..errors import OptionError
from ..methods.gradients import METHODS, gradient_attribution
from ._common import (ProgressBar, add_allow_long, add_model_args, add_output_args, image_from_args, model_from_args,
                      parse_label, parse_value, write_result)

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("gradients", help="gradient attribution: gradient, guided backprop, Zeiler-Fergus, "
                                         "integrated gradients, SmoothGrad, gradient x input")
    add_model_args(p)
    p.add_argument("--label", "-l", nargs="+", action="extend", default=None, metavar="L",
                   help="class index or name, several in one batched run (default: the top class)")
    p.add_argument("--method", choices=METHODS, default="gradient", help="attribution method (default gradient)")
    p.add_argument("--num-steps", type=int, default=None, help="integrated-gradients path points (default 25)")
    p.add_argument("--num-samples", type=int, default=None, help="SmoothGrad noisy copies (default 25)")
    p.add_argument("--noise-level", type=float, default=None,
                   help="SmoothGrad noise sigma as a fraction of the image's value range (default 0.15)")
    p.add_argument("--baseline", default=None, metavar="VALUE|R,G,B",
                   help="integrated-gradients baseline in pixel units (default black)")
    p.add_argument("--seed", type=int, default=None, help="random seed for SmoothGrad (same seed, same result)")
    p.add_argument("--batch-size", "--mini-batch-size", dest="batch_size", type=int, default=32,
                   help="images per engine run (default 32)")
    add_allow_long(p)
    add_output_args(p, "onnxplain-out")
    p.set_defaults(func=run)


#: method-specific options: giving one to a method that does not use it is an error, not ignored
_OPTION_METHODS = {"num_steps": ("integrated-gradients",), "baseline": ("integrated-gradients",),
                   "num_samples": ("smoothgrad",), "noise_level": ("smoothgrad",), "seed": ("smoothgrad",)}


def run(args: argparse.Namespace) -> int:
    unused = [f"--{k.replace('_', '-')} is only used by --method {' / '.join(methods)}"
              for k, methods in _OPTION_METHODS.items() if getattr(args, k) is not None and args.method not in methods]
    if unused:
        raise OptionError(f"with --method {args.method}: {'; '.join(unused)} (it would be ignored).")
    model = model_from_args(args)
    image, name = image_from_args(args)
    extra = {k: getattr(args, k) for k in ("num_steps", "num_samples", "noise_level") if getattr(args, k) is not None}
    with ProgressBar(args.method, enabled=not args.no_progress) as bar:
        result = gradient_attribution(model, image, parse_label(args.label), method=args.method,
                                      baseline=None if args.baseline is None else parse_value("--baseline", args.baseline),
                                      mini_batch_size=args.batch_size, allow_long=args.allow_long,
                                      random_state=args.seed, progress=bar, **extra)
    stem = f"{name}_{args.method}"
    written = write_result(result, image, args.out, stem, model=model,
                           arrays={"gradients": result.gradients})
    for idx, lname, score in zip(result.labels, result.label_names, np.ravel(result.scores)):
        print(f"{args.method}: {lname} ({idx}) score {float(score):.4g}")
    for path in written:
        print(f"  wrote {path}")
    return 0
