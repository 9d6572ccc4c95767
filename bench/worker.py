"""One measurement job in a fresh process: ``python -m bench.worker JOB.json``.

The parent (``bench.runner``) writes the job, starts this module in a new interpreter with
the thread variables and ``NUMBA_CACHE_DIR`` it wants, and reads the JSON written to
``job["result"]``. A fresh process per job is what makes ``ru_maxrss`` a per-case peak,
an empty ``NUMBA_CACHE_DIR`` a real cold compile, and keeps ORT's spinning threads away
from torch. Kinds:

- ``time``: per case: the tiny call twice (first = cold numba + graph building, then
  steady), the full call once (warm-up), then ``repeats`` interleaved pairs of the full
  call and the raw-inference floor (within ``budget_s``, at least one pair).
- ``memory``: per case: load, the tiny call twice, the full call once; peak RSS.
- ``peer``: one peer: build, first call, steady repeats; peak RSS.
- ``spin``: torch forward alone vs right after an ORT run (is ORT's spinning in the way?).
- ``scale``: one case at one size: tiny warm-up, one full call, peak RSS, then the raw floor.
"""
from __future__ import annotations

import json
import pathlib
import resource
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np


#: pause before each timed call: ORT's intra-op threads spin for a while after a run and slow
#: whatever runs next on the same cores (another session included); see bench/README.md
SETTLE_S = 0.05
#: cheap cases repeat until this much time is measured (more samples of a noisy, short call)
MIN_MEASURED_S = 3.0
MAX_RUNS = 30


def _more(done: int, measured_s: float, elapsed_s: float, job: dict) -> bool:
    """Another steady-state run? At least one; ``repeats``; more while cheap; never past the budget."""
    if done == 0:
        return True
    if elapsed_s > float(job["budget_s"]) or done >= MAX_RUNS:
        return False
    return done < int(job["repeats"]) or (measured_s < MIN_MEASURED_S and not job.get("smoke"))


def max_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _stats(times: list[float]) -> dict[str, Any]:
    return {"best_s": min(times), "median_s": statistics.median(times), "runs": len(times)}


def _setup(job: dict) -> tuple[Any, Any, np.ndarray, int, float]:
    import onnxplain
    from skimage.data import chelsea

    t = time.perf_counter()
    model = onnxplain.load_model(job.get("model"), preprocessing=job.get("preprocessing"),
                              execution_environment=job["device"])
    load_s = time.perf_counter() - t
    pixels, _ = model.prepare(chelsea())
    label = int(job["label"]) if job.get("label") is not None else model.classify(pixels, top_k=1)[0][0]
    return onnxplain, model, pixels, label, load_s


def _share(result: Any) -> float | None:
    t = result.timings
    return float(t["inference"] / t["total"]) if "inference" in t and t.get("total") else None


def _save(job: dict, name: str, array: np.ndarray | None) -> None:
    if array is not None and job.get("save_dir"):
        np.save(pathlib.Path(job["save_dir"]) / f"{name}.npy", np.asarray(array, np.float32))


def _raw_buffer(model: Any, pixels: np.ndarray, segments: list[tuple[int, int]]) -> np.ndarray:
    from .cases import run_raw

    batch = max(b for _, b in segments)
    native = model.to_native(np.repeat(pixels[None], batch, axis=0))
    run_raw(model, native, [(b, b) for b in sorted({b for _, b in segments})])  # warm every batch shape
    return native


def job_time(job: dict) -> dict:
    from .cases import BY_NAME, run_case, run_raw

    engine, model, pixels, label, load_s = _setup(job)
    records = []
    for name in job["cases"]:
        case, params = BY_NAME[name], job["params"][name]
        rec: dict[str, Any] = {"case": name}
        try:
            call = lambda p=params: run_case(engine, case, model, pixels, label, p)  # noqa: E731
            if job.get("compile"):
                tiny = lambda: run_case(engine, case, model, pixels, label, case.smoke)  # noqa: E731
                rec["tiny_first_s"], _ = _timed(tiny)
                rec["tiny_steady_s"], _ = _timed(tiny)
            rec["first_call_s"], result = _timed(call)
            rec["params"] = result.summary()["params"]
            segments = case.raw(result, params)
            rec["raw_segments"] = segments
            rec["rss_after_first_mib"] = max_rss_mib()
            native = _raw_buffer(model, pixels, segments)
            ours, raw, shares, started = [], [], [], time.perf_counter()
            while _more(len(ours), sum(ours) + sum(raw), time.perf_counter() - started, job):
                time.sleep(SETTLE_S)
                seconds, result = _timed(call)
                ours.append(seconds)
                shares.append(_share(result))
                time.sleep(SETTLE_S)
                raw.append(_timed(lambda: run_raw(model, native, segments))[0])
            rec["ours"], rec["raw"] = _stats(ours), _stats(raw)
            rec["ours"]["all_s"], rec["raw"]["all_s"] = ours, raw
            valid = [s for s in shares if s is not None]
            rec["inference_share"] = statistics.median(valid) if valid else None
            rec["timings"] = {k: float(v) for k, v in result.timings.items()}
            if case.agreement is not None:
                _save(job, name, case.agreement(result))
        except Exception as exc:  # one failing case must not lose the others
            rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["rss_mib"] = max_rss_mib()
        records.append(rec)
    return {"load_s": load_s, "label": label, "label_name": model.class_names[label], "device": model.device,
            "cases": records}


