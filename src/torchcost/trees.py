"""The one walk over nested containers of tensors (tuples, namedtuples, lists, dicts and other mappings).

Everything that looks inside a model's inputs, outputs or an op's arguments goes through here: listing the tensors,
copying them, their specs and bytes, finding the first one of a kind. Several of these run for every op of an
analysed forward, so the cheap checks come first (lists and tuples are never Mappings; a Mapping isinstance goes
through the ABC machinery).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from torchcost.shapes import ShapeTree, TensorSpec

__all__ = ["any_tensor", "first", "is_floating", "map_tensors", "spec_of", "tensor_bytes", "tensors_in"]

Predicate = Callable[[torch.Tensor], bool]

_DTYPE_NAMES: dict[torch.dtype, str] = {}


def _dtype_name(dtype: torch.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


def is_floating(t: torch.Tensor) -> bool:
    """Floating point or complex: the tensors whose arithmetic counts."""
    return t.is_floating_point() or t.is_complex()


def spec_of(obj: Any) -> ShapeTree:
    """The shapes and dtypes of every tensor in ``obj``, in its nesting; anything else is None."""
    if isinstance(obj, torch.Tensor):
        return TensorSpec(tuple(map(int, obj.shape)), _dtype_name(obj.dtype))
    if isinstance(obj, (list, tuple)):
        return tuple(spec_of(v) for v in obj)
    if isinstance(obj, Mapping):
        return {str(k): spec_of(v) for k, v in obj.items()}
    return None


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
    elif isinstance(obj, Mapping):
        for v in obj.values():
            _collect(v, out)


def first(obj: Any, predicate: Predicate | None = None) -> torch.Tensor | None:
    """The first tensor in ``obj`` (depth first, in order) for which ``predicate`` holds; None if there is none."""
    if isinstance(obj, torch.Tensor):
        return obj if predicate is None or predicate(obj) else None
    if isinstance(obj, (list, tuple)):
        values: Any = obj
    elif isinstance(obj, Mapping):
        values = obj.values()
    else:
        return None
    for v in values:
        found = first(v, predicate)
        if found is not None:
            return found
    return None


def any_tensor(obj: Any, predicate: Predicate) -> bool:
    """Whether some tensor in ``obj`` satisfies ``predicate``."""
    return first(obj, predicate) is not None


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``obj`` with every tensor in it (nested in tuples, namedtuples, lists, dicts) replaced by ``fn(tensor)``.

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
        return o

    return walk(obj)


def tensor_bytes(obj: Any) -> int:
    """Plain bytes of every tensor in ``obj`` (numel x element size; views counted as their own size)."""
    return sum(t.numel() * t.element_size() for t in tensors_in(obj))
