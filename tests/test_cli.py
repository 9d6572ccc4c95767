"""The command line through ``onnxplain.cli.main(argv)`` (oracle: the bundled model's known answer
on chelsea, and the documented exit codes: 0 ok, 2 usage or invalid input)."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from onnxplain.cli import main


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
    if argv[0] == "nonsense" or "--device" in argv:  # argparse usage errors exit through SystemExit(2)
        with pytest.raises(SystemExit) as ex:
            main(argv)
        rc = ex.value.code
    else:
        rc = main(argv)
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1, err


def test_help_everywhere(capsys):
    from onnxplain.cli import COMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    # every command module registered its commands (oracle: the documented command list)
    assert set(sub.choices) == {"classify", "inspect", "explain", "lime", "evaluate", "sanity", "compare", "gradcam",
                                "gradients", "occlusion", "rise", "gradcheck", "run", "report", "cam", "reciprocam",
                                "kernelshap", "export-explainer"}
    assert len(COMMANDS) == 12
    for name in sub.choices:
        with pytest.raises(SystemExit) as ex:
            main([name, "--help"])
        assert ex.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: onnxplain {name}"), text[:80]
        if name not in ("gradcheck", "report"):  # every command that loads a model takes the runtime options
            assert "--provider" in text and "--threads" in text, name


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


@pytest.mark.parametrize("command", [["occlusion", "--no-progress"], ["explain", "--no-progress"],
                                     ["evaluate", "--no-progress"], ["rise", "--no-progress"]])
def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, command):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        assert main([*command, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "must be a folder" in err and len(err.splitlines()) == 1, err


def test_unreadable_paths_are_one_line_errors(tmp_path, capsys):
    assert main(["classify", "--labels", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a file" in err and len(err.splitlines()) == 1, err
    assert main(["classify", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an ONNX model file" in err and len(err.splitlines()) == 1, err
    (tmp_path / "cache").write_text("x")
    assert main(["compare", "--variant", "int8", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
                 "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--cache-dir" in err and "must be a folder" in err and len(err.splitlines()) == 1, err


def test_explain_uint8_model_runs_forward_only_methods_and_says_so(tmp_path, capsys):
    """A uint8-input model has no gradient: the default job skips (and names) the gradient methods
    instead of failing half-way; asking for one explicitly is refused before any work."""
    import onnx

    from tests import tiny_models as tm

    model = tmp_path / "u8.onnx"
    onnx.save(tm.make_classifier(dtype="uint8"), str(model))
    out = tmp_path / "out"
    assert main(["explain", "--model", str(model), "--preprocessing", "none", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "skipped gradcam" in text
    summary = json.loads((out / "summary.json").read_text())
    from onnxplain.registry import METHODS, forward_only

    expected = sorted(n for n in forward_only() if METHODS[n].in_main_job)   # lime, occlusion, rise, reciprocam, ...
    assert {"lime", "occlusion", "rise", "reciprocam", "kernelshap"} <= set(expected)
    # the tiny classifier has no spatial feature map: forward-only CAMs are skipped with that reason
    no_map = {m for m, why in summary["skipped"].items() if "feature layer" in why}
    assert no_map == {"reciprocam", "eigencam", "ablationcam"} & set(expected)
    assert sorted(summary["methods"]) == sorted(set(expected) - no_map) and "gradient" in summary["skipped"]
    assert main(["explain", "--model", str(model), "--preprocessing", "none", "--out", str(tmp_path / "o2"),
                 "--no-progress", "--methods", "lime", "gradient"]) == 2
    err = capsys.readouterr().err.strip()
    assert "['gradient'] cannot run" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o2").exists() or not list((tmp_path / "o2").iterdir())  # refused before any work


@pytest.mark.parametrize("argv, match", [
    (["gradients", "--method", "gradient", "--num-steps", "50"], "--num-steps is only used by --method integrated"),
    (["gradients", "--method", "integrated-gradients", "--noise-level", "0.3"], "--noise-level is only used by"),
    (["gradients", "--method", "smoothgrad", "--baseline", "0"], "--baseline is only used by"),
    (["lime", "--segmentation", "quickshift", "--num-features", "10"], "--num-features does nothing"),
])
def test_options_the_method_would_ignore_are_refused(argv, match, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # refused before any work


def test_option_prefixes_are_not_guessed(capsys):
    """`--label` on classify (which has only --labels) must be an error, not --labels."""
    with pytest.raises(SystemExit) as ex:
        main(["classify", "--label", "1"])
    assert ex.value.code == 2
    assert "unrecognized arguments: --label" in capsys.readouterr().err


def test_negative_seed_is_a_clear_error(capsys):
    assert main(["rise", "--seed", "-1", "--num-masks", "8", "--no-progress"]) == 2
    assert "'random_state' parameter must be a non-negative integer" in capsys.readouterr().err
