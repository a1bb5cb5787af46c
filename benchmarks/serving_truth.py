"""Serving truth: torchcost's generation figures against independent oracles, for a tiny config of each architecture
family (random weights, CPU), and the llama-3-70b speed check.

    python -m benchmarks.serving_truth            # the tables (Markdown) and the 70B timing
    python -m benchmarks.serving_truth --no-70b   # the tables only

- **KV cache**: the distinct storages of the cache a real greedy ``model.generate()`` leaves (batch 2, prompt 12,
  6 new tokens; the sliding window, 8, is shorter than the prompt) beside torchcost's ``kv_cache_bytes`` (read from
  the cache tensors after meta runs) and the hand formula of the family.
- **Peak memory**: the prefill and two decode steps run for real under one torch.profiler session
  (``tests.serve.truth.session_peaks``: the allocator's running peak within each step, plus the weights and the
  step's input ids) beside torchcost's predicted peaks (target "cpu"); batch 3.
- **Decode MACs**: torch.utils.flop_counter.FlopCounterMode (matrix products, 2 FLOPs per MAC) on each real step
  (SDPA forced to its math path) beside torchcost's MACs of the same steps and its closed-form sum.
- **Speed**: ``torchcost hf:llama-3-70b --meta --prompt-len 8192 --new-tokens 1024 --batch-size 8``, timed in a
  fresh process (interpreter start, imports and the model build included).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from tests.serve.models import (
    HEAD_DIM,
    KV_HEADS,
    KV_LORA,
    LAYERS,
    MAMBA_CONV,
    MAMBA_EXPAND,
    MAMBA_STATE,
    ROPE,
    WINDOW,
    build,
)
from tests.serve.truth import cache_state_tensors, distinct_storage_bytes, session_peaks
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import torchcost

HALF = torch.bfloat16
B, P, N = 2, 12, 6
T = P + N - 1


def _hand_kv(family: str, itemsize: int) -> tuple[int, str]:
    per_layer_token = 2 * KV_HEADS * HEAD_DIM * B * itemsize  # K and V of one layer, one token, the batch
    if family == "mistral":
        return LAYERS * per_layer_token * WINDOW, "2 L kvh hd W B bytes (window W allocated, not T)"
    if family == "gemma2":
        return per_layer_token * (WINDOW + T), "2 kvh hd B bytes (W + T): one sliding, one global layer"
    if family == "gemma3":
        return per_layer_token * (2 * WINDOW + T), "2 kvh hd B bytes (2W + T): two sliding, one global layer"
    if family == "jamba":
        inner = MAMBA_EXPAND * 64
        mamba = 2 * (B * inner * MAMBA_CONV * itemsize + B * inner * MAMBA_STATE * 4)
        return (2 * per_layer_token * T + mamba,
                "2 attention layers as above + 2 Mamba states: B inner (d_conv bytes + d_state x 4)")
    if family == "deepseek_v2":
        return LAYERS * (KV_LORA + ROPE) * T * B * itemsize, "L (kv_lora_rank + rope) T B bytes (latent)"
    return LAYERS * per_layer_token * T, "2 L kvh hd T B bytes"


def kv_table() -> list[str]:
    rows = ["| family | real generate() cache | torchcost | hand formula | formula |", "|---|---|---|---|---|"]
    for family, dtype in (("llama", torch.float32), ("mistral", torch.float32), ("gemma2", torch.float32),
                          ("gemma3", torch.float32), ("deepseek_v2", HALF), ("qwen3_moe", HALF), ("mixtral", HALF),
                          ("jamba", HALF)):
        model = build(family, dtype)
        ids = torch.randint(3, 128, (B, P), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N, min_new_tokens=N,
                                 do_sample=False, return_dict_in_generate=True)
        real = distinct_storage_bytes(cache_state_tensors(out.cache))
        ours = torchcost.analyze_generation(model, prompt_len=P, new_tokens=N, batch_size=B, target="cpu",
                                            reports=False).kv_cache_bytes
        hand, how = _hand_kv(family, dtype.itemsize)
        rows.append(f"| {family} ({str(dtype).removeprefix('torch.')}) | {real:,} | {ours:,} | {hand:,} | {how} |")
    return rows


def _steps(model: torch.nn.Module, batch: int, steps: int) -> list[Callable[[], Any]]:
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    tokens = [torch.zeros(batch, P, dtype=torch.long), *(torch.zeros(batch, 1, dtype=torch.long)
                                                         for _ in range(steps))]
    return [(lambda ids=ids: model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits)
            for ids in tokens]


def memory_table() -> list[str]:
    rows = ["| family | step | allocator (truth) | torchcost | error |", "|---|---|---|---|---|"]
    batch = 3
    for family in ("llama", "mistral", "gemma2", "gemma3"):
        model = build(family)
        weights = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                       for t in (*model.parameters(), *model.buffers())}.values())
        with torch.no_grad():
            above = session_peaks(_steps(model, batch, 2))
        truth = [weights + batch * P * 8 + above[0]] + [weights + batch * 8 + a for a in above[1:]]
        report = torchcost.analyze_generation(model, prompt_len=P, new_tokens=3, batch_size=batch, target="cpu",
                                              reports=False)
        predicted = [report.prefill.peak_bytes] + [s.peak_bytes for s in report.samples]
        names = ["prefill (12 tokens)", "decode at context 12", "decode at context 13"]
        for name, got, want in zip(names, predicted, truth, strict=True):
            rows.append(f"| {family} | {name} | {want:,} | {got:,} | {100 * (got - want) / want:+.2f}% |")
    return rows


def flops_table() -> list[str]:
    rows = ["| family (attention) | FlopCounterMode MACs, decode steps at contexts 12..16 | torchcost | "
            "sum: FlopCounterMode | sum: torchcost (closed form) |", "|---|---|---|---|---|"]
    for family, attn, extra in (("llama", "sdpa", {}), ("gemma2", "eager", {}),
                                ("deepseek_v2", "eager", {"first_k_dense_replace": 2})):
        model = build(family, HALF if family == "deepseek_v2" else torch.float32, attn=attn, **extra)
        counted = []
        with sdpa_kernel(SDPBackend.MATH):
            for step in _steps(model, 3, 5):
                with torch.no_grad(), FlopCounterMode(display=False) as counter:
                    step()
                counted.append(counter.get_total_flops() // 2)
        report = torchcost.analyze_generation(model, prompt_len=P, new_tokens=6, batch_size=3, target="cpu",
                                              reports=False)
        first, last = report.decode_first, report.decode_last
        assert first is not None and last is not None
        rows.append(f"| {family} ({attn}) | {counted[1]:,} .. {counted[-1]:,} | {first.macs:,} .. {last.macs:,} | "
                    f"{sum(counted[1:]):,} | {report.decode_macs:,} |")
    return rows


def speed() -> str:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "torchcost", "hf:llama-3-70b", "--meta", "--prompt-len", "8192",
                           "--new-tokens", "1024", "--batch-size", "8", "--no-progress"],
                          capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    return f"llama-3-70b, prompt 8192, 1024 new tokens, batch 8, meta: {seconds:.1f} s\n\n```\n{done.stdout}```"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving_truth")
    parser.add_argument("--no-70b", action="store_true", help="skip the llama-3-70b timing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("### KV cache bytes at the end of generate() (batch 2, prompt 12, 6 new tokens, window 8)\n")
    print("\n".join(kv_table()))
    print("\n### Peak memory against the CPU allocator (batch 3)\n")
    print("\n".join(memory_table()))
    print("\n### Decode MACs against FlopCounterMode (batch 3, prompt 12, 6 new tokens)\n")
    print("\n".join(flops_table()))
    if not args.no_70b:
        print("\n### Speed\n")
        print(speed())
    return 0


if __name__ == "__main__":
    sys.exit(main())
