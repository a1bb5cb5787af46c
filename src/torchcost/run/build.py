"""The report, assembled from what one run saw (a :class:`~torchcost.run.execute.Ran`): the module tree with each
module's own and rolled-up counts, parameters, shapes and memory, the op totals, and the memory record."""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from typing import Any, NamedTuple, cast

import torch
from torch import nn

from torchcost._version import __version__
from torchcost.collect.memory import MemoryTrace
from torchcost.collect.ops import STEP_PHASES, OpCollector, op_counts
from torchcost.collect.scope import ScopeTracker, module_paths
from torchcost.collect.storages import local_tensor
from torchcost.inputs import floating_dtype
from torchcost.report import (
    CollectiveCount,
    CostReport,
    MemoryBreakdown,
    MemoryReport,
    MemoryTimeline,
    ModuleCost,
    PhaseCount,
    from_fields,
)
from torchcost.run.execute import Ran
from torchcost.shapes import ShapeTree, first_spec
from torchcost.trees import spec_of, tensor_bytes

__all__ = ["build_report"]

_Tensors = dict[int, torch.Tensor]


_TENSOR, _PARAMETER = torch.Tensor, nn.Parameter


class _Sums:
    """A subtree's distinct tensors (by id) and their sums: elements, trainable elements, bytes."""

    __slots__ = ("nbytes", "numel", "tensors", "trainable")

    def __init__(self, tensors: _Tensors) -> None:
        self.tensors = tensors
        self.numel = self.trainable = self.nbytes = 0
        for t in tensors.values():
            self._add(t)

    def _add(self, t: torch.Tensor) -> None:
        n = t.numel()
        self.numel += n
        if t.requires_grad:
            self.trainable += n
        self.nbytes += _local_numel(t, n) * t.element_size()

    def merge(self, child: _Sums) -> None:
        """Add a child subtree's tensors: its sums at once when none of them is here already, else one by one."""
        mine, theirs = self.tensors, child.tensors
        if not theirs:
            return
        if mine.keys().isdisjoint(theirs.keys()):
            mine.update(theirs)
            self.numel += child.numel
            self.trainable += child.trainable
            self.nbytes += child.nbytes
            return
        for key, t in theirs.items():
            if key not in mine:
                mine[key] = t
                self._add(t)


def _local_numel(t: torch.Tensor, numel: int) -> int:
    """The elements a parameter or buffer of ``numel`` elements holds here: a DTensor's local shard's."""
    return local_tensor(t).numel() if type(t) is not _TENSOR and type(t) is not _PARAMETER else numel


