"""Prefill and decode peaks against the CPU allocator (torch.profiler allocation events over one session, so the
frees of the cache a decode step replaces are seen), and decode MACs against torch.utils.flop_counter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import torchcost
from tests.serve.models import build
from tests.serve.truth import session_peaks

B, P, N = 3, 12, 3  # batch, prompt (longer than the sliding window, 8), new tokens: decode steps at contexts 12, 13


def _real_steps(model: torch.nn.Module, prompt: torch.Tensor, steps: int) -> list[Callable[[], Any]]:
    """The forwards of a greedy generation as generate() runs them (a fresh DynamicCache passed as ``cache``, the
    last position's logits only), one callable each: the prefill, then ``steps`` decode steps."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    tokens = [prompt, *(torch.zeros(B, 1, dtype=torch.long) for _ in range(steps))]

    def step(ids: torch.Tensor) -> Callable[[], Any]:
        return lambda: model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits

    return [step(ids) for ids in tokens]


def _bytes(tensors: list[torch.Tensor]) -> int:
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma2"])
def test_peaks_within_two_percent_of_the_allocator(family: str) -> None:
    model = build(family)
    prompt = torch.zeros(B, P, dtype=torch.long)
    steps = _real_steps(model, prompt, N - 1)
    weights = _bytes([*model.parameters(), *model.buffers()])
    with torch.no_grad():
        above = session_peaks(steps)
    # the step's own input ids are alive beside the weights: B x P (prefill) or B x 1 (decode) int64
    truth = [weights + B * P * 8 + above[0]] + [weights + B * 8 + a for a in above[1:]]
    report = torchcost.analyze_generation(model, prompt_len=P, new_tokens=N, batch_size=B, target="cpu",
                                          reports=False)
    predicted = [report.prefill.peak_bytes] + [s.peak_bytes for s in report.samples]
    assert [s.context for s in report.samples] == [P, P + 1]
    for got, want in zip(predicted, truth, strict=True):
        assert abs(got - want) <= 0.02 * want, (family, predicted, truth)


def _counted_macs(fn: Callable[[], Any]) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    total = counter.get_total_flops()
    assert total % 2 == 0
    return total // 2


@pytest.mark.parametrize(("family", "attn"), [("llama", "sdpa"), ("gemma2", "eager"), ("deepseek_v2", "eager")])
def test_decode_macs_equal_flop_counter(family: str, attn: str) -> None:
    # FlopCounterMode counts the matrix products (2 FLOPs per MAC): every MAC torchcost counts in these models. SDPA
    # runs its math path, which FlopCounterMode sees as the products it is made of.
    # DeepSeek-V2 with dense MLPs only (first_k_dense_replace = 2 layers): FlopCounterMode counts no
    # aten::_grouped_mm, the experts' kernel; the latent attention is what this compares
    extra = {"first_k_dense_replace": 2} if family == "deepseek_v2" else {}
    model = build(family, attn=attn, dtype=torch.bfloat16 if family == "deepseek_v2" else torch.float32, **extra)
    new = 6
    steps = _real_steps(model, torch.zeros(B, P, dtype=torch.long), new - 1)
    with sdpa_kernel(SDPBackend.MATH):
        counted = [_counted_macs(step) for step in steps]
    report = torchcost.analyze_generation(model, prompt_len=P, new_tokens=new, batch_size=B, target="cpu",
                                          reports=False)
    assert report.prefill.macs == counted[0]
    assert report.decode_first is not None and report.decode_last is not None
    assert report.decode_first.macs == counted[1]  # context 12
    assert report.decode_last.macs == counted[-1]  # context 16
    assert report.decode_macs == sum(counted[1:])  # all five steps, in closed form


def test_decode_macs_by_hand() -> None:
    model = build("llama")
    h, kv, hd, inter, heads, vocab, layers = 64, 2, 16, 128, 4, 128, 2
    # one decode step at context c, per sequence: per layer q and o projections h x h each, k and v h x (kv x hd)
    # each, the MLP's three h x inter products, attention Q K^T and P V over the c + 1 keys: heads x (c + 1) x hd each;
    # then the head's h x vocab for the one position
    def step(c: int) -> int:
        per_layer = 2 * h * h + 2 * h * kv * hd + 3 * h * inter + 2 * heads * (c + 1) * hd
        return B * (layers * per_layer + h * vocab)

    assert step(12) == 3 * (2 * (8192 + 4096 + 24576 + 1664) + 8192) == 255_744
    report = torchcost.analyze_generation(model, prompt_len=12, new_tokens=101, batch_size=B, target="cpu",
                                          reports=False)
    assert report.decode_first is not None and report.decode_last is not None
    assert report.decode_first.macs == step(12)
    assert report.decode_last.macs == step(111)
    # 100 steps at contexts 12..111: the sum of an affine sequence
    assert report.decode_macs == sum(step(c) for c in range(12, 112))
    assert len(report.samples) < 10  # not every step was run
