"""Backward formulas of pooling, interpolation, padding, activations, losses and embedding bags
(formulas/backward.py; docs/conventions.md, "Training step"). Each expected number is derived by hand beside it.

The unit tests call the real backward op on small CPU tensors and price that call with the registered formula; the
end-to-end tests run analyze(mode="train") and check the backward phase against a hand sum of every op it runs.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchcost
from torchcost.formulas.registry import REGISTRY, Cost, OpCall, op_key

aten = torch.ops.aten
MEAN, SUM, NONE = 1, 2, 0  # torch's Reduction enum


def _price(op: Any, *args: Any) -> Cost:
    """Run ``op`` on ``args`` and price the call with the registered formula."""
    out = op(*args)
    key = op_key(op)
    formula = REGISTRY.get(key)
    assert formula is not None, key
    return formula(OpCall(key, args, {}, out, op._schema))


def _flops(op: Any, *args: Any) -> int:
    cost = _price(op, *args)
    assert cost.macs == 0
    return cost.other_flops


def _t(*shape: int) -> torch.Tensor:
    return torch.randn(shape)


# -- pooling ----------------------------------------------------------------------------------------------------------


def test_avg_pool2d_backward() -> None:
    # grad (2, 3, 4, 4) = 96 elements, window 2x2 (k = 4): one divide + 4 accumulations each, 5 x 96 = 480
    g, x = _t(2, 3, 4, 4), _t(2, 3, 8, 8)
    assert _flops(aten.avg_pool2d_backward.default, g, x, [2, 2], [2, 2], [0, 0], False, True, None) == 480
    # window 3x3 with stride 2 and padding 1 on 7x7: out 4x4 per plane (2 planes: 32 elements), full k = 9
    # charged as the forward does: 10 x 32 = 320
    g, x = _t(1, 2, 4, 4), _t(1, 2, 7, 7)
    assert _flops(aten.avg_pool2d_backward.default, g, x, [3, 3], [2, 2], [1, 1], True, False, None) == 320


def test_avg_pool3d_backward() -> None:
    # grad (1, 2, 2, 2, 2) = 16 elements, window 1x2x2 (k = 4): 5 x 16 = 80
    g, x = _t(1, 2, 2, 2, 2), _t(1, 2, 2, 4, 4)
    assert _flops(aten.avg_pool3d_backward.default, g, x, [1, 2, 2], [1, 2, 2], [0, 0, 0], False, True, None) == 80


def test_adaptive_avg_pool_backward() -> None:
    # 7 -> 3 along each dimension: windows [0, 3), [2, 5), [4, 7), 3 + 3 + 3 = 9 elements summed per dimension,
    # so 9 x 9 = 81 accumulations per plane (as the forward's 81) + 3 x 3 = 9 divides: 90 per plane, 2 planes: 180
    g, x = _t(1, 2, 3, 3), _t(1, 2, 7, 7)
    assert _flops(aten._adaptive_avg_pool2d_backward.default, g, x) == 180
    # 3-d, 4 -> 3: windows [0, 2), [1, 3), [2, 4): 6 per dimension; 6^3 = 216 + 27 divides = 243 per plane, 1 plane
    g, x = _t(1, 1, 3, 3, 3), _t(1, 1, 4, 4, 4)
    assert _flops(aten._adaptive_avg_pool3d_backward.default, g, x) == 243


def test_max_pool_family_backward() -> None:
    # every output gradient is added at the one input position its index names: 1 per output-gradient element
    g, x, idx = _t(1, 2, 3, 3), _t(1, 2, 7, 7), torch.zeros(1, 2, 3, 3, dtype=torch.long)
    assert _flops(aten.adaptive_max_pool2d_backward.default, g, x, idx) == 18  # 2 x 3 x 3
    g3, x3, idx3 = _t(1, 2, 2, 2, 2), _t(1, 2, 4, 4, 4), torch.zeros(1, 2, 2, 2, 2, dtype=torch.long)
    assert _flops(aten.adaptive_max_pool3d_backward.default, g3, x3, idx3) == 16  # 2 x 2 x 2 x 2
    assert _flops(aten.fractional_max_pool2d_backward.default, g, x, [2, 2], [3, 3], idx) == 18
    assert _flops(aten.fractional_max_pool3d_backward.default, g3, x3, [2, 2, 2], [2, 2, 2], idx3) == 16


# -- interpolation and padding ----------------------------------------------------------------------------------------


def test_nearest_upsample_backward() -> None:
    # 1 accumulation per output-gradient element (the forward, a copy, is free)
    g = _t(1, 2, 8, 8)  # 128 elements
    assert _flops(aten.upsample_nearest2d_backward.default, g, [8, 8], [1, 2, 4, 4], 2.0, 2.0) == 128
    assert _flops(aten._upsample_nearest_exact2d_backward.default, g, [8, 8], [1, 2, 4, 4], 2.0, 2.0) == 128
    g1 = _t(1, 2, 6)  # 12 elements
    assert _flops(aten.upsample_nearest1d_backward.default, g1, [6], [1, 2, 3], 2.0) == 12
    assert _flops(aten._upsample_nearest_exact1d_backward.default, g1, [6], [1, 2, 3], 2.0) == 12
    g3 = _t(1, 1, 4, 4, 4)  # 64 elements
    assert _flops(aten.upsample_nearest3d_backward.default, g3, [4, 4, 4], [1, 1, 2, 2, 2], 2.0, 2.0, 2.0) == 64
    assert _flops(aten._upsample_nearest_exact3d_backward.default, g3, [4, 4, 4], [1, 1, 2, 2, 2],
                  2.0, 2.0, 2.0) == 64


def test_linear_interpolation_backward() -> None:
    # the forward's nested 1-d interpolations transposed: the same multiplies, one accumulation per tap where the
    # forward had taps - 1 additions. linear: g * w0, g * w1 and 2 accumulations = 4 (forward 3)
    g1 = _t(1, 2, 6)  # 12 elements
    assert _flops(aten.upsample_linear1d_backward.default, g1, [6], [1, 2, 3], False, 2.0) == 12 * 4
    # bilinear: 2 multiplies along H, 4 along W, 4 accumulations = 10 (forward 9); grad (1, 2, 8, 8) = 128
    g = _t(1, 2, 8, 8)
    assert _flops(aten.upsample_bilinear2d_backward.default, g, [8, 8], [1, 2, 4, 4], False, 2.0, 2.0) == 128 * 10
    # bicubic: 4 multiplies along H, 16 along W, 16 accumulations = 36 (forward 35: 20 multiplies, 15 additions)
    assert _flops(aten.upsample_bicubic2d_backward.default, g, [8, 8], [1, 2, 4, 4], False, 2.0, 2.0) == 128 * 36
    # trilinear: 2 + 4 + 8 multiplies, 8 accumulations = 22 (forward 21); grad (1, 1, 4, 4, 4) = 64
    g3 = _t(1, 1, 4, 4, 4)
    assert _flops(aten.upsample_trilinear3d_backward.default, g3, [4, 4, 4], [1, 1, 2, 2, 2], False,
                  2.0, 2.0, 2.0) == 64 * 22


def test_padding_and_unfold_backward() -> None:
    # every gradient element of the padded output is added into the input element it copied: (1, 2, 6, 6) = 72
    g, x = _t(1, 2, 6, 6), _t(1, 2, 4, 4)
    assert _flops(aten.reflection_pad2d_backward.default, g, x, [1, 1, 1, 1]) == 72
    assert _flops(aten.replication_pad2d_backward.default, g, x, [1, 1, 1, 1]) == 72
    assert _flops(aten.reflection_pad1d_backward.default, _t(1, 2, 6), _t(1, 2, 4), [1, 1]) == 12  # 2 x 6
    assert _flops(aten.replication_pad3d_backward.default, _t(1, 1, 4, 4, 4), _t(1, 1, 2, 2, 2),
                  [1, 1, 1, 1, 1, 1]) == 64  # 4 x 4 x 4
    # x.unfold(2, 2, 1) on length 5: 4 windows of 2, (1, 1, 4, 2) = 8 window elements added back
    assert _flops(aten.unfold_backward.default, _t(1, 1, 4, 2), [1, 1, 5], 2, 2, 1) == 8


# -- activations ------------------------------------------------------------------------------------------------------


def test_activation_backward() -> None:
    g, x = _t(2, 3, 4), _t(2, 3, 4)  # 24 elements
    # elu from the input: compare, exp, times the constant, times g = 4
    assert _flops(aten.elu_backward.default, g, 1.0, 1.0, 1.0, False, x) == 24 * 4
    # from the result (in-place elu): compare, y + alpha * scale, times g = 3
    assert _flops(aten.elu_backward.default, g, 1.0, 1.0, 1.0, True, x) == 24 * 3
    # CELU(alpha=2) runs elu with input_scale 1/2: the exponent's multiply, 5
    assert _flops(aten.elu_backward.default, g, 2.0, 1.0, 0.5, False, x) == 24 * 5
    # softplus: beta * x, compare, exp, g * z, z + 1, divide = 6
    assert _flops(aten.softplus_backward.default, g, x, 1.0, 20.0) == 24 * 6
    # hardswish: two compares, x / 3, + 0.5, times g = 5; hardsigmoid: two compares, g / 6 = 3
    assert _flops(aten.hardswish_backward.default, g, x) == 24 * 5
    assert _flops(aten.hardsigmoid_backward.default, g, x) == 24 * 3
    # mish: exp, log1p, tanh (3) + sigmoid (4) + x * s, t * t, 1 - t^2, product, + t, times g (6) = 13
    assert _flops(aten.mish_backward.default, g, x) == 24 * 13
    # softshrink / hardshrink: two compares (g or 0 is selected) = 2
    assert _flops(aten.softshrink_backward.default, g, x, 0.5) == 24 * 2
    assert _flops(aten.hardshrink_backward.default, g, x, 0.5) == 24 * 2
    # log-sigmoid with the forward's buffer exp(-|x|): compare, 1 + z, divide, times sign, subtract, times g = 6
    assert _flops(aten.log_sigmoid_backward.default, g, x, torch.exp(-x.abs())) == 24 * 6
    # with an empty buffer (CUDA's; the CPU kernel needs one, so on meta) z = exp(-|x|) again: abs, neg, exp, 3
    # more = 9
    meta = torch.empty(2, 3, 4, device="meta")
    assert _flops(aten.log_sigmoid_backward.default, meta, meta, torch.empty(0, device="meta")) == 24 * 9
    # PReLU: compare, w * g (input gradient), x * g (weight gradient, summed by a sum op of its own) = 3
    assert _flops(aten._prelu_kernel_backward.default, g, x, torch.full((1, 3, 1), 0.25)) == 24 * 3
    # RReLU training: g times the drawn slope = 1; eval: as leaky_relu_backward (compare, multiply) = 2
    noise = torch.ones(2, 3, 4)
    assert _flops(aten.rrelu_with_noise_backward.default, g, x, noise, 0.125, 1 / 3, True, False) == 24
    assert _flops(aten.rrelu_with_noise_backward.default, g, x, noise, 0.125, 1 / 3, False, False) == 48


def test_glu_backward() -> None:
    # GLU over dim 1 of (2, 6, 2): output (2, 3, 2) = 12 elements; each: sigmoid(b) 4, grad a = s * g 1,
    # grad b = (1 - s) * s * a * g 4 = 9
    assert _flops(aten.glu_backward.default, _t(2, 3, 2), _t(2, 6, 2), 1) == 12 * 9


# -- losses -----------------------------------------------------------------------------------------------------------


def test_elementwise_loss_backward() -> None:
    g, x, y = torch.tensor(1.0), _t(4, 5), _t(4, 5)  # 20 elements, the loss reduced to a scalar
    # mse: norm * (x - y) * g: subtract, times norm, times g = 3
    assert _flops(aten.mse_loss_backward.default, g, x, y, MEAN) == 20 * 3
    assert _flops(aten.mse_loss_backward.default, g, x, y, SUM) == 20 * 3
    # smooth L1: subtract, two compares, then norm * d * g / beta (3) = 6
    assert _flops(aten.smooth_l1_loss_backward.default, g, x, y, MEAN, 1.0) == 20 * 6
    # Huber: subtract, two compares, then norm * d * g (2) = 5
    assert _flops(aten.huber_loss_backward.default, g, x, y, MEAN, 1.0) == 20 * 5
    # soft margin: exp(-y x) 3, y * z, times -norm, 1 + z, divide, times g = 8
    assert _flops(aten.soft_margin_loss_backward.default, g, x, y, MEAN) == 20 * 8


def test_binary_cross_entropy_backward() -> None:
    g, p, y, w = torch.tensor(1.0), torch.rand(4, 5), torch.rand(4, 5), torch.rand(4, 5)
    # g * (x - y) / max((1 - x) * x, eps): 6 per element; "mean" divides in a pass of its own: 7 x 20 = 140
    assert _flops(aten.binary_cross_entropy_backward.default, g, p, y, None, MEAN) == 140
    assert _flops(aten.binary_cross_entropy_backward.default, g, p, y, None, SUM) == 120  # 6 x 20
    # times the weight: 8 x 20 = 160
    assert _flops(aten.binary_cross_entropy_backward.default, g, p, y, w, MEAN) == 160


def test_nll_loss_backward() -> None:
    x, target = _t(4, 5), torch.zeros(4, dtype=torch.long)
    total = torch.tensor(4.0)
    # mean: -g / total_weight once (negate, divide) = 2; written at each target's class into zeros (free)
    assert _flops(aten.nll_loss_backward.default, torch.tensor(1.0), x, target, None, MEAN, -100, total) == 2
    # sum: -g once = 1
    assert _flops(aten.nll_loss_backward.default, torch.tensor(1.0), x, target, None, SUM, -100, total) == 1
    # none: -g[i] per target, 4; with a class weight: -w[t] * g[i], 2 per target = 8
    assert _flops(aten.nll_loss_backward.default, _t(4), x, target, None, NONE, -100, total) == 4
    assert _flops(aten.nll_loss_backward.default, _t(4), x, target, torch.ones(5), NONE, -100, total) == 8
    # mean with weight: 2 once + w[t] * grad for each of the 4 targets = 6
    assert _flops(aten.nll_loss_backward.default, torch.tensor(1.0), x, target, torch.ones(5), MEAN, -100,
                  total) == 6
    # 2-d: (1, 5, 3, 3) scores, 9 targets, reduction none: 9
    x2, t2 = _t(1, 5, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long)
    assert _flops(aten.nll_loss2d_backward.default, _t(1, 3, 3), x2, t2, None, NONE, -100, total) == 9


def test_soft_margin_loss_forward() -> None:
    # log1p(exp(-y x)): neg, mul, exp, log1p = 4 per element, then "mean" n: 4 x 20 + 20 = 100
    assert _flops(aten.soft_margin_loss.default, _t(4, 5), _t(4, 5), MEAN) == 100


# -- embedding bags ---------------------------------------------------------------------------------------------------


def _bag_backward(mode: int, *, per_sample_weights: torch.Tensor | None = None, sparse: bool = False) -> Cost:
    # 2 bags of 3 indices each (n = 6) into 10 rows of width D = 4
    weight, indices, offsets = _t(10, 4), torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([0, 3])
    _, offset2bag, bag_size, max_indices = aten._embedding_bag.default(weight, indices, offsets, False, mode,
                                                                     False, per_sample_weights)
    return _price(aten._embedding_bag_backward.default, _t(2, 4), indices, offsets, offset2bag, bag_size,
                  max_indices, 10, False, mode, sparse, per_sample_weights)


def test_embedding_bag_backward() -> None:
    # sum: each looked-up row (6) gets its bag's gradient row (4) accumulated: 24
    assert _bag_backward(0) == Cost(other_flops=24)
    # mean: scaled by 1 / bag size first, then accumulated: 2 x 24 = 48; per-sample weights the same
    assert _bag_backward(1) == Cost(other_flops=48)
    assert _bag_backward(0, per_sample_weights=torch.ones(6)) == Cost(other_flops=48)
    # max: each bag's gradient (2 x 4 = 8) added at its maximum's row
    assert _bag_backward(2) == Cost(other_flops=8)
    # sparse sum: the rows are gathered, not accumulated
    assert _bag_backward(0, sparse=True) == Cost()


def test_embedding_bag_per_sample_weights_backward() -> None:
    # each of the 6 looked-up rows dotted with its bag's gradient row of width 4: 24 MACs
    weight, indices, offsets = _t(10, 4), torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([0, 3])
    _, offset2bag, _, _ = aten._embedding_bag.default(weight, indices, offsets, False, 0, False, torch.ones(6))
    cost = _price(aten._embedding_bag_per_sample_weights_backward.default, _t(2, 4), weight, indices, offsets,
                  offset2bag, 0, -1)
    assert cost == Cost(macs=24)


# -- end to end -------------------------------------------------------------------------------------------------------


class _PoolNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.pool, self.gap = nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(3)
        self.fc = nn.Linear(36, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gap(self.pool(torch.relu(self.conv(x)))).flatten(1))


def _ce(out: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, torch.zeros(out.shape[0], dtype=torch.long, device=out.device))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_pool_net_with_cross_entropy(device: str) -> None:
    r = torchcost.analyze(_PoolNet(), input_size=(2, 3, 8, 8), device=device, mode="train", loss_fn=_ce,
                          memory=False)
    back = r.phase("backward")
    assert back.uncounted == ()
    # conv (2, 3, 8, 8) -> (2, 4, 8, 8) -> AvgPool2d(2) (2, 4, 4, 4) -> adaptive 4 -> 3 (2, 4, 3, 3) -> fc 36 -> 5
    # MACs: fc grad_x (2, 5) @ (5, 36) = 360 and grad_W (5, 2) @ (2, 36) = 360; conv weight gradient only (the
    # input needs none): 2*4*8*8 = 512 positions x 3*3*3 = 27 weights = 13,824
    assert back.macs == 360 + 360 + 13_824 == 14_544
    # other FLOPs: nll_loss_backward ("mean") 2; _log_softmax_backward_data 4 x 10 = 40; fc bias gradient, the sum
    # of 2 rows of 5: 5; adaptive 4 -> 3: windows [0, 2), [1, 3), [2, 4), 6 per dimension, 36 accumulations + 9
    # divides = 45 per plane x 8 planes = 360; avg pool: 128 output gradients x (4 + 1) = 640; ReLU
    # threshold_backward 512
    other = 2 + 40 + 5 + 360 + 640 + 512
    assert back.flops == 2 * 14_544 + other == 30_647
    ops = {o.op: o.flops for o in back.ops}
    assert ops["aten::avg_pool2d_backward"] == 640 and ops["aten::_adaptive_avg_pool2d_backward"] == 360
    assert ops["aten::nll_loss_backward"] == 2
    assert r.module("pool").backward_flops == 640 and r.module("gap").backward_flops == 360
    # torch.utils.flop_counter has no formula for pooling or loss backward: it counts only the MACs (2 x 14,544)


class _UpNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.bilinear = nn.Upsample(scale_factor=2, mode="bilinear")
        self.nearest = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nearest(self.bilinear(self.conv(x)))


def test_upsampling_net() -> None:
    r = torchcost.analyze(_UpNet(), input_size=(1, 2, 4, 4), mode="train", loss_fn=lambda out: out.sum(),
                          memory=False)
    back = r.phase("backward")
    assert back.uncounted == ()
    # the sum's backward expands the scalar gradient (free). nearest 8 -> 16: 1 x 2*16*16 = 512; bilinear 4 -> 8:
    # 10 x 2*8*8 = 1,280; conv 1x1 weight gradient: 2*4*4 = 32 positions x 2 weights = 64 MACs
    assert r.module("nearest").backward_flops == 512
    assert r.module("bilinear").backward_flops == 1_280
    assert back.macs == 64
    assert back.flops == 2 * 64 + 512 + 1_280 == 1_920


def test_mse_loss_step() -> None:
    r = torchcost.analyze(nn.Linear(4, 3), input_size=(2, 4), mode="train", memory=False,
                          loss_fn=lambda out: F.mse_loss(out, torch.zeros_like(out)))
    back = r.phase("backward")
    assert back.uncounted == ()
    # mse_loss_backward on 2 x 3 = 6 elements x 3 = 18; grad_W (3, 2) @ (2, 4) = 24 MACs; bias gradient, 2 rows
    # of 3 summed: 3 additions; the input needs no gradient
    assert back.macs == 24
    assert back.flops == 2 * 24 + 18 + 3 == 69
    # the loss phase: subtract, square 2 x 6 + mean 6 = 18
    assert r.phase("loss").flops == 18


@pytest.mark.parametrize(
    ("loss_fn", "op", "flops"),
    [
        # 4 x 5 = 20 logits through a sigmoid; "mean": 6 + 1 per element = 140
        (lambda o: F.binary_cross_entropy(torch.sigmoid(o), torch.zeros_like(o)),
         "aten::binary_cross_entropy_backward", 140),
        (lambda o: F.smooth_l1_loss(o, torch.zeros_like(o)), "aten::smooth_l1_loss_backward", 20 * 6),
        (lambda o: F.huber_loss(o, torch.zeros_like(o)), "aten::huber_loss_backward", 20 * 5),
        (lambda o: F.soft_margin_loss(o, torch.ones_like(o)), "aten::soft_margin_loss_backward", 20 * 8),
        # (4, 5) viewed as (1, 5, 2, 2): 4 targets, "mean": the scalar -g / total_weight, 2
        (lambda o: F.cross_entropy(o.view(1, 5, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long, device=o.device)),
         "aten::nll_loss2d_backward", 2),
    ],
)
def test_loss_backward_in_a_step(loss_fn: Any, op: str, flops: int) -> None:
    r = torchcost.analyze(nn.Linear(8, 5), input_size=(4, 8), mode="train", memory=False, loss_fn=loss_fn)
    assert r.phase("backward").uncounted == () and r.phase("loss").uncounted == ()
    assert sum(o.flops for o in r.phase("backward").ops if o.op == op) == flops
