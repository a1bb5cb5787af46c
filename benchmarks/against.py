"""Two versions of torchcost in one process, analyses alternating: the time of a change, measured side by side.

    python -m benchmarks.against <old tree>/src --models blocks100,resnet18,mobilenet_v2,gpt2 --rounds 21

``<old tree>`` is a checkout of another commit (``git worktree add /tmp/old <commit>``). Its package is copied to a
temporary folder as ``torchcost_old`` (every reference to the package's modules renamed, so the two share no
module, cache or table) and imported beside this checkout's ``torchcost``. Each model is analysed three times by
each version (their process-level caches warm, as a notebook's or a search's later analyses are), then ``--rounds``
times by each, in alternating order, one thread; the table gives the medians of the CPU times, their ratio, and the
median and range of the rounds' own ratios (each round's two analyses ran next to each other, so a slow spell of
this shared machine slows both). ``--answers`` instead times a fake twin's answer to a view and to an op making a
new tensor, per call in a tight loop. ``--phases`` also times each part of a training step in both versions, as
``python -m benchmarks.speed phases`` does (the forward, autograd's backward, the optimizer step, the twin, the
optimizer's warm-up, the step's accounting, the report), and prints a table per model. Separate processes per
version, as ``benchmarks.cli_wall`` runs them, see the machine's drift between processes as well.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

__all__ = ["load_old", "main", "run_against"]

OLD_NAME = "torchcost_old"


def _renamed(source: str, modules: frozenset[str]) -> str:
    """``source`` with each reference to one of the package's own modules (``modules``: the names of its files and
    folders) renamed, in code or in a string (``"torchcost.formulas"``), and its imports of the package itself; other
    dotted names that start with the word (the ``"torchcost.module"`` key on autograd nodes) kept."""
    out = re.sub(r"\btorchcost\.([a-z_0-9]+)",
                 lambda m: f"{OLD_NAME}.{m.group(1)}" if m.group(1) in modules else m.group(0), source)
    out = re.sub(r"^(\s*)from torchcost import", rf"\1from {OLD_NAME} import", out, flags=re.MULTILINE)
    out = out.replace('resources.files("torchcost")', f'resources.files("{OLD_NAME}")')  # (its packaged configs)
    return re.sub(r"^(\s*)import torchcost$", rf"\1import {OLD_NAME} as torchcost", out, flags=re.MULTILINE)


def load_old(src: Path, into: Path) -> ModuleType:
    """Copy ``src/torchcost`` to ``into/torchcost_old`` with its module references renamed, and import it."""
    target = into / OLD_NAME
    shutil.copytree(src / "torchcost", target)
    modules = frozenset(p.stem for p in target.iterdir()
                        if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__"))
    for path in target.rglob("*.py"):
        path.write_text(_renamed(path.read_text(), modules))
    sys.path.insert(0, str(into))
    return importlib.import_module(OLD_NAME)


def run_against(old: Any, new: Any, built: Any, rounds: int, mode: str) -> dict[str, list[float]]:
    """CPU seconds of ``rounds`` analyses of ``built`` by each version, timed as the ladder times its variants
    (benchmarks/speed.py's ``_interleaved_cpu``: the order rotated each round, gc before each call), after two more
    untimed analyses each (a process's third training step replays its optimizer from tapes)."""
    from benchmarks.speed import _interleaved_cpu

    torch.set_num_threads(1)
    entries = {name: (lambda model, b, tool=tool: tool.analyze(model, *b.args, kwargs=b.kwargs, mode=mode))
               for name, tool in (("old", old), ("new", new))}
    for entry in entries.values():
        for _ in range(2):
            entry(built.model, built)
    return _interleaved_cpu(built, entries, rounds)


def run_against_phases(old: Any, new: Any, built: Any, rounds: int, mode: str
                       ) -> tuple[dict[str, list[float]], dict[str, dict[str, list[float]]]]:
    """:func:`run_against`, with each version's training step also timed part by part as ``python -m
    benchmarks.speed phases`` times it (benchmarks/speed.py's PHASES: each part's thread CPU seconds in each
    analysis, the other version's copy of the part timed alike): the analyses' times, and per version per part
    its time in each of the ``rounds`` timed analyses."""
    from benchmarks.speed import PHASES, _replaced, phase_timer

    parts: dict[str, dict[str, list[float]]] = {version: {label: [] for label in PHASES} for version in ("old", "new")}
    running: list[str | None] = [None]

    def add(label: str, seconds: float) -> None:
        if running[0] is not None:
            parts[running[0]][label][-1] += seconds

    targets = []
    for label, (module, name) in PHASES.items():
        targets.append((module, None, name, phase_timer(label, add)))
        if module.startswith("torchcost."):  # (the other version's own copy of the part)
            targets.append((OLD_NAME + module[len("torchcost"):], None, name, phase_timer(label, add)))

    def counted(tool: Any, version: str) -> Any:
        def analyze(*args: Any, **kwargs: Any) -> Any:
            for times in parts[version].values():
                times.append(0.0)
            running[0] = version
            try:
                return tool.analyze(*args, **kwargs)
            finally:
                running[0] = None
        return types.SimpleNamespace(analyze=analyze)

    with _replaced(targets):
        times = run_against(counted(old, "old"), counted(new, "new"), built, rounds, mode)
    # (the untimed analyses first: two in run_against, one in the ladder's loop)
    return times, {version: {label: values[-rounds:] for label, values in by.items()} for version, by in parts.items()}


# the calls :func:`run_answers` times: label -> (op, the shapes of its fake tensor arguments)
ANSWERED: dict[str, tuple[Any, tuple[tuple[int, ...], ...]]] = {
    "t (a view)": (torch.ops.aten.t.default, ((64, 64),)),
    "detach (a view)": (torch.ops.aten.detach.default, ((64, 64),)),
    "mm (a new tensor)": (torch.ops.aten.mm.default, ((64, 64), (64, 64))),
}


def run_answers(old: Any, new: Any, rounds: int, calls: int = 2000) -> dict[str, dict[str, list[float]]]:
    """Seconds a call of a fake twin's answer (collect/fakeops.py's ``FakeShortcuts.answer``) in each version,
    per call of :data:`ANSWERED`: ``calls`` answers in a tight loop a round, the versions alternating, after the fake
    mode answered the call once (a view is answered from the start; a new tensor's output metadata is learned)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch.set_num_threads(1)
    mode = FakeTensorMode()
    modules = {"old": importlib.import_module(f"{OLD_NAME}.collect.fakeops"),
               "new": importlib.import_module(f"{new.__name__}.collect.fakeops")}
    times: dict[str, dict[str, list[float]]] = {label: {"old": [], "new": []} for label in ANSWERED}

    def per_call(fakeops: Any, func: Any, args: tuple[Any, ...]) -> float:
        with mode:
            short = fakeops.FakeShortcuts()  # (made with the fake mode below it, as in a run)
        if short.answer(func, args, {}) is fakeops.MISS:
            with mode:
                out = func(*args)
            short.learn(out)
        if short.answer(func, args, {}) is fakeops.MISS:
            raise AssertionError(f"{func} is not answered")
        start = time.perf_counter()
        for _ in range(calls):
            short.answer(func, args, {})
        return (time.perf_counter() - start) / calls

    for label, (func, shapes) in ANSWERED.items():
        with mode:
            args = tuple(torch.empty(shape) for shape in shapes)
        for i in range(rounds):
            for version in ("old", "new") if i % 2 == 0 else ("new", "old"):
                times[label][version].append(per_call(modules[version], func, args))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.against")
    parser.add_argument("old_src", help="the src folder of the other version's checkout")
    parser.add_argument("--models", default="blocks100,resnet18,mobilenet_v2,gpt2")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--mode", default="train", choices=("train", "eval"))
    parser.add_argument("--phases", action="store_true",
                        help="also each part of a training step, as benchmarks.speed phases times it")
    parser.add_argument("--answers", action="store_true",
                        help="instead: the microseconds a call of a fake twin's answer (views, a new tensor)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.phases and args.mode != "train":
        parser.error("--phases times the parts of a training step: use it with --mode train")

    import torchcost
    from benchmarks.speed import ladder_model

    with tempfile.TemporaryDirectory() as folder:
        old = load_old(Path(args.old_src), Path(folder))
        try:
            if args.answers:
                _head(f"a fake twin's answer, us a call, medians of {args.rounds} rounds (old: {args.old_src})",
                      "call")
                for label, by in run_answers(old, torchcost, args.rounds).items():
                    print(_row(label, by["old"], by["new"], scale=1e6))
                return 0
            _head(f"{args.mode} analyses, CPU ms, medians of {args.rounds} rounds (old: {args.old_src})", "model")
            by_model = {}
            for name in (m for m in args.models.split(",") if m):
                if args.phases:
                    times, by_model[name] = run_against_phases(old, torchcost, ladder_model(name), args.rounds,
                                                               args.mode)
                else:
                    times = run_against(old, torchcost, ladder_model(name), args.rounds, args.mode)
                print(_row(name, times["old"], times["new"]))
            for name, parts in by_model.items():
                print()
                _head(f"{name}: the training step's parts (benchmarks.speed phases), CPU ms, medians of "
                      f"{args.rounds} rounds", "part")
                for label in parts["old"]:
                    print(_row(label, parts["old"][label], parts["new"][label]))
        finally:
            sys.path.remove(folder)
            for key in [k for k in sys.modules if k == OLD_NAME or k.startswith(OLD_NAME + ".")]:
                del sys.modules[key]
    return 0


def _head(title: str, first: str) -> None:
    """A table's title and header: ``first`` names the rows, then the two versions, their ratio, the rounds'."""
    print(title)
    print()
    print(f"| {first} | old | new | new / old | rounds' ratios: median (range) |")
    print("|---|---|---|---|---|")


def _row(name: str, old: list[float], new: list[float], scale: float = 1e3) -> str:
    """A table row: the medians of two versions' seconds times ``scale`` (ms; us with 1e6), their ratio, and the
    rounds' own ratios."""
    o, n = statistics.median(old), statistics.median(new)
    ratios = sorted(b / a for a, b in zip(old, new) if a > 0)
    spread = f"{statistics.median(ratios):.3f} ({ratios[0]:.2f}-{ratios[-1]:.2f})" if ratios else "-"
    return f"| {name} | {o * scale:.1f} | {n * scale:.1f} | {n / o if o else float('nan'):.3f} | {spread} |"


if __name__ == "__main__":
    raise SystemExit(main())
