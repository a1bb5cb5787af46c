"""This checkout's torchcost against an earlier commit's, both in one process, on the same model.

    python -m benchmarks.versus --against b3ec972 --model blocks100 --mode train --rounds 11
    python -m benchmarks.versus --against HEAD~3 --model mobilenet_v2 --rounds 25

On a shared machine the speed of the whole process drifts by tens of percent from one minute to the next, so two
versions timed in alternating processes disagree more with themselves than with each other. Here the commit's
``src/torchcost`` is extracted (``git archive``) into a temporary folder as a package of another name
(``torchcost_<rev>``, its imports of itself renamed), imported beside this checkout's, and the two analyse the same
model alternately, the order swapped each round, ``gc.collect()`` before each call, CPU time of the thread. The two
reports are compared first (``to_dict()``; the line says whether they are equal). Prints the median milliseconds of
each and the median of the per-round ratios new / old with p25-p75.

Models: ``blocksN`` (N x Linear(64, 64) + ReLU on a 1x64 input, as benchmarks.speed's linearity rows), the ladder's
(``resnet50``, ``mobilenet_v2``, ``efficientnet_b0``, ``vit_b_16``, ``gpt2``) and any other torchvision
classifier by name (1x3x224x224, weights=None).
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from benchmarks.models import Built

__all__ = ["load_commit", "main", "versus"]

ROOT = Path(__file__).resolve().parents[1]


def load_commit(rev: str, into: Path) -> ModuleType:
    """The torchcost package of commit ``rev``, extracted under ``into`` as ``torchcost_<rev>`` and imported."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    name = f"torchcost_{sha}"
    archive = subprocess.run(["git", "archive", sha, "src/torchcost"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / name
    (into / "src" / "torchcost").rename(package)
    for path in package.rglob("*.py"):  # its imports of itself, and module paths in strings, under the new name
        text = re.sub(r"\btorchcost\.", f"{name}.", path.read_text())
        text = re.sub(r"\bfrom torchcost import\b", f"from {name} import", text)
        path.write_text(re.sub(r"^(\s*)import torchcost$", rf"\1import {name}", text, flags=re.MULTILINE))
    sys.path.insert(0, str(into))
    try:  # (its submodules are found through the package's own __path__ from then on)
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(into))


def versus(old: Any, new: Any, built: Built, mode: str, rounds: int) -> dict[str, Any]:
    """Alternate ``old.analyze`` and ``new.analyze`` on ``built`` (benchmarks.speed's interleaved rounds): CPU
    seconds of each round, and whether the two reports are equal."""
    from benchmarks.speed import _interleaved_cpu, _ratio_stats

    def run(tool: Any) -> Any:
        return tool.analyze(built.model, *built.args, kwargs=built.kwargs, mode=mode)

    same = run(old).to_dict() == run(new).to_dict()
    times = _interleaved_cpu(built, {"new": lambda m, b: run(new), "old": lambda m, b: run(old)}, rounds)
    return {"same": same, "old_ms": statistics.median(times["old"]) * 1e3,
            "new_ms": statistics.median(times["new"]) * 1e3, "ratio": _ratio_stats(times["new"], times["old"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="the earlier commit (anything git rev-parse takes)")
    parser.add_argument("--model", default="blocks100")
    parser.add_argument("--mode", default="eval", choices=("eval", "train"))
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import torchcost
    from benchmarks.speed import ladder_model

    with tempfile.TemporaryDirectory() as folder:
        old = load_commit(args.against, Path(folder))
        row = versus(old, torchcost, ladder_model(args.model), args.mode, args.rounds)
    mid, lo, hi = row["ratio"]
    print(f"{args.model} {args.mode}, {args.rounds} rounds: {old.__name__} {row['old_ms']:.1f} ms, this checkout "
          f"{row['new_ms']:.1f} ms, new / old {mid:.3f}x ({lo:.3f}-{hi:.3f}); reports "
          f"{'equal' if row['same'] else 'DIFFERENT'}")
    return 0 if row["same"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
