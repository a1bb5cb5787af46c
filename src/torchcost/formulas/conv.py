"""Convolutions of any dimensionality: plain, transposed, grouped, depthwise, dilated, strided, padded.

MACs = N * C_out * prod(out_spatial) * (C_in / groups) * prod(kernel) for a forward convolution, i.e. every output
element costs one multiply-accumulate per weight that can reach it, padded zeros included (the kernel runs over them).
For a transposed convolution every *input* element is scattered through the kernel:
MACs = N * C_in * prod(in_spatial) * (C_out / groups) * prod(kernel).
Both are (weight elements) x (positions the kernel is applied at): weight[0].numel() is C_in/groups * prod(kernel)
(forward) or C_out/groups * prod(kernel) (transposed), so groups and depthwise (groups = C_in) need no special case,
and dilation, stride and padding enter only through the output (forward) or input (transposed) size.
The bias adds one FLOP per output element; it is not a MAC.
"""

from __future__ import annotations

from torchcost.formulas._util import first_tensor
from torchcost.formulas.registry import Cost, Formula, OpCall, register_many


def conv_cost(call: OpCall) -> Cost:
    x = call.arg("input")
    weight = call.arg("weight")
    bias = call.arg("bias")
    transposed = bool(call.arg("transposed", False))
    out = first_tensor(call.out)
    # weight[0].numel(): (C_in / groups) * prod(kernel), or (C_out / groups) * prod(kernel) if transposed; computed
    # without indexing, which would make a view through the dispatcher on every convolution
    per_position = weight.numel() // weight.size(0)
    positions = x.numel() if transposed else out.numel()
    macs = positions * per_position
    other = out.numel() if bias is not None else 0
    return Cost(macs=macs, other_flops=other)


def _kernel_conv_cost(transposed: bool) -> Formula:
    """The backend kernels below ``aten::convolution`` (seen only when called directly): the same formula, with the
    weight laid out (C_out, C_in/groups, *k) for a forward and (C_in, C_out/groups, *k) for a transposed one."""

    def cost(call: OpCall) -> Cost:
        x = first_tensor(call.args[0])
        weight = call.args[1]
        bias = call.arg("bias")
        out = first_tensor(call.out)
        positions = x.numel() if transposed else out.numel()
        per_position = weight.numel() // weight.size(0)  # weight[0].numel(), without making a view
        return Cost(macs=positions * per_position, other_flops=out.numel() if bias is not None else 0)

    return cost


register_many(["aten::convolution", "aten::_convolution", "aten::convolution_overrideable"], conv_cost)
register_many(
    ["aten::mkldnn_convolution", "aten::cudnn_convolution", "aten::miopen_convolution",
     "aten::miopen_depthwise_convolution", "aten::_conv_depthwise2d", "aten::conv_depthwise3d",
     "aten::_slow_conv2d_forward", "aten::slow_conv3d_forward", "aten::slow_conv_dilated2d",
     "aten::slow_conv_dilated3d", "aten::_nnpack_spatial_convolution"],
    _kernel_conv_cost(False),
)
register_many(
    ["aten::cudnn_convolution_transpose", "aten::miopen_convolution_transpose", "aten::slow_conv_transpose2d",
     "aten::slow_conv_transpose3d"],
    _kernel_conv_cost(True),
)
