"""Trust boundary: paths that come from a model file or its manifest stay inside the model's folder.

Oracle: the attacks of issue 14 (a model naming /etc/passwd or /proc/self/environ as its
labels file, ``../x``, a symbolic link leaving the folder), each refused with a LabelError
that names the path, and the secret's content never appearing in any output.
"""
from __future__ import annotations

import json
import os

import pytest

import onnxplain
from onnxplain.cli import main
from onnxplain.errors import LabelError
from tests import tiny_models as tm


def _with_metadata(folder, name, labels_value):
    proto = tm.make_classifier()
    for k, v in {"onnxplain.preprocessing": json.dumps("none"), "onnxplain.labels": json.dumps(labels_value)}.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    return tm.save(proto, folder, name)


def _with_manifest(folder, name, labels_value):
    path = tm.save(tm.make_classifier(), folder, name)
    path.with_suffix(".json").write_text(json.dumps({"preprocessing": "none", "labels": labels_value}))
    return path


@pytest.fixture
def layout(tmp_path):
    """models/ (the model's folder) beside a secret file with exactly 4 lines (a valid labels file)."""
    models = tmp_path / "models"
    models.mkdir()
    secret = tmp_path / "x"
    secret.write_text("TOKEN_A\nTOKEN_B\nTOKEN_C\nTOKEN_D\n")
    os.symlink(secret, models / "link.txt")
    return models, secret


ATTACKS = ["/etc/passwd", "/proc/self/environ", "../x", "link.txt"]


@pytest.mark.parametrize("value", ATTACKS)
@pytest.mark.parametrize("source", ["metadata", "manifest"])
def test_labels_path_leaving_the_model_folder_is_refused(layout, source, value):
    models, _ = layout
    make = _with_metadata if source == "metadata" else _with_manifest
    path = make(models, f"m_{source}", value)
    with pytest.raises(LabelError, match="outside the model's folder") as info:
        onnxplain.load_model(path)
    assert value in str(info.value) and "TOKEN" not in str(info.value)


@pytest.mark.parametrize("source", ["metadata", "manifest"])
def test_relative_labels_path_resolves_from_the_model_folder_not_the_cwd(layout, tmp_path, monkeypatch, source):
    models, _ = layout
    (models / "names.txt").write_text("w\nx\ny\nz\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "names.txt").write_text("WRONG1\nWRONG2\nWRONG3\nWRONG4\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    make = _with_metadata if source == "metadata" else _with_manifest
    model = onnxplain.load_model(make(models, f"rel_{source}", "names.txt"))
    assert model.class_names == ["w", "x", "y", "z"]


def test_inline_label_list_in_metadata(layout):
    models, _ = layout
    model = onnxplain.load_model(_with_metadata(models, "inline", ["a", "b", "c", "d"]))
    assert model.class_names == ["a", "b", "c", "d"]


def test_labels_argument_is_the_users_own_choice(layout):
    """The user's own labels= may name any file: the boundary is for paths a model brings."""
    models, secret = layout
    model = onnxplain.load_model(_with_metadata(models, "arg", ["a", "b", "c", "d"]), labels=str(secret))
    assert model.class_names[0] == "TOKEN_A"


@pytest.mark.parametrize("value", ["/proc/self/environ", "link.txt"])
def test_cli_refuses_in_one_line_and_prints_no_secret(layout, capsys, value, monkeypatch):
    models, _ = layout
    monkeypatch.setenv("ONNXPLAIN_TEST_SECRET", "TOKEN_ENV")
    path = _with_metadata(models, "cli", value)
    assert main(["classify", "--model", str(path)]) == 2
    captured = capsys.readouterr()
    assert "outside the model's folder" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "TOKEN" not in captured.out + captured.err
