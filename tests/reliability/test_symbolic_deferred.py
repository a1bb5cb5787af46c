"""In the command's process, ``torch.fx.experimental.symbolic_shapes`` and sympy are stand-ins until something symbolic
is asked of them (run/symbolic.py): their answers on plain values are the real module's, anything else imports the
real one, and a run counts the same either way. The process checks run in a fresh process, where nothing has
imported sympy yet (this test session has: torchvision imports torch._dynamo)."""

from __future__ import annotations

import itertools
import json
import warnings
from typing import Any

import pytest
import torch
import torch.fx.experimental.symbolic_shapes as real

from tests.cli.conftest import python
from torchcost.run import symbolic

# plain values as torch's meta kernels and references hand them over; and a few they never do, which both refuse
_PLAIN = (True, False, 0, 1, 7, -3, 2.5, "s", None, (), (2, 3), [4, 4], torch.Size([2, 3]))


def _same(ours: Any, theirs: Any, *args: Any) -> None:
    """``ours(*args)`` answers what ``theirs(*args)`` answers (value and type), or raises the same exception type."""
    try:
        expected: Any = theirs(*args)
    except Exception as exc:  # (the real one refuses this value: so must the stand-in)
        with pytest.raises(type(exc)):
            ours(*args)
        return
    got = ours(*args)
    if hasattr(expected, "__next__"):  # (generators: what they yield)
        expected, got = list(expected), list(got)
    assert got == expected and type(got) is type(expected), (theirs.__name__, args, got, expected)


@pytest.mark.parametrize("name", ["_guard_or", "guard_or_false", "guard_or_true", "statically_known_true",
                                  "guard_size_oblivious", "expect_true", "is_nested_int", "has_guarding_hint",
                                  "guarding_hint_or_throw", "optimization_hint", "free_unbacked_symbols",
                                  "has_free_unbacked_symbols", "_iterate_exprs", "_iterate_nodes"])
def test_each_stand_in_answers_a_plain_value_as_the_real_function(name: str) -> None:
    ours, theirs = getattr(symbolic, name), getattr(real, name)
    for value in (*_PLAIN, torch.empty(2, 3), torch.empty(0), torch.empty(4, 4).t(), [torch.empty(1), 3]):
        if name == "_guard_or":
            for default in (True, False):
                _same(ours, theirs, value, default)
        else:
            _same(ours, theirs, value)


@pytest.mark.parametrize("name", ["sym_eq", "sym_and", "sym_or"])
def test_the_stand_ins_joins_answer_as_the_real_ones(name: str) -> None:
    ours, theirs = getattr(symbolic, name), getattr(real, name)
    for x, y in itertools.product((True, False, 0, 1, 5, (1, 2), [1, 2], (1, 2, 3), ((1, 2), 3), 2.5), repeat=2):
        _same(ours, theirs, x, y)
    if name != "sym_eq":  # (any number of operands)
        _same(ours, theirs, True)
        _same(ours, theirs, 6, 3, 5)


def test_the_deprecated_stand_in_warns_as_the_real_one() -> None:
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        real.guard_size_oblivious(True)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        symbolic.guard_size_oblivious(True)
    assert [(w.category, str(w.message)) for w in ours] == [(w.category, str(w.message)) for w in theirs]
    assert len(ours) == 1


def test_the_compute_of_bindings_without_a_shape_environment_is_none_as_the_real_one() -> None:
    assert symbolic.compute_unbacked_bindings(None, torch.empty(2)) is None
    assert real.compute_unbacked_bindings(None, torch.empty(2)) is None


