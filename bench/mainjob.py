"""``python -m bench.mainjob``: the main job (``onnxplain explain``) per method, and per provider.

Two measurements of the command users run first, each in a fresh process:

1. **Main job** (``onnxplain explain --no-progress`` on the bundled model and photo, the
   "main" presets of :data:`onnxplain.METHODS`): total wall time, CPU time and peak RSS of the
   process (``os.wait4``), and per method what ``summary.json`` records: seconds, resident
   memory after the method (``rss_mib``, after ``Model.release_memory``), the process's peak
   so far (``peak_rss_mib``: the method that raised it is the one whose row it grew in), and
   which provider ran how many nodes of each graph the method ran (``params["runtime"]``).
2. **Provider x method**: the same command with ``--provider P --threads T --no-report`` for
   every provider onnxplain knows (:data:`onnxplain.runtime.PROVIDERS`); a provider that cannot
   run here gets onnxplain's refusal, verbatim (``EnvironmentUnavailableError``), instead of times.

Writes ``<out>/mainjob-<date>-<cpu>.{json,md}``. About 2 x the main job's time per available
provider (~1 min each on 2 quiet cores). Run it under the shared lock on a shared machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

from .report import cpu_short, machine, markdown_table, versions


def run_explain(args: list[str], out: pathlib.Path) -> dict[str, Any]:
    """``onnxplain explain ARGS --out OUT`` in a fresh process: its wall/CPU time, peak RSS and summary.json."""
    cmd = [sys.executable, "-m", "onnxplain", "explain", "--no-progress", "--out", str(out), *args]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    rec: dict[str, Any] = {"command": " ".join(["onnxplain", *cmd[3:]]), "returncode": proc.returncode,
                           "wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                           "peak_rss_mib": round(usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10), 1)}
    summary = out / "summary.json"
    if proc.returncode != 0 or not summary.exists():
        rec["error"] = text.strip().splitlines()[-1] if text.strip() else f"exit {proc.returncode}"
        return rec
    s = json.loads(summary.read_text())
    rec["total_seconds"] = s["total_seconds"]
    rec["methods"] = {name: {"seconds": m["seconds"], "rss_mib": m.get("rss_mib"), "peak_rss_mib": m.get("peak_rss_mib"),
                             "inference_s": m["timings"].get("inference"), "graphs": m["params"].get("runtime", {}).get("graphs")}
                      for name, m in s["methods"].items()}
    rec["skipped"] = s.get("skipped", {})
    return rec


def refusal(provider: str) -> str | None:
    """onnxplain's refusal for ``provider`` on this machine, or None when a session can be made."""
    import onnxplain

    try:
        onnxplain.load_model(provider=provider)
    except onnxplain.EnvironmentUnavailableError as exc:
        return str(exc)
    return None


def _cpu_only(job: dict[str, Any]) -> bool:
    """True when every graph of every method of a run was placed on ORT's CPU provider alone."""
    graphs = [g for m in job.get("methods", {}).values() for g in (m["graphs"] or {}).values()]
    return bool(graphs) and all(set(g) == {"CPUExecutionProvider"} for g in graphs)


def _nodes(graphs: dict[str, Any] | None) -> str:
    """{"model": {"CPUExecutionProvider": 120}, ...} -> "CPU 120" (nodes summed over graphs, per provider)."""
    total: dict[str, int] = {}
    for placed in (graphs or {}).values():
        for ep, n in placed.items():
            if isinstance(n, int):
                total[ep.replace("ExecutionProvider", "")] = total.get(ep.replace("ExecutionProvider", ""), 0) + n
    return ", ".join(f"{ep} {n}" for ep, n in sorted(total.items())) or "-"


