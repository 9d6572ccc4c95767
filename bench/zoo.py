"""``python -m bench --zoo``: gradient cost on every real-zoo row (tests/data/real_zoo.py).

Per (row, exporter), in a fresh worker process each (so one row's ONNX Runtime arenas and
caches do not bias the next):

- **first call s**: ``load_model`` + the first ``gradient_attribution(method="gradient")``
  (graph preparation, gradient-graph build, session creation, one run): what a user waits
  for the first map;
- **forward ms**: ``Model.run_native`` at batch 1 (the model's own ONNX Runtime session);
- **gradient ms**: the gradient engine's run at batch 1 (raw pixels in, the input gradient
  of the top logit out: the fused preprocessing, the forward and the reverse pass);
- **ratio** = gradient / forward (the issue's bar: <= 4x).

Times are the median of interleaved (forward, gradient) pairs after one warm-up each, at
least ``--repeats`` pairs and until 2 s are measured (at most 300); **CPU ratio** is the same
ratio in CPU time (all threads of the process; at ``--threads 1`` the least load-sensitive
number on a shared machine). Models come from the
zoo cache (exported on demand, ``tests/data/make_real_zoo.py``). Rows over 4x are listed
under the table. **first call CPU s** is the worker's CPU time for the first call (all
threads): on a shared machine the wall time moves with other people's load, the CPU time
much less.

Besides the test zoo's reduced rows, :data:`FULL_SIZE` adds full-size networks the tests do
not run: ``vit_b16`` (timm ``vit_base_patch16_224``, 86 M parameters, 330 MB of weights,
classic exporter, seeded random weights; the issue's first-call target: under 20 s).

    python -m bench --zoo                                 # every row, both exporters
    python -m bench --zoo --rows vit,levit --exporters dynamo --threads 2
    python -m bench --zoo --out bench/results             # + <date>-zoo.{md,json}
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATIO_BAR = 4.0
MAX_PAIRS = 300  # cheap rows: enough pairs for a stable median within the 2 s
#: full-size rows (bench only): name -> (exporters, Row keyword arguments)
FULL_SIZE = {"vit_b16": (("torchscript",), dict(family="ViT", source="timm", arch="vit_base_patch16_224", size=224,
                                                 note="full ViT-B/16 (bench only)"))}


def _row(name: str):
    from tests.data import real_zoo

    if name in FULL_SIZE:
        return real_zoo.Row(name, **FULL_SIZE[name][1])
    return real_zoo.BY_NAME[name]


def measure(name: str, exporter: str, threads: int, repeats: int) -> dict:
    """One row's timings (runs in the worker process)."""
    import numpy as np

    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import onnxplain

    from tests.data import make_real_zoo, real_zoo

    row = _row(name)
    path = make_real_zoo.ensure(row, exporter)
    image = real_zoo.test_image(row.size)
    kwargs = {}
    try:
        import inspect
        if "threads" in inspect.signature(onnxplain.load_model).parameters:
            kwargs["threads"] = threads
    except (TypeError, ValueError):
        pass
    t0, c0 = time.perf_counter(), time.process_time()
    model = onnxplain.load_model(path, **kwargs)
    onnxplain.gradient_attribution(model, image, method="gradient")
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0

    pixels = image[None].astype(np.float32)
    x = model.to_native(pixels)
    out = model.run_native(x)
    label = int(np.argmax(out[0]))
    engine = model.gradient_engine()
    seed = model.seed_for(label)[None]

    def fwd():
        model.run_native(x)

    def grad():
        engine.run(pixels, seed, wrt=[engine.input_name])

    fwd(), grad()
    f, g, fc, gc = [], [], [], []
    spent = time.perf_counter()
    while len(f) < MAX_PAIRS and (len(f) < repeats or time.perf_counter() - spent < 2.0):
        t, c = time.perf_counter(), time.process_time()
        fwd()
        f.append(time.perf_counter() - t)
        fc.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        grad()
        g.append(time.perf_counter() - t)
        gc.append(time.process_time() - c)
    fm, gm = statistics.median(f) * 1e3, statistics.median(g) * 1e3
    fcm, gcm = statistics.median(fc) * 1e3, statistics.median(gc) * 1e3
    return {"row": name, "exporter": exporter, "family": row.family, "size": row.size, "first_call_s": first,
            "first_call_cpu_s": first_cpu, "forward_ms": fm, "gradient_ms": gm, "ratio": gm / fm,
            "forward_cpu_ms": fcm, "gradient_cpu_ms": gcm, "cpu_ratio": gcm / max(fcm, 1e-9), "pairs": len(f)}


