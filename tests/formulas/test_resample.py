"""Interpolation (formulas/resample.py), per output element: d-linear 3 * (2^d - 1) (linear 3, bilinear 9,
trilinear 21), bicubic 5 cubic interpolations of 7 = 35; nearest is a copy (free); area is adaptive average pooling.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.formulas._check import analyze_both, fn_both
from torchcost.report import OpCount


@pytest.mark.parametrize(
    ("model", "shape", "flops"),
    [
        (nn.Upsample(scale_factor=2, mode="linear"), (1, 2, 4), 2 * 8 * 3),  # 16 outputs: 48
        (nn.Upsample(scale_factor=2, mode="bilinear"), (1, 2, 4, 4), 2 * 8 * 8 * 9),  # 128 outputs: 1,152
        (nn.Upsample(size=(5, 7), mode="bilinear", align_corners=True), (1, 2, 4, 4), 2 * 5 * 7 * 9),  # 630
        (nn.Upsample(scale_factor=2, mode="trilinear"), (1, 1, 2, 2, 2), 4 * 4 * 4 * 21),  # 64 outputs: 1,344
        (nn.Upsample(scale_factor=2, mode="bicubic"), (1, 2, 4, 4), 2 * 8 * 8 * 35),  # 4,480
        (nn.Upsample(scale_factor=2, mode="nearest"), (1, 2, 4, 4), 0),  # copies
        (nn.Upsample(scale_factor=2, mode="nearest-exact"), (1, 2, 4, 4), 0),
    ],
)
def test_upsample(model: nn.Module, shape: tuple[int, ...], flops: int) -> None:
    r = analyze_both(model, torch.randn(shape))
    assert r.macs == 0
    assert r.flops == flops
    assert r.uncounted == ()


def test_area_is_adaptive_average_pooling() -> None:
    # 4 -> 3: windows [0, 2), [1, 3), [2, 4): 6 elements per dimension, 36 per plane, 2 planes
    r = fn_both(lambda x: F.interpolate(x, size=(3, 3), mode="area"), torch.randn(1, 2, 4, 4))
    assert r.flops == 2 * 6 * 6 == 72


def test_antialiased_resize_is_listed_uncounted() -> None:
    r = fn_both(lambda x: F.interpolate(x, size=(3, 3), mode="bilinear", antialias=True), torch.randn(1, 2, 8, 8))
    assert r.uncounted == (OpCount("aten::_upsample_bilinear2d_aa", 1),)
