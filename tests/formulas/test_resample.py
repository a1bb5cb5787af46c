"""Interpolation (formulas/resample.py), per output element: d-linear 3 * (2^d - 1) (linear 3, bilinear 9,
trilinear 21), bicubic 5 cubic interpolations of 7 = 35; nearest is a copy (free); area is adaptive average pooling.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchcost
from tests.formulas._check import analyze_both, fn_both
from torchcost.formulas.resample import aa_taps


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


# -- anti-aliased resizing: taps per output index from the sizes (formulas/resample.py aa_taps) ---------------------
# 8 -> 3, bilinear, float32: scale 8/3 = 2.6666667, support 1 * scale = 2.6666667; output i's centre 2.6666667 (i +
# 0.5): 1.3333334, 4.0, 6.6666667; first tap int(centre - support + 0.5) clipped at 0: 0, 1, 4; end int(centre +
# support + 0.5) clipped at 8: 4, 7, 8; taps 4, 6, 4


def test_antialiased_taps_by_hand() -> None:
    assert aa_taps(8, 3, False, None, 2) == (4, 6, 4)
    # 12 -> 4: scale 3, support 3, centres 1.5, 4.5, 7.5, 10.5: [0, 5), [2, 8), [5, 11), [8, 12): 5, 6, 6, 4
    assert aa_taps(12, 4, False, None, 2) == (5, 6, 6, 4)
    # bicubic 12 -> 4: support 2 * 3 = 6: [0, 8), [0, 11), [2, 12), [5, 12): 8, 11, 10, 7
    assert aa_taps(12, 4, False, None, 4) == (8, 11, 10, 7)
    # a size kept: scale 1, support 1, centre i + 0.5: [i, i + 2) clipped at 8: 2 taps, 1 at the far end
    assert aa_taps(8, 8, False, None, 2) == (2,) * 7 + (1,)


def test_antialiased_resize() -> None:
    # 8 x 8 -> 3 x 3, 2 planes: the width's pass on 8 rows, (2*4-1) + (2*6-1) + (2*4-1) = 25 per row: 2 * 8 * 25 =
    # 400; the height's on the 3 columns: 2 * 3 * 25 = 150; 550 in all
    r = fn_both(lambda x: F.interpolate(x, size=(3, 3), mode="bilinear", antialias=True), torch.randn(1, 2, 8, 8))
    assert (r.macs, r.flops) == (0, 2 * 8 * 25 + 2 * 3 * 25) == (0, 550)
    assert r.uncounted == ()
    # only the width changes (8 x 12 -> 8 x 4, bicubic): one pass, (2*8-1) + (2*11-1) + (2*10-1) + (2*7-1) = 68
    # per row, 2 planes of 8 rows: 1,088; the same sizes: a copy, 0
    r = fn_both(lambda x: F.interpolate(x, size=(8, 4), mode="bicubic", antialias=True), torch.randn(1, 2, 8, 12))
    assert r.flops == 2 * 8 * 68 == 1_088
    r = fn_both(lambda x: F.interpolate(x, size=(8, 12), mode="bicubic", antialias=True), torch.randn(1, 2, 8, 12))
    assert (r.flops, r.uncounted) == (0, ())


def test_antialiased_resize_backward() -> None:
    # each output-gradient element spread over its rows' and columns' taps together, 3 a tap: 8 x 8 -> 3 x 3, taps
    # (4, 6, 4) both ways, 14 * 14 pairs, 1 plane: 3 * 196 = 588. 8 x 8 -> 8 x 3: the rows keep their size, 15 taps
    # (2 each, 1 at the far end): 3 * 15 * 14 = 630
    for size, expected in (((3, 3), 3 * 14 * 14), ((8, 3), 3 * 15 * 14)):
        model = _Resized(size)
        r = torchcost.analyze(model, torch.randn(1, 1, 8, 8), mode="train")
        backward = {o.op: o.flops for o in r.phase("backward").ops}
        assert backward["aten::_upsample_bilinear2d_aa_backward"] == expected
        assert all(not phase.uncounted for phase in r.phases)


class _Resized(nn.Module):
    """A 1x1 convolution (so the resize's input needs its gradient), resized anti-aliased."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.conv, self.size = nn.Conv2d(1, 1, 1), size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(x), size=self.size, mode="bilinear", antialias=True)


def _kernel_taps(n_in: int, mode: str, dtype: torch.dtype, **options: Any) -> tuple[tuple[int, ...], int]:
    """Each output index's taps as torch's own kernel takes them, and the output's size: the width resized with an
    infinity at input j of row j and zeros elsewhere, so output i of row j is not finite exactly where j is among
    i's taps (w * inf is +-inf, and a tap of weight 0 gives 0 * inf = nan)."""
    x = torch.zeros(n_in, 1, 1, n_in, dtype=dtype)
    for j in range(n_in):
        x[j, 0, 0, j] = float("inf")
    y = F.interpolate(x, mode=mode, antialias=True, **options)[:, 0, 0, :]
    return tuple(int(v) for v in (~torch.isfinite(y)).sum(0)), int(y.shape[-1])


# sizes where float32 and float64 find different taps (2 -> 98, 3 -> 183, ...), shrinking and enlarging
_AA_PAIRS = [(2, 98), (2, 122), (3, 37), (3, 183), (8, 3), (12, 4), (14, 16), (37, 16), (224, 97), (64, 63),
             (100, 7), (7, 100)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_antialiased_taps_are_the_kernels(mode: str, dtype: torch.dtype) -> None:
    # an oracle for aa_taps: torch's kernel itself, read through infinities (_kernel_taps), at output sizes, scale
    # factors (the op's scales) and align_corners; a tap of weight 0 counts, as the kernel multiplies it
    interp, double = (2 if mode == "bilinear" else 4), dtype == torch.float64
    for n_in, n_out in _AA_PAIRS:
        assert aa_taps(n_in, n_out, False, None, interp, double) == _kernel_taps(n_in, mode, dtype,
                                                                                size=(1, n_out))[0]
    for n_in, factor in ((50, 0.3), (43, 0.77), (22, 1.6), (8, 2.5)):
        taps, n_out = _kernel_taps(n_in, mode, dtype, scale_factor=(1, factor))
        assert aa_taps(n_in, n_out, False, factor, interp, double) == taps
        taps, n_out = _kernel_taps(n_in, mode, dtype, size=(1, int(n_in * factor)), align_corners=True)
        assert aa_taps(n_in, n_out, True, None, interp, double) == taps


def test_timm_vit_at_another_size_resamples_its_position_embedding_counted() -> None:
    # timm's ViT with dynamic_img_size at 256 x 256: its 14 x 14 grid of position embeddings (192 channels) resized
    # to 16 x 16, bicubic, anti-aliased. 14 -> 16 enlarges: support 2, centres 0.875 (i + 0.5); taps [0, 2), [0, 3),
    # then 4 each for i = 2..13, [11, 14), [12, 14): 2 + 3 + 12 * 4 + 3 + 2 = 58 taps, sum(2t - 1) = 116 - 16 = 100
    # per row or column. The width's pass on 14 rows, 192 * 14 * 100 = 268,800; the height's on 16 columns, 192 * 16
    # * 100 = 307,200: 576,000
    timm = pytest.importorskip("timm")
    assert aa_taps(14, 16, False, None, 4) == (2, 3, *[4] * 12, 3, 2)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, dynamic_img_size=True, num_classes=0)
    r = analyze_both(model.eval(), torch.randn(1, 3, 256, 256))
    assert {o.op: o.flops for o in r.ops}["aten::_upsample_bicubic2d_aa"] == 192 * 14 * 100 + 192 * 16 * 100 == 576_000
    assert r.uncounted == ()


@pytest.mark.parametrize(("sizes", "mode"), [((8, 8, 3, 3), "bilinear"), ((8, 8, 8, 3), "bilinear"),
                                             ((10, 7, 4, 13), "bicubic")])
def test_antialiased_backward_taps_are_the_kernels(sizes: tuple[int, int, int, int], mode: str) -> None:
    # the backward kernel adds each output-gradient element into the rows' taps x the columns' taps: with an
    # infinity at one output-gradient element, exactly those input-gradient elements are not finite. Summed over
    # the outputs: (the rows' taps summed) x (the columns' taps summed), the formula's count of taps (3 FLOPs each)
    hi, wi, ho, wo = sizes
    op = getattr(torch.ops.aten, f"_upsample_{mode}2d_aa_backward")
    touched = 0
    for oh in range(ho):
        for ow in range(wo):
            grad = torch.zeros(1, 1, ho, wo)
            grad[0, 0, oh, ow] = float("inf")
            touched += int((~torch.isfinite(op(grad, [ho, wo], [1, 1, hi, wi], False))).sum())
    interp = 2 if mode == "bilinear" else 4
    assert touched == sum(aa_taps(hi, ho, False, None, interp)) * sum(aa_taps(wi, wo, False, None, interp))


# -- grid sampling (F.grid_sample; RAFT, spatial transformers, deformable attention) ---------------------------------
# input (2, 3, 5, 6), grid (2, 4, 7, 2): 2*4*7 = 56 locations, 2*3*4*7 = 168 output elements


class GridSample(nn.Module):
    def __init__(self, **options: object) -> None:
        super().__init__()
        self.options = options

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(x, grid, **self.options)  # type: ignore[arg-type]


def _grid_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 3, 5, 6), torch.rand(2, 4, 7, 2) * 2 - 1


