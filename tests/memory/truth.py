"""The independent oracle for memory: the CPU allocator itself, as torch.profiler(profile_memory=True) records it.

Every CPU allocation and free during the profiled call is an event with its size; the running maximum of their sum is
the peak the call added on top of what was alive before it (parameters, buffers, inputs, optimizer state), which the
caller adds from the storages it holds. torchcost is not imported here.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

__all__ = ["alloc_events", "cpu_peak", "eval_truth", "first_float", "storage_bytes", "tensors_in", "train_truth"]


def alloc_events(prof: Any) -> list[tuple[int, int, int]]:
    """(time, signed size, pointer) of every allocation (+) and free (-) ``prof`` recorded, in time order (a stable
    sort keeps the recorded order of same-time events)."""
    events: list[tuple[int, int, int]] = []

    def walk(ev: Any) -> None:
        if ev.tag == _EventType.Allocation:
            events.append((ev.start_time_ns, ev.extra_fields.alloc_size, ev.extra_fields.ptr))
        for child in ev.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    events.sort(key=lambda e: e[0])
    return events


def cpu_peak(fn: Callable[[], Any]) -> tuple[int, int]:
    """(peak, end): the most bytes the call had allocated at once beyond what was alive before it, and what it left."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    mine: set[int] = set()
    for _, size, ptr in alloc_events(prof):
        if size < 0 and ptr not in mine:
            continue  # made before the call (an unrelated object the garbage collector frees now): not the call's
        if size > 0:
            mine.add(ptr)
        else:
            mine.discard(ptr)
        current += size
        peak = max(peak, current)
    return peak, current


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a tied weight once, views nothing extra)."""
    seen: dict[int, int] = {}
    for t in tensors:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def _model_tensors(model: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """Every tensor in nested tuples, lists and dicts of inputs."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return [t for v in values for t in tensors_in(v)]


def first_float(obj: Any) -> torch.Tensor | None:
    """The first floating tensor of a nested output, depth first (a Hugging Face output is a dict: its logits)."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.is_floating_point() else None
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    for v in values:
        t = first_float(v)
        if t is not None:
            return t
    return None


def _autocast(amp: torch.dtype | None) -> Any:
    return torch.autocast("cpu", dtype=amp) if amp is not None else torch.autocast("cpu", enabled=False)


def eval_truth(model: nn.Module, *inputs: Any, kwargs: dict[str, Any] | None = None,
               amp: torch.dtype | None = None) -> int:
    """Peak bytes alive during ``model(*inputs, **kwargs)`` in eval mode under no_grad (and CPU autocast to ``amp``
    when given), parameters, buffers and inputs included."""
    kwargs = kwargs or {}
    model.eval()
    base = storage_bytes([*_model_tensors(model), *tensors_in(inputs), *tensors_in(kwargs)])
    # no amp: leave autocast as the caller set it (a caller may run the whole measurement under autocast)
    autocast = torch.autocast("cpu", dtype=amp) if amp is not None else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        peak, _ = cpu_peak(lambda: model(*inputs, **kwargs))
    return base + peak


def _default_loss(out: Any) -> torch.Tensor:
    t = out if isinstance(out, torch.Tensor) else next(v for v in (out.values() if isinstance(out, dict) else out)
                                                       if isinstance(v, torch.Tensor))
    return t.float().pow(2).mean()


def train_truth(
    model: nn.Module,
    *inputs: Any,
    make_optimizer: Callable[[Any], torch.optim.Optimizer],
    loss_fn: Callable[[Any], torch.Tensor] = _default_loss,
    amp: torch.dtype | None = None,
    kwargs: dict[str, Any] | None = None,
) -> int:
    """Peak bytes alive during a steady-state training step on a copy of ``model``: one step first (so the optimizer
    state exists), gradients set to None, then forward, loss, backward and step profiled, with the output and the
    loss referenced until the step ends."""
    kwargs = kwargs or {}
    model = copy.deepcopy(model).train()
    opt = make_optimizer(model.parameters())

    def step() -> None:
        with _autocast(amp):
            out = model(*inputs, **kwargs)
            loss = loss_fn(out)
        loss.backward()
        opt.step()

    step()
    opt.zero_grad(set_to_none=True)
    state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    base = storage_bytes([*_model_tensors(model), *tensors_in(inputs), *tensors_in(kwargs), *state])
    peak, _ = cpu_peak(step)
    return base + peak
