"""The Recording: one object owns a run's collectors, installs them in the one correct order, takes them away in
``finally``, and says which phase of the run is going on.

    with Recording(model, registry, memory=tracker, train=True) as rec:
        with rec.phase("forward"):
            out = model(x)
        with rec.phase("loss"):
            loss = loss_fn(out)
        with rec.phase("backward"):
            loss.backward()

The order matters: the scope hooks go in first (every other collector asks the scope which module runs), then the
modes: on meta MemoryMode (picks the target's kernels), then CompositeCatcher, the one function mode every run has
(prices attention and RNNs whole; in a training step it tags autograd nodes with their module, collect/memory.py's
NodeTags), which torch calls first, being the newest on the stack; and DispatchCollector (sees every aten op). The
phase decides what the collectors do with what they see: FLOPs are counted in every phase, each phase in its own
tally (a training step's loss, backward, recompute and optimizer apart from the forward), memory is followed
through all phases, and module scope ends with the forward (backward ops take their module from autograd nodes; a
forward re-run inside backward, checkpointing's recompute, is followed by the StepScope's own hooks).

A Ctrl-C while recording is deferred (collect/interrupts.py): it is raised as KeyboardInterrupt at the next module
boundary, phase boundary or at the end, never inside torch's C++ callbacks, and the collectors come off as for any
error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import nn

from torchcost.collect import interrupts, probe
from torchcost.collect.composites import CompositeCatcher
from torchcost.collect.leaves import DirectLeaves, mode_depths
from torchcost.collect.memory import MemoryMode, MemoryTracker, NodeTags, Phase
from torchcost.collect.ops import DispatchCollector, OpCollector, StepScope
from torchcost.collect.probe import KernelMemory
from torchcost.collect.scope import ScopeTracker
from torchcost.collect.shadows import Shadows
from torchcost.collect.unwritten import Unwritten
from torchcost.collect.workspace_cuda import ASSUMED_GPU, CudaDevice
from torchcost.formulas.registry import FormulaRegistry

__all__ = ["MemorySettings", "Phase", "Recording", "live_status"]


# the recordings running now, innermost last, and how many have started in this process: read by a progress display
# on another thread (live_status), which only reads a string and two ints of them
_LIVE: list[Recording] = []
_STARTED = [0]


def live_status() -> tuple[int, str]:
    """For a progress display (the CLI's, on its own thread): how many runs have started in this process, and what
    the innermost running one is doing ("backward, 12,345 ops": its phase and the aten ops it has seen), or the
    kernel-memory probes being measured after a run ("measuring kernel memory, 3 of 22 calls"); "" otherwise."""
    try:
        rec: Recording | None = _LIVE[-1]
    except IndexError:  # (the run may end between a test and an index: this is read from another thread)
        rec = None
    if rec is not None:
        dispatch = rec.dispatch
        return _STARTED[0], f"{rec.ops.phase}, {dispatch.seen if dispatch is not None else 0:,} ops"
    done, total = probe.PROGRESS
    if total:
        return _STARTED[0], f"measuring kernel memory, {done} of {total} calls"
    return _STARTED[0], ""


@dataclass(frozen=True)
class MemorySettings:
    round_to: int = 1
    device_type: str | None = None
    kernel_memory: KernelMemory | None = None  # None: collect.probe.get_kernel_memory()
    gpu: CudaDevice = ASSUMED_GPU  # the GPU a "cuda" target's kernels run on (collect/workspace_cuda.py)


class Recording:
    """The collectors of one run: ``scope`` (module calls), ``ops`` (FLOPs) and ``memory`` (None: not measured).

    ``memory`` holds the memory tracker's settings: ``round_to`` (allocator block size), ``device_type`` (count
    storages on that device type only; None: all), ``kernel_memory`` (table or probes, collect/probe.py) and
    ``gpu`` (the GPU whose CUDA kernels' own memory a "cuda" target counts).
    ``train`` says a training step runs (backward ops get tagged with their module); ``emulate`` names the device
    type whose kernels meta tensors stand in for ("cpu"/"cuda"; None on real and fake tensors). ``watch`` is called
    with ``(func, args, kwargs)`` before every aten op runs (run/guard.py's copy-on-write of the model's tensors).
    ``direct``: common leaf modules may run past the modes, their planned ops handed to the collectors
    (collect/leaves.py; for an eval run on real tensors, when no mode of anyone else's is on). ``twin``: the run's
    tensors are fake or meta (their kernels stand for real ones: DispatchCollector makes an op's outputs distinct
    tensors where real kernels make distinct tensors). ``unwritten``: the direct leaves skip the kernels whose
    output is known, and the run follows in it the values it did not compute (collect/unwritten.py: a read of them
    raises :class:`~torchcost.collect.unwritten.ValuesNeeded`, and the run is made again with every kernel).
    """

    def __init__(self, model: nn.Module, registry: FormulaRegistry, *, memory: MemorySettings | None = None,
                 train: bool = False, emulate: str | None = None,
                 watch: Callable[[Any, tuple[Any, ...], dict[str, Any]], None] | None = None,
                 direct: bool = False, twin: bool = False, unwritten: Unwritten | None = None,
                 shadows: Shadows | None = None) -> None:
        self.scope = ScopeTracker(model)
        self.ops = OpCollector(registry, self.scope)
        self.memory = (MemoryTracker(self.scope, round_to=memory.round_to, device_type=memory.device_type,
                                     kernel_memory=memory.kernel_memory, gpu=memory.gpu)
                       if memory is not None else None)
        if train:
            self.ops.step = StepScope(self.scope.names)
        self._train = train
        self._emulate = emulate
        self._watch = watch
        self._direct = direct
        self._twin = twin
        # the direct leaves may skip their kernels (collect/unwritten.py): the values the run did not compute
        self.unwritten = unwritten if direct else None
        self.shadows = shadows  # a meta run: the values it follows (collect/shadows.py), else None
        self._stack = contextlib.ExitStack()
        self.dispatch: DispatchCollector | None = None
        self._catcher: CompositeCatcher | None = None

    @contextlib.contextmanager
    def unseen(self) -> Iterator[None]:
        """Ops run inside are not the model's: neither counted nor tracked (a simulated rank's DTensor shape
        propagation, which runs each op once on fake tensors of the global shapes)."""
        dispatch = self.dispatch
        if dispatch is None or dispatch.paused:
            yield
            return
        dispatch.paused = True
        try:
            yield
        finally:
            dispatch.paused = False

    def __enter__(self) -> Recording:
        with contextlib.ExitStack() as stack:  # what went in comes off again if installing the rest fails
            stack.enter_context(interrupts.deferred())  # outermost: a pending Ctrl-C is raised once all is removed
            others = mode_depths()
            stack.callback(self._finish)
            if self.memory is not None:
                self.scope.listeners.append(self.memory)
            self.scope.listeners.append(interrupts.LISTENER)
            self.scope.install()
            # MemoryMode only has work on meta (picking the target's kernels); elsewhere it would be a pass-through
            # costing a Python call per torch function. A training step's node tags come from CompositeCatcher.
            if self._emulate is not None:
                stack.enter_context(MemoryMode(self.memory, target=self._emulate))
            tag = NodeTags(self.scope, self.memory) if self._train else None
            self._catcher = stack.enter_context(CompositeCatcher(self.ops, tag))
            self.dispatch = stack.enter_context(DispatchCollector(self.ops, self.memory, self._watch, self._twin,
                                                                  self._emulate))
            self._catcher.shadows = shadows = self.shadows
            if shadows is not None and shadows.fake and not shadows:
                # (a fake twin lent no values: its ops are followed from the first value it comes to know, a tensor
                # made from numbers or drawn on the CPU, and until then cost nothing more)
                self.dispatch.sleeping = shadows
            else:
                self.dispatch.shadows = shadows
            if self._direct and others == (0, 0):  # (a mode of someone else's must see every op: none planned)
                if self.unwritten is not None:
                    self.dispatch.unwritten = self._catcher.unwritten = self.unwritten
                self.scope.leaves = DirectLeaves(self.dispatch, mode_depths(), self.unwritten)
                stack.callback(self.scope.release_leaves)  # before the modes come off
            _LIVE.append(self)
            stack.callback(_LIVE.remove, self)
            _STARTED[0] += 1
            self._stack = stack.pop_all()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()

    def _finish(self) -> None:
        self.ops.counting = True
        self.ops.phase = "forward"
        if self.ops.step is not None:
            self.ops.step.remove()
        self.scope.remove()
        if self.memory is not None:
            self.memory.close()

    @contextlib.contextmanager
    def without_function_mode(self) -> Iterator[None]:
        """Code inside runs without the Recording's function mode, where it is on top of torch's stack (else as it
        is): for code known to call no composite and to make no autograd node to tag (torch's own optimizers' step,
        run/execute.py), whose every torch call would otherwise cost a Python round trip through the mode. The
        dispatch mode still sees every aten op."""
        stack = torch._C._len_torch_function_stack()
        if self._catcher is None or not stack or torch._C._get_function_stack_at(stack - 1) is not self._catcher:
            yield
            return
        with torch.overrides._pop_mode_temporarily():
            yield

    @contextlib.contextmanager
    def phase(self, name: Phase) -> Iterator[None]:
        """Run one phase: ops are counted in every phase of a training step, each in its own tally (an eval run has
        the forward only); module scope ends when the forward and loss are over, and the backward follows forwards
        run again inside it (recompute). A Ctrl-C that arrived is raised when a phase starts or ends."""
        interrupts.check()
        self.ops.counting = name == "forward" or self._train
        self.ops.phase = name
        if self.memory is not None:
            self.memory.phase = name
        if name in ("backward", "optimizer"):
            self.scope.remove()
        step = self.ops.step
        if step is not None and name == "backward":
            step.install()
        try:
            yield
        finally:
            if step is not None:
                step.remove()
        interrupts.check()
