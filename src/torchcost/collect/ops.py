"""The op collector: one dispatch mode that sees every aten op that runs, prices it with the formula registry and
attributes it to the module scope it ran in; and a function mode that catches the composite ops whose lowering
depends on the backend (scaled dot-product attention, RNNs), so they are priced as a whole and identically on CPU,
CUDA and meta.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from torchcost.collect.scope import ScopeTracker

if TYPE_CHECKING:
    from torchcost.collect.memory import MemoryTracker
from torchcost.formulas.registry import Cost, Formula, FormulaRegistry, OpCall, is_free, op_key
from torchcost.trees import any_tensor, is_floating

__all__ = ["COMPOSITES", "OpCollector", "OpStat"]

_F = torch._C._VariableFunctions
_DEVICE = torch.ops.prim.device.default
# torch.overrides.redispatch_function's primitive (newer torch): call a function past one __torch_function__ hop
_REDISPATCH: Callable[..., Any] | None = getattr(torch._C, "_skip_one_hop_torch_function", None)
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
    active: bool = True  # off outside the forward (loss, backward, optimizer of a training step): not counted
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
        if not self.active:
            return
        key, formula, free = self._lookup(func)
        if self._suppressed:
            self.enclosed[key] = self.enclosed.get(key, 0) + 1
            return
        if formula is not None:
            self._price(key, formula, OpCall(key, args, kwargs, out, func._schema))
        elif free or not any_tensor((args, kwargs, out), is_floating):
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
        if cost.macs == 0 and cost.other_flops == 0 and not any_tensor((call.args, call.kwargs, call.out), is_floating):
            self.free[key] = self.free.get(key, 0) + 1  # integer/bool arithmetic: free, listed with the free ops
            return
        current = self.scope.current
        stats = self.counted.get(current)
        if stats is None:
            stats = self.counted[current] = {}
        stat = stats.get(key)
        if stat is None:
            stat = stats[key] = OpStat()
        stat.add(cost)


class DispatchCollector(TorchDispatchMode):
    """Sees every aten op below autograd and hands it to the collector."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in torch._disable_dynamo, whose first call imports torch._dynamo
        # (about 5 s). This handler compiles nothing, so the wrapper buys nothing and costs every process 5 s.
        return False

    def __init__(self, collector: OpCollector, memory: MemoryTracker | None = None) -> None:
        super().__init__()
        self.collector = collector
        self.memory = memory

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is _DEVICE:  # fake tensors ask their device through the dispatcher: not an op that ran
            return out
        self.collector.on_aten(func, args, kwargs, out)
        if self.memory is not None:
            self.memory.on_op(func, args, kwargs, out)
        return out


def _reenter(func: Any) -> bool:
    return inspect.isfunction(func) and getattr(func, "__module__", None) == "torch.nn.functional"


class CompositeCatcher(TorchFunctionMode):
    """Prices the composite ops in COMPOSITES as a whole; the aten ops they lower to are marked enclosed."""

    def __init__(self, collector: OpCollector) -> None:
        super().__init__()
        self.collector = collector
        self._inside: set[Any] = set()
        self._plain: set[Any] = set()  # functions seen to be neither composites nor re-entered: passed straight on

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in self._plain:  # the hot path: nearly every torch function a forward calls
            return func(*args, **kwargs) if kwargs else func(*args)
        kwargs = kwargs or {}
        entry = COMPOSITES.get(func)
        if entry is None and not _reenter(func):
            self._plain.add(func)
            return func(*args, **kwargs)
        if entry is not None and not self.collector.active:
            return func(*args, **kwargs)
        if entry is None or self.collector._suppressed:
            if self.collector._suppressed or not _reenter(func) or func in self._inside:
                return func(*args, **kwargs)
            # A Python-level function of torch.nn.functional (multi_head_attention_forward, ...). torch pops this
            # mode while it runs, so composites it calls inside (the F.scaled_dot_product_attention in MHA) would
            # reach the dispatcher as whatever kernel the device picks: one fused op on CPU/CUDA, the math
            # decomposition on meta. Run its body with the mode back on, so they are caught and priced the same
            # everywhere; a function already being re-entered is called plainly, so nothing can recurse.
            if _REDISPATCH is not None:
                self._inside.add(func)
                try:
                    with self:
                        return _REDISPATCH(func, types, args, kwargs)
                finally:
                    self._inside.discard(func)
            if func is F.multi_head_attention_forward:  # torch without redispatch: pin the math kernel instead
                with sdpa_kernel(SDPBackend.MATH):
                    return func(*args, **kwargs)
            return func(*args, **kwargs)
        self.collector._suppressed += 1
        try:
            out = func(*args, **kwargs)
        finally:
            self.collector._suppressed -= 1
        key, schema = entry
        self.collector.on_composite(key, OpCall(key, tuple(args), kwargs, out, schema))
        return out
