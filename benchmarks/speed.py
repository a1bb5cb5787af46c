"""Speed and memory: per model, a plain forward, torchcost.analyze and each peer, timed in one process.

Timing: every tool gets one untimed warm-up call, then ``runs`` rounds (at least 15 for resnet50, the headline);
in each round every tool runs once, in an order rotated from round to round (so drift in machine load spreads evenly
over the tools), on a fresh deep copy of the model made before its timer starts, after a gc.collect(). Reported: the
median and the minimum of the rounds, of wall time and of the thread's CPU time, and the ratio of each tool's median
to the plain forward's median. Threads are pinned (torch.set_num_threads).

Peak RSS: one subprocess per model (``python -m benchmarks.speed --rss CASE``) builds the model, runs one warm-up
forward, then for each tool in turn: gc.collect(), malloc_trim(0), a fresh copy of the model, the kernel's peak-RSS
mark reset (``/proc/self/clear_refs`` 5), the tool's call; reported is VmHWM after the call minus VmRSS just before
it: the extra resident memory the call needed at its peak. Linux only; elsewhere the column is empty.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.models import Built, Case
from benchmarks.peers import TOOLS, Tool, fresh, import_tool, quiet, run_tool

__all__ = ["run_speed", "time_rounds"]

ROOT = Path(__file__).resolve().parent.parent


def _forward(model: torch.nn.Module, built: Built) -> Any:
    return model(*built.args, **built.kwargs)


def time_rounds(pristine: Built, entries: dict[str, Callable[[torch.nn.Module, Built], Any]], runs: int,
                copy_model: bool = True) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds per round for each entry, interleaved, each on a fresh copy made outside the timer."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in entries}
    names = list(entries)
    for i in range(runs):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            built = fresh(pristine) if copy_model else pristine
            gc.collect()
            with contextlib.ExitStack() as stack:
                stack.enter_context(quiet())
                stack.enter_context(torch.no_grad())
                cpu, wall = time.thread_time(), time.perf_counter()
                entries[name](built.model, built)
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
            del built
    return times


def summarise(times: dict[str, dict[str, list[float]]], base: str = "forward") -> dict[str, dict[str, Any]]:
    """Medians, minima and ratios to ``base``: of wall time (the headline figure) and of the thread's CPU time (less
    sensitive to other processes on a shared machine; with one torch thread the work runs on this thread)."""
    out: dict[str, dict[str, Any]] = {}
    base_wall = times.get(base, {}).get("wall", [])
    base_cpu = times.get(base, {}).get("cpu", [])
    for name, t in times.items():
        wall, cpu = t["wall"], t["cpu"]
        entry: dict[str, Any] = {"median_s": statistics.median(wall), "min_s": min(wall),
                                 "cpu_median_s": statistics.median(cpu), "runs_s": [round(x, 5) for x in wall],
                                 "cpu_runs_s": [round(x, 5) for x in cpu]}
        if base_wall:
            entry["ratio"] = entry["median_s"] / statistics.median(base_wall)
            entry["cpu_ratio"] = entry["cpu_median_s"] / statistics.median(base_cpu)
            entry["min_ratio"] = entry["min_s"] / min(base_wall)
            # each round's own ratio (same round, same load), then their median: a check on the ratio of medians
            entry["ratio_per_round_median"] = statistics.median(a / b for a, b in zip(wall, base_wall))
        out[name] = entry
    return out


HEADLINE = "torchvision:resnet50"
HEADLINE_RUNS = 15


def run_speed(cases: Sequence[Case], tools: Sequence[Tool] = TOOLS, runs: int = 7, rss: bool = True,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    for tool in tools:
        import_tool(tool)
    results = []
    for case in cases:
        pristine = case.build()
        entries: dict[str, Callable[[torch.nn.Module, Built], Any]] = {"forward": _forward}
        skipped: dict[str, str] = {}
        for tool in tools:
            outcome = run_tool(tool, pristine, check=False)  # the warm-up, and whether it runs at all
            if outcome.status == "ok":
                entries[tool.name] = tool.run
            else:
                skipped[tool.name] = f"{outcome.status}: {outcome.error}"
        with quiet(), torch.no_grad():
            _forward(pristine.model, pristine)  # warm-up
        n = max(runs, HEADLINE_RUNS) if case.name == HEADLINE else runs
        times = time_rounds(pristine, entries, n)
        summary = summarise(times)
        entry: dict[str, Any] = {"case": case.name, "input": case.input, "runs": n, "timing": summary,
                                 "skipped": skipped}
        if rss:
            entry["rss"] = measure_rss(case.name, [t.name for t in tools if t.name in entries])
        results.append(entry)
        tc = summary.get("torchcost", {})
        log(f"  {case.name:40s} forward {summary['forward']['median_s'] * 1e3:8.1f} ms   "
            f"torchcost x{tc.get('ratio', float('nan')):.2f}")
        del pristine
    return results


# -- peak RSS in a subprocess ----------------------------------------------------------------------------------------

def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"(VmHWM|VmRSS):\s+(\d+) kB", text)}


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure_rss(case_name: str, tool_names: Sequence[str], threads: int | None = None) -> dict[str, Any]:
    if not Path("/proc/self/clear_refs").exists():
        return {"error": "needs Linux /proc/self/clear_refs"}
    cmd = [sys.executable, "-m", "benchmarks.speed", "--rss", case_name, "--tools", ",".join(tool_names),
           "--threads", str(threads or torch.get_num_threads())]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def _rss_child(case_name: str, tool_names: list[str], threads: int) -> dict[str, Any]:
    from benchmarks.models import all_cases

    torch.set_num_threads(threads)
    case = next(c for c in all_cases() if c.name == case_name)
    by_name = {t.name: t for t in TOOLS}
    for name in tool_names:
        if name in by_name:
            import_tool(by_name[name])
    pristine = case.build()
    with quiet(), torch.no_grad():
        _forward(pristine.model, pristine)
    out: dict[str, Any] = {"model_bytes": sum(p.numel() * p.element_size() for p in pristine.model.parameters())}
    for name in ["forward", *tool_names]:
        built = fresh(pristine)
        _trim()
        Path("/proc/self/clear_refs").write_text("5")
        before = _status()["VmRSS"]
        fn = _forward if name == "forward" else by_name[name].run
        try:
            with quiet(), torch.no_grad():
                fn(built.model, built)
            peak = _status()["VmHWM"]
            out[name] = {"extra_peak_bytes": max(peak - before, 0), "peak_bytes": peak}
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        del built
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="peak RSS of each tool on one model (used by benchmarks.run)")
    parser.add_argument("--rss", required=True, help="case name")
    parser.add_argument("--tools", default="")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    names = [n for n in args.tools.split(",") if n]
    print(json.dumps(_rss_child(args.rss, names, args.threads)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
