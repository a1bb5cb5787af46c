"""Convolutions (formulas/conv.py): MACs = (positions the kernel is applied at) x (weight elements per position).

Forward: N * C_out * prod(out_spatial) * (C_in / groups) * prod(kernel). Transposed: N * C_in * prod(in_spatial) *
(C_out / groups) * prod(kernel). Bias: 1 FLOP per output element. FLOPs = 2 * MACs + bias adds.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import torchcost
from tests.formulas._check import analyze_both, fn_both
from torchcost.shapes import TensorSpec


def _shape(r: torchcost.CostReport, name: str = "") -> tuple[int, ...]:
    spec = r.module(name).output_shape
    assert isinstance(spec, TensorSpec)
    return spec.shape


# The standard_conv and depthwise_separable examples of torchcost.examples, derived once here: on 1x3x64x64, padding 1
# keeps 64x64. tests/test_tutorials.py checks the examples against these; tests/test_compat.py and test_compare.py
# use them too.
STANDARD_PARAMS = 4 * 3 * 9  # Conv2d(3, 4, 3, bias=False): 4 filters of 3 * 3 * 3 = 108
STANDARD_MACS = 4 * 64 * 64 * 3 * 9  # 16,384 outputs, 27 MACs each = 442,368
DEPTHWISE_MACS = 3 * 64 * 64 * 1 * 9  # Conv2d(3, 3, 3, groups=3): C_in / groups = 1, so 9 MACs per output = 110,592
POINTWISE_MACS = 4 * 64 * 64 * 3 * 1  # Conv2d(3, 4, 1): 3 MACs per output = 49,152
SEPARABLE_PARAMS = 3 * 1 * 9 + 4 * 3 * 1  # 27 + 12 = 39
SEPARABLE_MACS = DEPTHWISE_MACS + POINTWISE_MACS  # 159,744


def test_conv1d_strided_with_bias() -> None:
    torch.manual_seed(0)
    r = analyze_both(nn.Conv1d(3, 16, 5, stride=2), torch.randn(32, 3, 1000))
    assert _shape(r) == (32, 16, 498)  # floor((1000 - 5) / 2) + 1 = 498
    assert r.params == 16 * 3 * 5 + 16 == 256
    # 32*16*498 = 254,976 outputs, each 3*5 MACs
    assert r.macs == 254_976 * 15 == 3_824_640
    # 2 * 3,824,640 + 254,976 bias adds
    assert r.flops == 7_649_280 + 254_976 == 7_904_256
    assert r.uncounted == ()


def test_conv2d_padded_without_bias() -> None:
    r = analyze_both(nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.randn(1, 3, 64, 64))
    assert _shape(r) == (1, 4, 64, 64)
    assert r.params == STANDARD_PARAMS == 108
    assert r.macs == STANDARD_MACS == 442_368  # padded border positions included: the kernel runs there
    assert r.flops == 2 * 442_368 == 884_736  # no bias
    assert r.uncounted == ()


def test_depthwise_separable_vs_standard() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False),  # depthwise
        nn.Conv2d(3, 4, 1, bias=False),  # pointwise
    )
    r = analyze_both(model, torch.randn(1, 3, 64, 64))
    assert r.params == SEPARABLE_PARAMS == 39
    assert r.module("0").macs == DEPTHWISE_MACS == 110_592  # C_in / groups = 1
    assert r.module("1").macs == POINTWISE_MACS == 49_152
    assert r.macs == SEPARABLE_MACS == 159_744  # 2.77x fewer than the standard conv (test_tutorials.py), not 8x
    assert r.flops == 2 * 159_744  # no bias


def test_depthwise_with_channel_multiplier() -> None:
    r = analyze_both(nn.Conv2d(3, 6, 3, groups=3), torch.randn(1, 3, 5, 5))
    assert _shape(r) == (1, 6, 3, 3)
    assert r.macs == 6 * 3 * 3 * (3 // 3) * 9 == 486
    assert r.flops == 2 * 486 + 6 * 3 * 3 == 1_026  # + 54 bias adds


def test_conv3d_tutorial_numbers() -> None:
    r = analyze_both(nn.Conv3d(3, 5, (4, 7, 7)), torch.randn(1, 3, 7, 60, 40))
    assert _shape(r) == (1, 5, 4, 54, 34)  # 7-4+1, 60-7+1, 40-7+1
    assert r.params == 5 * 3 * 4 * 7 * 7 + 5 == 2_945
    # 5*4*54*34 = 36,720 outputs, each 3*4*7*7 = 588 MACs
    assert r.macs == 36_720 * 588 == 21_591_360
    assert r.flops == 2 * 21_591_360 + 36_720 == 43_219_440


def test_conv3d_strided_large_on_meta_only() -> None:
    # too large to run for real in a unit test; the meta run gives shapes and counts without computing anything
    with torch.device("meta"):
        model = nn.Conv3d(3, 32, 3, stride=(1, 2, 2))
        x = torch.empty(8, 3, 10, 224, 224)
    r = torchcost.analyze(model, x)
    assert _shape(r) == (8, 32, 8, 111, 111)  # 10-3+1 = 8; floor((224-3)/2)+1 = 111
    # 8*32*8*111*111 = 25,233,408 outputs, each 3*27 = 81 MACs
    assert r.macs == 25_233_408 * 81 == 2_043_906_048
    assert r.flops == 2 * 2_043_906_048 + 25_233_408


def test_grouped_strided_dilated_padded() -> None:
    model = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)
    r = analyze_both(model, torch.randn(2, 4, 9, 9))
    assert _shape(r) == (2, 6, 4, 4)  # floor((9 + 2*1 - 2*(3-1) - 1) / 2) + 1 = 4
    assert r.params == 6 * (4 // 2) * 9 + 6 == 114
    assert r.macs == 2 * 6 * 4 * 4 * (4 // 2) * 9 == 3_456
    assert r.flops == 2 * 3_456 + 2 * 6 * 4 * 4 == 7_104  # + 192 bias adds


def test_dilated() -> None:
    r = analyze_both(nn.Conv2d(2, 3, 3, dilation=2), torch.randn(1, 2, 10, 10))
    assert _shape(r) == (1, 3, 6, 6)  # 10 - 2*(3-1) = 6
    assert r.macs == 3 * 6 * 6 * 2 * 9 == 1_944  # dilation spreads the 9 taps, it does not add any
    assert r.flops == 2 * 1_944 + 3 * 36 == 3_996


def test_reflect_padding_is_free() -> None:
    r = analyze_both(nn.Conv1d(2, 2, 3, padding=1, padding_mode="reflect"), torch.randn(1, 2, 8))
    assert _shape(r) == (1, 2, 8)
    assert r.macs == 2 * 8 * 2 * 3 == 96
    assert r.flops == 2 * 96 + 2 * 8 == 208  # the reflection pad copies data: free
    assert "aten::reflection_pad1d" in {o.op for o in r.free_ops}
    assert r.uncounted == ()


def test_functional_conv_counts_where_it_runs() -> None:
    r = fn_both(lambda x, w: F.conv2d(x, w, stride=2), torch.randn(1, 3, 7, 7), torch.randn(5, 3, 3, 3))
    assert _shape(r) == (1, 5, 3, 3)  # floor((7-3)/2)+1 = 3
    assert r.macs == 5 * 3 * 3 * 3 * 9 == 1_215
    assert r.flops == 2 * 1_215  # no bias
    assert r.root.self_macs == 1_215  # counted in the module whose forward called it


def test_conv_transpose2d_output_padding() -> None:
    model = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)
    r = analyze_both(model, torch.randn(1, 4, 5, 5))
    assert _shape(r) == (1, 6, 10, 10)  # (5-1)*2 - 2*1 + 3 + 1 = 10
    assert r.params == 4 * 6 * 9 + 6 == 222
    # every input element is scattered through C_out/groups * k = 6*9 weights: 1*4*5*5 * 6*9
    assert r.macs == 1 * 4 * 25 * 6 * 9 == 5_400
    assert r.flops == 2 * 5_400 + 6 * 10 * 10 == 11_400


def test_grouped_conv_transpose2d() -> None:
    model = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, bias=False)
    r = analyze_both(model, torch.randn(1, 4, 5, 5))
    assert _shape(r) == (1, 6, 11, 11)  # (5-1)*2 + 3 = 11
    assert r.params == 4 * (6 // 2) * 9 == 108
    assert r.macs == 1 * 4 * 25 * (6 // 2) * 9 == 2_700
    assert r.flops == 2 * 2_700


def test_conv_transpose1d() -> None:
    r = analyze_both(nn.ConvTranspose1d(3, 2, 4, stride=2), torch.randn(2, 3, 5))
    assert _shape(r) == (2, 2, 12)  # (5-1)*2 + 4 = 12
    assert r.macs == 2 * 3 * 5 * 2 * 4 == 240
    assert r.flops == 2 * 240 + 2 * 2 * 12 == 528


def test_grouped_conv_transpose3d() -> None:
    r = analyze_both(nn.ConvTranspose3d(2, 4, 2, stride=2, groups=2), torch.randn(1, 2, 3, 3, 3))
    assert _shape(r) == (1, 4, 6, 6, 6)  # (3-1)*2 + 2 = 6
    assert r.macs == 1 * 2 * 27 * (4 // 2) * 8 == 864
    assert r.flops == 2 * 864 + 4 * 216 == 2_592


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), (2, 4, 9, 9)),
        (nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), (1, 4, 5, 5)),
        (nn.Conv3d(2, 3, (2, 3, 3), padding=1), (1, 2, 4, 5, 5)),
    ],
)
def test_agrees_with_torch_flop_counter(model: nn.Module, shape: tuple[int, ...]) -> None:
    # an independent oracle: torch.utils.flop_counter counts 2 FLOPs per conv MAC and ignores the bias
    x = torch.randn(shape)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    assert torchcost.analyze(model, x).macs * 2 == counter.get_total_flops()