def markdown(record: dict[str, Any]) -> str:
    m, job = record["machine"], record["main_job"]
    lines = [f"# onnxplain main job, {record['date']}", "",
             f"- machine: {m['cpu']}, {m['cores']} cores, {m.get('memory_gib', '?')} GiB; load average "
             f"{m.get('load_average_start')} at start, {m.get('load_average_end')} at end",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()),
             f"- command: `{job['command']}` (fresh process; wall, CPU and peak RSS from os.wait4)", ""]
    if "error" in job:
        lines += [f"**failed**: {job['error']}", ""]
    else:
        lines += [f"**Total: {job['wall_s']:.1f} s wall, {job['cpu_s']:.1f} s CPU, peak RSS {job['peak_rss_mib']:.0f} MiB** "
                  f"({len(job['methods'])} methods; summary.json total {job['total_seconds']:.1f} s)", ""]
        body, prev_peak = [], None
        for name, r in job["methods"].items():
            grew = "" if prev_peak is None or r["peak_rss_mib"] is None else f"{r['peak_rss_mib'] - prev_peak:+.0f}"
            body.append([name, f"{r['seconds']:.2f}", "-" if r["inference_s"] is None else f"{r['inference_s']:.2f}",
                         f"{r['rss_mib']:.0f}" if r["rss_mib"] is not None else "-",
                         f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] is not None else "-", grew, _nodes(r["graphs"])])
            prev_peak = r["peak_rss_mib"]
        lines += ["## Per method (main job)", "",
                  markdown_table(["method", "s (incl. files)", "inference s", "RSS after MiB", "peak so far MiB",
                                  "peak grew MiB", "nodes run per provider"], body), "",
                  "*RSS after*: resident memory after the method, its files written and `Model.release_memory` "
                  "(gradient sessions beyond the last two dropped, arena shrunk, heap trimmed); *peak so far*: the "
                  "process's VmHWM at that point; *nodes*: nodes of every graph the method ran, per provider "
                  "(`params['runtime']`).", ""]
    provs = record["providers"]
    names = list(dict.fromkeys(n for p in provs.values() for n in p.get("methods", {})))
    if provs:
        lines += ["## Provider x method (seconds per method, `onnxplain explain --provider P`)", ""]
        avail = [p for p, r in provs.items() if "methods" in r]
        if avail and names:
            body = [[n] + [f"{provs[p]['methods'][n]['seconds']:.2f}" if n in provs[p]["methods"] else "-" for p in avail]
                    for n in names]
            body.append(["**total (wall, peak RSS)**"] + [f"{provs[p]['wall_s']:.1f} s, {provs[p]['peak_rss_mib']:.0f} MiB"
                                                          for p in avail])
            body.append(["nodes run (all graphs)"] + [_nodes({k: v for m in provs[p]["methods"].values()
                                                               for k, v in (m["graphs"] or {}).items()}) for p in avail])
            lines += [markdown_table(["method", *avail], body), ""]
            if provs.get("cpu", {}).get("same_run_as_main_job"):
                lines += ["(cpu: the main job's own run above, which ONNX Runtime placed on its CPU provider only.)", ""]
        for p, r in provs.items():
            if "methods" not in r:
                lines.append(f"- **{p}**: not run here: {r.get('refused') or r.get('error')}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from onnxplain.runtime import PROVIDERS

    p = argparse.ArgumentParser(prog="python -m bench.mainjob", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="onnxplain-bench", help="folder for mainjob-<date>-<cpu>.{json,md}")
    p.add_argument("--providers", nargs="*", default=list(PROVIDERS),
                   help=f"providers for the provider x method table (default: {' '.join(PROVIDERS)}); none: skip it")
    p.add_argument("--threads", type=int, default=None,
                   help="--threads for the provider runs (default: ORT's; then the cpu column is the main job's "
                        "own run when that ran on the CPU provider only, instead of a second run)")
    p.add_argument("--methods", nargs="+", default=None, help="--methods for every run (default: the main job)")
    args = p.parse_args(argv)
    extra = ["--methods", *args.methods] if args.methods else []
    record: dict[str, Any] = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine(),
                              "versions": versions()}
    with tempfile.TemporaryDirectory(prefix="onnxplain-mainjob-") as tmp:
        print("main job ...", flush=True)
        record["main_job"] = run_explain(extra, pathlib.Path(tmp) / "main")
        print(f"  {record['main_job'].get('wall_s')} s, {record['main_job'].get('peak_rss_mib')} MiB", flush=True)
        record["providers"] = {}
        for prov in args.providers:
            why = refusal(prov)
            if why is not None:
                record["providers"][prov] = {"refused": why}
                print(f"{prov}: refused: {why}", flush=True)
                continue
            if prov == "cpu" and args.threads is None and _cpu_only(record["main_job"]):
                record["providers"][prov] = {**record["main_job"], "same_run_as_main_job": True}
                continue
            print(f"{prov} ...", flush=True)
            threads = [] if args.threads is None else ["--threads", str(args.threads)]
            record["providers"][prov] = run_explain([*extra, "--provider", prov, *threads, "--no-report"],
                                                    pathlib.Path(tmp) / prov)
    record["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"mainjob-{datetime.date.today().isoformat()}-{cpu_short()}"
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    (out / f"{stem}.md").write_text(markdown(record))
    print(f"wrote {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
