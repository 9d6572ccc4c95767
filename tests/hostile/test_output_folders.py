"""Output folders: checked before computing, atomic files, runs recorded as complete or not.

Oracles: the file system itself (what is in the folder after a run, an interrupted run, an
unwritable folder), a real interrupted process (SIGINT to ``onnxplain rise``), and the
documented exit codes (2 invalid input, 130 interrupted).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from onnxplain.cli import main
from onnxplain.cli import _common


def _files(folder):
    """Every file under the folder (the report's pictures sit in report/), as posix paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_unwritable_out_is_refused_before_any_work(monkeypatch, capsys):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the output folder was checked")
    monkeypatch.setattr(_common, "load_model", no_model)
    assert main(["gradcam", "--out", "/proc/onnxplain-test/out"]) == 2
    err = capsys.readouterr().err
    assert "is not a writable folder" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    assert main(["gradcam", "--out", str(ro)]) == 2
    assert "not a writable folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests import tiny_models as tm

    return str(tm.save(tm.make_classifier(), tmp_path_factory.mktemp("tiny"), "tiny"))


def _explain(tiny, out, label):
    return main(["explain", "--model", tiny, "--preprocessing", "none", "--methods", "occlusion", "rise",
                 "--label", str(label), "--out", str(out), "--no-progress"])


def test_complete_run_record_and_no_temporary_files(tmp_path, tiny, capsys):
    out = tmp_path / "out"
    assert _explain(tiny, out, 2) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True
    assert set(summary["files"]) == set(_files(out))  # every file in the folder is this run's, and recorded
    assert not [f for f in _files(out) if ".tmp-" in f]
    for method in ("occlusion", "rise"):
        assert json.loads((out / f"chelsea_{method}.json").read_text())["complete"] is True


def test_interrupted_run_clears_the_previous_run_and_is_marked_incomplete(tmp_path, tiny, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _explain(tiny, out, 2) == 0
    (out / "mine.txt").write_text("not onnxplain's")  # a file no record lists: never touched
    assert json.loads((out / "summary.json").read_text())["label"] == 2

    original = _common.ProgressBar.__call__

    def progress(self, done, total):  # Ctrl-C in the middle of RISE, through its progress callback
        if self.desc == "rise":
            raise KeyboardInterrupt
        return original(self, done, total)
    monkeypatch.setattr(_common.ProgressBar, "__call__", progress)
    assert _explain(tiny, out, 1) == 130
    assert "interrupted" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["label"] == 1
    assert "chelsea_rise.json" not in _files(out)  # the label-2 RISE files are gone, not left beside label 1's
    assert set(_files(out)) == set(summary["files"]) | {"mine.txt"}
    assert json.loads((out / "chelsea_occlusion.json").read_text())["labels"] == [1]


def test_sigint_to_a_real_run_stops_it_cleanly(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    argv = ["rise", "--num-masks", "60000", "--batch-size", "8", "--out", str(out), "--no-progress"]
    code = ("import sys, onnxplain.cli as cli; print('ready', flush=True); "
            f"sys.exit(cli.main({argv!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"  # imports done: from here on main() handles Ctrl-C
    time.sleep(4.0)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert _files(out) == []  # nothing written as if complete
