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
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.models import Built, Case
from benchmarks.peers import TOOLS, Tool, fresh, import_tool, quiet, run_tool

__all__ = ["run_growth", "run_ladder", "run_linearity", "run_parts", "run_speed", "time_rounds"]

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


# -- the overhead ladder (issue 16): analyze() against a plain forward, the floor and FlopCounterMode ----------------

LADDER_MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "vit_b_16", "gpt2")
LADDER_HEADING = "## Speed: the overhead ladder"


class _EmptyDispatch(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # as torchcost's own modes
        return False

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


class _EmptyFunction(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _floor() -> Any:
    """The design's floor: global module hooks that push and pop a name, an empty function mode and an empty
    dispatch mode: what any tool built like torchcost pays before doing any work."""
    from torch.nn.modules import module as module_mod

    stack: list[str] = []

    def pre(module: torch.nn.Module, args: Any) -> None:
        stack.append(type(module).__name__)

    def post(module: torch.nn.Module, args: Any, kwargs: Any, output: Any = None) -> None:
        if stack:
            stack.pop()

    handles = [module_mod.register_module_forward_pre_hook(pre),
               module_mod.register_module_forward_hook(post, with_kwargs=True, always_call=True)]
    try:
        with _EmptyFunction(), _EmptyDispatch():
            yield
    finally:
        for h in handles:
            h.remove()
            module_mod._global_forward_hooks_with_kwargs.pop(h.id, None)


def _ladder_variants() -> dict[str, Callable[[torch.nn.Module, Built], Any]]:
    from torch.utils.flop_counter import FlopCounterMode

    import torchcost

    def floor(model: torch.nn.Module, built: Built) -> Any:
        with _floor():
            return _forward(model, built)

    def flop_counter(model: torch.nn.Module, built: Built) -> Any:
        with FlopCounterMode(display=False):
            return _forward(model, built)

    def nomem(model: torch.nn.Module, built: Built) -> Any:
        return torchcost.analyze(model, *built.args, kwargs=built.kwargs, memory=False)

    def full(model: torch.nn.Module, built: Built) -> Any:
        return torchcost.analyze(model, *built.args, kwargs=built.kwargs)

    def no_leaves(model: torch.nn.Module, built: Built) -> Any:
        from torchcost.collect import leaves

        with leaves.off():
            return torchcost.analyze(model, *built.args, kwargs=built.kwargs)

    def every_kernel(model: torch.nn.Module, built: Built) -> Any:
        from torchcost.collect import unwritten

        with unwritten.off():
            return torchcost.analyze(model, *built.args, kwargs=built.kwargs)

    return {"forward": _forward, "floor": floor, "FlopCounterMode": flop_counter, "analyze(memory=False)": nomem,
            "analyze(), no direct leaves": no_leaves, "analyze(), every kernel": every_kernel, "analyze()": full}


def ladder_model(name: str) -> Built:
    """The ladder's models: torchvision's with weights=None (1x3x224x224), GPT-2 (default config, 1x128 ids), and
    ``blocksN``, the linearity rows' stack of N Linear(64, 64) + ReLU blocks on a 1x64 input. ``meta-<name>``: the
    same model built on the meta device, its inputs too (GPT-2's ids made by torchcost's resolver for meta), as a
    model too big for the machine is analysed."""
    if name.startswith("meta-"):
        if name == "meta-gpt2":
            from torchcost.resolve import resolve

            r = resolve("hf:gpt2", seq_len=128, meta=True)  # (no mask: a meta run cannot read its ones)
            return Built(r.model.eval(), r.args, {k: v for k, v in r.kwargs.items() if k != "attention_mask"})
        with torch.device("meta"):
            built = ladder_model(name[len("meta-"):])
        return Built(built.model.to("meta"), tuple(a.to("meta") for a in built.args), built.kwargs)
    torch.manual_seed(0)
    if name.startswith("blocks"):
        return Built(_Blocks(int(name[len("blocks"):])).eval(), (torch.randn(1, 64),))
    if name == "gpt2":
        from torchcost.resolve import resolve

        r = resolve("hf:gpt2", seq_len=128)
        return Built(r.model.eval(), r.args, r.kwargs)
    import torchvision

    model = getattr(torchvision.models, name)(weights=None).eval()
    return Built(model, (torch.randn(1, 3, 224, 224),))


def _interleaved_cpu(built: Built, entries: dict[str, Callable[[torch.nn.Module, Built], Any]],
                     rounds: int, clock: Callable[[], float] = time.thread_time) -> dict[str, list[float]]:
    """CPU seconds of the thread per round for each entry, order rotated each round, gc.collect() before each call
    (outside the timer); the model itself is used (analyze leaves it as it found it). ``clock``: what is read
    before and after each call (:func:`_cuda_wall` on a GPU)."""
    times: dict[str, list[float]] = {name: [] for name in entries}
    names = list(entries)
    for name in names:  # warm-up (on a GPU also cuDNN's algorithm choice and the CUDA context)
        with quiet(), torch.no_grad():
            entries[name](built.model, built)
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            gc.collect()
            with quiet(), torch.no_grad():
                start = clock()
                entries[name](built.model, built)
                times[name].append(clock() - start)
    return times


def _ratio_stats(values: list[float], base: list[float]) -> tuple[float, float, float]:
    ratios = sorted(a / b for a, b in zip(values, base))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return statistics.median(ratios), q[0], q[2]


def run_ladder(models: Sequence[str], rounds: int, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    variants = _ladder_variants()
    rows = []
    for name in models:
        built = ladder_model(name)
        n = rounds if name not in ("vit_b_16", "gpt2") else max(3, (rounds * 3) // 7)
        times = _interleaved_cpu(built, variants, n)
        base = times["forward"]
        row: dict[str, Any] = {"model": name, "rounds": n, "forward_ms": statistics.median(base) * 1e3}
        for v in variants:
            if v != "forward":
                row[v] = _ratio_stats(times[v], base)
        rows.append(row)
        log(f"  {name:16s} forward {row['forward_ms']:7.1f} ms  " + "  ".join(
            f"{v} {row[v][0]:.2f}x" for v in variants if v != "forward"))
        del built
    return rows


class _Blocks(torch.nn.Module):
    def __init__(self, n: int, width: int = 64) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(*(m for _ in range(n) for m in (torch.nn.Linear(width, width),
                                                                           torch.nn.ReLU())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        return out


def run_linearity(sizes: Sequence[int], rounds: int, train_sizes: Sequence[int],
                  log: Callable[[str], None] = print, floors: bool = True) -> list[dict[str, Any]]:
    """N x (Linear(64, 64) + ReLU) on a 1x64 input: forward, analyze() and a training step, CPU ms per block.
    ``floors``: also the idle, fake, meta and real steps beside the training step, and the ops each analysis dispatched
    (False: the analyses alone, so N = 10,000 takes minutes, not an hour)."""
    import torchcost

    torch.set_num_threads(1)
    rows = []
    for n in sizes:
        built = ladder_model(f"blocks{n}")
        model = built.model
        entries: dict[str, Callable[[torch.nn.Module, Built], Any]] = {
            "forward": _forward,
            "analyze()": lambda m, b: torchcost.analyze(m, *b.args)}
        if n in train_sizes:
            entries["train step"] = lambda m, b: torchcost.analyze(m, *b.args, mode="train")
        if n in train_sizes and floors:
            entries["idle step"] = _idle_step
            entries["fake step"] = _fake_step(built)
            entries["meta step"] = _meta_step(built)
            entries["real step"] = _real_step(built)
        r = rounds if n < 10_000 else max(1, rounds // 3)
        times = _interleaved_cpu(built, entries, r)
        row: dict[str, Any] = {"blocks": n, "rounds": r}
        for k, v in times.items():
            row[k] = statistics.median(v) * 1e3
        # the aten ops each run dispatches (the memory timeline has one entry per op), outside the timed rounds
        row["ops"] = {k: len(entries[k](model, built).memory.timeline.ops) for k in ("analyze()", "train step")
                      if k in entries and floors}
        rows.append(row)
        log(f"  N={n:6d}  " + "  ".join(f"{k} {row[k]:.1f} ms ({row[k] / n * 1e3:.0f} us/block)" for k in times)
            + ("  ops " + ", ".join(f"{k} {v}" for k, v in row["ops"].items()) if row["ops"] else ""))
    return rows


def _train_step(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                opt: torch.optim.Optimizer) -> None:
    """One training step as analyze(mode="train") runs it: gradients dropped, forward, analyze's default loss,
    backward, the optimizer's step."""
    from torchcost.run.step import default_loss

    with torch.enable_grad():
        opt.zero_grad(set_to_none=True)
        default_loss(model(*args, **kwargs)).backward()
        opt.step()


def _idle(*args: Any, **kwargs: Any) -> None:
    return None


# the pieces :func:`switched_off` can make do nothing: label -> (module, class or None for the module itself, name).
# The collectors' per-op work, and a training step's measured optimizer step (its warm-up still runs, so the state
# is there): what no tape of the optimizer's ops could cut below
SWITCHES: dict[str, tuple[str, str | None, str]] = {
    "pricing": ("torchcost.collect.ops", "OpCollector", "_price"),
    "on_aten": ("torchcost.collect.ops", "OpCollector", "on_aten"),
    "on_op": ("torchcost.collect.memory", "MemoryTracker", "on_op"),
    "optimizer step": ("torchcost.run.execute", None, "_optimizer_step")}


@contextlib.contextmanager
def _replaced(targets: Sequence[tuple[str, str | None, str, Callable[[Any], Any]]]) -> Any:
    """While inside, each target (module, class or None for the module itself, name) is ``make(original)``; put
    back on the way out, also on an error."""
    import importlib

    saved = []
    try:
        for module, cls, name, make in targets:
            owner = importlib.import_module(module)
            if cls is not None:
                owner = getattr(owner, cls)
            original = owner.__dict__[name]
            saved.append((owner, name, original))
            setattr(owner, name, make(original))
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


@contextlib.contextmanager
def switched_off(labels: Sequence[str]) -> Any:
    """While inside, the pieces of :data:`SWITCHES` named in ``labels`` do nothing (put back on the way out, also on
    an error): for timing what the rest of an analysis costs. Reports made inside are not ones to read."""
    with _replaced([(*SWITCHES[label], lambda original: _idle) for label in labels]):
        yield


def _analysis_without(labels: Sequence[str], mode: str) -> Callable[[torch.nn.Module, Built], None]:
    """analyze(mode=``mode``) of a Built with the pieces ``labels`` of :data:`SWITCHES` off, and the optimizer's
    tapes off (collect/tape.py: the step's loop runs, as in a process's first analysis; a tape is written down by
    the collectors, so none may be written or replayed with them off)."""
    def run(model: torch.nn.Module, built: Built) -> None:
        import torchcost
        from torchcost.collect import tape

        with switched_off(labels), tape.off():
            torchcost.analyze(model, *built.args, kwargs=built.kwargs, mode=mode)
    return run


# analyze(mode="train") with the collectors' per-op work left out: OpCollector.on_aten (pricing, tallies) and
# MemoryTracker.on_op (storages, the timeline) do nothing, everything else runs as in an analysis (the fake twin and
# its shortcuts, the dispatch and function modes, the module hooks, the optimizer's warm state, the report). A
# timing figure only: what a training step's analysis costs in this design before any op is recorded.
_idle_step = _analysis_without(("on_aten", "on_op"), "train")


def run_removal(built: Built, mode: str, rounds: int) -> dict[str, tuple[float, float, float, float | None]]:
    """analyze(mode=``mode``) as it is and with each piece of :data:`SWITCHES` off (and on_aten and on_op both),
    interleaved: per variant the median of its per-round ratio to the whole analysis (p25-p75), and for a training
    step also the median of its per-round ratio to the eval analysis of the same model, timed in the same rounds
    (None in eval)."""
    entries = {"analyze()": _analysis_without((), mode),
               **{f"{label} off": _analysis_without((label,), mode) for label in SWITCHES
                  if mode == "train" or label != "optimizer step"},
               "on_aten and on_op off": _analysis_without(("on_aten", "on_op"), mode)}
    if mode == "train":
        # the floor of a training step's forward and backward on its twin: nothing recorded, no optimizer step
        entries["on_aten, on_op and optimizer step off"] = _analysis_without(("on_aten", "on_op", "optimizer step"),
                                                                             mode)
        entries["eval analysis"] = _analysis_without((), "eval")
    times = _interleaved_cpu(built, entries, rounds)
    rows: dict[str, tuple[float, float, float, float | None]] = {}
    for k, v in times.items():
        if k == "eval analysis":
            continue
        to_eval = _ratio_stats(v, times["eval analysis"])[0] if mode == "train" else None
        rows[k] = (*_ratio_stats(v, times["analyze()"]), to_eval)
    return rows


def removal_main(argv: list[str]) -> int:
    """``python -m benchmarks.speed removal``: what the collectors' per-op pieces and a training step's optimizer
    step cost inside an analysis, read by switching each off (run_removal); ``--model blocksN`` is the linearity
    rows' stack."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed removal")
    parser.add_argument("--model", default="blocks100")
    parser.add_argument("--mode", default="train", choices=("eval", "train"))
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = run_removal(ladder_model(args.model), args.mode, args.rounds)
    print(f"{args.model} {args.mode}, {args.rounds} rounds: CPU time as a ratio to the whole analysis (p25-p75)"
          + (" and to the eval analysis (median)" if args.mode == "train" else ""))
    print("| variant | ratio |" + (" to eval |" if args.mode == "train" else ""))
    print("|---|---|" + ("---|" if args.mode == "train" else ""))
    for name, (mid, lo, hi, to_eval) in rows.items():
        print(f"| {name} | {mid:.3f}x ({lo:.3f}-{hi:.3f}) |" + (f" {to_eval:.2f}x |" if to_eval is not None else ""))
    return 0


def _fake_step(built: Built) -> Callable[[torch.nn.Module, Built], None]:
    """The floor of a training step analysed on a fake twin: one steady step (forward, analyze's default loss,
    backward, a for-loop AdamW as torch's default on the CPU) of a fake twin (torchcost's make_twin) under its fake
    tensor mode, no collector watching, its cache on as torch has it (an analysis turns it off: run/step.py
    FAKE_MODE_CACHE, since the collectors' shortcuts answer the repeats). The twin and the optimizer's state are made
    once, outside the timed calls."""
    from torchcost.run.step import make_twin

    twin = make_twin(built.model, built.args, built.kwargs, "fake", torch.device("cpu"))
    if twin.fake_mode is not None:
        twin.fake_mode.cache_enabled = True
    twin.model.train()
    opt = torch.optim.AdamW([p for p in twin.model.parameters() if p.requires_grad], foreach=False)

    def step(model: torch.nn.Module, b: Built) -> None:
        with twin.context():
            _train_step(twin.model, twin.args, twin.kwargs, opt)

    step(built.model, built)  # the optimizer's state
    return step


def _meta_step(built: Built) -> Callable[[torch.nn.Module, Built], None]:
    """The floor of a training step run on meta tensors: one steady step (forward, analyze's default loss, backward,
    a for-loop AdamW) of a copy of the model on the meta device, no mode at all (torch's meta kernels, many of them
    Python decompositions and references). The copy and the optimizer's state are made once, outside the timed
    calls."""
    import copy

    twin = copy.deepcopy(built.model).to("meta").train()
    args = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in built.args)
    opt = torch.optim.AdamW(twin.parameters(), lr=1e-3, foreach=False)

    def step(model: torch.nn.Module, b: Built) -> None:
        _train_step(twin, args, b.kwargs, opt)

    step(built.model, built)  # the optimizer's state
    return step


def _real_step(built: Built) -> Callable[[torch.nn.Module, Built], None]:
    """The program a training-step analysis stands for, run for real: one steady step (forward, analyze's default
    loss, backward, AdamW, for-loop as torch's default on the CPU) of a copy of the model in train mode. The copy and
    the optimizer's state are made once, outside the timed calls."""
    import copy

    twin = copy.deepcopy(built.model).train()
    opt = torch.optim.AdamW(twin.parameters(), lr=1e-3, foreach=False)

    def step(model: torch.nn.Module, b: Built) -> None:
        _train_step(twin, b.args, b.kwargs, opt)

    step(built.model, built)  # the optimizer's state
    return step


TRAIN_MODELS = ("resnet18", "gpt2")


def run_train_rows(models: Sequence[str], rounds: int, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Per model: a plain forward, analyze(), analyze(mode="train") and a real training step (:func:`_real_step`),
    interleaved; CPU ms medians, one thread."""
    import torchcost

    torch.set_num_threads(1)
    rows = []
    for name in models:
        built = ladder_model(name)
        real_step = _real_step(built)
        entries: dict[str, Callable[[torch.nn.Module, Built], Any]] = {
            "forward": _forward,
            "analyze()": lambda m, b: torchcost.analyze(m, *b.args, kwargs=b.kwargs),
            "analyze(mode='train')": lambda m, b: torchcost.analyze(m, *b.args, kwargs=b.kwargs, mode="train"),
            "training step": real_step}
        times = _interleaved_cpu(built, entries, rounds)
        row: dict[str, Any] = {"model": name, "rounds": rounds}
        row.update({k: statistics.median(v) * 1e3 for k, v in times.items()})
        rows.append(row)
        log(f"  {name:16s} " + "  ".join(f"{k} {row[k]:.0f} ms" for k in entries))
        del built, real_step
    return rows


def ladder_section(label: str, rows: list[dict[str, Any]], lin: list[dict[str, Any]],
                   train: Sequence[dict[str, Any]] = ()) -> str:
    variants = [v for v in _ladder_variants() if v != "forward"]
    out = [f"### {label}", "",
           "CPU time of the thread as a ratio to a plain `torch.no_grad()` forward, one torch thread, rounds "
           "interleaved (order rotated), `gc.collect()` before each call; median of the per-round ratios "
           "(p25-p75). floor = an empty dispatch mode + global module pre/post hooks + an empty function mode; "
           "\"no direct leaves\" = analyze() with every module under the modes (collect/leaves.py off); \"every "
           "kernel\" = analyze() with no kernel skipped (collect/unwritten.py off).", "",
           "| model | forward (ms CPU) | rounds | " + " | ".join(variants) + " |",
           "|---|---|---|" + "---|" * len(variants)]
    for row in rows:
        cells = [f"{row[v][0]:.2f}x ({row[v][1]:.2f}-{row[v][2]:.2f})" for v in variants]
        out.append(f"| {row['model']} | {row['forward_ms']:.1f} | {row['rounds']} | " + " | ".join(cells) + " |")
    if lin:
        out += ["", "N x (Linear(64, 64) + ReLU), input 1x64, CPU ms (median) and microseconds per block; the aten "
                "ops the run dispatched, and the analysis's microseconds per op (a training step runs forward, "
                "loss, backward and a for-loop AdamW: about 12x the ops of the forward). idle step = the train "
                "step's analysis with the collectors' per-op work left out (pricing and memory bookkeeping do "
                "nothing; twin, shortcuts, modes, hooks and report as in an analysis): what this design costs "
                "before any op is recorded. fake step = the same step on a fake twin under torch's FakeTensorMode "
                "with no collector (a steady step: twin and optimizer state made once, untimed). meta step = the same "
                "step on a meta copy, no mode at all (torch's meta kernels alone). real step = the "
                "program itself: the same step run for real on a copy in train mode (copy and optimizer state made "
                "once, untimed). The last column sets the analysis's ratio (train step / analyze()) beside the idle "
                "step's (idle step / analyze()) and the program's (real step / forward):", "",
                "| N | rounds | forward | analyze() | train step | idle step | fake step | meta step | real step | "
                "ops: analyze() / train step | us per op: analyze() / train step | train / eval: analysis, idle, "
                "program |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in lin:
            n, ops = row["blocks"], row.get("ops", {})
            cells = [f"{row[k]:.1f} ms ({row[k] / n * 1e3:.0f} us)" if k in row else "-"
                     for k in ("forward", "analyze()", "train step", "idle step", "fake step", "meta step",
                               "real step")]
            counts = " / ".join(f"{ops[k]:,}" if k in ops else "-" for k in ("analyze()", "train step"))
            per_op = " / ".join(f"{row[k] / ops[k] * 1e3:.0f}" if k in ops else "-"
                                for k in ("analyze()", "train step"))
            ratios = (f"{row['train step'] / row['analyze()']:.1f}x, {row['idle step'] / row['analyze()']:.1f}x, "
                      f"{row['real step'] / row['forward']:.1f}x"
                      if "train step" in row and "idle step" in row and "real step" in row else "-")
            out.append(f"| {n} | {row['rounds']} | " + " | ".join(cells) + f" | {counts} | {per_op} | {ratios} |")
    if train:
        out += ["", "Real models, training step: CPU ms (median), interleaved; the training step is a real one on a "
                "copy in train mode (AdamW, analyze's default loss), for scale:", "",
                "| model | rounds | forward | analyze() | analyze(mode='train') | training step | train / eval "
                "analysis | train analysis / training step |", "|---|---|---|---|---|---|---|---|"]
        for row in train:
            a, t, step = row["analyze()"], row["analyze(mode='train')"], row["training step"]
            out.append(f"| {row['model']} | {row['rounds']} | {row['forward']:.0f} | {a:.0f} | {t:.0f} | {step:.0f} | "
                       f"{t / a:.2f}x | {t / step:.2f}x |")
    return "\n".join(out) + "\n"


def write_ladder(label: str, body: str, path: Path = ROOT / "docs" / "benchmarks.md") -> None:
    """Keep the ladder section's earlier runs (each a ### block) and put this one in place of a block with the same
    label, else after them."""
    from benchmarks.docs import replace_section

    text = path.read_text() if path.exists() else ""
    blocks: dict[str, str] = {}
    if LADDER_HEADING in text:
        section = text.split(LADDER_HEADING, 1)[1].split("\n## ", 1)[0]
        for chunk in section.split("\n### ")[1:]:
            title = chunk.split("\n", 1)[0].strip()
            blocks[title] = "### " + chunk.strip() + "\n"
    blocks[label] = body
    intro = ("Written by `python -m benchmarks.speed ladder --write LABEL` (issue 16: analyze() with memory on at "
             "most 1.2x a plain forward on resnet50, 1.8x on mobilenet_v2 and efficientnet_b0, 1.1x on vit_b_16 "
             "and gpt2, and below FlopCounterMode; cost linear in modules and ops). Noise on this shared 2-core "
             "machine is about +-0.1-0.3x on the small CNNs between runs.\n")
    replace_section(path, LADDER_HEADING, LADDER_HEADING + "\n\n" + intro + "\n" + "\n".join(blocks.values()))


def ladder_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed ladder",
                                     description="the overhead ladder and the N-layer linearity rows")
    parser.add_argument("--models", default=",".join(LADDER_MODELS))
    parser.add_argument("--rounds", type=int, default=11, help="rounds for the CNNs (vit_b_16/gpt2: 3/7 of it)")
    parser.add_argument("--sizes", default="100,1000,10000", help="N of the linearity rows ('' for none)")
    parser.add_argument("--train-sizes", default="100,1000", help="N with a training-step row")
    parser.add_argument("--lin-rounds", type=int, default=5)
    parser.add_argument("--train-models", default=",".join(TRAIN_MODELS),
                        help="models with a training-step row ('' for none)")
    parser.add_argument("--train-rounds", type=int, default=3)
    parser.add_argument("--write", metavar="LABEL", help="write the tables into docs/benchmarks.md under LABEL")
    parser.add_argument("--json", metavar="PATH", help="also write the raw rows as JSON")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = run_ladder(models, args.rounds)
    lin = run_linearity(sizes, args.lin_rounds, [int(s) for s in args.train_sizes.split(",") if s]) if sizes else []
    train_models = [m for m in args.train_models.split(",") if m]
    train = run_train_rows(train_models, args.train_rounds) if train_models else []
    label = args.write or "this run"
    body = ladder_section(label, rows, lin, train)
    print(body)
    if args.json:
        Path(args.json).write_text(json.dumps({"ladder": rows, "linearity": lin, "train": train}, indent=1))
    if args.write:
        write_ladder(args.write, body)
    return 0


def meta_main(argv: list[str]) -> int:
    """``python -m benchmarks.speed meta``: a packaged llama on the meta device, its forward, FlopCounterMode and
    analyze() timed as the ladder times them (:func:`_interleaved_cpu`): the issue-16 check that torchcost costs no
    more than FlopCounterMode there."""
    from benchmarks.models import build_meta_llama

    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed meta")
    parser.add_argument("--model", default="llama-3-70b")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    variants = _ladder_variants()
    times = _interleaved_cpu(build_meta_llama(args.model),
                             {name: variants[name] for name in ("forward", "FlopCounterMode", "analyze()")},
                             args.rounds)
    ratio = _ratio_stats(times["analyze()"], times["FlopCounterMode"])[0]
    print(f"{args.model} on meta, {args.rounds} rounds: " + ", ".join(
        f"{name} {statistics.median(t):.3f} s" for name, t in times.items())
        + f"; analyze() / FlopCounterMode {ratio:.2f}x (median of the per-round ratios)")
    return 0


# -- the same ladder on a GPU: wall time, the device synchronized around each call -----------------------------------


def _cuda_wall() -> float:
    """Wall seconds once the GPU has finished what was queued: a CUDA forward's time is its kernels' and its
    launches', not the thread's CPU time."""
    torch.cuda.synchronize()
    return time.perf_counter()


def _leaf_identity(built: Built) -> dict[str, Any]:
    """One analyze() with planned leaves (after a first that checked their plans) against one without: whether the
    reports are the same, the first difference if not, and how many calls ran past the modes."""
    from benchmarks.report_identity import _first_difference
    from benchmarks.switch_identity import _report
    from torchcost.collect import leaves

    counts = {"direct": 0, "checked": 0}
    end = leaves.DirectLeaves.end

    def counting_end(self: Any, call: Any, output: Any, raised: bool) -> None:
        counts["direct" if call.guards is not None else "checked"] += 1
        end(self, call, output, raised)

    leaves.DirectLeaves.end = counting_end  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            _report(built.model, built.args, built.kwargs)
            counts.update(direct=0, checked=0)  # (the first analysis checked the plans; count the second's calls)
            planned = _report(built.model, built.args, built.kwargs)
            direct = dict(counts)
            with leaves.off():
                plain = _report(built.model, built.args, built.kwargs)
    finally:
        leaves.DirectLeaves.end = end  # type: ignore[method-assign]
    diff = _first_difference(planned, plain)
    return {"identical": not diff, "first_difference": diff, **direct}


def cuda_main(argv: list[str]) -> int:
    """``python -m benchmarks.speed cuda``: the ladder's models on the GPU (wall time, synchronized), and the reports
    with and without direct leaves compared there. Without CUDA it says so and exits 0."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed cuda")
    parser.add_argument("--models", default=",".join(LADDER_MODELS))
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 0
    torch.set_num_threads(1)
    variants = _ladder_variants()
    rows = []
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; wall time, synchronized, one CPU thread")
    print("| model | forward (ms wall) | rounds | " + " | ".join(v for v in variants if v != "forward")
          + " | reports with / without direct leaves | calls past the modes |")
    print("|---|---|---|" + "---|" * (len(variants) - 1) + "---|---|")
    for name in [m for m in args.models.split(",") if m]:
        built = ladder_model(name)
        built = Built(built.model.cuda(), tuple(a.cuda() for a in built.args),
                      {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in built.kwargs.items()})
        identity = _leaf_identity(built)
        times = _interleaved_cpu(built, variants, args.rounds, clock=_cuda_wall)
        base = times["forward"]
        row: dict[str, Any] = {"model": name, "rounds": args.rounds, "forward_ms": statistics.median(base) * 1e3,
                               "leaves": identity}
        for v in variants:
            if v != "forward":
                row[v] = _ratio_stats(times[v], base)
        rows.append(row)
        same = "identical" if identity["identical"] else f"differ at {identity['first_difference']}"
        print(f"| {name} | {row['forward_ms']:.1f} | {args.rounds} | " + " | ".join(
            f"{row[v][0]:.2f}x ({row[v][1]:.2f}-{row[v][2]:.2f})" for v in variants if v != "forward")
            + f" | {same} | {identity['direct']} |", flush=True)
        del built
        torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


# the pieces of an eval analysis timed inside the run (``python -m benchmarks.speed parts``): label, module, attribute
_PARTS = (
    ("planned ops to the collectors (DirectLeaves.end)", "torchcost.collect.leaves", "DirectLeaves.end"),
    ("OpCollector.on_planned", "torchcost.collect.ops", "OpCollector.on_planned"),
    ("OpCollector.on_aten", "torchcost.collect.ops", "OpCollector.on_aten"),
    ("OpCollector._price", "torchcost.collect.ops", "OpCollector._price"),
    ("call_bytes", "torchcost.collect.ops", "call_bytes"),
    ("MemoryTracker.on_op", "torchcost.collect.memory", "MemoryTracker.on_op"),
    ("MemoryTracker._kernel_memory", "torchcost.collect.memory", "MemoryTracker._kernel_memory"),
    ("a planned call's key (_fingerprint)", "torchcost.collect.leaves", "_fingerprint"),
    ("DirectLeaves.begin", "torchcost.collect.leaves", "DirectLeaves.begin"),
    ("DirectLeaves._plan", "torchcost.collect.leaves", "DirectLeaves._plan"),
    ("ScopeTracker._record", "torchcost.collect.scope", "ScopeTracker._record"),
    ("MemoryTracker.exit", "torchcost.collect.memory", "MemoryTracker.exit"),
    ("model guard: _state", "torchcost.run.guard", "_state"),
    ("model guard: _restore", "torchcost.run.guard", "_restore"),
    ("MemoryTracker._register", "torchcost.collect.memory", "MemoryTracker._register"),
    ("MemoryTracker.add_baseline", "torchcost.collect.memory", "MemoryTracker.add_baseline"),
    ("MemoryTracker._died", "torchcost.collect.memory", "MemoryTracker._died"),
)


def run_parts(model: str, runs: int, log: Callable[[str], None] = print, warm: int = 3) -> list[dict[str, Any]]:
    """Each piece of ``_PARTS`` timed inside analyze() of a ladder model, one at a time (a ``perf_counter`` pair
    around it, under 1 us a call): per analysis, its calls and the medians of its microseconds a call and its
    milliseconds. Python inside a run costs more than the same function in a loop; this measures it where it runs.
    ``warm``: the analyses run before each piece's timed ones, untimed (the first check plans and measure probes;
    after one, a piece's calls are those of every later analysis)."""
    import importlib

    import torchcost

    built = ladder_model(model)
    rows = []
    for label, module_name, path in _PARTS:
        owner: Any = importlib.import_module(module_name)
        *outer, attr = path.split(".")
        for name in outer:
            owner = getattr(owner, name)
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        spent = [0, 0]

        def timed(*args: Any, _f: Any = original, _spent: list[int] = spent, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return _f(*args, **kwargs)
            finally:
                _spent[0] += time.perf_counter_ns() - start
                _spent[1] += 1

        setattr(owner, attr, timed)
        per_call, per_run = [], []
        try:
            for i in range(runs + warm):
                spent[:] = [0, 0]
                gc.collect()
                torchcost.analyze(built.model, *built.args, kwargs=built.kwargs)
                if i >= warm:  # (the first analyses check plans and measure probes)
                    per_run.append(spent[0] / 1e6)
                    per_call.append(spent[0] / 1e3 / max(spent[1], 1))
        finally:
            setattr(owner, attr, original)
        row = {"piece": label, "calls": spent[1], "us_per_call": statistics.median(per_call),
               "ms_per_analysis": statistics.median(per_run)}
        rows.append(row)
        log(f"| {label} | {row['calls']} | {row['us_per_call']:.1f} | {row['ms_per_analysis']:.2f} |")
    return rows


def parts_main(argv: list[str]) -> int:
    """``python -m benchmarks.speed parts``: where an eval analysis of a ladder model spends its time, measured inside
    the run, as docs/benchmarks.md's round 7 shows it for mobilenet_v2."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed parts")
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--runs", type=int, default=12)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{args.model}: each piece timed inside analyze(), one at a time; medians of {args.runs} analyses")
    print("| piece | calls | us a call | ms an analysis |")
    print("|---|---|---|---|")
    run_parts(args.model, args.runs)
    return 0


def run_attention(built: Built, rounds: int) -> dict[str, Any]:
    """FlopCounterMode beside analyze() on a model with ``nn.MultiheadAttention``, with the attention's fused fast
    path on (torch's default in an eval ``no_grad`` forward) and off. With it on, FlopCounterMode runs the fused
    ``aten::_native_multi_head_attention``, which it has no formula for: the layer's projections and attention
    count 0. torchcost turns the fast path off for its run (docs/conventions.md) and counts them. CPU time as a
    ratio to the plain forward (fast path on), interleaved, and the FLOPs each one counts."""
    from torch.utils.flop_counter import FlopCounterMode

    import torchcost
    from torchcost.run.guard import quiet_fastpaths

    counted: dict[str, int] = {}

    def counter(on: bool) -> Callable[[torch.nn.Module, Built], Any]:
        def run(model: torch.nn.Module, b: Built) -> Any:
            with contextlib.nullcontext() if on else quiet_fastpaths(), FlopCounterMode(display=False) as flops:
                out = _forward(model, b)
            counted[f"FlopCounterMode, fast path {'on' if on else 'off'}"] = flops.get_total_flops()
            return out
        return run

    def plain_off(model: torch.nn.Module, b: Built) -> Any:
        with quiet_fastpaths():
            return _forward(model, b)

    def analyze(model: torch.nn.Module, b: Built) -> Any:
        report = torchcost.analyze(model, *b.args, kwargs=b.kwargs)
        counted["analyze()"] = report.flops
        return report

    entries = {"forward": _forward, "forward, fast path off": plain_off, "FlopCounterMode, fast path on": counter(True),
               "FlopCounterMode, fast path off": counter(False), "analyze()": analyze}
    times = _interleaved_cpu(built, entries, rounds)
    base = times["forward"]
    return {"rounds": rounds, "forward_ms": statistics.median(base) * 1e3,
            "ratio": {k: _ratio_stats(v, base) for k, v in times.items() if k != "forward"}, "flops": counted}


def attention_main(argv: list[str]) -> int:
    """``python -m benchmarks.speed attention``: vit_b_16's ladder beside FlopCounterMode with the attention fast path
    on and off (run_attention)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed attention")
    parser.add_argument("--model", default="vit_b_16")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    row = run_attention(ladder_model(args.model), args.rounds)
    print(f"{args.model}: forward {row['forward_ms']:.1f} ms CPU (fast path on), {row['rounds']} rounds interleaved")
    print("| run | CPU time / forward (p25-p75) | FLOPs counted |")
    print("|---|---|---|")
    for name, (mid, lo, hi) in row["ratio"].items():
        flops = row["flops"].get(name)
        print(f"| {name} | {mid:.2f}x ({lo:.2f}-{hi:.2f}) | {f'{flops:,}' if flops is not None else '-'} |")
    return 0


# the processes ``python -m benchmarks.speed startup`` times: label -> the Python arguments
_STARTUP = (
    ("import torch", ["-c", "import torch"]),
    ("torchcost --version", ["-m", "torchcost", "--version"]),
    ("torchcost standard_conv", ["-m", "torchcost", "standard_conv"]),
)


_IMPORTS = """
import sys, time
import torch
sys.pycache_prefix, sys.dont_write_bytecode = sys.argv[1] or None, sys.argv[2] == "1"
start = time.perf_counter()
import torchcost
middle = time.perf_counter()
import torchcost.cli
print(middle - start, time.perf_counter() - middle)
"""


def _import_seconds(prefix: str, compiled: bool) -> tuple[float, float]:
    """torchcost's own imports in a fresh process, after ``import torch``: the package, then the CLI module
    (seconds). ``compiled``: bytecode read from (and written to) ``prefix``; else every module imported after torch
    compiled from source (``prefix`` an empty folder, nothing written): torchcost's, as under
    PYTHONDONTWRITEBYTECODE=1 in a fresh checkout, and also those it imports (rich, for the CLI)."""
    done = subprocess.run([sys.executable, "-c", _IMPORTS, prefix, "0" if compiled else "1"],
                          capture_output=True, text=True, check=True)
    package, cli = done.stdout.split()
    return float(package), float(cli)


def run_startup(rounds: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The CLI's own start-up in fresh processes, rounds interleaved (order rotated): the wall time of each of
    ``_STARTUP`` with the bytecode cache on (what an installed package has: compiled once, untimed, into a
    temporary PYTHONPYCACHEPREFIX, so the checkout is left alone), and torchcost's imports after ``import torch``
    with that cache and without bytecode (each module compiled from source at each start)."""
    import tempfile

    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as empty:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        for _, args in _STARTUP:  # (warm-up: the page cache, and the bytecode compiled once)
            subprocess.run([sys.executable, *args], env=env, capture_output=True, check=True)
        _import_seconds(cache, True)
        walls: dict[str, list[float]] = {name: [] for name, _ in _STARTUP}
        imports: dict[str, list[tuple[float, float]]] = {"bytecode cached": [], "no bytecode": []}
        for i in range(rounds):
            for name, args in _STARTUP[i % len(_STARTUP):] + _STARTUP[:i % len(_STARTUP)]:
                start = time.perf_counter()
                subprocess.run([sys.executable, *args], env=env, capture_output=True, check=True)
                walls[name].append(time.perf_counter() - start)
            imports["bytecode cached"].append(_import_seconds(cache, True))
            imports["no bytecode"].append(_import_seconds(empty, False))
    torch_wall = statistics.median(walls["import torch"])
    row: dict[str, Any] = {"rounds": rounds, "wall_s": {name: statistics.median(v) for name, v in walls.items()},
                           "imports_s": {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v))
                                         for k, v in imports.items()}}
    log(f"| wall, bytecode cached | {rounds} | {torch_wall:.2f} | " + " | ".join(
        f"{row['wall_s'][n]:.2f} (+{row['wall_s'][n] - torch_wall:.2f})" for n, _ in _STARTUP[1:]) + " |")
    for k, (package, cli) in row["imports_s"].items():
        log(f"| imports after torch, {k} | {rounds} | - | {package:.3f} + {cli:.3f} = {package + cli:.3f} | - |")
    return row


def startup_main(argv: list[str]) -> int:
    """``python -m benchmarks.speed startup``: the CLI's own start-up (everything but ``import torch`` and the
    model), in fresh processes."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed startup")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    print("seconds, medians of fresh processes: a process's wall time (beyond `import torch`), or torchcost's own"
          " imports after torch (the package + torchcost.cli)")
    print("| what | rounds | import torch | torchcost --version | torchcost standard_conv |")
    print("|---|---|---|---|---|")
    row = run_startup(args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1))
    return 0


@contextlib.contextmanager
def eval_on_twin(method: str) -> Any:
    """While inside, an eval analysis that would run the model itself runs on a twin (``method``: "fake" or
    "meta") instead: run/plan.py's choice replaced (put back on the way out). For the twin-eval benchmark only."""
    from torchcost.run import execute

    chosen = execute.choose_method

    def choose(device: torch.device, options: Any, model: torch.nn.Module) -> Any:
        picked = chosen(device, options, model)
        return method if picked == "real" and options.mode == "eval" else picked

    execute.choose_method = choose
    try:
        yield
    finally:
        execute.choose_method = chosen


def run_twin_eval(built: Built, rounds: int) -> dict[str, Any]:
    """An eval analysis as it is (the model itself, direct leaves) beside the same analysis on a fake twin and on a
    meta twin (eval_on_twin), interleaved with a plain forward: each one's CPU time as a ratio to the forward, and
    where the twins' reports differ from the real run's (memory.method aside: it names the run)."""
    import torchcost
    from benchmarks.report_identity import differences

    def on(method: str | None) -> Callable[[torch.nn.Module, Built], Any]:
        def run(model: torch.nn.Module, b: Built) -> Any:
            with eval_on_twin(method) if method else contextlib.nullcontext():
                return torchcost.analyze(model, *b.args, kwargs=b.kwargs)
        return run

    entries = {"forward": _forward, "analyze()": on(None), "fake twin": on("fake"), "meta twin": on("meta")}
    differ: dict[str, list[str] | str] = {}
    with quiet():
        real = entries["analyze()"](built.model, built).to_dict()
        for name in ("fake twin", "meta twin"):
            try:
                twin = entries[name](built.model, built).to_dict()
            except Exception as exc:  # (a model that needs tensor values cannot run on meta tensors)
                differ[name] = f"fails: {str(exc).splitlines()[0][:100]}"
                del entries[name]
                continue
            differ[name] = [d for d in differences(real, twin) if not d.startswith(".memory.method:")]
    times = _interleaved_cpu(built, entries, rounds)
    return {"rounds": rounds, "forward_ms": statistics.median(times["forward"]) * 1e3,
            "ratio": {k: _ratio_stats(times[k], times["forward"]) if k in times else None
                      for k in ("analyze()", "fake twin", "meta twin")},
            "differences": differ}


def twin_eval_main(argv: list[str]) -> int:
    """``python -m benchmarks.speed twin-eval``: what an eval analysis would cost on a twin instead of the model
    itself, and what its report would lose (run_twin_eval)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed twin-eval")
    parser.add_argument("--models", default=",".join(LADDER_MODELS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("CPU time as a ratio to a plain forward (median, p25-p75), interleaved; the twins' reports against the"
          " real run's")
    print("| model | forward (ms CPU) | rounds | analyze() | on a fake twin | on a meta twin | fake twin's report | "
          "meta twin's report |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        row = {"model": name, **run_twin_eval(ladder_model(name), args.rounds)}
        rows.append(row)
        cells = [f"{r[0]:.2f}x ({r[1]:.2f}-{r[2]:.2f})" if r else "-" for r in row["ratio"].values()]
        said = [d if isinstance(d, str) else "identical" if not d else f"{len(d)} differences, first {d[0]}"
                for d in row["differences"].values()]
        print(f"| {name} | {row['forward_ms']:.1f} | {args.rounds} | " + " | ".join(cells + said) + " |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _deepcopy_before(model: torch.nn.Module, memo: dict[int, Any]) -> torch.nn.Module:
    """How a twin's tree was copied before round 14: each empty dict, OrderedDict and set attribute of a module
    copied into the memo, then ``copy.deepcopy``."""
    import copy
    from collections import OrderedDict

    for module in model.modules():
        for value in vars(module).values():
            kind = type(value)
            if id(value) not in memo and kind in (dict, OrderedDict, set) and not value \
                    and not getattr(value, "__dict__", None):
                memo[id(value)] = kind()
    return copy.deepcopy(model, memo)


def run_tree_copy(models: Sequence[str], rounds: int) -> list[dict[str, Any]]:
    """A twin's module tree copied as before (:func:`_deepcopy_before`) and by run/step.py's ``_tree_copy``,
    interleaved, the parameters and buffers already in the memo as make_twin puts them: wall milliseconds
    (medians) and the median of the per-round ratios."""
    from torchcost.run.step import _tree_copy

    rows = []
    for name in models:
        model = ladder_model(name).model
        tensors = [t for m in model.modules() for t in (*m._parameters.values(), *m._buffers.values())
                   if t is not None]
        ways = {"before": _deepcopy_before, "_tree_copy": _tree_copy}
        times: dict[str, list[float]] = {k: [] for k in ways}
        for i in range(rounds + 1):
            for way in (list(ways) if i % 2 else list(ways)[::-1]):
                memo = {id(t): t for t in tensors}
                gc.collect()
                start = time.perf_counter()
                ways[way](model, memo)
                if i:  # (round 0 warms up)
                    times[way].append(time.perf_counter() - start)
        rows.append({"model": name, "modules": len(list(model.modules())),
                     **{k: statistics.median(v) * 1e3 for k, v in times.items()},
                     "ratio": _ratio_stats(times["_tree_copy"], times["before"])})
    return rows


def tree_copy_main(argv: list[str]) -> int:
    """``python -m benchmarks.speed tree-copy``: copying a twin's module tree, before and now (run_tree_copy)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed tree-copy")
    parser.add_argument("--models", default="resnet18,resnet50,mobilenet_v2,gpt2,blocks100")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"wall ms (median of {args.rounds} interleaved rounds); ratio = _tree_copy / before (p25-p75)")
    print("| model | modules | before: empties in the memo + copy.deepcopy | _tree_copy | ratio |")
    print("|---|---|---|---|---|")
    for row in run_tree_copy([m for m in args.models.split(",") if m], args.rounds):
        mid, lo, hi = row["ratio"]
        print(f"| {row['model']} | {row['modules']} | {row['before']:.2f} | {row['_tree_copy']:.2f} | "
              f"{mid:.2f} ({lo:.2f}-{hi:.2f}) |", flush=True)
    return 0


def run_growth(sizes: Sequence[int], rounds: int, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """The N-block stack's ``analyze()`` and ``analyze(mode="train")`` at every size, CPU ms of the thread, medians:
    :func:`_interleaved_cpu` over every (size, analysis) pair, so each round runs every size, in an order rotated from
    round to round, and a machine's drift over minutes falls on every size alike (a size timed minutes after another,
    as :func:`run_linearity` times them, reads that drift as growth: docs/benchmarks.md, round 26)."""
    import torchcost

    torch.set_num_threads(1)
    analyses: dict[str, Callable[[torch.nn.Module, Built], Any]] = {
        "analyze()": lambda m, b: torchcost.analyze(m, *b.args),
        "train step": lambda m, b: torchcost.analyze(m, *b.args, mode="train")}
    built = {n: ladder_model(f"blocks{n}") for n in sizes}
    entries: dict[str, Callable[[torch.nn.Module, Built], Any]] = {
        f"{n} {name}": lambda _m, _b, run=run, own=built[n]: run(own.model, own)
        for n in sizes for name, run in analyses.items()}
    times = _interleaved_cpu(built[sizes[0]], entries, rounds)
    rows = [{"blocks": n, "rounds": rounds, **{name: statistics.median(times[f"{n} {name}"]) * 1e3
                                               for name in analyses}} for n in sizes]
    for row in rows:
        log(f"  N={row['blocks']:6d}  " + "  ".join(f"{name} {row[name]:.1f} ms" for name in analyses))
    return rows


def growth_main(argv: list[str]) -> int:
    """``python -m benchmarks.speed growth``: the N-block Linear(64, 64)+ReLU stack's eval and training-step analyses
    alone (:func:`run_growth`): CPU microseconds a block, every size in every round, median. From the second size
    on, also the cost of the blocks added since the size before, (T(N) - T(N')) / (N - N'): a block's own cost, with
    what an analysis costs whatever its size (setup, the report's frame) taken out."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed growth")
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each timing every size")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x]
    rows = run_growth(sizes, args.rounds, log=lambda text: print(text, file=sys.stderr, flush=True))
    print("| N | rounds | analyze(): us a block | analyze(mode='train'): us a block | train / eval | "
          "blocks added since the size before: eval, train us a block (train / eval) |")
    print("|---|---|---|---|---|---|")
    before: dict[str, Any] | None = None
    for row in rows:
        n, e, t = row["blocks"], row["analyze()"], row["train step"]
        added = "-"
        if before is not None and n > before["blocks"]:
            d = n - before["blocks"]
            de, dt = (e - before["analyze()"]) / d * 1e3, (t - before["train step"]) / d * 1e3
            added = f"{de:.0f}, {dt:.0f}" + (f" ({dt / de:.1f}x)" if de > 0 else "")
        print(f"| {n:,} | {row['rounds']} | {e / n * 1e3:.0f} | {t / n * 1e3:.0f} | {t / e:.1f}x | {added} |")
        before = row
    return 0


# the parts of a training step's analysis timed by :func:`run_phases`: label -> (module, function). Each is called
# once an analysis (the forward with the loss, autograd's backward, the optimizer step as run/execute.py runs it, the
# fake twin, the optimizer's warm-up state, the step's accounting, the report)
PHASES: dict[str, tuple[str, str]] = {
    "forward and loss": ("torchcost.run.execute", "_forward"),
    "backward": ("torch.autograd", "backward"),
    "optimizer step": ("torchcost.run.execute", "_optimizer_step"),
    "twin": ("torchcost.run.execute", "make_twin"),
    "optimizer warm-up": ("torchcost.run.execute", "warm_optimizer"),
    "step accounting": ("torchcost.run.execute", "_account_step"),
    "report": ("torchcost.api", "build_report")}


def phase_timer(label: str, add: Callable[[str, float], None]) -> Callable[[Any], Any]:
    """What :func:`_replaced` puts in place of a :data:`PHASES` function: the function, each call's thread CPU
    seconds handed to ``add(label, seconds)``."""
    def make(original: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                add(label, time.thread_time() - start)
        return timed
    return make


@contextlib.contextmanager
def _phase_timers(times: dict[str, list[float]], on: list[bool]) -> Any:
    """While inside, each call of a :data:`PHASES` function adds its thread CPU seconds to ``times[label][-1]``
    while ``on[0]``."""
    def add(label: str, seconds: float) -> None:
        if on[0]:
            times[label][-1] += seconds

    with _replaced([(module, None, name, phase_timer(label, add)) for label, (module, name) in PHASES.items()]):
        yield


def run_phases(built: Built, rounds: int, twin: str = "fake") -> dict[str, list[float]]:
    """Thread CPU seconds of each round's training-step analysis of ``built``, of its parts (:data:`PHASES`; what
    is left is "rest": the model guard, the recording's set-up, the baselines) and of the eval analysis run beside
    it, after three untimed steps (so the optimizer's step is replayed, collect/tape.py, and the eval analysis skips
    the kernels it may, collect/unwritten.py). ``twin``: what the training step runs on, "fake" (what an analysis
    of a CPU model chooses, run/plan.py), or for comparison "meta" (plain meta tensors: no tensor subclass, but no
    CPU kernels' choices either) or "copy" (a real copy: real kernels), forced for the step alone."""
    import torchcost

    torch.set_num_threads(1)
    with _twin_forced(twin):
        times: dict[str, list[float]] = {label: [] for label in (*PHASES, "rest", "training step", "eval")}
        for _ in range(3):
            torchcost.analyze(built.model, *built.args, kwargs=built.kwargs, mode="train")
            torchcost.analyze(built.model, *built.args, kwargs=built.kwargs)
        on = [False]
        with _phase_timers(times, on):
            for _ in range(rounds):
                for label in PHASES:
                    times[label].append(0.0)
                gc.collect()
                on[0] = True
                start = time.thread_time()
                torchcost.analyze(built.model, *built.args, kwargs=built.kwargs, mode="train")
                times["training step"].append(time.thread_time() - start)
                on[0] = False
                times["rest"].append(times["training step"][-1] - sum(times[label][-1] for label in PHASES))
                gc.collect()
                start = time.thread_time()
                torchcost.analyze(built.model, *built.args, kwargs=built.kwargs)
                times["eval"].append(time.thread_time() - start)
        return times


@contextlib.contextmanager
def _twin_forced(twin: str) -> Any:
    """While inside, a training step runs on a twin of kind ``twin`` (run/plan.py's choice replaced; "fake" leaves
    it as it is); put back on the way out."""
    if twin == "fake":
        yield
        return

    def forced(original: Any) -> Any:
        def choose(device: torch.device, options: Any, model: torch.nn.Module) -> Any:
            return twin if options.mode == "train" else original(device, options, model)
        return choose

    with _replaced([("torchcost.run.execute", None, "choose_method", forced)]):
        yield


def phases_main(argv: list[str]) -> int:
    """``python -m benchmarks.speed phases``: where a training step's analysis spends its time, part by part
    (:func:`run_phases`), beside the eval analysis: CPU ms, medians, and each part's ratio to the eval analysis."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed phases")
    parser.add_argument("--models", default="blocks100,resnet18")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--twin", default="fake", choices=("fake", "meta", "copy"),
                        help="what the training step runs on (default: fake, an analysis's own choice for a CPU "
                             "model; meta or copy only for comparison: their reports may differ)")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    results = {}
    for name in models:
        results[name] = run_phases(ladder_model(name), args.rounds, args.twin)
    labels = [*PHASES, "rest", "training step", "eval"]
    print(f"CPU ms of one analysis (median of {args.rounds} rounds; in parentheses: / the eval analysis)"
          + (f"; the training step on a {args.twin} twin" if args.twin != "fake" else ""))
    print()
    print("| part | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    for label in labels:
        cells = []
        for name in models:
            median = statistics.median(results[name][label]) * 1e3
            cells.append(f"{median:.1f} ({median / (statistics.median(results[name]['eval']) * 1e3):.2f}x)")
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


# the parts of one op in torchcost's dispatch mode timed by :func:`run_op_costs`: label -> (module, class, method)
OP_PARTS: dict[str, tuple[str, str, str]] = {
    "whole": ("torchcost.collect.ops", "DispatchCollector", "__torch_dispatch__"),
    "answer": ("torchcost.collect.fakeops", "FakeShortcuts", "answer"),
    "pricing": ("torchcost.collect.ops", "OpCollector", "on_aten"),
    "memory": ("torchcost.collect.memory", "MemoryTracker", "on_op"),
    "memory (view)": ("torchcost.collect.memory", "MemoryTracker", "on_view")}


def run_op_costs(built: Built, rounds: int) -> dict[tuple[str, str], dict[str, list[float]]]:
    """Per (phase, op) of a training step's analysis of ``built`` on its fake twin: the calls a round and the
    seconds spent in each of :data:`OP_PARTS` (the dispatch mode's whole handling of the op; the twin's answer; the
    op collector; the memory tracker), summed over ``rounds`` analyses after three untimed ones. The phase is
    "backward" inside ``torch.autograd.backward``, else "other" (forward, loss, optimizer)."""
    import importlib

    import torchcost

    torch.set_num_threads(1)
    for _ in range(3):
        torchcost.analyze(built.model, *built.args, kwargs=built.kwargs, mode="train")
    phase = ["other"]
    spent: dict[tuple[str, str], dict[str, list[float]]] = {}

    def timer(label: str) -> Callable[[Any], Any]:
        def make(original: Any) -> Any:
            def timed(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return original(self, func, *args, **kwargs)
                finally:
                    parts = spent.setdefault((phase[0], str(func)), {})
                    entry = parts.setdefault(label, [0, 0.0])
                    entry[0] += 1
                    entry[1] += time.perf_counter() - start
            return timed
        return make

    def backward(original: Any) -> Any:
        def marked(*args: Any, **kwargs: Any) -> Any:
            phase[0] = "backward"
            try:
                return original(*args, **kwargs)
            finally:
                phase[0] = "other"
        return marked

    targets: list[tuple[str, str | None, str, Callable[[Any], Any]]] = [
        (module, cls, name, timer(label)) for label, (module, cls, name) in OP_PARTS.items()
        if hasattr(getattr(importlib.import_module(module), cls), name)]
    with _replaced([*targets, ("torch.autograd", None, "backward", backward)]):
        for _ in range(rounds):
            gc.collect()
            torchcost.analyze(built.model, *built.args, kwargs=built.kwargs, mode="train")
    return spent


def ops_main(argv: list[str]) -> int:
    """``python -m benchmarks.speed ops``: where a training step's analysis spends its time op by op
    (:func:`run_op_costs`): per phase and op the calls a step and the microseconds a call in each part."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed ops")
    parser.add_argument("--model", default="blocks100")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    spent = run_op_costs(ladder_model(args.model), args.rounds)
    # (ops handed to the collectors outside the dispatch mode, as the optimizer's replayed tapes, have no "whole")
    rows = sorted(((k, v) for k, v in spent.items() if "whole" in v), key=lambda item: -item[1]["whole"][1])
    rows = rows[:args.top]
    labels = list(OP_PARTS)
    print(f"{args.model}: a training step's ops in torchcost's dispatch mode, per step ({args.rounds} steps); "
          "us a call in each part")
    print()
    print("| phase | op | calls | ms a step | " + " | ".join(labels) + " |")
    print("|---|---|---|---|" + "---|" * len(labels))
    for (where, op), parts in rows:
        calls, whole = parts["whole"]
        cells = [f"{parts[label][1] / parts[label][0] * 1e6:.1f}" if label in parts else "" for label in labels]
        print(f"| {where} | {op} | {calls // args.rounds} | {whole / args.rounds * 1e3:.2f} | " + " | ".join(cells)
              + " |")
    return 0


# the tensors a backward of the N-block stack runs on, for :func:`run_backward_floors`: label -> (device, whether
# under an empty dispatch mode, whether built under torch's own FakeTensorMode)
BACKWARD_FLOORS: dict[str, tuple[str, bool, bool]] = {
    "cpu tensors": ("cpu", False, False),
    "cpu tensors, empty dispatch mode": ("cpu", True, False),
    "meta tensors": ("meta", False, False),
    "meta tensors, empty dispatch mode": ("meta", True, False),
    "torch's fake tensors": ("cpu", False, True)}


def run_backward_floors(blocks: int, rounds: int) -> dict[str, float]:
    """Median thread CPU ms of ``loss.backward()`` alone of the ``blocks``-block Linear(64, 64)+ReLU stack (a 1 x 64
    input, ``out.sum()``), on each kind of tensors of :data:`BACKWARD_FLOORS`, with no torchcost: what autograd's
    engine and the kernels cost before any tool does anything. A meta kernel is mostly Python (torch's
    ``_meta_registrations``), so a backward on meta tensors costs far more than on real ones of these sizes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch.set_num_threads(1)
    medians: dict[str, float] = {}
    for label, (device, empty, fake) in BACKWARD_FLOORS.items():
        times = []
        for _ in range(rounds):
            mode = FakeTensorMode() if fake else contextlib.nullcontext()
            with mode:
                model = _Blocks(blocks) if fake else _Blocks(blocks).to(device)
                loss = model(torch.randn(1, 64, device=device)).sum()
            gc.collect()
            start = time.thread_time()
            with _EmptyDispatch() if empty else contextlib.nullcontext():
                loss.backward()
            times.append(time.thread_time() - start)
        medians[label] = statistics.median(times) * 1e3
    return medians


def backward_floors_main(argv: list[str]) -> int:
    """``python -m benchmarks.speed backward-floors``: the stack's backward on each kind of tensors, no torchcost."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed backward-floors")
    parser.add_argument("--blocks", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    medians = run_backward_floors(args.blocks, args.rounds)
    print(f"CPU ms of loss.backward() of the {args.blocks}-block stack (median of {args.rounds}; no torchcost)")
    print()
    print("| tensors | ms | / cpu tensors |")
    print("|---|---|---|")
    for label, ms in medians.items():
        print(f"| {label} | {ms:.1f} | {ms / medians['cpu tensors']:.1f}x |")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["backward-floors"]:
        return backward_floors_main(argv[1:])
    if argv[:1] == ["ops"]:
        return ops_main(argv[1:])
    if argv[:1] == ["phases"]:
        return phases_main(argv[1:])
    if argv[:1] == ["ladder"]:
        return ladder_main(argv[1:])
    if argv[:1] == ["meta"]:
        return meta_main(argv[1:])
    if argv[:1] == ["cuda"]:
        return cuda_main(argv[1:])
    if argv[:1] == ["parts"]:
        return parts_main(argv[1:])
    if argv[:1] == ["attention"]:
        return attention_main(argv[1:])
    if argv[:1] == ["removal"]:
        return removal_main(argv[1:])
    if argv[:1] == ["startup"]:
        return startup_main(argv[1:])
    if argv[:1] == ["twin-eval"]:
        return twin_eval_main(argv[1:])
    if argv[:1] == ["tree-copy"]:
        return tree_copy_main(argv[1:])
    if argv[:1] == ["growth"]:
        return growth_main(argv[1:])
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
