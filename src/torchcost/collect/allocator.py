"""The CPU/CUDA allocator's own record, read from a ``torch.profiler`` session with ``profile_memory=True``: the one
reader of allocation events that the measured peak (run/execute.py) and the kernel probes (collect/probe.py) share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch._C._profiler import _ExtraFields_Allocation

__all__ = ["allocations", "running_peak"]


def allocations(roots: Iterable[Any], device_type: str) -> list[tuple[int, int]]:
    """(time, signed size) of each allocation (+) and free (-) on ``device_type`` under the profiler events
    ``roots`` (their whole subtrees), in time order, events at the same time in the tree's depth-first order. A free
    of a block allocated before the window is left out: it is not the window's memory (the cyclic garbage collector
    may free an unrelated object inside it), and counting it would lower the peak."""
    events: list[tuple[int, int, int]] = []
    stack = list(reversed(list(roots)))
    while stack:
        ev = stack.pop()
        fields = ev.extra_fields
        if isinstance(fields, _ExtraFields_Allocation) and fields.device.type == device_type:
            events.append((ev.start_time_ns, fields.alloc_size, fields.ptr))
        stack.extend(reversed(ev.children))
    events.sort(key=lambda e: e[0])
    allocated: set[int] = set()
    kept: list[tuple[int, int]] = []
    for time, size, ptr in events:
        if size > 0:
            allocated.add(ptr)
        elif ptr in allocated:
            allocated.discard(ptr)
        else:
            continue
        kept.append((time, size))
    return kept


def running_peak(events: list[tuple[int, int]]) -> int:
    """The highest running sum of (time, signed size) events taken in time order, a stable sort (0 if it never
    rises)."""
    current = peak = 0
    for _, size in sorted(events, key=lambda e: e[0]):
        current += size
        peak = max(peak, current)
    return peak
