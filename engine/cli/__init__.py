"""The ``onnxplain`` command line. ``main(argv)`` is the entry point (tested directly).

Usage errors exit 2 with a one-line message; invalid input (model, image, label, option)
also exits 2 with the library's one-line message; ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from . import basic, explain, lime
from . import evaluate as quality
from . import gradcam, gradients
from . import bench, gradcheck, occlusion

#: subcommand modules; each has ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = [basic, explain, lime, quality, gradcam, gradients, occlusion, gradcheck, bench]


class _Parser(argparse.ArgumentParser):
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
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        if args.debug:
            raise
        sys.stderr.write(f"onnxplain {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("onnxplain: interrupted\n")
        return 130
