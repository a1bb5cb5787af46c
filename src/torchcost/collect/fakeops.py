"""Ops of a fake twin answered from metadata, without a trip through the fake tensor mode.

A training step on a CPU or CUDA model runs on fake tensors (run/plan.py), and every op the collectors' dispatch
mode passes on goes through ``FakeTensorMode``: about 85 us an op in torch 2.14 (its cache key alone is a third of
that), half of a training step's analysis. Some ops have an answer known without it, and the dispatch mode
(collect/ops.py) asks :class:`FakeShortcuts` first:

* ``prim.device``, which a fake tensor sends through the dispatcher whenever C++ asks its device (the autograd
  engine, every call): the tensor's ``fake_device``, as the fake mode's own handler answers.
* ``_local_scalar_dense`` (``.item()``) of a fake tensor that carries its value (a CPU step counter of an optimizer,
  made from a Python number): the value, as the fake mode computes it on the constant.
* An in-place pointwise op on fake tensors that all carry their values, its other arguments numbers (``step += 1``
  on an optimizer's step counter): the op run on the values, and its first argument returned, as the fake mode does.
* An in-place pointwise op (``param.mul_(...)``, ``exp_avg.lerp_(...)``, ``relu_``): its output is its first
  argument, unchanged in metadata. It is answered so only where the fake mode would accept the call and do nothing
  else:
  - a call of the same op with the same dtypes, devices and kinds of argument has run through the fake mode once
    and succeeded (the op's own rules on dtypes and devices are the meta kernel's, learned, not copied);
  - the written tensor is a fake tensor of no constant value (the fake mode updates constants), dense and
    contiguous (no internal overlap);
  - every tensor argument is a dense (strided) fake tensor of the same mode that broadcasts to the written tensor's
    shape without changing it and is either that tensor or on another storage (no partial overlap);
  - the other arguments are Python numbers (the schema allows only tensors and numbers).
  The version counter and autograd's view bookkeeping are done above the dispatch mode, so they are unchanged.
* A view op with its own kernel (``t``, ``detach``, ``view``, ``expand``, ``transpose``, ...; autograd's backward
  makes several per layer) of a fake tensor of no constant value, its other arguments plain integers: the op's meta
  kernel run on the tensor and the result wrapped on the tensor's device, the fake mode's own steps without its
  cache key (a kernel that refuses the arguments raises as it does under the fake mode).

Everything else, and every call that misses a condition, runs through the fake mode as before. The collectors see
the same op with the same arguments and output either way.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["MISS", "FakeShortcuts"]

MISS: Any = object()  # FakeShortcuts.answer: no answer, run the op

_DEVICE = torch.ops.prim.device.default
_ITEM = torch.ops.aten._local_scalar_dense.default
_NUMBERS = frozenset({bool, int, float})
_STRIDED = torch.strided
# what FakeShortcuts knows of an op (by id()): not one of the three kinds, or which kind
_OTHER, _KIND_DEVICE, _KIND_ITEM, _KIND_INPLACE, _KIND_VIEW = range(5)
_VIEW_ARGUMENTS = frozenset({"int", "SymInt", "List[int]", "List[SymInt]", "Optional[int]", "Optional[SymInt]", "bool"})


def _is_inplace_pointwise(func: Any) -> bool:
    """A pointwise op that writes its first argument alone and returns it, whose arguments are tensors and numbers
    (no optional ones, no lists, no strings), drawing no random numbers."""
    tags = getattr(func, "tags", ())
    schema = getattr(func, "_schema", None)
    if schema is None or torch.Tag.pointwise not in tags or torch.Tag.nondeterministic_seeded in tags:
        return False
    arguments, returns = schema.arguments, schema.returns
    if not arguments or len(returns) != 1:
        return False
    first, out = arguments[0].alias_info, returns[0].alias_info
    if first is None or not first.is_write or out is None or not out.is_write:
        return False
    return all(str(a.type) in ("Tensor", "number") for a in arguments) and \
        all(a.alias_info is None for a in arguments[1:])


def _is_plain_view(func: Any) -> bool:
    """A view op with its own kernel (not one that decomposes, which may or may not alias), one tensor in and one out,
    its other arguments integers, lists of them, or flags."""
    schema = getattr(func, "_schema", None)
    if schema is None or not getattr(func, "is_view", False) or torch.Tag.inplace_view in func.tags:
        return False
    arguments, returns = schema.arguments, schema.returns
    if not arguments or str(arguments[0].type) != "Tensor" or len(returns) != 1 or str(returns[0].type) != "Tensor":
        return False
    if not all(str(a.type) in _VIEW_ARGUMENTS for a in arguments[1:]):
        return False
    return not torch._C._dispatch_has_kernel_for_dispatch_key(func.name(),
                                                             torch._C.DispatchKey.CompositeImplicitAutograd)


_INT_LISTS = frozenset({list, tuple})


def _plain_values(values: Any) -> bool:
    """Whether a view op's other arguments are plain Python ints, flags, None, or lists of ints (no symbolic sizes,
    no dtypes)."""
    for v in values:
        kind = type(v)
        if kind is int or kind is bool or v is None:
            continue
        if kind not in _INT_LISTS or not all(type(i) is int for i in v):
            return False
    return True


class FakeShortcuts:
    """Answers the ops above for one run on a fake twin (:func:`answer`); learns, per op and kinds of argument, which
    calls the fake mode accepts (:func:`learn`)."""

    def __init__(self) -> None:
        from torch._subclasses.fake_tensor import FakeTensor, in_kernel_invocation_manager

        self._fake = FakeTensor
        self._in_kernel = in_kernel_invocation_manager
        self._kinds: dict[int, int] = {}
        self._keep: list[Any] = []  # the ops keyed by id(), held so that no id is reused
        self._accepted: set[tuple[Any, ...]] = set()  # in-place calls the fake mode ran once without raising
        self.pending: tuple[Any, ...] | None = None  # the call answer() passed on, to learn once it has run

    def _kind(self, func: Any) -> int:
        kind = self._kinds.get(id(func))
        if kind is None:
            kind = (_KIND_DEVICE if func is _DEVICE else _KIND_ITEM if func is _ITEM
                    else _KIND_INPLACE if _is_inplace_pointwise(func) else _KIND_VIEW if _is_plain_view(func)
                    else _OTHER)
            self._kinds[id(func)] = kind
            self._keep.append(func)
        return kind

    def answer(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The op's output, or :data:`MISS`: run it (then call :func:`learn` when it returned)."""
        self.pending = None
        kind = self._kind(func)
        if kind == _OTHER or not args or type(args[0]) is not self._fake:
            return MISS
        first = args[0]
        if kind == _KIND_DEVICE:
            return torch.device("meta") if first.fake_mode.in_kernel_invocation else first.fake_device
        if kind == _KIND_ITEM:
            constant = first.constant
            if constant is None or len(args) != 1 or kwargs:
                return MISS
            from torch.utils._mode_utils import no_dispatch

            with no_dispatch():
                return func(constant)
        if kind == _KIND_VIEW:
            return self._view(func, first, args, kwargs)
        return self._inplace(func, first, args, kwargs)

    def _view(self, func: Any, base: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A view of a fake tensor: the op's meta kernel run on it, as the fake mode runs it, wrapped as the fake mode
        wraps outputs on the input's device (a kernel that refuses the arguments raises here as it would there)."""
        mode = base.fake_mode
        if base.constant is not None or base.layout is not _STRIDED or mode.shape_env is not None or \
                getattr(base, "dispatch_keys", None) is not None or not _plain_values(args[1:]) or \
                (kwargs and not _plain_values(kwargs.values())):
            return MISS
        with self._in_kernel(mode):
            out = func(*args, **kwargs)
        return self._fake(mode, out, base.fake_device)

    def _inplace(self, func: Any, written: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if written.constant is not None:
            return self._on_constants(func, written, args, kwargs)
        if written.layout is not _STRIDED or not written.is_contiguous():
            return MISS
        mode, shape, storage = written.fake_mode, written.shape, None
        key: list[Any] = [func, written.dtype, written.fake_device]
        for value in (*args[1:], *kwargs.values()):
            kind = type(value)
            if kind in _NUMBERS:
                key.append(kind)
                continue
            if kind is not self._fake or value.fake_mode is not mode or value.layout is not _STRIDED:
                return MISS
            if value is not written:
                if not _broadcasts_into(value.shape, shape):
                    return MISS
                if storage is None:
                    storage = written.untyped_storage()._cdata
                if value.untyped_storage()._cdata == storage:
                    return MISS
            key.append((value.dtype, value.fake_device))
        if kwargs:
            key.append(tuple(kwargs))
        call = tuple(key)
        if call in self._accepted:
            return written
        self.pending = call
        return MISS

    def _on_constants(self, func: Any, written: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """An in-place op on fake tensors that all carry their values (``step += 1`` on an optimizer's CPU step
        counter), the other arguments numbers: as the fake mode does it, the op run on the values, and the written
        tensor returned (the fake mode's converter maps the value back to it)."""
        mode = written.fake_mode
        values = []
        for value in args[1:]:
            kind = type(value)
            if kind in _NUMBERS:
                values.append(value)
            elif kind is self._fake and value.fake_mode is mode and value.constant is not None:
                values.append(value.constant)
            else:
                return MISS
        if any(type(v) not in _NUMBERS for v in kwargs.values()) or \
                mode.fake_tensor_converter._get_memo(written.constant) is not written:
            return MISS
        from torch.utils._mode_utils import no_dispatch

        with no_dispatch():
            func(written.constant, *values, **kwargs)
        return written

    def learn(self) -> None:
        """The call :func:`answer` passed on ran through the fake mode without raising: answer its like from now."""
        if self.pending is not None:
            self._accepted.add(self.pending)
            self.pending = None


def _broadcasts_into(shape: torch.Size, into: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``into`` without changing it (as an in-place op's other operands
    must)."""
    if shape == into:
        return True
    if len(shape) > len(into):
        return False
    return all(s == 1 or s == t for s, t in zip(reversed(shape), reversed(into)))
