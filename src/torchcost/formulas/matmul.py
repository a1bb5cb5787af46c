"""Matrix products: mm, addmm, bmm, baddbmm, addbmm, mv, addmv, dot, and the ops matmul/linear/einsum lower to.

MACs = the product of the result's size and the contracted dimension: (M, K) @ (K, N) -> M*K*N; batched B*M*K*N.
``linear``, ``matmul`` and ``einsum`` on any number of leading dimensions reach the dispatcher as these ops, so a Linear
on a (B, T, C) input costs B*T*C*N MACs. An added bias/``input`` term is one FLOP per output element; scaling by
``alpha``/``beta`` other than 1 is one more FLOP per output element each.
"""

from __future__ import annotations

from torchcost.formulas._util import first_tensor
from torchcost.formulas.registry import Cost, OpCall, register_many


def _scale_flops(call: OpCall, n: int) -> int:
    alpha = call.arg("alpha", 1)
    beta = call.arg("beta", 1)
    extra = 0
    if beta != 0:
        extra += n  # the add of the input term
        if beta != 1:
            extra += n
    if alpha != 1:
        extra += n
    return extra


def _contracted(a: object) -> int:
    tensor = first_tensor(a)
    return int(tensor.shape[-1])


def mm_cost(call: OpCall) -> Cost:
    out = first_tensor(call.out)
    return Cost(macs=out.numel() * _contracted(call.args[0]))


def addmm_cost(call: OpCall) -> Cost:
    # addmm(input, mat1, mat2), baddbmm(input, batch1, batch2), addmv(input, mat, vec)
    out = first_tensor(call.out)
    return Cost(macs=out.numel() * _contracted(call.args[1]), other_flops=_scale_flops(call, out.numel()))


def addbmm_cost(call: OpCall) -> Cost:
    # addbmm(input, batch1 (B,M,K), batch2 (B,K,N)) -> (M, N), summed over B
    b1 = call.args[1]
    batch, _, k = b1.shape
    out = first_tensor(call.out)
    sums = (batch - 1) * out.numel()  # adding the B products together
    return Cost(macs=batch * out.numel() * k, other_flops=sums + _scale_flops(call, out.numel()))


def dot_cost(call: OpCall) -> Cost:
    return Cost(macs=call.args[0].numel())


def addmm_activation_cost(call: OpCall) -> Cost:
    from torchcost.formulas.pointwise import PER_ELEMENT

    base = addmm_cost(call)
    n = first_tensor(call.out).numel()
    act = PER_ELEMENT["gelu" if call.arg("use_gelu", False) else "relu"]
    return Cost(base.macs, base.other_flops + act * n)


register_many(["aten::mm", "aten::bmm", "aten::mv", "aten::_scaled_mm", "aten::_int_mm"], mm_cost)
register_many(["aten::addmm", "aten::addmm_", "aten::baddbmm", "aten::baddbmm_", "aten::addmv", "aten::addmv_"],
              addmm_cost)
register_many(["aten::addbmm", "aten::addbmm_"], addbmm_cost)
register_many(["aten::dot", "aten::vdot"], dot_cost)
register_many(["aten::_addmm_activation"], addmm_activation_cost)
