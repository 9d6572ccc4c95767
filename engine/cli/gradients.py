"""``onnxplain gradients``: gradient attribution maps (the MATLAB gradient-attribution example).

Writes ``<image>_<method>.png`` (the white-to-black map beside the image, as in the MATLAB
example), ``<image>_<method>.npy`` (score map: sum over channels of |attribution|),
``<image>_<method>_gradients.npy`` (signed per-channel attribution, H x W x C) and
``<image>_<method>.json``.
"""
from __future__ import annotations

import argparse

import numpy as np

from ..methods.gradients import EXPLAIN_DEFAULTS, METHODS, gradient_attribution
from ._common import ProgressBar, add_model_args, add_output_args, image_from_args, model_from_args, parse_label, \
    write_result

__all__ = ["add_parser", "run", "explain_gradient", "explain_guided_backprop", "explain_zeiler_fergus",
           "explain_integrated_gradients", "explain_smoothgrad", "explain_gradient_x_input"]

# ``explain_default(model, image, label, progress)`` per method, for ``onnxplain explain``.
explain_gradient = EXPLAIN_DEFAULTS["gradient"]
explain_guided_backprop = EXPLAIN_DEFAULTS["guided-backprop"]
explain_zeiler_fergus = EXPLAIN_DEFAULTS["zeiler-fergus"]
explain_integrated_gradients = EXPLAIN_DEFAULTS["integrated-gradients"]
explain_smoothgrad = EXPLAIN_DEFAULTS["smoothgrad"]
explain_gradient_x_input = EXPLAIN_DEFAULTS["gradient-x-input"]


def add_parser(sub) -> None:
    p = sub.add_parser("gradients", help="gradient attribution: gradient, guided backprop, Zeiler-Fergus, "
                                         "integrated gradients, SmoothGrad, gradient x input")
    add_model_args(p)
    p.add_argument("--label", "-l", nargs="+", action="extend", default=None, metavar="L",
                   help="class index or name, several in one batched run (default: the top class)")
    p.add_argument("--method", choices=METHODS, default="gradient", help="attribution method (default gradient)")
    p.add_argument("--num-steps", type=int, default=25, help="integrated-gradients path points (default 25)")
    p.add_argument("--num-samples", type=int, default=25, help="SmoothGrad noisy copies (default 25)")
    p.add_argument("--noise-level", type=float, default=0.15,
                   help="SmoothGrad noise sigma as a fraction of the image's value range (default 0.15)")
    p.add_argument("--baseline", default=None, metavar="VALUE|R,G,B",
                   help="integrated-gradients baseline in pixel units (default black)")
    p.add_argument("--seed", type=int, default=None, help="random seed for SmoothGrad (same seed, same result)")
    p.add_argument("--batch-size", type=int, default=32, help="images per engine run (default 32)")
    add_output_args(p, "onnxplain-out")
    p.set_defaults(func=run)


def _baseline(text: str | None):
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--baseline must be a number or R,G,B; got {text!r}.") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 3:
        return np.array(values, np.float32)
    raise ValueError(f"--baseline must be a number or R,G,B; got {len(values)} values.")


def run(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    image, name = image_from_args(args)
    with ProgressBar(args.method, enabled=not args.no_progress) as bar:
        result = gradient_attribution(model, image, parse_label(args.label), method=args.method,
                                      baseline=_baseline(args.baseline), num_steps=args.num_steps,
                                      num_samples=args.num_samples, noise_level=args.noise_level,
                                      mini_batch_size=args.batch_size, random_state=args.seed, progress=bar)
    stem = f"{name}_{args.method}"
    written = write_result(result, image, args.out, stem, kind="gradient", model=model)
    np.save(f"{args.out}/{stem}_gradients.npy", result.gradients)
    written.append(f"{args.out}/{stem}_gradients.npy")
    for idx, lname, score in zip(result.labels, result.label_names, np.ravel(result.scores)):
        print(f"{args.method}: {lname} ({idx}) score {float(score):.4g}")
    for path in written:
        print(f"  wrote {path}")
    return 0
