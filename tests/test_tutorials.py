"""The numbers tutorials get wrong, each derived by hand beside the assertion, and every built-in example counted.

Conventions used in the derivations (docs/conventions.md): a convolution costs one MAC per weight that reaches each
output element, C_out * prod(out_spatial) * (C_in / groups) * prod(kernel); a Linear costs in * out MACs per row;
FLOPs = 2 * MACs + 1 per output element for a bias add + 1 per element for ReLU + (window - 1) comparisons per output
element of a max pool.
"""

from __future__ import annotations

import torch
from torch import nn

import torchcost
from torchcost.examples import EXAMPLES, build
from torchcost.shapes import TensorSpec


def shape_of(r: torchcost.CostReport, name: str) -> tuple[int, ...]:
    spec = r.module(name).output_shape
    assert isinstance(spec, TensorSpec)
    return spec.shape


def test_conv3d_4x7x7_kernel() -> None:
    conv = nn.Conv3d(3, 5, (4, 7, 7))
    r = torchcost.analyze(conv, torch.randn(1, 3, 7, 60, 40))
    # output: D 7 - 4 + 1 = 4, H 60 - 7 + 1 = 54, W 40 - 7 + 1 = 34
    assert shape_of(r, "") == (1, 5, 4, 54, 34)
    # weight 5 * 3 * 4 * 7 * 7 = 2,940 plus 5 biases
    assert r.params == 5 * 3 * 4 * 7 * 7 + 5 == 2_945
    # 5 * 4 * 54 * 34 = 36,720 output elements, each 3 * 4 * 7 * 7 = 588 MACs
    assert r.macs == (5 * 4 * 54 * 34) * (3 * 4 * 7 * 7) == 21_591_360
    # + one bias add per output element
    assert r.flops == 2 * 21_591_360 + 36_720


def test_conv3d_3_kernel_params() -> None:
    # 5 filters of 3 * 3*3*3 = 81 weights = 405, plus one bias per filter = 410 (not the 420 some tutorials print)
    r = torchcost.analyze(nn.Conv3d(3, 5, 3), torch.randn(1, 3, 3, 3, 3))
    assert r.params == 5 * 3 * 3 * 3 * 3 + 5 == 410


def test_standard_vs_depthwise_separable() -> None:
    std = _run("standard_conv")
    sep = _run("depthwise_separable")
    # standard: 4 filters of 3 * 3 * 3 = 108 weights, no bias; padding 1 keeps 64x64
    assert std.params == 4 * 3 * 3 * 3 == 108
    assert shape_of(std, "conv") == (1, 4, 64, 64)
    # 4 * 64 * 64 = 16,384 outputs, 27 MACs each
    assert std.macs == 4 * 64 * 64 * 27 == 442_368
    # depthwise: 3 filters of 1 * 3 * 3 = 27 weights; pointwise: 4 * 3 = 12 weights
    assert sep.params == 3 * 9 + 4 * 3 == 39
    assert sep.module("depthwise").macs == 3 * 64 * 64 * 9 == 110_592
    assert sep.module("pointwise").macs == 4 * 64 * 64 * 3 == 49_152
    assert sep.macs == 110_592 + 49_152 == 159_744
    # the saving is 1 / (1/C_out + 1/k^2) = 1 / (1/4 + 1/9) = 36/13 = 2.77x, not the "8-9x" quoted for large C_out
    assert std.macs * 13 == sep.macs * 36
    assert round(std.macs / sep.macs, 2) == 2.77
    # no bias, no other op: FLOPs are exactly 2 x MACs
    assert std.flops == 2 * std.macs and sep.flops == 2 * sep.macs


def test_simple_cnn_on_meta() -> None:
    # on the meta device: the real run would allocate the 1.6 GB Linear
    r = _run("simple_cnn", "meta")
    conv1 = 3 * 64 * 9 + 64  # 1,792
    conv2 = 64 * 128 * 9 + 128  # 73,856
    linear = 128 * 56 * 56 * 1000 + 1000  # 401,408 inputs x 1000 + 1000 biases
    assert r.module("classifier").params == linear == 401_409_000
    assert r.params == conv1 + conv2 + linear == 401_484_648
    assert shape_of(r, "features.2") == (1, 64, 112, 112)
    assert shape_of(r, "features.5") == (1, 128, 56, 56)
    macs1 = 64 * 224 * 224 * (3 * 9)  # 86,704,128
    macs2 = 128 * 112 * 112 * (64 * 9)  # 924,844,032
    macs3 = 128 * 56 * 56 * 1000  # 401,408,000
    assert r.macs == macs1 + macs2 + macs3 == 1_412_956_160


