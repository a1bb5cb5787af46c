"""Report values for what a module takes or returns: a tensor's shape and dtype (:class:`TensorSpec`), nested in
tuples and dicts (:data:`ShapeTree`), and their short text (:func:`describe`). Pure data: no torch import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = ["ShapeTree", "TensorSpec", "describe", "first_spec"]


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's shape and dtype. ``kind`` names a structure shown as this one tensor ("PackedSequence": the
    spec is of its ``data``); "" for a plain tensor."""

    shape: tuple[int, ...]
    dtype: str
    kind: str = ""

    def __str__(self) -> str:
        return self.kind + "[" + ", ".join(str(s) for s in self.shape) + "]"


ShapeTree = Union[TensorSpec, tuple["ShapeTree", ...], dict[str, "ShapeTree"], None]


def describe(tree: ShapeTree, limit: int = 3) -> str:
    """Short text for tables and messages: '[1, 3, 224, 224]', '[1, 5] [1, 5]', '{logits: [1, 128, 50257], ...}',
    'PackedSequence[12, 8]'."""
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


def first_spec(tree: ShapeTree) -> TensorSpec | None:
    """The first tensor of a shape tree: positional entries before keyword ones, None entries skipped."""
    first = tree
    while isinstance(first, (tuple, dict)):
        leaves = [v for v in (first.values() if isinstance(first, dict) else first) if v is not None]
        if not leaves:
            return None
        first = leaves[0]
    return first if isinstance(first, TensorSpec) else None
