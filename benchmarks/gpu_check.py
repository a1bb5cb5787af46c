"""The GPU check of issue 13, one command for whoever has one GPU (under 8 minutes on an H100/H200 class device):

    python -m benchmarks.gpu_check                      # writes benchmarks/gpu_check.json and benchmarks/gpu_check.md
    python -m benchmarks.gpu_check --out /tmp/check     # /tmp/check.json and /tmp/check.md
    python -m benchmarks.gpu_check --cases gpt2 --budget 120
    python -m benchmarks.gpu_check --smoke              # tiny models, on the CPU when there is no GPU: the harness only
    python -m benchmarks.gpu_check --hardware h100-sxm  # predict for this table entry (a GPU the table lacks)

Without CUDA (and without ``--smoke``) it says so in one line and exits 0.

(a) **Time.** resnet50 (torchvision, weights=None, batch 32, 224 px, float32), gpt2 (``hf:gpt2``, batch 8 x 512
tokens, float32) and a small Llama (``hf:llama-3-8b`` with 2 layers, bfloat16, batch 4 x 1024 tokens): for eval and
for a training step (AdamW), ``analyze(model, *inputs, mode=..., hardware=NAME, time=...)`` gives in one call the
measured time on this GPU (CUDA events, medians after warm-up; timing/measure.py) and the roofline prediction for the
table entry NAME that ``torch.cuda.get_device_name()`` maps to (:func:`hardware_for`); an unknown GPU is measured
only, and the table says so. The error is (predicted - measured) / measured, of the whole forward (eval) or the
whole step (train).

(b) **Peak memory.** resnet50, gpt2, an MLP (matrix products only: the cuBLAS workspaces) and an
attention block around ``F.scaled_dot_product_attention`` (float16: flash attention forward and backward, with equal
and with grouped key/value heads; float32: memory-efficient attention), inference and a training step (AdamW, its
state made by a warm-up step, then ``zero_grad(set_to_none=True)``): torchcost's predicted peak (``analyze`` on the
model on cuda: target cuda, ``hardware=`` this GPU's compute capability and SM count, which the CUDA entries of
collect/workspace_cuda.py read) against ``torch.cuda.max_memory_allocated()`` around the real run, reset just before
it. The prediction counts the cuBLAS workspaces (one for the calling thread, one for autograd's device thread) from
the run's start, as every step of a loop but the process's first holds them; the warm-up made them, so both sides
count them among what was alive at the start. The allocator also holds what the process made before the run and
torchcost does not predict (the warm-up's leftovers), so the truth compared is the prediction's ``start_bytes``
(parameters, buffers, inputs, optimizer state, the cuBLAS workspaces) plus the allocator's rise during the run, as
run/execute.py's ``Measured`` does; the absolute maximum is reported beside it, and the predicted ``workspace`` at
the peak (cuBLAS, attention buffers). The goal: within 2 %, and never above the truth by more than the 512-byte
rounding. Nothing here has been run on a GPU yet: the CUDA entries are from PyTorch's source (docs/conventions.md,
"Memory", "CUDA kernels").

Each case runs in its own try/except (a failure is a row with its error, the others go on) and within a total time
budget (``--budget`` seconds, default 420): a case that would start after it is skipped and marked so.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import torchcost
from torchcost.resolve import Resolved, resolve
from torchcost.run.step import default_loss
from torchcost.timing.hardware import Hardware, get_hardware
from torchcost.timing.measure import TimeOptions

__all__ = ["MEMORY_CASES", "TIME_CASES", "AttentionBlock", "hardware_for", "main"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "gpu_check"
MEMORY_GOAL_PCT = 2.0
ROUNDING = 512  # the CUDA caching allocator's block size


@dataclass(frozen=True)
class Spec:
    """One model as ``torchcost.resolve`` builds it, full size and in the tiny ``--smoke`` version."""

    name: str
    spec: str
    options: dict[str, Any]
    smoke: dict[str, Any]

    def build(self, device: str, smoke: bool) -> Resolved:
        options = dict(self.smoke if smoke else self.options)
        return resolve(self.spec, device=device, **options)


_RESNET = Spec("resnet50", "torchvision:resnet50", {"batch_size": 32},
               {"input_size": (2, 3, 32, 32)})
_GPT2 = Spec("gpt2", "hf:gpt2", {"batch_size": 8, "seq_len": 512},
             {"batch_size": 1, "seq_len": 32, "config": {"n_layer": 1, "n_embd": 64, "n_head": 4,
                                                         "vocab_size": 512}})
_LLAMA = Spec("llama-3-8b, 2 layers, bf16", "hf:llama-3-8b",
              {"batch_size": 4, "seq_len": 1024, "dtype": torch.bfloat16, "config": {"num_hidden_layers": 2}},
              {"batch_size": 1, "seq_len": 32, "dtype": torch.bfloat16,
               "config": {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128,
                          "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
                          "bos_token_id": 1, "eos_token_id": 2}})


class AttentionBlock(nn.Module):
    """x -> q, k, v projections -> causal ``F.scaled_dot_product_attention`` -> output projection. On a GPU in half
    precision SDPA takes flash attention (``kv_heads < heads``: grouped heads, flash's expanded dK/dV buffers), in
    float32 memory-efficient attention. Its first op is a matmul."""

    def __init__(self, dim: int = 1024, heads: int = 16, kv_heads: int | None = None) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads or heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * self.kv_heads * self.head_dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, dim = x.shape
        q = self.q(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(b, s, 2, self.kv_heads, self.head_dim).unbind(2)
        y = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                           enable_gqa=self.kv_heads != self.heads)
        out: torch.Tensor = self.out(y.transpose(1, 2).reshape(b, s, dim))
        return out


def _block_spec(name: str, dtype: torch.dtype, kv_heads: int | None = None) -> Spec:
    return Spec(name, "benchmarks.gpu_check:AttentionBlock",
                {"input_size": (8, 1024, 1024), "dtype": dtype, "kwargs": {"kv_heads": kv_heads}},
                {"input_size": (1, 32, 64), "kwargs": {"dim": 64, "heads": 4, "kv_heads": kv_heads and 2}})


_MLP = Spec("mlp, matmul first", "benchmarks.gpu_check:mlp", {"input_size": (64, 4096)},
            {"input_size": (2, 64), "kwargs": {"width": 64}})
_FLASH = _block_spec("sdpa block, fp16 (flash)", torch.float16)
_FLASH_GQA = _block_spec("sdpa block, fp16, 4 kv heads (flash)", torch.float16, kv_heads=4)
_EFFICIENT = _block_spec("sdpa block, fp32 (mem-efficient)", torch.float32)
TIME_CASES: tuple[Spec, ...] = (_RESNET, _GPT2, _LLAMA)
MEMORY_CASES: tuple[Spec, ...] = (_RESNET, _GPT2, _MLP, _FLASH, _FLASH_GQA, _EFFICIENT)


def mlp(width: int = 4096) -> nn.Module:
    """Linear -> GELU -> Linear: the cuBLAS workspace is made by the very first op."""
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))


def hardware_for(device_name: str, total_memory: int = 0) -> str | None:
    """The hardware table's name (timing/hardware.py) for a ``torch.cuda.get_device_name()``; None when unknown.
    An A100 whose name does not say its size is told by ``total_memory`` (bytes)."""
    n = device_name.lower()
    if "h200" in n:
        return "h200"
    if "h100" in n:
        return "h100-pcie" if "pcie" in n else "h100-nvl" if "nvl" in n else "h100-sxm"
    if "a100" in n:
        if "40gb" in n:
            return "a100-40gb"
        if "80gb" in n:
            return "a100-80gb"
        return "a100-40gb" if 0 < total_memory < 60 * 2**30 else "a100-80gb"
    if "l40s" in n:
        return "l40s"
    if n.split()[-1:] == ["l4"]:
        return "l4"
    if "4090" in n:
        return "rtx-4090"
    if "mi300x" in n:
        return "mi300x"
    return None


# -- results ---------------------------------------------------------------------------------------------------------

@dataclass
class TimeRow:
    model: str
    mode: str
    measured_s: float = 0.0  # eval: the forward; train: the whole step (medians)
    measured_min_s: float = 0.0
    measured_max_s: float = 0.0
    repeats: int = 0
    predicted_s: float = 0.0  # 0: no prediction (unknown hardware)
    error_pct: float | None = None
    achieved_flops_per_s: float = 0.0
    mfu: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # train: forward / backward / optimizer medians
    seconds: float = 0.0  # the whole case
    error: str = ""


@dataclass
class MemoryRow:
    model: str
    mode: str
    predicted: int = 0
    truth: int = 0  # start_bytes + the allocator's rise during the run
    max_allocated: int = 0  # torch.cuda.max_memory_allocated() as it is
    torchcost_measured: int | None = None  # analyze's own allocator measurement (eval runs on the model itself)
    workspace: int = 0  # the predicted peak's ``workspace``: cuBLAS workspaces alive, the op's own buffers
    error_pct: float | None = None
    within_goal: bool = False
    seconds: float = 0.0
    error: str = ""


@dataclass
class Budget:
    seconds: float
    start: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300]


# -- (a) time --------------------------------------------------------------------------------------------------------

def time_case(case: Spec, mode: str, device: str, hardware: str | None, smoke: bool, budget: Budget) -> TimeRow:
    row = TimeRow(case.name, mode)
    began = time.perf_counter()
    try:
        resolved = case.build(device, smoke)
        repeats, warmup = (2, 1) if smoke else (20, 5)
        options = TimeOptions(repeats=repeats, warmup=warmup, max_seconds=max(5.0, min(60.0, budget.left() / 6)))
        extra: dict[str, Any] = {"hardware": hardware} if hardware else {}
        r = torchcost.analyze(resolved.model, *resolved.args, kwargs=resolved.kwargs, mode=mode,  # type: ignore[arg-type]
                              memory=False, time=options, **extra)
        t = r.measured_time
        assert t is not None
        row.repeats = t.repeats
        if mode == "train":
            assert t.step_s is not None and t.step_min_s is not None and t.step_max_s is not None
            row.measured_s, row.measured_min_s, row.measured_max_s = t.step_s, t.step_min_s, t.step_max_s
            row.achieved_flops_per_s = t.step_flops_per_s or 0.0
            row.phases = {"forward": t.forward_s, "backward": t.backward_s or 0.0, "optimizer": t.optimizer_s or 0.0}
        else:
            row.measured_s, row.measured_min_s, row.measured_max_s = t.forward_s, t.forward_min_s, t.forward_max_s
            row.achieved_flops_per_s = t.flops_per_s
        predicted = getattr(r, "predicted_time", None)
        if predicted is not None:
            row.predicted_s = float(predicted.step_s if mode == "train" else predicted.forward_s)
            row.mfu = float(getattr(predicted, "mfu", 0.0) or 0.0)
            if row.measured_s:
                row.error_pct = 100.0 * (row.predicted_s - row.measured_s) / row.measured_s
        del r, resolved
    except Exception as exc:  # one case's failure is its row; the others go on
        row.error = _one_line(exc)
        traceback.print_exc(file=sys.stderr)
    finally:
        _free(device)
    row.seconds = time.perf_counter() - began
    return row


# -- (b) peak memory -------------------------------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def this_gpu(hardware: str | None) -> Hardware:
    """The hardware entry to predict memory for: the table's (or an H100's figures) with this GPU's own compute
    capability and SM count, the two things the CUDA workspace entries read."""
    props = torch.cuda.get_device_properties(0)
    return replace(get_hardware(hardware or "h100-sxm"), compute_capability=(props.major, props.minor),
                   sm_count=props.multi_processor_count)


def memory_case(case: Spec, mode: str, device: str, smoke: bool, hardware: str | None = None) -> MemoryRow:
    row = MemoryRow(case.name, mode)
    began = time.perf_counter()
    try:
        resolved = case.build(device, smoke)
        model, args, kwargs = resolved.model, resolved.args, resolved.kwargs
        extra: dict[str, Any] = {"hardware": this_gpu(hardware)} if device.startswith("cuda") else {}
        if mode == "train":
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            default_loss(model(*args, **kwargs)).backward()  # a warm-up step: the optimizer's state exists
            opt.step()
            opt.zero_grad(set_to_none=True)
            r = torchcost.analyze(model, *args, kwargs=kwargs, mode="train", optimizer=opt, **extra)
        else:
            model.eval()
            with torch.no_grad():
                model(*args, **kwargs)  # a warm-up forward (kernels chosen, workspaces made)
            r = torchcost.analyze(model, *args, kwargs=kwargs, **extra)
        memory = r.memory
        assert memory is not None
        row.predicted = memory.peak_bytes
        row.torchcost_measured = memory.measured_peak_bytes
        row.workspace = memory.at_peak.workspace
        _free(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            if mode == "train":
                out = model(*args, **kwargs)
                loss = default_loss(out)
                loss.backward()
                opt.step()
                del out, loss
            else:
                with torch.no_grad():
                    out = model(*args, **kwargs)
                del out
            _sync(device)
            row.max_allocated = torch.cuda.max_memory_allocated()
            row.truth = memory.start_bytes + row.max_allocated - before
            row.error_pct = 100.0 * (row.predicted - row.truth) / row.truth if row.truth else None
            row.within_goal = (row.error_pct is not None and abs(row.error_pct) <= MEMORY_GOAL_PCT
                               and row.predicted - row.truth <= ROUNDING)
        else:
            row.error = "not measured: the allocator truth needs CUDA"
        del r, resolved, model, args, kwargs
    except Exception as exc:
        row.error = _one_line(exc)
        traceback.print_exc(file=sys.stderr)
    finally:
        _free(device)
    row.seconds = time.perf_counter() - began
    return row


# -- output ----------------------------------------------------------------------------------------------------------

def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}" if seconds else "-"


def _pct(value: float | None) -> str:
    return f"{value:+.1f} %" if value is not None else "-"


def markdown(result: dict[str, Any]) -> str:
    hw = result["hardware"] or f"unknown ({result['device_name']}: no prediction)"
    lines = [
        "# GPU check (issue 13)",
        "",
        f"`python -m benchmarks.gpu_check` on {result['device_name']} (hardware table: {hw}); torch "
        f"{result['torch']}, CUDA {result['cuda']}, {result['seconds']:.0f} s of a {result['budget_s']:.0f} s budget"
        f"{' (smoke: tiny models)' if result['smoke'] else ''}.",
        "",
        "## Time: measured (CUDA events, medians) against the roofline prediction",
        "",
        "eval: the whole forward; train: the whole step (forward, loss + backward, AdamW step). Error: (predicted - "
        "measured) / measured.",
        "",
        "| model | mode | measured ms | min-max ms | repeats | predicted ms | error | achieved TFLOP/s | MFU | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["time"]:
        spread = f"{_ms(r['measured_min_s'])}-{_ms(r['measured_max_s'])}"
        phases = ", ".join(f"{k} {_ms(v)}" for k, v in r["phases"].items())
        note = r["error"] or (f"phases (ms): {phases}" if phases else "")
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] else "-"
        lines.append(f"| {r['model']} | {r['mode']} | {_ms(r['measured_s'])} | {spread} | {r['repeats']} | "
                     f"{_ms(r['predicted_s'])} | {_pct(r['error_pct'])} | {r['achieved_flops_per_s'] / 1e12:.1f} | "
                     f"{mfu} | {note} |")
    lines += [
        "",
        "## Peak memory: predicted against torch.cuda.max_memory_allocated()",
        "",
        f"truth = predicted start (parameters, buffers, inputs, optimizer state) + the allocator's rise during the "
        f"run; goal: within {MEMORY_GOAL_PCT:g} % and never above the truth by more than {ROUNDING} B.",
        "",
        "| model | mode | predicted B | of which workspace B | truth B | max_memory_allocated B | "
        "analyze's own measure B | error | goal |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["memory"]:
        goal = r["error"] or ("yes" if r["within_goal"] else "no")
        own = f"{r['torchcost_measured']:,}" if r["torchcost_measured"] is not None else "-"
        lines.append(f"| {r['model']} | {r['mode']} | {r['predicted']:,} | {r.get('workspace', 0):,} | "
                     f"{r['truth']:,} | {r['max_allocated']:,} | {own} | {_pct(r['error_pct'])} | {goal} |")
    return "\n".join(lines) + "\n"


def _skipped(kind: Callable[..., Any], case: Spec, mode: str) -> Any:
    return kind(case.name, mode, error="skipped: time budget spent")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="path without suffix: writes OUT.json and OUT.md")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all cases (default 420)")
    parser.add_argument("--cases", default="", help="only models whose name contains one of these (comma-separated)")
    parser.add_argument("--smoke", action="store_true", help="tiny models (on the CPU without CUDA): the harness only")
    parser.add_argument("--hardware", help="the hardware table's name to predict for, instead of the one the GPU's "
                                           "name maps to (with --smoke on the CPU: cpu)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing measured")
        return 0
    device = "cuda" if cuda else "cpu"
    budget = Budget(args.budget)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    total = torch.cuda.get_device_properties(0).total_memory if cuda else 0
    hardware = args.hardware or (hardware_for(name, total) if cuda else None)
    if cuda and hardware is None:
        print(f"gpu_check: {name!r} is not in torchcost's hardware table: measuring only, no prediction")
    wanted = [w.strip() for w in args.cases.split(",") if w.strip()]

    def chosen(case: Spec) -> bool:
        return not wanted or any(w in case.name for w in wanted)

    rows_time: list[TimeRow] = []
    rows_memory: list[MemoryRow] = []
    for case in filter(chosen, TIME_CASES):
        for mode in ("eval", "train"):
            row = (time_case(case, mode, device, hardware, args.smoke, budget) if budget.left() > 0
                   else _skipped(TimeRow, case, mode))
            rows_time.append(row)
            print(f"time   {row.model:28} {mode:5} measured {_ms(row.measured_s)} ms, predicted "
                  f"{_ms(row.predicted_s)} ms, error {_pct(row.error_pct)} {row.error}", flush=True)
    for case in filter(chosen, MEMORY_CASES):
        for mode in ("eval", "train"):
            mrow = (memory_case(case, mode, device, args.smoke, hardware) if budget.left() > 0
                    else _skipped(MemoryRow, case, mode))
            rows_memory.append(mrow)
            print(f"memory {mrow.model:28} {mode:5} predicted {mrow.predicted:,} B (workspace {mrow.workspace:,}), "
                  f"max_memory_allocated {mrow.max_allocated:,} B, truth {mrow.truth:,} B, error "
                  f"{_pct(mrow.error_pct)} {mrow.error}", flush=True)
    result = {
        "device_name": name, "hardware": hardware, "torch": torch.__version__, "cuda": torch.version.cuda,
        "torchcost": torchcost.__version__, "smoke": args.smoke, "budget_s": args.budget,
        "seconds": time.perf_counter() - budget.start,
        "time": [asdict(r) for r in rows_time], "memory": [asdict(r) for r in rows_memory],
        "memory_within_goal": sum(r.within_goal for r in rows_memory),
        "time_error_median_pct": (statistics.median(abs(r.error_pct) for r in rows_time if r.error_pct is not None)
                                  if any(r.error_pct is not None for r in rows_time) else None),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"gpu_check: wrote {out.with_suffix('.json')} and {out.with_suffix('.md')} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
