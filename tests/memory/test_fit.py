"""max_batch_size: the largest batch whose predicted peak plus the allowance fits the budget."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchcost
from tests.fixtures.models import ReadsValues
from torchcost.units import parse_bytes


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 1000))


def test_cpu_target_inference_by_hand() -> None:
    # parameters 2 * (1,000,000 + 1,000) * 4 = 8,008,000; per sample: input 4,000, first output 4,000 (ReLU works
    # in place), second output 4,000, all alive at the last addmm: peak(b) = 8,008,000 + 12,000 * b
    budget = 8_008_000 + 12_000 * 100 + 5_000  # room for 100 samples, not 101
    fit = torchcost.max_batch_size(_mlp(), input_size=(1, 1000), budget=budget, target="cpu")
    assert fit.batch_size == 100 and int(fit) == 100
    assert fit.peak_bytes == 8_008_000 + 12_000 * 100
    assert (fit.reserve_bytes, fit.fragmentation) == (0, 0.0)
    # the bytes after each op at batches 1 and 2 give the boundary: 100 and 101 are the proof
    assert [b for b, _ in fit.probes] == [1, 2, 100, 101]


def test_answer_is_the_boundary_for_a_training_step() -> None:
    model = _mlp()
    x = torch.randn(4, 1000)
    fit = torchcost.max_batch_size(model, x, budget="64MiB", mode="train", optimizer="adamw", target="cpu")
    assert fit.batch_size > 0

    def peak(b: int) -> int:
        return torchcost.analyze(model, torch.randn(b, 1000), mode="train", optimizer="adamw").peak_memory

    assert peak(fit.batch_size) <= parse_bytes("64MiB") < peak(fit.batch_size + 1)


def test_a_bending_peak_is_found_from_two_timelines() -> None:
    # a training step's peak bends upwards with the batch: at batch 1 and 2 it is where the optimizer's state sits
    # beside the weights, at large batches in the backward, where the activations and their gradients grow faster.
    # The line through the peaks at 1 and 2 lands far past the boundary; each op's own line through its bytes
    # after it at 1 and 2 (the same ops ran at both) lands on it: four analyses, the last two the proof
    model = _mlp()
    fit = torchcost.max_batch_size(model, torch.randn(4, 1000), budget="64MiB", mode="train", optimizer="adamw",
                                   target="cpu")
    batches = [b for b, _ in fit.probes]
    assert batches == [1, 2, fit.batch_size, fit.batch_size + 1]
    peaks = dict(fit.probes)
    line = 1 + (parse_bytes("64MiB") - peaks[1]) / (peaks[2] - peaks[1])
    assert line > 2 * fit.batch_size  # where the line through 1 and 2 would have looked first

    def peak(b: int) -> int:
        return torchcost.analyze(model, torch.randn(b, 1000), mode="train", optimizer="adamw").peak_memory

    assert peak(fit.batch_size) <= parse_bytes("64MiB") < peak(fit.batch_size + 1)


def test_cuda_allowance() -> None:
    fit = torchcost.max_batch_size(_mlp(), input_size=(1, 1000), budget="2GiB")
    assert fit.target == "cuda" and fit.reserve_bytes == 2**30 and fit.fragmentation == 0.05
    assert fit.needed_bytes == math.ceil(fit.peak_bytes * 1.05) + 2**30 <= 2 * 2**30
    bigger = dict(fit.probes)
    assert math.ceil(bigger.get(fit.batch_size + 1, 2**62) * 1.05) + 2**30 > 2 * 2**30 or fit.limit_reached


def test_nothing_fits() -> None:
    fit = torchcost.max_batch_size(_mlp(), input_size=(1, 1000), budget="4MiB", target="cpu")
    # the parameters alone are 8,008,000 bytes > 4 MiB = 4,194,304
    assert fit.batch_size == 0 and fit.peak_bytes == 0 and fit.needed_bytes == 0
    assert fit.probes[0][0] == 1 and fit.probes[0][1] > 4 * 2**20


def test_model_left_alone_and_inputs_needed() -> None:
    model = _mlp()
    before = [p.clone() for p in model.parameters()]
    torchcost.max_batch_size(model, input_size=(1, 1000), budget="1GiB", target="cpu", limit=64)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.device.type == "cpu" for p in model.parameters())
    with pytest.raises(torchcost.InputError):
        torchcost.max_batch_size(model, budget="1GiB")


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_transformers_model_given_a_mask_of_ones_is_searched_as_on_meta(mode: str) -> None:
    # was: the probes' meta copy of the mask could not answer transformers' `.all()` on it ("Tensor.item() cannot be
    # called on meta tensors"), so `torchcost hf:gpt2 --memory-budget 8GiB` failed after its analysis
    from torchcost.resolve import resolve

    real = resolve("hf:gpt2", seq_len=16, config={"n_layer": 1})
    assert real.kwargs["attention_mask"].shape == (1, 16) and bool(real.kwargs["attention_mask"].all())
    meta = resolve("hf:gpt2", seq_len=16, config={"n_layer": 1}, meta=True)  # the 4-d causal mask a meta run gets
    found = torchcost.max_batch_size(real.model, kwargs=real.kwargs, budget="4GiB", mode=mode, limit=4096)
    expected = torchcost.max_batch_size(meta.model, kwargs=meta.kwargs, budget="4GiB", mode=mode, limit=4096)
    assert found.batch_size == expected.batch_size > 1
    assert found.peak_bytes == expected.peak_bytes


def test_a_model_that_reads_values_is_refused_by_the_search_in_one_line() -> None:
    # the search's probes run on a meta copy: the cpu analysis runs (a forward that branches on .item()), the search
    # says why it cannot, and what to do
    model = ReadsValues()
    torchcost.analyze(model, torch.randn(2, 4))
    with pytest.raises(torchcost.InputError) as caught:
        torchcost.max_batch_size(model, torch.randn(2, 4), budget="1GiB", target="cpu")
    message = str(caught.value)
    assert "\n" not in message
    assert "meta copy of the model" in message and "the forward of ReadsValues reads tensor values" in message
    assert "Tensor.item() cannot be called on meta tensors" in message and "--batch-size N" in message