def job_memory(job: dict) -> dict:
    from .cases import BY_NAME, run_case

    rss_start = max_rss_mib()
    engine, model, pixels, label, load_s = _setup(job)
    rss_model = max_rss_mib()
    case, params = BY_NAME[job["cases"][0]], job["params"][job["cases"][0]]
    rec: dict[str, Any] = {"case": case.name, "rss_start_mib": rss_start, "rss_model_mib": rss_model}
    try:
        rec["tiny_first_s"], _ = _timed(lambda: run_case(engine, case, model, pixels, label, case.smoke))
        rec["tiny_steady_s"], _ = _timed(lambda: run_case(engine, case, model, pixels, label, case.smoke))
        rec["first_call_s"], _ = _timed(lambda: run_case(engine, case, model, pixels, label, params))
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    rec["rss_peak_mib"] = max_rss_mib()
    return {"load_s": load_s, "cases": [rec]}


def job_peer(job: dict) -> dict:
    from . import peers

    rss_start = max_rss_mib()
    _, model, pixels, label, _ = _setup(job)
    ctx = peers.PeerContext(model, pixels, label, job["params"], job["device"], int(job["threads"]))
    rec: dict[str, Any] = {"peer": job["peer"], "rss_start_mib": rss_start}
    try:
        rec["build_s"], run = _timed(lambda: peers.build(job["peer"], ctx))
        rec["first_call_s"], out = _timed(run)
        times, started = [], time.perf_counter()
        while _more(len(times), sum(times), time.perf_counter() - started, job):
            seconds, out = _timed(run)
            times.append(seconds)
        rec["peer"] = job["peer"]
        rec["time"] = {**_stats(times), "all_s": times}
        _save(job, f"peer-{job['case']}", out)
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    rec["rss_peak_mib"] = max_rss_mib()
    rec["gpu_peak_mib"] = peers.gpu_memory_peak_mib()
    if "torch" in sys.modules:
        rec["torch_threads"] = sys.modules["torch"].get_num_threads()
    return rec


def job_spin(job: dict) -> dict:
    """Median torch time (forward, and Saliency = forward + backward; batch 1) alone and right after
    an ORT forward of the bundled model in the same process."""
    import captum.attr as ca
    import torch

    from . import peers

    _, model, pixels, label, _ = _setup(job)
    ctx = peers.PeerContext(model, pixels, label, {}, job["device"], int(job["threads"]))
    _, twin, _, x = peers.torch_twin(ctx)
    native = model.to_native(pixels[None])
    n = int(job.get("repeats", 10))
    saliency = ca.Saliency(twin)

    def forward() -> None:
        with torch.no_grad():
            twin(x)

    def backward() -> None:
        saliency.attribute(x.clone().requires_grad_(), target=label)

    med = statistics.median
    out: dict[str, Any] = {"spinning": bool(job["spinning"]), "torch_threads": torch.get_num_threads()}
    out["ort_alone_s"] = med([_timed(lambda: model.run_native(native))[0] for _ in range(n)])
    for name, fn in (("forward", forward), ("saliency", backward)):
        fn()
        alone, after = [], []
        for _ in range(n):  # alternating, so drifting load hits both alike
            time.sleep(0.1)  # ORT's threads have gone idle
            alone.append(_timed(fn)[0])
            model.run_native(native)
            after.append(_timed(fn)[0])
        out[name] = {"torch_alone_s": med(alone), "torch_after_ort_s": med(after), "slowdown": med(after) / med(alone),
                     "best_alone_s": min(alone), "best_after_ort_s": min(after)}
    return out


def job_scale(job: dict) -> dict:
    from .cases import BY_NAME, run_case, run_raw

    engine, model, pixels, label, _ = _setup(job)
    case, params = BY_NAME[job["cases"][0]], job["params"][job["cases"][0]]
    run_case(engine, case, model, pixels, label, case.smoke)  # kernels / gradient graph ready
    rss_before = max_rss_mib()
    seconds, result = _timed(lambda: run_case(engine, case, model, pixels, label, params))
    rec: dict[str, Any] = {"case": case.name, "params": result.summary()["params"], "ours_s": seconds,
                           "inference_share": _share(result), "rss_before_mib": rss_before,
                           "rss_peak_mib": max_rss_mib()}
    segments = case.raw(result, params)
    native = _raw_buffer(model, pixels, segments)
    rec["raw_s"], _ = _timed(lambda: run_raw(model, native, segments))
    rec["raw_segments"] = segments
    return rec


JOBS = {"time": job_time, "memory": job_memory, "peer": job_peer, "spin": job_spin, "scale": job_scale}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(pathlib.Path(argv[0]).read_text(encoding="utf-8"))
    from . import _threads

    _threads.configure(int(job["threads"]), bool(job.get("spinning", True)))
    result = JOBS[job["kind"]](job)
    pathlib.Path(job["result"]).write_text(json.dumps(result, default=_json_default), encoding="utf-8")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


if __name__ == "__main__":
    raise SystemExit(main())
