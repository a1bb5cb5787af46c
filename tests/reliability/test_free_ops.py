"""Ops that do no arithmetic are free, never listed as uncounted: in-place views (metadata only) and copies."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import torchcost


class _Apply(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@pytest.mark.parametrize("name, fn", [
    ("unsqueeze_", lambda x: x.clone().unsqueeze_(0)),
    ("squeeze_", lambda x: x.clone().unsqueeze(0).squeeze_(0)),
    ("t_", lambda x: x.clone().t_()),
    ("transpose_", lambda x: x.clone().transpose_(0, 1)),
    ("narrow_copy", lambda x: x.narrow_copy(0, 0, 2)),
    ("diag_embed", lambda x: torch.diag_embed(x)),
    ("block_diag", lambda x: torch.block_diag(x, x)),
])
def test_metadata_and_copy_ops_are_free(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    r = torchcost.analyze(_Apply(fn), torch.randn(3, 4))
    assert r.uncounted == ()
    assert r.flops == 0  # they move or view data: no arithmetic
    assert any(o.op == f"aten::{name}" for o in r.free_ops), [o.op for o in r.free_ops]


def test_linear_on_a_vector_lists_nothing_uncounted() -> None:
    r = torchcost.analyze(nn.Linear(4, 3, bias=False), torch.randn(4))
    assert r.uncounted == ()
    assert r.macs == 4 * 3  # = 12: one output row of 3, each a 4-term dot product


def test_backward_of_a_slice_is_free() -> None:
    # slice_backward / select_backward place the gradient into zeros: no arithmetic
    class Halves(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.lin(x)
            return y[:, :2] * y[:, 2:] + y[:, 0:1]

    r = torchcost.analyze(Halves(), torch.randn(3, 4), mode="train")
    assert all(o.op not in ("aten::slice_backward", "aten::select_backward") for p in r.phases for o in p.uncounted)
