"""Stability of the stochastic methods: how much does the map depend on the random seed?

For LIME, RISE and SmoothGrad, at several sample counts, the map is computed with
``--seeds`` different seeds and the mean pairwise Spearman rank correlation of the maps is
reported (1 = the seed does not matter). Uses the public API only; the first call of each
method (numba compilation, session and gradient-engine construction) is made before timing.
Writes ``stability.md`` and ``stability.json`` into ``--out``.

    python -m bench.stability --light          # ~2 minutes on 2 CPU cores
    python -m bench.stability                  # heavier sample counts
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="seed stability of LIME, RISE and SmoothGrad maps")
    p.add_argument("--methods", nargs="+", default=list(PLAN), choices=list(PLAN))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--light", action="store_true", help="small sample counts (quick)")
    p.add_argument("--image", default="chelsea", help="a skimage.data sample photograph (default chelsea)")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)
    rows = run(args.methods, args.seeds, args.light, args.image)
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
