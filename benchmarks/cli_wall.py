"""Wall seconds of whole ``torchcost`` commands in fresh processes, two source trees alternating, as a user runs them:

    python -m benchmarks.cli_wall --against /tmp/old/src --rounds 5 "torchvision:resnet50" "list torchvision"
    python -m benchmarks.cli_wall --rounds 1 -- --version

Each command runs ``python -m torchcost ARGS`` (its output thrown away) once with this checkout's ``src`` and once
with the other tree's on ``PYTHONPATH``, alternately, ``--rounds`` times; the table gives the medians, the ranges and
whether every run exited 0. Make the other tree with ``git worktree add /tmp/old <commit>``. The machine's noise
reaches both columns alike, so compare within one run. ``--rounds 1`` without ``--against`` times this checkout alone.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(src: Path, args: list[str]) -> tuple[float, int]:
    """Seconds of one ``python -m torchcost ARGS`` with ``src`` first on the path, and its exit code."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH")) if p)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "torchcost", *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli_wall")
    parser.add_argument("commands", nargs="+", help='torchcost arguments, one string a command: "torchvision:resnet50"')
    parser.add_argument("--against", type=Path, help="the other tree's src folder (omit to time this checkout only)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    trees = {"this checkout": ROOT / "src"}
    if args.against is not None:
        trees = {"other": args.against.resolve(), **trees}
    print(f"wall seconds of `python -m torchcost ARGS`, medians of {args.rounds} fresh processes (range), trees "
          f"alternating; ok: every run exited 0")
    print()
    print("| command | " + " | ".join(trees) + " |")
    print("|---|" + "---|" * len(trees))
    for command in args.commands:
        times: dict[str, list[float]] = {name: [] for name in trees}
        ok = {name: True for name in trees}
        for _ in range(args.rounds):
            for name, src in trees.items():
                seconds, rc = wall(src, shlex.split(command))
                times[name].append(seconds)
                ok[name] = ok[name] and rc == 0
        cells = [f"{statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f}){'' if ok[n] else ' FAILED'}"
                 for n, t in times.items()]
        print(f"| `torchcost {command}` | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
