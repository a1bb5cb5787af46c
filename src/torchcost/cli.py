"""The torchcost command: parse -> resolve -> analyze -> render. Computes nothing itself.

    torchcost [SPEC] [options]              analyse one model (default: example:simple_cnn)
    torchcost compare SPEC SPEC ... [opts]  one table, a column per model, ratios to the first
    torchcost list [SOURCE]                 examples, shipped configs, and the names a source offers

Exit codes: 0 done, 2 bad usage or bad input (one line on stderr; the traceback too with --debug), 1 internal error.

Where things go (so later options are small edits): model and input options map to :func:`torchcost.resolve.resolve`
in :func:`resolve_options`; analysis options to :func:`torchcost.analyze` and :func:`torchcost.max_batch_size` in
:class:`AnalysisOptions`; output options to a :class:`~torchcost.render.layout.TableOptions` in :func:`table_options`
and on to a renderer in :func:`render_report` / :func:`render_comparison`.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import re
import shutil
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal, NoReturn, TextIO

import torch

from torchcost._version import __version__
from torchcost.api import analyze, analyze_spec
from torchcost.collect.probe import KERNEL_MEMORY, KernelMemory
from torchcost.collect.recording import live_status
from torchcost.comparison import Comparison, build_comparison
from torchcost.errors import ModelError, TorchcostError
from torchcost.examples import DEFAULT, EXAMPLES
from torchcost.fit import BatchFit, SweepPoint, fsdp_sweep, max_batch_size
from torchcost.parallel import Parallel
from torchcost.render.compare import (
    render_compare_csv,
    render_compare_json,
    render_compare_markdown,
    render_compare_text,
)
from torchcost.render.csv import render_csv
from torchcost.render.fit import fit_lines, render_sweep
from torchcost.render.html import render_compare_html, render_html
from torchcost.render.json import render_json
from torchcost.render.layout import COLUMNS, SORT_KEYS, STEP_SORT_KEYS, TableOptions
from torchcost.render.markdown import render_markdown
from torchcost.render.text import render_text
from torchcost.report import CostReport
from torchcost.resolve import SOURCES, Resolved, list_names, resolve
from torchcost.resolve.common import ZOO_HINT, parse_value
from torchcost.resolve.hf import shipped
from torchcost.run import dynamo, symbolic
from torchcost.run.step import OPTIMIZERS
from torchcost.serve import cli as serving
from torchcost.timing.hardware import hardware_key, hardware_names
from torchcost.timing.measure import TimeOptions
from torchcost.units import format_bytes, parse_bytes

__all__ = ["DTYPES", "FORMATS", "INPUT_DTYPES", "AnalysisOptions", "console", "main", "render_comparison",
           "render_report", "resolve_options", "table_options"]

FORMATS = ("table", "json", "csv", "markdown", "html")
NO_WRAP_WIDTH = 10_000  # the text table's width off a terminal: as wide as its rows, so no row wraps
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}
INPUT_DTYPES: dict[str, torch.dtype] = {
    **DTYPES,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
    "int16": torch.int16, "short": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
SUBCOMMANDS = ("compare", "list")
_SHAPE = re.compile(r"\d+([,xX]\d+)*")
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad command-line usage: argparse's complaint, raised instead of printed so main() reports it in one line."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


# -- argument types ------------------------------------------------------------------------------------------------

def _shape(text: str) -> tuple[int, ...]:
    compact = text.replace(" ", "")
    if not _SHAPE.fullmatch(compact) or any(int(p) < 1 for p in re.split(r"[,xX]", compact)):
        raise argparse.ArgumentTypeError(f"not a shape: {text!r}; give positive ints joined by commas, "
                                         f"such as 1,3,224,224")
    return tuple(int(p) for p in re.split(r"[,xX]", compact))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive int: {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not an int >= 0: {text!r}")
    return value


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"not key=value: {text!r}")
    return key.strip(), value


def _dtype(text: str) -> str:
    if text.lower() not in DTYPES:
        hint = "; integer inputs are --input-dtype's" if text.lower() in INPUT_DTYPES else ""
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r}; choose from {', '.join(DTYPES)}{hint}")
    return text.lower()


def _float_dtype(text: str) -> torch.dtype:
    return DTYPES[_dtype(text)]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def _degrees(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"not a list of positive ints: {text!r}; give degrees joined by commas, "
                                         f"such as 8,16,32,64")
    return values


def _input_dtypes(text: str) -> tuple[torch.dtype, ...]:
    names = [n.strip().lower() for n in text.split(",")]
    unknown = [n for n in names if n not in INPUT_DTYPES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown dtype {unknown[0]!r}; choose from {', '.join(INPUT_DTYPES)}")
    return tuple(INPUT_DTYPES[n] for n in names)


# -- parsers -------------------------------------------------------------------------------------------------------

_SPEC_HELP = (f"example:NAME | torchvision:NAME | timm:NAME | hf:NAME | hf:path/config.json | path/to/file.py:Name | "
              f"package.module:Name (default: example:{DEFAULT}; torchcost list shows the names)")


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and inputs")
    g.add_argument("--input-size", action="append", type=_shape, metavar="SHAPE",
                   help="an input's whole shape, batch dimension included, e.g. 1,3,224,224 (repeat for several "
                        "inputs); replaces the default input. A model's input_size attribute is read the same way")
    g.add_argument("--input-dtype", type=_input_dtypes, metavar="DTYPE[,DTYPE...]",
                   help="dtype of the inputs a file or module spec makes from sizes, one for all or one per "
                        "--input-size: int64 | int32 | bool | float32 | bfloat16 | ... (integers are random ids "
                        "below the first Embedding's size; default: the model's dtype, int64 when its first layer is "
                        "an Embedding)")
    g.add_argument("--batch-size", type=_positive, metavar="N",
                   help="the leading dimension of every input (default: the source's, mostly 1; a training step "
                        "whose batch norm refuses 1 is analysed at 2, as the first line says)")
    g.add_argument("--seq-len", type=_positive, metavar="N", help="tokens per sequence for text models (default 128)")
    g.add_argument("--dtype", type=_dtype, metavar="DTYPE",
                   help="float32 | float16 | bfloat16 | float64 (default: as built; hf: the config's dtype)")
    g.add_argument("--device", metavar="DEVICE", help="cpu | cuda | cuda:N | meta (default cpu)")
    g.add_argument("--meta", action="store_true",
                   help="shorthand for --device meta: shapes only, no memory for weights (a 70B config fits "
                        "anywhere); any other --device with it is refused")
    g.add_argument("--config", action="append", type=_pair, default=[], metavar="KEY=VALUE",
                   help="override a field of an hf: config, e.g. num_hidden_layers=2 (repeatable)")
    g.add_argument("--kwargs", action="append", type=_pair, default=[], metavar="KEY=VALUE",
                   help="keyword argument for the model's class or factory, e.g. num_classes=10 (repeatable)")


def _memory_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("memory (docs/conventions.md, Memory)")
    _step_options(g)
    g.add_argument("--memory-budget", type=_budget, metavar="SIZE",
                   help="also report the largest batch whose predicted peak plus an allowance fits SIZE "
                        "(e.g. 24GiB, 80GB)")
    g.add_argument("--kernel-memory", choices=KERNEL_MEMORY,
                   help="memory CPU kernels allocate inside themselves: auto (default: the workspace table, else run "
                        "the kernel once per shape and measure it, kept for later runs on this machine in "
                        "$TORCHCOST_CACHE_DIR, default ~/.cache/torchcost; off: keep nothing), measure (always), "
                        "table (never run it)")


def _step_options(g: Any) -> None:
    """What is run and how memory is counted: a training step or inference (analyze's and compare's flags)."""
    g.add_argument("--train", action="store_true",
                   help="measure a training step (forward, loss, backward, optimizer step) instead of inference: "
                        "FLOPs and memory of every phase, per module")
    g.add_argument("--optimizer", choices=tuple(OPTIMIZERS), metavar="NAME",
                   help=f"the step's optimizer: {' | '.join(OPTIMIZERS)} (default adamw; implies --train)")
    g.add_argument("--amp", choices=("bf16", "fp16"), help="run the forward under torch.autocast with this dtype")
    g.add_argument("--target", choices=("cpu", "cuda"),
                   help="whose allocation behaviour memory follows (default: the model's device; cuda for --meta)")


def _parallel_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "distributed (docs/conventions.md, Distributed training)",
        "Simulate one rank of a world of --fsdp x --tp (or --ddp x --tp) ranks: the inputs are that rank's own "
        "batch and every figure is that rank's (local shards, FLOPs, peak memory, collectives).")
    g.add_argument("--fsdp", type=_positive, metavar="N", help="FSDP2 (fully_shard) over N ranks")
    g.add_argument("--tp", type=_positive, metavar="N",
                   help="tensor parallelism over N ranks (built-in plans for HF Llama/Mistral/Qwen2-style models "
                        "and GPT-2); with --fsdp or --ddp a 2-D mesh (dp, tp)")
    g.add_argument("--ddp", type=_positive, metavar="N", help="DistributedDataParallel over N replicas (modelled)")
    g.add_argument("--world", type=_positive, metavar="N",
                   help="the world size: a check, or a shorthand for the data-parallel degree: --world 8 --tp 2 is "
                        "--fsdp 4 --tp 2; it must equal fsdp x tp (or ddp x tp)")
    g.add_argument("--no-reshard", action="store_true",
                   help="FSDP2's reshard_after_forward=False: keep parameters unsharded from forward to backward")
    g.add_argument("--offload", action="store_true",
                   help="FSDP2's CPU offload: sharded parameters, gradients and optimizer state in host memory, the "
                        "optimizer step on the CPU (the device's peak leaves them out; the footer shows the host's)")
    g.add_argument("--param-dtype", type=_float_dtype, metavar="DTYPE",
                   help="FSDP2 MixedPrecisionPolicy param_dtype (bf16, fp16, fp32, ...)")
    g.add_argument("--reduce-dtype", type=_float_dtype, metavar="DTYPE",
                   help="FSDP2 MixedPrecisionPolicy reduce_dtype (the gradients' reduce-scatter)")
    g.add_argument("--bucket-cap-mb", type=_positive_float, metavar="MB", help="DDP's bucket cap (default 25)")
    g.add_argument("--rank", type=_non_negative, metavar="R",
                   help="the rank to analyse (default: the worst one, the highest peak)")
    g.add_argument("--fsdp-sweep", type=_degrees, metavar="N,N,...",
                   help="instead of the module table, one row per FSDP2 degree (world = degree x --tp): one rank's "
                        "peak and its breakdown, step FLOPs, collective bytes per step and, with --memory-budget, "
                        "the largest per-rank batch that fits")


def _time_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("measured time (docs/conventions.md, Time)")
    g.add_argument("--time", action="store_true",
                   help="also time the real model on its device after counting: median and spread of the whole "
                        "forward (with --train the whole step and its phases, on a copy), and each module's time "
                        "(the Time column of --columns time); needs real weights (not --meta)")
    g.add_argument("--repeats", type=_positive, metavar="N", help="timed runs of each kind for --time (default 20)")
    g.add_argument("--warmup", type=_non_negative, metavar="N", help="untimed runs first for --time (default 3)")


def _step_time(args: argparse.Namespace) -> float | None:
    if args.step_time is not None and args.hardware is None:
        raise UsageError("--step-time goes with --gpu (whose dense peak the MFU divides by)", "torchcost")
    return float(args.step_time) if args.step_time is not None else None


def _timing(args: argparse.Namespace) -> TimeOptions | None:
    if not args.time:
        for flag, value in (("--repeats", args.repeats), ("--warmup", args.warmup)):
            if value is not None:
                raise UsageError(f"{flag} goes with --time", "torchcost")
        return None
    defaults = TimeOptions()
    return TimeOptions(repeats=args.repeats if args.repeats is not None else defaults.repeats,
                       warmup=args.warmup if args.warmup is not None else defaults.warmup)


def _columns(text: str) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in COLUMNS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown column {unknown[0] if unknown else text!r}; choose from "
                                         f"{', '.join(COLUMNS)} (joined by commas)")
    return names


def _hardware_name(text: str) -> str:
    try:
        return hardware_key(text)
    except TorchcostError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _prediction_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("predicted time (docs/conventions.md, Time)")
    g.add_argument("--gpu", "--hardware", dest="hardware", type=_hardware_name, metavar="NAME",
                   help=f"predict the time on this hardware with a roofline per op (dense peaks, documented "
                        f"efficiencies; works with --meta): {' | '.join(hardware_names())} (cpu: this machine, "
                        f"measured once and cached). Shows the forward, the step with --train, tokens/s or "
                        f"samples/s, and which modules are memory-bound (--columns predicted,bound)")
    g.add_argument("--step-time", type=_positive_float, metavar="SECONDS",
                   help="a measured step time (a forward without --train) for the model FLOP utilisation (MFU) on "
                        "--gpu; without it, --time's measurement is used")


def _parallel(args: argparse.Namespace) -> Parallel | None:
    """The Parallel the distributed flags ask for (None: none given); a flag without its strategy, or a --world that
    does not factor, is a UsageError. Degrees the library refuses (a TP degree not dividing the heads) are its
    InputErrors."""
    sweep = args.fsdp_sweep is not None
    if sweep and (args.fsdp is not None or args.ddp is not None or args.world is not None):
        raise UsageError("--fsdp-sweep gives the FSDP degrees itself: not with --fsdp, --ddp or --world", "torchcost")
    if args.fsdp is not None and args.ddp is not None:
        raise UsageError("--fsdp and --ddp cannot be combined (FSDP2 already replicates what it shards)", "torchcost")
    tp = args.tp or 1
    fsdp, ddp = args.fsdp or 1, args.ddp or 1
    if args.world is not None:
        dp = fsdp * ddp
        if args.fsdp is None and args.ddp is None:
            if args.world % tp:
                raise UsageError(f"--world {args.world} does not factor as fsdp x tp with --tp {tp}", "torchcost")
            fsdp = dp = args.world // tp
        if dp * tp != args.world:
            name = "ddp" if args.ddp is not None else "fsdp"
            raise UsageError(f"--world {args.world} is not {name} x tp = {dp} x {tp} = {dp * tp}", "torchcost")
    given = sweep or args.world is not None or any(v is not None for v in (args.fsdp, args.tp, args.ddp))
    if not given:
        for flag, value in (("--no-reshard", args.no_reshard or None), ("--offload", args.offload or None),
                            ("--param-dtype", args.param_dtype), ("--reduce-dtype", args.reduce_dtype),
                            ("--bucket-cap-mb", args.bucket_cap_mb), ("--rank", args.rank)):
            if value is not None:
                raise UsageError(f"{flag} goes with --fsdp, --tp, --ddp, --world or --fsdp-sweep", "torchcost")
        return None
    sharded = sweep or fsdp > 1
    for flag, value in (("--no-reshard", args.no_reshard or None), ("--offload", args.offload or None),
                        ("--param-dtype", args.param_dtype), ("--reduce-dtype", args.reduce_dtype)):
        if value is not None and not sharded:
            raise UsageError(f"{flag} is an FSDP2 option: it goes with --fsdp (or --world, --fsdp-sweep)", "torchcost")
    if args.bucket_cap_mb is not None and ddp <= 1:
        raise UsageError("--bucket-cap-mb is DDP's: it goes with --ddp", "torchcost")
    return Parallel(fsdp=fsdp, tp=tp, ddp=ddp, reshard_after_forward=not args.no_reshard, offload=args.offload,
                    param_dtype=args.param_dtype, reduce_dtype=args.reduce_dtype,
                    bucket_cap_mb=args.bucket_cap_mb if args.bucket_cap_mb is not None else 25.0, rank=args.rank)


def _budget(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("general")
    g.add_argument("--no-progress", action="store_true", help="no progress line on stderr (shown only on a terminal)")
    g.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _analyze_parser() -> _Parser:
    p = _Parser(
        prog="torchcost",
        usage="torchcost [SPEC] [options]\n       torchcost compare SPEC SPEC ... [options]\n"
              "       torchcost list [SOURCE]",
        description="Parameters, MACs, FLOPs, shapes and memory of a PyTorch model, per module, exactly.",
        epilog="Exit codes: 0 done, 2 bad usage or input, 1 internal error. Formulas: docs/conventions.md.")
    p.add_argument("spec", nargs="?", default=f"example:{DEFAULT}", metavar="SPEC", help=_SPEC_HELP)
    _model_options(p)
    _memory_options(p)
    _parallel_options(p)
    _time_options(p)
    serving.add_options(p, _positive)
    _prediction_options(p)
    g = p.add_argument_group("output")
    g.add_argument("--format", choices=FORMATS, default="table",
                   help="table (default) | json (the whole report, docs/json-schema.md) | csv (one row per module) | "
                        "markdown (a GitHub table) | html (one self-contained page: charts, sortable table; use -o)")
    g.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    g.add_argument("--plot", metavar="FILE.png",
                   help="also draw the costliest layers' FLOPs and params and the memory timeline into an image "
                        "(png, svg or pdf; needs matplotlib: pip install 'torchcost[plot]')")
    g.add_argument("--depth", type=_non_negative, metavar="N",
                   help="show modules down to depth N (table, markdown, csv)")
    g.add_argument("--sort", choices=SORT_KEYS,
                   help="list the leaf layers, most expensive first: by forward flops, macs or params; with --train "
                        "also by step (forward + backward + recompute + optimizer FLOPs) or backward FLOPs")
    g.add_argument("--top", type=_positive, metavar="K",
                   help="only the K most expensive leaf layers (by --sort; default flops, with --train step)")
    g.add_argument("--no-fold", action="store_true", help="show identical repeated blocks one by one")
    g.add_argument("--columns", type=_columns, default=(), metavar="NAME[,NAME...]",
                   help=f"optional columns after the counts (table, markdown, csv): {' | '.join(COLUMNS)}: bytes "
                        f"read + written by the forward's ops, FLOPs per byte, the predicted seconds of --gpu (the "
                        f"step's with --train) and whether compute- or memory-bound, the measured seconds of --time")
    g.add_argument("--width", type=_positive, metavar="N",
                   help="table width in characters (default: the terminal's; off a terminal, as wide as the rows)")
    _common_options(p)
    p.add_argument("--version", action="version", version=f"torchcost {__version__}")
    return p


def _compare_parser() -> _Parser:
    p = _Parser(prog="torchcost compare", usage="torchcost compare SPEC SPEC ... [options]",
                description="One table with a column per model (params, MACs, FLOPs, memory sizes) and each "
                            "model's ratio to the first. Model options apply to every model.")
    p.add_argument("specs", nargs="+", metavar="SPEC", help=_SPEC_HELP)
    p.add_argument("--names", metavar="A,B,...", help="column labels, one per model, joined by commas")
    _model_options(p)
    _step_options(p.add_argument_group("what runs (docs/conventions.md, Memory)"))
    g = p.add_argument_group("output")
    g.add_argument("--format", choices=FORMATS, default="table",
                   help="table (default) | json | csv | markdown | html (one self-contained page; use -o)")
    g.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    g.add_argument("--width", type=_positive, metavar="N",
                   help="table width in characters (default: the terminal's; off a terminal, as wide as the rows)")
    _common_options(p)
    return p


def _list_parser() -> _Parser:
    p = _Parser(prog="torchcost list", usage="torchcost list [SOURCE]",
                description="With no SOURCE: the sources, the examples and the shipped configs. With one: every "
                            "name it offers, one spec per line.")
    p.add_argument("source", nargs="?", metavar="SOURCE", help=", ".join(SOURCES))
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


# -- options -> library calls --------------------------------------------------------------------------------------

def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`torchcost.resolve.resolve` that the model and input options ask for."""
    return {
        "input_size": args.input_size,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "dtype": DTYPES[args.dtype] if args.dtype else None,
        "device": args.device,
        "meta": args.meta,
        "config": dict(args.config),
        "kwargs": {key: parse_value(value) for key, value in args.kwargs},
        "input_dtype": args.input_dtype,
        "train": AnalysisOptions.of_step(args).mode == "train",  # (a training step's inputs: detection targets)
    }


