"""The formula registry: unknown arithmetic is reported, never silently zero; users add and override formulas."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

import torchcost
from tests.formulas._check import analyze_both
from torchcost import Cost, FormulaError, OpCall
from torchcost.formulas import FREE, REGISTRY, op_key
from torchcost.report import OpCount


@torch.library.custom_op("torchcost_tests::scaled_tanh", mutates_args=())
def scaled_tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x) * 2


@scaled_tanh.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


KEY = "torchcost_tests::scaled_tanh"


class TwiceCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_tanh(self.fc(scaled_tanh(x)))


def _tanh_formula(call: OpCall) -> Cost:
    return Cost(other_flops=2 * call.outputs[0].numel())  # tanh, multiply by 2


@pytest.fixture
def registered() -> Iterator[None]:
    torchcost.register_formula(KEY)(_tanh_formula)
    try:
        yield
    finally:
        REGISTRY._formulas.pop(KEY, None)


def test_unknown_op_is_listed_with_its_call_count() -> None:
    r = analyze_both(TwiceCustom(), torch.randn(3, 4))
    assert r.uncounted == (OpCount(KEY, 2),)
    assert r.macs == 3 * 4 * 4 == 48  # the Linear is still counted
    assert r.flops == 2 * 48 + 12  # + bias; the custom op adds nothing: it has no formula
    assert r.root.uncounted == (OpCount(KEY, 2),)  # attributed to the module it ran in


def test_register_formula_makes_it_counted(registered: None) -> None:
    r = analyze_both(TwiceCustom(), torch.randn(3, 4))
    assert r.uncounted == ()
    assert r.flops == 2 * 48 + 12 + 2 * (2 * 12)  # two calls on 12 elements, 2 FLOPs each
    assert OpCount(KEY, 2, 0, 48) in r.ops


def test_duplicate_registration_is_refused(registered: None) -> None:
    with pytest.raises(FormulaError, match="already registered"):
        torchcost.register_formula(KEY)(_tanh_formula)
    with pytest.raises(FormulaError, match="already registered"):
        torchcost.register_formula("aten::mm")(_tanh_formula)
    with pytest.raises(FormulaError, match="already registered"):
        torchcost.register_formula(torch.ops.aten.addmm.default)(_tanh_formula)  # same key, any spelling


def test_per_run_overrides_leave_the_registry_alone() -> None:
    original = REGISTRY.get("aten::addmm")
    r = torchcost.analyze(TwiceCustom(), torch.randn(3, 4),
                          formulas={"aten.addmm": lambda call: Cost(macs=1), KEY: _tanh_formula})
    assert r.macs == 1
    assert r.uncounted == ()
    assert REGISTRY.get("aten::addmm") is original
    assert KEY not in REGISTRY
    assert torchcost.analyze(TwiceCustom(), torch.randn(3, 4)).macs == 48  # the next run is back to normal


def test_failing_formula_reports_the_op_uncounted_with_the_reason() -> None:
    def broken(call: OpCall) -> Cost:
        raise ValueError("cannot price this")

    r = torchcost.analyze(nn.Linear(4, 4), torch.randn(3, 4), formulas={"aten::addmm": broken})
    assert r.uncounted == (OpCount("aten::addmm", 1),)
    assert dict(r.formula_errors)["aten::addmm"] == "ValueError: cannot price this"


def test_op_keys_are_normalised() -> None:
    assert op_key("aten.mm") == op_key("aten::mm.default") == op_key(torch.ops.aten.mm) == "aten::mm"
    assert op_key(torch.ops.aten.add.Tensor) == op_key("aten::add.Scalar") == "aten::add"
    assert op_key("aten::add_") == "aten::add_"  # in-place keeps its own key
    with pytest.raises(FormulaError):
        op_key("mm")


def test_free_and_priced_ops_do_not_overlap() -> None:
    assert set(REGISTRY.keys()).isdisjoint(FREE)
