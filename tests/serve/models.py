"""Tiny configs of each architecture family the serving analysis covers (random weights, 2-3 layers, hidden 64),
built on the CPU. Shared by the serving tests and benchmarks/serving_truth.py."""

from __future__ import annotations

from typing import Any

import torch
import transformers
from torch import nn

__all__ = ["FAMILIES", "HEAD_DIM", "KV_HEADS", "LAYERS", "WINDOW", "build", "config"]

LAYERS = 2
KV_HEADS = 2
HEAD_DIM = 16
WINDOW = 8  # the sliding window of the Mistral- and Gemma-style configs: shorter than the prompts the tests use
KV_LORA = 16  # DeepSeek-V2's latent width (kv_lora_rank) and its rotary part (qk_rope_head_dim)
ROPE = 8

_COMMON: dict[str, Any] = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                           "num_key_value_heads": KV_HEADS, "vocab_size": 128, "num_hidden_layers": LAYERS,
                           "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}

FAMILIES = ("llama", "mistral", "gemma2", "gemma3", "deepseek_v2", "qwen3_moe", "mixtral", "jamba")
MAMBA_EXPAND, MAMBA_CONV, MAMBA_STATE = 2, 4, 8  # the hybrid's Mamba layers: inner width 2 x hidden, kernel, state


def config(family: str, **overrides: Any) -> Any:
    """The tiny config of ``family``."""
    t = transformers
    kw = {**_COMMON, **overrides}
    if family == "llama":
        return t.LlamaConfig(**kw)
    if family == "mistral":
        return t.MistralConfig(sliding_window=WINDOW, **kw)
    if family == "mixtral":
        return t.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **kw)
    if family == "gemma2":  # layers alternate sliding (even) and global (odd)
        return t.Gemma2Config(head_dim=HEAD_DIM, sliding_window=WINDOW, **kw)
    if family == "gemma3":
        kw["num_hidden_layers"] = 3
        return t.Gemma3TextConfig(head_dim=HEAD_DIM, sliding_window=WINDOW,
                                  layer_types=["sliding_attention", "sliding_attention", "full_attention"], **kw)
    if family == "qwen3_moe":
        return t.Qwen3MoeConfig(head_dim=HEAD_DIM, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                                **kw)
    if family == "jamba":  # 4 layers: Mamba at 0 and 2, attention at 1 and 3 (its KV heads and head size as above)
        kw["num_hidden_layers"] = 4
        return t.JambaConfig(num_experts=2, expert_layer_period=2, attn_layer_period=2, attn_layer_offset=1,
                             mamba_d_state=MAMBA_STATE, mamba_d_conv=MAMBA_CONV, mamba_expand=MAMBA_EXPAND,
                             use_mamba_kernels=False, **kw)
    if family == "deepseek_v2":
        kw["num_key_value_heads"] = 4
        latent = {"moe_intermediate_size": 32, "kv_lora_rank": KV_LORA, "q_lora_rank": None, "qk_rope_head_dim": ROPE,
                  "qk_nope_head_dim": 16, "v_head_dim": 16, "n_routed_experts": 4, "num_experts_per_tok": 2,
                  "n_shared_experts": 1, "first_k_dense_replace": 1}
        return t.DeepseekV2Config(**{**latent, **kw})
    raise KeyError(family)


def build(family: str, dtype: torch.dtype = torch.float32, attn: str | None = None, **overrides: Any) -> nn.Module:
    """The tiny causal LM of ``family``, random weights (seed 0), in eval mode."""
    torch.manual_seed(0)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn is not None:
        kwargs["attn_implementation"] = attn
    model: nn.Module = transformers.AutoModelForCausalLM.from_config(config(family, **overrides), **kwargs)
    return model.eval()
