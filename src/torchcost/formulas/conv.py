"""Convolutions of any dimensionality: plain, transposed, grouped, depthwise, dilated, strided, padded.

MACs = N * C_out * prod(out_spatial) * (C_in / groups) * prod(kernel) for a forward convolution, i.e. every output
element costs one multiply-accumulate per weight that can reach it, padded zeros included (the kernel runs over them).
For a transposed convolution every *input* element is scattered through the kernel:
MACs = N * C_in * prod(in_spatial) * (C_out / groups) * prod(kernel).
The bias adds one FLOP per output element; it is not a MAC.
"""

from __future__ import annotations

from torchcost.formulas._util import first_tensor
from torchcost.formulas.registry import Cost, OpCall, register_many


def conv_cost(call: OpCall) -> Cost:
    x = call.arg("input")
    weight = call.arg("weight")
    bias = call.arg("bias")
    transposed = bool(call.arg("transposed", False))
    out = first_tensor(call.out)
    per_position = weight[0].numel()  # (C_in / groups) * prod(kernel), or (C_out / groups) * prod(kernel) if transposed
    positions = x.numel() if transposed else out.numel()
    macs = positions * per_position
    other = out.numel() if bias is not None else 0
    return Cost(macs=macs, other_flops=other)


def _mkldnn_conv_cost(call: OpCall) -> Cost:
    # mkldnn_convolution(input, weight, bias, padding, stride, dilation, groups): never transposed
    weight = call.args[1]
    bias = call.args[2] if len(call.args) > 2 else None
    out = first_tensor(call.out)
    return Cost(macs=out.numel() * weight[0].numel(), other_flops=out.numel() if bias is not None else 0)


register_many(["aten::convolution", "aten::_convolution", "aten::convolution_overrideable"], conv_cost)
register_many(["aten::mkldnn_convolution", "aten::cudnn_convolution", "aten::miopen_convolution"], _mkldnn_conv_cost)
