"""Shape trees: the shapes and dtypes of whatever a module takes or returns, tensors nested in tuples, lists, dicts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import torch

__all__ = ["ShapeTree", "TensorSpec", "describe", "map_tensors", "spec_of", "tensor_bytes", "tensors_in"]


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str

    def __str__(self) -> str:
        return "[" + ", ".join(str(s) for s in self.shape) + "]"


ShapeTree = Union[TensorSpec, tuple["ShapeTree", ...], dict[str, "ShapeTree"], None]


_DTYPE_NAMES: dict[torch.dtype, str] = {}


def _dtype_name(dtype: torch.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


# These run in the module hooks of every analysed forward: the cheap checks first (a Mapping isinstance goes through
# the ABC machinery, so lists and tuples, which are never Mappings, are tested before it).
def spec_of(obj: Any) -> ShapeTree:
    if isinstance(obj, torch.Tensor):
        return TensorSpec(tuple(map(int, obj.shape)), _dtype_name(obj.dtype))
    if isinstance(obj, (list, tuple)):
        return tuple(spec_of(v) for v in obj)
    if isinstance(obj, Mapping):
        return {str(k): spec_of(v) for k, v in obj.items()}
    return None


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """Every tensor in ``obj`` (nested in tuples, lists, dicts), in order. On the hot path: called for each op."""
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
    return sum(t.numel() * t.element_size() for t in tensors_in(obj))


def describe(tree: ShapeTree, limit: int = 3) -> str:
    """Short text for tables and messages: '[1, 3, 224, 224]', '[1, 5] [1, 5]', '{logits: [1, 128, 50257], ...}'."""
    if tree is None:
        return "-"
    if isinstance(tree, TensorSpec):
        return str(tree)
    if isinstance(tree, dict):
        shown = [f"{k}: {describe(v, limit)}" for k, v in list(tree.items())[:limit] if v is not None]
        more = ", ..." if len(tree) > limit else ""
        return "{" + ", ".join(shown) + more + "}"
    parts = [describe(v, limit) for v in tree[:limit] if v is not None]
    more = " ..." if len(tree) > limit else ""
    return " ".join(parts) + more if parts else "-"
