"""The command line through ``engine.cli.main(argv)`` (oracle: the bundled model's known answer
on chelsea, and the documented exit codes: 0 ok, 2 usage or invalid input)."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from engine.cli import main


def test_classify_default_image_and_model(capsys):
    assert main(["classify", "--top-k", "3", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)
    assert len(top) == 3 and "cat" in top[0]["name"]


def test_classify_image_file(tmp_path, capsys):
    from skimage.data import chelsea

    Image.fromarray(chelsea()).save(tmp_path / "cat.png")
    assert main(["classify", str(tmp_path / "cat.png"), "-k", "1"]) == 0
    assert "cat" in capsys.readouterr().out


def test_inspect_lists_io_and_tensors(capsys):
    assert main(["inspect", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["input"]["layout"] == "NCHW" and info["output"]["kind"] == "probabilities"
    assert info["output"]["logits"] == "logits"
    assert main(["inspect"]) == 0
    assert "preproc" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["classify", "--model", "missing.onnx"], "does not exist"),
    (["classify", "missing.png"], "does not exist"),
    (["classify", "--top-k", "0"], "'top_k' parameter must be >= 1"),
    (["classify", "--device", "tpu"], "invalid choice"),
    (["explain", "--methods", "nonsense"], "unknown method"),
    (["nonsense"], "invalid choice"),
])
def test_errors_exit_2_with_one_line(argv, match, capsys):
    with pytest.raises(SystemExit) if argv[0] == "nonsense" or "--device" in argv else _noop():
        rc = main(argv)
        assert rc == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1, err


class _noop:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_help_everywhere(capsys):
    from engine.cli import COMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        with pytest.raises(SystemExit) as ex:
            main([name, "--help"])
        assert ex.value.code == 0
    assert len(COMMANDS) >= 2


def test_gradcheck_smooth_model_agrees(capsys):
    """Oracle: central finite differences, meaningful on the smooth (tanh) zoo model."""
    import pathlib

    smooth = pathlib.Path(__file__).parent / "data" / "zoo" / "smooth.onnx"
    assert main(["gradcheck", str(smooth), "--directions", "2"]) == 0
    assert "2/2 directions agree" in capsys.readouterr().out


def test_gradcheck_kinked_model_reports_fd_not_meaningful(capsys):
    """On ReLU6 (Clip) networks float32 finite differences are no oracle: say so, don't fail."""
    assert main(["gradcheck", "--directions", "1"]) == 0
    assert "cannot check it" in capsys.readouterr().out
