"""Two versions of torchcost in one process, analyses alternating: the time of a change, measured side by side.

    python -m benchmarks.against <old tree>/src --models blocks100,resnet18,mobilenet_v2,gpt2 --rounds 21

``<old tree>`` is a checkout of another commit (``git worktree add /tmp/old <commit>``). Its package is copied to a
temporary folder as ``torchcost_old`` (every reference to the package's modules renamed, so the two share no
module, cache or table) and imported beside this checkout's ``torchcost``. Each model is analysed three times by
each version (their process-level caches warm, as a notebook's or a search's later analyses are), then ``--rounds``
times by each, in alternating order, one thread; the table gives the medians of the CPU times, their ratio, and the
median and range of the rounds' own ratios (each round's two analyses ran next to each other, so a slow spell of
this shared machine slows both). Separate processes per version, as ``benchmarks.cli_wall`` runs them, see the
machine's drift between processes as well.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import statistics
import sys
import tempfile
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.against")
    parser.add_argument("old_src", help="the src folder of the other version's checkout")
    parser.add_argument("--models", default="blocks100,resnet18,mobilenet_v2,gpt2")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--mode", default="train", choices=("train", "eval"))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    import torchcost
    from benchmarks.speed import ladder_model

    with tempfile.TemporaryDirectory() as folder:
        old = load_old(Path(args.old_src), Path(folder))
        try:
            print(f"{args.mode} analyses, CPU ms, medians of {args.rounds} rounds (old: {args.old_src})")
            print()
            print("| model | old | new | new / old | rounds' ratios: median (range) |")
            print("|---|---|---|---|---|")
            for name in (m for m in args.models.split(",") if m):
                times = run_against(old, torchcost, ladder_model(name), args.rounds, args.mode)
                o, n = statistics.median(times["old"]), statistics.median(times["new"])
                ratios = sorted(b / a for a, b in zip(times["old"], times["new"]))
                print(f"| {name} | {o * 1e3:.1f} | {n * 1e3:.1f} | {n / o:.3f} | {statistics.median(ratios):.3f} "
                      f"({ratios[0]:.2f}-{ratios[-1]:.2f}) |")
        finally:
            sys.path.remove(folder)
            for key in [k for k in sys.modules if k == OLD_NAME or k.startswith(OLD_NAME + ".")]:
                del sys.modules[key]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
