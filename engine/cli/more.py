"""``onnxplain cam``, ``onnxplain reciprocam``, ``onnxplain kernelshap``, ``onnxplain export-explainer``.

- ``cam --variant hirescam|layercam|xgradcam|eigencam|ablationcam``: the rest of the CAM
  family (``--feature-layer`` takes several tensors to fuse them); writes like ``gradcam``.
- ``reciprocam``: ReciproCAM; ``--all-classes`` also writes ``<image>_reciprocam_classes.npy``
  (h, w, num_classes): every class's map, from the same single batch.
- ``kernelshap``: Kernel SHAP on superpixels / grid / quickshift / felzenszwalb / a .npy
  label matrix; the JSON records ``base_value`` and whether the values are exact.
- ``export-explainer``: write a standalone ONNX explainer (``onnxplain.export_explainer``).
"""
from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from ..export import EXPORT_METHODS, export_explainer
from ..methods.gradcam import UPSAMPLING
from ..methods.camfamily import CAM_FUNCTIONS
from ..methods.kernel_shap import kernel_shap
from ..methods.lime import FILLS, SEGMENTATIONS
from ..methods.lime import UPSAMPLING as LIME_UPSAMPLING
from ..methods.reciprocam import KERNELS, SCORES, recipro_cam
from ._common import (
    ProgressBar,
    add_model_args,
    add_output_args,
    add_sampling_args,
    image_from_args,
    model_from_args,
    parse_label,
    parse_value,
    write_result,
)
from .lime import _segmentation

__all__ = ["add_parser"]


def _label_arg(p) -> None:
    p.add_argument("--label", "-l", nargs="+", action="extend", default=None, metavar="L",
                   help="class index or name, several for one batched run (default: the top class)")