def _worker(name: str, exporter: str, threads: int, repeats: int, timeout: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ONNXPLAIN_BENCH_ZOO_THREADS": str(threads)}
    code = ("import json,sys; sys.path.insert(0, %r); from bench.zoo import measure; "
            "print('RESULT ' + json.dumps(measure(%r, %r, %d, %d)))" % (ROOT, name, exporter, threads, repeats))
    try:
        p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                           env=env)
    except subprocess.TimeoutExpired:
        return {"row": name, "exporter": exporter, "error": f"no result in {timeout} s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = " / ".join((p.stderr or "").strip().splitlines()[-2:])
    return {"row": name, "exporter": exporter, "error": f"exit {p.returncode}: {tail[:200]}"}


def table(results: list[dict]) -> str:
    lines = ["| row | exporter | input | first call s | first call CPU s | forward ms | gradient ms | gradient / forward "
             "| CPU ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['exporter']} | | | | | | error: {r['error'].replace('|', '/')} | |")
            continue
        flag = " **> 4x**" if r["ratio"] > RATIO_BAR else ""
        cpu = f"{r['first_call_cpu_s']:.1f}" if "first_call_cpu_s" in r else ""
        lines.append(f"| {r['row']} | {r['exporter']} | {r['size']} | {r['first_call_s']:.1f} | {cpu} | "
                     f"{r['forward_ms']:.2f} | {r['gradient_ms']:.2f} | {r['ratio']:.1f}x{flag} | "
                     + (f"{r['cpu_ratio']:.1f}x |" if "cpu_ratio" in r else " |"))
    slow = [f"{r['row']}/{r['exporter']} {r['ratio']:.1f}x" for r in results if r.get("ratio", 0) > RATIO_BAR]
    lines.append("")
    lines.append(f"Rows over {RATIO_BAR:g}x: " + (", ".join(slow) if slow else "none"))
    return "\n".join(lines)


def main(argv=None) -> int:
    sys.path.insert(0, ROOT)
    from tests.data import make_real_zoo, real_zoo

    p = argparse.ArgumentParser(prog="python -m bench --zoo", description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="", help="comma-separated rows (default: all)")
    p.add_argument("--exporters", default=",".join(make_real_zoo.EXPORTERS))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--timeout", type=int, default=900, help="seconds per row (export included when not cached)")
    p.add_argument("--out", default=None, help="folder for <date>-zoo.{md,json}")
    args = p.parse_args(argv)
    names = [n for n in args.rows.split(",") if n] or [r.name for r in real_zoo.ROWS] + list(FULL_SIZE)
    unknown = [n for n in names if n not in real_zoo.BY_NAME and n not in FULL_SIZE]
    if unknown:
        sys.stderr.write(f"python -m bench --zoo: error: unknown rows {unknown}; known: "
                         f"{list(real_zoo.BY_NAME) + list(FULL_SIZE)}\n")
        return 2
    results = []
    load_start = os.getloadavg()
    for n in names:
        exporters = [e for e in args.exporters.split(",") if e]
        if n in FULL_SIZE:
            exporters = [e for e in exporters if e in FULL_SIZE[n][0]]
        for ex in exporters:
            r = _worker(n, ex, args.threads, args.repeats, args.timeout)
            results.append(r)
            print(f"{n}/{ex}: " + (r["error"] if "error" in r else
                                   f"first {r['first_call_s']:.1f} s ({r['first_call_cpu_s']:.1f} CPU s), "
                                   f"fwd {r['forward_ms']:.2f} ms, "
                                   f"grad {r['gradient_ms']:.2f} ms, {r['ratio']:.1f}x"), flush=True)
            if args.out:                     # after every row: an interrupted run still leaves its table
                write(args.out, results, args.threads, argv, load_start)
    print()
    print(table(results))
    print(_load_line(load_start))
    return 0


def _load_line(load_start) -> str:
    now = os.getloadavg()
    return (f"Machine load (1-min load average, {os.cpu_count()} cores): {load_start[0]:.1f} at the start, "
            f"{now[0]:.1f} now (other people's jobs count; ratios are same-run, wall times are not).")


def write(out: str, results: list[dict], threads: int, argv=None, load_start=None) -> None:
    os.makedirs(out, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    head = (f"# Real-zoo gradient cost ({stamp}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, --threads {threads}; shared VM)\n\n"
            f"`python -m bench --zoo {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n")
    with open(os.path.join(out, f"{stamp}-zoo.md"), "w") as f:
        f.write(head + table(results) + "\n\n" + _load_line(load_start or os.getloadavg()) + "\n")
    with open(os.path.join(out, f"{stamp}-zoo.json"), "w") as f:
        json.dump({"threads": threads, "load_start": load_start, "load_end": os.getloadavg(), "results": results},
                  f, indent=1)
