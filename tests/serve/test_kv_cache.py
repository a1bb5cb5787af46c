"""KV cache bytes: torchcost's (read from the cache tensors after meta runs) against the cache a REAL generate()
leaves on the CPU (random weights, tiny configs), to the byte, and against the hand formula of each family."""

from __future__ import annotations

import pytest
import torch

import torchcost
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
from tests.serve.truth import cache_state_tensors, distinct_storage_bytes

B, P, N = 2, 12, 6  # batch, prompt, new tokens: the prompt is longer than the sliding window (8)
T = P + N - 1  # tokens the cache holds at the end: the prefill caches P, each of the N - 1 decode steps one more
HALF = torch.bfloat16  # the mixture-of-experts kernels run on meta in half precision only


def real_cache_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct storages of the cache a real greedy generate() leaves (N tokens, none stopped early)."""
    ids = torch.randint(3, 128, (B, P), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N, min_new_tokens=N,
                             do_sample=False, return_dict_in_generate=True)
    assert out.sequences.shape == (B, P + N)
    return distinct_storage_bytes(cache_state_tensors(out.cache))


def generation(model: torch.nn.Module) -> torchcost.GenerationReport:
    report = torchcost.analyze_generation(model, prompt_len=P, new_tokens=N, batch_size=B, target="cpu",
                                          reports=False)
    assert report.final_context == T
    return report


def kv_bytes(model: torch.nn.Module) -> int:
    return generation(model).kv_cache_bytes


@pytest.mark.parametrize(("family", "dtype", "bytes_"), [("llama", torch.float32, 4), ("qwen3_moe", HALF, 2),
                                                         ("mixtral", HALF, 2)])
def test_standard_gqa(family: str, dtype: torch.dtype, bytes_: int) -> None:
    model = build(family, dtype)
    # 2 (K and V) x layers x kv_heads x head_dim x tokens x batch x bytes
    hand = 2 * LAYERS * KV_HEADS * HEAD_DIM * T * B * bytes_
    assert hand == 2 * 2 * 2 * 16 * 17 * 2 * bytes_
    assert kv_bytes(model) == real_cache_bytes(model) == hand


def test_sliding_window_mistral() -> None:
    model = build("mistral")
    # every layer slides: after a decode step it keeps a view of its last W - 1 = 7 tokens, of the storage made by
    # concatenating them with the new token, so W = 8 tokens are allocated, not T = 17:
    # 2 x layers x kv_heads x head_dim x W x batch x 4 bytes
    hand = 2 * LAYERS * KV_HEADS * HEAD_DIM * WINDOW * B * 4
    assert hand == 8192
    standard = 2 * LAYERS * KV_HEADS * HEAD_DIM * T * B * 4  # what a per-token formula says: 17,408
    assert kv_bytes(model) == real_cache_bytes(model) == hand < standard


def test_sliding_and_global_gemma2() -> None:
    model = build("gemma2")
    # layer 0 slides (W = 8 tokens allocated), layer 1 is global (T = 17): 2 x kv_heads x head_dim x batch x 4 bytes
    # per token and layer = 512; 512 x (8 + 17) = 12,800
    per_token_layer = 2 * KV_HEADS * HEAD_DIM * B * 4
    hand = per_token_layer * (WINDOW + T)
    assert hand == 12_800
    report = generation(model)
    assert report.kv_cache_bytes == real_cache_bytes(model) == hand
    groups = {g.kind: g for g in report.cache_groups}
    assert groups["sliding attention"].bytes == per_token_layer * WINDOW
    assert groups["sliding attention"].tokens == WINDOW - 1  # the view; its storage holds W
    assert groups["sliding attention"].bytes_per_token == 0  # full window: no growth
    assert groups["full attention"].bytes == per_token_layer * T
    assert groups["full attention"].bytes_per_token == per_token_layer // B  # per sequence


def test_sliding_pattern_gemma3() -> None:
    model = build("gemma3")  # layers: sliding, sliding, global
    per_token_layer = 2 * KV_HEADS * HEAD_DIM * B * 4
    hand = per_token_layer * (2 * WINDOW + T)
    assert hand == 16_896
    assert kv_bytes(model) == real_cache_bytes(model) == hand


def test_latent_attention_deepseek_v2() -> None:
    model = build("deepseek_v2", HALF)
    # multi-head latent attention caches, per layer and token, the compressed latent (kv_lora_rank = 16) and the
    # shared rotary key (qk_rope_head_dim = 8), one "head" each: layers x (16 + 8) x tokens x batch x 2 bytes
    hand = LAYERS * (KV_LORA + ROPE) * T * B * 2
    assert hand == 3264
    # the standard formula with its 4 heads of (16 + 8)-wide keys and 16-wide values would say 2 x 4 x (24 + 16) / 2
    # ... = layers x heads x (24 + 16) x tokens x batch x 2 = 21,760: 6.7x the latent cache
    standard = LAYERS * 4 * (24 + 16) * T * B * 2
    assert standard == 21_760
    assert kv_bytes(model) == real_cache_bytes(model) == hand


def test_hybrid_jamba() -> None:
    model = build("jamba", HALF)
    # two attention layers hold K and V of every token: 2 x 2 layers x kv_heads x head_dim x T x batch x 2 bytes;
    # two Mamba layers hold a fixed state whatever the length: the convolution's last d_conv inputs of the inner
    # width (2 x hidden 64 = 128), in bf16, and the SSM state, 128 x d_state, kept in float32
    attention = 2 * 2 * KV_HEADS * HEAD_DIM * T * B * 2
    inner = MAMBA_EXPAND * 64
    mamba = 2 * (B * inner * MAMBA_CONV * 2 + B * inner * MAMBA_STATE * 4)
    assert (attention, mamba) == (8704, 20_480)
    report = generation(model)
    assert report.kv_cache_bytes == real_cache_bytes(model) == attention + mamba
    groups = {g.kind: g for g in report.cache_groups}
    assert groups["linear attention"].bytes == mamba and groups["linear attention"].bytes_per_token == 0
