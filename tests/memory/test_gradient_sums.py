"""Autograd's sum of two gradients for one tensor (``InputBuffer::accumulate``): the real engine adds the second into
the first in place when the buffer holds the last reference to it; the twin's engine never does (its tensors are
subclass-like), so torchcost takes the sum's new storage back where the real engine would have reused the old one.
Truth: the CPU allocator (tests/memory/truth.py). Before the fix the fan-out case was +1 MiB (+30.6%) high and
nn.MultiheadAttention's AdamW step +5.9%."""

from __future__ import annotations

import warnings
from typing import Any
from unittest import mock

import pytest
import torch
from torch import nn

import torchcost
from tests.memory.truth import train_truth
from torchcost.collect.memory import MemoryTracker

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


class GradInForward(nn.Module):
    """The forward runs a backward of its own (a gradient penalty's ``torch.autograd.grad``): there h's two
    gradients, from h * 2 and h * 3, are summed; the step's own backward sums none."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(256, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        (g,) = torch.autograd.grad((h * 2).sum() + (h * 3).sum(), h)
        return (h * g).sum(1)


def _sgd(params: object) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1)  # type: ignore[arg-type]


def _adamw(params: object) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, foreach=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(("model", "x", "make"), [
    (FanOut(), (1024, 256), _sgd),
    (Twice(), (1024, 256), _sgd),
    (SelfAttention(32, 4), (2, 16, 32), _adamw),
    (GradInForward(), (1024, 256), _sgd),
], ids=["fan-out", "h+h", "mha", "grad-in-forward"])
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


def _post_hooks(model: nn.Module, x: torch.Tensor) -> int:
    """How many times autograd's engine called the memory tracker's post-hook in a training step's analysis."""
    calls = [0]
    original = MemoryTracker.post_hook

    def counting(self: MemoryTracker, grad_inputs: Any, grad_outputs: Any) -> None:
        calls[0] += 1
        original(self, grad_inputs, grad_outputs)

    with mock.patch.object(MemoryTracker, "post_hook", counting):
        torchcost.analyze(model, x, mode="train", optimizer="sgd")
    return calls[0]


def test_only_the_nodes_whose_gradients_meet_are_hooked() -> None:
    # the engine sums only in an input that more than one edge goes into, right after the node that sent the second
    # gradient; so only the nodes with an edge into such an input get the post-hook
    # a chain (addmm <- relu <- addmm <- relu <- pow <- mean): every input gets one edge, no node is hooked
    chain = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
    assert _post_hooks(chain, torch.randn(4, 16)) == 0
    # FanOut: h * 2 and h * 3 (two MulBackward0) both send into h's AddmmBackward0: 2 nodes hooked, each runs once
    assert _post_hooks(FanOut(), torch.randn(8, 256)) == 2
    # a backward the forward runs itself is hooked as it starts: the same two MulBackward0 in torch.autograd.grad;
    # the step's backward (h * g, g a plain tensor) sends one gradient into h's node: 2 in all
    assert _post_hooks(GradInForward(), torch.randn(8, 256)) == 2
