"""Matrix products: mm, addmm, bmm, baddbmm, addbmm, mv, addmv, dot, and the ops matmul/linear/einsum lower to.

MACs = the product of the result's size and the contracted dimension: (M, K) @ (K, N) -> M*K*N; batched B*M*K*N;
addbmm (a sum of B products into one (M, N)) B*M*K*N, the sum over B being the accumulate of those MACs.
``linear``, ``matmul`` and ``einsum`` on any number of leading dimensions reach the dispatcher as these ops, so a Linear
on a (B, T, C) input costs B*T*C*N MACs. An added bias/``input`` term is one FLOP per output element; scaling by
``alpha``/``beta`` other than 1 is one more FLOP per output element each (``beta == 0`` drops the input term).
An outer product (``torch.outer``, ``einsum("i,j->ij")``) has nothing to accumulate: torch runs it as ``mul``, one
FLOP per element, not a MAC. A product of integer tensors (``_int_mm``, int8 GEMMs) still counts its MACs: a MAC is
a MAC whatever the dtype; only the element-wise and reduction ops are free on non-floating results.

A triangular solve (``torch.linalg.solve_triangular``, ``torch.triangular_solve``: substitution, as the chunked
gated delta rule of Qwen3-Next and Qwen3.5 runs it) with an n x n triangular matrix solves each of the result's
columns (rows, for ``left=False``) of n unknowns by substitution: unknown i takes i multiply-subtracts of the ones
found before it and a division by the diagonal, so MACs = result size * (n - 1) / 2 and one more FLOP per result
element for the divisions (none with ``unitriangular=True``): result size * n FLOPs in all, LAPACK's count for trsm.
"""

from __future__ import annotations

from torchcost.formulas._util import first_tensor
from torchcost.formulas.pointwise import PER_ELEMENT
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
    # addbmm(input, batch1 (B,M,K), batch2 (B,K,N)) -> (M, N): one contraction over B*K, so summing the B products
    # is the accumulate of the MACs, not extra additions
    b1 = call.args[1]
    batch, _, k = b1.shape
    out = first_tensor(call.out)
    return Cost(macs=int(batch) * out.numel() * int(k), other_flops=_scale_flops(call, out.numel()))


def dot_cost(call: OpCall) -> Cost:
    return Cost(macs=call.args[0].numel())


def addmm_activation_cost(call: OpCall) -> Cost:
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


def grouped_mm_cost(call: OpCall) -> Cost:
    """_grouped_mm (mixture-of-experts GEMMs): result x K, except 2-D x 2-D, where ``offs`` splits K into the groups
    and the result holds one (M, N) block per group: M * N * K_total."""
    a, b = call.args[0], call.args[1]
    out = first_tensor(call.out)
    if a.dim() == 2 and b.dim() == 2:
        macs = int(a.shape[0]) * int(b.shape[1]) * int(a.shape[1])
    else:
        macs = out.numel() * int(a.shape[-1])
    return Cost(macs=macs, other_flops=out.numel() if call.arg("bias") is not None else 0)


register_many(["aten::_grouped_mm", "aten::_scaled_grouped_mm"], grouped_mm_cost)


def triangular_solve_cost(call: OpCall) -> Cost:
    """linalg_solve_triangular(A, B) and triangular_solve(B, A): substitution through an n x n triangular A."""
    if call.key.endswith("linalg_solve_triangular"):
        a = call.args[0]
    else:  # (triangular_solve(self=B, A): the solution and a copy of A)
        a = call.arg("A")
    n = int(a.shape[-1])
    solved = first_tensor(call.out)
    divisions = 0 if call.arg("unitriangular", False) else solved.numel()
    return Cost(macs=solved.numel() * (n - 1) // 2, other_flops=divisions)


register_many(["aten::linalg_solve_triangular", "aten::triangular_solve"], triangular_solve_cost)