@pytest.mark.parametrize(("options", "flops"), [
    # per location 2 coordinates unnormalised (4 each) + 16 for the bilinear corners and weights; 7 per element
    ({"align_corners": False}, 56 * (2 * 4 + 16) + 168 * 7),  # 2,520
    # align_corners unnormalises in 3; border clips each coordinate (2)
    ({"align_corners": True, "padding_mode": "border"}, 56 * (2 * 3 + 16 + 2 * 2) + 168 * 7),  # 2,632
    # nearest: each coordinate rounded (1), reflected and clipped (9); a copy per element
    ({"align_corners": False, "mode": "nearest", "padding_mode": "reflection"}, 56 * (2 * 4 + 2 * (1 + 9))),
    # bicubic: 54 per location (floor and fraction 2 an axis, 25 for an axis's 4 coefficients), 35 per element
    ({"align_corners": False, "mode": "bicubic"}, 56 * (2 * 4 + 54) + 168 * 35),  # 9,352
    # bicubic with border padding: each of the 16 taps' 2 coordinates clipped (2): + 64 a location
    ({"align_corners": True, "mode": "bicubic", "padding_mode": "border"},
     56 * (2 * 3 + 54 + 16 * 2 * 2) + 168 * 35),  # 12,824
])
def test_grid_sample(options: dict[str, object], flops: int) -> None:
    r = analyze_both(GridSample(**options), *_grid_inputs())
    assert r.flops == flops and r.macs == 0 and r.uncounted == ()


