"""``onnxplain gradcam``: Grad-CAM (MATLAB gradCAM semantics), Grad-CAM++ or Score-CAM on one image.

Writes ``<image>_<variant>.png`` (jet heat overlay; one per label when several),
``<image>_<variant>.npy`` (the raw map at the image's size, or the feature-map size with
``--upsampling none``), ``<image>_<variant>_cam.npy`` (the raw feature-size map) and
``<image>_<variant>.json`` (labels, scores, feature and reduction layers, timings).
"""
from __future__ import annotations

import argparse

import numpy as np

from ..methods.gradcam import UPSAMPLING, grad_cam, grad_cam_plus_plus
from ..methods.scorecam import score_cam
from ._common import ProgressBar, add_model_args, add_output_args, image_from_args, model_from_args, parse_label, \
    write_result

__all__ = ["add_parser", "run"]

#: --variant -> function ("scorecam" is the pre-registry spelling of "score-cam", kept for old scripts)
VARIANTS = {"gradcam": grad_cam, "gradcam++": grad_cam_plus_plus, "score-cam": score_cam, "scorecam": score_cam}


def add_parser(sub) -> None:
    p = sub.add_parser("gradcam", help="Grad-CAM / Grad-CAM++ / Score-CAM: which regions of a feature layer drive "
                                       "the class score")
    add_model_args(p)
    p.add_argument("--label", "-l", nargs="+", action="extend", default=None, metavar="L",
                   help="class index or name, several for one batched run (default: the top class)")
    p.add_argument("--feature-layer", default=None, metavar="TENSOR",
                   help="feature tensor (default: chosen automatically; list tensors with `onnxplain inspect --all`)")
    p.add_argument("--feature-layout", choices=("NCHW", "NHWC"), default=None,
                   help="channel axis of a rank-4 feature tensor when the traced layout is wrong")
    p.add_argument("--reduction-layer", default=None, metavar="TENSOR",
                   help="tensor the class is read from: default the model output, 'logits' for the tensor before "
                        "a final Softmax/Sigmoid, or a tensor name")
    p.add_argument("--upsampling", choices=UPSAMPLING, default="bicubic", help="output upsampling (default bicubic)")
    p.add_argument("--variant", choices=tuple(VARIANTS), default="gradcam", help="CAM method (default gradcam)")
    p.add_argument("--batch-size", "--mini-batch-size", dest="batch_size", type=int, default=32,
                   help="targets (Grad-CAM) or masked images (Score-CAM) per model call (default 32)")
    add_output_args(p, "onnxplain-out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    image, name = image_from_args(args)
    method = VARIANTS[args.variant]
    with ProgressBar(args.variant, enabled=not args.no_progress) as bar:
        result = method(model, image, parse_label(args.label), feature_layer=args.feature_layer,
                        reduction_layer=args.reduction_layer, output_upsampling=args.upsampling,
                        feature_layout=args.feature_layout, mini_batch_size=args.batch_size, progress=bar)
    stem = f"{name}_{args.variant.replace('++', 'pp')}"
    written = write_result(result, image, args.out, stem, model=model, arrays={"cam": result.cam})
    print(f"{args.variant}: feature layer {result.feature_layer!r} ({result.feature_layout}), reduction layer "
          f"{result.reduction_layer!r}")
    for idx, lname, score in zip(result.labels, result.label_names, np.ravel(result.scores)):
        print(f"  {lname} ({idx}): score {float(score):.4g}")
    for path in written:
        print(f"  wrote {path}")
    return 0
