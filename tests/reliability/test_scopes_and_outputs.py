"""Odd models, scope and outputs (issue 9): a module held by two parents is charged by call path and addressable
under both names; scope follows only the analysing thread; dataclass, PackedSequence and hooked outputs; repeated
calls with other shapes; nesting as deep as a plain forward allows. Expected numbers are derived by hand beside
each assertion."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from importlib import resources

import jsonschema
import torch
from torch import nn

import torchcost
from torchcost.collect.scope import ScopeTracker
from torchcost.render.layout import calls_suffix, rows
from torchcost.report import CostReport, ModuleCost
from torchcost.shapes import TensorSpec, describe
from torchcost.trees import first, map_tensors, spec_of, tensor_bytes, tensors_in

# -- a module held by two parents --------------------------------------------------------------------------------


class TwoParents(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        inner = nn.Linear(4, 4)
        self.a = nn.Sequential(inner)
        self.b = nn.Sequential(inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x)


def test_shared_module_is_charged_to_the_parent_that_runs_it() -> None:
    r = torchcost.analyze(TwoParents(), torch.randn(1, 4))
    linear = 4 * 4  # one row through Linear(4, 4): 16 MACs per call
    assert (r.module("a").macs, r.module("b").macs) == (linear, linear)
    assert (r.module("a.0").calls, r.module("b.0").calls) == (1, 1)
    assert (r.module("a.0").macs, r.module("b.0").macs) == (linear, linear)
    assert r.macs == 2 * linear  # run twice, once per parent
    assert r.module("b.0").same_as == "a.0" and r.module("a.0").same_as == ""
    assert r.params == 4 * 4 + 4  # weight + bias, counted once
    assert r.root.shared_params == 0  # nothing is held outside the model
    assert r.module("a").shared_params == 20  # all of a's 20 are also held by b.0
    assert r.uncalled == ()


def test_shared_module_round_trips_and_stays_in_the_tree() -> None:
    r = torchcost.analyze(TwoParents(), torch.randn(1, 4))
    assert [m.name for m in r.modules] == ["", "a", "a.0", "b", "b.0"]
    back = CostReport.from_json(r.to_json())
    assert back.module("b.0").same_as == "a.0"
    assert back.to_dict() == r.to_dict()


def test_one_block_repeated_in_a_sequential_names_each_call() -> None:
    block = nn.Linear(4, 4)
    r = torchcost.analyze(nn.Sequential(*[block] * 3), torch.randn(1, 4))
    # Sequential calls its children 0, 1, 2 in turn: one call, 16 MACs each, though they are one object
    assert [(r.module(n).calls, r.module(n).macs) for n in ("0", "1", "2")] == [(1, 16)] * 3
    assert [r.module(n).same_as for n in ("0", "1", "2")] == ["", "0", "0"]
    assert r.params == 20 and r.macs == 3 * 16


# -- scope belongs to the thread that installed it ------------------------------------------------------------


def test_scope_ignores_module_calls_of_other_threads() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    tracker = ScopeTracker(model)
    tracker.install()
    try:
        other = threading.Thread(target=model, args=(torch.randn(1, 4),))
        other.start()
        other.join()
        assert tracker.calls == {} and tracker.stack == []  # a plain forward elsewhere is not this run's
        model(torch.randn(1, 4))
    finally:
        tracker.remove()
    assert {n: c.calls for n, c in tracker.calls.items()} == {"": 1, "0": 1, "1": 1}


# -- outputs ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Pair:
    y: torch.Tensor
    z: torch.Tensor


@dataclasses.dataclass(frozen=True)
class Frozen:
    t: torch.Tensor
    note: str = "n"


class ReturnsPair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> Pair:
        return Pair(self.lin(x), x)


class UsesPair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.m = ReturnsPair()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x).y


def test_dataclass_output_has_shape_and_bytes() -> None:
    r = torchcost.analyze(UsesPair(), torch.randn(2, 4))
    m = r.module("m")
    assert m.output_shape == {"y": TensorSpec((2, 3), "float32"), "z": TensorSpec((2, 4), "float32")}
    assert m.output_bytes == (2 * 3 + 2 * 4) * 4  # two float32 fields
    assert CostReport.from_json(r.to_json()).module("m").output_shape == m.output_shape


def test_trees_walk_dataclass_fields() -> None:
    x, y = torch.zeros(2), torch.ones(3)
    obj = [Pair(x, y), Frozen(x)]
    assert [id(t) for t in tensors_in(obj)] == [id(x), id(y), id(x)]
    assert first(obj, lambda t: t.numel() == 3) is y
    assert tensor_bytes(Pair(x, y)) == (2 + 3) * 4
    assert spec_of(Frozen(x)) == {"t": TensorSpec((2,), "float32"), "note": None}
    copied = map_tensors(obj, lambda t: t + 1)
    assert isinstance(copied[1], Frozen) and copied[1].note == "n" and copied[1].t is copied[0].y
    assert torch.equal(copied[0].z, y + 1) and obj[0].y is x  # the original is left alone
    assert spec_of(Pair) is None  # the class itself is no value


class PackedLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, [4, 2])
        return self.rnn(packed)[1][0]


def test_packed_sequence_is_one_entry() -> None:
    r = torchcost.analyze(PackedLSTM(), torch.randn(4, 2, 3))
    rnn = r.module("rnn")
    # lengths 4 and 2: 6 time steps packed; data [6, 3] in, [6, 5] out (hidden 5); h and c: [1, 2, 5]
    assert rnn.input_shape == (TensorSpec((6, 3), "float32", "PackedSequence"),)
    h = TensorSpec((1, 2, 5), "float32")
    assert rnn.output_shape == (TensorSpec((6, 5), "float32", "PackedSequence"), (h, h))
    assert describe(rnn.output_shape) == "PackedSequence[6, 5] [1, 2, 5] [1, 2, 5]"
    assert CostReport.from_json(r.to_json()).module("rnn").output_shape == rnn.output_shape


class Hooked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.lin.register_forward_pre_hook(lambda mod, args: (args[0] @ torch.eye(4),))
        self.lin.register_forward_hook(lambda mod, args, out: out[:, :2] @ torch.ones(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_forward_hook_output_is_shown_as_documented() -> None:
    """torch runs torchcost's global forward hooks before a module's own, so the report shows what forward returned
    and a module's own forward hook counts in its caller, its pre-hook in the module (ModuleCost's docstring).
    Pinned here."""
    r = torchcost.analyze(Hooked(), torch.randn(1, 4))
    assert r.module("lin").output_shape == TensorSpec((1, 4), "float32")  # before the hook's [1, 3]
    assert r.module("lin").macs == 4 * 4 + 4 * 4  # its pre-hook's [1, 4] @ [4, 4], then the layer
    assert r.root.self_macs == 2 * 3  # the hook's [1, 2] @ [2, 3], in the caller
    assert r.root.output_shape == TensorSpec((1, 3), "float32")  # what the caller got


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.same = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.same(self.same(self.act(self.act(x)[:, :2])))


def test_repeated_calls_say_when_shapes_differ() -> None:
    r = torchcost.analyze(CalledTwice(), torch.randn(2, 4))
    act = r.module("act")
    assert act.calls == 2 and act.output_shape == TensorSpec((2, 4), "float32")  # the first call's
    assert act.shapes_differ  # the second returned [2, 2]
    assert r.module("same").calls == 2 and not r.module("same").shapes_differ  # [2, 2] both times
    assert CostReport.from_json(r.to_json()).module("act").shapes_differ
    shown = {row.name: calls_suffix(row) for row in rows(r)}
    assert shown["act"] == " x2, shapes differ" and shown["same"] == " x2"
    assert "act (ReLU) x2, shapes differ" in r.table()


def test_folding_keeps_frozen_blocks_apart_from_trainable_ones() -> None:
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(6)])
    for block in list(model)[3:]:
        block.requires_grad_(False)
    r = torchcost.analyze(model, torch.randn(1, 4))
    # 0 shown, 1-2 folded as identical to it; 3 (frozen) shown, 4-5 folded as identical to 3
    assert [row.name for row in rows(r)] == ["(model)", "0", "1 ... 2", "3", "4 ... 5"]


def test_new_fields_follow_the_json_schema() -> None:
    spec = json.loads((resources.files("torchcost") / "schema" / "report.schema.json").read_text())
    for model, x in ((TwoParents(), torch.randn(1, 4)), (PackedLSTM(), torch.randn(4, 2, 3)),
                     (UsesPair(), torch.randn(2, 4)), (CalledTwice(), torch.randn(2, 4))):
        jsonschema.Draft202012Validator(spec).validate(json.loads(torchcost.analyze(model, x).to_json()))


# -- nesting ------------------------------------------------------------------------------------------------------


def _nested(levels: int) -> nn.Module:
    model: nn.Module = nn.Linear(2, 2)
    for _ in range(levels):
        model = nn.Sequential(model)
    return model


def _deepest_plain_forward() -> int:
    """The most Sequential levels a plain forward runs from here (bisection, a few ms)."""
    low, high = 1, 4 * sys.getrecursionlimit()
    while low < high:
        mid = (low + high + 1) // 2
        try:
            _nested(mid)(torch.randn(1, 2))
            low = mid
        except RecursionError:
            high = mid - 1
    return low


def test_nesting_as_deep_as_a_plain_forward() -> None:
    levels = _deepest_plain_forward()
    limit = sys.getrecursionlimit()
    start = time.perf_counter()
    r = torchcost.analyze(_nested(levels), torch.randn(1, 2))
    assert time.perf_counter() - start < 5
    assert sys.getrecursionlimit() == limit  # put back
    assert r.macs == 2 * 2  # one Linear(2, 2) on one row
    assert len(r.modules) == levels + 1 and max(m.depth for m in r.modules) == levels
    assert CostReport.from_json(r.to_json()).macs == 4
    assert r.table().count("Sequential") >= 1
    assert time.perf_counter() - start < 10  # the table too: a block's fold signature is computed once per table


def test_walk_has_no_depth_limit() -> None:
    node = ModuleCost("x", "Linear", 0, 0, 0, 0, 0, 0, None, None, 0, 0, 0, 0, 0)
    for _ in range(3 * sys.getrecursionlimit()):
        node = dataclasses.replace(node, children=(node,))
    assert sum(1 for _ in node.walk()) == 3 * sys.getrecursionlimit() + 1


class Holder(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner


def test_scope_names_a_module_tree_of_any_depth() -> None:
    levels = 3 * sys.getrecursionlimit()
    model: nn.Module = nn.Linear(2, 2)
    for _ in range(levels):
        model = Holder(model)
    tracker = ScopeTracker(model)
    assert len(tracker.names) == levels + 1
    assert tracker.names[id(model.get_submodule("inner.inner"))] == "inner.inner"
