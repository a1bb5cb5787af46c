"""Losses (formulas/loss.py): per element of the element-wise loss, then the reduction: none 0, sum n - 1, mean n.

x = (4, 8): 4 samples, 8 classes, 32 elements; class targets (4,).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchcost
from tests.formulas._check import analyze_both

X = (4, 8)
TARGETS = torch.tensor([1, 0, 3, 7])


@pytest.mark.parametrize(
    ("loss", "flops"),
    [
        # log_softmax 5*32 = 160; nll: negate 4 picked values, mean: 3 adds + 1 divide
        (nn.CrossEntropyLoss(), 160 + 4 + 4),  # 168
        (nn.CrossEntropyLoss(reduction="none"), 160 + 4),  # 164
        (nn.CrossEntropyLoss(reduction="sum"), 160 + 4 + 3),  # 167
        # weighted: negate and weight 4*2, mean over the weights: 3 adds + divide, total weight: 3 adds
        (nn.CrossEntropyLoss(weight=torch.ones(8)), 160 + 8 + 4 + 3),  # 175
        (nn.NLLLoss(), 4 + 4),  # on log-probabilities: 8
    ],
)
def test_class_losses(loss: nn.Module, flops: int) -> None:
    r = analyze_both(loss, torch.randn(X), TARGETS)
    assert r.flops == flops
    assert r.uncounted == ()


@pytest.mark.parametrize(
    ("loss", "flops"),
    [
        # 4 samples of 8 classes, 7 others each: z = margin - x_y + x_c (2), compare (1), into the sample's sum (6
        # adds over 7) and a divide by 8: 7 * 3 + 6 + 1 = 28 = 7 * 4 a sample, 112; mean: 3 adds + 1 divide
        (nn.MultiMarginLoss(), 4 * 7 * 4 + 4),  # 116
        (nn.MultiMarginLoss(p=2, reduction="sum"), 4 * 7 * 5 + 3),  # z * z: 1 more a class; 143
        (nn.MultiMarginLoss(weight=torch.ones(8), reduction="none"), 4 * 7 * 5),  # times weight[y]: 140
    ],
)
def test_multi_margin_loss(loss: nn.Module, flops: int) -> None:
    r = analyze_both(loss, torch.randn(X), TARGETS)
    assert r.flops == flops
    assert r.uncounted == ()


def test_multi_margin_loss_backward() -> None:
    # g = 1 / (4 * 8) once (1); per sample and other class: z (2), compare (1), 2 g z at p = 2 (2), taken from the
    # target's gradient (1): 6, 4 * 7 * 6 = 168; every element times the output's gradient: 32. 1 + 168 + 32 = 201
    x = torch.randn(X, requires_grad=True)
    r = torchcost.analyze(nn.MultiMarginLoss(p=2), x, TARGETS, mode="train")
    backward = {o.op: o.flops for o in r.phase("backward").ops}
    assert backward["aten::multi_margin_loss_backward"] == 1 + 4 * 7 * 6 + 32 == 201
    assert all(not phase.uncounted for phase in r.phases)


def test_nll_loss_2d() -> None:
    # (N, C, H, W) = (1, 4, 2, 4) log-probabilities, targets (1, 2, 4): 8 targets, negate 8, mean 8
    r = analyze_both(nn.NLLLoss(), torch.randn(1, 4, 2, 4), torch.zeros(1, 2, 4, dtype=torch.long))
    assert r.flops == 8 + 8 == 16
    assert r.uncounted == ()


@pytest.mark.parametrize(
    ("loss", "flops"),
    [
        (nn.MSELoss(), 2 * 32 + 32),  # subtract, square; mean 32: 96
        (nn.MSELoss(reduction="sum"), 2 * 32 + 31),  # 95
        (nn.MSELoss(reduction="none"), 2 * 32),  # 64
        (nn.SmoothL1Loss(), 6 * 32 + 32),  # subtract, abs, compare, 0.5*d*d/beta (3): 224
        (nn.HuberLoss(), 5 * 32 + 32),  # subtract, abs, compare, 0.5*d*d (2): 192
        (nn.L1Loss(), 32 + 32 + 32),  # lowered by torch: sub, abs, mean: 96
        (nn.BCEWithLogitsLoss(), 9 * 32 + 32),  # (1-y)*x - log_sigmoid(x): 1 + 1 + 6 + 1 = 9; mean: 320
        # pos_weight (8,): log_weight = (pw - 1) * y + 1: 8 + 2*32; times log_sigmoid: 32
        (nn.BCEWithLogitsLoss(pos_weight=torch.ones(8)), 9 * 32 + 8 + 3 * 32 + 32),  # 424
    ],
)
def test_elementwise_losses(loss: nn.Module, flops: int) -> None:
    r = analyze_both(loss, torch.randn(X), torch.rand(X))
    assert r.flops == flops
    assert r.uncounted == ()


def test_binary_cross_entropy_on_probabilities() -> None:
    # (y - 1) * max(log1p(-x), -100) - y * max(log(x), -100): neg, log1p, max, sub, mul, log, max, mul, sub = 9
    p = torch.rand(X)
    assert analyze_both(nn.BCELoss(), p, torch.rand(X)).flops == 9 * 32 + 32 == 320
    assert analyze_both(nn.BCELoss(weight=torch.ones(8)), p, torch.rand(X)).flops == 10 * 32 + 32 == 352
