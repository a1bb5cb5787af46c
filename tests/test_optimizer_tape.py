"""The optimizer's per-parameter loop replayed from tapes (collect/tape.py): a training step's analysis on a fake
twin writes the real step down, and a later one whose parameters' kinds all have tapes hands the same ops to the
collectors without running the loop. Every report must be the one the loop gives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from benchmarks.report_identity import _VOLATILE, _first_difference, _Tied
from torch import nn

import torchcost
from torchcost.collect import tape


@pytest.fixture
def replays(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Per training step of the tests' analyses, whether its optimizer step was replayed; no tape known at the
    start."""
    monkeypatch.setattr(tape, "_TAPES", {})
    monkeypatch.setattr(tape, "_CARRY", {})
    monkeypatch.setattr(tape, "_FRAMES", {})
    monkeypatch.setattr(tape, "_REFUSED", set())
    monkeypatch.setattr(tape, "_SEEN", set())
    seen: list[bool] = []
    original = tape.replay

    def spy(dispatch: Any, opt: torch.optim.Optimizer) -> bool:
        done = original(dispatch, opt)
        seen.append(done)
        return done

    monkeypatch.setattr(tape, "replay", spy)
    yield seen


def _report(model: nn.Module, *args: Any, **options: Any) -> dict[str, Any]:
    report = torchcost.analyze(model, *args, mode="train", **options).to_dict()
    for key in _VOLATILE:
        report.pop(key, None)
    return report


def _two_layers() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False))


def test_a_replayed_adamw_step_has_the_loops_memory_timeline(replays: list[bool]) -> None:
    model, x = _two_layers(), torch.randn(2, 8)
    torchcost.analyze(model, x, mode="train")  # the loop runs (the first AdamW step in the process)
    torchcost.analyze(model, x, mode="train")  # the loop runs, and is written down
    replayed = torchcost.analyze(model, x, mode="train")
    with tape.off():
        loop = torchcost.analyze(model, x, mode="train")
    assert replays == [False, False, True, False]  # (the last with the tapes switched off)
    # alive through the step: the two 8x8 float32 weights 2 * 256 B, their gradients 512 B, AdamW's two moments
    # 4 * 256 B and two float32 step counters 2 * 4 B, the 2x8 input and output 2 * 64 B and the loss 4 B
    base = 512 + 512 + 1024 + 8 + 128 + 4  # = 2,188
    # per weight: the counter's add_, weight decay's mul_, lerp_, mul_, addcmul_, the counter read, then the
    # denominator: sqrt (+256), division (+256; the sqrt let go after it), add_ of eps, and the update addcdiv_;
    # the denominator lives until the next weight's add_ of eps rebinds it, the last one until the loop ends
    per_weight = ["aten::add_", "aten::mul_", "aten::lerp_", "aten::mul_", "aten::addcmul_",
                  "aten::_local_scalar_dense", "aten::sqrt", "aten::div", "aten::add_", "aten::addcdiv_"]
    ops = ["profiler::_record_function_enter_new", *per_weight, *per_weight, "profiler::_record_function_exit"]
    alive = [base,
             *[base] * 6, base + 256, base + 512, base + 256, base + 256,
             *[base + 256] * 6, base + 512, base + 768, base + 512, base + 256,
             base]
    for report in (replayed, loop):
        timeline = report.memory.timeline
        step = [i for i, phase in enumerate(timeline.phases) if phase == "optimizer"]
        assert [timeline.ops[i] for i in step] == ops
        assert [timeline.bytes[i] for i in step] == alive
    assert replayed.to_dict() == loop.to_dict()


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_a_replayed_step_reports_what_the_loop_reports(replays: list[bool], optimizer: str) -> None:
    # biases, a frozen layer (no gradient: not in the loop), a weight shared by two modules, a normalisation
    torch.manual_seed(0)
    model, ids = _Tied(), torch.randint(0, 50, (2, 5))
    reports = [_report(model, ids, optimizer=optimizer) for _ in range(3)]  # run, run and written, replayed
    with tape.off():
        loop = _report(model, ids, optimizer=optimizer)
    assert replays == [False, False, True, False]
    assert all(_first_difference(report, loop) == "" for report in reports)


