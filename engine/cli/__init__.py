"""The ``onnxplain`` command line. ``main(argv)`` is the entry point (tested directly).

Usage errors exit 2 with a one-line message; invalid input (model, image, label, option)
also exits 2 with the library's one-line message; ``--debug`` shows tracebacks.

Conventions shared by every command: ``--model/-m`` names the model (default: the bundled
one); the image is a positional argument that may come before or after the options (an
image file trailing a many-valued option such as ``--label 3 cat.jpg`` is taken as the
image); ``onnxplain`` alone prints this help; ``--version``.
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from typing import Sequence

from ..errors import ModelError, OptionError
from . import basic, explain, lime
from . import quality
from . import gradcam, gradients
from . import gradcheck, occlusion, report, rise
from . import run as dataset_run
from . import more
from .. import __version__
from ._common import looks_like_image
from ._output import check_writable

#: subcommand modules; each has ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = [basic, explain, lime, quality, gradcam, gradients, occlusion, rise, gradcheck, dataset_run, report, more]


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        # No prefix matching: `classify --label 1` must not silently mean `--labels 1`.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


class _CommandParser(_Parser):
    """A subcommand's parser: positionals and options in any order (``explain --label 3 cat.jpg``)."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxplain", description="Explain ONNX image classifiers (LIME, Grad-CAM, gradients, "
                     "occlusion) on ONNX Runtime.")
    parser.add_argument("--version", action="version", version=f"onnxplain {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    sub.required = True
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv == ["--debug"]:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        _trailing_images(args)
        _check_out(args)
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as exc:  # OSError: unreadable/unwritable paths
        if args.debug:
            raise
        message = _one_line(exc)
        image = getattr(args, "image", None)
        if isinstance(exc, ModelError) and isinstance(image, str) and image not in message:
            message += f" (image {image})"  # the library saw the decoded array, the user gave a file
        sys.stderr.write(f"onnxplain {args.command}: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        where = (f"; files already in {out!r} are complete, and a run cut short is marked \"complete\": false "
                 "in its JSON record" if isinstance(out, str) else "")
        sys.stderr.write(f"onnxplain {args.command}: interrupted (Ctrl-C), stopped{where}.\n")
        return 130


def _trailing_images(args: argparse.Namespace) -> None:
    """Image files swallowed by a trailing many-valued option become the positional image(s)."""
    for flag in ("label", "methods", "layers", "outputs"):
        values = getattr(args, flag, None)
        if not isinstance(values, list) or not values:
            continue
        moved = []
        while values and isinstance(values[-1], str) and looks_like_image(values[-1]):
            moved.insert(0, values.pop())
        if not moved:
            continue
        if hasattr(args, "image") and args.image is None and len(moved) == 1:
            args.image = moved[0]
        elif isinstance(getattr(args, "images", None), list):
            args.images.extend(moved)
        elif isinstance(getattr(args, "inputs", None), list):
            args.inputs.extend(moved)
        else:
            raise OptionError(f"--{flag.replace('_', '-')} got image file(s) {moved}, and the "
                                         "command already has its image.")
        if not values:
            setattr(args, flag, None)


def _check_out(args: argparse.Namespace) -> None:
    """Refuse an --out that is not a writable folder before any work is done (not after minutes
    of it): the folder is created and a probe file written and removed."""
    for flag in ("out", "cache_dir"):
        value = getattr(args, flag, None)
        if not isinstance(value, str) or not value:
            continue
        path = pathlib.Path(value)
        for parent in (path, *path.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise OptionError(f"--{flag.replace('_', '-')} {value!r} must be a folder, but {str(parent)!r} "
                                     "is an existing file.")
                break
        check_writable(path, f"--{flag.replace('_', '-')}")


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename!r}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
