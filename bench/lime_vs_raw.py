"""LIME overhead against raw ONNX Runtime scoring and against the ``lime`` package.

Usage (from the repository root)::

    python -m bench.lime_vs_raw --samples 512            # about 1-3 minutes on 2 cores

Measures, on the bundled EfficientNet-Lite0 and skimage's chelsea:

1. numba compile time (a fresh process with an empty cache) and the first call's cache
   load, separately;
2. ``engine.image_lime`` with N samples (steady state) against ORT alone scoring N native
   images at the same mini-batch size (the floor: LIME cannot be faster than its model
   calls); target ratio <= 1.05. On a busy machine the model time swings by tens of
   percent between runs, so runs are interleaved, the best of each is kept, and the
   contention-free estimate (ORT alone + LIME's own work) / ORT alone is printed too;
3. ``lime`` 0.2.0.1 ``LimeImageExplainer.explain_instance`` on the same working image, the
   same ORT model, the same SLIC features, mean fill and N samples;
4. peak traced memory (tracemalloc: numpy and Python allocations, not ORT's arena) of
   ``image_lime`` with 1k and 4k samples; memory should not grow with N.

Public API only (``engine.load_model``, ``engine.image_lime``, ``Model`` methods).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time
import tracemalloc

import numpy as np


def _versions() -> str:
    import numba
    import onnxruntime
    import sklearn

    import lime

    return (f"python {platform.python_version()}, numpy {np.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"numba {numba.__version__}, scikit-learn {sklearn.__version__}, "
            f"lime {getattr(lime, '__version__', '0.2.0.1')}")


def _ort_alone(model, native: np.ndarray, n: int, batch: int) -> float:
    """Seconds to score n images with ORT at ``batch`` per call (inputs built beforehand)."""
    t = time.perf_counter()
    for start in range(0, n, batch):
        b = min(batch, n - start)
        model.scores_native(native[:b])
    return time.perf_counter() - t


def _lime_package(model, pixels: np.ndarray, labels: np.ndarray, label: int, n: int, batch: int) -> float:
    """Seconds for lime's explain_instance with the same model, features, fill and N."""
    from lime import lime_image

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        return model.scores_native(model.to_native(images.astype(np.float32)))

    explainer = lime_image.LimeImageExplainer(kernel_width=0.25, random_state=0)
    fill = tuple(float(v) for v in pixels.reshape(-1, 3).mean(axis=0))
    t = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # lime's tqdm bar
        explainer.explain_instance(pixels.astype(np.float64), classifier_fn, labels=(label,), top_labels=None,
                                   hide_color=fill, num_samples=n, batch_size=batch,
                                   segmentation_fn=lambda _img: labels)
    return time.perf_counter() - t


def _cold_compile_seconds() -> float:
    """First image_lime call in a fresh process with an empty numba cache (pure JIT compile + imports)."""
    import subprocess
    import tempfile

    code = ("import time, numpy as np, engine; m = engine.load_model(); img = np.zeros((32, 32, 3), np.uint8); "
            "t = time.perf_counter(); engine.image_lime(m, img, 0, num_samples=2, segmentation='grid', "
            "num_features=4, random_state=0); print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _peak_memory(model, image, label: int, n: int, batch: int) -> tuple[float, float]:
    """(peak traced MiB, seconds) of one image_lime call with n samples."""
    import engine

    tracemalloc.start()
    t = time.perf_counter()
    engine.image_lime(model, image, label, num_samples=n, mini_batch_size=batch, random_state=0)
    seconds = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=512, help="N synthetic images (default 512)")
    p.add_argument("--batch", type=int, default=128, help="mini-batch size (default 128)")
    p.add_argument("--memory-samples", type=int, nargs=2, default=(1024, 4096), metavar=("N1", "N2"))
    p.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    p.add_argument("--no-lime", action="store_true", help="skip the lime package run")
    p.add_argument("--repeat", type=int, default=3, help="runs of ORT alone and image_lime, interleaved; best kept")
    args = p.parse_args(argv)

    import engine
    from skimage.data import chelsea

    n, batch = args.samples, args.batch
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"versions: {_versions()}")
    t = time.perf_counter()
    model = engine.load_model()
    load_s = time.perf_counter() - t
    image = chelsea()
    label = model.classify(image, top_k=1)[0][0]

    cold_s = _cold_compile_seconds()
    t = time.perf_counter()
    engine.image_lime(model, image, label, num_samples=2, segmentation="grid", num_features=4, random_state=0)
    first_s = time.perf_counter() - t

    pixels, _ = model.prepare(image)
    native = model.to_native(np.repeat(pixels[None], min(batch, n), axis=0))
    model.scores_native(native[:2])  # session warm-up
    rows = []
    ort_s, lime_s, r = float("inf"), float("inf"), None
    for _ in range(max(1, args.repeat)):  # interleaved, best of each: robust to a busy machine
        ort_s = min(ort_s, _ort_alone(model, native, n, batch))
        run = engine.image_lime(model, image, label, num_samples=n, mini_batch_size=batch, random_state=0)
        if run.timings["total"] < lime_s:
            lime_s, r = run.timings["total"], run
    rows.append(("ORT alone, N images", ort_s, 1.0))
    rows.append(("engine.image_lime total", lime_s, lime_s / ort_s))
    for phase in ("segmentation", "sampling", "inference", "surrogate"):
        rows.append((f"  of which {phase}", r.timings[phase], r.timings[phase] / ort_s))
    own = lime_s - r.timings["inference"]
    rows.append(("  LIME's own work (total - inference)", own, own / ort_s))
    rows.append(("(ORT alone + own work) / ORT alone", ort_s + own, (ort_s + own) / ort_s))
    if not args.no_lime:
        from skimage.segmentation import slic

        lo, hi = float(pixels.min()), float(pixels.max())
        labels = slic((pixels - lo) / (hi - lo), n_segments=49, compactness=10, start_label=0, channel_axis=-1)
        pkg_s = _lime_package(model, pixels, labels, label, n, batch)
        rows.append(("lime 0.2.0.1 explain_instance", pkg_s, pkg_s / ort_s))

    print(f"\nbundled model load {load_s:.2f} s; numba compile, cold cache (fresh process, tiny call) {cold_s:.2f} s; "
          f"first call here (cache load, imports) {first_s:.2f} s; neither is in the rows below")
    print(f"N = {n} samples, mini-batch {batch}, label {label} ({model.class_names[label]}), "
          f"{r.num_features} superpixels; best of {max(1, args.repeat)} interleaved runs\n")
    print(f"{'what':<38} {'seconds':>9} {'x ORT':>7}")
    for name, s, ratio in rows:
        print(f"{name:<38} {s:9.3f} {ratio:7.3f}")
    if not args.no_memory:
        print(f"\n{'image_lime peak traced memory':<38} {'MiB':>9} {'seconds':>9}")
        for m in args.memory_samples:
            mib, s = _peak_memory(model, image, label, m, batch)
            print(f"{f'  num_samples {m}':<38} {mib:9.1f} {s:9.2f}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
