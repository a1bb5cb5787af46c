"""Distances (formulas/distance.py): a pair of M-element vectors costs M subtractions and the p-norm of the
difference as vector norms are priced: 3M at p = 2, 3M - 1 at p = 0, 1, inf, 4M otherwise; cdist at p = 2 on sets of
more than 25 rows runs the |a|^2 + |b|^2 - 2 a.b expansion as a matrix product, op for op; the backward kernels
4 / 4 / 7 / 9 / 8 per (pair, element) term at p = 2 / 1 / inf / p < 2 / other.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchcost
from tests.formulas._check import fn_both


def _by_op(r: object) -> dict[str, tuple[int, int]]:
    return {o.op: (o.macs, o.flops) for o in r.ops}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("p", "per_pair"), [(2.0, 3 * 4), (1.0, 3 * 4 - 1), (0.0, 3 * 4 - 1),
                                              (float("inf"), 3 * 4 - 1), (3.0, 4 * 4)])
def test_cdist_direct_kernel(p: float, per_pair: int) -> None:
    # (2, 6, 4) against (2, 5, 4): at most 25 rows a set, so the direct kernel at every p: 2 * 6 * 5 = 60 pairs
    r = fn_both(lambda a, b: torch.cdist(a, b, p=p), torch.randn(2, 6, 4), torch.randn(2, 5, 4))
    assert _by_op(r)["aten::_cdist_forward"] == (0, 60 * per_pair)
    assert r.uncounted == ()


def test_cdist_euclidean_expansion_on_larger_sets() -> None:
    # (2, 30, 8) against (2, 40, 8), p = 2: _euclidean_dist. Per batch: squares and row sums of x1 30 * (8 + 7) =
    # 450 and of x2 40 * 15 = 600, x1 * -2 240, the (30, 10) @ (10, 40) product 12,000 MACs, clamp and sqrt 2 * 1,200
    # = 2,400. Two batches: MACs 24,000; other 2 * (450 + 600 + 240 + 2,400) = 7,380; FLOPs 48,000 + 7,380 = 55,380
    r = fn_both(lambda a, b: torch.cdist(a, b), torch.randn(2, 30, 8), torch.randn(2, 40, 8))
    assert _by_op(r)["aten::_euclidean_dist"] == (24_000, 55_380)


def test_pdist_and_dist() -> None:
    # pdist of 6 rows of 4: 15 pairs at 3 * 4 = 12: 180; dist(a, 2a) over 24 elements: 72 (and the 24 multiplies)
    r = fn_both(lambda x: torch.pdist(x), torch.randn(6, 4))
    assert r.flops == 15 * 12 == 180
    r = fn_both(lambda x: torch.dist(x, x * 2), torch.randn(6, 4))
    assert _by_op(r)["aten::dist"] == (0, 3 * 24)


class _Distances(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a, b = self.proj(x), self.proj(y)
        return torch.cdist(a, b, p=1).sum() + torch.pdist(a[0]).sum()


def test_the_backward_kernels() -> None:
    r = torchcost.analyze(_Distances(), torch.randn(2, 6, 4), torch.randn(2, 5, 4), mode="train")
    backward = _by_op({p.name: p for p in r.phases}["backward"])
    # _cdist_backward at p = 1, 4 a term, called for each input: a's 2 * 6 * 4 = 48 elements against 5 rows (240
    # terms), b's 2 * 5 * 4 = 40 against 6 (240 terms): 480 * 4 = 1,920
    assert backward["aten::_cdist_backward"] == (0, 1_920)
    # _pdist_backward at p = 2 on a[0] (6, 4): 15 pairs * 4 elements, 4 a term and 1 more to add into the second
    # row: 60 * 5 = 300
    assert backward["aten::_pdist_backward"] == (0, 300)
    assert all(not phase.uncounted for phase in r.phases)
