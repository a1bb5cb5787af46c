"""Time: the roofline prediction for this CPU (``hardware="cpu"``, its peaks measured by timing/cpu.py) against the
measured whole-forward time, and the rank correlation of per-module times.

    python -m benchmarks.time_accuracy [--threads 1] [--repeats 9] [--models NAME,...] [--write]

Per model: ``analyze(model, x, hardware=cpu, memory=False)`` gives the predicted forward; the same model (eval,
no_grad) is then timed with ``time.perf_counter`` around the whole forward, ``--repeats`` runs after 2 untimed ones,
median (and min-max) reported, and with ``time.thread_time`` (the calling thread's CPU time: the whole forward with
one intra-op thread, without the time slices a loaded machine gives to other processes). Per module: forward
pre/post hooks read ``perf_counter`` (inclusive time, every call of a forward summed), median over 3 hooked runs;
Spearman's rho of predicted vs measured seconds over the leaf modules that ran a counted op. The CPU's peaks are
measured 3 times at the start (not the cache), at the same thread count, each figure at its best. ``--write`` puts
the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import torchcost
from benchmarks.docs import replace_section
from torchcost.report import CostReport
from torchcost.timing.cpu import cpu_name, measure_cpu
from torchcost.timing.hardware import Hardware

__all__ = ["MODELS", "main", "spearman"]

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Time: roofline against the CPU"


@dataclass
class Model:
    name: str
    build: Callable[[], tuple[nn.Module, tuple[Any, ...], dict[str, Any]]]


def _tv(name: str) -> Callable[[], tuple[nn.Module, tuple[Any, ...], dict[str, Any]]]:
    def build() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
        import torchvision

        return getattr(torchvision.models, name)(weights=None).eval(), (torch.randn(1, 3, 224, 224),), {}
    return build


def _gpt2() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
    from torchcost.resolve import resolve

    r = resolve("hf:gpt2", seq_len=128)
    return r.model.eval(), tuple(r.args), dict(r.kwargs)


class _LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(256, 256)
        self.lstm1 = nn.LSTM(256, 512, batch_first=True)
        self.lstm2 = nn.LSTM(512, 512, batch_first=True)
        self.head = nn.Linear(512, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm1(self.proj(x))
        out, _ = self.lstm2(out)
        result: torch.Tensor = self.head(out)
        return result


def _lstm() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
    return _LSTMNet().eval(), (torch.randn(8, 64, 256),), {}


def _mlp() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
    layers: list[nn.Module] = []
    for _ in range(4):
        layers += [nn.Linear(2048, 2048), nn.ReLU()]
    return nn.Sequential(*layers).eval(), (torch.randn(512, 2048),), {}


MODELS = (Model("resnet50", _tv("resnet50")), Model("mobilenet_v2", _tv("mobilenet_v2")),
          Model("vit_b_16", _tv("vit_b_16")), Model("gpt2 (seq 128)", _gpt2),
          Model("LSTM 2 x 512 (8 x 64 steps)", _lstm), Model("MLP 4 x 2048^2 (batch 512)", _mlp))


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank); nan for fewer than 3 pairs."""
    if len(a) < 3:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va and vb else float("nan")


def _forward_times(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                   repeats: int) -> tuple[list[float], list[float]]:
    """Wall seconds (perf_counter) and the thread's CPU seconds (thread_time) of each timed forward."""
    wall, cpu = [], []
    with torch.no_grad():
        for _ in range(2):
            model(*args, **kwargs)
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.thread_time()
            model(*args, **kwargs)
            cpu.append(time.thread_time() - start_cpu)
            wall.append(time.perf_counter() - start)
    return wall, cpu


def _module_times(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], runs: int = 3) -> dict[str, float]:
    """Median inclusive seconds per module name over ``runs`` hooked forwards."""
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[float] = []
    totals: dict[str, float] = {}

    def pre(module: nn.Module, _: Any) -> None:
        stack.append(time.perf_counter())

    def post(module: nn.Module, _: Any, __: Any) -> None:
        start = stack.pop()
        name = names.get(id(module), "?")
        totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    samples: dict[str, list[float]] = {}
    try:
        with torch.no_grad():
            model(*args, **kwargs)
            for _ in range(runs):
                totals.clear()
                model(*args, **kwargs)
                for k, v in totals.items():
                    samples.setdefault(k, []).append(v)
    finally:
        for h in handles:
            h.remove()
    return {k: statistics.median(v) for k, v in samples.items()}


def best_cpu(threads: int, rounds: int = 3) -> Hardware:
    """The CPU measured ``rounds`` times (timing/cpu.py, not its cache), each figure at its best: what the machine
    can do when nothing else runs on it, as the fastest timed forward is what the model takes then."""
    runs = [measure_cpu(threads, refresh=True) for _ in range(rounds)]
    best = max(runs, key=lambda h: h.peak_flops["float32"])
    return replace(best, peak_flops={"float32": best.peak_flops["float32"]},
                   vector_flops=max(h.vector_flops for h in runs),
                   memory_bandwidth=max(h.memory_bandwidth for h in runs),
                   call_overhead=min(h.call_overhead for h in runs))


