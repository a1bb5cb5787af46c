"""Run the benchmarks against the peer tools and write benchmarks/results.json and their sections of
docs/benchmarks.md (the preamble, Headline, Accuracy, Speed, Meta device and Method; the sections other benchmarks
write are kept: benchmarks/docs.py).

    python -m benchmarks.run                  # everything (several minutes)
    python -m benchmarks.run --quick          # a few models, 3 timed runs, no meta 70B
    python -m benchmarks.run --only accuracy  # or speed, meta
    python -m benchmarks.run --models resnet,gpt2 --tools torchcost,fvcore
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.docs import replace_sections

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few models, 3 timed runs (development)")
    parser.add_argument("--only", choices=["accuracy", "speed", "meta"], action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--models", help="comma-separated substrings of case names to keep")
    parser.add_argument("--tools", help="comma-separated tool names to keep (torchcost is always kept)")
    parser.add_argument("--runs", type=int, help="timed rounds per tool (default 9, quick 3; resnet50 at least 15)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every measurement (default 1)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only; write neither file")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: re-render --markdown from the figures already in --json")
    args = parser.parse_args(argv)
    if args.render:
        from benchmarks import report as report_module

        rendered = json.loads(args.json.read_text())
        replace_sections(args.markdown, report_module.markdown(rendered))
        print(report_module.headline(rendered))
        return 0

    from benchmarks import accuracy, meta, report, speed
    from benchmarks.models import all_cases
    from benchmarks.peers import TOOLS

    torch.set_num_threads(args.threads)
    parts = set(args.only or ["accuracy", "speed", "meta"])
    cases = all_cases()
    if args.quick:
        cases = [c for c in cases if c.quick]
    if args.models:
        wanted = [w.strip() for w in args.models.split(",") if w.strip()]
        cases = [c for c in cases if any(w in c.name for w in wanted)]
    tools = list(TOOLS)
    if args.tools:
        keep = {t.strip() for t in args.tools.split(",")} | {"torchcost"}
        tools = [t for t in tools if t.name in keep]
    runs = args.runs or (3 if args.quick else 9)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.perf_counter()
    command = "python -m benchmarks.run" + ("" if argv is None and len(sys.argv) <= 1
                                            else " " + shlex.join(argv if argv is not None else sys.argv[1:]))
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "command": command,
        "environment": report.environment(args.threads),
        "tools": [{"name": t.name, "dist": t.dist, "unit": t.unit, "missing": t.missing()} for t in tools],
    }
    if args.only and not args.quick and not args.models and not args.tools and args.json.exists():
        # re-running some parts of a full run: keep the other parts' figures, and say which command made which
        previous = json.loads(args.json.read_text())
        for part in ("accuracy", "speed", "meta"):
            if part not in parts and part in previous:
                results[part] = previous[part]
        results["parts"] = dict(previous.get("parts") or {
            p: f"{previous['command']}  ({previous['date']}, {previous.get('seconds', 0):.0f} s)"
            for p in ("accuracy", "speed", "meta") if p in previous})
        results["command"] = previous["command"]
        results["date"] = previous["date"]
        results["seconds"] = previous.get("seconds", 0)
    results.setdefault("parts", {})
    if "accuracy" in parts:
        log(f"accuracy: {len(cases)} models x {len(tools)} tools")
        acc = accuracy.run_accuracy(cases, tools, log)
        results["accuracy"] = [r.to_dict() for r in acc]
    if "speed" in parts:
        speed_cases = [c for c in cases if c.speed]
        if args.models:
            speed_cases = [c for c in cases if c.group != "analytic"]
        log(f"speed: {len(speed_cases)} models, {runs} runs after a warm-up, {args.threads} thread(s)")
        results["speed"] = speed.run_speed(speed_cases, tools, runs=runs, rss=not args.no_rss, log=log)
    if "meta" in parts:
        names = ["llama-3-8b"] if args.quick else ["llama-3-8b", "llama-3-70b"]
        meta_tools = [t for t in tools if t.name in ("torchcost", "FlopCounterMode")] if args.quick else tools
        log(f"meta: {', '.join(names)}")
        results["meta"] = meta.run_meta(names, meta_tools, runs=3 if args.quick else max(5, min(runs, 7)), log=log)
    seconds = round(time.perf_counter() - started, 1)
    for part in parts:
        results["parts"][part] = f"{command}  ({dt.date.today().isoformat()}, {seconds:.0f} s)"
    results.setdefault("seconds", seconds)
    if not args.no_write:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        replace_sections(args.markdown, report.markdown(results))
        log(f"wrote {args.json} and {args.markdown}")
    print(report.headline(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
