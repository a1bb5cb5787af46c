"""Memory truth harness: torchcost's predicted peak against the CPU allocator, case by case, each in a fresh process.

    python -m benchmarks.memory_accuracy                       # every case; prints the table and writes it into
                                                               # docs/benchmarks.md ("Memory: prediction vs the CPU
                                                               # allocator")
    python -m benchmarks.memory_accuracy --cases lstm,gru      # only cases whose name contains one of these
                                                               # (fnmatch patterns work too); prints, no docs
    python -m benchmarks.memory_accuracy --list                # the case names
    python -m benchmarks.memory_accuracy --peers               # resnet18 and GPT-2 small beside torchsummary's and
                                                               # torchinfo's formulas
    python -m benchmarks.memory_accuracy --llama               # the llama-3-70b timing and RSS check (meta tensors)
    python -m benchmarks.memory_accuracy --kernel-memory table # without probes (collect/probe.py): the table alone

What it measures. The cases (benchmarks/memory_cases.py) span CNNs with depthwise and grouped convolutions,
BatchNorm, activation checkpointing, LSTM and GRU, a transformer with SDPA and tied weights, nn.MultiheadAttention
(eval fast path and training), a small Llama with its KV cache, a bf16 model and bf16 autocast, SGD/Adam/AdamW with
foreach on and off, at batch 1 and larger. Each runs in its own process (``--one NAME``), on one thread by default:

- **truth**: the model really runs on the CPU under torch.profiler(profile_memory=True), which records every
  allocation and free of the CPU allocator; the running maximum plus the bytes alive before (parameters, buffers,
  inputs, and for a training step the optimizer state) is the real peak (``tests.memory.truth.cpu_peak``).
  Inference: ``model(*args, **kwargs)`` in eval mode under no_grad. Training: the steady-state step on a copy of the
  model: one warm-up step, ``zero_grad(set_to_none=True)``, then the measured ``out = model(...); loss =
  out.float().pow(2).mean(); loss.backward(); opt.step()`` (the forward and loss under bf16 autocast where the case
  says so);
- **predicted**: ``torchcost.analyze`` on the same model and inputs (fake tensors, nothing allocated), with the
  case's optimizer instance and ``amp="bf16"`` where it autocasts, under the kernel-memory policy of
  ``--kernel-memory`` (default "auto": the workspace table, and a probe of the real kernel where it knows nothing);
- **error**: (predicted - truth) / truth.

oneDNN picks its kernels (and so the memory they allocate inside themselves) by the CPU's ISA, so the CPU's model
name and flags are printed and written with the table.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import platform
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from math import prod
from pathlib import Path
from typing import Any

import torch
from tests.memory.truth import eval_truth, first_float, train_truth
from torch import nn

import torchcost
from benchmarks.docs import replace_section
from benchmarks.memory_cases import CASES, Case
from torchcost.collect import probe
from torchcost.report import CostReport
from torchcost.shapes import ShapeTree, TensorSpec

MiB = 2**20
ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Memory: prediction vs the CPU allocator"
TOLERANCE = 2.0  # percent: the goal for every case
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


# -- truth, with keyword inputs ------------------------------------------------------------------------------------

def _loss(out: Any) -> torch.Tensor:
    """torchcost's default loss: the first floating output tensor's mean square in float32."""
    t = first_float(out)
    assert t is not None, "the output holds no floating tensor"
    return t if t.dim() == 0 else t.float().pow(2).mean()


# -- one case, in this process -----------------------------------------------------------------------------------

@dataclass
class Result:
    case: str
    family: str
    run: str
    truth: int = 0
    predicted: int = 0
    peak_at: str = ""  # torchcost's peak: phase, op, module
    seconds: float = 0.0  # the whole case, truth included
    analyze_s: float = 0.0  # torchcost.analyze alone (probes included)
    why: str = ""  # the case's known reason, kept for any case that misses by more than TOLERANCE
    error: str = ""  # a crash, if the case could not run

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted - self.truth) / self.truth if self.truth else float("nan")

    @property
    def misses(self) -> bool:
        return bool(self.error) or abs(self.error_pct) > TOLERANCE


def measure_case(case: Case) -> Result:
    """Build the case, predict its peak with torchcost, then measure the truth on the real model."""
    start = time.perf_counter()
    model, args, kwargs = case.build()
    train = case.mode == "train"
    optimizer = case.optimizer(model.parameters()) if train and case.optimizer is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        began = time.perf_counter()
        r = torchcost.analyze(model, *args, kwargs=kwargs, mode=case.mode, optimizer=optimizer,
                              amp="bf16" if case.amp is torch.bfloat16 else None)
        analyze_s = time.perf_counter() - began
        if train:
            assert case.optimizer is not None
            truth = train_truth(model, *args, kwargs=kwargs, make_optimizer=case.optimizer, loss_fn=_loss,
                                amp=case.amp)
        else:
            truth = eval_truth(model, *args, kwargs=kwargs, amp=case.amp)
    m = r.memory
    assert m is not None
    return Result(case.name, case.family, case.run, truth, r.peak_memory,
                  f"{m.peak_phase}: {m.peak_op} in {m.peak_module or '(model)'}",
                  time.perf_counter() - start, analyze_s, case.why)


def run_case(name: str, threads: int, kernel_memory: str = "auto") -> Result:
    """One case in a fresh Python process (``--one NAME``), so that no allocator, oneDNN or autograd state of an
    earlier case is alive (and no probe is cached)."""
    case = CASES[name]
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory_accuracy", "--one", name, "--threads",
                           str(threads), "--kernel-memory", kernel_memory], capture_output=True, text=True, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Result(case.name, case.family, case.run, why=case.why, error=tail[:200])
    return Result(**json.loads(lines[-1]))


def select(patterns: str | None) -> list[str]:
    """Case names matching any of the comma-separated patterns (a substring, or an fnmatch pattern)."""
    if not patterns:
        return list(CASES)
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    names = [n for n in CASES if any(p in n or fnmatch.fnmatch(n, p) for p in wanted)]
    if not names:
        raise SystemExit(f"no case matches {patterns!r}; --list shows them")
    return names


# -- the machine ---------------------------------------------------------------------------------------------------

def cpu_description() -> str:
    """The CPU's model name and the ISA flags oneDNN's kernel choices depend on, present or not."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        model = found.group(1).strip() if found else model
        found = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = set(found.group(1).split()) if found else set()
    except OSError:
        pass
    isa = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ISA_FLAGS)
    onednn = re.search(r"MKL-DNN v([\d.]+)", torch.__config__.show())
    return (f"{model}; {isa}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
            f"{f', oneDNN {onednn.group(1)}' if onednn else ''}")


