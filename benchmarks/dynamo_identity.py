"""Reports made while ``torch._dynamo`` is left unimported (run/dynamo.py's stand-in) against reports of the same
analyses in a process that imported it first: the same JSON, case by case. Each side runs in a fresh process,
every case in turn (so later cases also run after earlier ones installed and removed the stand-in).

    python -m benchmarks.dynamo_identity [--cases NAME,...]

Cases: torchcost's examples that build in a second (simple_cnn's 401 M-parameter Linear is analysed on meta only),
each in eval, a training step with AdamW (the default) and with SGD, on meta, and a training step on meta.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

_EXAMPLES = ("conv1d_series", "conv3d_action", "standard_conv", "depthwise_separable")
_RUNS: dict[str, dict[str, Any]] = {
    "eval": {},
    "train": {"mode": "train"},
    "train sgd": {"mode": "train", "optimizer": "sgd"},
    "meta": {"device": "meta"},
    "meta train": {"device": "meta", "mode": "train"},
}
CASES = [f"{example} {run}" for example in _EXAMPLES for run in _RUNS] + ["simple_cnn meta", "simple_cnn meta train"]

_CHILD = """
import json, sys
import torch
if {first!r}:
    import torch._dynamo
import torchcost
from torchcost import examples
out = {{}}
for case in {cases!r}:
    name, run = case.split(" ", 1)
    options = {runs!r}[run]
    torch.manual_seed(0)
    if options.get("device") == "meta":
        with torch.device("meta"):
            model, inputs = examples.build(name)
        inputs = tuple(torch.randn(x.shape, dtype=x.dtype) for x in inputs)  # (inputs on the CPU: analyze moves them)
    else:
        model, inputs = examples.build(name)
    report = torchcost.analyze(model, *inputs, **options).to_dict()
    report.pop("measured_time", None)
    out[case] = report
out["_dynamo"] = "torch._dynamo" in sys.modules
print(json.dumps(out))
"""


def _side(cases: list[str], first: bool) -> dict[str, Any]:
    code = _CHILD.format(first=first, cases=cases, runs=_RUNS)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {'dynamo-first' if first else 'stand-in'} process failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dynamo_identity")
    parser.add_argument("--cases", default="", help="comma-separated (default: all): " + ", ".join(CASES))
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()] or CASES
    start = time.perf_counter()
    deferred, imported = _side(cases, first=False), _side(cases, first=True)
    print("| case | stand-in / torch._dynamo imported first |")
    print("|---|---|")
    same = 0
    for case in cases:
        equal = deferred[case] == imported[case]
        same += equal
        print(f"| {case} | {'identical' if equal else 'DIFFERENT'} |")
    print(f"\n{same} of {len(cases)} identical; torch._dynamo imported by the end of the stand-in's process: "
          f"{'yes' if deferred['_dynamo'] else 'no'} ({time.perf_counter() - start:.0f} s)")
    return 0 if same == len(cases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
