"""Module scope: which module (by state_dict name) is running, what it took and returned, and where a run failed.

Uses torch's *global* module hooks, registered for one run and removed in ``finally``: nothing is added to the
user's modules. Hooks only track scope and shapes; they never compute costs. They fire in every thread, so the
tracker follows only the thread that installed it. A module held by several parents (one object, several names) is
named by its call path: the name under the module running when it is called.

torch runs hooked modules one Python frame deeper than plain ones; while installed, the tracker raises the recursion
limit by that much, so that a model nested as deep as its plain forward allows still runs.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from threading import get_ident
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.modules import module as module_mod

from torchcost.collect.leaves import DirectLeaves, LeafCall
from torchcost.shapes import ShapeTree
from torchcost.trees import matches, spec_of, tensor_bytes

__all__ = ["Failure", "ModuleCalls", "ScopeListener", "ScopeTracker", "module_paths"]


@dataclass
class ModuleCalls:
    """What the calls of one module took and returned: the specs of the first call, ``shapes_differ`` when a later
    call took or returned other shapes, and the plain bytes of all outputs."""

    calls: int = 0
    input_spec: ShapeTree = None
    output_spec: ShapeTree = None
    output_bytes: int = 0
    shapes_differ: bool = False


def module_paths(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every (name, module) below ``model`` under every name it has (a module held by two parents appears under
    both), in pre-order, as ``named_modules(remove_duplicate=False)`` lists them; the first name of a module is its
    ``named_modules()`` name. Iterative (no limit on depth); a module held inside itself is not entered again."""
    out: list[tuple[str, nn.Module]] = []
    on_path: set[int] = set()
    todo: list[tuple[str, nn.Module, bool]] = [("", model, False)]
    while todo:
        name, module, leaving = todo.pop()
        if leaving:
            on_path.discard(id(module))
            continue
        out.append((name, module))
        on_path.add(id(module))
        todo.append((name, module, True))
        prefix = name + "." if name else ""
        for child_name, child in reversed(module._modules.items()):
            if child is not None and id(child) not in on_path:
                todo.append((prefix + child_name, child, False))
    return out


