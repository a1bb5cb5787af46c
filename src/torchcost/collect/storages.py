"""Which storage holds a tensor's data, for every kind of tensor a run sees: a real one, a fake one (whose
``layout`` is a Python property, read here past it), a DTensor (its local shard's), or none (sparse and nested
tensors, subclasses without a storage). The memory tracker (collect/memory.py) and the run that skips kernels
(collect/unwritten.py) both follow values by storage; this module sits below both, and below the op collector
that imports the latter."""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensor

from torchcost.collect.fakeops import BASE_LAYOUT

__all__ = ["local_tensor", "storage_of"]

_STRIDED = torch.strided


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The tensor holding the data: a DTensor's local shard, any other tensor itself."""
    local = getattr(t, "_local_tensor", None) if type(t).__name__ == "DTensor" else None
    return local if isinstance(local, torch.Tensor) else t


def storage_of(t: torch.Tensor) -> torch.UntypedStorage | None:
    """The untyped storage under ``t`` (a DTensor's: its local shard's), or None where it has no strided one."""
    kind = type(t)
    if kind is FakeTensor and t.dispatch_keys is None:  # type: ignore[attr-defined]
        layout = BASE_LAYOUT(t)  # (FakeTensor.layout is a Python property: fakeops.BASE_LAYOUT)
    else:
        if kind is not torch.Tensor and kind.__name__ == "DTensor":
            t = local_tensor(t)
        layout = t.layout
    if layout is not _STRIDED or t.is_nested:  # (sparse layouts are not strided)
        return None
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # tensor subclasses without a storage
        return None
