"""The report builder's shortcuts (issue 16) give what the long ways gave: nodes and op records made without their
dataclass __init__ are the dataclasses' own, the plain parameter sums agree with the distinct-tensor ones wherever
no tensor is held twice (and step aside where one is), the quick walk is module_paths, and the uncalled modules are
found as before."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import torchcost
import torchcost.api as api
from tests.fixtures.models import ConvBN, LSTMNet, SmallTransformer, TiedLM, TwiceCalled
from torchcost.collect.scope import module_paths
from torchcost.report import CostReport, ModuleCost, OpCount
from torchcost.run import build
from torchcost.run.execute import Ran


class _Shared(nn.Module):
    """One block under three names, and a parameter held by a module and its child."""

    def __init__(self) -> None:
        super().__init__()
        block = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.blocks = nn.Sequential(*[block] * 3)
        self.head = nn.Linear(8, 4)
        self.head.extra = nn.Module()
        self.head.extra.weight = self.head.weight  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


CASES: dict[str, tuple[Any, ...]] = {
    "conv_bn": (ConvBN, lambda: (torch.randn(2, 3, 8, 8),), {}),
    "conv_bn-train": (ConvBN, lambda: (torch.randn(2, 3, 8, 8),), {"mode": "train"}),
    "conv_bn-no-memory": (ConvBN, lambda: (torch.randn(2, 3, 8, 8),), {"memory": False}),
    "transformer": (SmallTransformer, lambda: (torch.randn(2, 5, 32),), {}),
    "lstm-train": (LSTMNet, lambda: (torch.randn(2, 4, 8),), {"mode": "train"}),
    "twice": (TwiceCalled, lambda: (torch.randn(2, 8),), {}),
    "tied-train": (TiedLM, lambda: (torch.randint(0, 100, (2, 5)),), {"mode": "train"}),
    "shared": (_Shared, lambda: (torch.randn(2, 8),), {}),
}


def _analysed(case: str, monkeypatch: pytest.MonkeyPatch) -> tuple[CostReport, Ran]:
    """A case's report and the run it was built from."""
    make, args, options = CASES[case]
    seen: list[Ran] = []

    def keep(ran: Ran, device: torch.device, mode: str) -> CostReport:
        seen.append(ran)
        return build.build_report(ran, device, mode)

    monkeypatch.setattr(api, "build_report", keep)
    torch.manual_seed(0)
    report = torchcost.analyze(make(), *args(), **options)
    return report, seen[0]


@pytest.mark.parametrize("case", list(CASES))
def test_nodes_and_op_records_are_the_dataclasses_own(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    report, _ = _analysed(case, monkeypatch)
    names = tuple(f.name for f in dataclasses.fields(ModuleCost))
    for node in report.modules:
        values = {name: getattr(node, name) for name in names}
        made = ModuleCost(**values)
        assert tuple(vars(node)) == names
        assert node == made and hash(node) == hash(made) and repr(node) == repr(made)
        assert dataclasses.replace(node, name="x") == dataclasses.replace(made, name="x")
        with pytest.raises(dataclasses.FrozenInstanceError):
            node.macs = 1  # type: ignore[misc]
        for op in node.ops:
            assert op == OpCount(op.op, op.calls, op.macs, op.flops, op.bytes)
            assert tuple(vars(op)) == ("op", "calls", "macs", "flops", "bytes")
            assert hash(op) == hash(OpCount(op.op, op.calls, op.macs, op.flops, op.bytes))
            with pytest.raises(dataclasses.FrozenInstanceError):
                op.calls = 0  # type: ignore[misc]
    assert CostReport.from_json(report.to_json()) == report


@pytest.mark.parametrize("case", list(CASES))
def test_plain_sums_agree_with_the_distinct_tensors(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    report, ran = _analysed(case, monkeypatch)
    scope, ops = ran.recording.scope, ran.recording.ops
    trace = ran.recording.memory.trace() if ran.recording.memory is not None else None
    paths = module_paths(ran.model)
    general = build._build(paths, scope, ops, trace, plain=False)
    plain = build._build(paths, scope, ops, trace, plain=True)
    assert general is not None and general.root == report.root
    assert (general.params, general.buffers) == (report.params, report.buffers)
    held = [id(t) for _, m in paths for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
    if len(held) == len(set(held)):
        assert plain == general
    else:  # a tensor held twice: only the distinct-tensor sums count it once
        assert plain is None


def test_the_quick_walk_is_module_paths() -> None:
    block = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    relu = nn.ReLU()
    models = [ConvBN(), SmallTransformer(), LSTMNet(), nn.Sequential(relu, nn.Linear(2, 2), relu),
              nn.Sequential(nn.Linear(2, 2), None, nn.ReLU())]  # type: ignore[arg-type]
    for model in models:  # (a leaf under two names is walked as module_paths walks it)
        assert build._single_paths(model) == module_paths(model)
    shared = nn.Sequential(*[block] * 3)
    assert build._single_paths(shared) is None  # a module with children under several names: module_paths names it
    looped = nn.Sequential(nn.Linear(2, 2))
    looped.add_module("back", looped)
    assert build._single_paths(looped) is None
    assert [n for n, _ in module_paths(looped)] == ["", "0"]


def _uncalled_before(scope: Any) -> tuple[str, ...]:
    ran: set[str] = set()
    for called in {*scope.calls, *(scope.canonical.get(n, n) for n in scope.calls)}:
        while called and called not in ran:
            ran.add(called)
            called = called.rpartition(".")[0]
    return tuple(n for n in scope.names.values() if n and n not in ran)


@pytest.mark.parametrize(("called", "canonical"), [
    ((), {}),
    (("",), {}),
    (("", "a", "a.b", "a.b.c"), {}),
    (("a.b.c", "d"), {}),
    (("x.y", "a.b.c.d", "a.b"), {}),
    (("", "b.0", "b.1"), {"b.1": "a.0", "b.2": "a.1"}),
    (("c.1.0",), {"c.1.0": "a.0.0", "c.1": "a.0"}),
])
def test_uncalled_as_before(called: tuple[str, ...], canonical: dict[str, str]) -> None:
    names = ["", "a", "a.0", "a.0.0", "a.1", "a.b", "a.b.c", "a.b.c.d", "b", "b.0", "b.1", "b.2", "c", "c.1",
             "c.1.0", "d", "x", "x.y", "z"]
    scope = SimpleNamespace(calls=dict.fromkeys(called), canonical=canonical,
                            names={i: n for i, n in enumerate(names)})
    assert build._uncalled(scope) == _uncalled_before(scope)  # type: ignore[arg-type]
