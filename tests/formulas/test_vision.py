"""torchvision's detection ops (formulas/vision.py). nms on N boxes, the all-pairs upper bound: sort N * ceil(log2 N)
+ areas 3N + IoU 13 per pair, N (N - 1) / 2 pairs. roi_align / ps_roi_align: per output element s * s bilinear
samples of 9, s * s - 1 adds, 1 divide (10 * s * s; 40 at s = 2); sampling_ratio <= 0 is data-dependent: uncounted,
with the reason in formula_errors. Their backward: per element of the output's gradient, s * s samples of 4 corners,
each weight * gradient / count added in (3): 12 * s * s (48 at s = 2). roi_pool is uncounted.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

torchvision = pytest.importorskip("torchvision")
from torchvision.ops import nms, ps_roi_align, roi_align, roi_pool  # noqa: E402

import torchcost  # noqa: E402
from tests.formulas._check import Fn, fn_both  # noqa: E402
from torchcost.report import OpCount  # noqa: E402


def _boxes(n: int) -> torch.Tensor:
    xy = torch.rand(n, 2) * 10
    return torch.cat([xy, xy + 1 + torch.rand(n, 2) * 5], dim=1)


def _rois(k: int) -> torch.Tensor:
    return torch.cat([torch.zeros(k, 1), _boxes(k)], dim=1)  # (batch index, x1, y1, x2, y2)


def test_nms_charges_every_pair() -> None:
    # N=5: sort 5*ceil(log2 5)=5*3=15, areas 3*5=15, pairs 5*4/2=10 at 13 each=130 -> 160
    # (nms has no meta kernel usable on plain meta tensors, its output size being data: real run only)
    r = torchcost.analyze(Fn(lambda b, s: nms(b, s, 0.5)), _boxes(5), torch.rand(5))
    assert r.flops == 15 + 15 + 130 == 160
    assert r.uncounted == ()
    assert ("torchvision::nms", 1, 0, 160) in [(o.op, o.calls, o.macs, o.flops) for o in r.ops]  # bytes: data


def test_nms_count_does_not_depend_on_the_threshold() -> None:
    # N=8: sort 8*3=24, areas 24, pairs 28*13=364 -> 412, whatever is suppressed
    boxes, scores = _boxes(8), torch.rand(8)
    for threshold in (0.0, 0.5, 1.0):
        assert torchcost.analyze(Fn(lambda b, s, t=threshold: nms(b, s, t)), boxes, scores).flops == 412


def test_a_training_step_with_nms_runs_on_a_real_copy_also_under_warnings_as_errors() -> None:
    # nms's output size is data: the fake twin of a training step fails and the step runs on a real copy. On the way,
    # torchvision's fake kernel for nms warns of a deprecated call; under "error" (this suite's setting, as under
    # python -W error) that warning is the failure, and it too sends the step to the copy (was: a ShapeError
    # naming the warning). N=5: the same 160 FLOPs as above
    class Keep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(5))

        def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            return (scores * self.scale)[nms(boxes, scores, 0.5)]

    model = Keep()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = torchcost.analyze(model, _boxes(5), torch.rand(5), mode="train")
    assert r.memory is not None and r.memory.method == "copy"
    assert ("torchvision::nms", 1, 0, 160) in [(o.op, o.calls, o.macs, o.flops) for o in r.ops]
    assert model.scale.grad is None


def test_roi_align() -> None:
    # 3 rois, 2 channels, 2x2 pooled: 24 outputs; s=2: 4 samples * 9 + 3 adds + 1 divide = 40 each -> 960
    r = fn_both(lambda x, b: roi_align(x, b, (2, 2), 1.0, 2), torch.randn(1, 2, 8, 8), _rois(3))
    assert r.macs == 0
    assert r.flops == 24 * (4 * 9 + 3 + 1) == 960
    assert r.uncounted == ()


def test_roi_align_aligned_and_scaled_count_the_same() -> None:
    # 2 rois, 3 channels, 7x7 pooled: 294 outputs; s=2: 40 each -> 11,760
    r = fn_both(lambda x, b: roi_align(x, b, 7, 0.25, 2, aligned=True), torch.randn(1, 3, 16, 16), _rois(2))
    assert r.flops == 2 * 3 * 7 * 7 * 40 == 11_760


def test_ps_roi_align() -> None:
    # 8 channels / (2*2) bins = 2 output channels; 3 rois: 3*2*2*2=24 outputs; s=1: 9 + 0 adds + 1 divide = 10 -> 240
    r = fn_both(lambda x, b: ps_roi_align(x, b, 2, 1.0, 1), torch.randn(1, 8, 8, 8), _rois(3))
    assert r.flops == 24 * 10 == 240
    assert r.uncounted == ()


class _Pooled(nn.Module):
    """A feature map made by a convolution (so roi_align's input needs its gradient), pooled at the rois."""

    def __init__(self, channels: int, position_sensitive: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 1)
        self.position_sensitive = position_sensitive

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        if self.position_sensitive:
            return ps_roi_align(features, rois, 2, 1.0, 1)
        return roi_align(features, rois, (2, 2), 1.0, 2)


def _by_op(r: object, phase: str) -> dict[str, tuple[int, int]]:
    return {o.op: (o.macs, o.flops) for o in {p.name: p for p in r.phases}[phase].ops}  # type: ignore[attr-defined]


def test_roi_align_backward() -> None:
    # 3 rois, 2 channels, 2x2 pooled: the output's gradient has 24 elements; s=2: 4 samples * 4 corners * 3 = 48
    # each -> 1,152 (the forward's 960 as in test_roi_align)
    r = torchcost.analyze(_Pooled(2), torch.randn(1, 1, 8, 8), _rois(3), mode="train")
    assert _by_op(r, "forward")["torchvision::roi_align"] == (0, 960)
    assert _by_op(r, "backward")["torchvision::_roi_align_backward"] == (0, 24 * 4 * 4 * 3) == (0, 1_152)
    assert all(not phase.uncounted for phase in r.phases)


def test_ps_roi_align_backward() -> None:
    # 8 channels / (2*2) bins = 2 output channels, 3 rois: the gradient has 3*2*2*2 = 24 elements; s=1: 1 sample *
    # 4 corners * 3 = 12 each -> 288
    r = torchcost.analyze(_Pooled(8, position_sensitive=True), torch.randn(1, 1, 8, 8), _rois(3), mode="train")
    assert _by_op(r, "backward")["torchvision::_ps_roi_align_backward"] == (0, 24 * 12) == (0, 288)
    assert all(not phase.uncounted for phase in r.phases)


def test_adaptive_sampling_ratio_is_uncounted_with_its_reason() -> None:
    r = torchcost.analyze(Fn(lambda x, b: roi_align(x, b, (2, 2), 1.0, -1)), torch.randn(1, 2, 8, 8), _rois(3))
    assert r.uncounted == (OpCount("torchvision::roi_align", 1),)
    assert [k for k, _ in r.formula_errors] == ["torchvision::roi_align"]
    assert "sampling_ratio" in r.formula_errors[0][1]


def test_roi_pool_is_uncounted() -> None:
    r = torchcost.analyze(Fn(lambda x, b: roi_pool(x, b, (2, 2), 1.0)), torch.randn(1, 2, 8, 8), _rois(3))
    assert r.uncounted == (OpCount("torchvision::roi_pool", 1),)


def test_ssdlite_detector_has_nothing_uncounted() -> None:
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    r = torchcost.analyze(model, [torch.randn(3, 320, 320)])
    assert r.uncounted == ()
    assert r.formula_errors == ()
    assert {"torchvision::nms", "aten::topk", "aten::sort"} <= {o.op for o in r.ops}
