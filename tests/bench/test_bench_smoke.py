"""``python -m bench --smoke`` through ``bench.cli.main``: it runs and writes what it promises.

Tiny sizes (LIME 16 samples, 4 occlusion positions, IG 3 steps), one worker process, no
peers; this checks that the bench works, not how fast anything is.
"""
from __future__ import annotations

import json

import pytest

from bench.cli import main

METHODS = ["lime", "occlusion", "rise", "integrated-gradients", "gradcam"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["--smoke", "--methods", *METHODS, "--out", str(out), "--threads", "2"]) == 0
    return out


def test_smoke_writes_json_and_markdown(smoke_run):
    (js,) = smoke_run.glob("*-cpu-*-smoke.json")
    (md,) = smoke_run.glob("*-cpu-*-smoke.md")
    record = json.loads(js.read_text())
    assert record["settings"]["smoke"] is True and record["device"] == "cpu"
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"]
    assert record["threads"]["ort_intra_op"] == record["threads"]["torch"] == 2
    assert {"python", "onnxruntime", "numpy", "numba"} <= set(record["versions"])
    assert record["label"] == 285 and record["model"]["bundled"] is True
    assert [c["case"] for c in record["cases"]] == METHODS
    for case in record["cases"]:
        assert "error" not in case, case
        assert case["ours_best_s"] > 0 and case["raw_best_s"] > 0
        assert case["x_raw"] == pytest.approx(case["ours_best_s"] / case["raw_best_s"])
        assert case["peak_rss_mib"] > 0
        assert case["peer"].get("skipped")  # peers are off in smoke runs
    by = {c["case"]: c for c in record["cases"]}
    assert by["lime"]["raw_segments"] == [[16, 8]]
    assert by["integrated-gradients"]["raw_segments"] == [[3, 3]]
    assert by["occlusion"]["raw_images"] == 1 + 4
    assert 0 < by["lime"]["inference_share"] <= 1
    text = md.read_text()
    assert "| method |" in text and "lime" in text and record["machine"]["cpu"] in text


def test_gpu_without_cuda_is_a_clear_error(tmp_path, capsys):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    assert main(["--smoke", "--device", "gpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime-gpu" in err and "CUDAExecutionProvider" in err
    assert not list(tmp_path.iterdir())


def test_unknown_method_names_the_choices(tmp_path, capsys):
    assert main(["--smoke", "--methods", "lime", "shap", "--out", str(tmp_path)]) == 2
    assert "'methods'" in capsys.readouterr().err