@dataclass(frozen=True)
class AnalysisOptions:
    """What :func:`torchcost.analyze` is asked besides the model and its inputs, and the --memory-budget search with
    it. The analyze parser's flags fill it (:meth:`from_args`); compare's, the training step's flags alone
    (:meth:`of_step`). Add new analysis flags here."""

    mode: Literal["eval", "train"] = "eval"
    optimizer: str | None = None
    amp: str | None = None
    target: str | None = None
    memory_budget: int | None = None
    kernel_memory: KernelMemory | None = None
    parallel: Parallel | None = None  # --fsdp/--tp/--ddp/--world and their options (with --fsdp-sweep: its tp)
    fsdp_sweep: tuple[int, ...] | None = None
    time: TimeOptions | None = None  # --time, --repeats, --warmup
    hardware: str | None = None  # --gpu / --hardware
    step_time: float | None = None  # --step-time

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AnalysisOptions:
        return replace(cls.of_step(args), memory_budget=args.memory_budget, kernel_memory=args.kernel_memory,
                       parallel=_parallel(args), fsdp_sweep=args.fsdp_sweep, time=_timing(args),
                       hardware=args.hardware, step_time=_step_time(args))

    @classmethod
    def of_step(cls, args: argparse.Namespace) -> AnalysisOptions:
        """--train, --optimizer, --amp and --target alone (compare's flags)."""
        train = args.train or args.optimizer is not None  # --optimizer implies --train
        return cls("train" if train else "eval", args.optimizer, args.amp, args.target)

    def analyze(self, resolved: Resolved) -> CostReport:
        return analyze(resolved.model, *resolved.args, kwargs=resolved.kwargs, mode=self.mode,
                       optimizer=self.optimizer, amp=self.amp, target=self.target, kernel_memory=self.kernel_memory,
                       parallel=self.parallel, time=self.time or False, hardware=self.hardware,
                       step_time=self.step_time)

    def max_batch_size(self, resolved: Resolved, budget: int, rank: int | None = None) -> BatchFit:
        """The --memory-budget search; a parallel one analyses ``rank`` (the report's) in every probe."""
        parallel = self.parallel
        if parallel is not None and parallel.rank is None and rank is not None:
            parallel = replace(parallel, rank=rank)
        return max_batch_size(resolved.model, *resolved.args, kwargs=resolved.kwargs, budget=budget, mode=self.mode,
                              optimizer=self.optimizer, amp=self.amp, target=self.target or "cuda",
                              kernel_memory=self.kernel_memory, parallel=parallel)

    def sweep(self, resolved: Resolved) -> tuple[SweepPoint, ...]:
        assert self.fsdp_sweep is not None
        return fsdp_sweep(resolved.model, *resolved.args, kwargs=resolved.kwargs, degrees=self.fsdp_sweep,
                          parallel=self.parallel, budget=self.memory_budget, mode=self.mode,
                          optimizer=self.optimizer, amp=self.amp, target=self.target or "cuda",
                          kernel_memory=self.kernel_memory)


