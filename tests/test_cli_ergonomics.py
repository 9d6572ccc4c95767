"""CLI habits: help and version, positional images anywhere, --model everywhere, inline labels,
inspect without preprocessing, progress lines off a terminal, explain's overview and report.

Oracles: the bundled model's known answer on chelsea (Egyptian cat, 285), the files written,
argparse's documented exit codes, and the tiny hand-written classifier's graph (tests/tiny_models).
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

import onnxplain
from onnxplain.cli import main
from onnxplain.cli._common import ProgressBar

from .tiny_models import make_classifier, save


def test_bare_command_prints_help_and_version(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: onnxplain") and "explain" in out and "report" in out
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"onnxplain {onnxplain.__version__}"


@pytest.fixture(scope="module")
def cat_file(tmp_path_factory):
    from skimage.data import chelsea

    path = tmp_path_factory.mktemp("img") / "cat.png"
    Image.fromarray(chelsea()).save(path)
    return str(path)


@pytest.mark.parametrize("order", ["before", "after", "after-many-valued"])
def test_image_before_or_after_options(order, cat_file, capsys):
    argv = {"before": ["classify", cat_file, "-k", "1", "--json"],
            "after": ["classify", "-k", "1", "--json", cat_file],
            "after-many-valued": ["classify", "--model", str(onnxplain.model.BUNDLED_MODEL), "-k", "1", "--json",
                                  cat_file]}[order]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)[0]["index"] == 285


def test_image_trailing_label_list_is_the_image(tmp_path, cat_file, capsys):
    assert main(["occlusion", "--label", "285", "281", cat_file, "--stride", "56", "--no-progress",
                 "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Egyptian cat (285)" in out and "tabby (281)" in out
    assert (tmp_path / "cat_occlusion.npy").exists()
    assert np.load(tmp_path / "cat_occlusion.npy").shape == (300, 451, 2)


def test_inline_labels_json(tmp_path, capsys):
    path = save(make_classifier(head="softmax"), tmp_path, "tiny")
    img = tmp_path / "x.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(img)
    assert main(["classify", "--model", str(path), "--preprocessing", "none", "--labels",
                 '["ant", "bee", "cow", "dog"]', "--json", str(img)]) == 0
    names = [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert sorted(names) == ["ant", "bee", "cow", "dog"]
    assert main(["classify", "--model", str(path), "--preprocessing", "none", "--labels", '["ant", 3]', str(img)]) == 2
    assert "list of class-name strings" in capsys.readouterr().err


def test_inspect_without_preprocessing_lists_tensors(tmp_path, capsys):
    path = save(make_classifier(), tmp_path, "tiny")
    assert main(["inspect", "--model", str(path)]) == 0
    out = capsys.readouterr().out
    assert "input   image: float32 ['N', 3, 8, 8]" in out and "not declared" in out
    assert "Gemm" in out and "ReduceMean" in out
    assert main(["inspect", "--model", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["preprocessing"] is None and [t["op_type"] for t in info["tensors"]][-1] == "Identity"


def test_gradcheck_takes_model_flag(tmp_path, capsys):
    path = save(make_classifier(), tmp_path, "tiny")
    assert main(["gradcheck", "--model", str(path), "--directions", "1"]) == 0
    assert f"gradcheck {path}" in capsys.readouterr().out
    assert main(["gradcheck", str(path), "--directions", "1"]) == 0  # the old positional form still works
    assert main(["gradcheck", str(path), "--model", str(path)]) == 2


def test_compare_parses_model_variant_and_image_in_any_order():
    from onnxplain.cli import _trailing_images, build_parser

    args = build_parser().parse_args(["compare", "A.onnx", "--variant", "fp16", "img.jpg"])
    _trailing_images(args)
    assert args.inputs == ["A.onnx", "img.jpg"] and args.variant == "fp16"
    args = build_parser().parse_args(["compare", "-m", "a.onnx", "--methods", "gradcam", "x.jpg", "-m", "b.onnx"])
    _trailing_images(args)
    assert args.model == ["a.onnx", "b.onnx"] and args.inputs == ["x.jpg"] and args.methods == ["gradcam"]


def test_progress_lines_off_a_terminal(capsys, monkeypatch):
    clock = iter([0.0, 6.0, 7.0, 12.5, 13.0])
    monkeypatch.setattr("onnxplain.cli._common.time.perf_counter", lambda: next(clock))
    bar = ProgressBar("lime", unit="samples")  # stderr is captured: not a terminal
    bar(512, 2048)    # t = 6 s: a line
    bar(600, 2048)    # t = 7 s: too soon for another
    bar(2048, 2048)   # t = 12.5 s: a line
    bar.close()       # t = 13 s: the closing line
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "lime: 512/2048 samples (25%), 85.3 samples/s, ETA 18 s"
    assert lines[1].startswith("lime: 2048/2048 samples (100%), 164 samples/s")
    assert re.fullmatch(r"lime: 2048/2048 samples \(100%\), 158 samples/s, done in 13.0 s", lines[2])
    assert len(lines) == 3


def test_explain_writes_overview_sheet_and_report(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", "--methods", "gradcam", "gradient", "--no-progress", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "overview sheet" in text and "report" in text
    sheet = np.asarray(Image.open(out / "chelsea_overview.png").convert("RGB"), np.float64)
    assert sheet.shape[1] > sheet.shape[0] and sheet.std() > 20
    html = (out / "index.html").read_text(encoding="utf-8")
    assert '"name": "chelsea"' in html and '"gradcam"' in html and (out / "report_i0_m1.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["image_file"] == "chelsea" and "index.html" in summary["files"]
    assert {p.name for p in out.iterdir()} == set(summary["files"])  # the run record lists every file written
    # onnxplain report rebuilds it from the folder into another folder
    assert main(["report", str(out), "-o", str(tmp_path / "again"), "--no-progress"]) == 0
    assert (tmp_path / "again" / "index.html").exists() and (tmp_path / "again" / "report" / "i0.jpg").exists()
    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    assert "do not exist" in capsys.readouterr().err
