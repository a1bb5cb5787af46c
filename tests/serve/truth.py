"""The oracle for serving memory: the CPU allocator, as torch.profiler(profile_memory=True) records it, over a whole
generation (prefill, then decode steps) in ONE profiler session.

One session, because the profiler drops the frees of blocks allocated before it started: a decode step frees the
cache it replaces (``DynamicLayer.update`` concatenates the old keys with the new token's and drops the old tensor),
and those frees must be seen. Each step runs inside a ``record_function`` marker; the bytes the session's own
allocations hold just before a step starts, plus the running maximum within it, is the step's peak above what was
alive before the session (parameters, buffers, the inputs made beforehand), which the caller adds. torchcost is not
imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile, record_function

__all__ = ["cache_state_tensors", "distinct_storage_bytes", "session_peaks"]


def _walk(prof: Any) -> tuple[list[tuple[int, int, int]], dict[str, tuple[int, int]]]:
    """Allocation events (time, signed size, pointer) in time order, and the marker spans by name."""
    events: list[tuple[int, int, int]] = []
    spans: dict[str, tuple[int, int]] = {}

    def walk(ev: Any) -> None:
        if ev.tag == _EventType.Allocation:
            events.append((ev.start_time_ns, ev.extra_fields.alloc_size, ev.extra_fields.ptr))
        elif ev.name.startswith("serve_step_"):
            spans[ev.name] = (ev.start_time_ns, ev.end_time_ns)
        for child in ev.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    events.sort(key=lambda e: e[0])
    return events, spans


def session_peaks(steps: Sequence[Callable[[], Any]]) -> list[int]:
    """Run ``steps`` in order under one profiler session; for each, the most bytes the session's allocations held at
    once while it ran (those made by earlier steps and still alive included)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for i, step in enumerate(steps):
            with record_function(f"serve_step_{i}"):
                step()
    events, spans = _walk(prof)
    peaks = []
    for i in range(len(steps)):
        start, end = spans[f"serve_step_{i}"]
        current = peak = 0
        mine: set[int] = set()
        for time, size, ptr in events:
            if time > end:
                break
            if size < 0 and ptr not in mine:
                continue  # a block from before the session: not the session's
            if size > 0:
                mine.add(ptr)
            else:
                mine.discard(ptr)
            current += size
            if time >= start:
                peak = max(peak, current)
        peaks.append(peak)
    return peaks


def cache_state_tensors(cache: Any) -> list[torch.Tensor]:
    """The state tensors a transformers cache object holds: every tensor in a public attribute of each of its layers
    (keys, values; a linear-attention layer's convolution and recurrent states, which it keeps in dicts)."""
    found: list[torch.Tensor] = []

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    for layer in getattr(cache, "layers", ()):
        for name, value in vars(layer).items():
            if not name.startswith("_"):
                walk(value)
    return found


def distinct_storage_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a view counts its whole storage, once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        s = t.untyped_storage()
        seen[s.data_ptr() if s.device.type != "meta" else id(s)] = s.nbytes()
    return sum(seen.values())
