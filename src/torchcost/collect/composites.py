"""Composite ops priced as a whole: scaled dot-product attention and the RNNs.

Their lowering to aten ops depends on the backend (one fused kernel on CPU/CUDA, the math decomposition on meta), so
they are caught one level up, as torch functions, priced by their own formula, and the aten ops they run inside are
marked "enclosed" instead of being counted again. The result is the same count on CPU, CUDA and meta.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from torchcost.collect.ops import OpCollector
from torchcost.collect.shadows import FINITE_CHECKS, MADE, Shadows
from torchcost.collect.unwritten import READS, Unwritten
from torchcost.formulas.registry import OpCall

__all__ = ["COMPOSITES", "CompositeCatcher"]

_F = torch._C._VariableFunctions
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


class _Kind(enum.Enum):
    PLAIN = "plain"  # neither: passed straight on (nearly every function a forward calls)
    COMPOSITE = "composite"  # in COMPOSITES: priced whole
    REENTER = "reenter"  # a Python function of torch.nn.functional that may call a composite: its body runs with
    # this mode back on
    READS = "reads"  # a method that reads a tensor's data past the dispatcher (collect/unwritten.py's READS)
    MADE = "made"  # a tensor made from Python data (torch.tensor): on meta, no op of the dispatcher makes it
    CHECKED = "checked"  # a check for infinities or NaNs: on meta, answered as for finite values (Shadows.checked)
    BACKWARD = "backward"  # a backward starts: the tag is told first (NodeTags.before_backward)


# the functions that run autograd's engine from Python: ``Tensor.backward`` reaches the mode, then calls
# ``torch.autograd.backward`` with the mode off
_BACKWARDS = frozenset({torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad})


class _Tag(Protocol):
    """What CompositeCatcher calls (collect/memory.py's NodeTags)."""

    def __call__(self, out: Any) -> None: ...

    def before_backward(self, roots: Any) -> None: ...



# the names under which the composites' functions are reached from Python code
_COMPOSITE_NAMES = frozenset(getattr(f, "__name__", "") for f in COMPOSITES) - {""}


def _may_call_composite(func: Callable[..., Any], seen: set[int] | None = None) -> bool:
    """Whether a Python function of torch.nn.functional names a composite in its code (its own, its nested
    functions' and lambdas', and transitively that of the torch.nn.functional functions it names). Functions that
    do not (F.relu, F.batch_norm, F.hardtanh, F.layer_norm, ...) reach no composite, so their body need not be
    re-entered: with torch's mode popped they would only run plain aten ops, which the dispatch mode counts."""
    seen = set() if seen is None else seen
    code = getattr(func, "__code__", None)
    if code is None or id(func) in seen:
        return False
    seen.add(id(func))
    names: set[str] = set()
    todo = [code]
    while todo:
        current = todo.pop()
        names.update(current.co_names)
        todo.extend(c for c in current.co_consts if inspect.iscode(c))
    if names & _COMPOSITE_NAMES:
        return True
    namespace = getattr(func, "__globals__", {})
    for name in names:
        value = namespace.get(name)
        if (inspect.isfunction(value) and getattr(value, "__module__", None) == "torch.nn.functional"
                and _may_call_composite(value, seen)):
            return True
    return False


def _classify(func: Callable[..., Any]) -> _Kind:
    if func in _BACKWARDS:
        return _Kind.BACKWARD
    if func in COMPOSITES:
        return _Kind.COMPOSITE
    if func in READS:
        return _Kind.READS
    if func in MADE:
        return _Kind.MADE
    if func in FINITE_CHECKS:
        return _Kind.CHECKED
    if (inspect.isfunction(func) and getattr(func, "__module__", None) == "torch.nn.functional"
            and _may_call_composite(func)):
        return _Kind.REENTER
    return _Kind.PLAIN


class CompositeCatcher(TorchFunctionMode):
    """Prices the composite ops in COMPOSITES as a whole; the aten ops they lower to are marked enclosed. ``tag``
    (a training step's NodeTags, collect/memory.py) is called with every torch function's output, and told when a
    backward starts: the run's one function mode does all these jobs."""

    def __init__(self, ops: OpCollector, tag: _Tag | None = None) -> None:
        super().__init__()
        self.ops = ops
        self.tag = tag
        self._kinds: dict[Callable[..., Any], _Kind] = {}
        self._inside: set[Callable[..., Any]] = set()
        self.unwritten: Unwritten | None = None  # a run that skips kernels (collect/unwritten.py), else None
        self.shadows: Shadows | None = None  # a meta run: the values it follows (collect/shadows.py), else None

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kind = self._kinds.get(func)
        if kind is None:
            kind = self._kinds[func] = _classify(func)
        if kind is _Kind.PLAIN or (self.ops.enclosed_depth and kind is not _Kind.BACKWARD):  # the hot path
            out = func(*args, **kwargs) if kwargs else func(*args)
        else:
            kwargs = kwargs or {}
            if kind is _Kind.BACKWARD:
                if self.tag is not None:
                    self.tag.before_backward((args, kwargs))
                out = func(*args, **kwargs)
            elif kind is _Kind.COMPOSITE:
                out = self._price_whole(func, args, kwargs) if self.ops.counting else func(*args, **kwargs)
            elif kind is _Kind.READS:
                if self.unwritten:
                    self.unwritten.read(func, args, kwargs)
                out = func(*args, **kwargs)
            elif kind is _Kind.MADE:
                out = func(*args, **kwargs) if self.shadows is None else self.shadows.make(func, args, kwargs)
            elif kind is _Kind.CHECKED:
                out = func(*args, **kwargs) if self.shadows is None else self.shadows.checked(func, args, kwargs)
            else:
                out = self._reenter(func, types, args, kwargs)
        if self.tag is not None:
            self.tag(out)
        return out

    def _price_whole(self, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
        with self.ops.enclosing():
            out = func(*args, **kwargs)
        key, schema = COMPOSITES[func]
        self.ops.on_composite(key, OpCall(key, tuple(args), kwargs, out, schema))
        return out

    def _reenter(self, func: Callable[..., Any], types: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        # A Python-level function of torch.nn.functional (multi_head_attention_forward, ...). torch pops this mode
        # while it runs, so composites it calls inside (the F.scaled_dot_product_attention in MHA) would reach the
        # dispatcher as whatever kernel the device picks: one fused op on CPU/CUDA, the math decomposition on meta.
        # Run its body with the mode back on, so they are caught and priced the same everywhere; a function already
        # being re-entered is called plainly, so nothing can recurse.
        if func in self._inside:
            return func(*args, **kwargs)
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