def _screen(args: argparse.Namespace) -> TableOptions:
    """--width, else the terminal's width in colour when the output goes to one, else (a pipe, a file) without
    colour and as wide as the table's rows: no row is ever wrapped over several lines (like torchinfo's output), and
    the memory columns are always there."""
    to_terminal = args.output is None and sys.stdout.isatty()
    width = args.width or (shutil.get_terminal_size().columns if to_terminal else NO_WRAP_WIDTH)
    return TableOptions(width=width, color=to_terminal)


def table_options(args: argparse.Namespace) -> TableOptions:
    """The analyze parser's output options as one TableOptions."""
    return replace(_screen(args), depth=args.depth, fold=not args.no_fold, sort=args.sort, top=args.top,
                   columns=args.columns)


def render_report(report: CostReport, fmt: str, options: TableOptions, *, description: str = "",
                  fit: BatchFit | None = None) -> str:
    """``report`` in format ``fmt``, with the --memory-budget answer ``fit`` when there is one (never with csv)."""
    if fmt == "html":
        return render_html(report, description=description, fit=fit)
    if fmt == "json":
        return render_json(report, fit=fit)
    if fmt == "csv":
        return render_csv(report, replace(options, fold=False))  # the command's csv is never folded
    if fmt == "markdown":
        text = render_markdown(report, options)
        text = f"**{description}**\n\n{text}" if description else text
    else:
        text = render_text(report, options)
        text = f"{description}\n{text}" if description else text
    return text if fit is None else text.rstrip("\n") + "\n" + "\n".join(fit_lines(fit)) + "\n"


