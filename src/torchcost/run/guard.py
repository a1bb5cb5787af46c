"""Leaving the model as it came in (DESIGN #6): modes, attributes, parameter and buffer objects, buffer values,
torch's MultiheadAttention fast-path flag and the RNG state are all restored on the way out, also when the forward
raises. tests/test_safety.py is the specification of this module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from torchcost.run.step import Twin

__all__ = ["guarded", "preserved", "quiet_fastpaths", "rng_forked"]


@dataclass
class _ModuleState:
    module: nn.Module
    training: bool
    attrs: frozenset[str]
    parameters: dict[str, nn.Parameter | None]
    buffers: dict[str, torch.Tensor | None]
    buffer_values: dict[str, torch.Tensor]


def _state(module: nn.Module) -> _ModuleState:
    values = {n: b.detach().clone() for n, b in module._buffers.items() if b is not None and b.device.type != "meta"}
    return _ModuleState(module, module.training, frozenset(module.__dict__), dict(module._parameters),
                        dict(module._buffers), values)


def _restore(s: _ModuleState) -> None:
    for attr in set(s.module.__dict__) - s.attrs:
        del s.module.__dict__[attr]
    s.module._parameters.clear()
    s.module._parameters.update(s.parameters)
    s.module._buffers.clear()
    s.module._buffers.update(s.buffers)
    with torch.no_grad():
        for name, value in s.buffer_values.items():
            buffer = s.buffers[name]
            if buffer is not None:
                buffer.copy_(value)
    s.module.training = s.training


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore every module's mode, attributes, parameter and buffer objects and buffer values on the way out."""
    states = [_state(module) for module in model.modules()]
    try:
        yield
    finally:
        for s in states:
            _restore(s)


@contextlib.contextmanager
def quiet_fastpaths() -> Iterator[None]:
    """Send nn.MultiheadAttention / TransformerEncoderLayer down their ordinary path (the same arithmetic, priced op
    by op) instead of the fused inference kernels, so eval, train and meta runs count the same ops."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "get_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def rng_forked(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Fork the CPU RNG, and the accelerator's where the run happens there (dropout draws from it)."""
    if device.type in ("cpu", "meta") or not hasattr(torch, device.type):
        return torch.random.fork_rng(devices=[])
    backend = getattr(torch, device.type)
    index = device.index if device.index is not None else backend.current_device()
    return torch.random.fork_rng(devices=[index], device_type=device.type)


@contextlib.contextmanager
def guarded(model: nn.Module, twin: Twin | None, run_device: torch.device) -> Iterator[None]:
    """Everything one run needs around it: the model preserved (when it runs itself), quiet fast paths, a forked RNG
    (the run's device's for the model itself or a real copy; the CPU's for fake and meta twins) and the twin's fake
    tensor mode."""
    preserve = preserved(model) if twin is None else contextlib.nullcontext()
    rng_device = run_device if twin is None or twin.method == "copy" else torch.device("cpu")
    fake = twin.context() if twin is not None else contextlib.nullcontext()
    with preserve, quiet_fastpaths(), rng_forked(rng_device), fake:
        yield
