"""Command line of the bench: ``python -m bench`` from a source checkout (bench is not shipped in the wheel)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from .cases import BY_NAME, DEFAULT_METHODS

DESCRIPTION = ("Measure every method against raw ONNX Runtime inference of the same images and against its peers "
               "(the lime package, captum on the torch twin); write a table as JSON and markdown.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default=None,
                   help="ONNX model file (default: the bundled EfficientNet-Lite0; a user model has no captum peers)")
    p.add_argument("--preprocessing", default=None, help="'imagenet', 'none' or a JSON object, as for other commands")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help=f"cases to run (default: {' '.join(DEFAULT_METHODS)}; 'all' adds "
                        f"{' '.join(sorted(set(BY_NAME) - set(DEFAULT_METHODS)))})")
    p.add_argument("--out", "-o", default="onnxplain-bench",
                   help="output folder for <date>-<device>-<cpu>.{json,md} (default: onnxplain-bench)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, one run, one worker, no peers: checks that the bench works (CI), not speed")
    p.add_argument("--scaling", action="store_true",
                   help="also LIME vs num_samples, occlusion vs stride, gradients vs batch (table + PNG)")
    p.add_argument("--only-scaling", action="store_true", help="the scaling study only")
    p.add_argument("--max-samples", type=int, default=65536,
                   help="largest LIME num_samples in --scaling (default 65536: ~15 min more on 2 cores; 16384: ~4 min)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="ORT intra-op, torch, numba and BLAS threads, all equal (default: all cores)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="cpu, or gpu (needs onnxruntime-gpu and a CUDA device; peers then use torch CUDA)")
    p.add_argument("--repeats", type=int, default=3, help="steady-state runs per case, best and median kept (default 3)")
    p.add_argument("--budget", type=float, default=60.0, help="seconds per case after which repeats stop (default 60)")
    p.add_argument("--no-peers", action="store_true", help="skip the lime package and captum")
    p.add_argument("--no-spinning", action="store_true",
                   help="ORT sessions with allow_spinning=0 (default: ORT's default, spinning on)")
    p.add_argument("--json", action="store_true", help="print the record as JSON instead of the table")
    p.add_argument("--zoo", action="store_true",
                   help="the real-zoo table instead (bench/zoo.py: first call, forward, gradient, ratio per row; "
                        "`python -m bench --zoo --help`)")


def command_line(prog: str, args: argparse.Namespace) -> str:
    """The command that reproduces ``args`` (recorded in the results)."""
    defaults = vars(_defaults())
    parts = [prog]
    for name, value in vars(args).items():
        if name not in defaults or value == defaults[name] or name in ("json",):
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return " ".join(parts)


def _defaults() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args([])


def options(args: argparse.Namespace, command: str):
    """bench.runner.Options from parsed arguments (validated: ValueError names the option)."""
    from .runner import Options

    for name in ("threads", "repeats", "max_samples"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}.")
    if args.budget <= 0:
        raise ValueError(f"--budget must be > 0 seconds; got {args.budget}.")
    pre = args.preprocessing
    if pre is not None and pre.strip().startswith("{"):
        try:
            pre = json.loads(pre)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--preprocessing is not valid JSON: {exc}") from None
    from .cases import select

    select(args.methods)  # unknown names fail here, before any work
    return Options(model=args.model, preprocessing=pre, methods=args.methods, out=args.out, smoke=args.smoke,
                   scaling=args.scaling, only_scaling=args.only_scaling, max_samples=args.max_samples,
                   threads=args.threads, device=args.device, repeats=1 if args.smoke else args.repeats,
                   budget_s=args.budget, peers=not args.no_peers, spinning=not args.no_spinning, command=command)


def run(args: argparse.Namespace, prog: str = "python -m bench") -> int:
    from . import runner

    opts = options(args, command_line(prog, args))
    result = runner.run(opts)
    if args.json:
        print(json.dumps(result["record"], indent=1, default=str))
    else:
        if result["table"]:
            print(result["table"])
            print()
            for line in result["record"].get("headline", []):
                print(line)
        print("\nwritten: " + ", ".join(result["files"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench``: errors in the input exit 2 with one line, as ``onnxplain`` does."""
    p = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    add_arguments(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--zoo" in argv:                   # the real-zoo table: its own options (bench/zoo.py)
        from .zoo import main as zoo_main

        return zoo_main([a for a in argv if a != "--zoo"])
    args = p.parse_args(argv)
    try:
        return run(args, prog="python -m bench")
    except (ValueError, TypeError, FileNotFoundError) as exc:
        sys.stderr.write(f"python -m bench: error: {exc}\n")
        return 2
