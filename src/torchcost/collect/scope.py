"""Module scope: which module (by state_dict name) is running, what it took and returned, and where a run failed.

Uses torch's *global* module hooks, registered for one run and removed in ``finally``: nothing is added to the
user's modules. Hooks only track scope and shapes; they never compute costs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn
from torch.nn.modules import module as module_mod

from torchcost.shapes import ShapeTree
from torchcost.trees import spec_of, tensor_bytes

__all__ = ["Failure", "ModuleCalls", "ScopeListener", "ScopeTracker"]


@dataclass
class ModuleCalls:
    calls: int = 0
    input_spec: ShapeTree = None
    output_spec: ShapeTree = None
    output_bytes: int = 0


@dataclass(frozen=True)
class Failure:
    name: str
    type: str
    input_spec: ShapeTree
    ran_before: tuple[str, ...]


class ScopeListener(Protocol):
    """A collector that follows module calls on the tracker's frames rather than hooks of its own."""

    def enter(self, name: str) -> object:
        """Module ``name`` starts; the value returned comes back to :meth:`exit` as ``mark``."""

    def exit(self, name: str, mark: object) -> None:
        """Module ``name`` returned or raised."""


@dataclass
class ScopeTracker:
    """Which module is running (a stack of frames, by state_dict name), what each module took and returned, and the
    innermost module a failing forward raised in. ``install()`` adds torch's global module hooks for one run,
    ``remove()`` takes them away (the Recording does both)."""

    model: nn.Module
    names: dict[int, str] = field(init=False)
    types: dict[str, str] = field(init=False)
    stack: list[tuple[int, str, tuple[object, ...]]] = field(default_factory=list)
    listeners: list[ScopeListener] = field(default_factory=list)
    calls: dict[str, ModuleCalls] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)
    failure: Failure | None = None
    _failure_exc: int | None = None
    _handles: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = {}
        self.types = {}
        for name, module in self.model.named_modules():
            self.names[id(module)] = name
            self.types[name] = type(module).__name__

    @property
    def current(self) -> str:
        return self.stack[-1][1] if self.stack else ""

    def install(self) -> None:
        self._handles.append(module_mod.register_module_forward_pre_hook(self._pre))
        self._handles.append(module_mod.register_module_forward_hook(self._post, with_kwargs=True, always_call=True))

    def remove(self) -> None:
        while self._handles:
            handle = self._handles.pop()
            handle.remove()
            # torch's handle forgets the with_kwargs flag it set for a global forward hook; drop it, or the entry
            # stays behind in torch.nn.modules.module for the rest of the process
            module_mod._global_forward_hooks_with_kwargs.pop(handle.id, None)

    def _pre(self, module: nn.Module, args: Any) -> None:
        name = self.names.get(id(module))
        if name is not None:
            self.stack.append((id(module), name, tuple(listener.enter(name) for listener in self.listeners)))

    def _post(self, module: nn.Module, args: Any, *rest: Any) -> None:
        # torch calls (module, args, kwargs, output) normally, and (module, args, output) when forward raised. Tell
        # them apart by that form, not by sys.exc_info(): a module may return None inside an except block.
        raised = len(rest) != 2
        kwargs, output = ({}, rest[0]) if raised else (rest[0], rest[1])
        key = id(module)
        name = self.names.get(key)
        if name is None:
            return
        while self.stack:  # unwind to this module's frame (frames left by exceptions caught inside forward)
            frame_id, _, marks = self.stack.pop()
            if frame_id == key:
                for listener, mark in zip(self.listeners, marks):
                    listener.exit(name, mark)
                break
        if raised:
            exc = sys.exc_info()[1]
            if self._failure_exc != id(exc):  # the innermost module sees the exception first
                self._failure_exc = id(exc)
                self.failure = Failure(name, self.types[name], spec_of(tuple(args)), tuple(self.completed))
            return
        record = self.calls.get(name)
        if record is None:  # (not setdefault: that would build a ModuleCalls on every call of every module)
            record = self.calls[name] = ModuleCalls()
        record.calls += 1
        if record.calls == 1:
            record.input_spec = spec_of((*args, *kwargs.values())) if kwargs else spec_of(tuple(args))
            record.output_spec = spec_of(output)
        record.output_bytes += tensor_bytes(output)
        self.completed.append(name)
