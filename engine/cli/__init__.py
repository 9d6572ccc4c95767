"""The ``onnxplain`` command line. ``main(argv)`` is the entry point (tested directly).

Usage errors exit 2 with a one-line message; invalid input (model, image, label, option)
also exits 2 with the library's one-line message; ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from typing import Sequence

from . import basic, explain, lime
from . import evaluate as quality
from . import gradcam, gradients
from . import gradcheck, occlusion
from . import more

#: subcommand modules; each has ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = [basic, explain, lime, quality, gradcam, gradients, occlusion, gradcheck, more]


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        # No prefix matching: `classify --label 1` must not silently mean `--labels 1`.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxplain", description="Explain ONNX image classifiers (LIME, Grad-CAM, gradients, "
                     "occlusion) on ONNX Runtime.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        _check_out(args)
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as exc:  # OSError: unreadable/unwritable paths
        if args.debug:
            raise
        sys.stderr.write(f"onnxplain {args.command}: error: {_one_line(exc)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("onnxplain: interrupted\n")
        return 130


def _check_out(args: argparse.Namespace) -> None:
    """Refuse an --out that is not a folder before any work is done (not after minutes of it)."""
    for flag in ("out", "cache_dir"):
        value = getattr(args, flag, None)
        if not isinstance(value, str) or not value:
            continue
        path = pathlib.Path(value)
        for parent in (path, *path.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise ValueError(f"--{flag.replace('_', '-')} {value!r} must be a folder, but {str(parent)!r} "
                                     "is an existing file.")
                break


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename!r}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