def _single_paths(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """``module_paths(model)`` when no module with children is held under several names (so none is inside itself):
    the same pre-order, walked without module_paths' bookkeeping of the path; None when one is met twice
    (module_paths then says which of its names to enter)."""
    out: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    todo = [("", model)]
    pop, push, add, mark = todo.pop, todo.append, out.append, seen.add
    while todo:
        name, module = pop()
        add((name, module))
        children = module._modules
        if children:  # (only a module with children can be inside itself: a leaf met twice is named as here)
            key = id(module)
            if key in seen:
                return None
            mark(key)
            prefix = name + "." if name else ""
            for child_name, child in reversed(children.items()):
                if child is not None:
                    push((prefix + child_name, child))
    return out


# ModuleCost's fields, in order: _build fills in a dict of them (checked against the class here)
_FIELDS = ("name", "type", "depth", "params", "trainable_params", "shared_params", "buffers", "calls", "input_shape",
           "output_shape", "output_bytes", "macs", "flops", "self_macs", "self_flops", "ops", "uncounted", "children",
           "param_bytes", "buffer_bytes", "activation_bytes", "peak_memory", "shapes_differ", "same_as",
           "backward_macs", "backward_flops", "self_backward_macs", "self_backward_flops", "recompute_macs",
           "recompute_flops", "optimizer_flops", "input_grad_macs", "weight_grad_macs", "comm_bytes", "comm_calls",
           "bytes", "self_bytes")
if _FIELDS != tuple(f.name for f in fields(ModuleCost)):  # pragma: no cover  (report.py changed: update _build)
    raise ImportError("torchcost.run.build: ModuleCost's fields changed; update _FIELDS and _build")

# Every field at its default (0, "" or None where it has none: a module that never ran). Each node's values are a
# copy of this, filled in (quicker than a dict display of 37 keys), made into a ModuleCost by report.from_fields
# (without its 37 frozen-attribute sets: a quarter of building a report).
_BLANK: dict[str, Any] = {**dict.fromkeys(_FIELDS, 0), "name": "", "type": "", "input_shape": None,
                          "output_shape": None,
                          **{f.name: f.default for f in fields(ModuleCost) if f.default is not MISSING}}


class _Tree(NamedTuple):
    """The module tree, built: the root node; the sums over the whole tree's distinct parameters and buffers (as
    model.parameters()/.buffers() list them): elements, trainable elements and bytes of the parameters, elements and
    bytes of the buffers; and the plain output bytes of the calls of the leaves (the modules with no child)."""

    root: ModuleCost
    params: int
    trainable_params: int
    param_bytes: int
    buffers: int
    buffer_bytes: int
    activation_bytes: int


def _module_tree(model: nn.Module, scope: ScopeTracker, ops: OpCollector, trace: MemoryTrace | None) -> _Tree:
    """Every (name, module) of the model in pre-order, a module held by several parents under each of its names
    (module_paths), made into nodes: plainly when no tensor is held twice, else counting each one once."""
    paths = _single_paths(model)
    if paths is None:
        paths = module_paths(model)
    tree = _build(paths, scope, ops, trace, plain=True)
    return tree if tree is not None else cast(_Tree, _build(paths, scope, ops, trace, plain=False))


def _build(paths: list[tuple[str, nn.Module]], scope: ScopeTracker, ops: OpCollector, trace: MemoryTrace | None,
           plain: bool) -> _Tree | None:
    """Children before parents (reversed pre-order, no recursion), one pass over the tree.

    ``plain``: each subtree's parameter and buffer sums are its own plus its children's, which holds when no tensor
    is held twice in the tree (no tied weights, no module under several names): None when one is. Otherwise each
    subtree's distinct tensors are gathered from its children's (_Sums), and the parameters held by several module
    names are looked for outside each subtree (shared_params)."""
    counted, uncounted = ops.counted, ops.uncounted
    calls_of, canonical = scope.calls, scope.canonical
    memory = trace is not None
    peaks, activations = (trace.module_peak, trace.module_activation) if trace is not None else ({}, {})
    stepping = bool(ops.steps)
    back, again, opt = (ops.phase_module_sums("backward"), ops.phase_module_sums("recompute"),
                        ops.phase_module_sums("optimizer")) if stepping else ({}, {}, {})
    comm = ops.comm_modules
    owners = {} if plain else _owners(paths)
    held = 0  # plain: the parameters and buffers met (each once, unless one is held twice)
    ids: set[int] = set()
    add_id = ids.add
    built: dict[str, tuple[Any, ...]] = {}
    none = (0, 0)
    blank = _BLANK
    entry: tuple[Any, ...] = ()
    activation_bytes = 0  # the plain output bytes of the leaves' calls
    for name, module in reversed(paths):
        # the children, in order: each one's entry (node, then its subtree's parameter and buffer sums)
        entries: list[tuple[Any, ...]] | tuple[()] = ()
        leaf = True
        kids = module._modules
        if kids:
            entries = []
            prefix = name + "." if name else ""
            for child_name, kid in kids.items():
                if kid is not None:
                    leaf = False
                    child = built.pop(prefix + child_name, None)  # None: held inside itself (counted already)
                    if child is not None:
                        entries.append(child)
        # parameters and buffers
        if plain:
            met, p_numel, p_trainable, p_bytes = _own(module._parameters, add_id, _PARAMETER)
            held += met
            met, b_numel, _, b_bytes = _own(module._buffers, add_id, _TENSOR)
            held += met
            for entry in entries:
                p_numel += entry[1]
                p_trainable += entry[2]
                p_bytes += entry[3]
                b_numel += entry[4]
                b_bytes += entry[5]
        else:
            params = _Sums({id(p): p for p in module._parameters.values() if p is not None})
            buffers = _Sums({id(b): b for b in module._buffers.values() if b is not None})
            for entry in entries:
                params.merge(entry[1])
                buffers.merge(entry[2])
            p_numel, p_trainable, p_bytes, b_numel, b_bytes = (params.numel, params.trainable, params.nbytes,
                                                               buffers.numel, buffers.nbytes)
        values = blank.copy()  # (a copy of a dict of every field is quicker to fill than a dict display)
        values["name"] = name
        values["type"] = type(module).__name__
        values["depth"] = name.count(".") + 1 if name else 0
        values["params"] = p_numel
        values["trainable_params"] = p_trainable
        values["buffers"] = b_numel
        if not plain:
            values["shared_params"] = _shared(owners, name, params.tensors)
        calls = calls_of.get(name)
        if calls is not None:
            if leaf:
                activation_bytes += calls.output_bytes
            values["calls"] = calls.calls
            values["input_shape"] = calls.input_spec
            values["output_shape"] = calls.output_spec
            values["output_bytes"] = calls.output_bytes
            values["shapes_differ"] = calls.shapes_differ
        if canonical:
            values["same_as"] = canonical.get(name, "")
        # the forward's own ops, then the children's added
        self_macs = self_flops = self_bytes = 0
        stats = counted.get(name)
        if stats:
            values["ops"] = node_ops = op_counts(stats)  # the ops run in its own forward, outside its children
            for o in node_ops:
                self_macs += o.macs
                self_flops += o.flops
                self_bytes += o.bytes
        if name in uncounted:
            values["uncounted"] = ops.module_uncounted(name)
        macs, flops, nbytes = self_macs, self_flops, self_bytes
        if entries:
            values["children"] = children = tuple([entry[0] for entry in entries])
            for c in children:
                macs += c.macs
                flops += c.flops
                nbytes += c.bytes
        else:
            children = ()
        values["macs"] = macs
        values["flops"] = flops
        values["self_macs"] = self_macs
        values["self_flops"] = self_flops
        values["bytes"] = nbytes
        values["self_bytes"] = self_bytes
        if memory:
            peak = peaks.get(name, 0)
            for c in children:
                if c.peak_memory > peak:
                    peak = c.peak_memory
            values["peak_memory"] = peak
            values["param_bytes"] = p_bytes
            values["buffer_bytes"] = b_bytes
            values["activation_bytes"] = activations.get(name, 0)
        # a training step's later phases, and a simulated rank's collectives
        if stepping:
            self_back_macs, self_back_flops = back.get(name, none)
            back_macs, back_flops = self_back_macs, self_back_flops
            again_macs, again_flops = again.get(name, none)
            opt_flops = opt.get(name, none)[1]
            into, weight = ops.phase_module_grads("backward", name)
            for c in children:
                back_macs += c.backward_macs
                back_flops += c.backward_flops
                again_macs += c.recompute_macs
                again_flops += c.recompute_flops
                opt_flops += c.optimizer_flops
                into += c.input_grad_macs
                weight += c.weight_grad_macs
            values["backward_macs"] = back_macs
            values["backward_flops"] = back_flops
            values["self_backward_macs"] = self_back_macs
            values["self_backward_flops"] = self_back_flops
            values["recompute_macs"] = again_macs
            values["recompute_flops"] = again_flops
            values["optimizer_flops"] = opt_flops
            values["input_grad_macs"] = into
            values["weight_grad_macs"] = weight
        if comm:
            comm_calls, comm_bytes = comm.get(name, none)
            for c in children:
                comm_calls += c.comm_calls
                comm_bytes += c.comm_bytes
            values["comm_bytes"] = comm_bytes
            values["comm_calls"] = comm_calls
        node = from_fields(ModuleCost, values)
        if plain:
            built[name] = entry = (node, p_numel, p_trainable, p_bytes, b_numel, b_bytes)
        else:
            built[name] = entry = (node, params, buffers)
    # entry: the model itself's (the last one built)
    if not plain:
        params, buffers = entry[1], entry[2]
        return _Tree(entry[0], params.numel, params.trainable, params.nbytes, buffers.numel, buffers.nbytes,
                     activation_bytes)
    if len(ids) != held:  # a tensor held twice: build again, counting it once
        return None
    return _Tree(entry[0], entry[1], entry[2], entry[3], entry[4], entry[5], activation_bytes)


def _own(tensors: dict[str, Any], add_id: Any, plain: type) -> tuple[int, int, int, int]:
    """(tensors met, elements, trainable elements, bytes) of a module's own parameters or buffers (``plain``: the
    type whose bytes need no look at a DTensor's shard); each tensor's id goes to ``add_id``."""
    met = numel = trainable = nbytes = 0
    for t in tensors.values() if tensors else ():
        if t is not None:
            met += 1
            add_id(id(t))
            n = t.numel()
            numel += n
            if t.requires_grad:
                trainable += n
            nbytes += (n if type(t) is plain else _local_numel(t, n)) * t.element_size()
    return met, numel, trainable, nbytes


def _owners(paths: list[tuple[str, nn.Module]]) -> dict[int, set[str]]:
    """id(parameter) -> every module name that holds it, for the parameters held by several (a parameter held by one
    module name only can never be shared outside a subtree holding it)."""
    owners: dict[int, set[str]] = {}
    for mod_name, module in paths:
        for p in module._parameters.values():
            if p is not None:
                owners.setdefault(id(p), set()).add(mod_name)
    return {k: v for k, v in owners.items() if len(v) > 1}


def _shared(owners: dict[int, set[str]], name: str, params: _Tensors) -> int:
    """Parameters of this subtree that some module outside it (under any of its names) also holds."""
    if not name or not owners:
        return 0
    prefix = name + "."
    # walk the smaller of the two: this subtree's parameters, or the parameters held by several modules
    held = ((pid, params.get(pid)) for pid in owners) if len(owners) < len(params) else params.items()
    return sum(p.numel() for pid, p in held
               if p is not None and any(o != name and not o.startswith(prefix) for o in owners.get(pid, ())))


def _uncalled(scope: ScopeTracker) -> tuple[str, ...]:
    """Modules that never ran, neither themselves nor any module below them, under any of their names (listed by
    their first name)."""
    calls, canonical = scope.calls, scope.canonical
    ran = set(calls)
    if canonical:
        ran.update([canonical[n] for n in calls if n in canonical])
    for called in list(ran):  # and all above them: each climbs to the first one in (which climbs on its own)
        above = called.rpartition(".")[0]
        while above and above not in ran:
            ran.add(above)
            above = above.rpartition(".")[0]
    return tuple([n for n in scope.names.values() if n and n not in ran])


def build_report(ran: Ran, device: torch.device, mode: str) -> CostReport:
    """The CostReport of a run (``device`` and ``mode`` as the user asked for them)."""
    model, scope, ops = ran.model, ran.recording.scope, ran.recording.ops
    trace = ran.recording.memory.trace() if ran.recording.memory is not None else None
    tree = _module_tree(model, scope, ops, trace)
    root = tree.root
    inputs: ShapeTree = spec_of((*ran.args, *ran.kwargs.values())) if ran.kwargs else spec_of(ran.args)
    dtype = floating_dtype(model)
    phases = _phases(ops) if mode == "train" else ()
    return CostReport(
        model_type=type(model).__name__, root=root,
        params=tree.params, trainable_params=tree.trainable_params, buffers=tree.buffers, macs=root.macs,
        flops=root.flops,
        input_shape=inputs, input_bytes=tensor_bytes((ran.args, list(ran.kwargs.values()))),
        param_bytes=tree.param_bytes, buffer_bytes=tree.buffer_bytes, activation_bytes=tree.activation_bytes,
        ops=ops.totals(), uncounted=ops.uncounted_totals(), free_ops=ops.free_totals(),
        enclosed_ops=ops.enclosed_totals(), formula_errors=tuple(sorted(ops.formula_errors.items())),
        uncalled=_uncalled(scope),
        device=str(device), dtype=str(dtype).removeprefix("torch.") if dtype is not None else "none", mode=mode,
        torch_version=torch.__version__, torchcost_version=__version__,
        memory=_memory_report(trace, ran) if trace is not None else None,
        phases=phases, step_macs=sum(p.macs for p in phases) if phases else root.macs,
        step_flops=sum(p.flops for p in phases) if phases else root.flops, tokens=_tokens(inputs),
        collectives=_collectives(ops) if ran.parallel is not None else (), parallel=ran.parallel,
    )


_PHASE_ORDER = {name: i for i, name in enumerate(STEP_PHASES)}


def _collectives(ops: OpCollector) -> tuple[CollectiveCount, ...]:
    """The run's collectives, in phase order, then by payload (largest first) and name."""
    counts = [CollectiveCount(op, kind, calls, nbytes, size, phase)
              for (op, kind, size, phase), (calls, nbytes) in ops.comm.items()]
    return tuple(sorted(counts, key=lambda c: (_PHASE_ORDER.get(c.phase, 9), -c.bytes, c.op, c.group_size)))


_INTEGER = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _tokens(inputs: ShapeTree) -> int:
    """The tokens a model is fed: the element count of its first input (positional ones first, then keyword ones;
    None skipped) when that is an integer tensor (input_ids); 0 when it is not."""
    first = first_spec(inputs)
    if first is None or first.dtype not in _INTEGER:
        return 0
    return math.prod(first.shape)


def _phases(ops: OpCollector) -> tuple[PhaseCount, ...]:
    """A training step's phase counts, in order."""
    phases = []
    for name in STEP_PHASES:
        counted, uncounted = ops.phase_totals(name)
        into, weight = ops.phase_grads(name)
        phases.append(PhaseCount(name, sum(o.macs for o in counted), sum(o.flops for o in counted), counted,
                                 uncounted, into, weight, sum(o.bytes for o in counted)))
    return tuple(phases)


def _memory_report(trace: MemoryTrace, ran: Ran) -> MemoryReport:
    i = trace.peak_index
    return MemoryReport(
        mode=ran.options.mode,
        peak_bytes=trace.peak_bytes,
        peak_phase=trace.phases[i] if i >= 0 else "",
        peak_op=trace.ops[i] if i >= 0 else "",
        peak_module=trace.modules[i] if i >= 0 else "",
        peak_index=i,
        at_peak=MemoryBreakdown(**trace.breakdown),
        start_bytes=trace.start_bytes,
        end_bytes=trace.end_bytes,
        gradient_bytes=ran.gradient_bytes,
        optimizer_state_bytes=ran.optimizer_state_bytes,
        optimizer=ran.optimizer,
        loss=ran.loss,
        amp=ran.options.amp or "",
        target=ran.options.target,
        method=ran.method,
        round_to=ran.options.round_to,
        measured_peak_bytes=ran.measured.peak(trace.start_bytes), measured_by=ran.measured.by,
        host_bytes=trace.host_bytes,
        timeline=MemoryTimeline(trace.ops, trace.modules, trace.phases, trace.alive),
    )


