"""The report, assembled from what one run saw (a :class:`~torchcost.run.execute.Ran`): the module tree with each
module's own and rolled-up counts, parameters, shapes and memory, the op totals, and the memory record."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from torchcost._version import __version__
from torchcost.collect.memory import MemoryTrace, local_tensor
from torchcost.collect.ops import STEP_PHASES, OpCollector
from torchcost.collect.scope import ModuleCalls, ScopeTracker, module_paths
from torchcost.inputs import floating_dtype
from torchcost.report import (
    CollectiveCount,
    CostReport,
    MemoryBreakdown,
    MemoryReport,
    MemoryTimeline,
    ModuleCost,
    PhaseCount,
)
from torchcost.run.execute import Ran
from torchcost.shapes import ShapeTree, first_spec
from torchcost.trees import spec_of, tensor_bytes

__all__ = ["build_report"]

_Tensors = dict[int, torch.Tensor]


_NO_CALLS = ModuleCalls()  # (never changed: a module that never ran)


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
        self.nbytes += (local_tensor(t).numel() if type(t) is not torch.Tensor and type(t) is not nn.Parameter
                        else n) * t.element_size()

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


@dataclass
class _Tree:
    """What building the module tree needs, gathered once for the whole model. ``paths`` is every (name, module) in
    pre-order, a module held by several parents under each of its names (module_paths)."""

    scope: ScopeTracker
    ops: OpCollector
    trace: MemoryTrace | None
    paths: list[tuple[str, nn.Module]]
    owners: dict[int, set[str]]  # id(parameter) -> every module name that holds it, for parameters held by several

    @classmethod
    def of(cls, model: nn.Module, scope: ScopeTracker, ops: OpCollector, trace: MemoryTrace | None) -> _Tree:
        paths = module_paths(model)
        owners: dict[int, set[str]] = {}
        for mod_name, module in paths:
            for p in module._parameters.values():
                if p is not None:
                    owners.setdefault(id(p), set()).add(mod_name)
        # a parameter held by one module name only can never be shared outside a subtree holding it
        return cls(scope, ops, trace, paths, {k: v for k, v in owners.items() if len(v) > 1})

    def build(self) -> tuple[ModuleCost, _Sums, _Sums]:
        """The root node, with the distinct parameters and buffers of the whole tree. Children before parents
        (reversed pre-order, no recursion), each node's subtree's distinct parameters and buffers gathered from its
        children's: one pass over the tree."""
        built: dict[str, tuple[ModuleCost, _Sums, _Sums]] = {}
        for name, module in reversed(self.paths):
            params = _Sums({id(p): p for p in module._parameters.values() if p is not None})
            buffers = _Sums({id(b): b for b in module._buffers.values() if b is not None})
            children = []
            prefix = name + "." if name else ""
            for child_name in module._modules:
                entry = built.pop(prefix + child_name, None)  # None: empty, or held inside itself (already counted)
                if entry is not None:
                    children.append(entry[0])
                    params.merge(entry[1])
                    buffers.merge(entry[2])
            depth = name.count(".") + 1 if name else 0
            built[name] = self._node(name, module, depth, tuple(children), params, buffers), params, buffers
        return built[""]

    def _shared(self, name: str, params: _Tensors) -> int:
        """Parameters of this subtree that some module outside it (under any of its names) also holds."""
        if not name or not self.owners:
            return 0
        prefix = name + "."
        # walk the smaller of the two: this subtree's parameters, or the parameters held by several modules
        held = ((pid, params.get(pid)) for pid in self.owners) if len(self.owners) < len(params) else params.items()
        return sum(p.numel() for pid, p in held
                   if p is not None and any(o != name and not o.startswith(prefix) for o in self.owners.get(pid, ())))

    def _memory(self, name: str, children: tuple[ModuleCost, ...], params: _Sums,
                buffers: _Sums) -> dict[str, int]:
        if self.trace is None:
            return {}
        peak = self.trace.module_peak.get(name, 0)
        for c in children:
            if c.peak_memory > peak:
                peak = c.peak_memory
        return {
            "param_bytes": params.nbytes,
            "buffer_bytes": buffers.nbytes,
            "activation_bytes": self.trace.module_activation.get(name, 0),
            "peak_memory": peak,
        }

    def _node(self, name: str, module: nn.Module, depth: int, children: tuple[ModuleCost, ...], params: _Sums,
              buffers: _Sums) -> ModuleCost:
        ops = self.ops.module_ops(name)
        self_macs = sum(o.macs for o in ops) if ops else 0
        self_flops = sum(o.flops for o in ops) if ops else 0
        self_bytes = sum(o.bytes for o in ops) if ops else 0
        calls = self.scope.calls.get(name) or _NO_CALLS
        return ModuleCost(
            name=name, type=type(module).__name__, depth=depth,
            params=params.numel,
            trainable_params=params.trainable,
            shared_params=self._shared(name, params.tensors),
            buffers=buffers.numel,
            calls=calls.calls, input_shape=calls.input_spec, output_shape=calls.output_spec,
            output_bytes=calls.output_bytes,
            macs=self_macs + sum(c.macs for c in children), flops=self_flops + sum(c.flops for c in children),
            self_macs=self_macs, self_flops=self_flops, ops=ops, uncounted=self.ops.module_uncounted(name),
            children=children, **self._memory(name, children, params, buffers),
            shapes_differ=calls.shapes_differ, same_as=self.scope.canonical.get(name, ""),
            **self._step(name, children), **self._comm(name, children),
            bytes=self_bytes + sum(c.bytes for c in children), self_bytes=self_bytes,
        )

    def _comm(self, name: str, children: tuple[ModuleCost, ...]) -> dict[str, int]:
        """The collectives charged to this module and its children (simulated distributed runs only)."""
        if not self.ops.comm_modules:
            return {}
        calls, nbytes = self.ops.comm_modules.get(name, (0, 0))
        return {"comm_calls": calls + sum(c.comm_calls for c in children),
                "comm_bytes": nbytes + sum(c.comm_bytes for c in children)}

    def _step(self, name: str, children: tuple[ModuleCost, ...]) -> dict[str, int]:
        """The training step's later phases attributed to this module (none in eval)."""
        if not self.ops.steps:
            return {}
        back = self.ops.phase_module_ops("backward", name)
        again = self.ops.phase_module_ops("recompute", name)
        opt = self.ops.phase_module_ops("optimizer", name)
        self_macs, self_flops = sum(o.macs for o in back), sum(o.flops for o in back)
        into, weight = self.ops.phase_module_grads("backward", name)
        return {
            "self_backward_macs": self_macs, "self_backward_flops": self_flops,
            "backward_macs": self_macs + sum(c.backward_macs for c in children),
            "backward_flops": self_flops + sum(c.backward_flops for c in children),
            "recompute_macs": sum(o.macs for o in again) + sum(c.recompute_macs for c in children),
            "recompute_flops": sum(o.flops for o in again) + sum(c.recompute_flops for c in children),
            "optimizer_flops": sum(o.flops for o in opt) + sum(c.optimizer_flops for c in children),
            "input_grad_macs": into + sum(c.input_grad_macs for c in children),
            "weight_grad_macs": weight + sum(c.weight_grad_macs for c in children),
        }


