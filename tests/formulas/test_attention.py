"""Attention (formulas/attention.py), and attention written out by hand, priced op by op.

For queries (B, H_q, L, E), keys (B, H_kv, S, E), values (B, H_kv, S, E_v): R = B*H_q*L query rows, R*S scores.
MACs = R*S*E (Q K^T) + R*S*E_v (P V). Other FLOPs: R*S scaling, R*S mask add (attn_mask or is_causal, counted dense),
5*R*S softmax, 2*R*S dropout. GQA (H_kv < H_q) costs what full multi-head attention with H_q heads costs.

The shapes used throughout: B=2, H_q=4, L=5, E=8; H_kv=2 (GQA) or 4, S=6, E_v=3, so R = 2*4*5 = 40, R*S = 240 and
MACs = 240*8 + 240*3 = 1,920 + 720 = 2,640.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tests.formulas._check import analyze_both, fn_both

MACS = 240 * 8 + 240 * 3  # = 2,640
SCORES = 2 * 4 * 5 * 6  # R*S = 240


def _qkv(h_kv: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(2, 4, 5, 8), torch.randn(2, h_kv, 6, 8), torch.randn(2, h_kv, 6, 3)


def test_sdpa_gqa_plain() -> None:
    r = fn_both(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), *_qkv())
    assert r.macs == MACS == 2_640
    # scaling 240 + softmax 5*240 = 1,440
    assert r.flops == 2 * 2_640 + SCORES + 5 * SCORES == 6_720
    assert r.uncounted == ()
    assert [o.op for o in r.ops] == ["aten::scaled_dot_product_attention"]  # priced as a whole ...
    assert "aten::bmm" in {o.op for o in r.enclosed_ops}  # ... and what it lowered to is enclosed, not counted twice


def test_gqa_costs_the_same_as_repeated_kv_heads() -> None:
    q, k, v = _qkv()
    gqa = fn_both(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), q, k, v)
    full = fn_both(F.scaled_dot_product_attention, q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1))
    assert gqa.macs == full.macs == 2_640  # every query head multiplies against its (shared) key/value head
    assert gqa.flops == full.flops == 6_720


def test_sdpa_causal_counts_the_dense_mask() -> None:
    r = fn_both(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), *_qkv())
    assert r.macs == 2_640  # dense: the masked half of the scores is computed and thrown away, as every kernel does
    assert r.flops == 2 * 2_640 + SCORES + SCORES + 5 * SCORES == 6_960  # + the mask add on all 240 scores


def test_sdpa_with_mask() -> None:
    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    q, k, v = _qkv()
    bool_mask = fn_both(fn, q, k, v, torch.ones(5, 6, dtype=torch.bool))
    float_mask = fn_both(fn, q, k, v, torch.zeros(2, 1, 5, 6))
    assert bool_mask.flops == float_mask.flops == 6_960  # 6,720 + 240 mask adds


def test_sdpa_dropout_in_train_mode() -> None:
    r = fn_both(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.5), *_qkv(4), mode="train")
    assert r.macs == 2_640
    assert r.flops == 6_720 + 2 * SCORES == 7_200  # dropout: multiply by the mask and by 1/(1-p) on every score


def test_manual_attention_matches_the_sdpa_formula() -> None:
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        return scores.softmax(-1) @ v

    r = fn_both(attend, *_qkv(4))
    ops = {o.op: o for o in r.ops}
    assert ops["aten::bmm"].macs == 2 * 4 * 5 * 6 * 8 + 2 * 4 * 5 * 6 * 3 == 2_640  # Q K^T 1,920 + P V 720
    assert ops["aten::div"].flops == SCORES == 240  # / sqrt(E) on every score
    assert ops["aten::_softmax"].flops == 5 * SCORES == 1_200
    assert r.flops == 6_720  # the same arithmetic as F.scaled_dot_product_attention, counted the same
    assert r.uncounted == ()


class SelfAttention(nn.Module):
    """Calls nn.MultiheadAttention with query is key is value, as encoder layers do: the case its fused fast path
    would take in eval mode, were analyze() not to switch the fast path off."""

    def __init__(self, need_weights: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=self.need_weights)[0]


# nn.MultiheadAttention(8, 2) on x (2, 5, 8): 10 tokens; heads 2 of dim 4; R = 2*2*5 = 20 rows, R*S = 20*5 = 100.
IN_PROJ = 10 * 8 * (3 * 8)  # q, k, v projections: 1,920 MACs, + 3*80 = 240 bias adds
ATTN = 100 * 4 + 100 * 4  # Q K^T + P V = 800 MACs
OUT_PROJ = 10 * 8 * 8  # 640 MACs, + 80 bias adds


def test_multihead_attention_slow_path_with_weights() -> None:
    r = analyze_both(SelfAttention(need_weights=True), torch.randn(2, 5, 8))
    assert "aten::_native_multi_head_attention" not in {o.op for o in r.ops}  # the fused fast path did not run
    assert r.macs == IN_PROJ + ATTN + OUT_PROJ == 3_360
    # 2*3,360 + bias 240 + 80; q scaled by 1/sqrt(4) before Q K^T: 2*2*5*4 = 80; softmax 5*100 = 500;
    # attention weights averaged over the 2 heads: mean of 2*2*5*5 = 100 elements into 50 = 100
    assert r.flops == 6_720 + 240 + 80 + 80 + 500 + 100 == 7_720
    assert r.uncounted == ()
    assert torch.backends.mha.get_fastpath_enabled()  # the flag analyze() turned off is back on


def test_multihead_attention_slow_path_without_weights() -> None:
    # need_weights=False calls F.scaled_dot_product_attention inside F.multi_head_attention_forward; analyze() catches
    # it there too, so it is priced by the attention formula on CPU and on meta alike: scaling 100 + softmax 5*100
    r = analyze_both(SelfAttention(need_weights=False), torch.randn(2, 5, 8))
    assert "aten::scaled_dot_product_attention" in {o.op for o in r.ops}
    assert r.macs == IN_PROJ + ATTN + OUT_PROJ == 3_360
    assert r.flops == 6_720 + 240 + 80 + 100 + 500 == 7_640
    assert r.uncounted == ()


def test_transformer_encoder_layer_meta_equals_real() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    r = analyze_both(layer, torch.randn(2, 5, 8))
    # self-attention 3,360 (as above) + feed-forward 10 tokens * (8*16 + 16*8) = 2,560
    assert r.macs == 3_360 + 10 * (8 * 16 + 16 * 8) == 5_920
    assert r.uncounted == ()
