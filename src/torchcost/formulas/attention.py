"""Scaled dot-product attention, counted the same whichever kernel runs it.

For queries (..., H_q, L, E), keys (..., H_kv, S, E) and values (..., H_kv, S, E_v), with R = (...) * H_q * L query
rows and R * S scores:
  MACs        = R * S * E  (Q K^T)  +  R * S * E_v  (P V)
  other FLOPs = R * S  (scaling the scores)
              + R * S  if a mask is applied (attn_mask given, or is_causal: the mask is added to every score)
              + 5 * R * S  (softmax, see pointwise)
              + 2 * R * S  if dropout_p > 0 (F.scaled_dot_product_attention applies it whatever the module's mode)
A causal mask is counted dense: all L * S scores, as the math kernel computes them and as torch.utils.flop_counter
counts them. Kernels that skip fully masked blocks (flash) do about half of the Q K^T and P V work for a square
causal mask; that saving depends on the kernel, and is not taken off.
Grouped-query attention (H_kv < H_q) costs the same as full multi-head attention with H_q heads: every query head
computes its own L * S scores against its (shared) key head and its own outputs from the shared value head; sharing
saves key/value projections and memory, not attention arithmetic.

``F.scaled_dot_product_attention`` is caught before it is lowered to a backend kernel, so CPU, CUDA and meta runs
count it identically; the fused aten kernels are priced by the same function in case they are called directly (the
variable-length flash/efficient forms with cumulative sequence lengths are priced as one sequence of the total
length: how the tokens split into sequences is data).
"""

from __future__ import annotations

import math

import torch

from torchcost.formulas.registry import Cost, OpCall, register_many

SOFTMAX = 5
DROPOUT = 2


def attention_cost(
    rows: int, keys: int, e: int, e_v: int, *, masked: bool, dropout: bool
) -> Cost:
    scores = rows * keys
    other = scores + (scores if masked else 0) + SOFTMAX * scores + (DROPOUT * scores if dropout else 0)
    return Cost(macs=scores * e + scores * e_v, other_flops=other)


def _heads_first(call: OpCall, mask_arg: str) -> Cost:
    q: torch.Tensor = call.arg("query")
    k: torch.Tensor = call.arg("key")
    v: torch.Tensor = call.arg("value")
    masked = call.arg(mask_arg) is not None or bool(call.arg("is_causal", False))
    dropout = float(call.arg("dropout_p", 0.0) or 0.0) > 0
    rows = math.prod(int(s) for s in q.shape[:-1])
    return attention_cost(rows, int(k.shape[-2]), int(q.shape[-1]), int(v.shape[-1]), masked=masked, dropout=dropout)


def _seq_first(call: OpCall) -> Cost:
    # _flash_attention_forward / _efficient_attention_forward: (B, L, H, E)
    q: torch.Tensor = call.arg("query")
    k: torch.Tensor = call.arg("key")
    v: torch.Tensor = call.arg("value")
    causal = bool(call.arg("is_causal", False)) or int(call.arg("custom_mask_type", 0) or 0) != 0
    masked = causal or call.arg("bias") is not None
    dropout = float(call.arg("dropout_p", 0.0) or 0.0) > 0
    rows = math.prod(int(s) for s in q.shape[:-1])
    return attention_cost(rows, int(k.shape[-3]), int(q.shape[-1]), int(v.shape[-1]), masked=masked, dropout=dropout)


register_many(["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
               "aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_attention_math",
               "aten::_scaled_dot_product_fused_attention_overrideable"],
              lambda call: _heads_first(call, "attn_mask"))
register_many(["aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_cudnn_attention"],
              lambda call: _heads_first(call, "attn_bias"))
register_many(["aten::_flash_attention_forward", "aten::_efficient_attention_forward"], _seq_first)
