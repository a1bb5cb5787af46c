"""Pooling (formulas/pool.py): a window of k elements costs k - 1 comparisons (max) or k FLOPs (average: k - 1 adds and
a divide). Fixed windows charge the full kernel volume per output, padding and ceil_mode overhang included; adaptive
windows [floor(i*L/O), ceil((i+1)*L/O)) are summed exactly; a global average pool lowers to mean (k per output).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.formulas._check import analyze_both


@pytest.mark.parametrize(
    ("model", "shape", "flops"),
    [
        # out = ceil((7 + 2*1 - 3) / 2) + 1 = 4 per side: 2 channels * 4*4 = 32 outputs, k = 9
        (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 2, 7, 7), 32 * (9 - 1)),  # 256
        (nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 2, 7, 7), 32 * 9),  # 288
        (nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (1, 2, 7, 7), 32 * 9),  # the divisor only
        # dilation 2 spreads 2x2 taps: out = floor((7 - 2*(2-1) - 1) / 2) + 1 = 3; 2*3*3 = 18 outputs, k = 4
        (nn.MaxPool2d(2, dilation=2), (1, 2, 7, 7), 18 * 3),  # 54
        (nn.MaxPool1d(2), (1, 2, 7), 2 * 3 * 1),  # out 3 per channel, k = 2: 6
        (nn.AvgPool1d(2), (1, 2, 7), 2 * 3 * 2),  # 12
        (nn.AvgPool1d(3, stride=2, padding=1), (1, 2, 7), 2 * 4 * 3),  # out floor((7+2-3)/2)+1 = 4: 24
        (nn.MaxPool3d(2), (1, 2, 4, 4, 4), 2 * 8 * 7),  # 16 outputs, k = 8: 112
        (nn.AvgPool3d((1, 2, 2)), (1, 2, 4, 4, 4), 2 * 4 * 2 * 2 * 4),  # 32 outputs, k = 4: 128
        # ceil((5 + 2 - 3) / 2) + 1 = 3 per side: 27 outputs, k = 27
        (nn.MaxPool3d(3, stride=2, padding=1, ceil_mode=True), (1, 1, 5, 5, 5), 27 * 26),  # 702
    ],
)
def test_fixed_window_pooling(model: nn.Module, shape: tuple[int, ...], flops: int) -> None:
    r = analyze_both(model, torch.randn(shape))
    assert r.macs == 0
    assert r.flops == flops
    assert r.uncounted == ()


# 7 -> 3: windows [0, 3), [2, 5), [4, 7): 3 + 3 + 3 = 9 elements summed along each dimension
@pytest.mark.parametrize(
    ("model", "shape", "flops"),
    [
        (nn.AdaptiveAvgPool1d(3), (1, 2, 7), 2 * 9),  # 18
        (nn.AdaptiveMaxPool1d(3), (1, 2, 7), 2 * (9 - 3)),  # k - 1 for each of 3 windows: 12
        (nn.AdaptiveAvgPool2d(3), (1, 2, 7, 7), 2 * 9 * 9),  # 162
        (nn.AdaptiveMaxPool2d(3), (1, 2, 7, 7), 2 * (81 - 9)),  # 144
        (nn.AdaptiveAvgPool3d(3), (1, 2, 7, 7, 7), 2 * 9**3),  # 1,458
        (nn.AdaptiveMaxPool3d(3), (1, 2, 7, 7, 7), 2 * (9**3 - 27)),  # 1,404
        # 5 -> 2: [0, 3), [2, 5) = 6; 7 -> 3: 9
        (nn.AdaptiveAvgPool2d((2, 3)), (1, 1, 5, 7), 6 * 9),  # 54
        # 3 -> 5 (upsampling): [0,1) [0,2) [1,2) [1,3) [2,3) = 1 + 2 + 1 + 2 + 1 = 7
        (nn.AdaptiveAvgPool1d(5), (1, 1, 3), 7),
        (nn.AdaptiveMaxPool1d(5), (1, 1, 3), 7 - 5),
        # global: 1x1 average lowers to mean over 49, k per output; max over 49: 48 comparisons
        (nn.AdaptiveAvgPool2d(1), (1, 2, 7, 7), 2 * 49),  # 98
        (nn.AdaptiveMaxPool2d(1), (1, 2, 7, 7), 2 * 48),  # 96
    ],
)
def test_adaptive_pooling(model: nn.Module, shape: tuple[int, ...], flops: int) -> None:
    r = analyze_both(model, torch.randn(shape))
    assert r.flops == flops
    assert r.uncounted == ()


def test_global_average_pool_lowers_to_mean() -> None:
    r = analyze_both(nn.AdaptiveAvgPool2d(1), torch.randn(1, 2, 7, 7))
    assert [o.op for o in r.ops] == ["aten::mean"]


def test_fractional_max_pool() -> None:
    r = analyze_both(nn.FractionalMaxPool2d(2, output_size=3), torch.randn(1, 2, 7, 7))
    assert r.flops == 2 * 3 * 3 * (4 - 1) == 54  # 18 outputs, 2x2 windows
    assert r.uncounted == ()
