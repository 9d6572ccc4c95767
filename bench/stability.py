"""Stability of the stochastic methods: how much does the map depend on the random seed?

For LIME, RISE and SmoothGrad, at several sample counts, the map is computed with
``--seeds`` different seeds and the mean pairwise Spearman rank correlation of the maps is
reported (1 = the seed does not matter). Uses the public API only; the first call of each
method (numba compilation, session and gradient-engine construction) is made before timing.
Writes ``stability.md`` and ``stability.json`` into ``--out``.

    python -m bench.stability --light          # ~2 minutes on 2 CPU cores
    python -m bench.stability                  # heavier sample counts
    python -m bench.stability --features       # feature weights: LIME / Kernel SHAP vs the lime package
    python -m bench.stability --convergence    # main-job presets: each budget against a reference at 8x the main preset

``--convergence`` writes ``convergence.md/.json``: for the sampling methods of the main job
(LIME, Kernel SHAP, RISE with the registry's "main" preset), the Spearman and Pearson
correlation of the result at several budgets with a reference computed at 8x the main
preset's budget (another seed): how close the main job's maps are to what the method converges to,
and what each halving of the budget costs. LIME and Kernel SHAP are compared on their
per-superpixel weights, RISE on its map.

``--features`` writes ``stability-features.md/.json``: the Spearman correlation of the
per-feature weights (not the painted maps) between seeds, on the same quickshift segments
of the working image (lime's defaults: kernel_size 4, max_dist 200, ratio 0.2), for
onnxplain's LIME defaults (ridge, paired sampling), LIME with MATLAB's settings (tree,
Bernoulli sampling), Kernel SHAP and the ``lime`` package (Ridge, its own sampling and
superpixel-mean fill), at 250 / 500 / 1000 / 2000 samples.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import platform
import time

import numpy as np
import onnxplain
from onnxplain.sanity import spearman

#: method (a name in onnxplain.METHODS) -> (sample-count parameter, light counts, full counts)
PLAN = {
    "lime": ("num_samples", [64, 256], [128, 512, 2048]),
    "rise": ("num_masks", [100, 500], [250, 1000, 4000]),
    "smoothgrad": ("num_samples", [5, 25], [5, 25, 100]),
}


def _versions() -> dict[str, str]:
    import numba
    import onnxruntime

    return {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__,
            "numba": numba.__version__, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "cpus": str(os.cpu_count())}


def run(methods: list[str], seeds: int, light: bool, image_name: str) -> list[dict]:
    import skimage.data

    model = onnxplain.load_model()
    image = getattr(skimage.data, image_name)()
    label = model.classify(image, top_k=1)[0][0]
    rows = []
    for method in methods:
        param, light_counts, full_counts = PLAN[method]
        func = onnxplain.METHODS[method]
        func(model, image, label, **{param: min(light_counts), "random_state": 999})  # warm-up
        for n in (light_counts if light else full_counts):
            maps, t0 = [], time.perf_counter()
            for seed in range(seeds):
                maps.append(np.asarray(func(model, image, label, **{param: n, "random_state": seed}).score_map))
            seconds = (time.perf_counter() - t0) / seeds
            rhos = [spearman(a, b) for a, b in itertools.combinations(maps, 2)]
            rows.append({"method": method, param: n, "samples": n, "seeds": seeds,
                         "mean_pairwise_spearman": float(np.nanmean(rhos)), "min_pairwise_spearman": float(np.nanmin(rhos)),
                         "seconds_per_map": round(seconds, 3)})
            print(f"{method:<11} {param}={n:<5} mean rho {rows[-1]['mean_pairwise_spearman']:.3f} "
                  f"(min {rows[-1]['min_pairwise_spearman']:.3f}), {seconds:.2f} s/map", flush=True)
    return rows


FEATURE_COUNTS = [250, 500, 1000, 2000]


def feature_rows(seeds: int, counts: list[int], image_name: str,
                 only: list[str] | None = None) -> tuple[list[dict], int]:
    """Seed stability of feature weights on fixed quickshift segments (module notes)."""
    import skimage.data
    from skimage.segmentation import quickshift

    model = onnxplain.load_model()
    pixels = model.prepare(getattr(skimage.data, image_name)())[0]          # the working image (224 x 224)
    segments = quickshift(pixels / 255.0, kernel_size=4, max_dist=200, ratio=0.2, rng=42)
    label = model.classify(pixels, top_k=1)[0][0]
    f = int(segments.max()) + 1

    def ours(**fixed):
        return lambda n, seed: onnxplain.image_lime(model, pixels, label, segmentation=segments, num_samples=n,
                                                    random_state=seed, **fixed).feature_importance

    def shap(n, seed):
        return onnxplain.kernel_shap(model, pixels, label, segmentation=segments, num_samples=n,
                                     random_state=seed).feature_importance

    def lime_package(n, seed):
        from lime.lime_image import LimeImageExplainer

        def classify(batch):
            return model.scores_native(model.to_native(np.asarray(batch, np.float32)))

        exp = LimeImageExplainer(random_state=seed).explain_instance(
            pixels.astype(np.float64), classify, labels=[label], top_labels=None, num_features=f, num_samples=n,
            batch_size=128, segmentation_fn=lambda _: segments, random_seed=seed)
        weights = np.zeros(f)
        for idx, w in exp.local_exp[label]:
            weights[idx] = w
        return weights

    runs = {"lime (onnxplain defaults: ridge, paired)": ours(),
            "lime (MATLAB: tree, bernoulli)": ours(surrogate="tree", sampling="bernoulli"),
            "lime (lasso, bernoulli)": ours(surrogate="linear", sampling="bernoulli"),
            "kernelshap (onnxplain)": shap,
            "lime package 0.2 (Ridge)": lime_package}
    rows = []
    for name, fn in runs.items():
        if only and not any(o in name for o in only):
            continue
        fn(64, 999)                                                          # warm-up
        for n in counts:
            t0 = time.perf_counter()
            weights = [np.asarray(fn(n, seed), np.float64) for seed in range(seeds)]
            seconds = (time.perf_counter() - t0) / seeds
            rhos = [spearman(a, b) for a, b in itertools.combinations(weights, 2)]
            rows.append({"method": name, "samples": n, "seeds": seeds, "features": f,
                         "mean_pairwise_spearman": float(np.nanmean(rhos)),
                         "min_pairwise_spearman": float(np.nanmin(rhos)), "seconds_per_run": round(seconds, 3)})
            print(f"{name:<44} n={n:<5} mean rho {rows[-1]['mean_pairwise_spearman']:.3f} "
                  f"(min {rows[-1]['min_pairwise_spearman']:.3f}), {seconds:.2f} s/run", flush=True)
    return rows, f


def main_features(args) -> int:
    counts = [int(c) for c in args.counts.split(",")] if args.counts else FEATURE_COUNTS
    rows, f = feature_rows(args.seeds, counts, args.image, args.only)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"image": f"skimage.data.{args.image}() at the model's 224 x 224", "features": f"{f} quickshift segments",
            "model": "bundled EfficientNet-Lite0", "seeds": args.seeds, "versions": _versions()}
    (out / "stability-features.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n",
                                                 encoding="utf-8")
    lines = [f"Seed stability of feature weights, {meta['image']}, {meta['features']}, {meta['model']}, "
             f"{args.seeds} seeds; " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), "",
             "| method | samples | mean pairwise Spearman | min | s / run |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['samples']} | {r['mean_pairwise_spearman']:.3f} | {r['min_pairwise_spearman']:.3f} "
              f"| {r['seconds_per_run']:.2f} |" for r in rows]
    (out / "stability-features.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out / 'stability-features.md'}")
    return 0


#: method -> (sample-count parameter, budgets compared, reference budget, variants: row name -> options;
#: the reference runs with the method's main preset as it is)
CONVERGENCE = {"lime": ("num_samples", [256, 512, 1024, 2048], 16384, {"lime": {}}),
               "kernelshap": ("num_samples", [256, 512, 1024], 8192, {"kernelshap": {}}),
               "rise": ("num_masks", [500, 1000, 2000], 16000,
                        {"rise (centered)": {}, "rise (paper sum)": {"estimator": "paper"}})}


def convergence_rows(seeds: int, image_name: str, methods: list[str]) -> list[dict]:
    """Each budget's result against the method's high-budget reference (module notes)."""
    import skimage.data

    model = onnxplain.load_model()
    image = getattr(skimage.data, image_name)()
    label = model.classify(image, top_k=1)[0][0]

    def values(exp) -> np.ndarray:
        fi = getattr(exp, "feature_importance", None)
        return np.ravel(np.asarray(fi if fi is not None else exp.score_map, np.float64))

    rows = []
    for method in methods:
        param, budgets, ref_n, variants = CONVERGENCE[method]
        spec = onnxplain.METHODS[method]
        run = lambda n, seed, **kw: spec(model, image, label, preset="main", **{param: n, "random_state": seed}, **kw)  # noqa: E731
        t0 = time.perf_counter()
        ref = values(run(ref_n, 1000))
        print(f"{method:<11} reference {param}={ref_n}: {time.perf_counter() - t0:.1f} s", flush=True)
        for (name, options), n in itertools.product(variants.items(), budgets):
            t0 = time.perf_counter()
            got = [values(run(n, seed, **options)) for seed in range(seeds)]
            seconds = (time.perf_counter() - t0) / seeds
            rho = [spearman(g, ref) for g in got]
            r = [float(np.corrcoef(g, ref)[0, 1]) for g in got]
            rows.append({"method": name, param: n, "samples": n, "reference": ref_n, "seeds": seeds,
                         "spearman_mean": float(np.mean(rho)), "spearman_min": float(np.min(rho)),
                         "pearson_mean": float(np.mean(r)), "pearson_min": float(np.min(r)),
                         "seconds_per_run": round(seconds, 2),
                         "seed_pair_spearman": float(spearman(got[0], got[1])) if len(got) > 1 else None,
                         "main_preset": not options and n == onnxplain.METHODS[method].presets["main"][param]})
            print(f"{name:<17} {param}={n:<5} vs {ref_n}: Spearman {rows[-1]['spearman_mean']:.3f} "
                  f"(min {rows[-1]['spearman_min']:.3f}), Pearson {rows[-1]['pearson_mean']:.3f}, {seconds:.1f} s/run",
                  flush=True)
    return rows


def main_convergence(args) -> int:
    methods = args.methods or list(CONVERGENCE)
    unknown = sorted(set(methods) - set(CONVERGENCE))
    if unknown:
        raise SystemExit(f"--convergence measures {', '.join(CONVERGENCE)}; not {', '.join(unknown)}")
    rows = convergence_rows(args.seeds, args.image, methods)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"image": f"skimage.data.{args.image}()", "model": "bundled EfficientNet-Lite0", "seeds": args.seeds,
            "preset": "main (every other option as the main job)", "versions": _versions()}
    (out / "convergence.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    lines = [f"Convergence of the main job's sampling methods, {meta['image']}, {meta['model']}, "
             f"registry preset 'main', {args.seeds} seeds per budget against one reference run (seed 1000); "
             + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), "",
             "| method | samples | reference | Spearman vs reference (mean) | min | Pearson (mean) | seeds 0 vs 1 "
             "| s / run | main preset |", "|---|---|---|---|---|---|---|---|---|"]
    pair = lambda r: "" if r["seed_pair_spearman"] is None else f"{r['seed_pair_spearman']:.3f}"  # noqa: E731
    lines += [f"| {r['method']} | {r['samples']} | {r['reference']} | {r['spearman_mean']:.3f} | {r['spearman_min']:.3f} "
              f"| {r['pearson_mean']:.3f} | {pair(r)} | {r['seconds_per_run']:.1f} | {'yes' if r['main_preset'] else ''} |"
              for r in rows]
    (out / "convergence.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out / 'convergence.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="seed stability of LIME, RISE and SmoothGrad maps")
    p.add_argument("--methods", nargs="+", default=None, choices=sorted(set(PLAN) | set(CONVERGENCE)),
                   help="default: every method of the chosen mode")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--light", action="store_true", help="small sample counts (quick)")
    p.add_argument("--image", default="chelsea", help="a skimage.data sample photograph (default chelsea)")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--features", action="store_true",
                   help="feature-weight stability of LIME / Kernel SHAP vs the lime package (module notes)")
    p.add_argument("--counts", default=None, help="with --features: comma-separated sample counts")
    p.add_argument("--only", nargs="+", default=None, help="with --features: rows whose name contains one of these")
    p.add_argument("--convergence", action="store_true",
                   help="main-job presets of LIME / Kernel SHAP / RISE against a reference at 8x the main preset (module notes)")
    args = p.parse_args(argv)
    if args.convergence:
        return main_convergence(args)
    if args.features:
        return main_features(args)
    methods = args.methods or list(PLAN)
    unknown = sorted(set(methods) - set(PLAN))
    if unknown:
        raise SystemExit(f"seed stability measures {', '.join(PLAN)}; not {', '.join(unknown)}")
    rows = run(methods, args.seeds, args.light, args.image)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"image": f"skimage.data.{args.image}()", "model": "bundled EfficientNet-Lite0", "seeds": args.seeds,
            "light": args.light, "versions": _versions()}
    (out / "stability.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    lines = [f"Seed stability, {meta['image']}, {meta['model']}, {args.seeds} seeds; "
             + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), "",
             "| method | samples | mean pairwise Spearman | min | s / map |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['samples']} | {r['mean_pairwise_spearman']:.3f} | {r['min_pairwise_spearman']:.3f} | "
              f"{r['seconds_per_map']:.2f} |" for r in rows]
    (out / "stability.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out / 'stability.md'} and {out / 'stability.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
