"""``--scaling``: LIME against num_samples, occlusion against stride, gradients against batch size.

Each point runs in a fresh worker (its peak RSS is its own): a tiny warm-up call, one timed
full call, then the raw-inference floor of the same images. Expected time on 2 cores
(~5 ms per image, both the method and its raw floor are timed): LIME 1k + 4k + 16k
~4 minutes; adding 64k (the default ``--max-samples 65536``) ~15 minutes more.
"""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any

from . import cases, report

LIME_SAMPLES = (1024, 4096, 16384, 65536)
OCCLUSION_STRIDES = (32, 16, 8)
GRADIENT_BATCHES = (1, 4, 16, 64)


def plan(smoke: bool, max_samples: int) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(study, case, x, params) for every point."""
    lime, occ = cases.BY_NAME["lime"].params, cases.BY_NAME["occlusion"].params
    points = []
    for n in ((16, 32) if smoke else [n for n in LIME_SAMPLES if n <= max_samples]):
        points.append(("lime vs num_samples", "lime", n, {**lime, "num_samples": n,
                                                          "mini_batch_size": min(n, lime["mini_batch_size"])}))
    for s in ((112, 56) if smoke else OCCLUSION_STRIDES):
        extra = {"mask_size": 112, "mini_batch_size": 8} if smoke else {}
        points.append(("occlusion vs stride", "occlusion", s, {**occ, **extra, "stride": s}))
    for b in ((1, 2) if smoke else GRADIENT_BATCHES):
        points.append(("gradient vs batch (smoothgrad samples = batch)", "smoothgrad", b,
                       {"num_samples": b, "mini_batch_size": b, "random_state": 0}))
    return points


def run(runner: Any, opts: Any, env: dict[str, Any], out_dir: pathlib.Path, stem: str) -> list[pathlib.Path]:
    rows = []
    points = plan(opts.smoke, opts.max_samples)
    for i, (study, case, x, params) in enumerate(points, 1):
        r = runner.spawn("scale", cases=[case], params={case: params})
        row = {"study": study, "case": case, "x": x}
        if "error" in r:
            row["error"] = r["error"]
        else:
            images = cases.raw_images(r["raw_segments"])
            row.update(images=images, ours_s=r["ours_s"], raw_s=r["raw_s"], x_raw=r["ours_s"] / r["raw_s"],
                       ms_per_image=1e3 * r["ours_s"] / images, inference_share=r["inference_share"],
                       peak_rss_mib=r["rss_peak_mib"], rss_before_mib=r["rss_before_mib"])
        rows.append(row)
        runner.log(f"[scaling {i}/{len(points)}] {study} x={x}: " +
                   (row["error"] if "error" in row else f"{row['ours_s']:.2f} s, {row['x_raw']:.2f}x raw, "
                    f"{row['peak_rss_mib']:.0f} MiB"))
    record = {"schema": 1, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": opts.device, **env,
              "command": opts.command, "smoke": opts.smoke, "max_samples": opts.max_samples, "points": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    files[0].write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    files[1].write_text(_markdown(record), encoding="utf-8")
    png = _plot(rows, out_dir / f"{stem}.png")
    return files + ([png] if png else [])


def _markdown(record: dict[str, Any]) -> str:
    m = record["machine"]
    head = ["study", "x", "images", "onnxplain s", "raw ORT s", "x raw", "ms / image", "infer", "peak RSS MiB"]
    body = []
    for r in record["points"]:
        if "error" in r:
            body.append([r["study"], str(r["x"]), "error: " + r["error"]] + [""] * 6)
            continue
        share = r["inference_share"]
        body.append([r["study"], str(r["x"]), str(r["images"]), f"{r['ours_s']:.3f}", f"{r['raw_s']:.3f}",
                     f"{r['x_raw']:.2f}", f"{r['ms_per_image']:.2f}", f"{100 * share:.0f}%" if share else "-",
                     f"{r['peak_rss_mib']:.0f}"])
    return "\n".join([
        f"# onnxplain bench scaling, {record['date']}, {record['device']}", "",
        f"- machine: {m['cpu']}, {m['cores']} cores; load average {m.get('load_average_start')} at start",
        f"- threads: ORT intra-op / torch / numba {record['threads']['ort_intra_op']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()),
        f"- one fresh process per point: tiny warm-up, one timed call, then plain ORT inference of the same "
        f"images at the same batch size; LIME capped at {record['max_samples']} samples", "",
        report.markdown_table(head, body), ""])


def _plot(rows: list[dict[str, Any]], path: pathlib.Path) -> pathlib.Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    studies = list(dict.fromkeys(r["study"] for r in rows))
    fig, axes = plt.subplots(1, len(studies), figsize=(5 * len(studies), 4), squeeze=False)
    for ax, study in zip(axes[0], studies):
        pts = [r for r in rows if r["study"] == study and "error" not in r]
        if not pts:
            continue
        xs = [r["images"] for r in pts]
        ax.loglog(xs, [r["ours_s"] for r in pts], "o-", label="onnxplain")
        ax.loglog(xs, [r["raw_s"] for r in pts], "s--", label="raw ORT, same images")
        for r in pts:
            ax.annotate(f"{r['x_raw']:.2f}x", (r["images"], r["ours_s"]), textcoords="offset points",
                        xytext=(4, 6), fontsize=8)
        ax.set_xlabel("images (model inputs)")
        ax.set_ylabel("seconds")
        ax.set_title(study, fontsize=10)
        twin = ax.twinx()
        twin.plot(xs, [r["peak_rss_mib"] for r in pts], "^:", color="grey", label="peak RSS")
        twin.set_ylabel("peak RSS (MiB)", color="grey")
        twin.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
