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

``nn.Bilinear``/``F.bilinear`` (y_o = x1^T W_o x2 + b_o) reach the dispatcher as ``_trilinear``, which torch computes
slice by slice along its unrolled dimension (the output features) as two products: W_o x2 summed over the second
input's features, then that dotted with x1 over the first's, each slice's result added into a zero output. So
MACs = B * out * in2 * (in1 + 1) (B * out * in1 * in2 for the first product, B * out * in1 for the second: which
input is contracted first is torch's choice, not the cheaper one) and one FLOP per output element for the add into
zeros; the bias is the ``add`` after it. In general (the backward's ``_trilinear`` calls too), per slice: a product
summed over dimensions where both operands have a size costs the product of the operands' broadcast sizes in MACs; a
summed dimension only one operand has is summed out of it first (n - 1 per remaining element); a product with
nothing to sum is an element-wise multiply (1 per element).
"""

from __future__ import annotations

import math

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


def _pair(left: list[int], right: list[int], summed: set[int]) -> tuple[int, int, list[int]]:
    """One of _trilinear's products of two slices (torch's sumproduct_pair, keepdim): (MACs, other FLOPs, the
    result's sizes)."""
    left, right = list(left), list(right)
    other = 0
    if not summed:
        out = [max(a, b) for a, b in zip(left, right)]
        return 0, math.prod(out), out
    for d in summed:
        if left[d] != 1 and right[d] == 1:  # (summed out of the left operand first)
            other += math.prod(left) // left[d] * (left[d] - 1)
            left[d] = 1
        elif right[d] != 1 and left[d] == 1:
            other += math.prod(right) // right[d] * (right[d] - 1)
            right[d] = 1
    macs = math.prod(max(a, b) for a, b in zip(left, right))
    out = [1 if d in summed else max(a, b) for d, (a, b) in enumerate(zip(left, right))]
    return macs, other, out


def trilinear_cost(call: OpCall) -> Cost:
    """_trilinear(i1, i2, i3, expand1, expand2, expand3, sumdim, unroll_dim): the kernel's loop over the unrolled
    dimension, two products a slice and the slice's add into the zero output."""
    tensors = [first_tensor(call.args[i]) for i in range(3)]
    expands = [set(call.arg(name)) for name in ("expand1", "expand2", "expand3")]
    sumdim, unroll = set(call.arg("sumdim")), int(call.arg("unroll_dim", 1))
    if any(t.numel() == 0 for t in tensors):
        return Cost()
    total = tensors[0].dim() + len(expands[0])
    shapes: list[list[int]] = []
    for t, expand in zip(tensors, expands):
        sizes = iter(int(s) for s in t.shape)
        shapes.append([1 if d in expand else next(sizes) for d in range(total)])
    sums_12 = {d for d in range(total) if d in sumdim and d != unroll and d in expands[2]}
    sums_23 = {d for d in range(total) if d in sumdim and d != unroll and d not in expands[2]}
    slices = max(shape[unroll] for shape in shapes)
    for shape in shapes:
        shape[unroll] = 1
    macs_12, other_12, buf = _pair(shapes[0], shapes[1], sums_12)
    macs_23, other_23, buf = _pair(buf, shapes[2], sums_23)
    return Cost(macs=slices * (macs_12 + macs_23), other_flops=slices * (other_12 + other_23 + math.prod(buf)))


register_many(["aten::_trilinear"], trilinear_cost)
