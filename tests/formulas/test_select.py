"""Sorting and selection (formulas/select.py): 1 FLOP per comparison of floating values, per sorted row of length n:
sort / argsort / msort n * ceil(log2 n); topk(k) n * ceil(log2 k) for k >= 2, n - 1 for k == 1. Integer sorts are free.
"""

from __future__ import annotations

import pytest
import torch

import torchcost
from tests.formulas._check import Fn, fn_both
from torchcost.report import OpCount


@pytest.mark.parametrize(
    ("fn", "shape", "flops"),
    [
        (lambda x: torch.sort(x), (2, 3, 10), 240),  # rows 2*3=6, n=10: 10*ceil(log2 10)=10*4=40 per row -> 240
        (lambda x: torch.sort(x, dim=1, descending=True), (2, 3, 10), 120),  # rows 2*10=20, n=3: 3*2=6 -> 120
        (lambda x: torch.sort(x, stable=True), (4, 8), 96),  # rows 4, n=8: 8*3=24 -> 96
        (lambda x: torch.argsort(x, dim=0), (5, 4), 60),  # rows 4, n=5: 5*ceil(log2 5)=5*3=15 -> 60
        (lambda x: torch.msort(x), (5, 4), 60),  # along dim 0: rows 4, n=5: 15 -> 60
        (lambda x: torch.sort(x), (7, 1), 0),  # n=1: nothing to compare
        (lambda x: torch.topk(x, 3), (2, 3, 10), 120),  # rows 6, n=10, k=3: 10*ceil(log2 3)=10*2=20 -> 120
        (lambda x: torch.topk(x, 4, dim=0), (9, 2), 36),  # rows 2, n=9, k=4: 9*2=18 -> 36
        (lambda x: torch.topk(x, 5, largest=False), (3, 16), 144),  # rows 3, n=16, k=5: 16*3=48 -> 144
        (lambda x: torch.topk(x, 1), (2, 3, 10), 54),  # k=1: a max, n-1=9 per row, 6 rows -> 54
    ],
)
def test_sort_and_topk(fn: object, shape: tuple[int, ...], flops: int) -> None:
    r = fn_both(fn, torch.randn(shape))  # type: ignore[arg-type]
    assert r.macs == 0
    assert r.flops == flops
    assert r.uncounted == ()


def test_integer_sort_and_topk_are_free() -> None:
    x = torch.randint(0, 100, (4, 10))
    r = torchcost.analyze(Fn(lambda t: (torch.sort(t), torch.topk(t, 3))), x)
    assert r.flops == 0
    assert r.uncounted == ()
    free = {o.op for o in r.free_ops}
    assert {"aten::sort", "aten::topk"} <= free


@pytest.mark.parametrize(
    ("dim", "flops"),
    [
        # rows 2*3 = 6 of n = 10: the sort 10*ceil(log2 10) = 40 and 9 neighbours compared -> 6 * 49 = 294
        (-1, 294),
        # along dim 1: rows 2*10 = 20 of n = 3: 3*2 = 6 and 2 -> 20 * 8 = 160
        (1, 160),
    ],
)
def test_mode(dim: int, flops: int) -> None:
    r = fn_both(lambda x: torch.mode(x, dim), torch.randint(0, 4, (2, 3, 10)).float())
    assert r.flops == flops and r.macs == 0 and r.uncounted == ()


def test_integer_mode_is_free() -> None:
    r = torchcost.analyze(Fn(lambda t: torch.mode(t, 1)), torch.randint(0, 4, (3, 5)))
    assert r.flops == 0 and r.uncounted == ()


def test_selection_by_quickselect_stays_uncounted() -> None:
    r = torchcost.analyze(Fn(lambda t: (torch.median(t, dim=1), torch.kthvalue(t, 2, dim=1))), torch.randn(3, 5))
    assert {o.op for o in r.uncounted} == {"aten::median", "aten::kthvalue"}
    assert r.uncounted == (OpCount("aten::kthvalue", 1), OpCount("aten::median", 1))



@pytest.mark.parametrize(
    ("fn", "flops"),
    [
        # 32 values among 7 boundaries: 8 places, ceil(log2 8) = 3 comparisons each -> 96
        (lambda x: torch.bucketize(x, torch.linspace(0, 1, 7)), 96),
        # right=True and int32 outputs: the same search -> 96
        (lambda x: torch.bucketize(x, torch.linspace(0, 1, 7), right=True, out_int32=True), 96),
        # 8 boundaries: 9 places, ceil(log2 9) = 4 -> 32 * 4 = 128
        (lambda x: torch.searchsorted(torch.linspace(0, 1, 8), x), 128),
        # a sequence of 4 rows of 5 against values of 4 rows of 8: 32 values, ceil(log2 6) = 3 -> 96
        (lambda x: torch.searchsorted(torch.rand(4, 5).sort().values, x.reshape(4, 8)), 96 + 4 * 5 * 3),
        # (the sort above: 4 rows of 5 * ceil(log2 5) = 15 -> 60, in the count too)
    ],
)
def test_binary_searches(fn: object, flops: int) -> None:
    r = fn_both(fn, torch.rand(32))  # type: ignore[arg-type]
    assert r.macs == 0
    assert r.flops == flops
    assert r.uncounted == ()


def test_a_search_among_integer_boundaries_is_free() -> None:
    r = torchcost.analyze(Fn(lambda t: torch.bucketize(t, torch.tensor([2, 5, 9]))), torch.randint(0, 10, (6,)))
    assert r.flops == 0 and r.uncounted == ()
