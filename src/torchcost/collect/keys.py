"""Numbers for calls' metadata: the keys the caches of collect/ are looked up by.

A cache of something worked out from a call's metadata alone (a workspace entry's bytes, a kernel-memory probe, a
planned leaf call's price) is keyed by the call's tensors' shapes, strides, dtypes, devices and grad flags and its
other arguments, never their values. Python would hash such a nested tuple again at every lookup, so each one seen
is given a small int once (:func:`numbered`, :func:`metadata_key`) and the caches hold that. Only torchcost's own
functions (:func:`ours`) are taken to read nothing but the metadata.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

__all__ = ["LEAVES", "key_of", "metadata_key", "numbered", "ours", "tensor_key"]

# argument types taken as they are (scalars and torch's enum-like values)
LEAVES = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format})

_INTS = frozenset({int})


def tensor_key(t: torch.Tensor, kind: type, seen: dict[int, int]) -> tuple[Any, ...]:
    """A tensor's part of a call's key: its shape, strides, storage offset, dtype, device, layout, grad flag and type
    (``kind``), and the position of its first appearance in the call (``seen``: id() -> position)."""
    return (t.shape, t.stride(), t.storage_offset(), t.dtype, t.device, t.layout, t.requires_grad, kind,
            seen.setdefault(id(t), len(seen)))


def ours(fn: object, package: str) -> bool:
    """Whether ``fn`` is one of torchcost's own, defined in ``package``: a function of a call's metadata alone, whose
    answer a cache keyed by the metadata may keep (a user's may read more, or count its calls)."""
    return getattr(fn, "__module__", "").startswith(package)


def key_of(values: Any, seen: dict[int, int], parts: list[Any]) -> None:
    """Append the metadata of ``values`` (a tuple or list of an op's arguments) to ``parts``: each tensor's shape,
    strides, storage offset, dtype, device, layout, grad flag and type, and the position of its first appearance in
    the call (``x * x`` is not ``x * y``); each scalar with its type (True and 1 apart); lists and tuples item by
    item (a list of ints at once). Raises TypeError for anything else (an object of the user's, a symbolic size)."""
    for v in values:
        kind = type(v)
        if kind in LEAVES:
            parts.append((kind, v))
        elif isinstance(v, torch.Tensor):
            parts.append(tensor_key(v, kind, seen))
        elif kind is list or kind is tuple:
            if _INTS.issuperset(map(type, v)):  # int[] arguments (sizes, strides, padding): the common case
                parts.append((kind, *v))
            else:
                inner: list[Any] = [kind]
                key_of(v, seen, inner)
                parts.append(tuple(inner))
        else:
            raise TypeError(kind.__name__)


# metadata keys seen -> their number: the caches keyed by a call's metadata hold this small int, not the nested
# tuple, which Python would hash again at every lookup; numbers are never reused, so clearing this table leaves
# those caches with entries nothing can hit any more (each cache has its own bound)
_KEYS: dict[tuple[Any, ...], int] = {}
_KEYS_MAX = 1 << 16
_NUMBERS = itertools.count()


def metadata_key(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int | None:
    """The number of one call's metadata (:func:`key_of`: the tensors' metadata, never their values): calls with
    the same number are alike for everything a built-in workspace entry and a kernel-memory probe read of them; None
    when some argument cannot be keyed (a nested or sparse tensor has no strides, a symbolic size does not hash).
    Read past the function modes."""
    seen: dict[int, int] = {}
    parts: list[Any] = []
    try:
        with torch._C.DisableTorchFunction():
            key_of(args, seen, parts)
            if kwargs:
                parts.append(tuple(kwargs))
                key_of(tuple(kwargs.values()), seen, parts)
            key_of((out,), seen, parts)
        return numbered(tuple(parts))
    except (TypeError, RuntimeError, NotImplementedError):
        return None


def numbered(key: tuple[Any, ...]) -> int:
    """The number of a metadata key (a new one the first time it is seen)."""
    number = _KEYS.get(key)
    if number is None:
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        number = _KEYS[key] = next(_NUMBERS)
    return number
