"""The meta-device path: llama-3-8b and llama-3-70b built under ``torch.device("meta")`` from their published
configs, analysed without allocating weights or activations, timed against the peers that can run on meta.

Every tool is first tried once on the model; those that run are timed like the speed benchmark (interleaved rounds,
fresh copies, median). torchcost's counts are checked against FlopCounterMode's (which also runs on meta).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmarks.models import LLAMA3, Built, build_meta_llama
from benchmarks.peers import TOOLS, Tool, import_tool, run_tool
from benchmarks.speed import _forward, summarise, time_rounds

__all__ = ["run_meta"]

_TRACERS = ("fvcore", "torchprofile")


class _Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs).logits


def _logits_only(run: Callable[[torch.nn.Module, Built], Any]) -> Callable[[torch.nn.Module, Built], Any]:
    def wrapped(model: torch.nn.Module, built: Built) -> Any:
        wrapper = _Logits(model)
        return run(wrapper, Built(wrapper, built.args, built.kwargs))

    return wrapped


def run_meta(names: Sequence[str], tools: Sequence[Tool] = TOOLS, runs: int = 5,
             log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    for tool in tools:
        import_tool(tool)
    results = []
    for name in names:
        start = time.perf_counter()
        pristine = build_meta_llama(name)
        build_s = time.perf_counter() - start
        entries: dict[str, Callable[[torch.nn.Module, Built], Any]] = {"forward": _forward}
        tried: dict[str, dict[str, Any]] = {}
        for tool in tools:
            outcome = run_tool(tool, pristine, check=False)
            run = tool.run
            note = ""
            if outcome.status == "crashed" and tool.name in _TRACERS:
                # torch.jit.trace cannot return the Cache object in the model's output (the KV cache stays on: with
                # use_cache=False transformers calls .item() on a meta tensor, which fails everywhere but in a
                # trace); give the tracer the logits only
                retry = dataclasses.replace(tool, run=_logits_only(tool.run))
                second = run_tool(retry, pristine, check=False)
                if second.status == "ok":
                    outcome, run, note = second, retry.run, "traced through a wrapper returning the logits only"
            m = outcome.measured
            tried[tool.name] = {"status": outcome.status, "error": outcome.error, "note": note,
                                "params": m.params if m else None, "macs": m.macs if m else None,
                                "seconds": round(outcome.seconds, 3)}
            if outcome.status == "ok":
                entries[tool.name] = run
        times = time_rounds(pristine, entries, runs)
        summary = summarise(times)
        tc, fcm = summary.get("torchcost"), summary.get("FlopCounterMode")
        vs_fcm = tc["median_s"] / fcm["median_s"] if tc and fcm else None
        hidden, layers, heads, kv, inter, vocab = LLAMA3[name]
        results.append({
            "model": name, "config": {"hidden_size": hidden, "num_hidden_layers": layers,
                                      "num_attention_heads": heads, "num_key_value_heads": kv,
                                      "intermediate_size": inter, "vocab_size": vocab},
            "input": "input_ids 1x128 (meta)", "build_s": build_s, "runs": runs, "timing": summary,
            "tools": tried, "torchcost_vs_flopcountermode": vs_fcm,
        })
        log(f"  {name}: build {build_s:.2f}s; torchcost {tc['median_s'] if tc else float('nan'):.2f}s, "
            f"FlopCounterMode {fcm['median_s'] if fcm else float('nan'):.2f}s, ratio {vs_fcm or float('nan'):.2f}")
        del pristine
    return results
