"""The shortcuts of the second speed round (issue 16) give what the long ways gave: one schema argument looked up
instead of the whole schema bound, a probe remembered per call metadata, the full garbage collection held off during
a run and the threshold put back."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import torch
from torch import nn

import torchcost
from torchcost.collect import leaves, memory, probe
from torchcost.collect.memory import _call_signature, metadata_key
from torchcost.collect.scope import ScopeTracker
from torchcost.formulas.registry import OpCall, _plan
from torchcost.trees import op_tensors as _op_tensors
from torchcost.trees import tensors_in

A = torch.ops.aten


def _bound(schema: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The whole schema bound, as OpCall.arg did it before: positional, else keyword, else the default."""
    bound: dict[str, Any] = {}
    for i, (name, kwarg_only, has_default, default) in enumerate(_plan(schema)):
        if i < len(args) and not kwarg_only:
            bound[name] = args[i]
        elif name in kwargs:
            bound[name] = kwargs[name]
        elif has_default:
            bound[name] = default
    return bound


@pytest.mark.parametrize(("op", "args", "kwargs"), [
    (A.convolution.default, (torch.ones(1, 2, 5, 5), torch.ones(3, 2, 3, 3), None, [1, 1], [0, 0], [1, 1], False,
                             [0, 0], 1), {}),
    (A.add.Tensor, (torch.ones(2), torch.ones(2)), {"alpha": 2}),
    (A.add.Tensor, (torch.ones(2), torch.ones(2)), {}),
    (A.sum.dim_IntList, (torch.ones(2, 3), [1]), {"keepdim": True}),
    (A.native_layer_norm.default, (torch.ones(2, 4), [4], None, None, 1e-5), {}),
])
def test_arg_looks_up_what_binding_the_schema_gave(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    call = OpCall(op._schema.name, args, kwargs, None, op._schema)
    bound = _bound(op._schema, args, kwargs)
    for argument in op._schema.arguments:
        expected = bound.get(argument.name, "missing")
        got = call.arg(argument.name, "missing")
        assert got is expected or got == expected, argument.name
    assert call.arg("no_such_argument", 7) == 7
    assert OpCall("x::y", args, {"a": 1}, None, None).arg("a") == 1


def test_op_tensors_walks_lists_of_tensors_as_the_general_walk() -> None:
    a, b, c = torch.ones(1), torch.ones(2), torch.ones(3)
    cases = [((a, [b, None, c], (1, 2)), {}), (([a, [b, (c,)]],), {"k": [a, 3]}), (((), []), {"d": {"e": b}})]
    for args, kwargs in cases:
        assert [id(t) for t in _op_tensors(args, kwargs)] == [id(t) for t in tensors_in((args, kwargs))]


def test_call_signature_tells_apart_what_a_probe_keys_on() -> None:
    conv = A.convolution.default

    def signature(args: tuple[Any, ...]) -> Any:
        return _call_signature(conv, "cpu", metadata_key(args, {}, None))

    x, w = torch.ones(1, 2, 5, 5), torch.ones(3, 2, 3, 3)
    base = (x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    same = (torch.zeros(1, 2, 5, 5), torch.zeros(3, 2, 3, 3), None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    assert signature(base) == signature(same)
    others = [
        (x.transpose(2, 3), w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1),  # strides
        (x.double(), w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1),  # dtype
        (x, w, None, [2, 2], [0, 0], [1, 1], False, [0, 0], 1),  # an int argument
        (x, w, None, [1, 1], [0, 0], [1, 1], True, [0, 0], 1),  # a bool argument
        (x, w, None, (1, 1), [0, 0], [1, 1], False, [0, 0], 1),  # a tuple for a list
    ]
    for args in others:
        assert signature(args) != signature(base)
    with torch.no_grad():
        quiet = signature(base)
    assert quiet != signature(base)  # grad mode
    assert signature((object(),)) is None
    # one tensor twice is not two tensors alike (x * x reads x once: call_bytes)
    assert metadata_key((x, x), {}, None) != metadata_key((x, x.clone()), {}, None)
    assert metadata_key((x, x.clone()), {}, None) == metadata_key((x.clone(), x.clone()), {}, None)


def test_a_repeated_call_asks_for_its_probe_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    real = probe.ask

    def counting(name: str, *rest: Any) -> Any:
        asked.append(name)
        return real(name, *rest)

    monkeypatch.setattr(probe, "ask", counting)
    monkeypatch.setattr(memory, "_MEASURED", {})
    monkeypatch.setattr(memory, "_PLANNED", {})
    # no plan trusted yet, as in a fresh process: the first conv runs under the modes (keyed by metadata_key), the
    # other three past them (keyed by their planned call's key); one probe all the same
    monkeypatch.setattr(leaves, "TRUSTED", {})
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Conv2d(8, 8, 3, padding=1) for _ in range(4)]).eval()
    x = torch.randn(1, 8, 12, 12)
    with probe.kernel_memory("measure"):
        first = torchcost.analyze(model, x)
        assert asked.count("aten::convolution") == 1  # four calls with one metadata
        again = torchcost.analyze(model, x)
    assert again.to_dict() == first.to_dict()
    assert asked.count("aten::convolution") <= 2  # the probe measured in the first run serves the second


def test_full_collections_wait_for_the_end_of_the_run_and_the_threshold_comes_back() -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []

    class Peek(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(gc.get_threshold())
            return x * 2

    torchcost.analyze(Peek(), torch.ones(2))
    assert gc.get_threshold() == before
    assert seen and seen[0][:2] == before[:2] and seen[0][2] > 10**6

    class Fails(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("boom")

    with pytest.raises(Exception, match="boom"):
        torchcost.analyze(Fails(), torch.ones(2))
    assert gc.get_threshold() == before


def test_a_planned_calls_answers_are_kept_for_the_process_only_off_a_cuda_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a "cuda" target's cuBLAS entry reads environment variables at each call: its answers are worked out each run
    monkeypatch.setattr(memory, "_PLANNED", {})
    scope = ScopeTracker(nn.Linear(2, 2))
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    call = ("aten::mm", A.mm.default, (a, b), {}, a @ b, 0)
    on_gpu = memory.MemoryTracker(scope)
    on_gpu.stands_for = "cuda"  # (a simulated rank's CPU twin standing for a GPU)
    on_gpu._kernel_memory(*call, meta=(7, 0))
    assert memory._PLANNED == {}
    assert on_gpu.library  # the cuBLAS workspace all the same
    on_cpu = memory.MemoryTracker(scope)
    on_cpu._kernel_memory(*call, meta=(7, 0))
    assert len(memory._PLANNED) == 1