def add_parser(sub) -> None:
    p = sub.add_parser("cam", help="HiResCAM / LayerCAM / XGrad-CAM / Eigen-CAM / Ablation-CAM on one image")
    add_model_args(p)
    _label_arg(p)
    p.add_argument("--variant", choices=tuple(CAM_FUNCTIONS), default="layercam", help="CAM method (default layercam)")
    p.add_argument("--feature-layer", nargs="+", default=None, metavar="TENSOR",
                   help="feature tensor(s); several are fused (default: chosen automatically)")
    p.add_argument("--feature-layout", choices=("NCHW", "NHWC"), default=None)
    p.add_argument("--upsampling", choices=UPSAMPLING, default="bicubic", help="output upsampling (default bicubic)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="targets (gradient variants) or ablated copies (ablationcam) per run")
    add_output_args(p, "onnxplain-out")
    p.set_defaults(func=run_cam)

    p = sub.add_parser("reciprocam", help="ReciproCAM: every class's map from one batch of the network's tail, "
                                          "no gradients")
    add_model_args(p)
    _label_arg(p)
    p.add_argument("--feature-layer", default=None, metavar="TENSOR")
    p.add_argument("--feature-layout", choices=("NCHW", "NHWC"), default=None)
    p.add_argument("--kernel", choices=KERNELS, default="gaussian", help="spatial mask (default gaussian, the paper's)")
    p.add_argument("--score", choices=SCORES, default="logits", help="what masked copies are scored by")
    p.add_argument("--upsampling", choices=UPSAMPLING, default="bicubic")
    p.add_argument("--all-classes", action="store_true", help="also write every class's map (h, w, classes) .npy")
    add_output_args(p, "onnxplain-out")
    p.set_defaults(func=run_reciprocam)

    p = sub.add_parser("kernelshap", help="Kernel SHAP: Shapley values of superpixels / grid cells")
    add_model_args(p)
    _label_arg(p)
    p.add_argument("--num-features", type=int, default=49, help="target number of features (default 49)")
    p.add_argument("--num-samples", type=int, default=2048, help="coalitions scored (default 2048)")
    p.add_argument("--segmentation", default="superpixels", metavar="|".join(SEGMENTATIONS) + "|FILE.npy")
    p.add_argument("--fill", default="mean", help="background of 'off' features: " + ", ".join(FILLS) +
                   ", a number or R,G,B (default mean)")
    p.add_argument("--unpaired", action="store_true", help="do not pair each coalition with its complement")
    p.add_argument("--upsampling", choices=LIME_UPSAMPLING, default="nearest")
    add_sampling_args(p, "coalition images")
    p.set_defaults(func=run_kernelshap)

    p = sub.add_parser("export-explainer", help="write a standalone ONNX file returning scores and a saliency map")
    add_model_args(p, image=False)
    p.add_argument("--method", choices=EXPORT_METHODS, default="gradcam", help="explanation method (default gradcam)")
    p.add_argument("--feature-layer", default=None, metavar="TENSOR")
    p.add_argument("--kernel", choices=KERNELS, default="gaussian", help="ReciproCAM's spatial mask")
    p.add_argument("--output", "-o", required=True, help="the .onnx file to write")
    p.set_defaults(func=run_export)


def _report(result, written) -> None:
    for idx, name, score in zip(result.labels, result.label_names, np.ravel(result.scores)):
        print(f"  {name} ({idx}): score {float(score):.4g}")
    for path in written:
        print(f"  wrote {path}")


def run_cam(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    image, name = image_from_args(args)
    fn = CAM_FUNCTIONS[args.variant]
    layer = args.feature_layer[0] if args.feature_layer and len(args.feature_layer) == 1 else args.feature_layer
    options = {} if args.batch_size is None or args.variant == "eigencam" else {"mini_batch_size": args.batch_size}
    with ProgressBar(args.variant, enabled=not args.no_progress) as bar:
        result = fn(model, image, parse_label(args.label), feature_layer=layer, output_upsampling=args.upsampling,
                    feature_layout=args.feature_layout, progress=bar, **options)
    written = write_result(result, image, args.out, f"{name}_{args.variant}", kind="heat", model=model)
    print(f"{args.variant}: feature layer {result.feature_layer!r}")
    _report(result, written)
    return 0


def run_reciprocam(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    image, name = image_from_args(args)
    with ProgressBar("reciprocam", enabled=not args.no_progress) as bar:
        result = recipro_cam(model, image, parse_label(args.label), feature_layer=args.feature_layer,
                             feature_layout=args.feature_layout, kernel=args.kernel, score=args.score,
                             output_upsampling=args.upsampling, progress=bar)
    stem = f"{name}_reciprocam"
    written = write_result(result, image, args.out, stem, kind="heat", model=model)
    if args.all_classes:
        path = pathlib.Path(args.out) / f"{stem}_classes.npy"
        np.save(path, result.class_maps)
        written.append(str(path))
    print(f"reciprocam: feature layer {result.feature_layer!r}, {result.class_maps.shape[2]} class maps of "
          f"{result.class_maps.shape[0]}x{result.class_maps.shape[1]} in {result.timings['inference']:.3f} s")
    _report(result, written)
    return 0


def run_kernelshap(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    image, name = image_from_args(args)
    with ProgressBar("kernelshap", enabled=not args.no_progress) as bar:
        result = kernel_shap(model, image, parse_label(args.label), num_features=args.num_features,
                             num_samples=args.num_samples, segmentation=_segmentation(args.segmentation),
                             fill=parse_value("--fill", args.fill, FILLS), paired=not args.unpaired,
                             output_upsampling=args.upsampling, mini_batch_size=args.batch_size,
                             random_state=args.seed, allow_long=args.allow_long, progress=bar)
    base = np.ravel(result.base_value)
    written = write_result(result, image, args.out, f"{name}_kernelshap", kind="signed", model=model,
                           boundaries=result.feature_map,
                           extra={"base_value": base.tolist(), "exact": result.exact})
    print(f"kernelshap: {result.num_features} features, {'exact' if result.exact else 'sampled'}, base value "
          + ", ".join(f"{b:.4g}" for b in base))
    _report(result, written)
    return 0


def run_export(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    out = pathlib.Path(args.output)
    if out.suffix != ".onnx":
        raise ValueError(f"--output must name a .onnx file; got {args.output!r}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    proto = export_explainer(model, args.method, out, feature_layer=args.feature_layer, kernel=args.kernel)
    h, w = model.input_size
    print(f"export-explainer: {args.method} of {model.path} -> {out} ({out.stat().st_size / 1e6:.1f} MB)")
    print(f"  input  pixels float32 [N, {h}, {w}, 3] ({json.dumps(model.preprocessing.to_dict())} fused), "
          "optional class_index int64 [N] (default -1: the predicted class)")
    print(f"  output scores float32 [N, {model.num_classes}], saliency float32 [N, {h}, {w}]")
    del proto
    return 0
