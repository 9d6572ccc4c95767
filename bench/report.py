"""Machine and version records, the printed table, and the JSON / markdown files of a bench run."""
from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import platform
import re
from typing import Any

PACKAGES = ("onnxplain", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "numba", "scikit-image", "scikit-learn",
            "torch", "captum", "lime", "matplotlib")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_short(name: str | None = None) -> str:
    """A file-name friendly CPU name: "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz" -> "intel-xeon-platinum-8375c"."""
    name = (name or cpu_model()).lower()
    name = re.sub(r"\((r|tm)\)|@.*$|\bcpu\b|\bprocessor\b|\bwith\b.*$|\d+-core", " ", name)
    words = re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", name)
    return "-".join(words[:4]) or "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                            "machine": platform.machine()}
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def _f(value: Any, fmt: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def _ratio(value: Any, target: float | None) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}"
    if target is not None:
        text += " ok" if value <= target else f" >{target:g}"
    return text


COLUMNS = ("method", "onnxplain s best/med", "infer", "raw ORT s (images@batch)", "x raw", "peer", "peer s",
           "ours/peer", "corr", "RSS MiB", "compile s", "1st call s")


def row_cells(row: dict[str, Any]) -> list[str]:
    if row.get("error"):
        return [row["case"], f"error: {row['error']}"] + [""] * (len(COLUMNS) - 2)
    segs = "+".join(f"{n}@{b}" for n, b in row.get("raw_segments") or [])
    peer = row.get("peer") or {}
    peer_time = _f(peer.get("best_s")) if peer.get("best_s") is not None else (peer.get("skipped") or
                                                                               peer.get("error") or "-")
    return [
        row["case"],
        f"{_f(row.get('ours_best_s'))} / {_f(row.get('ours_median_s'))}",
        _f(row.get("inference_share") and 100 * row["inference_share"], ".0f") + ("%" if row.get("inference_share")
                                                                                 else ""),
        f"{_f(row.get('raw_best_s'))} ({segs})",
        _ratio(row.get("x_raw"), row.get("targets", {}).get("raw")),
        peer.get("title", "-"),
        peer_time if len(str(peer_time)) < 60 else str(peer_time)[:57] + "...",
        _ratio(row.get("x_peer"), row.get("targets", {}).get("peer")),
        _f(peer.get("agreement"), ".3f"),
        _f(row.get("peak_rss_mib"), ".0f"),
        _f(row.get("numba_compile_s"), ".2f"),
        _f(row.get("first_call_overhead_s"), ".2f"),
    ]


def text_table(rows: list[dict[str, Any]]) -> str:
    cells = [list(COLUMNS)] + [row_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def headline(rows: list[dict[str, Any]]) -> list[str]:
    """One line per (case, reference) that has a target or a peer: the numbers the run is for."""
    out = []
    for r in rows:
        if r.get("error"):
            continue
        t = r.get("targets", {})
        if r.get("x_raw") is not None:
            goal = f" (target <= {t['raw']:g}: {'met' if r['x_raw'] <= t['raw'] else 'MISSED'})" if "raw" in t else ""
            own = r.get("x_raw_own_work")
            est = f"; contention-free estimate (raw + own work) / raw {own:.2f}x" if own is not None else ""
            out.append(f"{r['case']} / raw ORT inference: {r['x_raw']:.2f}x{goal}{est}")
        if r.get("x_peer") is not None:
            goal = f" (target <= {t['peer']:g}: {'met' if r['x_peer'] <= t['peer'] else 'MISSED'})" if "peer" in t \
                else ""
            out.append(f"{r['case']} / {r['peer']['title']}: {r['x_peer']:.2f}x{goal}")
    return out


def markdown(record: dict[str, Any]) -> str:
    m, th, s = record["machine"], record["threads"], record["settings"]
    lines = [f"# onnxplain bench, {record['date']}, {record['device']}",
             "",
             f"- machine: {m['cpu']}, {m['cores']} cores, {m.get('memory_gib', '?')} GiB; load average "
             f"{m.get('load_average_start')} at start, {m.get('load_average_end')} at end",
             f"- threads: ORT intra-op {th['ort_intra_op']}, torch {th['torch']}, numba {th['numba']} "
             f"(ORT allow_spinning={int(th['ort_allow_spinning'])})",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()),
             f"- model: {record['model']['path']} ({record['model']['name']}); image skimage.data.chelsea at the "
             f"model input size; label {record['label']} ({record['label_name']})",
             f"- settings: {'smoke (tiny sizes)' if s['smoke'] else 'full'}; best and median of at least "
             f"{s['repeats']} steady-state runs (more for cheap calls, up to 30; interleaved with the raw run; "
             f"{s['budget_s']:g} s budget per case); "
             f"command `{record['command']}`",
             "", "## Headline (ratio = onnxplain / reference, best runs; lower is faster)", ""]
    lines += [f"- {h}" for h in record["headline"]] or ["- (none)"]
    lines += ["", "## All cases", "", markdown_table(list(COLUMNS), [row_cells(r) for r in record["cases"]]), ""]
    lines += ["Columns: *infer* = share of the call spent in model inference (`Explanation.timings`); *raw ORT* = "
              "plain ONNX Runtime inference of the same number of images at the same batch size on the same session "
              "(count@batch segments); *x raw* = onnxplain best / raw best; *corr* = correlation of the two maps; "
              "*RSS* = peak resident memory of a fresh process that loads the model and runs the method once; "
              "*compile* = numba compile time (first tiny call with an empty NUMBA_CACHE_DIR minus the same with a "
              "warm cache); *1st call* = the remaining first-call cost with a warm cache (gradient-graph "
              "building, sessions, cache load).", ""]
    spin = record.get("spin_check")
    if spin:
        lines += ["## onnxruntime spinning vs torch in one process", ""]
        for r in spin:
            if "error" in r:
                lines.append(f"- allow_spinning={int(r.get('spinning', 1))}: error {r['error']}")
                continue
            parts = [f"{what} {1e3 * r[what]['torch_alone_s']:.1f} ms alone, {1e3 * r[what]['torch_after_ort_s']:.1f} ms "
                     f"right after an ORT run ({r[what]['slowdown']:.1f}x)" for what in ("forward", "saliency")]
            lines.append(f"- ORT allow_spinning={int(r['spinning'])}: torch (batch 1) " + "; ".join(parts))
        lines += ["", "Peers therefore run in their own subprocesses, and each timed call in a worker starts "
                  "after a 50 ms pause (the previous session's threads stop spinning).", ""]
    if record.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in record["notes"]] + [""]
    return "\n".join(lines)


def write(record: dict[str, Any], out_dir: pathlib.Path, stem: str) -> list[pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    md.write_text(markdown(record), encoding="utf-8")
    return [js, md]