def test_conv1d_stride_2() -> None:
    r = torchcost.analyze(nn.Conv1d(3, 16, 5, stride=2), torch.randn(32, 3, 1000))
    # L_out = floor((1000 - 5) / 2) + 1 = 497 + 1 = 498
    assert shape_of(r, "") == (32, 16, 498)
    assert r.params == 16 * 3 * 5 + 16 == 256
    assert r.macs == 32 * 16 * 498 * (3 * 5) == 3_824_640


def test_conv3d_strided_on_meta() -> None:
    with torch.device("meta"):
        conv = nn.Conv3d(3, 32, 3, stride=(1, 2, 2))
    r = torchcost.analyze(conv, torch.empty(8, 3, 10, 224, 224, device="meta"))
    # D = 10 - 3 + 1 = 8; H = W = floor((224 - 3) / 2) + 1 = 110 + 1 = 111
    assert shape_of(r, "") == (8, 32, 8, 111, 111)
    assert r.params == 32 * 3 * 27 + 32 == 2_624
    # 8 * 32 * 8 * 111 * 111 = 25,233,408 outputs, each 3 * 3 * 3 * 3 = 81 MACs
    assert r.macs == 8 * 32 * 8 * 111 * 111 * (3 * 27) == 2_043_906_048


def _run(name: str, device: str = "cpu") -> torchcost.CostReport:
    model, inputs = build(name, device=device)
    return torchcost.analyze(model, *inputs)


# -- every built-in example, by hand --------------------------------------------------------------------------------

def test_examples_are_all_checked() -> None:
    assert set(EXAMPLES) == {"simple_cnn", "conv1d_series", "conv3d_action", "standard_conv", "depthwise_separable"}


def test_example_simple_cnn_flops() -> None:
    r = _run("simple_cnn", "meta")
    conv1 = 2 * 86_704_128 + 64 * 224 * 224  # MACs x 2 + one bias add per output
    relu1 = 64 * 224 * 224
    pool1 = 64 * 112 * 112 * 3  # 2x2 window: 3 comparisons per output
    conv2 = 2 * 924_844_032 + 128 * 112 * 112
    relu2 = 128 * 112 * 112
    pool2 = 128 * 56 * 56 * 3
    fc = 2 * 401_408_000 + 1000
    assert r.flops == conv1 + relu1 + pool1 + conv2 + relu2 + pool2 + fc
    assert shape_of(r, "") == (1, 1000)


def test_example_conv1d_series() -> None:
    r = _run("conv1d_series")
    # conv1 1->32 k5 p2 on 36: L = 36; pool 2 -> 18; conv2 32->64 k3: L = 16; pool 2 -> 8; fc 64*8 -> 1
    assert shape_of(r, "conv1") == (1, 32, 36)
    assert shape_of(r, "conv2") == (1, 64, 16)
    assert shape_of(r, "fc") == (1, 1)
    assert r.params == (32 * 5 + 32) + (64 * 32 * 3 + 64) + (512 + 1) == 6_913
    macs = 32 * 36 * 5 + 64 * 16 * (32 * 3) + 512  # 5,760 + 98,304 + 512
    assert r.macs == macs == 104_576
    flops = (2 * 5_760 + 32 * 36  # conv1 and its bias
             + 32 * 36  # relu
             + 32 * 18  # max_pool1d k2: 1 comparison per output
             + 2 * 98_304 + 64 * 16 + 64 * 16  # conv2, bias, relu
             + 64 * 8  # pool
             + 2 * 512 + 1)  # fc
    assert r.flops == flops == 214_593


def test_example_conv3d_action_on_meta() -> None:
    r = _run("conv3d_action", "meta")
    # conv1 3->64 k3 p1 keeps 10x112x112; pool (1,2,2) -> 10x56x56; conv2 64->128 keeps it; pool 2 -> 5x28x28
    assert shape_of(r, "conv1") == (1, 64, 10, 112, 112)
    assert shape_of(r, "pool1") == (1, 64, 10, 56, 56)
    assert shape_of(r, "pool2") == (1, 128, 5, 28, 28)
    assert r.params == (64 * 3 * 27 + 64) + (128 * 64 * 27 + 128) + (128 * 5 * 28 * 28 * 10 + 10) == 5_244_170
    out1, out2 = 64 * 10 * 112 * 112, 128 * 10 * 56 * 56
    macs1, macs2, macs3 = out1 * 3 * 27, out2 * 64 * 27, 128 * 5 * 28 * 28 * 10
    assert (macs1, macs2, macs3) == (650_280_960, 6_936_330_240, 5_017_600)
    assert r.macs == macs1 + macs2 + macs3
    flops = (2 * macs1 + out1 + out1  # conv1 + bias + relu
             + 64 * 10 * 56 * 56 * 3  # pool1: a 1x2x2 window, 3 comparisons
             + 2 * macs2 + out2 + out2
             + 128 * 5 * 28 * 28 * 7  # pool2: a 2x2x2 window, 7 comparisons
             + 2 * macs3 + 10)
    assert r.flops == flops
