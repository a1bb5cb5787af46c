"""docs/benchmarks.md from the raw results (benchmarks/results.json). Computes only presentation: ratios are taken
from the results as measured."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

__all__ = ["environment", "headline", "markdown"]

ROOT = Path(__file__).resolve().parent.parent
PEER_DISTS = ["torchinfo", "torchsummary", "ultralytics-thop", "fvcore", "ptflops", "calflops", "torchprofile",
              "torchscan", "torchvision", "timm", "transformers"]

GOAL_RESNET = 1.5  # analyze <= 1.5x a plain forward, resnet50 at 224 on CPU
GOAL_META = 2.0  # 70B on meta < 2x FlopCounterMode


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(threads: int) -> dict[str, Any]:
    import torchcost

    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "memory": mem, "os": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "torchcost": torchcost.__version__,
        "git": _git(), "threads": threads, "versions": {d: _version(d) for d in PEER_DISTS},
    }


# -- formatting -----------------------------------------------------------------------------------------------------

def _num(n: int | float | None) -> str:
    if n is None:
        return "—"
    a = abs(n)
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if a >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n:.0f}"


def _pct(x: float | None) -> str:
    if x is None:
        return "—"
    if x == float("inf"):
        return "inf"
    if x == 0:
        return "0"
    if abs(x) < 0.0005:
        return f"{x:+.4%}"
    return f"{x:+.1%}"


def _cell(row: dict[str, Any] | None, key: str) -> str:
    if row is None:
        return ""
    if row["status"] == "missing":
        return "not installed"
    if row["status"] == "unsupported":
        return "n/a"
    if row["status"] == "crashed":
        return "crash"
    if row.get(key.replace("_diff", "")) is None:
        return "—"
    return _pct(row.get(key))


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _speed_cell(entry: dict[str, Any], tool: str) -> str:
    t = entry["timing"].get(tool)
    if t is None:
        return "crash" if tool in entry.get("skipped", {}) else ""
    return f"{t['ratio']:.2f}x" if "ratio" in t else f"{t['median_s'] * 1e3:.0f} ms"


def _rss_cell(entry: dict[str, Any], tool: str) -> str:
    r = entry.get("rss", {}).get(tool)
    if not r or "extra_peak_bytes" not in r:
        return ""
    return f"{r['extra_peak_bytes'] / 2**20:.0f}"


# -- headline -------------------------------------------------------------------------------------------------------

def _resnet50(results: dict[str, Any]) -> dict[str, Any] | None:
    for entry in results.get("speed", []):
        if entry["case"] == "torchvision:resnet50":
            tc = entry["timing"].get("torchcost")
            fwd = entry["timing"]["forward"]
            if tc:
                return {"ratio": tc["ratio"], "forward_ms": fwd["median_s"] * 1e3,
                        "analyze_ms": tc["median_s"] * 1e3, "per_round": tc.get("ratio_per_round_median"),
                        "cpu_ratio": tc.get("cpu_ratio"), "rounds": entry["runs"]}
    return None


def _meta70(results: dict[str, Any]) -> dict[str, Any] | None:
    for entry in results.get("meta", []):
        if entry["model"] == "llama-3-70b":
            fcm = entry["timing"].get("FlopCounterMode")
            tc = entry["timing"].get("torchcost")
            if tc and fcm:
                return {"ratio": entry["torchcost_vs_flopcountermode"], "torchcost_s": tc["median_s"],
                        "fcm_s": fcm["median_s"]}
    return None


def _uncounted(results: dict[str, Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for case in results.get("accuracy", []):
        for op, calls in case.get("uncounted", {}).items():
            out.setdefault(op, {})[case["case"]] = calls
    return out


def headline(results: dict[str, Any]) -> str:
    lines = []
    r50 = _resnet50(results)
    if r50:
        ok = "met" if r50["ratio"] <= GOAL_RESNET else "NOT met"
        lines.append(f"resnet50 224 CPU: analyze {r50['analyze_ms']:.0f} ms vs forward {r50['forward_ms']:.0f} ms = "
                     f"{r50['ratio']:.2f}x (goal <= {GOAL_RESNET}x: {ok})")
    m70 = _meta70(results)
    if m70:
        ok = "met" if m70["ratio"] < GOAL_META else "NOT met"
        lines.append(f"llama-3-70b on meta: torchcost {m70['torchcost_s']:.2f} s vs FlopCounterMode "
                     f"{m70['fcm_s']:.2f} s = {m70['ratio']:.2f}x (goal < {GOAL_META}x: {ok})")
    if "accuracy" in results:
        unc = _uncounted(results)
        n = len(results["accuracy"])
        lines.append(f"uncounted ops over {n} models: " + (", ".join(
            f"{op} ({len(where)} models)" for op, where in sorted(unc.items())) if unc else "none"))
    return "\n".join(lines)


# -- the document ---------------------------------------------------------------------------------------------------

def markdown(results: dict[str, Any]) -> str:
    from benchmarks.accuracy import CAUSES

    env = results["environment"]
    out: list[str] = []
    w = out.append
    w("# Benchmarks: torchcost against the peer tools\n")
    reruns = {part: how for part, how in results.get("parts", {}).items()
              if not how.startswith(results["command"] + "  ")}
    again = "".join(f" The {part} part was re-run afterwards by `{how.split('  (')[0]}` ({how.split('  (')[1]}."
                    for part, how in reruns.items())  # how: "COMMAND  (DATE, SECONDS s)"
    w(f"Generated on {results['date']} by `{results['command']}` (took {results.get('seconds', 0):.0f} s).{again} "
      "The Headline, Accuracy, Speed, Meta device and Method sections come from those runs (every other section "
      "names the command that wrote it); the raw figures are in "
      "[benchmarks/results.json](../benchmarks/results.json). Regenerate with `pip install -e '.[bench]'` and "
      "`python -m benchmarks.run` (`--quick` for a few models).\n")
    w("| machine | |\n|---|---|")
    w(f"| CPU | {env['cpu']}, {env['cores']} cores visible (shared with other jobs: timings are noisy, "
      "hence medians and interleaved rounds) |")
    w(f"| memory | {env['memory']} |")
    w(f"| OS | {env['os']} |")
    w(f"| Python / torch | {env['python']} / {env['torch']} |")
    w(f"| torch threads | {env['threads']} (torch.set_num_threads, every measurement) |")
    w(f"| torchcost | {env['torchcost']} (git {env['git']}) |")
    w("| peers and zoo | " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + " |\n")

    # headline
    w("## Headline\n")
    r50, m70 = _resnet50(results), _meta70(results)
    unc = _uncounted(results)
    w("| goal | measured | |\n|---|---|---|")
    if r50:
        w(f"| `analyze` on real tensors <= {GOAL_RESNET}x a plain forward, resnet50 1x3x224x224, CPU | "
          f"{r50['ratio']:.2f}x (median wall time of {r50['rounds']} rounds: {r50['analyze_ms']:.0f} ms vs "
          f"{r50['forward_ms']:.0f} ms; median of per-round ratios {r50['per_round']:.2f}x; CPU time "
          f"{r50['cpu_ratio']:.2f}x) | {'met' if r50['ratio'] <= GOAL_RESNET else '**not met**'} |")
    if m70:
        w(f"| llama-3-70b on meta < {GOAL_META}x the time of FlopCounterMode on the same model | "
          f"{m70['ratio']:.2f}x ({m70['torchcost_s']:.2f} s vs {m70['fcm_s']:.2f} s) | "
          f"{'met' if m70['ratio'] < GOAL_META else '**not met**'} |")
    if "accuracy" in results:
        n = len(results["accuracy"])
        text = "none" if not unc else "; ".join(f"`{op}` in {', '.join(sorted(where))}" for op, where in unc.items())
        w(f"| zero uncounted arithmetic ops over the model set ({n} models) | {text} | "
          f"{'met' if not unc else '**not met**'} |")
    w("")

    if "accuracy" in results:
        _accuracy_sections(results, w, CAUSES)
    if "speed" in results:
        _speed_section(results, w)
    if "meta" in results:
        _meta_section(results, w)
    _method(results, w)
    return "\n".join(out) + "\n"


def _accuracy_sections(results: dict[str, Any], w: Any, causes: dict[str, list[str]]) -> None:
    from benchmarks.accuracy import THRESHOLD

    acc = results["accuracy"]
    tools = [t["name"] for t in results["tools"]]
    w("## Accuracy\n")
    w("MACs as each tool reports them, normalised to one multiply-accumulate = 1 (the unit each reports is in the "
      "per-tool tables), as the relative difference to the **analytic** value (derived by hand in "
      "[benchmarks/analytic.py](../benchmarks/analytic.py)) for the `analytic:` models, and to **torchcost** for the "
      "others; torchcost's own column for those compares with torchvision's published `_ops` where torchvision "
      "publishes one (given in GMACs to 3 decimals, so a difference within 0.5 M MACs is its rounding: every one "
      "here is). `crash`: the tool raised; `n/a`: it cannot take this model's inputs; `—`: it does not count "
      "MACs.\n")
    w("| model | " + " | ".join(tools) + " |")
    w("|---|" + "---|" * len(tools))
    for case in acc:
        cells = []
        for tool in tools:
            row = next((r for r in case["rows"] if r["tool"] == tool), None)
            if tool == "torchcost" and case["reference"] == "torchcost":
                pub = case.get("published")
                cells.append(_pct((row["macs"] - pub[1]) / pub[1]) + " (pub.)" if pub and row and row["macs"]
                             else "ref")
            else:
                cells.append(_cell(row, "macs_diff"))
        w(f"| {case['case']} | " + " | ".join(cells) + " |")
    w("")
    w("### Parameters\n")
    w("Relative difference of the parameter count to the analytic value, or to torchcost (torchcost's own column: "
      "to torchvision's published num_params).\n")
    param_tools = [t for t in tools if t not in ("FlopCounterMode", "torchprofile")]
    w("| model | " + " | ".join(param_tools) + " |")
    w("|---|" + "---|" * len(param_tools))
    for case in acc:
        cells = []
        for tool in param_tools:
            row = next((r for r in case["rows"] if r["tool"] == tool), None)
            if tool == "torchcost" and case["reference"] == "torchcost":
                pub = case.get("published")
                cells.append(_pct((row["params"] - pub[0]) / pub[0]) + " (pub.)" if pub and row and row["params"]
                             else "ref")
            else:
                cells.append(_cell(row, "params_diff"))
        w(f"| {case['case']} | " + " | ".join(cells) + " |")
    w("")

    w("### Per tool\n")
    w("Each tool's figures, the reference, and for every MAC difference over 1% the evidence: **[exact]** when the "
      "difference equals, to the MAC, the cost of the named ops as torchcost priced them; **where** the difference "
      "sits by module type (for tools that report per-module figures), with the number of modules that differ. "
      "'Left model modified' is what the tool changed on the model it was given (each tool gets its own deep "
      "copy) or in torch.\n")
    for tool in tools:
        info = next(t for t in results["tools"] if t["name"] == tool)
        w(f"#### {tool}\n")
        w(f"Unit: {info['unit']}." + (f" **{info['missing']}**." if info["missing"] else "") + "\n")
        for line in causes.get(tool, []):
            w(f"- {line}")
        if causes.get(tool):
            w("")
        w("| model | params | MACs | reference MACs | diff | reason (evidence) | left model modified |")
        w("|---|---|---|---|---|---|---|")
        for case in acc:
            row = next((r for r in case["rows"] if r["tool"] == tool), None)
            if row is None:
                continue
            if row["status"] != "ok":
                w(f"| {case['case']} | {row['status']} | | | | {_esc(row['error'])} | "
                  f"{_esc('; '.join(row['side_effects'])) or 'no'} |")
                continue
            reason = "; ".join(x for x in (row["exact"], ("where: " + row["where"]) if row["where"] else "") if x)
            if not reason and row["macs_diff"] is not None and abs(row["macs_diff"]) > THRESHOLD:
                reason = "(no per-module or exact evidence; see the causes above)"
            notes = "; ".join(n for n in row.get("notes", []) if not n.startswith("its flops"))
            if notes:
                reason = (reason + "; " if reason else "") + notes
            w(f"| {case['case']} | {row['params'] if row['params'] is not None else '—'} | "
              f"{row['macs'] if row['macs'] is not None else '—'} | {case['ref_macs']} ({case['reference']}) | "
              f"{_pct(row['macs_diff'])} | {_esc(reason)} | {_esc('; '.join(row['side_effects'])) or 'no'} |")
        w("")

    w("### Left model modified: summary\n")
    w("| tool | models run | left something changed | what (first seen) |\n|---|---|---|---|")
    for tool in tools:
        ran = [(c["case"], r) for c in acc for r in c["rows"] if r["tool"] == tool and r["status"] in ("ok", "crashed")]
        changed = [(n, r) for n, r in ran if r["side_effects"]]
        kinds: dict[str, str] = {}
        for n, r in changed:
            for eff in r["side_effects"]:
                kinds.setdefault(eff.split(" (")[0], n)
        what = "; ".join(f"{k} ({n})" for k, n in list(kinds.items())[:6])
        w(f"| {tool} | {len(ran)} | {len(changed)} | {_esc(what) or '—'} |")
    w("")


def _speed_section(results: dict[str, Any], w: Any) -> None:
    speed = results["speed"]
    tools = [t["name"] for t in results["tools"]]
    w("## Speed\n")
    w(f"Time of one call relative to a plain forward of the same model (`model(x)` under `torch.no_grad()`, eval), "
      f"median of the timed rounds after a warm-up, {results['environment']['threads']} torch thread; all in one "
      "process, rounds interleaved across tools. Each tool call includes the tool's own forward pass.\n")
    w("| model | forward (median) | " + " | ".join(tools) + " |")
    w("|---|---|" + "---|" * len(tools))
    for entry in speed:
        fwd = entry["timing"]["forward"]
        w(f"| {entry['case']} ({entry['input']}) | {fwd['median_s'] * 1e3:.1f} ms | "
          + " | ".join(_speed_cell(entry, t) for t in tools) + " |")
    w("")
    w("The same in detail: wall-clock median and minimum, the ratio of medians to the plain forward, the median of "
      "the per-round ratios, and the thread's CPU time (median, and its ratio), which other processes on the "
      "machine disturb less than wall time:\n")
    w("| model | tool | wall median | wall min | ratio | per-round ratio | CPU median | CPU ratio | rounds |")
    w("|---|---|---|---|---|---|---|---|---|")
    for entry in speed:
        for name, t in entry["timing"].items():
            w(f"| {entry['case']} | {name} | {t['median_s'] * 1e3:.1f} ms | {t['min_s'] * 1e3:.1f} ms | "
              f"{t.get('ratio', 1):.2f}x | {t.get('ratio_per_round_median', 1):.2f}x | "
              f"{t['cpu_median_s'] * 1e3:.1f} ms | {t.get('cpu_ratio', 1):.2f}x | {len(t['runs_s'])} |")
    w("")
    if any("rss" in e for e in speed):
        w("### Peak memory\n")
        w("Extra peak RSS of one call over the process's resident set just before it, MiB (one subprocess per "
          "model, tools in turn; see the method below).\n")
        w("| model | forward | " + " | ".join(tools) + " |")
        w("|---|---|" + "---|" * len(tools))
        for entry in speed:
            rss = entry.get("rss", {})
            if "error" in rss:
                w(f"| {entry['case']} | {rss['error']} |" + " |" * len(tools))
                continue
            w(f"| {entry['case']} | {_rss_cell(entry, 'forward')} | "
              + " | ".join(_rss_cell(entry, t) for t in tools) + " |")
        w("")


def _meta_section(results: dict[str, Any], w: Any) -> None:
    w("## Meta device: llama-3 configs\n")
    w("Built with `with torch.device('meta'): LlamaForCausalLM(config)` from the published configs (no weights, no "
      "memory), input_ids 1x128 on meta. Each tool is tried once; those that run are timed (median of the rounds).\n")
    for entry in results["meta"]:
        c = entry["config"]
        w(f"### {entry['model']}\n")
        w(f"hidden {c['hidden_size']}, {c['num_hidden_layers']} layers, {c['num_attention_heads']} heads, "
          f"{c['num_key_value_heads']} kv heads, intermediate {c['intermediate_size']}, vocab {c['vocab_size']}; "
          f"built in {entry['build_s']:.2f} s.\n")
        w("| tool | status | params | MACs | median | ratio to forward |\n|---|---|---|---|---|---|")
        fwd = entry["timing"]["forward"]
        w(f"| forward (meta) | ok | | | {fwd['median_s']:.2f} s | 1.00x |")
        for name, t in entry["tools"].items():
            timing = entry["timing"].get(name)
            med = f"{timing['median_s']:.2f} s" if timing else ""
            ratio = f"{timing['ratio']:.2f}x" if timing else ""
            status = t["status"] if t["status"] == "ok" else f"{t['status']}: {_esc(t['error'])}"
            if t.get("note"):
                status += f" ({t['note']})"
            w(f"| {name} | {status} | {_num(t['params'])} | {_num(t['macs'])} | {med} | {ratio} |")
        if entry.get("torchcost_vs_flopcountermode"):
            w(f"\ntorchcost / FlopCounterMode time: **{entry['torchcost_vs_flopcountermode']:.2f}x**.\n")
        else:
            w("")


def _method(results: dict[str, Any], w: Any) -> None:
    w("## Method\n")
    w("- **Models**: built from their libraries' code with random weights under a fixed seed (torchvision "
      "`weights=None`, timm `pretrained=False`, transformers from config objects with 2 layers); nothing is "
      "downloaded. See [benchmarks/models.py](../benchmarks/models.py). Analytic cases: "
      "[benchmarks/analytic.py](../benchmarks/analytic.py), each value derived in a comment beside it.")
    w("- **Each tool** runs on its own deep copy of the model in eval mode under `torch.no_grad()`, with its output, "
      "warnings and logging silenced; tools that take only positional inputs (thop, fvcore, torchprofile) get a "
      "wrapper module that binds the keyword inputs. What a tool changed on its copy (mode, hooks, attributes, "
      "buffers, buffer values, requires_grad) and in torch (functions patched, global hooks, grad mode) is "
      "recorded, and global patches are undone before the next tool runs.")
    w("- **Units**: FlopCounterMode counts 2 FLOPs per MAC (divided by 2 here); fvcore's 'flops' are one per "
      "multiply-add (taken as MACs); ptflops' pytorch backend reports per sample (multiplied back by the batch it "
      "divided by); calflops returns (flops, macs, params), its macs are used; the others report MACs.")
    w("- **Speed**: rounds interleaved across tools (order rotated each round), each on a fresh deep copy made "
      "before its timer starts, gc.collect() before each call; the ratio is the tool's median over the plain "
      "forward's median (the median of per-round ratios is in results.json as a check).")
    w("- **Peak RSS**: one subprocess per model (`python -m benchmarks.speed --rss CASE`): after a warm-up forward, "
      "for each tool in turn gc.collect() + malloc_trim(0), a fresh copy, the kernel's peak mark reset "
      "(`/proc/self/clear_refs` 5), one call; reported is VmHWM after minus VmRSS before, i.e. the extra resident "
      "memory at the call's peak (not a getrusage delta).")
