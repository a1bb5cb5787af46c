"""The drop-in forms (torchsummary's summary, thop's profile) and register_formula for a custom op."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

import torchcost
from tests.fixtures.models import UsesCustomOp
from torchcost.examples import build
from torchcost.formulas import REGISTRY

# standard_conv: Conv2d(3, 4, 3, padding=1, bias=False) on 64x64 keeps 64x64;
# params 4 * 3 * 3 * 3 = 108; MACs 4 * 64 * 64 outputs x 27 = 442,368 per image
PARAMS = 4 * 3 * 3 * 3
MACS = 4 * 64 * 64 * 27


def test_summary_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = build("standard_conv")
    assert torchcost.summary(model, (3, 64, 64)) is None  # prints, returns nothing, like torchsummary
    out = capsys.readouterr().out
    assert "conv (Conv2d)" in out
    assert "[1, 4, 64, 64]" in out  # batch_size=-1 analyses a batch of one
    assert f"Total params: {PARAMS:,}" in out
    assert f"MACs: {MACS:,}" in out
    assert "MACs: 442,368" in out


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
    # depthwise-separable: depthwise 3 * 64 * 64 * 9 + pointwise 4 * 64 * 64 * 3; params 27 + 12
    model, (x,) = build("depthwise_separable")
    assert torchcost.profile(model, inputs=(x,)) == (3 * 64 * 64 * 9 + 4 * 64 * 64 * 3, 27 + 12)


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


# -- a custom op and its formula ------------------------------------------------------------------------------------

@pytest.fixture
def custom_formula() -> Iterator[str]:
    key = "torchcost_fixtures::scaled_tanh"

    @torchcost.register_formula(key)
    def _(call: torchcost.OpCall) -> torchcost.Cost:
        # tanh and a multiply per output element
        return torchcost.Cost(other_flops=2 * call.outputs[0].numel())

    try:
        yield key
    finally:
        REGISTRY._formulas.pop(key, None)  # the global registry has no public unregister: leave it as it was


def test_custom_op_without_formula_is_reported_uncounted() -> None:
    r = torchcost.analyze(UsesCustomOp(), torch.randn(3, 4))
    assert [(o.op, o.calls) for o in r.uncounted] == [("torchcost_fixtures::scaled_tanh", 1)]
    assert "torchcost_fixtures::scaled_tanh x1" in r.table(width=120)
    # only the Linear is counted: 3 x 4 x 6 MACs, 18 bias adds
    assert (r.macs, r.flops) == (72, 2 * 72 + 18)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_register_formula_for_custom_op(custom_formula: str, device: str) -> None:
    with torch.device(device):
        model = UsesCustomOp()
    r = torchcost.analyze(model, torch.randn(3, 4, device=device) if device == "cpu" else
                          torch.empty(3, 4, device=device))
    assert r.uncounted == ()
    assert {o.op: o.flops for o in r.ops}[custom_formula] == 2 * 3 * 6
    assert r.flops == 2 * 72 + 18 + 2 * 18
    assert r.root.self_flops == 2 * 18  # counted where it ran: the model's own forward


def test_register_formula_refuses_duplicates(custom_formula: str) -> None:
    with pytest.raises(torchcost.FormulaError):
        torchcost.register_formula(custom_formula)(lambda call: torchcost.Cost())


def test_per_run_override_leaves_global_registry(custom_formula: str) -> None:
    before = REGISTRY.get(custom_formula)
    r = torchcost.analyze(UsesCustomOp(), torch.randn(3, 4),
                          formulas={custom_formula: lambda call: torchcost.Cost(other_flops=1)})
    assert {o.op: o.flops for o in r.ops}[custom_formula] == 1
    assert REGISTRY.get(custom_formula) is before
