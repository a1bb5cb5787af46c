"""The optimizer's per-parameter loop replayed from a tape, on a fake twin.

torch's optimizers on the CPU run their single-tensor implementation: a Python loop over the parameters whose body
runs the same few aten ops for every parameter (AdamW: the step counter's increment, weight decay, the moments'
updates, the counter read, the denominator's square root, division and epsilon, the parameter's update: ten). A
training step's analysis of a model with many parameters dispatches mostly these, each through the dispatch mode,
the twin's answers and both collectors: on resnet18 the optimizer step was 40% of the analysis. What each op hands
the collectors is fixed by the parameter's kind (its metadata, its gradient's and its state's, the step counter's
value, the group's options): the op, which of the parameter's tensors it takes, the numbers, the metadata of the
tensors it makes, and after which op each of those dies.

So a real step, run as always under the modes, is also written down (:class:`Learner`, the dispatch mode's
``taping`` hook), from the second step of its kind of optimizer (class and options) in the process on, so that a
one-off analysis (the CLI's) does not pay for the writing, about a tenth of the step's analysis. Per parameter: the
ops of its turn of the loop, their arguments as places (the parameter, its gradient, a state entry by name, an
output of an earlier op of the turn, a number), the key of each op's price (the twin's shortcuts made it), each new
output's metadata and the op after which it died: in its own turn, or in the next one (the loop's local variable
holds it until the next turn rebinds it: Adam's denominator), or at the end of the group's loop for a group's last
turn. The turns are cut where an op takes the next parameter's tensors. A step whose ops do not fall into turns so
(a foreach or fused implementation, a tensor shared by every parameter, an op on a tensor of no parameter or made
outside every op) is not written down, and its kind of optimizer is not tried again in the process. Nor is a step
whose tensors a tape does not take: a meta twin's (its step counters are real CPU tensors), a simulated rank's
(DTensors). The first two
turns of each kind and each group's last turn are written in full and must agree; the others are cut and counted.

A later step whose every parameter has a tape of its kind (:func:`replay`) runs no loop: for each parameter in the
optimizer's order, each op of the tape is handed to the op collector and the memory tracker as the dispatch mode
would hand it (its arguments the parameter's own tensors, its new outputs empty tensors of the metadata written
down, made as the twin's shortcuts make them), each new output let go after the op where it died. The report is
the one the loop gives (tests/test_optimizer_tape.py; ``python -m benchmarks.switch_identity`` over 27 models;
``python -m benchmarks.report_identity --repeat 3``). The values a step leaves in the twin's state (the step
counters' increments) are not made: nothing reads them after the step, and the twin goes with the analysis. Tapes
are kept for the process: models are analysed again with the same kinds of parameters (``max_batch_size``'s
probes, a notebook, the benchmarks).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, cast

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import _pop_mode_temporarily

from torchcost.collect import Switch
from torchcost.collect.fakeops import BASE_LAYOUT, META_DEVICE
from torchcost.collect.keys import LEAVES
from torchcost.collect.memory import ALIVE
from torchcost.collect.probe import strided_elements
from torchcost.collect.storages import storage_of
from torchcost.trees import op_tensors, tensors_in

__all__ = ["Learner", "Tape", "enabled", "off", "replay"]

_SWITCH = Switch()
enabled, off = _SWITCH.enabled, _SWITCH.off

_NO_PYTHON_DISPATCH = torch._C._DisableTorchDispatch  # (no mode sees what is done inside)


_PLACE = object()  # the mark of a place: (_PLACE, name, step, index)


def _place(name: str, step: int = -1, index: int = 0) -> tuple[Any, str, int, int]:
    """An argument of a taped op that is a tensor of the turn: the parameter ("param"), its gradient ("grad"), a
    state entry (its name), or output ``index`` of the turn's op ``step``. A tuple, so that turns compare and hash
    as plain values."""
    return (_PLACE, name, step, index)


# one op of a turn: (op, arguments, keyword arguments, outputs, price key, deaths after it). Arguments hold places
# for tensors. Outputs: (form, items): form "one" (a tensor), "tuple", "list" or "value" (a number, as item()
# returns), each item a place (the op returned a tensor of the turn), the metadata of a new tensor (shape, strides,
# dtype, device; device None on a meta twin), or a number. Deaths: the turn's new outputs (step, index) let go after it
_Op = tuple[Any, tuple[Any, ...], dict[str, Any], tuple[str, tuple[Any, ...]], Any, tuple[tuple[int, int], ...]]


class Tape:
    """One parameter's turn of the loop: its ops (each with the new outputs of the turn let go after it), the new
    outputs that live on into the next turn (``carried``: let go after the op of the next turn that
    ``_CARRY[(options, its kind)]`` names),
    and those let go when the group's loop ends, seen only in a group's last turn (``ends``: carried or let go
    after the last op, which a last turn cannot tell apart; such a tape stands for a group's last turn only)."""

    __slots__ = ("carried", "ends", "ops", "path")

    def __init__(self, ops: tuple[_Op, ...], carried: tuple[tuple[int, int], ...],
                 ends: tuple[tuple[int, int], ...]) -> None:
        self.ops = ops
        self.carried = carried
        self.ends = ends
        self.path = tuple(op[0] for op in ops)  # (its way through the loop's body: its ops in order)

    def body(self) -> tuple[Any, ...]:
        """The ops and their deaths but the last op's: what every turn of a kind must share."""
        return (*self.ops[:-1], self.ops[-1][:5]) if self.ops else ()

    def last(self) -> frozenset[tuple[int, int]]:
        """What lives past the turn's last op: let go after it, carried, or let go at the group's end."""
        return frozenset((*self.ops[-1][5], *self.carried, *self.ends))


# (group options, the parameter's kind) -> its tape; (group options, a turn's path through the loop's body: its
# tape's ops) -> the op of that turn after which the previous turn's carried outputs die (the statement rebinding
# them, which the path places); kinds of optimizer (class and every group's options) whose steps do not fall into
# turns
_TAPES: dict[tuple[Any, ...], Tape] = {}
_CARRY: dict[tuple[Any, ...], int] = {}
# (optimizer class, every group's options) -> the ops on no tensor before the first turn and after the last
# (``Optimizer.step``'s profiler range: profiler::_record_function_enter_new and _record_function_exit), each as
# (op, its arguments with anything but plain values as None)
_Frame = tuple[tuple[Any, tuple[Any, ...]], ...]
_FRAMES: dict[tuple[Any, ...], tuple[_Frame, _Frame]] = {}
_REFUSED: set[tuple[Any, ...]] = set()
_SEEN: set[tuple[Any, ...]] = set()  # kinds of optimizer step run once in the process: the next is written down
_TAPES_MAX = 4096


def _options(opt: torch.optim.Optimizer, group: dict[str, Any]) -> tuple[Any, ...] | None:
    """The optimizer's class and a group's options (hashable), or None where an option does not hash."""
    key = (type(opt), tuple((k, v) for k, v in group.items() if k != "params"))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _tensor_kind(t: torch.Tensor) -> tuple[Any, ...] | None:
    """What a tensor of a turn is known by: its type, metadata, storage size and, for a fake tensor carrying its
    value (a step counter), that value. None for tensors a tape does not take (views, other layouts, subclasses)."""
    kind = type(t)
    if kind is FakeTensor:
        fake = cast("FakeTensor", t)
        # (BASE_LAYOUT: the layout FakeTensor.layout gives where dispatch_keys is None, without its Python calls)
        if fake.dispatch_keys is not None or BASE_LAYOUT(t) != torch.strided or t.storage_offset() != 0 or \
                t._is_view():
            return None
        constant = fake.constant
        value = None
        if constant is not None:
            if type(constant) is not torch.Tensor or constant.numel() != 1:
                return None
            with _NO_PYTHON_DISPATCH():
                value = constant.item()
        return (kind, t.shape, t.stride(), t.dtype, fake.fake_device, t.requires_grad,
                t.untyped_storage().nbytes(), constant is not None, value)
    if kind in (torch.Tensor, torch.nn.Parameter) and t.is_meta and t.layout == torch.strided and \
            t.storage_offset() == 0 and not t._is_view():
        return (kind, t.shape, t.stride(), t.dtype, t.device, t.requires_grad, t.untyped_storage().nbytes())
    return None


# per group: its options and, per parameter the step updates (gradient not None) in order, its kind and its tensors
# by place name
_Turns = list[tuple[tuple[Any, ...], list[tuple[tuple[Any, ...], dict[str, Any]]]]]


def _turns(opt: torch.optim.Optimizer) -> _Turns | None:
    """Each group's options and turns (see :data:`_Turns`); None where some parameter, state entry or option
    cannot be taped."""
    groups: _Turns = []
    for group in opt.param_groups:
        options = _options(opt, group)
        if options is None:
            return None
        turns = []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = opt.state.get(p)
            if not state:
                return None
            tensors: dict[str, Any] = {"param": p, "grad": p.grad}
            kinds: list[Any] = [_tensor_kind(p), _tensor_kind(p.grad)]
            if kinds[0] is None or kinds[1] is None:
                return None
            for name, value in state.items():
                if not isinstance(name, str) or name in tensors:
                    return None
                if isinstance(value, torch.Tensor):
                    kind = _tensor_kind(value)
                    if kind is None:
                        return None
                    tensors[name] = value
                    kinds.append((name, kind))
                else:
                    entry = (name, type(value), value)
                    try:
                        hash(entry)
                    except TypeError:
                        return None
                    kinds.append(entry)
            if len({id(t) for t in tensors.values()}) != len(tensors):
                return None  # (two places on one tensor)
            turns.append((tuple(kinds), tensors))
        groups.append((options, turns))
    return groups


def _taped(opt: torch.optim.Optimizer) -> list[list[tuple[Tape, dict[str, Any], int]]] | None:
    """Per group, per updated parameter: its tape, its tensors, and the op of its turn after which the previous
    turn's carried outputs die (-1: none carried); None where some parameter has no tape that stands for its turn,
    or its turn's op where carried outputs die is not known (the step then runs)."""
    turns = _turns(opt)
    if turns is None:
        return None
    found = []
    for options, group in turns:
        taped: list[tuple[Tape, dict[str, Any], int]] = []
        for i, (kinds, tensors) in enumerate(group):
            tape = _TAPES.get((options, kinds))
            if tape is None or (tape.ends and i + 1 < len(group)):
                return None
            carry = -1
            if i and taped[-1][0].carried:
                carry = _CARRY.get((options, tape.path), -1)
                if not 0 <= carry < len(tape.ops):
                    return None
            taped.append((tape, tensors, carry))
        found.append(taped)
    return found


def replay(dispatch: Any, opt: torch.optim.Optimizer) -> bool:
    """The optimizer's step from the tapes of its parameters' kinds, handed to ``dispatch``'s collectors (a
    DispatchCollector) as its ``__torch_dispatch__`` would hand the loop's ops; False (nothing done) where some
    parameter has none."""
    if not _SWITCH.on or type(opt) not in _OPTIMIZERS:
        return False
    if not _alone(dispatch):
        return False
    frames = _FRAMES.get(_step_key(opt))
    found = _taped(opt) if frames is not None else None
    if frames is None or found is None:
        return False
    memory = dispatch.memory
    if memory is not None and any(memory.uid_of(t) is None for taped in found for _, tensors, _ in taped
                                      for t in tensors.values()):
        return False  # (a tensor made outside every op seen: the loop's first op on it starts following it)
    plans = _plans(dispatch, found)
    with _pop_mode_temporarily():  # (the collectors get each op as inside the dispatch mode's handler)
        _frame_ops(dispatch, frames[0])
        if plans is not None:
            _replay_storageless(dispatch, found, plans)
        else:
            _replay(dispatch, found)
        _frame_ops(dispatch, frames[1])
    return True


def _alone(dispatch: Any) -> bool:
    """Whether nothing but torchcost and the twin's own fake mode would see the loop's calls: ``dispatch`` on top
    of torch's dispatch stack with at most a FakeTensorMode below it, and no function mode on (torchcost's own is
    off for the step). A user's mode around the analysis sees every op the loop runs: the loop then runs."""
    depth = torch._C._len_torch_dispatch_stack()
    if torch._C._len_torch_function_stack() or not depth or torch._C._get_dispatch_stack_at(depth - 1) is not dispatch:
        return False
    return depth == 1 or (depth == 2 and type(torch._C._get_dispatch_stack_at(0)) is FakeTensorMode)


def _step_key(opt: torch.optim.Optimizer) -> tuple[Any, ...]:
    return (type(opt), tuple(_options(opt, g) for g in opt.param_groups))


def _frame_ops(dispatch: Any, frame: _Frame) -> None:
    """The step's ops on no tensor, as the dispatch mode hands them over (their outputs hold no tensor: None)."""
    for func, args in frame:
        dispatch.seen += 1
        if dispatch.watch is not None and id(func) not in dispatch._idle:
            dispatch.watch(func, args, {})
        dispatch.ops.on_aten(func, args, {}, None)
        if dispatch.memory is not None:
            dispatch.memory.on_op(func, args, {}, None)


def _replay(dispatch: Any, found: list[list[tuple[Tape, dict[str, Any], int]]]) -> None:
    ops, memory, watch, idle, wrap = dispatch.ops, dispatch.memory, dispatch.watch, dispatch._idle, dispatch.wrap
    prices: dict[tuple[int, int], Any] = {}  # (id of a tape, op) -> its price for the op collector, looked up once
    for taped in found:
        carried: list[Any] = []  # the new outputs of the previous turn that live into this one
        for tape, tensors, carry in taped:
            made: dict[tuple[int, int], Any] = {}
            for step, (func, args, kwargs, (form, items), memo, deaths) in enumerate(tape.ops):
                call_args = tuple(_filled(a, tensors, made) for a in args)
                call_kwargs = {k: _filled(v, tensors, made) for k, v in kwargs.items()} if kwargs else {}
                results = []
                new = []
                for index, item in enumerate(items):
                    if type(item) is not tuple:  # (a number)
                        results.append(item)
                    elif item[0] is _PLACE:
                        results.append(_filled(item, tensors, made))
                    else:  # (held by ``made``, ``results`` and ``new`` alone: no local name may keep a new output
                        # alive past the op after which the loop let it go)
                        new.append(_new(item, tensors["param"], wrap))
                        made[(step, index)] = new[-1]
                        results.append(new[-1])
                out = _output(form, results)
                dispatch.seen += 1
                if watch is not None and id(func) not in idle:
                    watch(func, call_args, call_kwargs)
                where = (id(tape), step)
                price = prices.get(where, _UNKNOWN)
                if price is _UNKNOWN:
                    price = prices[where] = ops.priced(func, memo)
                if price is None:
                    ops.on_aten(func, call_args, call_kwargs, out, memo)
                else:
                    ops.tally_priced(func, call_args, call_kwargs, out, price)
                if memory is not None:
                    memory.on_taped(func, call_args, call_kwargs, out, new)
                del call_args, call_kwargs, results, out, new
                for dead in deaths:
                    del made[dead]
                if step == carry:
                    carried.clear()
            carried.clear()
            carried.extend(made[key] for key in tape.carried)
            made.clear()  # (a group's last turn: its ends go here, at the end of the group's loop)
        carried.clear()


# one op of a turn as :func:`_replay_storageless` hands it over: (op, its price for the op collector or None, its
# tensor arguments' places in OpCall.inputs' order, its new outputs as (index, bytes), its memory key, the tape's op)
_Planned = tuple[Any, Any, tuple[Any, ...], tuple[tuple[int, int], ...], str, _Op]


def _plans(dispatch: Any, found: list[list[tuple[Tape, dict[str, Any], int]]]) -> dict[int, list[_Planned]] | None:
    """Per tape (by id) its ops as :func:`_replay_storageless` takes them, where every op of every tape is one that
    needs no tensor made: priced already (its price, read once, is all the op collector tallies; its module is
    found from its arguments' places as StepScope.owner finds it from their tensors), or taking and returning only
    the parameter's own tensors (handed to the op collector as they are); each op's memory a timeline entry and
    its new storages' sizes (MemoryTracker.plain_key), no watch on it. None where some op is not (the tensors are
    then made: :func:`_replay`)."""
    ops, memory = dispatch.ops, dispatch.memory
    if ops.step is None or ops.phase != "optimizer":
        return None
    plans: dict[int, list[_Planned]] = {}
    for taped in found:
        for tape, _, _ in taped:
            if id(tape) in plans:
                continue
            plan: list[_Planned] = []
            for op in tape.ops:
                func, args, kwargs, (_, items), memo, _ = op
                if dispatch.watch is not None and id(func) not in dispatch._idle:
                    return None
                places: list[Any] = []
                _places_in(args, places)
                _places_in(tuple(kwargs.values()), places)
                news = []
                for index, item in enumerate(items):
                    if type(item) is tuple and item[0] is not _PLACE:
                        shape, stride, dtype, device = item
                        if device is None:  # (a meta twin's)
                            return None
                        news.append((index, strided_elements(shape, stride) * dtype.itemsize))
                price = ops.priced(func, memo)
                if price is None and (news or any(place[2] >= 0 for place in places)):
                    return None
                key = memory.plain_key(func) if memory is not None else ""
                if key is None:
                    return None
                plan.append((func, price, tuple(places), tuple(news), key, op))
            plans[id(tape)] = plan
    return plans


def _places_in(value: Any, found: list[Any]) -> None:
    """The places of tensors in a taped op's arguments, in the order trees.op_tensors finds the tensors."""
    for item in value:
        if type(item) is tuple and item and item[0] is _PLACE:
            found.append(item)
        elif type(item) in (tuple, list):
            _places_in(item, found)


def _replay_storageless(dispatch: Any, found: list[list[tuple[Tape, dict[str, Any], int]]],
                        plans: dict[int, list[_Planned]]) -> None:
    """:func:`_replay` without tensors: each op's price tallied to the module StepScope.owner would give it, each
    new output a storage of the memory tracker's alone (born at its op, let go where the loop let it go)."""
    ops, memory = dispatch.ops, dispatch.memory
    scope = ops.step
    for taped in found:
        carried: list[int] = []  # uids of the previous turn's new outputs that live into this one
        for tape, tensors, carry in taped:
            made: dict[tuple[int, int], tuple[int | None, str | None]] = {}  # new output -> (uid, its module)
            for step, (func, price, places, news, key, op) in enumerate(plans[id(tape)]):
                dispatch.seen += 1
                module = None
                for place in places:  # (StepScope.owner)
                    module = scope.module_of(tensors[place[1]]) if place[2] < 0 else made[(place[2], place[3])][1]
                    if module is not None:
                        break
                form, items = op[3]
                if price is None:
                    results = [_filled(item, tensors, {}) for item in items]
                    ops.on_aten(func, tuple(_filled(a, tensors, {}) for a in op[1]),
                                {k: _filled(v, tensors, {}) for k, v in op[2].items()}, _output(form, results), op[4])
                else:
                    if module is None:
                        module = scope.last
                    ops.tally_owned(module, price)
                    place = items[0] if form == "one" else None
                    if type(place) is tuple and place[0] is _PLACE:  # (an in-place op's output: adopted as
                        # tally_priced adopts it)
                        if place[2] >= 0:
                            made[(place[2], place[3])] = (made[(place[2], place[3])][0], module)
                        elif id(tensors[place[1]]) not in scope.owners:
                            ops._adopt(tensors[place[1]])
                uids = memory.on_storageless(key, [size for _, size in news if size]) if memory is not None else []
                at = iter(uids)
                for index, size in news:  # (a tuple's or list's outputs are not adopted: tally_priced's rule)
                    made[(step, index)] = (next(at) if size and memory is not None else None,
                                           scope.last if form == "one" and price is not None else None)
                dead = [made.pop(d)[0] for d in op[5]]
                if step == carry:
                    dead.extend(carried)
                    carried.clear()
                if memory is not None:
                    memory.let_go(uid for uid in dead if uid is not None)
            kept = [made.pop(k)[0] for k in tape.carried]
            if memory is not None:
                memory.let_go(carried)
                memory.let_go(uid for uid, _ in made.values() if uid is not None)
            carried = [uid for uid in kept if uid is not None]
        if memory is not None:
            memory.let_go(carried)


def _output(form: str, results: list[Any]) -> Any:
    """A taped op's output of its form (see :data:`_Op`) from its items, filled."""
    return results[0] if form in ("one", "value") else tuple(results) if form == "tuple" else results


def _filled(value: Any, tensors: dict[str, Any], made: dict[tuple[int, int], Any]) -> Any:
    kind = type(value)
    if kind is tuple:
        if value and value[0] is _PLACE:
            return tensors[value[1]] if value[2] < 0 else made[(value[2], value[3])]
        return tuple(_filled(v, tensors, made) for v in value)
    if kind is list:
        return [_filled(v, tensors, made) for v in value]
    return value


def _new(meta: tuple[Any, ...], anchor: Any, wrap: Callable[[Any, torch.Tensor, torch.device], Any] | None) -> Any:
    """A new output of a taped op: an empty meta tensor of its metadata, wrapped as a fake tensor of the anchor's
    fake mode on its device, as the twin's shortcuts make one (on a meta twin, the meta tensor)."""
    shape, stride, dtype, device = meta
    with _NO_PYTHON_DISPATCH():
        empty = torch.empty_strided(shape, stride, dtype=dtype, device=META_DEVICE)
    if device is None or wrap is None:
        return empty
    return wrap(anchor.fake_mode, empty, device)


# torch's optimizers whose single-tensor loop a tape may stand for (exact classes: a subclass may do more)
_OPTIMIZERS = tuple(cls for cls in (getattr(torch.optim, name, None) for name in (
    "SGD", "Adam", "AdamW", "RMSprop", "Adamax", "NAdam", "RAdam", "Adagrad")) if isinstance(cls, type))


class Learner:
    """Writes down a real step's ops as tapes (the dispatch mode's ``taping`` hook for the step: :meth:`on_op`
    after each op has gone to the collectors), then keeps them (:meth:`finish`). ``failed``: nothing to write down
    (another kind of optimizer, no memory tracker, a tensor a tape does not take, a kind refused before)."""

    def __init__(self, opt: torch.optim.Optimizer, memory: Any) -> None:
        self.memory = memory
        turns = _turns(opt) if type(opt) in _OPTIMIZERS and memory is not None and _SWITCH.on else None
        self.key = _step_key(opt) if turns is not None else None
        self.failed = turns is None or self.key in _REFUSED
        if self.key is not None and not self.failed and self.key not in _SEEN:
            # the process's first step of this kind of optimizer: not written down
            if len(_SEEN) >= _TAPES_MAX:
                _SEEN.clear()
            _SEEN.add(self.key)
            self.failed, self.key = True, None  # (finish then keeps nothing, and refuses nothing)
        self.start = len(memory.alive) if memory is not None else 0
        # every updated parameter's turn in order: (group, options, kinds, id() of its tensors -> place name)
        self.order: list[tuple[int, tuple[Any, ...], tuple[Any, ...], dict[int, str]]] = [
            (g, options, kinds, {id(t): name for name, t in tensors.items()})
            for g, (options, group) in enumerate(turns or ()) for kinds, tensors in group]
        self.serial = next(_SERIALS)  # (this writing's own, for the price keys it makes)
        self.at = 0  # the turn now running (index in order)
        self.steps: list[list[Any]] = [[] for _ in self.order]  # per turn: its ops as written (None: counted)
        self.index: list[tuple[int, int]] = []  # per op of the step: (turn, step in the turn)
        self.made: dict[int, tuple[int, int, int, int]] = {}  # id() of a new output -> (turn, step, index, uid)
        self.births: list[tuple[int, int, int, int]] = []  # (turn, step, index, uid) of every new output
        self.frames: tuple[list[tuple[Any, tuple[Any, ...]]], list[tuple[Any, tuple[Any, ...]]]] = ([], [])
        # the turns written down in full: the first two of each kind and each group's last; the others are only
        # cut (an op is the next turn's where it takes one of that parameter's tensors) and counted, and must come
        # out as long as their kind's tape
        self.written: list[bool] = []
        count: dict[tuple[Any, ...], int] = {}
        for i, (group, options, kinds, _) in enumerate(self.order):
            last = i + 1 == len(self.order) or self.order[i + 1][0] != group
            count[(options, kinds)] = seen = count.get((options, kinds), 0) + 1
            self.written.append(last or seen <= 2)

    def on_op(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any, memo: Any) -> None:
        if self.failed:
            return
        try:
            self._on_op(func, args, kwargs, out, memo)
        except _NotTurns:
            self.failed = True
            self.steps, self.made = [], {}

    def _on_op(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any, memo: Any) -> None:
        inputs = op_tensors(args, kwargs)
        if not inputs and not kwargs and not tensors_in(out):  # (the profiler's range around the step)
            if self.index and not self.frames[1] and self.at + 1 < len(self.order):
                raise _NotTurns  # (between turns)
            self.frames[1 if self.index else 0].append(
                (func, tuple(a if type(a) in LEAVES else None for a in args)))
            return
        if self.frames[1]:
            raise _NotTurns
        turn = self._turn_of(inputs)
        step = len(self.steps[turn])
        if not self.written[turn]:
            self.steps[turn].append(None)
            self.index.append((turn, step))
            return
        places = self.order[turn][3]
        template_args = tuple(self._template(a, places, turn) for a in args)
        template_kwargs = {k: self._template(v, places, turn) for k, v in kwargs.items()}
        if isinstance(out, torch.Tensor):
            form, outs = "one", (out,)
        elif type(out) in (tuple, list):
            form, outs = type(out).__name__, tuple(out)
        elif type(out) in (bool, int, float):
            form, outs = "value", (out,)
        else:
            raise _NotTurns
        taken = {id(t) for t in inputs}
        now = len(self.memory.alive) - 1  # (the collectors have had the op: its timeline entry is the last)
        for t in inputs:  # (each followed before the op: the replay registers new outputs alone)
            uid = self.memory.uid_of(t)
            if uid is None or self.memory.born[uid] == now:
                raise _NotTurns
        items: list[Any] = []
        for index, o in enumerate(outs):
            if not isinstance(o, torch.Tensor):
                if type(o) not in (bool, int, float):
                    raise _NotTurns
                items.append(o)
            elif id(o) in taken:
                items.append(self._template(o, places, turn))
            else:
                items.append(self._new_output(o, turn, step, index, now))
        if memo is None:  # (a call the twin's shortcuts did not key: keyed by its kind's tape and its place in
            # it, which fix every argument's metadata and value for every parameter of the kind)
            memo = ("optimizer tape", self.serial, *self.order[turn][1:3], step)
        self.steps[turn].append([func, template_args, template_kwargs, (form, tuple(items)), memo])
        self.index.append((turn, step))

    def _new_output(self, o: torch.Tensor, turn: int, step: int, index: int, now: int) -> tuple[Any, ...]:
        """The metadata of a new output, made as :func:`_new` makes it; its storage born at this op."""
        kind = _tensor_kind(o)
        fake = type(o) is FakeTensor
        s = storage_of(o)
        uid = self.memory._by_storage.get(id(s)) if s is not None else None
        if kind is None or (fake and kind[7]) or o.requires_grad or o.is_conj() or o.is_neg() or s is None or \
                uid is None or self.memory.born[uid] != now or \
                s.nbytes() != strided_elements(o.shape, o.stride()) * o.element_size():
            raise _NotTurns
        self.made[id(o)] = (turn, step, index, uid)
        self.births.append((turn, step, index, uid))
        return (tuple(o.shape), o.stride(), o.dtype, cast("FakeTensor", o).fake_device if fake else None)

    def _turn_of(self, tensors: list[torch.Tensor]) -> int:
        """The turn an op belongs to: the next one where it takes one of the next parameter's tensors, else the
        running one (never one further, never back). In a turn written down every tensor it takes must be the
        turn's parameter's or an output of the turn; an op on no tensor ends the writing down."""
        if not tensors:
            raise _NotTurns
        turn = self.at
        if turn + 1 < len(self.order):
            after = self.order[turn + 1][3]
            if any(id(t) in after for t in tensors):
                turn += 1
        if self.written[turn]:
            here = self.order[turn][3]
            if not all(id(t) in here or self._made_in(t, turn) for t in tensors):
                raise _NotTurns
        self.at = turn
        return turn

    def _made_in(self, t: torch.Tensor, turn: int) -> bool:
        """Whether ``t`` is a live new output of ``turn`` (an id of a dead one may have been given to another)."""
        found = self.made.get(id(t))
        return found is not None and found[0] == turn and self.memory.died[found[3]] == ALIVE

    def _template(self, value: Any, places: dict[int, str], turn: int) -> Any:
        if isinstance(value, torch.Tensor):
            name = places.get(id(value))
            if name is not None:
                return _place(name)
            if not self._made_in(value, turn):
                raise _NotTurns
            found = self.made[id(value)]
            return _place("", found[1], found[2])
        if type(value) in (list, tuple):
            return type(value)(self._template(v, places, turn) for v in value)
        if type(value) in LEAVES:
            return value
        raise _NotTurns

    def finish(self, ran: bool) -> None:
        """After the step (``ran``: it returned): each kind's tape kept where all its turns agree; a step whose ops
        did not fall into turns marks its kind of optimizer refused for the process."""
        if self.key is None or not ran:
            return
        tapes = None if self.failed else self._tapes()
        if tapes is None:
            _REFUSED.add(self.key)
            return
        found, carry_at = tapes
        if len(_TAPES) + len(found) > _TAPES_MAX:
            _TAPES.clear()
            _CARRY.clear()
            _FRAMES.clear()
        for where, at in carry_at.items():
            known = _CARRY.get(where)
            if known is not None and known != at:
                _REFUSED.add(self.key)
                return
            _CARRY[where] = at
        frames = (tuple(self.frames[0]), tuple(self.frames[1]))
        if _FRAMES.setdefault(self.key, frames) != frames:
            _REFUSED.add(self.key)
            return
        _TAPES.update(found)

    def _tapes(self) -> tuple[dict[tuple[Any, ...], Tape], dict[tuple[Any, ...], int]] | None:
        """The tapes of the kinds whose turns agree, and per group options the op of a turn after which the previous
        turn's carried outputs died; None where the step did not fall into turns."""
        memory = self.memory
        framed = len(self.frames[0]) + len(self.frames[1])
        if len(memory.alive) - self.start != len(self.index) + framed or not all(self.steps):
            return None
        start = self.start + len(self.frames[0])  # (the timeline index of the first turn's first op)
        ends = {}  # group -> the step's op index after its last op
        for i, (turn, _) in enumerate(self.index):
            ends[self.order[turn][0]] = i + 1
        deaths: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (turn, step) -> new outputs let go after it
        carried: dict[int, list[tuple[int, int]]] = {}  # turn -> its outputs that lived into the next turn
        at_end: dict[int, list[tuple[int, int]]] = {}  # a group's last turn -> its outputs let go at the group's end
        carry_at: dict[tuple[Any, ...], set[int]] = {}  # (group options, the next turn's kind) -> its ops
        for turn, step, index, uid in self.births:
            died = memory.died[uid]
            after = died - start - 1  # the turns' op after which it died
            if died == ALIVE or not 0 <= after < len(self.index):
                return None
            dead_turn, dead_step = self.index[after]
            group, options = self.order[turn][0], self.order[turn][1]
            last = turn + 1 == len(self.order) or self.order[turn + 1][0] != group
            if last and after + 1 == ends[group]:
                at_end.setdefault(turn, []).append((step, index))
            elif dead_turn == turn:
                deaths.setdefault((turn, dead_step), []).append((step, index))
            elif dead_turn == turn + 1 and not last:
                carried.setdefault(turn, []).append((step, index))
                carry_at.setdefault((options, self.order[dead_turn][2]), set()).add(dead_step)
            else:
                return None
        if any(len(at) != 1 for at in carry_at.values()):
            return None
        chosen: dict[tuple[Any, ...], Tape] = {}
        seen_last: dict[tuple[Any, ...], list[Tape]] = {}
        for turn, steps in enumerate(self.steps):
            _, options, kinds, _ = self.order[turn]
            if not self.written[turn]:
                continue
            written = tuple((func, args, kwargs, outs, memo, tuple(sorted(deaths.get((turn, step), ()))))
                            for step, (func, args, kwargs, outs, memo) in enumerate(steps))
            tape = Tape(written, tuple(sorted(carried.get(turn, ()))), tuple(sorted(at_end.get(turn, ()))))
            key = (options, kinds)
            if tape.ends:
                seen_last.setdefault(key, []).append(tape)
                continue
            other = chosen.get(key)
            if other is not None and (other.body() != tape.body() or other.ops[-1][5] != tape.ops[-1][5]
                                      or other.carried != tape.carried):
                chosen[key] = _DISAGREE
            elif other is None:
                chosen[key] = tape
        for key, lasts in seen_last.items():
            base = chosen.get(key, lasts[0])
            if base is _DISAGREE or any(t.body() != base.body() or t.last() != base.last() for t in lasts):
                chosen[key] = _DISAGREE
            elif key not in chosen:
                chosen[key] = base
        for turn, steps in enumerate(self.steps):  # (a turn only counted: as long as its kind's tape)
            if not self.written[turn]:
                kept = chosen.get(self.order[turn][1:3])
                if kept is None or (kept is not _DISAGREE and len(kept.ops) != len(steps)):
                    return None
        agreed = {k: t for k, t in chosen.items() if t is not _DISAGREE}
        by_path: dict[tuple[Any, ...], set[int]] = {}  # (group options, the next turn's path) -> its ops
        for (options, kinds), at in carry_at.items():
            next_tape = agreed.get((options, kinds))
            if next_tape is not None:
                by_path.setdefault((options, next_tape.path), set()).update(at)
        if any(len(at) != 1 for at in by_path.values()):
            return None
        return agreed, {k: next(iter(v)) for k, v in by_path.items()}


_UNKNOWN = object()
_SERIALS = itertools.count()
_DISAGREE = Tape((), (), ())  # (a kind whose turns in one step were not written down alike: not kept)


class _NotTurns(Exception):
    """The step's ops do not fall into per-parameter turns a tape can hold."""
