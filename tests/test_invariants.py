"""Invariants every report keeps: the tree adds up, the totals are the sums, the report round-trips; calls and
shared weights are counted the documented way; and a property test over random small conv/linear stacks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import torchcost
from tests.fixtures.models import ConvBN, LSTMNet, SmallTransformer, TiedLM, TwiceCalled
from tests.test_tutorials import SIMPLE_CNN_FLOPS, SIMPLE_CNN_MACS, SIMPLE_CNN_PARAMS
from torchcost.examples import build


def check_invariants(r: torchcost.CostReport) -> None:
    for m in r.modules:
        # a node = its own ops + its children, exactly
        assert m.macs == m.self_macs + sum(c.macs for c in m.children), m.name
        assert m.flops == m.self_flops + sum(c.flops for c in m.children), m.name
        assert m.self_macs == sum(o.macs for o in m.ops), m.name
        assert m.self_flops == sum(o.flops for o in m.ops), m.name
        for o in m.ops:
            assert o.flops >= 2 * o.macs >= 0, (m.name, o)
        assert m.trainable_params <= m.params
        assert m.shared_params <= m.params
        for c in m.children:
            assert c.depth == m.depth + 1
            assert c.name.startswith(m.name + ".") if m.name else "." not in c.name
    # the root is the model and carries the totals
    assert r.root.name == "" and r.root.depth == 0
    assert (r.root.macs, r.root.flops) == (r.macs, r.flops)
    # column sums: every op attributed once, to exactly one module
    assert sum(m.self_macs for m in r.modules) == r.macs
    assert sum(m.self_flops for m in r.modules) == r.flops
    assert sum(o.macs for o in r.ops) == r.macs
    assert sum(o.flops for o in r.ops) == r.flops
    per_op: dict[str, int] = {}
    for m in r.modules:
        for o in m.ops:
            per_op[o.op] = per_op.get(o.op, 0) + o.calls
    assert per_op == {o.op: o.calls for o in r.ops}
    uncounted: dict[str, int] = {}
    for m in r.modules:
        for o in m.uncounted:
            uncounted[o.op] = uncounted.get(o.op, 0) + o.calls
    assert uncounted == {o.op: o.calls for o in r.uncounted}
    # params: the root's subtree is the whole model; without sharing, leaves partition it
    assert r.root.params == r.params
    if not any(m.shared_params for m in r.modules):
        owned = sum(m.params - sum(c.params for c in m.children) for m in r.modules)
        assert owned == r.params
    # round trips
    assert torchcost.CostReport.from_dict(r.to_dict()) == r
    again = torchcost.CostReport.from_json(r.to_json())
    assert again == r
    assert again.to_dict() == r.to_dict()
    assert again.table(width=100) == r.table(width=100)


def test_invariants_on_examples() -> None:
    for name in ("conv1d_series", "standard_conv", "depthwise_separable"):
        model, inputs = build(name)
        check_invariants(torchcost.analyze(model, *inputs))
    model, inputs = build("simple_cnn", device="meta")
    check_invariants(torchcost.analyze(model, *inputs))


def test_invariants_on_fixtures() -> None:
    check_invariants(torchcost.analyze(ConvBN(), torch.randn(2, 3, 8, 8)))
    check_invariants(torchcost.analyze(ConvBN(), torch.randn(2, 3, 8, 8), mode="train"))
    check_invariants(torchcost.analyze(SmallTransformer(), torch.randn(2, 5, 32)))
    check_invariants(torchcost.analyze(LSTMNet(), torch.randn(2, 7, 8)))
    check_invariants(torchcost.analyze(TiedLM(), torch.randint(0, 100, (2, 5))))


def test_json_is_exact_integers() -> None:
    model, inputs = build("simple_cnn", device="meta")
    d = torchcost.analyze(model, *inputs).to_dict()
    # exact integers, not rounded (1,412,956,160 MACs, not 1.41e9): the hand counts of tests/test_tutorials.py
    assert (d["params"], d["macs"], d["flops"]) == (SIMPLE_CNN_PARAMS, SIMPLE_CNN_MACS, SIMPLE_CNN_FLOPS)
    assert all(type(d[key]) is int for key in ("params", "macs", "flops"))
    modules = {m["name"]: m for m in d["modules"]}
    assert modules["classifier"]["macs"] == 128 * 56 * 56 * 1000
    assert modules["classifier"]["output_shape"] == {"shape": [1, 1000], "dtype": "float32"}


def test_module_called_twice() -> None:
    r = torchcost.analyze(TwiceCalled(), torch.randn(4, 8))
    fc = r.module("fc")
    assert fc.calls == 2
    assert r.params == fc.params == 8 * 8 + 8  # 72, once
    # each call: 4 rows x 8 x 8 = 256 MACs; both calls counted
    assert fc.macs == 2 * 4 * 8 * 8 == 512
    assert r.macs == 512
    # FLOPs: 2 x 512 + 2 calls x 32 bias adds + the relu between them on 32 elements (root's own op)
    assert fc.flops == 2 * 512 + 2 * 32
    assert r.root.self_flops == 32
    check_invariants(r)


class _ReturnsNone(nn.Module):
    def forward(self, x: torch.Tensor) -> None:
        return None


class _CatchesInside(nn.Module):
    """Calls a child that returns None inside an except block, and a child that raises and is caught."""

    def __init__(self) -> None:
        super().__init__()
        self.log = _ReturnsNone()
        self.bad = nn.Linear(3, 3)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            self.bad(x)  # wrong width: raises, caught here
        except RuntimeError:
            self.log(x)
        return self.fc(x)


def test_calls_inside_except_blocks() -> None:
    r = torchcost.analyze(_CatchesInside(), torch.randn(2, 4))
    assert r.module("log").calls == 1  # returned None inside an except block: still a call
    assert r.module("bad").calls == 0  # raised: no completed call
    assert r.module("fc").calls == 1
    assert r.uncalled == ("bad",)
    assert r.macs == 2 * 4 * 4
    check_invariants(r)


def test_tied_weight_counted_once_and_marked_shared() -> None:
    vocab, dim = 100, 16
    r = torchcost.analyze(TiedLM(vocab, dim), torch.randint(0, vocab, (2, 5)))
    embed = vocab * dim  # 1,600, one tensor used by embed and head
    body = dim * dim + dim  # 272
    assert r.params == embed + body == 1_872
    assert r.module("embed").params == embed and r.module("embed").shared_params == embed
    assert r.module("head").params == embed and r.module("head").shared_params == embed
    assert r.module("body").shared_params == 0
    # inside the root nothing is shared with the outside
    assert r.root.shared_params == 0
    # head: 10 rows x 16 x 100 = 16,000 MACs; body 10 x 16 x 16 = 2,560
    assert r.module("head").macs == 10 * dim * vocab
    assert r.macs == 10 * dim * vocab + 10 * dim * dim
    assert "(shared)" in r.table(width=100)
    check_invariants(r)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_frozen_params_and_buffers(mode: str) -> None:
    model = ConvBN()
    model.conv.requires_grad_(False)
    r = torchcost.analyze(model, torch.randn(2, 3, 8, 8), mode=mode)
    conv = 8 * 3 * 9 + 8  # 224
    bn = 2 * 8
    fc = 8 * 4 + 4
    assert r.params == conv + bn + fc
    assert r.trainable_params == bn + fc
    assert r.non_trainable_params == conv
    assert r.buffers == 8 + 8 + 1  # running_mean, running_var, num_batches_tracked
    assert r.buffer_bytes == 16 * 4 + 8  # float32 statistics and an int64 counter


# -- property test --------------------------------------------------------------------------------------------------

@st.composite
def stacks(draw: st.DrawFn) -> tuple[nn.Module, torch.Tensor, int, int]:
    """A random Conv2d stack (optionally with BN/ReLU/pool) and a Linear head, with hand-computed MACs and params."""
    channels = draw(st.integers(1, 4))
    size = draw(st.integers(6, 12))
    batch = draw(st.integers(1, 2))
    layers: list[nn.Module] = []
    macs = params = 0
    c, h = channels, size
    for _ in range(draw(st.integers(1, 3))):
        out = draw(st.integers(1, 5))
        k = draw(st.sampled_from([1, 3]))
        stride = draw(st.sampled_from([1, 2]))
        pad = draw(st.sampled_from([0, k // 2]))
        groups = draw(st.sampled_from([g for g in (1, c) if c % g == 0 and out % g == 0]))
        bias = draw(st.booleans())
        h_out = (h + 2 * pad - k) // stride + 1
        if h_out < 1:
            break
        layers.append(nn.Conv2d(c, out, k, stride=stride, padding=pad, groups=groups, bias=bias))
        params += out * (c // groups) * k * k + (out if bias else 0)
        macs += batch * out * h_out * h_out * (c // groups) * k * k
        c, h = out, h_out
        extra = draw(st.sampled_from(["none", "relu", "bn", "pool"]))
        if extra == "relu":
            layers.append(nn.ReLU())
        elif extra == "bn":
            layers.append(nn.BatchNorm2d(c))
            params += 2 * c
        elif extra == "pool" and h >= 2:
            layers.append(nn.MaxPool2d(2))
            h //= 2
    features = c * h * h
    classes = draw(st.integers(1, 6))
    layers += [nn.Flatten(), nn.Linear(features, classes)]
    params += features * classes + classes
    macs += batch * features * classes
    x = torch.randn(batch, channels, size, size)
    return nn.Sequential(*layers), x, macs, params


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stacks(), st.sampled_from(["eval", "train"]))
def test_random_stacks(case: tuple[nn.Module, torch.Tensor, int, int], mode: str) -> None:
    model, x, macs, params = case
    if mode == "train" and x.shape[0] == 1 and any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        mode = "eval"  # BatchNorm in training needs more than one value per channel
    r = torchcost.analyze(model, x, mode=mode)
    assert r.params == params
    assert r.macs == macs
    assert r.uncounted == ()
    check_invariants(r)