def _uncalled(scope: ScopeTracker) -> tuple[str, ...]:
    """Modules that never ran, neither themselves nor any module below them, under any of their names (listed by
    their first name)."""
    ran: set[str] = set()
    for called in {*scope.calls, *(scope.canonical.get(n, n) for n in scope.calls)}:
        while called and called not in ran:  # a name and all above it (ran stays closed upwards)
            ran.add(called)
            called = called.rpartition(".")[0]
    return tuple(n for n in scope.names.values() if n and n not in ran)


def build_report(ran: Ran, device: torch.device, mode: str) -> CostReport:
    """The CostReport of a run (``device`` and ``mode`` as the user asked for them)."""
    model, scope, ops = ran.model, ran.recording.scope, ran.recording.ops
    trace = ran.recording.memory.trace() if ran.recording.memory is not None else None
    tree = _Tree.of(model, scope, ops, trace)
    root, all_params, all_buffers = tree.build()  # (the same distinct tensors as model.parameters()/.buffers())
    leaves = {n for n, m in tree.paths if not m._modules or all(c is None for c in m._modules.values())}
    inputs: ShapeTree = spec_of((*ran.args, *ran.kwargs.values())) if ran.kwargs else spec_of(ran.args)
    dtype = floating_dtype(model)
    phases = _phases(ops) if mode == "train" else ()
    return CostReport(
        model_type=type(model).__name__, root=root,
        params=all_params.numel, trainable_params=all_params.trainable,
        buffers=all_buffers.numel, macs=root.macs, flops=root.flops,
        input_shape=inputs, input_bytes=tensor_bytes((ran.args, list(ran.kwargs.values()))),
        param_bytes=all_params.nbytes, buffer_bytes=all_buffers.nbytes,
        activation_bytes=sum(c.output_bytes for n, c in scope.calls.items() if n in leaves),
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