def run_model(entry: Model, hw: Hardware, repeats: int) -> dict[str, Any]:
    model, args, kwargs = entry.build()
    report: CostReport = torchcost.analyze(model, *args, kwargs=kwargs, hardware=hw, memory=False)
    predicted = report.predicted_time
    assert predicted is not None
    times, cpu_times = _forward_times(model, args, kwargs, repeats)
    measured = statistics.median(times)
    cpu_measured = statistics.median(cpu_times)
    per_module = _module_times(model, args, kwargs)
    leaves = [m for m in report.modules if m.is_leaf and m.name and m.flops > 0 and m.name in per_module]
    pred = [p.seconds for m in leaves if (p := predicted.module(m.name)) is not None]
    meas = [per_module[m.name] for m in leaves if predicted.module(m.name) is not None]
    return {"model": entry.name, "gflops": report.flops / 1e9,
            "predicted_ms": predicted.forward_s * 1e3,
            "measured_ms": measured * 1e3, "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3,
            "error": predicted.forward_s / measured - 1, "error_min": predicted.forward_s / min(times) - 1,
            "cpu_ms": cpu_measured * 1e3, "error_cpu": predicted.forward_s / cpu_measured - 1,
            "memory_bound": predicted.memory_bound_share,
            "modules": len(pred), "spearman": spearman(pred, meas)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | GFLOPs | predicted ms | measured ms, median (min-max) | error vs min | error vs median | "
             "thread CPU ms, median | error vs it | memory-bound | leaf modules | Spearman rho |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['gflops']:.2f} | {r['predicted_ms']:.1f} | "
                     f"{r['measured_ms']:.1f} ({r['min_ms']:.1f}-{r['max_ms']:.1f}) | {100 * r['error_min']:+.1f}% | "
                     f"{100 * r['error']:+.1f}% | {r['cpu_ms']:.1f} | {100 * r['error_cpu']:+.1f}% | "
                     f"{100 * r['memory_bound']:.0f}% | {r['modules']} | {r['spearman']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.time_accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--models", default="", help="comma-separated names (prefixes) to run; default all")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    machine = (f"{cpu_name()}, torch.set_num_threads({args.threads}), torch {torch.__version__}, "
               f"Python {platform.python_version()}")
    hw = best_cpu(args.threads)
    head = (f"CPU peaks (best of 3 measurements): float32 matmul {hw.peak_flops['float32'] / 1e9:.1f} GFLOP/s, "
            f"vector {hw.vector_flops / 1e9:.2f} GFLOP/s, copy {hw.memory_bandwidth / 1e9:.1f} GB/s, "
            f"{hw.call_overhead * 1e6:.2f} us per call")
    print(machine)
    print(head)
    wanted = [w.strip() for w in args.models.split(",") if w.strip()]
    rows = []
    for entry in MODELS:
        if wanted and not any(entry.name.startswith(w) for w in wanted):
            continue
        row = run_model(entry, hw, args.repeats)
        print(f"  {row['model']:28s} predicted {row['predicted_ms']:8.1f} ms  measured {row['measured_ms']:8.1f} ms  "
              f"{100 * row['error']:+6.1f}% (vs min {100 * row['error_min']:+6.1f}%, vs CPU time "
              f"{100 * row['error_cpu']:+6.1f}%)  rho {row['spearman']:.2f}",
              flush=True)
        rows.append(row)
    body = table(rows)
    summary = ""
    if rows:
        quiet = [abs(r["error_min"]) for r in rows]
        loaded = [abs(r["error"]) for r in rows]
        cpu = [abs(r["error_cpu"]) for r in rows]
        summary = (f"Within +-25% of the fastest run: {sum(e <= 0.25 for e in quiet)} of {len(quiet)} (median |error| "
                   f"{100 * statistics.median(quiet):.1f}%); of the median run: {sum(e <= 0.25 for e in loaded)} of "
                   f"{len(loaded)} (median |error| {100 * statistics.median(loaded):.1f}%); of the median thread CPU "
                   f"time: {sum(e <= 0.25 for e in cpu)} of {len(cpu)} (median |error| "
                   f"{100 * statistics.median(cpu):.1f}%).")
    print(body)
    print(summary)
    if args.write:
        intro = ("Written by `python -m benchmarks.time_accuracy --write` (issue 13): the roofline prediction "
                 "(`analyze(..., hardware=\"cpu\")`, docs/conventions.md, \"Time\") against the measured forward "
                 "(eval, no_grad, median of the timed runs, `time.perf_counter`). Per-module Spearman rho: predicted "
                 "vs measured inclusive time of the leaf modules that ran counted ops (forward hooks).\n\n"
                 f"Machine: {machine}; a 2-core VM shared with other jobs, so timings are noisy: the peaks are "
                 "the best of 3 measurements (what the CPU does when nothing else runs) and the error is given "
                 "against the fastest of the timed runs (the same condition), against their median, and against the "
                 "median CPU time of the calling thread (`time.thread_time`; with one intra-op thread all of the "
                 "forward runs on it, and time slices taken by other processes are not in it).\n"
                 f"{head}.\n\n"
                 "Reading it: the prediction is close to a lower bound by construction (every kernel at the best "
                 "rate measured), and what it misses is documented in docs/conventions.md, \"Blind spots of the "
                 "prediction\": on this CPU mainly matrix products whose shape runs below the square matmul's "
                 "rate (GPT-2's LM head, 128 x 768 by 768 x 50,257, ran at about half of it and its other "
                 "products, 128 rows each, at about 0.8, measured per module: most of GPT-2's gap) and free ops "
                 "(copies, `cat`, embedding lookups) that take time but are not priced. Between runs of this "
                 "benchmark on this shared machine the fastest forward of the same model moved by up to 1.5x (the "
                 "MLP: 209 to 295 ms), more than most of the errors above; the thread's CPU time moves least, and "
                 "rank correlations per module are stable (0.7 to 1.0).\n")
        replace_section(ROOT / "docs" / "benchmarks.md", HEADING,
                        f"{HEADING}\n\n{intro}\n{body}\n\n{summary}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