def render_comparison(comparison: Comparison, fmt: str, options: TableOptions) -> str:
    """``comparison`` in format ``fmt`` (of ``options``, the text table takes its width and colour)."""
    if fmt == "html":
        return render_compare_html(comparison)
    if fmt == "json":
        return render_compare_json(comparison)
    if fmt == "csv":
        return render_compare_csv(comparison)
    if fmt == "markdown":
        return render_compare_markdown(comparison)
    return render_compare_text(comparison, width=options.width, color=options.color)


# -- progress ------------------------------------------------------------------------------------------------------

class Progress:
    """A spinner with what is happening and the seconds spent, on stderr, only when stderr is a terminal."""

    FRAMES = "|/-\\"

    def __init__(self, enabled: bool, stream: TextIO | None = None,
                 status: Callable[[], tuple[int, str]] = live_status) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.text = ""
        self.status = status  # () -> (runs started in the process, what the running one does: phase and ops)
        self._runs = 0  # runs started before the text was set
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = time.monotonic()

    def update(self, text: str) -> None:
        self._runs = self.status()[0]
        self.text = text

    def line(self) -> str:
        """The text, and what the run going on does (with its number when the text's step runs several: a batch
        search's analyses)."""
        try:
            started, doing = self.status()
        except Exception:  # (read from the spinner's thread while the run changes: never let it end the spinner)
            return self.text
        runs = started - self._runs
        if not doing:
            return self.text
        return f"{self.text}: {f'run {runs}, ' if runs > 1 else ''}{doing}"

    def _spin(self) -> None:
        for frame in itertools.cycle(self.FRAMES):
            if self._stop.wait(0.1):
                return
            elapsed = time.monotonic() - self._start
            line = f"{frame} {self.line()} ({elapsed:.0f} s)"[: max(10, shutil.get_terminal_size().columns - 1)]
            self.stream.write(f"\r\033[K{line}")
            self.stream.flush()

    def __enter__(self) -> Progress:
        if self.enabled:
            self._thread = threading.Thread(target=self._spin, name="torchcost-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.stream.write("\r\033[K")
            self.stream.flush()


# -- commands ------------------------------------------------------------------------------------------------------

def _build_and_analyze(spec: str, args: argparse.Namespace, options: AnalysisOptions,
                       progress: Progress) -> tuple[Resolved, CostReport]:
    """``spec`` built and analysed (:func:`torchcost.api.analyze_spec`: a training step at the default batch that
    fails for a batch norm's one value per channel is analysed at batch 2, as its description says)."""
    progress.update(f"building {spec}")
    what = "a training step" if options.mode == "train" else "one forward pass"
    if options.time is not None:  # the timed runs say which run is going on
        options = replace(options, time=replace(options.time, progress=progress.update))

    def analysed(resolved: Resolved) -> CostReport:
        progress.update(f"analysing {resolved.spec} ({what})")
        report = options.analyze(resolved)
        _lasting()  # (the model, its library and the report; not before: a model analysed again at batch 2 is built
        # anew and the first one let go)
        return report

    return analyze_spec(spec, resolve_options(args), analysed)


def _emit(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise _OutputError(f"cannot write {output}: {exc.strerror or exc}") from exc


class _OutputError(Exception):
    pass


def _cmd_analyze(args: argparse.Namespace) -> int:
    if serving.asked(args):
        return _cmd_serve(args)
    options = AnalysisOptions.from_args(args)
    if args.sort in STEP_SORT_KEYS and options.mode != "train":
        # (refused before the model is built: render/layout.py would refuse it only after the analysis)
        others = ", ".join(k for k in SORT_KEYS if k not in STEP_SORT_KEYS)
        raise UsageError(f"--sort {args.sort} goes with --train (a training step's FLOPs); without it sort by "
                         f"{others}", "torchcost")
    if options.fsdp_sweep is not None:
        return _cmd_sweep(args, options)
    if args.memory_budget is not None and args.format == "csv":
        raise UsageError("--memory-budget goes with --format table, json or markdown, not csv", "torchcost")
    with Progress(_progress_enabled(args)) as progress:
        resolved, report = _build_and_analyze(args.spec, args, options, progress)
        fit: BatchFit | None = None
        if options.memory_budget is not None:
            progress.update(f"searching the largest batch within {format_bytes(options.memory_budget)}")
            rank = report.parallel.rank if report.parallel is not None else None
            fit = options.max_batch_size(resolved, options.memory_budget, rank)
        progress.update("rendering")
        text = render_report(report, args.format, table_options(args), description=resolved.description, fit=fit)
        if args.plot:
            progress.update(f"drawing {args.plot}")
            _plot(report, args.plot, resolved.description)
    _emit(text, args.output)
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    """A generation's prefill, decode steps and KV cache (serve/cli.py), and the --max-context/--max-batch search."""
    problem = serving.check(args)
    if problem is not None:
        raise UsageError(problem, "torchcost")
    with Progress(_progress_enabled(args)) as progress:
        progress.update(f"building {args.spec}")
        resolved, args = _serving_model(args)
        text = serving.run(resolved, args, None, progress.update)
    _emit(text, args.output)
    return EXIT_OK


def _serving_model(args: argparse.Namespace) -> tuple[Resolved, argparse.Namespace]:
    """The model of a serving analysis, and the flags it runs with. Every step of a generation runs on a meta twin
    (serve/generation.py), so a model asked for on the CPU is built on meta: its weights would never be read
    (llama-3-8b's are 16 GB to allocate and fill at random), and the memory target stays the CPU's, as
    analyze_generation and the searches give a CPU model. (A constructor that reads tensor values is built on the
    CPU and moved to meta by the resolver, as for --meta.) With --tp and no --target the model is built as asked:
    there analyze_generation takes "cuda" for any model and the searches the model's device, which one target
    cannot say for both."""
    if args.meta or args.device not in (None, "cpu") or ((args.tp or 1) > 1 and args.target is None):
        return resolve(args.spec, **resolve_options(args)), args
    resolved = resolve(args.spec, **{**resolve_options(args), "device": None, "meta": True})
    return resolved, argparse.Namespace(**{**vars(args), "target": args.target or "cpu"})


def _cmd_sweep(args: argparse.Namespace, options: AnalysisOptions) -> int:
    if args.format == "html" or args.plot:
        raise UsageError("--fsdp-sweep prints a table: --format table, markdown, csv or json, no --plot", "torchcost")
    if options.time is not None:
        raise UsageError("--time measures one real run; --fsdp-sweep simulates ranks: not together", "torchcost")
    if options.hardware is not None:
        raise UsageError("--gpu predicts one run's time; --fsdp-sweep shows several: not together", "torchcost")
    with Progress(_progress_enabled(args)) as progress:
        progress.update(f"building {args.spec}")
        resolved = resolve(args.spec, **resolve_options(args))
        progress.update(f"analysing {resolved.spec} at FSDP2 degrees {', '.join(map(str, options.fsdp_sweep or ()))}")
        points = options.sweep(resolved)
        tp = f" x TP {options.parallel.tp}" if options.parallel is not None and options.parallel.tp > 1 else ""
        what = "training step" if options.mode == "train" else "forward"
        description = f"{resolved.description}: one rank's {what}, FSDP2{tp}"
        text = render_sweep(points, args.format, description=description)
    _emit(text, args.output)
    return EXIT_OK


def _plot(report: CostReport, path: str, title: str) -> None:
    from torchcost.render.plot import plot_report  # matplotlib only when asked for

    try:
        plot_report(report, path, title=title)
    except OSError as exc:
        raise _OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _cmd_compare(args: argparse.Namespace) -> int:
    if len(args.specs) < 2:
        raise UsageError("compare needs at least two models", "torchcost compare")
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    if names is not None and len(names) != len(args.specs):
        raise UsageError(f"--names gives {len(names)} names for {len(args.specs)} models", "torchcost compare")
    options = AnalysisOptions.of_step(args)
    reports, labels, specs = [], [], []
    with Progress(_progress_enabled(args)) as progress:
        for spec in args.specs:
            resolved, report = _build_and_analyze(spec, args, options, progress)
            reports.append(report)
            labels.append(resolved.name)
            specs.append(resolved.spec)
        comparison = build_comparison(reports, names or labels, specs)
        text = render_comparison(comparison, args.format, _screen(args))
    _emit(text, args.output)
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    lines: list[str] = []
    if args.source:
        entries = list_names(args.source)
        pad = max((len(spec) for spec, _ in entries), default=0)
        lines = [f"{spec:<{pad}}  {text}".rstrip() for spec, text in entries]
    else:
        lines.append("Sources (torchcost list SOURCE shows every name):")
        lines.append(f"  example      {len(EXAMPLES)} networks shipped in torchcost")
        lines.append(f"  hf           {len(shipped())} shipped config.json files, or hf:path/to/config.json")
        for source in ("torchvision", "timm"):
            try:
                count = f"{len(list_names(source))} models"
            except TorchcostError:
                count = f"not installed ({ZOO_HINT})"
            lines.append(f"  {source:<12} {count}")
        lines.append("  path/to/file.py:Name, package.module:Name   your own class or factory")
        for source in ("example", "hf"):
            lines.append("")
            lines.append("Examples:" if source == "example" else "Shipped configs (hf:NAME, built from the config, "
                                                                  "no weights):")
            entries = list_names(source)
            pad = max(len(spec) for spec, _ in entries)
            lines += [f"  {spec:<{pad}}  {text}" for spec, text in entries]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _progress_enabled(args: argparse.Namespace) -> bool:
    return not args.no_progress and not args.debug and sys.stderr.isatty()


# -- main ----------------------------------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _say(message: str) -> None:
    sys.stderr.write(_one_line(message) + "\n")
    sys.stderr.flush()


def _hint(exc: Exception) -> str:
    """What to type next, for the errors whose fix is a flag of this command."""
    if isinstance(exc, ModelError) and exc.layer_type in ("Embedding", "EmbeddingBag") and "scalar type" in exc.reason:
        return " (the inputs are floats: give token ids with --input-dtype int64)"
    return ""


@contextmanager
def _quiet(debug: bool) -> Iterator[None]:
    """Third-party warnings and log chatter stay off the console unless --debug (or python -W) asks for them."""
    if debug or sys.warnoptions:
        yield
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def console() -> int:
    """The ``torchcost`` command and ``python -m torchcost``: :func:`main` in a process of its own, which compiles
    nothing and ends with it (run/dynamo.py ``own_process``: model libraries imported without ``torch._dynamo``;
    run/symbolic.py: runs on plain sizes without sympy; :func:`_lasting`)."""
    dynamo.own_process()
    symbolic.stand_in()
    _lasting()  # (torch and torchcost)
    return main()


def _lasting() -> None:
    """In the command's own process (run/dynamo.py ``owned``), what is alive now lives until it exits: torch and
    torchcost at the start, the model libraries, the model and the report after an analysis. ``gc.freeze()`` takes
    it out of the cyclic collector's view, whose full collections each walk every object it tracks: 0.26-0.95 s of
    a command's 2-10 s after ``import torch`` (transformers and a model hold 200,000-380,000 objects), and the
    interpreter's last one at exit, 0.2-0.4 s with torch alone. An analysis leaves no garbage that holds memory (a
    collection right after one freed nothing of the process's resident memory, in CPU and meta runs, eval and
    training steps); during a run the full collections are off anyway (run/execute.py). A caller's process of
    :func:`main` keeps its collector as it is."""
    if dynamo.owned():
        gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]) and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else ""
    parser = {"compare": _compare_parser, "list": _list_parser}.get(command, _analyze_parser)()
    debug = "--debug" in argv
    run = {"compare": _cmd_compare, "list": _cmd_list}.get(command, _cmd_analyze)
    try:
        with _quiet(debug):
            args = parser.parse_args(argv[1:] if command else argv)
            return run(args)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except UsageError as exc:
        if debug:
            traceback.print_exc()
        _say(f"{exc.prog}: error: {exc} (see {exc.prog} --help)")
        return EXIT_USAGE
    except (TorchcostError, _OutputError) as exc:
        if debug:
            traceback.print_exc()
        _say(f"torchcost: {exc}{_hint(exc)}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("torchcost: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # an internal error: one line unless --debug
        if debug:
            traceback.print_exc()
        _say(f"torchcost: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        return EXIT_INTERNAL
