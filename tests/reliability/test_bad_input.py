"""Bad input (issue 9): a torchcost InputError of one line that names the option, and nothing allocated. Inputs too
big for the memory available, devices that are not devices or not here, a model that cannot run where it is asked
to, and a loss_fn that returns something backward cannot start from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import torchcost
import torchcost.inputs


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text == text.strip() and len(text) < 400, text
    return text


# -- inputs bigger than the memory there is --------------------------------------------------------------------------

def test_input_size_beyond_the_machine_is_refused_before_allocating() -> None:
    # was: the allocator's RuntimeError after trying to allocate; 1000 x 3 x 100000 x 100000 float32 is
    # 3e13 values x 4 bytes = 1.2e14 bytes (109 TiB), more than any machine this runs on
    with pytest.raises(torchcost.InputError) as info:
        torchcost.analyze(nn.Conv2d(3, 8, 3), input_size=(1000, 3, 100000, 100000))
    text = one_line(info.value)
    assert "input_size [1000, 3, 100000, 100000] would need 109.14 TiB on cpu" in text  # 1.2e14 / 2**40 = 109.14
    assert "device='meta'" in text and "--meta" in text


def test_the_check_compares_with_the_memory_available(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 x 3 x 100000 x 100000 float32 = 3e10 x 4 = 1.2e11 bytes = 111.76 GiB, against 8 GiB available
    monkeypatch.setattr(torchcost.inputs, "available_memory", lambda device: 8 * 2**30)
    with pytest.raises(torchcost.InputError) as info:
        torchcost.analyze(nn.Conv2d(3, 8, 3), input_size=(1, 3, 100000, 100000))
    assert "would need 111.76 GiB on cpu, more than the 8.00 GiB available" in one_line(info.value)
    # a copy of the user's own tensor: 1000 float32 = 4000 bytes = 3.91 KiB against 2 KiB
    monkeypatch.setattr(torchcost.inputs, "available_memory", lambda device: 2048)
    with pytest.raises(torchcost.InputError) as info:
        torchcost.analyze(nn.Linear(1000, 1), torch.zeros(1, 1000))
    assert "a copy of the inputs would need 3.91 KiB" in one_line(info.value)
    # on meta nothing is allocated, so nothing is checked: Linear(1000, 1) on 1 row = 1000 MACs
    assert torchcost.analyze(nn.Linear(1000, 1), input_size=(1, 1000), device="meta").macs == 1000


# -- devices ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("device", "words"), [
    ("banana", "device must be a torch device"),
    (3.5, "device must be a torch device"),
    (True, "device must be a torch device"),
    pytest.param("cuda", "no cuda device is available", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_bad_device_is_one_input_error(device: Any, words: str) -> None:
    # was: torch's RuntimeError / TypeError (or "Found no NVIDIA driver")
    with pytest.raises(torchcost.InputError) as info:
        torchcost.analyze(nn.Linear(4, 2), torch.randn(3, 4), device=device)
    text = one_line(info.value)
    assert words in text and repr(device) in text


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_cpu_model_with_device_meta_runs_on_a_meta_twin(mode: str) -> None:
    # was (eval): "Tensor on device cpu is not on the expected device meta!" from the model's forward
    model, x = nn.Linear(4, 2), torch.randn(3, 4)
    weight, copy = model.weight.detach().clone(), x.clone()
    report = torchcost.analyze(model, x, device="meta", mode=mode)
    assert report.macs == 3 * 4 * 2  # = 24
    assert report == torchcost.analyze(nn.Linear(4, 2, device="meta"), x.to("meta"), mode=mode)
    assert model.weight.device.type == "cpu" and torch.equal(model.weight, weight) and torch.equal(x, copy)
    assert torchcost.analyze(model, input_size=(3, 4), device="meta").macs == 24


def test_meta_model_on_a_real_device_is_refused() -> None:
    # was: "Tensor on device meta is not on the expected device cpu!" from the model's forward
    with pytest.raises(torchcost.InputError) as info:
        torchcost.analyze(nn.Linear(4, 2, device="meta"), torch.randn(3, 4), device="cpu")
    text = one_line(info.value)
    assert "device='cpu' cannot run this model" in text and "meta device" in text and "leave device= out" in text


# -- loss_fn that returns what backward cannot start from ------------------------------------------------------------

def half_loss(out: torch.Tensor) -> Any:
    return "half"


@pytest.mark.parametrize(("loss_fn", "words"), [
    (half_loss, "returned a str 'half', not a tensor"),
    (lambda out: out.pow(2).mean().item(), "returned a float"),
    (lambda out: 5, "returned an int 5, not a tensor"),  # (the article follows the type's name)
    (lambda out: {"loss": out.sum()}, "returned a dict, not a tensor"),
    (lambda out: out.pow(2).mean().detach(), "does not require grad"),
    (lambda out: out.pow(2), "returned a tensor of shape [3, 2]"),
])
def test_loss_fn_returning_no_loss_is_an_input_error(loss_fn: Callable[[torch.Tensor], Any], words: str) -> None:
    # was: a report of a step without a backward (0 gradient bytes)
    with pytest.raises(torchcost.InputError) as info:
        torchcost.analyze(nn.Linear(4, 2), torch.randn(3, 4), mode="train", loss_fn=loss_fn)
    text = one_line(info.value)
    assert text.startswith("loss_fn ") and words in text


def test_a_good_loss_fn_still_runs() -> None:
    report = torchcost.analyze(nn.Linear(4, 2), torch.randn(3, 4), mode="train", loss_fn=lambda out: out.sum())
    assert report.memory is not None and report.memory.gradient_bytes == (2 * 4 + 2) * 4  # weight + bias = 40
    # a frozen model's loss needs no graph: nothing to train, nothing refused
    frozen = nn.Linear(4, 2).requires_grad_(False)
    assert torchcost.analyze(frozen, torch.randn(3, 4), mode="train", loss_fn=lambda out: out.sum()).macs == 24
