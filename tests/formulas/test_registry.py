"""The formula registry: unknown arithmetic is reported, never silently zero; users add and override formulas."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

import torchcost
from tests.fixtures.models import scaled_tanh
from tests.formulas._check import analyze_both
from torchcost import Cost, FormulaError, OpCall
from torchcost.formulas import FREE, REGISTRY, FormulaRegistry, op_key, registered
from torchcost.report import OpCount

KEY = "torchcost_fixtures::scaled_tanh"  # the one custom op of the suite, from tests/fixtures/models.py


class TwiceCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_tanh(self.fc(scaled_tanh(x, 2.0)), 2.0)


def _tanh_formula(call: OpCall) -> Cost:
    return Cost(other_flops=2 * call.outputs[0].numel())  # tanh, multiply by the scale


@pytest.fixture
def tanh_registered() -> Iterator[None]:
    torchcost.register_formula(KEY)(_tanh_formula)
    try:
        yield
    finally:
        REGISTRY.unregister(KEY)


def test_unknown_op_is_listed_with_its_call_count() -> None:
    r = analyze_both(TwiceCustom(), torch.randn(3, 4))
    assert r.uncounted == (OpCount(KEY, 2),)
    assert r.macs == 3 * 4 * 4 == 48  # the Linear is still counted
    assert r.flops == 2 * 48 + 12  # + bias; the custom op adds nothing: it has no formula
    assert r.root.uncounted == (OpCount(KEY, 2),)  # attributed to the module it ran in


def test_register_formula_makes_it_counted(tanh_registered: None) -> None:
    r = analyze_both(TwiceCustom(), torch.randn(3, 4))
    assert r.uncounted == ()
    assert r.flops == 2 * 48 + 12 + 2 * (2 * 12)  # two calls on 12 elements, 2 FLOPs each
    assert OpCount(KEY, 2, 0, 48, 2 * (12 * 4 + 12 * 4)) in r.ops  # bytes: each call reads and writes 12 floats
    assert r.root.self_flops == 48  # counted where it ran: the model's own forward, not the Linear


def test_duplicate_registration_is_refused(tanh_registered: None) -> None:
    with pytest.raises(FormulaError, match="already registered"):
        torchcost.register_formula(KEY)(_tanh_formula)
    with pytest.raises(FormulaError, match="already registered"):
        torchcost.register_formula("aten::mm")(_tanh_formula)
    with pytest.raises(FormulaError, match="already registered"):
        torchcost.register_formula(torch.ops.aten.addmm.default)(_tanh_formula)  # same key, any spelling


def _other(call: OpCall) -> Cost:
    return Cost(macs=1)


def test_unregister_removes_the_formula_and_refuses_a_missing_one() -> None:
    reg = FormulaRegistry()
    reg.register("aten::mm", _tanh_formula)
    assert reg.unregister(torch.ops.aten.mm.default) is _tanh_formula  # any spelling of the key
    assert "aten::mm" not in reg
    with pytest.raises(FormulaError, match="no formula is registered for aten::mm"):
        reg.unregister("aten.mm")
    with pytest.raises(FormulaError, match="no formula is registered for torchcost_fixtures::scaled_tanh"):
        REGISTRY.unregister(KEY)  # the global registry has none for the custom op


def test_registered_adds_for_the_block_and_then_removes() -> None:
    reg = FormulaRegistry()
    with reg.registered("aten.mm", _tanh_formula) as fn:
        assert fn is _tanh_formula
        assert reg.get("aten::mm") is _tanh_formula
    assert "aten::mm" not in reg
    with pytest.raises(RuntimeError, match="inside"), reg.registered("aten::mm", _tanh_formula):
        raise RuntimeError("inside")
    assert "aten::mm" not in reg  # restored on an exception too
    with pytest.raises(FormulaError, match="must be callable"), reg.registered("aten::mm", "x"):  # type: ignore[arg-type]
        pass
    assert "aten::mm" not in reg


def test_registered_restores_the_formula_it_replaced() -> None:
    reg = FormulaRegistry()
    reg.register("aten::mm", _tanh_formula)
    with reg.registered(torch.ops.aten.mm, _other):  # replaces without replace=True
        assert reg.get("aten::mm") is _other
        reg.unregister("aten::mm")  # whatever the block does to the key
    assert reg.get("aten::mm") is _tanh_formula


def test_registered_on_the_global_registry() -> None:
    addmm = REGISTRY.get("aten::addmm")
    with registered(KEY, _tanh_formula), registered("aten.addmm", _other):
        r = analyze_both(TwiceCustom(), torch.randn(3, 4))
        assert r.uncounted == ()
        assert r.macs == 1
        assert r.flops == 2 * 1 + 2 * (2 * 12)  # the replaced addmm prices no bias add
    assert KEY not in REGISTRY
    assert REGISTRY.get("aten::addmm") is addmm
    r = torchcost.analyze(TwiceCustom(), torch.randn(3, 4))
    assert (r.macs, r.uncounted) == (48, (OpCount(KEY, 2),))  # the next run is back to normal


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