# -- output ----------------------------------------------------------------------------------------------------------

def _why(row: Result) -> str:
    if row.error:
        return f"crashed: {row.error}"
    if not row.misses:
        return ""
    return row.why or "not diagnosed"


def case_table(rows: list[Result]) -> str:
    head = (f"{'case':26} {'run':30} {'truth B':>13} {'predicted B':>13} {'error':>8} {'analyze s':>9}  "
            f"{'peak at (torchcost)':60} why")
    lines = [head, "-" * len(head)]
    for r in rows:
        err = "crash" if r.error else f"{r.error_pct:+.2f}%"
        lines.append(f"{r.case:26} {r.run:30} {r.truth:13,} {r.predicted:13,} {err:>8} {r.analyze_s:9.2f}  "
                     f"{r.peak_at[:60]:60} {_why(r)}")
    ok = sum(not r.misses for r in rows)
    lines.append(f"{ok} of {len(rows)} cases within {TOLERANCE:g} %")
    return "\n".join(lines)


def torchcost_source() -> str:
    """torchcost's version and, for this checkout, its git commit (and whether src/ has uncommitted changes)."""
    where = Path(torchcost.__file__).resolve()
    if not where.is_relative_to(ROOT):
        return f"torchcost {torchcost.__version__} from {where.parent}"
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True, text=True).stdout.strip()
    return f"torchcost {torchcost.__version__} (git {head}{' + uncommitted changes in src/' if dirty else ''})"


