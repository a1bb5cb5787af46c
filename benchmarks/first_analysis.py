"""One analysis in a fresh process, as the CLI runs it: CPU seconds of one plain forward and of one ``analyze()``,
one torch thread, and whether the process has imported ``torch._dynamo`` by the end. Run it once per tree to compare
two versions (a first analysis learns what later ones reuse: plans, kernel-memory probes, skipped kernels' outputs,
the optimizer's warm-up state, and torch's own lazy imports):

    python -m benchmarks.first_analysis resnet50 8
    PYTHONPATH=<old tree>/src python -m benchmarks.first_analysis resnet50 8
    python -m benchmarks.first_analysis blocks100 --mode train --optimizer sgd
    python -m benchmarks.first_analysis example:conv1d_series --device meta
    python -m benchmarks.first_analysis blocks100 --mode train --preimport sympy,torch.distributed.tensor

MODEL is a torchvision.models name (weights=None, 3x224x224 inputs), ``blocksN`` (benchmarks.speed's stack of N
Linear(64, 64)+ReLU blocks, 64 features) or ``example:NAME`` (torchcost.examples, its own input). torchvision
imports ``torch._dynamo`` itself; the other two do not, so they show what an analysis imports (run/dynamo.py).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import sys
import time
from typing import Any

import torch


def _model(name: str, batch: int) -> tuple[torch.nn.Module, tuple[Any, ...]]:
    if name.startswith("blocks"):
        from benchmarks.speed import ladder_model

        built = ladder_model(name)
        return built.model, tuple(a.expand(batch, *a.shape[1:]).contiguous() for a in built.args)
    if name.startswith("example:"):
        from torchcost import examples

        model, inputs = examples.build(name[len("example:"):])
        return model, tuple(inputs)
    import torchvision

    return getattr(torchvision.models, name)(weights=None).eval(), (torch.randn(batch, 3, 224, 224),)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_analysis")
    parser.add_argument("model", help="a torchvision.models name, blocksN, or example:NAME")
    parser.add_argument("batch", type=int, nargs="?", default=1)
    parser.add_argument("--mode", choices=("eval", "train"), default="eval")
    parser.add_argument("--optimizer", help="the training step's optimizer (default: torchcost's)")
    parser.add_argument("--device", help="analyze(device=...), e.g. meta")
    parser.add_argument("--preimport", default="",
                        help="modules to import before the timed analysis, comma-separated (what the analysis would "
                             "otherwise import itself: e.g. sympy,torch.distributed.tensor)")
    args = parser.parse_args(argv)
    import torchcost

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, inputs = _model(args.model, args.batch)
    with torch.no_grad():
        model(*inputs)  # (the allocator and oneDNN warmed, as a user's earlier forward would)
        start = time.process_time()
        model(*inputs)
        forward = time.process_time() - start
    options: dict[str, Any] = {"mode": args.mode} if args.mode != "eval" else {}
    if args.optimizer:
        options["optimizer"] = args.optimizer
    if args.device:
        options["device"] = args.device
    for name in filter(None, args.preimport.split(",")):
        importlib.import_module(name)
    before = set(sys.modules)
    start = time.process_time()
    torchcost.analyze(model, *inputs, **options)
    analysis = time.process_time() - start
    imported = sorted(set(sys.modules) - before)
    what = ", ".join(f"{k}={v}" for k, v in options.items())
    dynamo = "yes" if "torch._dynamo" in sys.modules else "no"
    print(f"{args.model} batch {args.batch}: forward {forward:.3f} s, analyze({what}) {analysis:.3f} s, "
          f"{analysis / forward:.2f}x; torch._dynamo imported: {dynamo}")
    # the packages the analysis imported (torch's lazy imports among them), most modules first: where a first
    # analysis's time may go (torch's subpackages by three dotted levels, any other package by its name)
    packages = collections.Counter(".".join(name.split(".")[:3 if name.startswith("torch.") else 1])
                                   for name in imported if not name.startswith("torchcost"))
    shown = ", ".join(f"{name} {count}" for name, count in packages.most_common(8))
    print(f"imported by the analysis: {len(imported)} modules" + (f" ({shown}{', ...' if len(packages) > 8 else ''})"
                                                                  if packages else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
