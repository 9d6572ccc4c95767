"""``python -m bench.mainjob`` on two cheap methods: it writes the per-method memory/time table and
the provider x method table, with onnxplain's own refusal for providers this machine lacks.

Checks that the bench works and that its numbers come from the run (summary.json, os.wait4), not
how fast or small anything is.
"""
from __future__ import annotations

import json

import onnxruntime as ort

from bench.mainjob import main


def test_mainjob_tables_and_refusals(tmp_path):
    providers = ["cpu", "cuda", "openvino"]
    assert main(["--out", str(tmp_path), "--methods", "gradient", "occlusion", "--providers", *providers]) == 0
    (js,) = tmp_path.glob("mainjob-*.json")
    (md,) = tmp_path.glob("mainjob-*.md")
    record = json.loads(js.read_text())
    job = record["main_job"]
    assert job["returncode"] == 0 and "error" not in job
    assert list(job["methods"]) == ["gradient", "occlusion"]
    assert job["peak_rss_mib"] >= max(m["peak_rss_mib"] for m in job["methods"].values()) > 0
    assert job["wall_s"] >= job["total_seconds"] > 0
    # each method's record lists the graphs it ran: occlusion only the model, on the CPU provider
    assert set(job["methods"]["occlusion"]["graphs"]) == {"model"}
    assert any(g.startswith("gradient graph") for g in job["methods"]["gradient"]["graphs"])
    cpu = record["providers"]["cpu"]
    assert cpu["returncode"] == 0 and set(cpu["methods"]) == {"gradient", "occlusion"}
    assert cpu["same_run_as_main_job"] is True  # no --threads, CPU-only main job: its own run is the column
    text = md.read_text()
    assert "| occlusion |" in text and "peak so far MiB" in text and "Provider x method" in text
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "onnxruntime-gpu" in record["providers"]["cuda"]["refused"]
        assert "**cuda**: not run here: " in text
    ov = record["providers"]["openvino"]
    assert ("refused" in ov and ov["refused"]) or ov["returncode"] == 0
