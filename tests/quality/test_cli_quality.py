"""``onnxplain evaluate | sanity | compare`` through ``onnxplain.cli.main`` (oracle: the documented
outputs — tables, CSV/markdown/JSON and PNG files — and exit codes 0 / 2 with one-line errors)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from onnxplain.cli import main

from .conftest import SIZE, conv_model, quadrant_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import onnx

    d = tmp_path_factory.mktemp("cli_quality")
    onnx.save(quadrant_model(), str(d / "quadrant.onnx"))
    onnx.save(conv_model(), str(d / "convnet.onnx"))
    imgs = d / "images"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(100, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(imgs / f"img{i}.png")
    (d / "boxes.json").write_text(json.dumps({"img0.png": [0, 0, 8, 8], "img1": [[0, 0, 4, 4], [4, 4, 8, 8]]}))
    return d


def test_evaluate_folder_with_boxes(files, tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(["evaluate", str(files / "images"), "--model", str(files / "quadrant.onnx"), "--preprocessing", "none",
               "--methods", "occlusion", "gradient", "--boxes", str(files / "boxes.json"), "--label", "1",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| img0.png | occlusion |" in text and "mean over images" in text
    rows = list(csv.DictReader(open(out / "evaluate.csv")))
    assert len(rows) == 4 and all(r["status"] == "ok" and r["pointing_game"] != "" for r in rows), rows
    occ = [r for r in rows if r["method"] == "occlusion"][0]
    assert float(occ["deletion"]) < float(occ["insertion"])
    assert (out / "curves_img0.png").stat().st_size > 1000 and (out / "evaluate.md").exists()
    assert json.loads((out / "evaluate.json").read_text())["rows"][0]["image"] == "img0.png"


def test_sanity_command(files, tmp_path, capsys):
    img = str(files / "images" / "img0.png")
    rc = main(["sanity", img, "--model", str(files / "convnet.onnx"), "--preprocessing", "none", "--methods", "gradient",
               "--every", "1", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    assert "| gradient | cascading | 1 | conv |" in capsys.readouterr().out
    for ext in ("png", "md", "csv", "json"):
        assert (tmp_path / f"sanity_img0_cascading.{ext}").exists()
    data = json.loads((tmp_path / "sanity_img0_cascading.json").read_text())
    assert [layer["node"] for layer in data["layers"]] == ["fc", "conv"]


def test_compare_two_files(files, tmp_path, capsys):
    model = str(files / "convnet.onnx")
    rc = main(["compare", model, model, str(files / "images"), "--preprocessing", "none", "--methods", "gradient",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "top-1 agreement 1.00" in text and "flagged: none" in text
    summary = json.loads((tmp_path / "compare.json").read_text())["summary"]
    assert summary["methods"]["gradient"]["mean_spearman"] == pytest.approx(1.0)


@pytest.mark.parametrize("argv, match", [
    (["compare"], "compare needs two models"),
    (["compare", "a.onnx", "b.onnx", "c.onnx"], "at most two models"),
    (["evaluate", "--methods", "nonsense"], "'methods' parameter must be one of"),
    (["evaluate", "--boxes", "missing.json"], "does not exist"),
    (["sanity", "--methods", "lime", "--mode", "sideways"], "invalid choice"),
])
def test_errors_exit_2_with_one_line(argv, match, capsys):
    if "invalid choice" in match:
        with pytest.raises(SystemExit):
            main(argv)
    else:
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1, err


def test_evaluate_runs_every_registry_method(files, tmp_path):
    """Oracle: onnxplain.METHODS is the list evaluate accepts; each method gives an "ok" row at its quick preset."""
    import onnxplain

    out = tmp_path / "all"
    rc = main(["evaluate", str(files / "images" / "img0.png"), "--model", str(files / "convnet.onnx"),
               "--preprocessing", "none", "--methods", *onnxplain.METHODS, "--label", "1", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "evaluate.csv")))
    assert [r["method"] for r in rows] == list(onnxplain.METHODS)
    assert all(r["status"] == "ok" and 0.0 <= float(r["deletion"]) <= 1.0 for r in rows), rows
