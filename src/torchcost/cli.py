"""The torchcost command: parse -> resolve -> analyze -> render. Computes nothing itself.

Exit codes: 0 done, 2 bad usage or bad input (one line on stderr), 1 internal error.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from torchcost import __version__
from torchcost.api import analyze
from torchcost.errors import TorchcostError
from torchcost.examples import DEFAULT, EXAMPLES, build

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchcost", description="Parameters, MACs, FLOPs and shapes of a PyTorch model, per module.")
    parser.add_argument("spec", nargs="?", default=f"example:{DEFAULT}",
                        help=f"model to analyse (default: example:{DEFAULT}); examples: {', '.join(EXAMPLES)}")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--depth", type=int, default=None, help="show modules down to this depth")
    parser.add_argument("--width", type=int, default=None, help="table width in characters")
    parser.add_argument("--no-fold", action="store_true", help="do not fold identical repeated blocks")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--version", action="version", version=f"torchcost {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        source, _, name = args.spec.partition(":")
        if source != "example" or not name:
            raise TorchcostError(f"cannot resolve {args.spec!r}: this version knows example:NAME specs "
                                 f"({', '.join(EXAMPLES)})")
        model, inputs = build(name)
        report = analyze(model, *inputs)
        if args.format == "json":
            sys.stdout.write(report.to_json() + "\n")
        else:
            width = args.width or (None if sys.stdout.isatty() else 120)
            sys.stdout.write(report.table(depth=args.depth, width=width, fold=not args.no_fold,
                                          color=sys.stdout.isatty()))
        return 0
    except TorchcostError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"torchcost: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an internal error: say so in one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"torchcost: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
