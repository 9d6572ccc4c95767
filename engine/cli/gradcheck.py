"""``onnxplain gradcheck [--model MODEL]``: the gradient engine against finite differences."""
from __future__ import annotations

import argparse
import json

import onnx

from ..errors import ModelError, OptionError
from ..graph import gradcheck
from ..graph.check import kinked_ops
from ..model import BUNDLED_MODEL


def add_parser(sub) -> None:
    p = sub.add_parser("gradcheck", help="compare the gradient engine with central finite differences")
    p.add_argument("--model", "-m", default=None, help="ONNX model file (default: bundled EfficientNet-Lite0)")
    # the model as a positional argument, as before --model existed (kept working, not advertised)
    p.add_argument("model_positional", nargs="?", default=None, metavar="MODEL", help=argparse.SUPPRESS)
    p.add_argument("--directions", type=int, default=3, help="random (seed, direction) pairs per output (default 3)")
    p.add_argument("--outputs", nargs="+", default=None, help="tensors to differentiate (default: graph outputs)")
    p.add_argument("--seed", type=int, default=0, help="random state")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.model and args.model_positional:
        raise OptionError(f"give the model once: --model {args.model} or {args.model_positional}, not both.")
    path = args.model or args.model_positional or str(BUNDLED_MODEL)
    try:
        proto = onnx.load(path)
    except Exception as exc:
        raise ModelError(f"{path}: not an ONNX model file or corrupt ({str(exc).splitlines()[-1][:200]})") from None
    if args.directions < 1:
        raise OptionError(f"--directions must be >= 1; got {args.directions}.")
    records = gradcheck(proto, outputs=args.outputs, directions=args.directions, random_state=args.seed)
    kinks = kinked_ops(proto)
    if args.json:
        print(json.dumps([r.__dict__ for r in records], indent=1, default=str))
    else:
        print(f"gradcheck {path}: directional derivative <grad, v> vs central difference")
        if kinks and records and records[0].precision == "float32":
            print(f"  note: the model has kinked ops ({', '.join(kinks)}) and ONNX Runtime has no float64 kernels "
                  "for some of its ops, so float32 finite differences cannot check it (steps that beat rounding "
                  "straddle kinks); compare with an autograd framework instead (tests do: torch float64).")
        print(f"  {'output':<28} {'dir':>3} {'analytic':>13} {'numeric':>13} {'rel.err':>9} precision  ok")
        for r in records:
            print(f"  {r.output[:28]:<28} {r.direction:>3} {r.analytic:13.6g} {r.numeric:13.6g} {r.rel_error:9.2e} "
                  f"{r.precision:<9}  {'yes' if r.ok else ('NO' if r.reliable else 'n/a: FD unstable')}")
        by_out: dict[str, list] = {}
        for r in records:
            by_out.setdefault(r.output, []).append(r)
        for out, rs in by_out.items():
            usable = [r for r in rs if r.ok or r.reliable]
            line = f"{out}: {sum(r.ok for r in rs)}/{len(rs)} directions agree"
            if usable:
                line += f" (max rel. error {max(r.rel_error for r in usable):.2e} where the estimate is stable)"
            if len(usable) < len(rs):
                line += (f"; {len(rs) - len(usable)} finite-difference estimate(s) unstable at steps h and h/2 "
                         "(kinks of ReLU-family ops or float32 rounding): not evidence either way")
            print(line)
    # Fail only on a disagreement that the finite difference itself supports.
    return 0 if all(r.ok or not r.reliable for r in records) else 1
