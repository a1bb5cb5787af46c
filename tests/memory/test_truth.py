"""Predicted peaks against the CPU allocator (torch.profiler, profile_memory=True) on small real models.

The prediction runs on fake tensors for a training step and allocates nothing; the truth runs the real thing. The
goal is within 2 %, and never above the truth by more than 2 % (a prediction may miss a kernel's internal workspace,
which only makes it lower).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import torchcost
from tests.memory.models import TinyGPT, small_cnn, small_mlp
from tests.memory.truth import eval_truth, train_truth

CASES: dict[str, Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]] = {
    "mlp": lambda: (small_mlp(), (torch.randn(32, 256),)),
    "cnn_bn": lambda: (small_cnn(), (torch.randn(8, 3, 32, 32),)),
    "tiny_gpt": lambda: (TinyGPT(), (torch.randint(0, 512, (4, 64)),)),
}
OPTIMIZERS: dict[str, tuple[Any, Callable[[Any], torch.optim.Optimizer]]] = {
    "adamw": ("adamw", lambda p: torch.optim.AdamW(p, lr=1e-3)),
    "sgd": ("sgd", lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9)),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _close(predicted: int, truth: int) -> None:
    assert truth * 0.98 <= predicted <= truth * 1.02, f"predicted {predicted:,} vs truth {truth:,}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_inference_peak(case: str) -> None:
    model, inputs = CASES[case]()
    predicted = torchcost.analyze(model, *inputs).peak_memory
    _close(predicted, eval_truth(model, *inputs))


@pytest.mark.parametrize("case", sorted(CASES))
def test_adamw_step_peak(case: str) -> None:
    model, inputs = CASES[case]()
    name, make = OPTIMIZERS["adamw"]
    r = torchcost.analyze(model, *inputs, mode="train", optimizer=name)
    _close(r.peak_memory, train_truth(model, *inputs, make_optimizer=make))


def test_sgd_step_peak() -> None:
    model, inputs = CASES["cnn_bn"]()
    name, make = OPTIMIZERS["sgd"]
    r = torchcost.analyze(model, *inputs, mode="train", optimizer=name)
    _close(r.peak_memory, train_truth(model, *inputs, make_optimizer=make))


def test_optimizer_instance_is_copied_not_stepped() -> None:
    model, inputs = CASES["mlp"]()
    opt = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=0.1)
    r = torchcost.analyze(model, *inputs, mode="train", optimizer=opt)
    assert r.memory is not None and r.memory.optimizer.startswith("Adam(lr=0.1")
    _close(r.peak_memory, train_truth(model, *inputs,
                                      make_optimizer=lambda p: torch.optim.Adam(p, lr=0.1, weight_decay=0.1)))
    assert not opt.state  # never stepped
    assert all(p.grad is None for p in model.parameters())


def test_autocast_bf16_step() -> None:
    model, inputs = CASES["mlp"]()
    r = torchcost.analyze(model, *inputs, mode="train", optimizer="adamw", amp="bf16")
    assert r.memory is not None and r.memory.amp == "bf16"
    truth = train_truth(model, *inputs, make_optimizer=OPTIMIZERS["adamw"][1], amp=torch.bfloat16)
    _close(r.peak_memory, truth)


def test_autocast_bf16_inference() -> None:
    model, inputs = CASES["tiny_gpt"]()
    predicted = torchcost.analyze(model, *inputs, amp="bf16").peak_memory
    with torch.autocast("cpu", dtype=torch.bfloat16):
        truth = eval_truth(model, *inputs)
    _close(predicted, truth)


def test_half_precision_model_step() -> None:
    model, inputs = CASES["tiny_gpt"]()
    model = model.to(torch.bfloat16)
    r = torchcost.analyze(model, *inputs, mode="train", optimizer="adamw")
    _close(r.peak_memory, train_truth(model, *inputs, make_optimizer=OPTIMIZERS["adamw"][1]))


def test_user_loss_fn() -> None:
    model, inputs = CASES["mlp"]()
    target = torch.randint(0, 10, (32,))

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, target)

    r = torchcost.analyze(model, *inputs, mode="train", loss_fn=loss_fn)
    assert r.memory is not None and r.memory.loss.endswith("loss_fn")
    truth = train_truth(model, *inputs, make_optimizer=OPTIMIZERS["adamw"][1], loss_fn=loss_fn)
    _close(r.peak_memory, truth)


def test_optimizer_that_already_stepped() -> None:
    model, inputs = CASES["mlp"]()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(*inputs).pow(2).mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
    r = torchcost.analyze(model, *inputs, mode="train", optimizer=opt)
    assert r.memory is not None and r.memory.method == "fake"  # its state is copied as fake tensors, steps as constants
    _close(r.peak_memory, train_truth(model, *inputs, make_optimizer=OPTIMIZERS["adamw"][1]))
    assert all(torch.equal(state[id(p)][k], v) for p, s in opt.state.items() for k, v in s.items())
