"""The command line's serving options (``--prompt-len``, ``--new-tokens``, ``--max-context``, ``--max-batch``) and
their command: parse, call :mod:`torchcost.serve`, format. It computes nothing.

    torchcost hf:llama-3-70b --meta --prompt-len 2048 --new-tokens 512 --batch-size 8
    torchcost hf:llama-3-8b --meta --new-tokens 512 --batch-size 16 --max-context --memory-budget 80GiB
    torchcost hf:llama-3-8b --meta --prompt-len 8192 --new-tokens 512 --max-batch --memory-budget 80GiB
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from torchcost.errors import InputError
from torchcost.resolve import Resolved
from torchcost.serve.fit import ServingFit, max_context, max_serving_batch
from torchcost.serve.generation import analyze_generation
from torchcost.serve.report import GenerationReport

__all__ = ["add_options", "asked", "check", "run"]

# flags of the analyze command that describe something else than serving one batch
_OTHER_FLAGS = (("train", "--train"), ("optimizer", "--optimizer"), ("amp", "--amp"), ("time", "--time"),
                ("fsdp", "--fsdp"), ("ddp", "--ddp"), ("world", "--world"), ("fsdp_sweep", "--fsdp-sweep"),
                ("plot", "--plot"), ("input_size", "--input-size"), ("seq_len", "--seq-len"), ("sort", "--sort"),
                ("top", "--top"), ("depth", "--depth"), ("hardware", "--gpu"), ("step_time", "--step-time"),
                ("columns", "--columns"))


def add_options(p: argparse.ArgumentParser, count: Callable[[str], int]) -> None:
    g = p.add_argument_group(
        "serving a language model (docs/conventions.md, Serving: prefill, decode and the KV cache)",
        "A causal LM's generation: the prefill over the prompt and the decode steps with the model's own KV cache, "
        "on meta tensors; --batch-size sequences (default 1); with --tp N one rank of N-way tensor parallelism.")
    g.add_argument("--prompt-len", type=count, metavar="N", help="tokens in each prompt: analyse a generation")
    g.add_argument("--new-tokens", type=count, metavar="N", help="tokens generated per sequence (default 1)")
    g.add_argument("--max-context", action="store_true",
                   help="with --memory-budget: the longest prompt (to one token) whose generation of --new-tokens "
                        "at --batch-size fits")
    g.add_argument("--max-batch", action="store_true",
                   help="with --memory-budget and --prompt-len: the largest batch whose generation fits")


def asked(args: argparse.Namespace) -> bool:
    """Whether the command line asks for a serving analysis."""
    return bool(args.prompt_len or args.new_tokens or args.max_context or args.max_batch)


def check(args: argparse.Namespace) -> str | None:
    """The usage error in the serving flags, as one line (None: none)."""
    for attr, flag in _OTHER_FLAGS:
        if getattr(args, attr, None):
            return (f"{flag} does not go with a serving analysis (--prompt-len, --new-tokens, --max-context, "
                    f"--max-batch)")
    if args.format in ("csv", "html"):
        return "a serving analysis prints --format table, markdown or json"
    if (args.max_context or args.max_batch) and args.memory_budget is None:
        return "--max-context and --max-batch need --memory-budget SIZE"
    if args.max_batch and not args.prompt_len:
        return "--max-batch needs --prompt-len"
    if not args.prompt_len and not args.max_context:
        return "--new-tokens needs --prompt-len (or --max-context)"
    return None


def run(resolved: Resolved, args: argparse.Namespace, dtype: Any, progress: Callable[[str], None]) -> str:
    """The serving analysis the flags ask for, formatted."""
    model = resolved.model
    new = args.new_tokens or 1
    batch = args.batch_size or 1
    common: dict[str, Any] = {"dtype": dtype, "target": args.target, "kernel_memory": args.kernel_memory,
                              "tp": args.tp or 1}
    report: GenerationReport | None = None
    fits: list[ServingFit] = []
    if args.prompt_len:
        progress(f"analysing a generation of {new} tokens after {args.prompt_len} at batch {batch}")
        report = analyze_generation(model, prompt_len=args.prompt_len, new_tokens=new, batch_size=batch, **common)
    if args.max_context:
        progress("searching the longest context within the budget")
        fits.append(max_context(model, budget=args.memory_budget, new_tokens=new, batch_size=batch, **common))
    if args.max_batch:
        if not args.prompt_len:  # pragma: no cover - check() refuses it
            raise InputError("--max-batch needs --prompt-len")
        progress("searching the largest batch within the budget")
        fits.append(max_serving_batch(model, budget=args.memory_budget, prompt_len=args.prompt_len, new_tokens=new,
                                      **common))
    title = f"{resolved.spec}: {type(model).__name__}"
    if args.format == "json":
        data: dict[str, Any] = {"model": title}
        if report is not None:
            data["generation"] = report.to_dict()
        for fit in fits:
            data[f"max_{fit.what}"] = fit.to_dict()
        return json.dumps(data, indent=2) + "\n"
    parts = []
    if args.format == "markdown":
        parts.append(f"**{title}**\n")
        if report is not None:
            parts.append(report.markdown() + "\n")
        parts.extend(f"- {fit.text()}" for fit in fits)
    else:
        parts.append(title)
        if report is not None:
            parts.append(report.table())
        parts.extend(fit.text() for fit in fits)
    return "\n".join(parts) + "\n"
