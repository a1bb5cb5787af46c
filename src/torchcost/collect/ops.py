"""The op collector: one dispatch mode that sees every aten op that runs, prices it with the formula registry and
attributes it to the module scope it ran in; and a function mode that catches the composite ops whose lowering
depends on the backend (scaled dot-product attention, RNNs), so they are priced as a whole and identically on CPU,
CUDA and meta.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from torchcost.collect.scope import ScopeTracker
from torchcost.formulas.registry import Cost, Formula, FormulaRegistry, OpCall, is_free, op_key

__all__ = ["COMPOSITES", "OpCollector", "OpStat"]

_F = torch._C._VariableFunctions
# function object -> (aten op key, the schema its arguments bind to)
COMPOSITES: dict[Callable[..., Any], tuple[str, Any]] = {
    torch._C._nn.scaled_dot_product_attention: (
        "aten::scaled_dot_product_attention", torch.ops.aten.scaled_dot_product_attention.default._schema),
    _F.lstm: ("aten::lstm", None),
    _F.gru: ("aten::gru", None),
    _F.rnn_tanh: ("aten::rnn_tanh", None),
    _F.rnn_relu: ("aten::rnn_relu", None),
    _F.lstm_cell: ("aten::lstm_cell", None),
    _F.gru_cell: ("aten::gru_cell", None),
    _F.rnn_tanh_cell: ("aten::rnn_tanh_cell", None),
    _F.rnn_relu_cell: ("aten::rnn_relu_cell", None),
}


@dataclass
class OpStat:
    calls: int = 0
    macs: int = 0
    other_flops: int = 0

    def add(self, cost: Cost) -> None:
        self.calls += 1
        self.macs += cost.macs
        self.other_flops += cost.other_flops


@dataclass
class OpCollector:
    registry: FormulaRegistry
    scope: ScopeTracker
    counted: dict[str, dict[str, OpStat]] = field(default_factory=dict)  # module -> op -> stat
    uncounted: dict[str, dict[str, int]] = field(default_factory=dict)  # module -> op -> calls
    free: dict[str, int] = field(default_factory=dict)
    enclosed: dict[str, int] = field(default_factory=dict)
    formula_errors: dict[str, str] = field(default_factory=dict)
    _suppressed: int = 0
    _cache: dict[Any, tuple[str, Formula | None, bool]] = field(default_factory=dict)

    def _lookup(self, func: torch._ops.OpOverload) -> tuple[str, Formula | None, bool]:
        hit = self._cache.get(func)
        if hit is None:
            key = op_key(func)
            hit = (key, self.registry.get(key), is_free(func, key))
            self._cache[func] = hit
        return hit

    def on_aten(self, func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        key, formula, free = self._lookup(func)
        if self._suppressed:
            self.enclosed[key] = self.enclosed.get(key, 0) + 1
            return
        if formula is not None:
            self._price(key, formula, OpCall(key, args, kwargs, out, func._schema))
        elif free or not _has_floating(args, kwargs, out):
            self.free[key] = self.free.get(key, 0) + 1
        else:
            per_module = self.uncounted.setdefault(self.scope.current, {})
            per_module[key] = per_module.get(key, 0) + 1

    def on_composite(self, key: str, call: OpCall) -> None:
        formula = self.registry.get(key)
        if formula is None:  # a user removed it through overrides: report, never drop
            per_module = self.uncounted.setdefault(self.scope.current, {})
            per_module[key] = per_module.get(key, 0) + 1
            return
        self._price(key, formula, call)

    def _price(self, key: str, formula: Formula, call: OpCall) -> None:
        try:
            cost = formula(call)
        except Exception as exc:  # a formula that cannot price this call: report it as uncounted, with why
            self.formula_errors.setdefault(key, f"{type(exc).__name__}: {exc}")
            per_module = self.uncounted.setdefault(self.scope.current, {})
            per_module[key] = per_module.get(key, 0) + 1
            return
        if not isinstance(cost, Cost):
            from torchcost.errors import FormulaError

            raise FormulaError(f"the formula for {key} returned {cost!r}; a formula must return torchcost.Cost")
        self.counted.setdefault(self.scope.current, {}).setdefault(key, OpStat()).add(cost)


def _has_floating(*objs: Any) -> bool:
    for obj in objs:
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() or obj.is_complex():
                return True
        elif isinstance(obj, (list, tuple)):
            if _has_floating(*obj):
                return True
        elif isinstance(obj, dict):
            if _has_floating(*obj.values()):
                return True
    return False


class DispatchCollector(TorchDispatchMode):
    """Sees every aten op below autograd and hands it to the collector."""

    def __init__(self, collector: OpCollector) -> None:
        super().__init__()
        self.collector = collector

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.collector.on_aten(func, args, kwargs, out)
        return out


class CompositeCatcher(TorchFunctionMode):
    """Prices the composite ops in COMPOSITES as a whole; the aten ops they lower to are marked enclosed."""

    def __init__(self, collector: OpCollector) -> None:
        super().__init__()
        self.collector = collector

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        entry = COMPOSITES.get(func)
        if entry is None or self.collector._suppressed:
            return func(*args, **kwargs)
        self.collector._suppressed += 1
        try:
            out = func(*args, **kwargs)
        finally:
            self.collector._suppressed -= 1
        key, schema = entry
        self.collector.on_composite(key, OpCall(key, tuple(args), kwargs, out, schema))
        return out
