"""The op collector: one dispatch mode that sees every aten op that runs, prices it with the formula registry and
attributes it to the module scope it ran in.

Each op lands in one of four tallies: counted (a formula priced it), free (it moves, views or allocates data, or
does integer arithmetic only), enclosed (it ran inside a composite priced whole, collect/composites.py) or uncounted
(floating-point arithmetic with no formula: reported, never dropped). Only ops of the forward are counted; the
Recording switches ``counting`` off for the loss, backward and optimizer phases of a training step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from torchcost.collect.scope import ScopeTracker
from torchcost.errors import FormulaError
from torchcost.formulas.registry import Cost, Formula, FormulaRegistry, OpCall, is_free, op_key
from torchcost.report import OpCount
from torchcost.trees import any_tensor, is_floating

if TYPE_CHECKING:
    from torchcost.collect.memory import MemoryTracker

__all__ = ["DispatchCollector", "OpCollector", "op_counts"]

_DEVICE = torch.ops.prim.device.default


@dataclass
class _Stat:
    calls: int = 0
    macs: int = 0
    other_flops: int = 0

    def add(self, cost: Cost) -> None:
        self.calls += 1
        self.macs += cost.macs
        self.other_flops += cost.other_flops


def op_counts(stats: dict[str, _Stat]) -> tuple[OpCount, ...]:
    """Per-op tallies as report records, most FLOPs first (ties by name)."""
    counts = (OpCount(k, s.calls, s.macs, Cost(s.macs, s.other_flops).flops) for k, s in stats.items())
    return tuple(sorted(counts, key=lambda o: (-o.flops, o.op)))


def _calls(tally: dict[str, int]) -> tuple[OpCount, ...]:
    return tuple(OpCount(k, c) for k, c in sorted(tally.items()))


@dataclass
class OpCollector:
    """Prices the ops the dispatch mode hands it and tallies them per module (by state_dict name)."""

    registry: FormulaRegistry
    scope: ScopeTracker
    counted: dict[str, dict[str, _Stat]] = field(default_factory=dict)  # module -> op -> tally
    uncounted: dict[str, dict[str, int]] = field(default_factory=dict)  # module -> op -> calls
    free: dict[str, int] = field(default_factory=dict)
    enclosed: dict[str, int] = field(default_factory=dict)
    formula_errors: dict[str, str] = field(default_factory=dict)
    counting: bool = True  # set by Recording.phase: true only in the forward
    enclosed_depth: int = 0  # > 0 while a composite priced whole runs (its aten ops are enclosed)
    _cache: dict[Any, tuple[str, Formula | None, bool]] = field(default_factory=dict)

    @contextlib.contextmanager
    def enclosing(self) -> Iterator[None]:
        """While inside, the aten ops that run are tallied as enclosed by a composite, not counted."""
        self.enclosed_depth += 1
        try:
            yield
        finally:
            self.enclosed_depth -= 1

    def _lookup(self, func: torch._ops.OpOverload) -> tuple[str, Formula | None, bool]:
        hit = self._cache.get(func)
        if hit is None:
            key = op_key(func)
            hit = (key, self.registry.get(key), is_free(func, key))
            self._cache[func] = hit
        return hit

    def on_aten(self, func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if not self.counting:
            return
        key, formula, free = self._lookup(func)
        if self.enclosed_depth:
            self.enclosed[key] = self.enclosed.get(key, 0) + 1
        elif formula is not None:
            self._price(key, formula, OpCall(key, args, kwargs, out, func._schema))
        elif free or not any_tensor((args, kwargs, out), is_floating):
            self.free[key] = self.free.get(key, 0) + 1
        else:
            self.record_uncounted(key)

    def on_composite(self, key: str, call: OpCall) -> None:
        formula = self.registry.get(key)
        if formula is None:  # a user removed it through overrides: report, never drop
            self.record_uncounted(key)
        else:
            self._price(key, formula, call)

    def record_uncounted(self, key: str) -> None:
        per_module = self.uncounted.setdefault(self.scope.current, {})
        per_module[key] = per_module.get(key, 0) + 1

    def _price(self, key: str, formula: Formula, call: OpCall) -> None:
        try:
            cost = formula(call)
        except Exception as exc:  # a formula that cannot price this call: report it as uncounted, with why
            self.formula_errors.setdefault(key, f"{type(exc).__name__}: {exc}")
            self.record_uncounted(key)
            return
        if not isinstance(cost, Cost):
            raise FormulaError(f"the formula for {key} returned {cost!r}; a formula must return torchcost.Cost")
        if cost.macs == 0 and cost.other_flops == 0 and not any_tensor((call.args, call.kwargs, call.out),
                                                                       is_floating):
            self.free[key] = self.free.get(key, 0) + 1  # integer/bool arithmetic: free, listed with the free ops
            return
        current = self.scope.current
        stats = self.counted.get(current)
        if stats is None:
            stats = self.counted[current] = {}
        stat = stats.get(key)
        if stat is None:
            stat = stats[key] = _Stat()
        stat.add(cost)

    # -- results --------------------------------------------------------------------------------------------------

    def module_ops(self, name: str) -> tuple[OpCount, ...]:
        """The ops counted in module ``name``'s own forward (outside its children)."""
        return op_counts(self.counted.get(name, {}))

    def module_uncounted(self, name: str) -> tuple[OpCount, ...]:
        return _calls(self.uncounted.get(name, {}))

    def totals(self) -> tuple[OpCount, ...]:
        """Every counted op summed over the modules."""
        summed: dict[str, _Stat] = {}
        for per_module in self.counted.values():
            for key, stat in per_module.items():
                total = summed.setdefault(key, _Stat())
                total.calls += stat.calls
                total.macs += stat.macs
                total.other_flops += stat.other_flops
        return op_counts(summed)

    def uncounted_totals(self) -> tuple[OpCount, ...]:
        summed: dict[str, int] = {}
        for per_module in self.uncounted.values():
            for key, calls in per_module.items():
                summed[key] = summed.get(key, 0) + calls
        return _calls(summed)

    def free_totals(self) -> tuple[OpCount, ...]:
        return _calls(self.free)

    def enclosed_totals(self) -> tuple[OpCount, ...]:
        return _calls(self.enclosed)


class DispatchCollector(TorchDispatchMode):
    """Sees every aten op below autograd and hands it to the op collector and the memory tracker."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in torch._disable_dynamo, whose first call imports torch._dynamo
        # (about 5 s). This handler compiles nothing, so the wrapper buys nothing and costs every process 5 s.
        return False

    def __init__(self, ops: OpCollector, memory: MemoryTracker | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        self.ops = ops
        self.memory = memory

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is _DEVICE:  # fake tensors ask their device through the dispatcher: not an op that ran
            return out
        self.ops.on_aten(func, args, kwargs, out)
        if self.memory is not None:
            self.memory.on_op(func, args, kwargs, out)
        return out
