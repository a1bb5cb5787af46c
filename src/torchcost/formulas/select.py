"""Sorting and selection: ``sort``, ``argsort``, ``msort``, ``topk``, ``mode``, ``searchsorted`` and ``bucketize``,
priced as comparisons.

A comparison of two floating-point values is 1 FLOP; comparisons of integer (or boolean) tensors are not
floating-point operations, so an integer sort is free. The order the values arrive in is data, so the count is a
data-free bound, per sorted row (``rows = numel / n`` for a dimension of length n):

* ``sort``, ``argsort``, ``msort`` (any ``stable``/``descending``): n * ceil(log2 n) comparisons, a comparison sort's
  bound; n <= 1: 0.
* ``topk(k)``: n * ceil(log2 k) for k >= 2 (each of the n elements is tested against a size-k heap of the best so
  far, ceil(log2 k) comparisons deep); k == 1: n - 1 (a max or min); k == 0: 0.

* ``searchsorted``, ``bucketize``: a binary search of each value among the m sorted boundaries of its row, ceil(log2
  (m + 1)) comparisons (m + 1 places to insert it), per value searched; the values are floating where the boundaries
  are (they are compared as one dtype).

* ``mode``: the CPU kernel sorts each row (n * ceil(log2 n), as ``sort``) and then compares each sorted value with
  the next to find the runs of equal values, n - 1 comparisons: n * ceil(log2 n) + n - 1 per row; counting the runs'
  lengths is integer work (free).

Moving the values and indices is not counted. ``kthvalue`` and ``median`` have no formula (selection by quickselect
has no data-free bound tighter than its quadratic worst case): they are reported as uncounted.
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


def mode_cost(call: OpCall) -> Cost:
    """``mode(self, dim=-1, keepdim=False)``: per row, a sort and a comparison of each neighbouring pair."""
    t = call.args[0]
    if not is_floating(t):
        return ZERO
    rows, n = _rows_and_length(t, call.arg("dim", -1))
    return Cost(other_flops=rows * (sort_comparisons(n) + max(n - 1, 0)))


def search_comparisons(m: int) -> int:
    """Comparisons of a binary search among m sorted boundaries: ceil(log2 (m + 1))."""
    return _ceil_log2(m + 1)


def searchsorted_cost(call: OpCall) -> Cost:
    """``searchsorted(sorted_sequence, values)``: each value searched in its row of the sequence (a 1-d sequence
    serves them all); a Scalar value once per row."""
    sequence, values = call.args[0], call.args[1]
    if not is_floating(sequence) or sequence.dim() == 0:
        return ZERO
    m = int(sequence.shape[-1])
    searched = values.numel() if isinstance(values, torch.Tensor) else (sequence.numel() // m if m else 0)
    return Cost(other_flops=searched * search_comparisons(m))


def bucketize_cost(call: OpCall) -> Cost:
    """``bucketize(values, boundaries)``: each value searched among the 1-d boundaries; a Scalar value once."""
    values, boundaries = call.args[0], call.args[1]
    if not is_floating(boundaries):
        return ZERO
    searched = values.numel() if isinstance(values, torch.Tensor) else 1
    return Cost(other_flops=searched * search_comparisons(boundaries.numel()))


register_many(["aten::sort", "aten::argsort"], sort_cost)
register_many(["aten::searchsorted"], searchsorted_cost)
register_many(["aten::bucketize"], bucketize_cost)
register_many(["aten::msort"], msort_cost)
register_many(["aten::topk"], topk_cost)
register_many(["aten::mode"], mode_cost)