def markdown_section(rows: list[Result], threads: int, seconds: float, source: str,
                     kernel_memory: str = "auto") -> str:
    ok = sum(not r.misses for r in rows)
    out = [
        HEADING,
        "",
        f"Generated on {time.strftime('%Y-%m-%d')} by `python -m benchmarks.memory_accuracy` ({seconds:.0f} s; "
        f"torch {torch.__version__}, {source}, {threads} thread(s), each case in a fresh process, kernel memory "
        f"{kernel_memory!r}). Cases: [benchmarks/memory_cases.py](../benchmarks/memory_cases.py).",
        "",
        f"CPU: {cpu_description()}. oneDNN picks its kernels, and so the memory they allocate inside themselves, by "
        "these flags: the figures below hold for this CPU.",
        "",
        "**truth**: the CPU allocator's peak under `torch.profiler(profile_memory=True)` (its running maximum plus "
        "the bytes alive before: parameters, buffers, inputs, optimizer state). Inference runs in eval mode under "
        "no_grad; a step is the steady-state one (a warm-up step, `zero_grad(set_to_none=True)`, then the measured "
        "forward, `out.float().pow(2).mean()`, backward and optimizer step). **predicted**: `torchcost.analyze` on "
        "the same model and inputs (the oneDNN calls the workspace table does not claim measured by probes of the "
        "real kernel, collect/probe.py; **analyze s**: its wall time, probes included). **error**: (predicted - "
        f"truth) / truth. **why**: the known cause, for each case that misses by more than {TOLERANCE:g} %.",
        "",
        f"{ok} of {len(rows)} cases are within {TOLERANCE:g} %.",
        "",
        "| case | family | run | truth (B) | predicted (B) | error | analyze s | torchcost's peak at | why |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        err = "crash" if r.error else f"{r.error_pct:+.2f}%"
        out.append(f"| {r.case} | {r.family} | {r.run} | {r.truth:,} | {r.predicted:,} | {err} | {r.analyze_s:.2f} | "
                   f"{r.peak_at.replace('|', '/')} | {_why(r)} |")
    return "\n".join(out) + "\n"


def write_docs(section: str, path: Path = DOCS) -> None:
    """Replace this benchmark's section of ``path`` (docs/benchmarks.md) with ``section``."""
    replace_section(path, HEADING, section)


# -- the peers' formulas (--peers) ----------------------------------------------------------------------------

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


def _peer_cases() -> dict[str, Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]]:
    def resnet18() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        import torchvision

        torch.manual_seed(0)
        return torchvision.models.resnet18(), (torch.randn(16, 3, 224, 224),)

    def gpt2() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config()), (torch.randint(0, 50257, (1, 128)),)

    return {"resnet18 (batch 16, 224x224)": resnet18, "GPT-2 small (batch 1, seq 128)": gpt2}


def measure_peers() -> list[Row]:
    """resnet18 and GPT-2 small, inference and an AdamW step: truth, torchcost and the peers' formulas."""
    out = []
    for name, build in _peer_cases().items():
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


def peer_table(rows: list[Row]) -> str:
    head = (f"{'model':32} {'what':11} {'truth MiB':>10} {'torchcost':>10} {'ratio':>7} {'torchsummary':>13} "
            f"{'ratio':>6} {'torchinfo':>10} {'ratio':>6}  peak at (torchcost)")
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row.case:32} {row.mode:11} {row.truth / MiB:10.2f} {row.predicted / MiB:10.2f} "
            f"{row.predicted / row.truth:7.4f} {row.torchsummary / MiB:13.2f} {row.torchsummary / row.truth:6.2f} "
            f"{row.torchinfo / MiB:10.2f} {row.torchinfo / row.truth:6.2f}  {row.where}")
    return "\n".join(lines)


# -- llama-3-70b on meta tensors (--llama) ---------------------------------------------------------------------

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
    parser.add_argument("--cases", help="comma-separated name fragments or fnmatch patterns; the docs are then not "
                                        "written (unless --write-docs)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for the real runs (1)")
    parser.add_argument("--kernel-memory", choices=("auto", "measure", "table"), default="auto",
                        help="torchcost's kernel-memory policy (collect/probe.py): auto (default), measure, or table "
                             "(no probes)")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--write-docs", action="store_true", help="write the docs section even with --cases")
    parser.add_argument("--source-label", help="how to name the torchcost that ran (default: its git commit)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    parser.add_argument("--peers", action="store_true", help="also resnet18 and GPT-2 small against the peers' "
                                                             "formulas (in this process)")
    parser.add_argument("--llama", action="store_true", help="also time llama-3-70b on meta tensors")
    parser.add_argument("--skip-accuracy", action="store_true", help="skip the cases (with --peers or --llama)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case here, print its row as JSON
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    probe.set_kernel_memory(args.kernel_memory)
    if args.one:
        print(json.dumps(asdict(measure_case(CASES[args.one]))))
        return
    if args.list:
        for case in CASES.values():
            print(f"{case.name:26} {case.family:26} {case.run}")
        return
    llama_result = llama() if args.llama else None  # first, while this process is small
    if not args.skip_accuracy:
        names = select(args.cases)
        source = args.source_label or torchcost_source()
        print(f"torch {torch.__version__}, {source}, {args.threads} thread(s), kernel memory {args.kernel_memory!r}")
        print(f"CPU: {cpu_description()}")
        start = time.perf_counter()
        rows = []
        for name in names:
            rows.append(run_case(name, args.threads, args.kernel_memory))
            r = rows[-1]
            print(f"  {name:26} {'crash: ' + r.error if r.error else f'{r.error_pct:+.2f}%'} ({r.seconds:.1f} s, "
                  f"analyze {r.analyze_s:.2f} s)", flush=True)
        seconds = time.perf_counter() - start
        print()
        print(case_table(rows))
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
        if not args.no_docs and (args.cases is None or args.write_docs):
            write_docs(markdown_section(rows, args.threads, seconds, source, args.kernel_memory))
            print(f"\nwritten: {DOCS.relative_to(ROOT)}, section \"{HEADING[3:]}\"")
    if args.peers:
        print()
        print(peer_table(measure_peers()))
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
