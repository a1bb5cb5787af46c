"""The drop-in forms: torchsummary's summary and thop's profile (custom ops and register_formula:
tests/formulas/test_registry.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchcost
from tests.formulas.test_conv import SEPARABLE_MACS, SEPARABLE_PARAMS, STANDARD_MACS, STANDARD_PARAMS
from torchcost.examples import build

# the standard_conv example, counted in tests/formulas/test_conv.py: 108 params, 442,368 MACs per 3x64x64 image
PARAMS = STANDARD_PARAMS
MACS = STANDARD_MACS


def test_summary_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = build("standard_conv")
    torchcost.summary(model, (3, 64, 64))  # prints, returns nothing (typed -> None), like torchsummary
    out = capsys.readouterr().out
    assert "conv (Conv2d)" in out
    assert "[1, 4, 64, 64]" in out  # batch_size=-1 analyses a batch of one
    assert f"Total params: {PARAMS:,}" in out
    assert f"MACs: {MACS:,}" in out  # "MACs: 442,368"


def test_summary_batch_size_and_device(capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = build("standard_conv")
    torchcost.summary(model, (3, 64, 64), batch_size=4, device="cpu")
    out = capsys.readouterr().out
    assert "[4, 4, 64, 64]" in out
    assert f"MACs: {4 * MACS:,}" in out


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 2)
        self.b = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(y)


def test_summary_several_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    torchcost.summary(TwoInputs(), [(3,), (5,)], batch_size=2)
    out = capsys.readouterr().out
    # a: 2 rows x 3 x 2 = 12 MACs; b: 2 x 5 x 2 = 20
    assert f"MACs: {12 + 20}" in out
    assert f"Total params: {3 * 2 + 2 + 5 * 2 + 2}" in out


def test_summary_bad_input() -> None:
    model, _ = build("standard_conv")
    with pytest.raises(torchcost.InputError):
        torchcost.summary(model, (3, 64, 64), batch_size=0)
    with pytest.raises(torchcost.InputError):
        torchcost.summary(model, "3x64x64")  # type: ignore[arg-type]


def test_profile_returns_macs_and_params() -> None:
    model, (x,) = build("standard_conv")
    macs, params = torchcost.profile(model, inputs=(x,))
    assert (macs, params) == (MACS, PARAMS)
    assert type(macs) is int and type(params) is int
    model, (x,) = build("depthwise_separable")
    assert torchcost.profile(model, inputs=(x,)) == (SEPARABLE_MACS, SEPARABLE_PARAMS)


def test_profile_lone_tensor_is_one_input() -> None:
    model, (x,) = build("standard_conv")
    # inputs=x instead of (x,): taken as the single input, not split along the batch dimension
    assert torchcost.profile(model, inputs=x) == (MACS, PARAMS)  # type: ignore[arg-type]


def test_profile_several_inputs_and_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    macs, params = torchcost.profile(TwoInputs(), inputs=(torch.randn(2, 3), torch.randn(2, 5)), verbose=True)
    assert (macs, params) == (12 + 20, 8 + 12)
    assert "Total params: 20" in capsys.readouterr().out


def test_profile_refuses_thop_custom_ops() -> None:
    model, (x,) = build("standard_conv")
    with pytest.raises(torchcost.InputError, match="register_formula"):
        torchcost.profile(model, inputs=(x,), custom_ops={nn.Conv2d: lambda *a: None})
