"""Distances: ``torch.cdist``, ``torch.pdist``, ``torch.dist`` and their backward.

A distance between two vectors of M elements is the difference (M subtractions) and the p-norm of it, priced as the
vector norms are (:mod:`pointwise`, ``_norm``): p = 2 squares M, sums M - 1 and takes one square root, 2M; p = 1, 0
or +-inf: |x| (or a comparison with 0) M and M - 1 sums (max for inf), 2M - 1; any other p: |x|, pow, M - 1 sums
and one root, 3M. So a pair costs 3M at p = 2, 3M - 1 at p = 1, 0, inf, and 4M otherwise:

* ``_cdist_forward(x1 (B, P, M), x2 (B, R, M), p)``: B * P * R pairs (``torch.cdist``'s direct kernel: p other
  than 2, or both sets of at most 25 rows);
* ``_euclidean_dist(x1, x2)`` (``cdist`` at p = 2 on larger sets, ``compute_mode`` allowing) runs the expansion
  |a|^2 + |b|^2 - 2 a.b as a matrix product, op for op as torch writes it: squares and row sums of both (P(2M - 1)
  and R(2M - 1)), x1 times -2 (P M), the product of (P, M + 2) and (M + 2, R) (P R (M + 2) MACs: the norms ride
  along as two extra columns), clamping at 0 and the square root (2 P R), per batch;
* ``_pdist_forward(x (N, M), p)``: the N (N - 1) / 2 pairs of rows;
* ``dist(a, b, p)``: one pair of the broadcast size's elements.

The backward kernels (``_cdist_backward``, ``_pdist_backward``) add, for each pair and each of its M elements, the
norm's derivative times the pair's gradient into the row's gradient: the difference again, the derivative, the
product with the gradient and the accumulation: p = 2 ``grad * diff / dist`` 4; p = 1 ``grad * sign(diff)`` 4; inf
``grad * sign(diff) * (|diff| == dist)`` 7; p < 2 ``sign(diff) |diff|^(p-1) grad / dist^(p-1)`` 9; other p
``diff |diff|^(p-2) grad / dist^(p-1)`` 8; p = 0 nothing (its gradient is 0). ``_cdist_backward`` gives one input's
gradient (torch calls it once for each input that needs one): B * P * R * M terms for x1 (B, P, M) against R rows;
``_pdist_backward`` both rows of each of the N (N - 1) / 2 pairs: N (N - 1) / 2 * M terms, each added into two rows
(+ 1).
"""

from __future__ import annotations

import math

import torch

from torchcost.formulas._util import first_tensor, is_floating
from torchcost.formulas.registry import ZERO, Cost, OpCall, register_many


def pair_flops(m: int, p: float) -> int:
    """One distance between two vectors of ``m`` elements: m subtractions and the p-norm of the difference."""
    if m == 0:
        return 0
    if p == 2:
        return 3 * m
    if p in (0.0, 1.0, math.inf, -math.inf):
        return 3 * m - 1
    return 4 * m


def backward_term(p: float) -> int:
    """One (pair, element) term of a distance's backward kernel, by the norm's order."""
    if p == 0:
        return 0
    if p in (1.0, 2.0):
        return 4
    if math.isinf(p):
        return 7
    return 9 if p < 2 else 8


def _cdist_forward(call: OpCall) -> Cost:
    x1 = first_tensor(call.args[0])
    if not is_floating(x1):
        return ZERO
    m = int(x1.shape[-1])
    pairs = first_tensor(call.out).numel()
    return Cost(other_flops=pairs * pair_flops(m, float(call.arg("p"))))


def _euclidean_dist(call: OpCall) -> Cost:
    x1, x2 = first_tensor(call.args[0]), first_tensor(call.args[1])
    if not is_floating(x1):
        return ZERO
    m = int(x1.shape[-1])
    rows1, rows2 = x1.numel() // m if m else 0, x2.numel() // m if m else 0
    pairs = first_tensor(call.out).numel()  # (B, P, R): each pair one row of the product, M + 2 long
    other = rows1 * (2 * m - 1) + rows2 * (2 * m - 1) + rows1 * m + 2 * pairs
    return Cost(macs=pairs * (m + 2), other_flops=other)


def _pdist_forward(call: OpCall) -> Cost:
    x = first_tensor(call.args[0])
    if not is_floating(x) or x.dim() != 2:
        return ZERO
    pairs = first_tensor(call.out).numel()
    return Cost(other_flops=pairs * pair_flops(int(x.shape[1]), float(call.arg("p"))))


def _dist(call: OpCall) -> Cost:
    a, b = first_tensor(call.args[0]), first_tensor(call.args[1])
    if not is_floating(a):
        return ZERO
    m = math.prod(torch.broadcast_shapes(a.shape, b.shape))
    return Cost(other_flops=pair_flops(m, float(call.arg("p"))))


def _cdist_backward(call: OpCall) -> Cost:
    # _cdist_backward(grad, x1, x2, p, cdist): x1's gradient (B, P, M), each element summing R terms
    x1, x2 = first_tensor(call.args[1]), first_tensor(call.args[2])
    if not is_floating(x1):
        return ZERO
    return Cost(other_flops=x1.numel() * int(x2.shape[-2]) * backward_term(float(call.arg("p"))))


def _pdist_backward(call: OpCall) -> Cost:
    # _pdist_backward(grad, self, p, pdist): each pair's M terms, added into both of its rows
    x = first_tensor(call.args[1])
    if not is_floating(x) or x.dim() != 2:
        return ZERO
    n, m = int(x.shape[0]), int(x.shape[1])
    term = backward_term(float(call.arg("p")))
    return Cost(other_flops=n * (n - 1) // 2 * m * (term + 1) if term else 0)


register_many(["aten::_cdist_forward"], _cdist_forward)
register_many(["aten::_euclidean_dist"], _euclidean_dist)
register_many(["aten::_pdist_forward"], _pdist_forward)
register_many(["aten::dist"], _dist)
register_many(["aten::_cdist_backward"], _cdist_backward)
register_many(["aten::_pdist_backward"], _pdist_backward)
