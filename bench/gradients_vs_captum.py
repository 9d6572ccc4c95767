"""Grad-CAM and gradient attribution on the gradient engine against captum on the torch twin.

Usage (from the repository root)::

    python -m bench.gradients_vs_captum              # about 30 s on 2 cores

Measures, on the bundled EfficientNet-Lite0 and skimage's chelsea (class 285, Egyptian cat):

1. first calls (graph preparation, gradient-graph building, session creation), separately;
2. steady state (median of ``--repeats``): ``engine.grad_cam`` against captum ``LayerGradCam``
   at the head activation of ``models/export_efficientnet_lite0.build_torch_model()`` with a
   Softmax on top (the reduction ``engine.grad_cam`` uses by default); ``gradient`` against
   ``Saliency``; integrated gradients with 25 steps against ``IntegratedGradients``
   (``riemann_trapezoid``, all 25 path images in one batch, as the engine does);
3. agreement of the maps (correlation; captum's trapezoid is the engine's times 24/25).

Both run with the same number of threads (torch is set to ORT's default: all cores).
Public API only (``engine.load_model``, ``engine.grad_cam``, ``engine.gradient_attribution``).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np


def _versions() -> str:
    import captum
    import onnxruntime
    import torch

    return (f"python {platform.python_version()}, numpy {np.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"torch {torch.__version__}, captum {captum.__version__}")


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _corr(a, b) -> float:
    b = b.detach().numpy() if hasattr(b, "detach") else b
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=25, help="integrated-gradients steps (default 25)")
    args = parser.parse_args(argv)

    import torch
    from captum.attr import IntegratedGradients, LayerGradCam, Saliency
    from skimage.data import chelsea

    import engine

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models"))
    from export_efficientnet_lite0 import WithSoftmax, build_torch_model

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    label = 285
    image = chelsea()
    model = engine.load_model()
    pixels, _ = model.prepare(image)
    net = build_torch_model()
    twin = WithSoftmax(net).eval()
    x = torch.from_numpy(model.to_native(pixels[None]))
    black = torch.from_numpy(model.to_native(np.zeros_like(pixels)[None]))

    # captum first: ORT's intra-op threads spin for a while after each run and would steal the
    # cores from torch if the two were interleaved.
    theirs_gc, ref_gc = _median_time(lambda: LayerGradCam(twin, net._swish).attribute(  # the head call of _swish
        x, target=label, relu_attributions=True), args.repeats)
    theirs_gr, ref_gr = _median_time(lambda: Saliency(twin).attribute(x.clone().requires_grad_(), target=label,
                                                                      abs=False), args.repeats)
    theirs_ig, ref_ig = _median_time(lambda: IntegratedGradients(twin).attribute(
        x, baselines=black, target=label, n_steps=args.steps, method="riemann_trapezoid"), args.repeats)

    t = time.perf_counter()
    engine.grad_cam(model, image, label)
    first_gc = time.perf_counter() - t
    t = time.perf_counter()
    engine.gradient_attribution(model, image, label, method="integrated-gradients", num_steps=args.steps)
    first_ig = time.perf_counter() - t
    ours_gc, gc = _median_time(lambda: engine.grad_cam(model, image, label, output_upsampling="none"), args.repeats)
    ours_gr, gr = _median_time(lambda: engine.gradient_attribution(model, pixels, label), args.repeats)
    ours_ig, ig = _median_time(lambda: engine.gradient_attribution(
        model, pixels, label, method="integrated-gradients", num_steps=args.steps), args.repeats)

    a, _ = model.preprocessing.affine
    rows = [
        ("Grad-CAM (head Clip 1280x7x7)", ours_gc, theirs_gc, _corr(gc.score_map, ref_gc[0, 0])),
        ("gradient (Saliency)", ours_gr, theirs_gr,
         _corr(gr.gradients, ref_gr[0].detach().numpy().transpose(1, 2, 0) * a)),
        (f"integrated gradients ({args.steps} steps)", ours_ig, theirs_ig,
         _corr(ig.gradients, ref_ig[0].detach().numpy().transpose(1, 2, 0))),
    ]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {threads} cores; {_versions()}")
    print(f"threads: torch {torch.get_num_threads()}, onnxruntime default (all cores)")
    print(f"first calls (prepare + gradient graph + sessions): grad_cam {first_gc:.2f} s, "
          f"integrated gradients {first_ig:.2f} s")
    print(f"\n{'method':<34} {'onnxplain':>10} {'captum':>10} {'ratio':>7} {'map corr':>9}")
    for name, ours, theirs, corr in rows:
        print(f"{name:<34} {ours * 1e3:8.1f}ms {theirs * 1e3:8.1f}ms {ours / theirs:7.2f} {corr:9.5f}")
    print("\nratio = onnxplain / captum (lower is faster); times are medians of "
          f"{args.repeats} steady-state calls, onnxplain including image preparation and result assembly.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
