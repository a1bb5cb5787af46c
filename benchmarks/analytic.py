"""Analytic cases: small models whose exact parameter and MAC counts are derived by hand, below each case.

The convention (docs/conventions.md): a MAC is one multiply-accumulate of a convolution, matrix product, attention
product (Q K^T and P V) or recurrent gate product. Bias adds, normalisation, activations and pooling are FLOPs, not
MACs. Notation: C_in/C_out channels, K kernel, G groups, L_out/H_out/W_out output sizes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.models import Built, Case, _seeded

__all__ = ["analytic_cases"]


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


class _SDPA(nn.Module):
    """Functional attention, no parameters."""

    def __init__(self, gqa: bool = False) -> None:
        super().__init__()
        self.gqa = gqa

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.gqa:
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return F.scaled_dot_product_attention(q, k, v)


class _SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(64, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(1000, 64)
        self.head = nn.Linear(64, 1000, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(64, 32))
        self.w2 = nn.Parameter(torch.randn(64, 48))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.w1)  # (2, 16, 64)
        g = h @ self.w2  # (2, 16, 48)
        s = torch.einsum("bld,bmd->blm", g, g)  # (2, 16, 16)
        return torch.bmm(s, g)  # (2, 16, 48)


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(torch.relu(self.block(x)))


def _recurrent(module: nn.Module) -> nn.Module:
    class _Out(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = module

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.rnn(x)[0]
            return out

    return _Out()


def _in_container(build: Callable[[], Built]) -> Callable[[], Built]:
    """A bare layer is put in an nn.Sequential, as it would sit in any model (torchsummary, for one, hooks only the
    submodules of the model it is given, and crashes on a model with none)."""

    def wrapped() -> Built:
        built = build()
        model = built.model
        if type(model).__module__.startswith("torch.nn.") and not any(True for _ in model.children()):
            built.model = nn.Sequential(built.model)
        return built

    return wrapped


def analytic_cases() -> list[Case]:
    cases = []

    def add(name: str, inp: str, build: Callable[[], Built], params: int, macs: int, derivation: str,
            quick: bool = False) -> None:
        cases.append(Case(f"analytic:{name}", "analytic", inp, _seeded(_in_container(build)), params=params,
                          macs=macs, derivation=derivation, quick=quick))

    # Standard convolution. params 4*3*3*3 = 108; every one of the 64*64 output positions of each of the 4 output
    # channels takes 3*3*3 = 27 MACs: 64*64*4*27 = 442,368.
    add("conv2d", "Conv2d(3,4,3,p=1,bias=False) on 1x3x64x64",
        lambda: Built(nn.Conv2d(3, 4, 3, padding=1, bias=False), (_x(1, 3, 64, 64),)),
        params=4 * 3 * 3 * 3, macs=64 * 64 * 4 * 27, derivation="64*64*4*(3*3*3)", quick=True)

    # Depthwise-separable: depthwise 3x3 (groups=3) has 3*1*3*3 = 27 params and 64*64*3*9 = 110,592 MACs;
    # pointwise 1x1 3->4 has 12 params and 64*64*4*3 = 49,152 MACs. Total 39 params, 159,744 MACs (2.77x fewer).
    add("depthwise_separable", "Conv2d(3,3,3,p=1,groups=3) + Conv2d(3,4,1), no bias, on 1x3x64x64",
        lambda: Built(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False),
                                    nn.Conv2d(3, 4, 1, bias=False)), (_x(1, 3, 64, 64),)),
        params=27 + 12, macs=64 * 64 * 3 * 9 + 64 * 64 * 4 * 3, derivation="64*64*3*9 + 64*64*4*3")

    # Strided 1-d: L_out = floor((1000 - 5) / 2) + 1 = 498. params 16*3*5 + 16 = 256.
    # MACs: 32 sequences * 498 positions * 16 channels * (3*5) = 3,824,640. The bias is not a MAC.
    add("conv1d_strided", "Conv1d(3,16,5,stride=2) on 32x3x1000",
        lambda: Built(nn.Conv1d(3, 16, 5, stride=2), (_x(32, 3, 1000),)),
        params=16 * 3 * 5 + 16, macs=32 * 498 * 16 * 15, derivation="32*498*16*(3*5)")

    # 3-d: output 1x5x(7-4+1)x(60-7+1)x(40-7+1) = 1x5x4x54x34. params 5*3*4*7*7 + 5 = 2,945.
    # MACs: 4*54*34 positions * 5 channels * (3*4*7*7 = 588) = 21,591,360.
    add("conv3d", "Conv3d(3,5,(4,7,7)) on 1x3x7x60x40",
        lambda: Built(nn.Conv3d(3, 5, (4, 7, 7)), (_x(1, 3, 7, 60, 40),)),
        params=5 * 3 * 4 * 7 * 7 + 5, macs=4 * 54 * 34 * 5 * 588, derivation="4*54*34*5*(3*4*7*7)")

    # Transposed: H_out = (16-1)*2 - 2*1 + 3 + 1 = 32. params 8*4*3*3 + 4 = 292. Each of the 16*16*8 input elements is
    # multiplied by its 4*3*3 kernel weights once: 16*16*8*36 = 73,728 MACs (not 32*32*4*8*9 = 294,912: a transposed
    # convolution scatters from the input, it does not gather a full window for every output position).
    add("conv_transpose2d", "ConvTranspose2d(8,4,3,stride=2,p=1,output_padding=1) on 1x8x16x16",
        lambda: Built(nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1), (_x(1, 8, 16, 16),)),
        params=8 * 4 * 9 + 4, macs=16 * 16 * 8 * 4 * 9, derivation="16*16*8*(4*3*3)")

    # Dilated, grouped: padding 2 with dilation 2 keeps 32x32. Each output channel sees C_in/G = 2 channels:
    # params 16*2*3*3 + 16 = 304; MACs 32*32*16*(2*9) = 294,912.
    add("conv2d_dilated_grouped", "Conv2d(8,16,3,p=2,dilation=2,groups=4) on 1x8x32x32",
        lambda: Built(nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=4), (_x(1, 8, 32, 32),)),
        params=16 * 2 * 9 + 16, macs=32 * 32 * 16 * 2 * 9, derivation="32*32*16*(8/4*3*3)")

    # Conv + BN + ReLU + pool: only the convolution has MACs: 32*32*8*27 = 221,184. params conv 8*27 + 8 = 224,
    # BN weight + bias 16: 240 (running stats are buffers).
    add("conv_bn_relu_pool", "Conv2d(3,8,3,p=1) + BatchNorm2d + ReLU + MaxPool2d(2) on 1x3x32x32",
        lambda: Built(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)),
                      (_x(1, 3, 32, 32),)),
        params=224 + 16, macs=32 * 32 * 8 * 27, derivation="32*32*8*(3*3*3); BN/ReLU/pool are not MACs")

    # Linear on a 3-d input: every one of the 4*32 rows is multiplied by the 128x256 weight: 4*32*128*256 = 4,194,304
    # MACs. params 128*256 + 256 = 33,024.
    add("linear_3d", "Linear(128,256) on 4x32x128",
        lambda: Built(nn.Linear(128, 256), (_x(4, 32, 128),)),
        params=128 * 256 + 256, macs=4 * 32 * 128 * 256, derivation="(4*32)*128*256", quick=True)

    # LSTM, 2 layers, bidirectional, hidden H=64, input I=32, 10 steps. Per step and direction a layer costs
    # 4H*I_layer + 4H*H MACs (four gates, input and recurrent products): layer 0: 256*32 + 256*64 = 24,576;
    # layer 1 (input 2H = 128): 256*128 + 256*64 = 49,152. Total 10 steps * 2 directions * 73,728 = 1,474,560.
    # params per direction: layer 0 256*32 + 256*64 + 2*256 = 25,088; layer 1 256*128 + 256*64 + 512 = 49,664;
    # * 2 directions = 149,504.
    add("lstm", "LSTM(32,64,num_layers=2,bidirectional) on 1x10x32",
        lambda: Built(_recurrent(nn.LSTM(32, 64, num_layers=2, bidirectional=True, batch_first=True)),
                      (_x(1, 10, 32),)),
        params=2 * (25_088 + 49_664), macs=10 * 2 * (24_576 + 49_152), derivation="10*2*(4*64*(32+64) + 4*64*(128+64))")

    # GRU, hidden 64, input 32, 10 steps: three gates, 3H*I + 3H*H = 192*32 + 192*64 = 18,432 MACs per step:
    # 184,320. params 192*32 + 192*64 + 2*192 = 18,816.
    add("gru", "GRU(32,64) on 1x10x32",
        lambda: Built(_recurrent(nn.GRU(32, 64, batch_first=True)), (_x(1, 10, 32),)),
        params=192 * 32 + 192 * 64 + 2 * 192, macs=10 * 192 * (32 + 64), derivation="10*3*64*(32+64)")

    # F.scaled_dot_product_attention, q/k/v 1x8x128x64: Q K^T is 8 heads * 128*128 scores * 64 = 8,388,608 MACs,
    # P V the same: 16,777,216. No parameters.
    add("sdpa", "F.scaled_dot_product_attention, q/k/v 1x8x128x64",
        lambda: Built(_SDPA(), (_x(1, 8, 128, 64), _x(1, 8, 128, 64), _x(1, 8, 128, 64))),
        params=0, macs=2 * 8 * 128 * 128 * 64, derivation="2 * 8*128*128*64")

    # Grouped-query attention: 8 query heads share 2 key/value heads; every query head still multiplies 128 keys of
    # width 64: the same 2 * 8*128*128*64 = 16,777,216 MACs.
    add("sdpa_gqa", "F.scaled_dot_product_attention(enable_gqa), q 1x8x128x64, k/v 1x2x128x64",
        lambda: Built(_SDPA(gqa=True), (_x(1, 8, 128, 64), _x(1, 2, 128, 64), _x(1, 2, 128, 64))),
        params=0, macs=2 * 8 * 128 * 128 * 64, derivation="2 * 8*128*128*64")

    # nn.MultiheadAttention(64, 4 heads of 16), self-attention on 1x50x64: in-projection 50*64*192 = 614,400;
    # Q K^T 4*50*50*16 = 160,000; P V 160,000; out-projection 50*64*64 = 204,800. Total 1,139,200.
    # params 192*64 + 192 + 64*64 + 64 = 16,640.
    add("multihead_attention", "nn.MultiheadAttention(64,4) self-attention on 1x50x64",
        lambda: Built(_SelfAttention(), (_x(1, 50, 64),)),
        params=192 * 64 + 192 + 64 * 64 + 64, macs=50 * 64 * 192 + 2 * 4 * 50 * 50 * 16 + 50 * 64 * 64,
        derivation="50*64*192 + 2*4*50*50*16 + 50*64*64")

    # Tied weights: the 1000x64 embedding matrix is also the output head's weight: 64,000 parameters, counted once.
    # The lookup is free; the head costs 16 tokens * 64 * 1000 = 1,024,000 MACs.
    add("tied_weights", "Embedding(1000,64) + Linear(64,1000) sharing the weight; ids 1x16",
        lambda: Built(_Tied(), (torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(2)),)),
        params=1000 * 64, macs=16 * 64 * 1000, derivation="16*64*1000; params 1000*64 once")

    # Functional ops inside forward, x 2x16x32: F.linear 2*16*64*32 = 65,536; @ 2*16*48*64 = 98,304;
    # einsum bld,bmd->blm 2*16*16*48 = 24,576; bmm 2*16*48*16 = 24,576. Total 212,992. params 64*32 + 64*48 = 5,120.
    add("functional_ops", "F.linear, @, einsum, bmm on 2x16x32",
        lambda: Built(_Functional(), (_x(2, 16, 32),)),
        params=64 * 32 + 64 * 48, macs=65_536 + 98_304 + 24_576 + 24_576,
        derivation="2*16*64*32 + 2*16*48*64 + 2*16*16*48 + 2*16*48*16")

    # One Linear(64,64) called twice on 1x64: 2 * 64*64 = 8,192 MACs; its 4,160 parameters counted once.
    add("called_twice", "Linear(64,64) applied twice on 1x64",
        lambda: Built(_Twice(), (_x(1, 64),)),
        params=64 * 64 + 64, macs=2 * 64 * 64, derivation="2*64*64")
    return cases
