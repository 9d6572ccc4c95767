"""``onnxplain lime``: image LIME (MATLAB imageLIME semantics) on one image.

Writes ``<image>_lime.png`` (overlay with feature boundaries; one per label when several),
``<image>_lime.npy`` (the raw score map), ``<image>_lime_features.npy`` (the feature map)
and ``<image>_lime.json`` (labels, scores, options, timings, feature importances).
"""
from __future__ import annotations

import argparse
import pathlib
from typing import Any

import numpy as np

from ..errors import OptionError
from ..methods.lime import FILLS, SAMPLINGS, SEGMENTATIONS, SURROGATES, UPSAMPLING, image_lime
from ._common import (ProgressBar, add_model_args, add_sampling_args, image_from_args, model_from_args,
                      parse_label, parse_value, write_result)

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("lime", help="image LIME: which superpixels / grid cells the class score depends on")
    add_model_args(p)
    p.add_argument("--label", "-l", nargs="+", action="extend", default=None, metavar="L",
                   help="class index or name, several for one sampling pass (default: the top class)")
    p.add_argument("--num-features", type=int, default=None,
                   help="target number of features (default 49; not used by quickshift or a FILE.npy label matrix)")
    p.add_argument("--num-samples", type=int, default=2048, help="synthetic images (default 2048)")
    p.add_argument("--segmentation", default="superpixels", metavar="|".join(SEGMENTATIONS) + "|FILE.npy",
                   help="segmentation method, or a .npy integer matrix of the image's size (default superpixels)")
    p.add_argument("--surrogate", choices=SURROGATES, default="ridge",
                   help="simple model (default ridge; MATLAB imageLIME: tree)")
    p.add_argument("--sampling", choices=SAMPLINGS, default="paired",
                   help="on/off vectors: paired (stratified antithetic pairs, default) or bernoulli (MATLAB)")
    p.add_argument("--upsampling", choices=UPSAMPLING, default="nearest", help="output upsampling (default nearest)")
    p.add_argument("--fill", default="mean",
                   help=f"value of 'off' features: {', '.join(FILLS)}, a number or R,G,B (default mean)")
    add_sampling_args(p, "synthetic images")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.num_features is not None and (args.segmentation == "quickshift" or args.segmentation.endswith(".npy")):
        raise OptionError(f"--num-features does nothing with --segmentation {args.segmentation} (the segments set the "
                         "number of features); leave it out.")
    model = model_from_args(args)
    image, name = image_from_args(args)
    extra = {} if args.num_features is None else {"num_features": args.num_features}
    with ProgressBar("lime", enabled=not args.no_progress) as bar:
        result = image_lime(model, image, parse_label(args.label), **extra,
                            num_samples=args.num_samples, segmentation=_segmentation(args.segmentation),
                            surrogate=args.surrogate, sampling=args.sampling, output_upsampling=args.upsampling,
                            mini_batch_size=args.batch_size, allow_long=args.allow_long, random_state=args.seed,
                            fill=parse_value("--fill", args.fill, FILLS),
                            progress=bar)
    stem = f"{name}_lime"
    written = write_result(result, image, args.out, stem, model=model, boundaries=result.feature_map,
                           arrays={"features": result.feature_map})
    for k, (idx, label) in enumerate(zip(result.labels, result.label_names)):
        imp = result.feature_importance if result.feature_importance.ndim == 1 else result.feature_importance[:, k]
        top = np.argsort(-imp, kind="stable")[:5]
        print(f"{label} ({idx}), score {float(result.scores[k]):.4g}: top features "
              + ", ".join(f"{int(f)} ({imp[f]:.3g})" for f in top))
    print(f"{result.num_features} features, {result.params['num_samples']} samples, "
          f"{result.timings['total']:.1f} s -> " + ", ".join(written))
    return 0


def _segmentation(value: str) -> Any:
    """A method name, or the integer matrix in a .npy file."""
    if value in SEGMENTATIONS:
        return value
    if value.endswith(".npy"):
        path = pathlib.Path(value)
        if not path.exists():
            raise FileNotFoundError(f"--segmentation file {value!r} does not exist.")
        return np.load(path, allow_pickle=False)
    raise OptionError(f"--segmentation must be one of {', '.join(SEGMENTATIONS)} or a .npy file; got {value!r}.")
