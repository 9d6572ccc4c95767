"""Run the bench: spawn one worker process per measurement, assemble rows, write the results."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import _threads, cases, report
from .peers import PEERS, unavailable

ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclass
class Options:
    model: str | None = None
    preprocessing: Any = None
    methods: list[str] | None = None
    out: str = "onnxplain-bench"
    smoke: bool = False
    scaling: bool = False
    only_scaling: bool = False
    max_samples: int = 65536
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    device: str = "cpu"
    repeats: int = 3
    budget_s: float = 60.0
    peers: bool = True
    spinning: bool = True
    job_timeout_s: float = 1800.0
    command: str = "python -m bench"


class Runner:
    """Spawns workers with the run's threads, device and model; logs progress to ``log``."""

    def __init__(self, opts: Options, log: Callable[[str], None]) -> None:
        self.opts, self.log = opts, log
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="onnxplain-bench-"))
        self.maps = self.tmp / "maps"
        self.maps.mkdir()
        self._n = 0

    def spawn(self, kind: str, *, numba_cache: str | None = None, **fields: Any) -> dict:
        """Run one worker job in a fresh interpreter; an ``error`` key when it failed."""
        self._n += 1
        job = {"kind": kind, "model": self.opts.model, "preprocessing": self.opts.preprocessing,
               "device": self.opts.device, "threads": self.opts.threads, "spinning": self.opts.spinning,
               "save_dir": str(self.maps), "result": str(self.tmp / f"result-{self._n}.json"),
               "repeats": self.opts.repeats, "budget_s": self.opts.budget_s, "smoke": self.opts.smoke, **fields}
        path = self.tmp / f"job-{self._n}.json"
        path.write_text(json.dumps(job), encoding="utf-8")
        env = {**os.environ, **_threads.environment(self.opts.threads),
               "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        if numba_cache:
            env["NUMBA_CACHE_DIR"] = numba_cache
        try:
            proc = subprocess.run([sys.executable, "-m", "bench.worker", str(path)], env=env, cwd=str(ROOT),
                                  capture_output=True, text=True, timeout=self.opts.job_timeout_s)
        except subprocess.TimeoutExpired:
            return {"error": f"worker timed out after {self.opts.job_timeout_s:g} s"}
        result = pathlib.Path(job["result"])
        if proc.returncode != 0 or not result.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            return {"error": f"worker failed: {tail[0][:300]}"}
        return json.loads(result.read_text(encoding="utf-8"))


def _agreement(maps: pathlib.Path, case: str) -> float | None:
    a, b = maps / f"{case}.npy", maps / f"peer-{case}.npy"
    if not (a.exists() and b.exists()):
        return None
    x, y = np.load(a).ravel(), np.load(b).ravel()
    if x.size != y.size or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _row(case: cases.Case, timing: dict, memory: dict | None, peer: dict | None, device: str,
         judge: bool = True) -> dict[str, Any]:
    row: dict[str, Any] = {"case": case.name, "function": f"onnxplain.METHODS[{case.name!r}]", "note": case.note,
                           "targets": case.targets.get(device, {}) if judge else {}}
    if "error" in timing:
        row["error"] = timing["error"]
        return row
    ours, raw = timing["ours"], timing["raw"]
    share = timing.get("inference_share")
    row.update(params=timing["params"], raw_segments=timing["raw_segments"],
               raw_images=cases.raw_images(timing["raw_segments"]),
               ours_best_s=ours["best_s"], ours_median_s=ours["median_s"], runs=ours["runs"],
               ours_all_s=ours["all_s"], raw_best_s=raw["best_s"], raw_median_s=raw["median_s"],
               raw_all_s=raw["all_s"], inference_share=share, timings=timing["timings"],
               x_raw=ours["best_s"] / raw["best_s"], x_raw_median=ours["median_s"] / raw["median_s"],
               first_call_s=timing["first_call_s"])
    if share is not None:  # contention-free estimate: ORT alone + the method's own (non-inference) work
        row["x_raw_own_work"] = (raw["best_s"] + ours["best_s"] * (1 - share)) / raw["best_s"]
    cold = timing.get("tiny_first_s", 0.0) - timing.get("tiny_steady_s", 0.0) if "tiny_first_s" in timing else None
    if memory and "error" not in memory:
        warm = memory["tiny_first_s"] - memory["tiny_steady_s"]
        row.update(peak_rss_mib=memory["rss_peak_mib"], model_rss_mib=memory["rss_model_mib"],
                   first_call_overhead_s=warm, memory_isolated=True)
        if cold is not None:
            row["numba_compile_s"] = max(0.0, cold - warm)
    else:
        row.update(peak_rss_mib=timing.get("rss_mib"), memory_isolated=False)
        if memory and "error" in memory:
            row["memory_error"] = memory["error"]
    if peer is not None:
        row["peer"] = peer
        if peer.get("best_s"):
            row["x_peer"] = ours["best_s"] / peer["best_s"]
    return row


def _peer_record(name: str, result: dict, agreement: float | None) -> dict[str, Any]:
    peer = PEERS[name]
    rec: dict[str, Any] = {"name": name, "title": peer.title, "note": peer.note}
    if "error" in result:
        rec["error"] = result["error"]
        return rec
    rec.update(best_s=result["time"]["best_s"], median_s=result["time"]["median_s"], runs=result["time"]["runs"],
               all_s=result["time"]["all_s"], first_call_s=result["first_call_s"], build_s=result["build_s"],
               peak_rss_mib=result["rss_peak_mib"], gpu_peak_mib=result.get("gpu_peak_mib"),
               torch_threads=result.get("torch_threads"), agreement=agreement)
    return rec


def run_cases(runner: Runner, selected: list[cases.Case], bundled: bool) -> tuple[list[dict], dict]:
    opts, log = runner.opts, runner.log
    params = {c.name: dict(c.smoke if opts.smoke else c.params) for c in selected}
    rows: list[dict] = []
    meta: dict[str, Any] = {}
    if opts.smoke:  # one process for every case: it must stay quick; memory is then not per case
        log(f"smoke: {len(selected)} cases in one worker")
        result = runner.spawn("time", cases=[c.name for c in selected], params=params, compile=False, repeats=1)
        if "error" in result:
            raise RuntimeError(f"bench smoke run failed: {result['error']}")
        meta = {k: result[k] for k in ("label", "label_name", "device", "load_s")}
        by_case = {r["case"]: r for r in result["cases"]}
        for case in selected:
            rows.append(_row(case, by_case[case.name], None, _skipped_peer(case, opts, bundled), opts.device,
                             judge=False))  # tiny sizes: no targets
        return rows, meta
    for i, case in enumerate(selected, 1):
        t = time.perf_counter()
        load = [round(v, 2) for v in os.getloadavg()]
        with tempfile.TemporaryDirectory(prefix="numba-cold-", dir=runner.tmp) as cache:
            timing = runner.spawn("time", cases=[case.name], params=params, compile=True, numba_cache=cache)
            if "error" in timing:
                timing_rec = {"error": timing["error"]}
            else:
                meta = meta or {k: timing[k] for k in ("label", "label_name", "device", "load_s")}
                timing_rec = timing["cases"][0]
            memory = None
            if "error" not in timing_rec:
                mem = runner.spawn("memory", cases=[case.name], params=params, numba_cache=cache)
                memory = mem.get("cases", [mem])[0]
        peer = _skipped_peer(case, opts, bundled)
        if peer is None and "error" not in timing_rec:
            name = case.peer
            result = runner.spawn("peer", peer=name, case=case.name, params=params[case.name],
                                  label=meta.get("label"))
            peer = _peer_record(name, result, None)
            peer["agreement"] = _agreement(runner.maps, case.name) if "error" not in peer else None
        row = _row(case, timing_rec, memory, peer, opts.device)
        row["load_average_at_start"] = load
        rows.append(row)
        log(f"[{i}/{len(selected)}] {case.name}: " + ("error " + row["error"] if row.get("error") else
            f"{row['ours_best_s']:.3f} s, {row['x_raw']:.2f}x raw"
            + (f", {row['x_peer']:.2f}x {row['peer']['title']}" if row.get("x_peer") else ""))
            + f" ({time.perf_counter() - t:.0f} s)")
    return rows, meta


def _skipped_peer(case: cases.Case, opts: Options, bundled: bool) -> dict | None:
    """A peer record saying why the peer does not run, or None when it should run."""
    if case.peer is None:
        return {"name": None, "title": "-", "skipped": "no peer"}
    peer = PEERS[case.peer]
    reason = ("smoke run" if opts.smoke else "--no-peers" if not opts.peers else unavailable(peer, bundled))
    return None if reason is None else {"name": case.peer, "title": peer.title, "skipped": reason}


def spin_check(runner: Runner, bundled: bool) -> list[dict] | None:
    """torch after ORT, with ORT's spinning on and off (the reason peers get their own process)."""
    if unavailable(PEERS["captum-saliency"], bundled):
        return None
    out = []
    for spinning in (True, False):
        r = runner.spawn("spin", spinning=spinning, repeats=15)
        out.append({"spinning": spinning, **r})
    return out


def _environment(opts: Options) -> dict[str, Any]:
    return {"machine": report.machine(), "versions": report.versions(),
            "threads": {"ort_intra_op": opts.threads, "torch": opts.threads, "numba": opts.threads,
                        "omp": opts.threads, "ort_allow_spinning": opts.spinning}}


def _stem(opts: Options, suffix: str = "") -> str:
    stem = f"{time.strftime('%Y-%m-%d')}-{opts.device}-{report.cpu_short()}"
    return stem + ("-smoke" if opts.smoke else "") + suffix


def check_model(opts: Options) -> tuple[Any, bool]:
    """Load the model here first: a bad model or ``--device gpu`` without CUDA fails at once, clearly."""
    import onnxplain

    model = onnxplain.load_model(opts.model, preprocessing=opts.preprocessing, execution_environment=opts.device)
    bundled = opts.model is None
    return model, bundled


def run(opts: Options, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict[str, Any]:
    """The whole bench; returns {"record": ..., "files": [...], "table": str}."""
    if opts.model is not None:
        opts.model = str(pathlib.Path(opts.model).resolve())
    selected = cases.select(opts.methods)
    model, bundled = check_model(opts)
    runner = Runner(opts, log)
    out_dir = pathlib.Path(opts.out)
    files: list[pathlib.Path] = []
    text = ""
    record: dict[str, Any] = {}
    started = time.perf_counter()
    env = _environment(opts)
    if not opts.only_scaling:
        rows, meta = run_cases(runner, selected, bundled)
        notes = []
        if not bundled:
            notes.append("user-given ONNX model: there is no torch twin, so captum peers are skipped")
        if any(c.name in ("guided-backprop", "zeiler-fergus", "guided-gradcam") for c in selected):
            notes.append("EfficientNet-Lite0 has no nn.ReLU (its activations are nn.ReLU6), so captum's "
                         "GuidedBackprop / Deconvolution / the guided half of GuidedGradCam compute plain "
                         "gradients (= Saliency); only their timing is comparable")
        notes.append("onnxplain is called on the working image (already at the model's input size) and CAM, "
                     "occlusion and RISE maps stay at the working size, as captum's do")
        spin = None if opts.smoke or not opts.peers else spin_check(runner, bundled)
        record = {
            "schema": 1, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": opts.device,
            "command": opts.command, **env,
            "model": {"path": model.path, "name": (model.manifest or {}).get("name", pathlib.Path(model.path).name),
                      "bundled": bundled},
            "label": meta.get("label"), "label_name": meta.get("label_name"), "model_load_s": meta.get("load_s"),
            "settings": {"smoke": opts.smoke, "repeats": opts.repeats, "budget_s": opts.budget_s,
                         "methods": [c.name for c in selected], "peers": opts.peers and not opts.smoke},
            "cases": rows, "headline": report.headline(rows), "spin_check": spin, "notes": notes,
        }
        record["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
        record["wall_s"] = time.perf_counter() - started
        files += report.write(record, out_dir, _stem(opts))
        text = report.text_table(rows)
    if opts.scaling or opts.only_scaling:
        from . import scaling

        files += scaling.run(runner, opts, env, out_dir, _stem(opts, "-scaling"))
    return {"record": record, "files": [str(f) for f in files], "table": text}
