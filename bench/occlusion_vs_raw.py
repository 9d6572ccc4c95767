"""Occlusion sensitivity: engine vs raw ONNX Runtime inference vs captum ``Occlusion``.

Usage (from the repository root)::

    python -m bench.occlusion_vs_raw            # about 2-3 minutes on 2 busy cores; --no-captum: 40 s

Setting: the bundled EfficientNet-Lite0 (224 x 224 input) on skimage's chelsea, class 285
(Egyptian cat). "13 x 13 windows" is read as a 13 x 13 grid of mask positions: 32 x 32
windows at stride 16 fully inside the image (``mask_clipping=False``, starts 0, 16, ..., 192),
169 occluded images, the per-channel image mean as fill. That is exactly captum's
``Occlusion(sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16))`` placement
((224 - 32) is a multiple of 16), so the two maps are compared too.

Rows:

1. numba compile time of the occlusion kernels (a fresh process with an empty cache), and
   the engine's first call in this process (kernels loaded from the on-disk cache, or
   compiled when there is none), reported separately;
2. ``engine.occlusion_sensitivity`` steady state (median of ``--repeats``, interleaved with
   row 3 so that a shared machine's drifting load hits both alike), batch 128;
3. raw ORT: the same 169 occluded images (built beforehand, not timed) pushed through an
   ``onnxruntime.InferenceSession`` on the same ONNX file at the same batch size, plus the
   one unoccluded image the method also scores; target: engine <= 1.05 x raw;
4. captum ``Occlusion`` on the torch twin (``models/export_efficientnet_lite0.build_torch_model``
   with a Softmax on top, as the ONNX graph), ``perturbations_per_eval=1`` (captum's default)
   and ``=128`` (our batch size), one run each; target: engine <= 0.3 x captum.

torch runs with ORT's default thread count (all cores). Public engine API only.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

WINDOW, STRIDE, BATCH = 32, 16, 128


def _median_time(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores (load average {load:.1f} at start)"


def _versions() -> str:
    import captum
    import numba
    import onnxruntime
    import torch

    return (f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
            f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, captum {captum.__version__}")


def _cold_compile() -> float:
    """Seconds to compile the occlusion kernels (float32 NCHW) in a fresh process with an empty cache."""
    import subprocess
    import tempfile

    code = ("import time, numpy as np\n"
            "from kernels.occlusion import occlude_batch, accumulate_windows\n"
            "t = time.perf_counter()\n"
            "b = np.zeros((3, 8, 8), np.float32); r = np.zeros(1, np.int64)\n"
            "occlude_batch(b, np.zeros(3, np.float32), r, r, (2, 2), 'NCHW', np.empty((1, 3, 8, 8), np.float32))\n"
            "accumulate_windows(np.zeros((1, 1)), r, r, (2, 2), np.zeros((8, 8, 1)), np.zeros((8, 8), np.int64))\n"
            "print(time.perf_counter() - t)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": root}
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                             check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-captum", action="store_true", help="skip the captum rows")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    from skimage.data import chelsea

    import engine

    print(f"machine: {_machine()}")
    print(f"versions: {_versions()}")
    image = chelsea()
    kw = dict(mask_size=WINDOW, stride=STRIDE, mask_clipping=False, output_upsampling="none",
              mini_batch_size=BATCH)

    t = time.perf_counter()
    model = engine.load_model(execution_environment="cpu")
    t_load = time.perf_counter() - t
    label = model.classify(image, top_k=1)[0][0]
    t = time.perf_counter()
    tiny = engine.occlusion_sensitivity(model, image, label, mask_size=112, stride=112, mask_clipping=False,
                                        output_upsampling="none")
    t_first = time.perf_counter() - t
    first_masking = tiny.timings["masking"]

    t_cold = _cold_compile()
    res = engine.occlusion_sensitivity(model, image, label, **kw)
    n = int(np.prod(res.params["num_positions"]))
    assert res.params["num_positions"] == [13, 13], res.params

    # raw ORT on the identical occluded images (built with numpy, outside the timing)
    pixels, _ = model.prepare(image)
    fill = pixels.reshape(-1, 3).mean(axis=0)
    batch = np.repeat(pixels[None], n, axis=0)
    for i, (r, c) in enumerate((r, c) for r in res.window_rows for c in res.window_cols):
        batch[i, r:r + WINDOW, c:c + WINDOW] = fill
    native = model.to_native(batch)
    base = model.to_native(pixels[None])
    session = ort.InferenceSession(model.path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def raw():
        session.run(None, {name: base})
        return [session.run(None, {name: native[s:s + BATCH]})[0] for s in range(0, n, BATCH)]

    raw()  # warm-up
    # interleaved, so drifting load on a shared machine hits both alike
    t_engine_all, t_raw_all, timings = [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        res = engine.occlusion_sensitivity(model, image, label, **kw)
        t_engine_all.append(time.perf_counter() - t)
        timings.append(res.timings)
        t = time.perf_counter()
        raw_out = raw()
        t_raw_all.append(time.perf_counter() - t)
    t_engine, t_raw = statistics.median(t_engine_all), statistics.median(t_raw_all)
    inference = statistics.median(t["inference"] for t in timings)
    masking = statistics.median(t["masking"] for t in timings)
    raw_scores = np.concatenate(raw_out)[:, label]
    np.testing.assert_allclose(res.position_map.ravel(), res.scores[0] - raw_scores, rtol=0, atol=1e-5)

    rows = [("numba compile of the occlusion kernels (empty cache)", t_cold, "fresh process, float32 NCHW"),
            ("engine first call (numba load/compile, session)", t_first, f"masking {first_masking:.2f} s; "
             f"load_model {t_load:.2f} s not included"),
            (f"engine occlusion_sensitivity ({n} images, batch {BATCH})", t_engine,
             f"inference {inference:.2f} s, masking {masking * 1e3:.1f} ms (medians)"),
            (f"raw ORT inference ({n} + 1 images, batch {BATCH})", t_raw, "")]
    ratios = {"engine / raw ORT": t_engine / t_raw}

    if not args.no_captum:
        import torch
        from captum.attr import Occlusion

        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models"))
        from export_efficientnet_lite0 import WithSoftmax, build_torch_model

        torch.set_num_threads(os.cpu_count() or 1)
        net = WithSoftmax(build_torch_model()).eval()
        spec = model.input_spec
        x = torch.from_numpy(base.copy())
        baseline = torch.from_numpy((spec.scale * fill + spec.offset).astype(np.float32).reshape(1, 3, 1, 1))
        occ = Occlusion(net)

        def captum(ppe):
            with torch.no_grad():
                return occ.attribute(x, sliding_window_shapes=(3, WINDOW, WINDOW), strides=(3, STRIDE, STRIDE),
                                     baselines=baseline, target=label, perturbations_per_eval=ppe)

        with torch.no_grad():
            net(x)  # warm-up
        # one run each: captum's default (one image per forward) alone takes over a minute on 2 cores
        t_c1, attr = _median_time(lambda: captum(1), 1)
        t_cb, _ = _median_time(lambda: captum(BATCH), 1)
        diff = float(np.abs(attr[0, 0].numpy() - res.score_map).max() / np.abs(res.score_map).max())
        rows += [("captum Occlusion, perturbations_per_eval=1 (default)", t_c1, f"map max rel diff {diff:.1e}"),
                 (f"captum Occlusion, perturbations_per_eval={BATCH}", t_cb, "")]
        ratios["engine / captum (ppe=1)"] = t_engine / t_c1
        ratios[f"engine / captum (ppe={BATCH})"] = t_engine / t_cb

    print(f"\nocclusion, 13 x 13 positions of {WINDOW} x {WINDOW} windows (stride {STRIDE}) on 224 x 224, "
          f"median of {args.repeats} (captum: 1 run)")
    print(f"{'':<58} {'seconds':>8}")
    for what, sec, note in rows:
        print(f"{what:<58} {sec:8.3f}  {note}")
    print()
    for what, ratio in ratios.items():
        print(f"{what:<58} {ratio:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
