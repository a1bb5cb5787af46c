"""Autograd's sum of two gradients for one tensor (``InputBuffer::accumulate``): the real engine adds the second into
the first in place when the buffer holds the last reference to it; the twin's engine never does (its tensors are
subclass-like), so torchcost takes the sum's new storage back where the real engine would have reused the old one.
Truth: the CPU allocator (tests/memory/truth.py). Before the fix the fan-out case was +1 MiB (+30.6%) high and
nn.MultiheadAttention's AdamW step +5.9%."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import torchcost
from tests.memory.truth import train_truth

pytestmark = pytest.mark.usefixtures("one_thread")
SCALARS = 64  # the CPU scalars torch allocates beside the kernels (a few bytes), not tensors the model makes


class FanOut(nn.Module):
    """h feeds two branches: its two gradients (1024 x 256 floats, 1 MiB each) are summed, in place for real."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(256, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return (h * 2).sum(1) + (h * 3).sum(1)


class Twice(nn.Module):
    """h + h: AddBackward0 hands the same gradient over twice, which the real engine sums out of place."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(256, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return (h + h) * 1.0


class SelfAttention(nn.Module):
    """x is q, k and v: the three select_backward gradients of the packed projection are summed."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def _sgd(params: object) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1)  # type: ignore[arg-type]


def _adamw(params: object) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, foreach=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(("model", "x", "make"), [
    (FanOut(), (1024, 256), _sgd),
    (Twice(), (1024, 256), _sgd),
    (SelfAttention(32, 4), (2, 16, 32), _adamw),
], ids=["fan-out", "h+h", "mha"])
def test_the_step_peak_follows_the_engines_in_place_sums(model: nn.Module, x: tuple[int, ...], make: object) -> None:
    torch.manual_seed(0)
    inputs = torch.randn(*x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = torchcost.analyze(model, inputs, mode="train", optimizer=make(model.parameters()))  # type: ignore[operator]
    truth = train_truth(model, inputs, make_optimizer=make)  # type: ignore[arg-type]
    assert abs(r.peak_memory - truth) <= SCALARS, (r.peak_memory, truth)


def test_nodes_of_the_callers_graph_get_no_hook() -> None:
    # an input made by the caller's own graph: the analysis hooks only the nodes its run makes
    a = torch.randn(8, 256, requires_grad=True)
    x = a * 2
    node = x.grad_fn
    torchcost.analyze(FanOut(), x, mode="train", optimizer="sgd")
    assert node is not None and "torchcost.post_hook" not in node.metadata
    x.sum().backward()  # the caller's graph still runs as before
    assert a.grad is not None and torch.equal(a.grad, torch.full_like(a, 2.0))