def test_a_symbolic_value_is_handed_to_the_real_function(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    env = ShapeEnv()
    n = env.create_unbacked_symint()  # a size nobody knows (u0)
    asked: list[str] = []

    class Spy:
        def __getattr__(self, name: str) -> Any:
            asked.append(name)
            return getattr(real, name)

    monkeypatch.setattr(symbolic, "_real", lambda name=None: Spy())
    assert symbolic.guard_or_false(n == 3) is False  # (the real answer on u0 == 3: not known, so the default)
    assert symbolic.guard_or_true(n == 3) is True
    assert symbolic.is_nested_int(n) is False
    assert symbolic.has_free_unbacked_symbols([n, 2]) is True
    assert symbolic.free_unbacked_symbols(n) == real.free_unbacked_symbols(n)
    symbolic.sym_eq((n, 2), (n, 2))  # (the tuples walked by the stand-in; u0 == u0 asked of the real one)
    assert asked == ["guard_or_false", "guard_or_true", "is_nested_int", "has_free_unbacked_symbols",
                     "free_unbacked_symbols", "sym_eq"]


_PROCESS = """
import importlib, json, sys
import torch
from torch import nn
import torchcost
from torchcost import Parallel
from torchcost.run import dynamo, symbolic

dynamo.own_process()
symbolic.stand_in()  # (what cli.py's console does)

def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 5))

def counts(r):
    return {"macs": r.macs, "step_macs": r.step_macs, "flops": r.flops, "peak": r.memory.peak_bytes,
            "shapes": [str(m.output_shape) for m in r.modules]}

def stood_in():
    names = ("sympy", "torch.fx.experimental.symbolic_shapes", "torch.utils._sympy.functions")
    return [type(sys.modules.get(n)).__name__ for n in names]

placeholder = sys.modules["sympy"].Basic  # (the stand-ins' own classes, handed out before sympy is imported)
guard_error = sys.modules["torch.fx.experimental.symbolic_shapes"].GuardOnDataDependentSymNode
out = {"basic_before": isinstance(1, placeholder)}
def runs(suffix):
    out["train" + suffix] = counts(torchcost.analyze(cnn(), input_size=(2, 3, 8, 8), mode="train", optimizer="sgd"))
    out["amp" + suffix] = counts(torchcost.analyze(cnn(), input_size=(2, 3, 8, 8), mode="train", amp="bf16"))
    out["fsdp" + suffix] = counts(torchcost.analyze(cnn(), input_size=(2, 3, 8, 8), mode="train", optimizer="sgd",
                                                    parallel=Parallel(fsdp=2)))
    out["after" + suffix] = stood_in()
runs("")
star = {}
exec("from sympy import *", star)  # (the real sympy's names, by its __all__)
out["star"] = "Symbol" in star and star["Basic"] is not placeholder
import sympy  # a later user of sympy and of the symbolic shapes gets the real ones
out["symbol"] = str(sympy.Symbol("x") + 1)
from torch.fx.experimental.symbolic_shapes import ShapeEnv
out["env"] = type(ShapeEnv()).__name__
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
try:
    raise GuardOnDataDependentSymNode(None, "u0 == 3")
except guard_error as exc:  # (a clause written while the stand-in was there)
    out["caught"] = str(exc)
out["basic_after"] = isinstance(sympy.Symbol("x"), placeholder) and issubclass(sympy.Symbol, placeholder)
out["real_after"] = stood_in()
runs("_again")
print(json.dumps(out))
"""


def test_the_commands_training_steps_do_not_import_sympy_and_count_the_same() -> None:
    run = python(_PROCESS)
    assert run.rc == 0, run.err
    out: dict[str, Any] = json.loads(run.out.strip().splitlines()[-1])
    # a training step, its bf16 autocast (a conversion's dense check imports a sympy function it does not call) and
    # a simulated FSDP2 rank (DTensor's sharding rules ask for hints): nothing symbolic, all three stand-ins kept
    assert out["after"] == ["_StandIn", "_StandIn", "_StandIn"]
    # (the real symbolic shapes import sympy's functions of torch's: each stand-in hands over to its real module)
    assert out["real_after"] == out["after_again"] == ["module", "module", "module"]
    assert out["star"] is True and out["symbol"] == "x + 1" and out["env"] == "ShapeEnv"
    assert out["basic_before"] is False and out["basic_after"] is True and out["caught"] == "u0 == 3"
    for name in ("train", "amp", "fsdp"):
        assert out[name + "_again"] == out[name]
    # Conv2d(3, 4, 3) on 2 x 3 x 8 x 8, padding 1: 2*8*8 positions x 4*3*3*3 = 13,824 MACs; Linear(256, 5) on 2 rows:
    # 2*256*5 = 2,560. Backward: the conv's weight gradient 13,824 (its input needs none), the Linear's input and
    # weight gradients 2,560 each
    assert out["train"]["macs"] == 13_824 + 2_560
    assert out["train"]["step_macs"] == 16_384 + 13_824 + 2 * 2_560