@pytest.mark.parametrize("name", ["RMSprop", "Adamax", "NAdam", "Adagrad"])
def test_torchs_other_single_tensor_optimizers_are_replayed_alike(replays: list[bool], name: str) -> None:
    torch.manual_seed(0)
    model, ids = _Tied(), torch.randint(0, 50, (2, 5))
    opt = getattr(torch.optim, name)(model.parameters(), **({"momentum": 0.9} if name == "RMSprop" else {}))
    reports = [_report(model, ids, optimizer=opt) for _ in range(3)]
    with tape.off():
        loop = _report(model, ids, optimizer=opt)
    assert replays == [False, False, True, False]
    assert all(_first_difference(report, loop) == "" for report in reports)


def test_a_users_optimizer_instance_with_groups_and_warm_state_is_replayed_alike(replays: list[bool]) -> None:
    torch.manual_seed(0)
    model, ids = _Tied(), torch.randint(0, 50, (2, 5))
    decay = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith("weight")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}])
    model(ids).float().pow(2).mean().backward()
    opt.step()  # (state of the user's own: the twin's is a copy, the step counters at 1)
    opt.zero_grad(set_to_none=True)
    reports = [_report(model, ids, optimizer=opt) for _ in range(3)]
    with tape.off():
        loop = _report(model, ids, optimizer=opt)
    assert replays == [False, False, True, False]
    assert all(_first_difference(report, loop) == "" for report in reports)
    assert all(state["step"].item() == 1 for state in opt.state.values())  # (the user's optimizer not stepped)


def test_a_foreach_step_is_not_taped_and_not_tried_again(replays: list[bool]) -> None:
    model, x = _two_layers(), torch.randn(2, 8)
    opt = torch.optim.AdamW(model.parameters(), foreach=True)
    reports = [_report(model, x, optimizer=opt) for _ in range(3)]
    with tape.off():
        loop = _report(model, x, optimizer=opt)
    # one _foreach_ call takes every parameter's tensors: no turns to write down, the kind of optimizer refused
    assert replays == [False] * 4 and not tape._TAPES and len(tape._REFUSED) == 1
    assert all(_first_difference(r, loop) == "" for r in reports)


def test_a_tape_seen_only_as_a_groups_last_turn_stands_for_a_last_turn_alone(replays: list[bool]) -> None:
    torch.manual_seed(0)
    # the 4x8 weight is the last turn here: whether its denominator is carried or let go after its last op
    # cannot be told apart, so its tape stands for a last turn only
    last = nn.Sequential(nn.Linear(8, 8, bias=False), nn.Linear(8, 4, bias=False))
    first = nn.Sequential(nn.Linear(8, 4, bias=False), nn.Linear(4, 4, bias=False))  # the 4x8 weight first
    x = torch.randn(2, 8)
    _report(last, x)
    _report(last, x)
    with_last = _report(last, x)
    first_report = _report(first, x)  # the 4x4 weight has no tape, and the 4x8 one's is a last turn's: the loop runs
    again = _report(first, x)
    with tape.off():
        loop_last, loop_first = _report(last, x), _report(first, x)
    assert replays == [False, False, True, False, True, False, False]
    assert _first_difference(with_last, loop_last) == ""
    assert _first_difference(first_report, loop_first) == "" and _first_difference(again, loop_first) == ""


def test_the_switch_runs_the_loop(replays: list[bool]) -> None:
    model, x = _two_layers(), torch.randn(2, 8)
    for _ in range(2):
        torchcost.analyze(model, x, mode="train")
    with tape.off():
        torchcost.analyze(model, x, mode="train")
    torchcost.analyze(model, x, mode="train")
    assert replays == [False, False, False, True]


def test_the_first_step_of_a_kind_of_optimizer_is_not_written_down(replays: list[bool]) -> None:
    model, x = _two_layers(), torch.randn(2, 8)
    torchcost.analyze(model, x, mode="train")  # (a one-off analysis pays nothing for the tapes)
    assert not tape._TAPES and len(tape._SEEN) == 1
    torchcost.analyze(model, x, mode="train")
    # the two 8x8 weights are one kind: one tape (AdamW: 10 ops a turn), its denominator carried into the next
    # turn until that turn's add_ of eps, the ninth op (index 8)
    assert [len(t.ops) for t in tape._TAPES.values()] == [10] and list(tape._CARRY.values()) == [8]


