"""Normalisation (formulas/norm.py), per input element: statistics from the data 4 (mean 1, variance 3), normalise 2,
weight 1, bias 1. Batch norm eval (running statistics, affine) 4, train 8; layer/group norm 8; RMSNorm (lowered to
pow, mean, add, rsqrt, mul, mul) (3 + weight) per element + 2 per row.

x = (2, 3, 4, 5): 120 elements, 3 channels, 24 rows of 5.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchcost
from tests.formulas._check import Fn, analyze_both, fn_both

X = (2, 3, 4, 5)
N = 2 * 3 * 4 * 5  # 120


@pytest.mark.parametrize(
    ("model", "mode", "per_element"),
    [
        (nn.BatchNorm2d(3), "eval", 2 + 1 + 1),  # running statistics: normalise 2, weight 1, bias 1
        (nn.BatchNorm2d(3), "train", 4 + 2 + 1 + 1),  # statistics from the batch: + 4
        (nn.BatchNorm2d(3, affine=False), "eval", 2),
        (nn.BatchNorm2d(3, affine=False), "train", 4 + 2),
        (nn.BatchNorm2d(3, track_running_stats=False), "eval", 4 + 2 + 1 + 1),  # no running stats: batch stats
        (nn.LayerNorm(5), "eval", 4 + 2 + 1 + 1),
        (nn.LayerNorm((4, 5)), "eval", 4 + 2 + 1 + 1),
        (nn.LayerNorm(5, bias=False), "eval", 4 + 2 + 1),
        (nn.LayerNorm(5, elementwise_affine=False), "eval", 4 + 2),
        (nn.GroupNorm(3, 3), "eval", 4 + 2 + 1 + 1),
        (nn.GroupNorm(3, 3, affine=False), "train", 4 + 2),
        (nn.InstanceNorm2d(3), "eval", 4 + 2),  # lowers to batch norm on a (1, 2*3, 4, 5) view, batch statistics
        (nn.InstanceNorm2d(3, affine=True), "eval", 4 + 2 + 1 + 1),
        (nn.InstanceNorm2d(3, affine=True, track_running_stats=True), "eval", 2 + 1 + 1),  # running statistics
    ],
)
def test_norm_per_element(model: nn.Module, mode: str, per_element: int) -> None:
    r = analyze_both(model, torch.randn(X), mode=mode)
    assert r.macs == 0
    assert r.flops == per_element * N
    assert r.uncounted == ()


def test_batch_norm_train_counter_update_is_free() -> None:
    r = analyze_both(nn.BatchNorm2d(3), torch.randn(X), mode="train")
    assert r.flops == 8 * N == 960
    assert [o.op for o in r.ops] == ["aten::native_batch_norm"]  # num_batches_tracked += 1 is integer: free


def test_batch_norm_1d_and_3d() -> None:
    assert analyze_both(nn.BatchNorm1d(3), torch.randn(4, 3)).flops == 4 * (4 * 3) == 48
    assert analyze_both(nn.BatchNorm1d(3), torch.randn(4, 3), mode="train").flops == 8 * 12 == 96
    assert analyze_both(nn.BatchNorm1d(3), torch.randn(2, 3, 5)).flops == 4 * (2 * 3 * 5) == 120
    x3 = torch.randn(2, 2, 2, 3, 3)  # 72 elements
    assert analyze_both(nn.BatchNorm3d(2), x3).flops == 4 * 72 == 288
    assert analyze_both(nn.BatchNorm3d(2), x3, mode="train").flops == 8 * 72 == 576


def test_rms_norm() -> None:
    r = analyze_both(nn.RMSNorm(5), torch.randn(X))
    # square, mean, normalise, weight: 4 per element; add eps and rsqrt once per row of 5: 24 rows
    assert r.flops == 4 * N + 2 * 24 == 528
    assert r.uncounted == ()
    r = analyze_both(nn.RMSNorm(5, elementwise_affine=False), torch.randn(X))
    assert r.flops == 3 * N + 2 * 24 == 408
    r = analyze_both(nn.RMSNorm((4, 5)), torch.randn(X))
    assert r.flops == 4 * N + 2 * 6 == 492  # 6 rows of 20


def test_fused_rms_norm_kernel_priced_like_the_decomposition() -> None:
    # aten::_fused_rms_norm is what CUDA runs; it must cost what the CPU/meta decomposition costs
    fused = fn_both(lambda x, w: torch.ops.aten._fused_rms_norm(x, [5], w, 1e-6)[0], torch.randn(X), torch.ones(5))
    decomposed = analyze_both(Fn(lambda x, w: torch.rms_norm(x, [5], w, 1e-6)), torch.randn(X), torch.ones(5))
    assert fused.flops == decomposed.flops == 4 * N + 2 * 24


# -- weight normalisation (round 34: _weight_norm_interface was uncounted; wav2vec2's positional convolution) -------
# v of Conv1d(4, 6, 3): (6, 4, 3), 72 elements


@pytest.mark.parametrize(("dim", "slices"), [(0, 6), (2, 3)])
def test_weight_norm_forward_and_backward(dim: int, slices: int) -> None:
    from torch.nn.utils.parametrizations import weight_norm

    model = nn.Sequential(weight_norm(nn.Conv1d(4, 6, 3), dim=dim))
    r = torchcost.analyze(model, torch.randn(2, 4, 10), mode="train")
    phases = {p.name: {o.op: o.flops for o in p.ops} for p in r.phases}
    # forward: per slice of n: the norm 2n, g / norm 1; v times it 1 per element: 3 * 72 + slices
    assert phases["forward"]["aten::_weight_norm_interface"] == 3 * 72 + slices
    # backward: per slice the dot 2n - 1, grad g 1, scale 2, g / norm 1; per element 3: 5 * 72 + 3 * slices
    assert phases["backward"]["aten::_weight_norm_interface_backward"] == 5 * 72 + 3 * slices
    assert all(not p.uncounted for p in r.phases)


def test_weight_norm_in_eval_on_meta_too() -> None:
    from torch.nn.utils.parametrizations import weight_norm

    r = analyze_both(nn.Sequential(weight_norm(nn.Conv1d(4, 6, 3))), torch.randn(2, 4, 10))
    assert {o.op: o.flops for o in r.ops}["aten::_weight_norm_interface"] == 3 * 72 + 6 == 222
