"""The one walk over nested containers of tensors (tuples, namedtuples, lists, dicts and other mappings, dataclass
instances).

Everything that looks inside a model's inputs, outputs or an op's arguments goes through here: listing the tensors,
copying them, their specs and bytes, finding the first one of a kind. Several of these run for every op of an
analysed forward, so the cheap checks come first (lists and tuples are never Mappings; a Mapping isinstance goes
through the ABC machinery; whether a type is a dataclass is looked up once per type). A dataclass's fields are
walked like a mapping's values (its spec is a mapping by field name); a PackedSequence's spec is one entry, its
``data``'s spec marked ``kind="PackedSequence"``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.nn.utils.rnn import PackedSequence

from torchcost.shapes import ShapeTree, TensorSpec

__all__ = ["any_tensor", "first", "is_floating", "map_tensors", "matches", "op_tensors", "spec_of", "tensor_bytes",
           "tensors_in"]

Predicate = Callable[[torch.Tensor], bool]

_DTYPE_NAMES: dict[torch.dtype, str] = {}


def _dtype_name(dtype: torch.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


# the common leaves of an op's arguments: nothing inside, settled before the (slower) Mapping and dataclass checks
_SCALARS = frozenset({int, float, bool, complex, str, type(None), torch.dtype, torch.device, torch.layout,
                      torch.memory_format})
_FIELDS: dict[type, tuple[str, ...]] = {}  # a type seen -> its dataclass fields' names; () for other types


def _fields(obj: Any) -> tuple[str, ...]:
    """The field names of a dataclass instance; () for anything else (and for a dataclass class itself)."""
    kind = type(obj)
    names = _FIELDS.get(kind)
    if names is None:
        if len(_FIELDS) > 4096:  # classes made on the fly: do not keep them all alive
            _FIELDS.clear()
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(kind)) if dataclasses.is_dataclass(
            kind) else ()
    return names


def is_floating(t: torch.Tensor) -> bool:
    """Floating point or complex: the tensors whose arithmetic counts."""
    return t.is_floating_point() or t.is_complex()


_SPECS: dict[tuple[Any, torch.dtype], TensorSpec] = {}  # (shape, dtype) -> its spec: specs are immutable, so shared


def _tensor_spec(t: torch.Tensor) -> TensorSpec:
    shape, dtype = t.shape, t.dtype
    try:
        spec = _SPECS.get((shape, dtype))
    except TypeError:  # a symbolic size does not hash
        spec = None
    if spec is None:
        spec = TensorSpec(tuple(map(int, shape)), _dtype_name(dtype))
        if len(_SPECS) > 4096:
            _SPECS.clear()
        with contextlib.suppress(TypeError):
            _SPECS[(shape, dtype)] = spec
    return spec


def spec_of(obj: Any) -> ShapeTree:
    """The shapes and dtypes of every tensor in ``obj``, in its nesting; anything else is None."""
    kind = type(obj)
    if kind is torch.Tensor or isinstance(obj, torch.Tensor):
        return _tensor_spec(obj)
    if kind is tuple:  # the common case (a module's arguments), without the checks below
        return tuple(map(spec_of, obj))
    if isinstance(obj, (list, tuple)):
        if isinstance(obj, PackedSequence):
            data = obj.data
            return TensorSpec(tuple(map(int, data.shape)), _dtype_name(data.dtype), "PackedSequence")
        return tuple(spec_of(v) for v in obj)
    if isinstance(obj, Mapping):
        return {str(k): spec_of(v) for k, v in obj.items()}
    names = _fields(obj)
    return {n: spec_of(getattr(obj, n)) for n in names} if names else None


def matches(obj: Any, spec: ShapeTree) -> bool:
    """Whether ``spec_of(obj) == spec``, without building the spec where a tensor or a tuple makes that quick."""
    if isinstance(obj, torch.Tensor):
        return (type(spec) is TensorSpec and not spec.kind and obj.shape == spec.shape
                and _dtype_name(obj.dtype) == spec.dtype)
    if type(obj) is tuple and type(spec) is tuple and len(obj) == len(spec):
        for o, s in zip(obj, spec):
            if not matches(o, s):
                return False
        return True
    return spec_of(obj) == spec


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """Every tensor in ``obj``, in order. On the hot path: called for each op."""
    out: list[torch.Tensor] = []
    _collect(obj, out)
    return out


def _collect(obj: Any, out: list[torch.Tensor]) -> None:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect(v, out)
    elif type(obj) in _SCALARS:
        return
    elif isinstance(obj, Mapping):
        for v in obj.values():
            _collect(v, out)
    else:
        for n in _fields(obj):
            _collect(getattr(obj, n), out)


def op_tensors(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[torch.Tensor]:
    """``tensors_in((args, kwargs))`` for an op's arguments (on the hot path: each op's tensors for the memory
    tracker, and OpCall.inputs): the common cases (a tensor, a scalar, a flat list of
    tensors or ints) without the general walk, the rest through it; the same tensors in the same order."""
    found: list[torch.Tensor] = []
    for values in (args, kwargs.values()) if kwargs else (args,):
        for v in values:
            if isinstance(v, torch.Tensor):
                found.append(v)
                continue
            kind = type(v)
            if kind in _SCALARS:
                continue
            if kind is list or kind is tuple:  # int[] and Tensor[] arguments: one level, without the general walk
                for item in v:
                    if isinstance(item, torch.Tensor):
                        found.append(item)
                    elif type(item) not in _SCALARS:
                        found.extend(tensors_in(item))
            else:
                found.extend(tensors_in(v))
    return found


def first(obj: Any, predicate: Predicate | None = None) -> torch.Tensor | None:
    """The first tensor in ``obj`` (depth first, in order) for which ``predicate`` holds; None if there is none."""
    if isinstance(obj, torch.Tensor):
        return obj if predicate is None or predicate(obj) else None
    if isinstance(obj, (list, tuple)):
        values: Any = obj
    elif type(obj) in _SCALARS:
        return None
    elif isinstance(obj, Mapping):
        values = obj.values()
    else:
        names = _fields(obj)
        if not names:
            return None
        values = [getattr(obj, n) for n in names]
    for v in values:
        found = first(v, predicate)
        if found is not None:
            return found
    return None


def any_tensor(obj: Any, predicate: Predicate) -> bool:
    """Whether some tensor in ``obj`` satisfies ``predicate``."""
    return first(obj, predicate) is not None


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``obj`` with every tensor in it (nested in tuples, namedtuples, lists, dicts, dataclass instances) replaced by
    ``fn(tensor)``; a dataclass instance becomes a shallow copy with its fields mapped (frozen ones too).

    A tensor that appears twice is mapped once, so ``model(x, x)`` still gets one tensor twice.
    """
    memo: dict[int, Any] = {}

    def walk(o: Any) -> Any:
        if isinstance(o, torch.Tensor):
            if id(o) not in memo:
                memo[id(o)] = fn(o)
            return memo[id(o)]
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, tuple):
            items = [walk(v) for v in o]
            return type(o)(*items) if hasattr(o, "_fields") else tuple(items)
        if isinstance(o, list):
            return [walk(v) for v in o]
        names = _fields(o)
        if names:
            new = copy.copy(o)
            for n in names:
                object.__setattr__(new, n, walk(getattr(o, n)))
            return new
        return o

    return walk(obj)


def tensor_bytes(obj: Any) -> int:
    """Plain bytes of every tensor in ``obj`` (numel x element size; views counted as their own size)."""
    return sum(t.numel() * t.element_size() for t in tensors_in(obj))
