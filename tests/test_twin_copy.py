"""A twin's module tree is made by run/step.py's ``_tree_copy``, which stands for ``copy.deepcopy`` of the tree: the
same objects copied, the same ones shared (a submodule used twice, a tied parameter), atomic values kept, and odd
modules (their own ``__getstate__``, ``__deepcopy__``, ``__setstate__``) copied by deepcopy's own protocol."""

from __future__ import annotations

import copy
import functools
import weakref
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from torchcost.run.step import _ATOMIC, _tree_copy, make_twin, meta_like


class OwnState(nn.Module):
    """Its own __getstate__ (drops a cache): deepcopy's protocol must run, not the plain-module one."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.cache = [1, 2, 3]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["cache"] = None
        return state


class OwnCopy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.copies = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> OwnCopy:
        made = OwnCopy()
        made.copies = self.copies + 1
        return made


class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        shared = nn.ReLU()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3), shared)
        self.b = nn.Sequential(nn.Conv2d(4, 4, 3), shared)  # one module in two places
        self.head = nn.Linear(4, 4)
        self.tail = nn.Linear(4, 4)
        self.tail.weight = self.head.weight  # a tied parameter
        self.rnn = nn.LSTM(4, 4)  # its own __setstate__
        self.own_state = OwnState()
        self.own_copy = OwnCopy()
        self.sizes = (3, 3)
        self.names = {"x", "y"}
        self.nested = {"steps": [1, 2, (3, 4)], "scale": torch.ones(2)}  # a tensor deepcopy copies, inside a dict
        self.table = OrderedDict(one=1)
        self.fn = functools.partial(max, 0)
        self.bound = self.extra_repr  # a bound method of the module itself
        self.dtype = torch.float16
        self.register_buffer("mask", torch.zeros(2))


def _walk(root: Any) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """The shape of everything reachable from ``root`` through module attributes and containers: per object, first
    visit order, its type and, for an atomic value, the value; a repeat is noted by its first visit's number. And
    the objects visited."""
    seen: dict[int, int] = {}
    shape: list[tuple[Any, ...]] = []
    objects: list[Any] = []

    def visit(value: Any) -> None:
        if type(value) is weakref.ref:  # (by what it refers to: its address differs from copy to copy)
            target = value()
            shape.append(("weakref", seen.get(id(target), "outside") if target is not None else None))
            return
        if type(value) in _ATOMIC:
            shape.append(("atomic", repr(value)))
            return
        if id(value) in seen:
            shape.append(("again", seen[id(value)]))
            return
        seen[id(value)] = len(objects)
        objects.append(value)
        shape.append((type(value).__name__,))
        if isinstance(value, torch.Tensor):
            shape.append((tuple(value.shape), value.dtype, value.requires_grad))
        elif isinstance(value, nn.Module):
            for k, v in vars(value).items():
                shape.append(("attribute", k))
                visit(v)
        elif isinstance(value, dict):
            for k, v in value.items():
                visit(k)
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)
        elif isinstance(value, (set, frozenset)):
            shape.append(("items", sorted(map(repr, value))))

    visit(root)
    return shape, objects


def _memo(model: nn.Module) -> dict[int, Any]:
    """What make_twin puts in the memo before copying: each parameter and buffer's twin (here a plain copy)."""
    memo: dict[int, Any] = {}
    for t in (*model.parameters(), *model.buffers()):
        memo[id(t)] = t.detach().clone()
    return memo


def test_a_tree_copy_is_the_deep_copy_of_the_tree() -> None:
    model = Odd()
    made = _tree_copy(model, _memo(model))
    deep = copy.deepcopy(model, _memo(model))
    shape, objects = _walk(made)
    assert shape == _walk(deep)[0]
    # shared with the model: what deepcopy shares too (atomic values, tuples of them, a dtype: it copies to itself)
    originals = {id(o) for o in _walk(model)[1]}
    shared = [type(o).__name__ for o in objects if id(o) in originals]
    assert shared == [type(o).__name__ for o in _walk(deep)[1] if id(o) in originals]
    assert set(shared) == {"tuple", "dtype"}
    # the sharing the model has, the copy has
    assert made.a[1] is made.b[1] and made.a[1] is not model.a[1]
    assert made.tail.weight is made.head.weight
    assert made.own_state.cache is None and model.own_state.cache == [1, 2, 3]
    assert made.own_copy.copies == 1
    assert made.bound.__self__ is made
    assert made.nested["scale"] is not model.nested["scale"]
    # the LSTM's own __setstate__ ran: its flat weights are the copy's parameters
    assert all(w is getattr(made.rnn, n) for w, n in zip(made.rnn._flat_weights, made.rnn._flat_weights_names))


def test_a_twin_of_an_odd_model_runs_as_the_model_does() -> None:
    model = Odd()
    x = torch.randn(1, 3, 8, 8)
    twin = make_twin(model, (x,), {}, "copy", torch.device("cpu"))
    assert twin.model is not model and twin.model.a[1] is twin.model.b[1]
    for name, p in model.named_parameters():
        q = twin.model.get_parameter(name)
        assert q is not p and torch.equal(q, p)
    with torch.no_grad():
        assert torch.equal(twin.model.b(twin.model.a(twin.args[0])), model.b(model.a(x)))


def test_a_meta_twins_tensors_are_what_empty_like_makes() -> None:
    # a meta twin's tensors come from meta_like: empty_like's strides, worked out once per sizes, strides and dtype
    cases = [torch.empty(4, 6), torch.empty(6, 4).t(), torch.empty(1, 8)[:, ::2],
             torch.empty(2, 3, 4, 5).permute(0, 2, 3, 1), torch.empty(3, dtype=torch.float16).expand(2, 3),
             torch.empty(5, 1, dtype=torch.int64),
             torch.empty(2, 3, 4, 5, device="meta").to(memory_format=torch.channels_last)]
    for t in cases * 2:  # (the second time from the strides kept)
        made, expected = meta_like(t), torch.empty_like(t, device="meta")
        assert (made.shape, made.stride(), made.dtype, made.device, made.requires_grad) == \
            (expected.shape, expected.stride(), expected.dtype, expected.device, expected.requires_grad)
        assert made.untyped_storage().nbytes() == expected.untyped_storage().nbytes()
    # (6, 4).t(): a transposed (4, 6) keeps its column-major strides; 2 * 3 * 4 * 5 channels last: (60, 1, 15, 3)
    assert meta_like(cases[1]).stride() == (1, 4)
    assert meta_like(cases[-1]).stride() == (60, 1, 15, 3)
