"""Interpolation (formulas/resample.py), per output element: d-linear 3 * (2^d - 1) (linear 3, bilinear 9,
trilinear 21), bicubic 5 cubic interpolations of 7 = 35; nearest is a copy (free); area is adaptive average pooling.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchcost
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


# -- grid sampling (round 33: uncounted in torchvision's RAFT) -------------------------------------------------------
# input (2, 3, 5, 6), grid (2, 4, 7, 2): 2*4*7 = 56 locations, 2*3*4*7 = 168 output elements


class GridSample(nn.Module):
    def __init__(self, **options: object) -> None:
        super().__init__()
        self.options = options

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(x, grid, **self.options)  # type: ignore[arg-type]


@pytest.mark.parametrize(("options", "flops"), [
    # per location 2 coordinates unnormalised (4 each) + 16 for the bilinear corners and weights; 7 per element
    ({"align_corners": False}, 56 * (2 * 4 + 16) + 168 * 7),  # 2,520
    # align_corners unnormalises in 3; border clips each coordinate (2)
    ({"align_corners": True, "padding_mode": "border"}, 56 * (2 * 3 + 16 + 2 * 2) + 168 * 7),  # 2,632
    # nearest: each coordinate rounded (1) and reflected and clipped (9); a copy per element
    ({"align_corners": False, "mode": "nearest", "padding_mode": "reflection"}, 56 * (2 * 4 + 2 * (1 + 9))),
    # bicubic: 54 per location for the coefficients, 35 per element
    ({"align_corners": False, "mode": "bicubic"}, 56 * (2 * 4 + 54) + 168 * 35),  # 9,352
])
def test_grid_sample(options: dict[str, object], flops: int) -> None:
    r = analyze_both(GridSample(**options), torch.randn(2, 3, 5, 6), torch.rand(2, 4, 7, 2) * 2 - 1)
    assert r.flops == flops and r.macs == 0 and r.uncounted == ()


def test_grid_sample_3d() -> None:
    # input (1, 2, 3, 4, 5), grid (1, 2, 3, 4, 3): 24 locations, 48 elements; 3 coordinates of 3 (align_corners),
    # 46 for the 8 corners' weights; 15 per element
    r = analyze_both(GridSample(align_corners=True), torch.randn(1, 2, 3, 4, 5), torch.rand(1, 2, 3, 4, 3) * 2 - 1)
    assert r.flops == 24 * (3 * 3 + 46) + 48 * 15 == 2_040


def test_grid_sample_backward() -> None:
    x, grid = torch.randn(2, 3, 5, 6), torch.rand(2, 4, 7, 2) * 2 - 1
    # (no parameters: the gradients asked are the inputs', as requires_grad says)
    r = torchcost.analyze(GridSample(align_corners=False), x.requires_grad_(), grid.requires_grad_(), mode="train",
                          loss_fn=lambda out: out.sum())
    backward = r.phase("backward")
    # per location the forward's 24 again and the grid's gradient times 2 factors; per element 8 for the input's
    # gradient and 24 for the grid's
    assert backward.flops == 56 * (24 + 2) + 168 * (8 + 24) == 6_832
    assert backward.uncounted == ()
