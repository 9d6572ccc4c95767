"""``onnxplain bench``: speed of every method against raw inference and peers (the ``bench`` package).

The options and the work live in ``bench.cli`` (also ``python -m bench``); this module only
registers the command. ``bench`` ships with onnxplain but needs the repository's
``models/`` export script and the test extra for its peers.
"""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    try:
        from bench.cli import DESCRIPTION, add_arguments
    except ImportError:  # onnxplain installed without the bench package
        p = sub.add_parser("bench", help="speed against raw ONNX Runtime inference and peers (not installed)")
        p.set_defaults(func=_missing)
        return
    p = sub.add_parser("bench", help="speed of every method against raw ONNX Runtime inference and peers",
                       description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.cli import run as run_bench

    return run_bench(args, prog="onnxplain bench")


def _missing(args: argparse.Namespace) -> int:
    raise ValueError("the bench package is not importable; run from a source checkout (pip install -e .)")
