"""inputs: one rule for input sizes, a model's dtype and the inputs made from them, shared by analyze,
max_batch_size, summary and resolve. These pin three places where separate copies of those rules disagreed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchcost
from torchcost.inputs import floating_dtype, model_dtype, normalize_sizes


def test_normalize_sizes() -> None:
    assert normalize_sizes((1, 3, 8, 8)) == ((1, 3, 8, 8),)
    assert normalize_sizes([[1, 2], (3,)]) == ((1, 2), (3,))
    assert normalize_sizes(torch.Size([2, 5])) == ((2, 5),)
    for bad in ((1, 0), (), [(1, 2), (0,)], (1, 2.0), (True, 2), "1,2", None, [[]]):
        with pytest.raises(torchcost.InputError, match="input_size must be a shape"):
            normalize_sizes(bad)


def test_model_dtype_reads_buffers_when_there_are_no_parameters() -> None:
    bn = nn.BatchNorm2d(3, affine=False).half()  # no parameters; float16 running stats
    assert floating_dtype(bn) == model_dtype(bn) == torch.float16
    assert floating_dtype(nn.ReLU()) is None and model_dtype(nn.ReLU()) == torch.get_default_dtype()


def test_report_dtype_is_the_dtype_the_inputs_were_made_with() -> None:
    r = torchcost.analyze(nn.BatchNorm2d(3, affine=False).half(), input_size=(2, 3, 8, 8))
    assert r.dtype == "float16"  # was "none": the report read parameters only
    assert r.input_bytes == 2 * 3 * 8 * 8 * 2  # = 768: float16 inputs were made


def test_max_batch_size_makes_inputs_in_the_model_dtype() -> None:
    bn = nn.BatchNorm2d(3, affine=False, device="meta").half()
    fit = torchcost.max_batch_size(bn, input_size=(1, 3, 8, 8), budget="1MiB", target="cpu", limit=4)
    peaks = dict(fit.probes)
    # each probe is the peak analyze() predicts for a float16 batch of that size (it was built in float32 before,
    # so every probe counted twice the input bytes)
    for batch in (1, 2):
        assert peaks[batch] == torchcost.analyze(bn, input_size=(batch, 3, 8, 8), target="cpu").peak_memory


def test_max_batch_size_refuses_sizes_analyze_refuses() -> None:
    with pytest.raises(torchcost.InputError, match="input_size must be a shape"):
        torchcost.analyze(nn.Linear(2, 2), input_size=(1, 0))
    with pytest.raises(torchcost.InputError, match="input_size must be a shape"):  # was a ShapeError from the model
        torchcost.max_batch_size(nn.Linear(2, 2), input_size=(1, 0), budget="1GiB")


@pytest.mark.parametrize("budget", ["lots", -5, True])
def test_bad_budget_is_an_input_error(budget: object) -> None:
    with pytest.raises(torchcost.InputError, match="budget"):  # was a bare ValueError
        torchcost.max_batch_size(nn.Linear(2, 2), input_size=(1, 2), budget=budget)  # type: ignore[arg-type]


def test_bad_sort_is_an_input_error() -> None:
    r = torchcost.analyze(nn.Linear(2, 2), input_size=(1, 2))
    with pytest.raises(torchcost.InputError, match="sort must be one of"):  # was a bare ValueError
        r.table(sort="bogus")