def test_a_users_dispatch_mode_around_the_analysis_sees_the_loops_ops(replays: list[bool]) -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Seen(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self.ops.append(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    model, x = _two_layers(), torch.randn(2, 8)
    for _ in range(2):  # (the tapes written)
        torchcost.analyze(model, x, mode="train")
    with Seen() as seen:
        torchcost.analyze(model, x, mode="train")
    torchcost.analyze(model, x, mode="train")
    # another mode on the stack: the loop runs, and the user's mode sees its update of each of the two weights
    assert replays == [False, False, False, True]
    assert seen.ops.count("aten.addcdiv_") == 2


def test_parameters_whose_turns_take_other_paths_through_the_loop_are_replayed_alike(replays: list[bool]) -> None:
    # RAdam rectifies the update once rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t) exceeds 5 (rho_inf = 2 / (1 -
    # 0.999) - 1 = 1,999): at step t = 2 it is about 2, at t = 12 about 11. The middle weight has stepped 11 times,
    # the others once, so the measured step takes the rectified path for it alone
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(8, 8, bias=False) for _ in range(3)))
    x = torch.randn(2, 8)
    opt = torch.optim.RAdam(model.parameters())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    middle = model[1].weight
    for p in model.parameters():
        p.grad = torch.ones_like(p) if p is middle else None
    for _ in range(10):
        opt.step()  # (only the middle weight has a gradient now)
    opt.zero_grad(set_to_none=True)
    assert [opt.state[p]["step"].item() for p in model.parameters()] == [1, 11, 1]
    reports = [_report(model, x, optimizer=opt) for _ in range(3)]
    with tape.off():
        loop = _report(model, x, optimizer=opt)
    assert replays == [False, False, True, False]
    assert all(_first_difference(report, loop) == "" for report in reports)
    timeline = loop["memory"]["timeline"]
    step = [op for op, phase in zip(timeline["ops"], timeline["phases"]) if phase == "optimizer"]
    # the profiler range's two ops, 8 for each weight not rectified (counter add_, its read, lerp_, mul_, addcmul_,
    # div, mul, the update add_) and 14 for the rectified one (a sqrt, add_ of eps, reciprocal, three mul more):
    # 2 + 8 + 14 + 8 = 32, one sqrt
    assert len(step) == 32 and step.count("aten::sqrt") == 1


def test_a_dead_temporarys_module_is_not_given_to_a_tensor_at_its_address() -> None:
    import weakref

    from torchcost.collect.ops import StepScope
    from torchcost.formulas.registry import OpCall

    scope = StepScope({})
    scope.last = "previous"
    dead, t = torch.empty(1), torch.empty(1)
    # what a temporary adopted at t's address leaves once it died and t took the address (id() reused)
    scope.adopted[id(t)] = ("somewhere", weakref.ref(dead))
    del dead
    call = OpCall("aten::sign", (t,), {}, None)
    assert scope.owner(call) == "previous"  # (not "somewhere": the previous op's module, as for any tensor unowned)
    scope.adopted[id(t)] = ("here", weakref.ref(t))
    assert scope.owner(call) == "here"


@pytest.mark.parametrize("made", [False, True], ids=["no tensors made", "tensors made"])
@pytest.mark.parametrize("name", ["AdamW", "SGD", "RMSprop", "Adagrad", "NAdam"])
def test_a_replay_without_tensors_and_one_with_them_report_what_the_loop_reports(
        replays: list[bool], monkeypatch: pytest.MonkeyPatch, name: str, made: bool) -> None:
    # every op of these loops is priced once its kind is written down, or takes the parameter's own tensors alone
    # (the step counter's read): replayed without making the new outputs, each a storage of the memory tracker's
    # alone; forced to make them (tape._plans says no), the replay hands the collectors tensors as the loop does
    paths: list[str] = []
    for function, path in (("_replay", "tensors made"), ("_replay_storageless", "no tensors made")):
        original = getattr(tape, function)
        monkeypatch.setattr(tape, function, lambda *a, _f=original, _p=path: (paths.append(_p), _f(*a))[1])
    if made:
        monkeypatch.setattr(tape, "_plans", lambda dispatch, found: None)
    torch.manual_seed(0)
    model, ids = _Tied(), torch.randint(0, 50, (2, 5))
    opt = getattr(torch.optim, name)(model.parameters(), **({"momentum": 0.9} if name in ("SGD", "RMSprop") else {}))
    reports = [_report(model, ids, optimizer=opt) for _ in range(3)]
    with tape.off():
        loop = _report(model, ids, optimizer=opt)
    assert replays == [False, False, True, False]
    assert paths == ["tensors made" if made else "no tensors made"]
    assert all(_first_difference(report, loop) == "" for report in reports)
