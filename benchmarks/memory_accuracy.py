"""Memory: torchcost's predicted peak against the CPU allocator, with torchsummary's and torchinfo's formulas beside it.

    python -m benchmarks.memory_accuracy            # resnet18 and GPT-2 small, inference and an AdamW step
    python -m benchmarks.memory_accuracy --llama    # also the llama-3-70b timing and RSS check (meta, no memory)

Truth: the model really runs on the CPU under torch.profiler(profile_memory=True), which records every allocation
and free of the CPU allocator; the running maximum plus the bytes alive before (parameters, buffers, inputs, and for
a training step the optimizer state) is the real peak (tests/memory/truth.py). The training step is the steady-state
one: AdamW state already there, gradients None, ``out = model(x); loss = out.float().pow(2).mean(); loss.backward();
opt.step()``. torchcost predicts it on fake tensors, allocating nothing.

The peer columns are the peers' formulas computed here from torchcost's own report (the peer tools are not needed):
torchsummary: input + parameters + 2 x (sum of every module's output elements) x 4 bytes (its "forward/backward pass
size"; computed at the real batch size, as its docs describe); torchinfo: input + parameters + 2 x the output bytes of
every leaf module that has parameters. Neither depends on the mode or the optimizer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any

import torch
from tests.memory.truth import eval_truth, train_truth
from torch import nn

import torchcost
from torchcost.report import CostReport
from torchcost.shapes import ShapeTree, TensorSpec

MiB = 2**20


@dataclass
class Row:
    case: str
    mode: str
    truth: int
    predicted: int
    torchsummary: int
    torchinfo: int
    where: str
    seconds: float


def _numel(tree: ShapeTree) -> int:
    if isinstance(tree, TensorSpec):
        return prod(tree.shape)
    if isinstance(tree, dict):
        return sum(_numel(v) for v in tree.values())
    if isinstance(tree, tuple):
        return sum(_numel(v) for v in tree)
    return 0


def torchsummary_formula(r: CostReport) -> int:
    """input + params + 2 x every hooked module's output elements x 4 B (torchsummary hooks all but containers)."""
    outputs = sum(_numel(m.output_shape) * m.calls for m in r.modules
                  if m.name and m.type not in ("Sequential", "ModuleList", "ModuleDict"))
    return r.input_bytes + r.param_bytes + 2 * outputs * 4


def torchinfo_formula(r: CostReport) -> int:
    """input + params + 2 x the output bytes of the leaf modules that hold parameters (torchinfo's total size)."""
    leaves = sum(m.output_bytes for m in r.modules if m.is_leaf and m.params > 0)
    return r.input_bytes + r.param_bytes + 2 * leaves


def _cases() -> dict[str, Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]]:
    def resnet18() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        import torchvision

        torch.manual_seed(0)
        return torchvision.models.resnet18(), (torch.randn(16, 3, 224, 224),)

    def gpt2() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config()), (torch.randint(0, 50257, (1, 128)),)

    return {"resnet18 (batch 16, 224x224)": resnet18, "GPT-2 small (batch 1, seq 128)": gpt2}


def measure() -> list[Row]:
    out = []
    for name, build in _cases().items():
        model, inputs = build()
        for mode in ("eval", "train"):
            start = time.perf_counter()
            r = torchcost.analyze(model, *inputs, mode=mode, optimizer="adamw" if mode == "train" else None)
            seconds = time.perf_counter() - start
            if mode == "eval":
                truth = eval_truth(model, *inputs)
            else:
                truth = train_truth(model, *inputs, make_optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
            m = r.memory
            assert m is not None
            where = f"{m.peak_phase}: {m.peak_op} in {m.peak_module or '(model)'}"
            out.append(Row(name, "inference" if mode == "eval" else "AdamW step", truth, r.peak_memory,
                           torchsummary_formula(r), torchinfo_formula(r), where, seconds))
    return out


def table(rows: list[Row]) -> str:
    head = (f"{'model':32} {'what':11} {'truth MiB':>10} {'torchcost':>10} {'ratio':>7} {'torchsummary':>13} "
            f"{'ratio':>6} {'torchinfo':>10} {'ratio':>6}  peak at (torchcost)")
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row.case:32} {row.mode:11} {row.truth / MiB:10.2f} {row.predicted / MiB:10.2f} "
            f"{row.predicted / row.truth:7.4f} {row.torchsummary / MiB:13.2f} {row.torchsummary / row.truth:6.2f} "
            f"{row.torchinfo / MiB:10.2f} {row.torchinfo / row.truth:6.2f}  {row.where}")
    return "\n".join(lines)


_LLAMA = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
t0 = time.perf_counter()
import torchcost
from torchcost.resolve import resolve
built = resolve("hf:llama-3-70b", meta=True, batch_size=1, seq_len=2048)
t1 = time.perf_counter()
out = {"import_and_build_s": t1 - t0}
for mode in ("train", "eval"):
    start = time.perf_counter()
    r = torchcost.analyze(built.model, *built.args, kwargs=built.kwargs, mode=mode,
                          optimizer="adamw" if mode == "train" else None)
    m = r.memory
    out[mode] = {"seconds": time.perf_counter() - start, "peak": r.peak_memory, "phase": m.peak_phase,
                 "op": m.peak_op, "module": m.peak_module, "at_peak": m.at_peak.to_dict(), "ops": len(m.timeline)}
out["total_s"] = time.perf_counter() - t0
# VmHWM: this process's own peak RSS (ru_maxrss would include the parent's, inherited across fork + exec)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
out["maxrss_bytes"] = (int(hwm[0].split()[1]) * 1024 if hwm
                       else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps(out))
"""


def llama() -> dict[str, Any]:
    """llama-3-70b (bf16, batch 1, seq 2048) on meta tensors in a fresh process: wall time and peak RSS."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _LLAMA], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for the real runs (1)")
    parser.add_argument("--llama", action="store_true", help="also time llama-3-70b on meta tensors")
    parser.add_argument("--skip-accuracy", action="store_true", help="only the llama check")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    llama_result = llama() if args.llama else None  # first, while this process is small
    if not args.skip_accuracy:
        print(f"torch {torch.__version__}, torchcost {torchcost.__version__}, CPU, {args.threads} thread(s); "
              f"no GPU was available, so no torch.cuda.max_memory_allocated comparison")
        print(table(measure()))
    if llama_result is not None:
        GiB = 2**30
        res = llama_result
        print()
        print(f"llama-3-70b, bf16, batch 1, seq 2048, meta tensors, 1 thread (fresh process: "
              f"{res['process_s']:.1f} s in all, imports and build {res['import_and_build_s']:.1f} s, "
              f"peak RSS {res['maxrss_bytes'] / GiB:.2f} GiB)")
        for mode, label in (("train", "AdamW step"), ("eval", "inference")):
            m = res[mode]
            parts = ", ".join(f"{k} {v / GiB:.2f}" for k, v in m["at_peak"].items() if v)
            print(f"  {label:10}: peak {m['peak'] / GiB:.2f} GiB ({m['peak']:,} B) in {m['seconds']:.1f} s over "
                  f"{m['ops']:,} ops; {m['phase']}: {m['op']} in {m['module'] or '(model)'}")
            print(f"              at the peak (GiB): {parts}")


if __name__ == "__main__":
    main()