def test_grid_sample_3d() -> None:
    # input (1, 2, 3, 4, 5), grid (1, 2, 3, 4, 3): 24 locations, 48 elements; 3 coordinates of 3 (align_corners),
    # 46 for the 8 corners' weights; 15 per element
    r = analyze_both(GridSample(align_corners=True), torch.randn(1, 2, 3, 4, 5), torch.rand(1, 2, 3, 4, 3) * 2 - 1)
    assert r.flops == 24 * (3 * 3 + 46) + 48 * 15 == 2_040


def _grid_backward(options: dict[str, object], input_grad: bool = True) -> Any:
    x, grid = _grid_inputs()
    # (no parameters: the gradients asked are the inputs', as requires_grad says)
    r = torchcost.analyze(GridSample(**options), x.requires_grad_(input_grad), grid.requires_grad_(), mode="train",
                          loss_fn=lambda out: out.sum())
    return r.phase("backward")


def test_grid_sample_backward() -> None:
    backward = _grid_backward({"align_corners": False})
    # per location the forward's 24 again and the grid's gradient times 2 factors; per element 8 for the input's
    # gradient and 24 for the grid's
    assert backward.flops == 56 * (24 + 2) + 168 * (8 + 24) == 6_832
    assert backward.uncounted == ()


def test_grid_sample_bicubic_backward() -> None:
    # (uncounted before round 39: GLM-4V's vision towers). Per location: the forward's 2 * 4 + 54 = 62, the 2 axes'
    # coefficient derivatives 2 * 18 (x = -1 - t and (c x - c') x - c'': 5; x = -t and (c x - c') x: 4; x = 1 - t: 4;
    # x = 2 - t and (c x - c') x + c'': 5) and the grid's gradient times 2 factors: 62 + 36 + 2 = 100. Per element,
    # over 16 taps: the input's gradient 3 a tap (48), the grid's 2 coordinates of 4 a tap (128)
    backward = _grid_backward({"align_corners": False, "mode": "bicubic"})
    assert backward.flops == 56 * 100 + 168 * (48 + 128) == 35_168
    assert backward.uncounted == ()
    # reflection padding, align_corners: the 16 taps' 2 coordinates reflected and clipped (9) a location: 62 - 2
    # (unnormalising in 3) + 16 * 2 * 9 = 348, + 38 = 386; the input needs no gradient: the grid's 128 an element
    backward = _grid_backward({"align_corners": True, "mode": "bicubic", "padding_mode": "reflection"},
                              input_grad=False)
    assert backward.flops == 56 * (2 * 3 + 54 + 16 * 2 * 9 + 36 + 2) + 168 * 128 == 43_120
    assert backward.uncounted == ()