class _RecursionHeadroom:
    """The recursion limit, raised while at least one tracker is installed and put back when the last one goes
    (unless someone else changed it meanwhile). Shared by all threads, so counted under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._before = 0
        self._raised = 0

    def acquire(self) -> None:
        with self._lock:
            if self._users == 0:
                self._before = sys.getrecursionlimit()
                # one extra frame per module level (torch's inner()) over the 4 of a plain call, plus our own
                self._raised = self._before + self._before // 4 + 256
                sys.setrecursionlimit(self._raised)
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and sys.getrecursionlimit() == self._raised:
                sys.setrecursionlimit(self._before)


_HEADROOM = _RecursionHeadroom()
_NO_TORCH_FUNCTION = torch._C.DisableTorchFunction


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
    ``remove()`` takes them away (the Recording does both). Only calls in the installing thread are followed.

    ``names`` holds each module's first name; ``aliases`` the names of modules that have several, each call naming
    one of them by the running parent (:meth:`_alias`); ``canonical`` maps such a second name to the first."""

    model: nn.Module
    names: dict[int, str] = field(init=False)
    aliases: dict[int, tuple[str, ...]] = field(init=False)
    canonical: dict[str, str] = field(init=False)
    types: dict[str, str] = field(init=False)
    # (id of the module, its name, its listeners' marks, its direct-leaf call or None), innermost last
    stack: list[tuple[int, str, tuple[object, ...], LeafCall | None]] = field(default_factory=list)
    listeners: list[ScopeListener] = field(default_factory=list)
    calls: dict[str, ModuleCalls] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)
    failure: Failure | None = None
    _failure_exc: int | None = None
    leaves: DirectLeaves | None = None  # runs planned leaf modules past the modes (collect/leaves.py), if set
    _handles: list[Any] = field(default_factory=list)
    _thread: int = 0
    _headroom: bool = False

    def __post_init__(self) -> None:
        self.names, self.aliases, self.canonical, self.types = {}, {}, {}, {}
        for name, module in module_paths(self.model):
            key = id(module)
            self.types[name] = type(module).__name__
            first = self.names.setdefault(key, name)
            if first != name:
                self.aliases[key] = (*self.aliases.get(key, (first,)), name)
                self.canonical[name] = first

    @property
    def current(self) -> str:
        return self.stack[-1][1] if self.stack else ""

    def install(self) -> None:
        self._thread = get_ident()
        if not self._headroom:
            _HEADROOM.acquire()
            self._headroom = True
        self._handles.append(module_mod.register_module_forward_pre_hook(self._pre))
        self._handles.append(module_mod.register_module_forward_hook(self._post, with_kwargs=True, always_call=True))

    def release_leaves(self) -> None:
        """Turn the modes back on for direct leaf calls whose post-hook never ran (an error that is no Exception:
        torch calls always-called hooks for Exceptions only)."""
        if self.leaves is not None:
            for frame in reversed(self.stack):
                if frame[3] is not None:
                    self.leaves.abandon(frame[3])

    def remove(self) -> None:
        self.release_leaves()
        if self._headroom:
            self._headroom = False
            _HEADROOM.release()
        while self._handles:
            handle = self._handles.pop()
            handle.remove()
            # torch's handle forgets the with_kwargs flag it set for a global forward hook; drop it, or the entry
            # stays behind in torch.nn.modules.module for the rest of the process
            module_mod._global_forward_hooks_with_kwargs.pop(handle.id, None)

    def _alias(self, names: tuple[str, ...]) -> str:
        """The name of a module held under ``names`` for this call: one under the innermost running module that has
        one, a direct child first; among equals the one called least so far (``Sequential(*[block] * 3)`` names
        its three calls 0, 1, 2). Outside every frame: the first name."""
        for _, frame, _, _ in reversed(self.stack):
            prefix = frame + "." if frame else ""
            under = [n for n in names if n.startswith(prefix)]
            if under:
                direct = [n for n in under if "." not in n[len(prefix):]] or under
                return min(direct, key=lambda n: self.calls[n].calls if n in self.calls else 0)
        return names[0]

    def _pre(self, module: nn.Module, args: Any) -> None:
        if get_ident() != self._thread:
            return
        key = id(module)
        name = self.names.get(key)
        if name is not None:
            if self.aliases and key in self.aliases:
                name = self._alias(self.aliases[key])
            marks = tuple([listener.enter(name) for listener in self.listeners])
            leaves = self.leaves
            self.stack.append((key, name, marks, leaves.begin(module, args) if leaves is not None else None))

    def _post(self, module: nn.Module, args: Any, *rest: Any) -> None:
        # torch calls (module, args, kwargs, output) normally, and (module, args, output) when forward raised. Tell
        # them apart by that form, not by sys.exc_info(): a module may return None inside an except block.
        if get_ident() != self._thread:
            return
        key = id(module)
        name = self.names.get(key)
        if name is None:
            return
        raised = len(rest) != 2
        kwargs, output = ({}, rest[0]) if raised else (rest[0], rest[1])
        stack = self.stack
        while stack:  # unwind to this module's frame (frames left by exceptions caught inside forward)
            call = stack[-1][3]
            if call is not None and self.leaves is not None:  # a direct leaf's ops go in while its frame is on top
                if stack[-1][0] == key:
                    self.leaves.end(call, output, raised)
                else:
                    self.leaves.abandon(call)
            frame_id, frame, marks, _ = stack.pop()
            if frame_id == key:
                name = frame
                for listener, mark in zip(self.listeners, marks):
                    listener.exit(name, mark)
                break
        # the hooks run inside the model, under torchcost's function modes: read shapes, dtypes and sizes past them,
        # or each read is a full __torch_function__ round trip (DisableTorchFunction also passes by a subclass's own
        # __torch_function__: the metadata read is the tensor's own)
        with _NO_TORCH_FUNCTION():
            if raised:
                exc = sys.exc_info()[1]
                if self._failure_exc != id(exc):  # the innermost module sees the exception first
                    self._failure_exc = id(exc)
                    self.failure = Failure(name, self.types[name], spec_of(tuple(args)), tuple(self.completed))
                return
            self._record(name, args, kwargs, output)
        self.completed.append(name)

    def _record(self, name: str, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        record = self.calls.get(name)
        if record is None:  # (not setdefault: that would build a ModuleCalls on every call of every module)
            record = self.calls[name] = ModuleCalls()
        record.calls += 1
        if record.calls == 1:
            record.input_spec = spec_of((*args, *kwargs.values())) if kwargs else spec_of(tuple(args))
            record.output_spec = spec_of(output)
        elif not record.shapes_differ:
            record.shapes_differ = not matches(output, record.output_spec) or not matches(
                (*args, *kwargs.values()) if kwargs else tuple(args), record.input_spec)
        if type(output) is torch.Tensor:  # the common case, without a walk
            record.output_bytes += output.numel() * output.element_size()
        else:
            record.output_bytes += tensor_bytes(output)
