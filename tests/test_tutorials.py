"""The numbers tutorials get wrong, each derived by hand beside the assertion, and every built-in example counted.

Conventions used in the derivations (docs/conventions.md): a convolution costs one MAC per weight that reaches each
output element, C_out * prod(out_spatial) * (C_in / groups) * prod(kernel); a Linear costs in * out MACs per row;
FLOPs = 2 * MACs + 1 per output element for a bias add + 1 per element for ReLU + (window - 1) comparisons per output
element of a max pool.

The tutorial examples that are single layers are derived with the convolution formula, in
tests/formulas/test_conv.py: Conv1d(3, 16, 5, stride=2) on 32x3x1000 (test_conv1d_strided_with_bias), Conv3d(3, 5,
(4, 7, 7)) on 1x3x7x60x40 (test_conv3d_tutorial_numbers), the strided Conv3d on meta
(test_conv3d_strided_large_on_meta_only) and the standard and depthwise-separable convolutions. Here: what the
tutorials print wrong about them, and the built-in examples. The simple_cnn totals below are the canonical ones; the
other tests that need them import them from here.
"""

from __future__ import annotations

import torch
from torch import nn

import torchcost
from tests.formulas.test_conv import (
    DEPTHWISE_MACS,
    POINTWISE_MACS,
    SEPARABLE_MACS,
    SEPARABLE_PARAMS,
    STANDARD_MACS,
    STANDARD_PARAMS,
)
from torchcost.examples import EXAMPLES, build
from torchcost.shapes import TensorSpec

# simple_cnn (the default example) on 1x3x224x224: conv1 3->64 k3 p1, ReLU, 2x2 max pool -> 112x112; conv2 64->128 k3
# p1, ReLU, 2x2 max pool -> 56x56; flatten; Linear(128 * 56 * 56 = 401,408 -> 1000)
SIMPLE_CNN_PARAMS = (3 * 64 * 9 + 64  # conv1: 1,792
                     + 64 * 128 * 9 + 128  # conv2: 73,856
                     + 128 * 56 * 56 * 1000 + 1000)  # Linear: 401,409,000
SIMPLE_CNN_MACS = (64 * 224 * 224 * (3 * 9)  # conv1: 86,704,128
                   + 128 * 112 * 112 * (64 * 9)  # conv2: 924,844,032
                   + 128 * 56 * 56 * 1000)  # Linear: 401,408,000
SIMPLE_CNN_FLOPS = (2 * SIMPLE_CNN_MACS
                    + 64 * 224 * 224 + 64 * 224 * 224  # conv1 bias, ReLU
                    + 64 * 112 * 112 * 3  # pool1: 2x2 window, 3 comparisons per output
                    + 128 * 112 * 112 + 128 * 112 * 112  # conv2 bias, ReLU
                    + 128 * 56 * 56 * 3  # pool2
                    + 1000)  # Linear bias


def shape_of(r: torchcost.CostReport, name: str) -> tuple[int, ...]:
    spec = r.module(name).output_shape
    assert isinstance(spec, TensorSpec)
    return spec.shape


def test_conv3d_3_kernel_params() -> None:
    # 5 filters of 3 * 3*3*3 = 81 weights = 405, plus one bias per filter = 410 (not the 420 some tutorials print)
    r = torchcost.analyze(nn.Conv3d(3, 5, 3), torch.randn(1, 3, 3, 3, 3))
    assert r.params == 5 * 3 * 3 * 3 * 3 + 5 == 410


def test_standard_vs_depthwise_separable() -> None:
    std = _run("standard_conv")
    sep = _run("depthwise_separable")
    # the examples are the layers derived in tests/formulas/test_conv.py
    assert (std.params, std.macs) == (STANDARD_PARAMS, STANDARD_MACS)
    assert shape_of(std, "conv") == (1, 4, 64, 64)
    assert (sep.params, sep.macs) == (SEPARABLE_PARAMS, SEPARABLE_MACS)
    assert (sep.module("depthwise").macs, sep.module("pointwise").macs) == (DEPTHWISE_MACS, POINTWISE_MACS)
    # the saving is 1 / (1/C_out + 1/k^2) = 1 / (1/4 + 1/9) = 36/13 = 2.77x, not the "8-9x" quoted for large C_out
    assert std.macs * 13 == sep.macs * 36
    assert round(std.macs / sep.macs, 2) == 2.77
    # no bias, no other op: FLOPs are exactly 2 x MACs
    assert std.flops == 2 * std.macs and sep.flops == 2 * sep.macs


def test_simple_cnn_on_meta() -> None:
    # on the meta device: the real run would allocate the 1.6 GB Linear (tests/test_smoke.py does it, once)
    r = _run("simple_cnn", "meta")
    assert r.module("classifier").params == 128 * 56 * 56 * 1000 + 1000 == 401_409_000
    assert r.params == SIMPLE_CNN_PARAMS == 401_484_648
    assert shape_of(r, "features.2") == (1, 64, 112, 112)
    assert shape_of(r, "features.5") == (1, 128, 56, 56)
    assert r.module("classifier").macs == 128 * 56 * 56 * 1000 == 401_408_000
    assert r.macs == SIMPLE_CNN_MACS == 1_412_956_160
    assert r.flops == SIMPLE_CNN_FLOPS == 2_839_159_784
    assert shape_of(r, "") == (1, 1000)


def _run(name: str, device: str = "cpu") -> torchcost.CostReport:
    model, inputs = build(name, device=device)
    return torchcost.analyze(model, *inputs)


# -- every built-in example, by hand --------------------------------------------------------------------------------

def test_examples_are_all_checked() -> None:
    assert set(EXAMPLES) == {"simple_cnn", "conv1d_series", "conv3d_action", "standard_conv", "depthwise_separable"}


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
