"""The built wheel holds one top-level package, and a user's own kernels.py / engine.py /
models.py cannot shadow it. Oracle: the wheel's file list (zipfile) and a fresh interpreter
started in a folder holding those files."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                          "--disable-pip-version-check", "-q", "-w", str(out)],
                         capture_output=True, text=True, cwd=build, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    wheels = list(out.glob("onnxplain-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_has_only_onnxplain(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"onnxplain", next(t for t in top if t.endswith(".dist-info"))}, top
    assert "onnxplain/models/efficientnet_lite0.onnx" in names and "onnxplain/kernels/lime.py" in names
    assert "onnxplain/registry.py" in names and not any(n.startswith(("bench/", "tests/")) for n in names)


def test_user_modules_named_like_our_folders_do_not_shadow(tmp_path):
    for name in ("kernels", "engine", "models", "bench"):
        (tmp_path / f"{name}.py").write_text("raise RuntimeError('the user module was imported')\n")
    code = ("import onnxplain, onnxplain.kernels.lime; "
            "print(len(onnxplain.METHODS), onnxplain.load_model().num_classes)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [str(len(__import__("onnxplain").METHODS)), "1000"]
