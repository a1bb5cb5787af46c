"""Sorting and selection: ``sort``, ``argsort``, ``msort`` and ``topk``, priced as comparisons.

A comparison of two floating-point values is 1 FLOP; comparisons of integer (or boolean) tensors are not
floating-point operations, so an integer sort is free. The order the values arrive in is data, so the count is a
data-free bound, per sorted row (``rows = numel / n`` for a dimension of length n):

* ``sort``, ``argsort``, ``msort`` (any ``stable``/``descending``): n * ceil(log2 n) comparisons, a comparison sort's
  bound; n <= 1: 0.
* ``topk(k)``: n * ceil(log2 k) for k >= 2 (each of the n elements is tested against a size-k heap of the best so
  far, ceil(log2 k) comparisons deep); k == 1: n - 1 (a max or min); k == 0: 0.

Moving the values and indices is not counted. ``kthvalue``, ``median`` and ``mode`` have no formula (selection by
quickselect has no data-free bound tighter than its quadratic worst case): they are reported as uncounted.
"""

from __future__ import annotations

import torch

from torchcost.formulas._util import is_floating
from torchcost.formulas.registry import ZERO, Cost, OpCall, register_many


def _ceil_log2(n: int) -> int:
    return (n - 1).bit_length() if n > 1 else 0  # == ceil(log2 n) for n >= 1, exact for integers


def _rows_and_length(t: torch.Tensor, dim: int) -> tuple[int, int]:
    if t.dim() == 0:
        return 1, 1
    n = int(t.shape[dim])
    return (t.numel() // n if n else 0), n


def sort_comparisons(n: int) -> int:
    """Comparisons to sort one row of length n: n * ceil(log2 n)."""
    return n * _ceil_log2(n) if n > 1 else 0


def topk_comparisons(n: int, k: int) -> int:
    """Comparisons to select the k best of one row of length n: n * ceil(log2 k), or n - 1 for k == 1."""
    if k <= 0 or n <= 0:
        return 0
    if k == 1:
        return n - 1
    return n * _ceil_log2(k)


def sort_cost(call: OpCall) -> Cost:
    t = call.args[0]
    if not is_floating(t):
        return ZERO
    dim = call.arg("dim", -1)
    rows, n = _rows_and_length(t, -1 if dim is None else dim)
    return Cost(other_flops=rows * sort_comparisons(n))


def msort_cost(call: OpCall) -> Cost:
    t = call.args[0]
    if not is_floating(t):
        return ZERO
    rows, n = _rows_and_length(t, 0)
    return Cost(other_flops=rows * sort_comparisons(n))


def topk_cost(call: OpCall) -> Cost:
    t = call.args[0]
    if not is_floating(t):
        return ZERO
    rows, n = _rows_and_length(t, call.arg("dim", -1))
    return Cost(other_flops=rows * topk_comparisons(n, int(call.arg("k"))))


register_many(["aten::sort", "aten::argsort"], sort_cost)
register_many(["aten::msort"], msort_cost)
register_many(["aten::topk"], topk_cost)
