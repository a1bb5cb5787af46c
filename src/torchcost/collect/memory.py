"""Memory from tensor lifetimes: every storage an op creates is registered when it appears and released when it dies.

The :class:`MemoryTracker` is fed by the same dispatch pass that counts FLOPs. After each aten op it looks at the
op's outputs: a storage it has not seen is new memory (views and in-place results share their storage, so they add
nothing); a weak reference on each storage tells it the moment the storage is freed (the refcount reaching zero, as
the allocator sees it). Bytes alive after each op make the timeline; the op with the most bytes alive is the peak.
Nothing is estimated from output shapes. The same code runs on real tensors, meta tensors and fake tensors (whose
storages are meta storages with the real size), so a 70B-parameter model costs no memory to measure.

Kernel memory the tensors do not show comes from data (collect/workspace.py, collect/workspace_cuda.py): outputs a
meta/fake kernel sizes wrongly get the real kernel's size, an op's registered transient workspace counts while that
op runs, and a library's persistent workspace (cuBLAS's, on a "cuda" target) counts for the whole run when an op of
the run needs it (a training loop's step holds it from its start). For a "cpu" target, a call of a oneDNN op the
table does not claim is measured instead (collect/probe.py): its real kernel runs once per distinct call, after the
run, under the CPU allocator. Not seen: workspaces none of these describes (cuDNN's), allocator caching and rounding
beyond the 512-byte blocks it can be told to round to, and the CUDA context. docs/conventions.md, "Memory".
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import sys
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from torchcost.collect import probe
from torchcost.collect.fakeops import stands_for
from torchcost.collect.keys import metadata_key, ours
from torchcost.collect.ops import _SCOPE_KEY
from torchcost.collect.scope import ScopeTracker
from torchcost.collect.storages import storage_of
from torchcost.collect.workspace import (
    CPU_ENTRIES,
    FIXED_CUDA_OUTPUTS,
    FIXED_OUTPUTS,
    LIBRARY_WORKSPACES,
    QUICK_ENTRIES,
    WORKSPACES,
    library_workspace,
    true_output_bytes,
    workspace_bytes,
)
from torchcost.collect.workspace_cuda import ASSUMED_GPU, CudaDevice, target_gpu
from torchcost.trees import first, op_tensors, tensors_in

__all__ = ["ALIVE", "CATEGORIES", "MemoryMode", "MemoryTrace", "MemoryTracker", "NodeTags", "Phase", "module_tensors"]

# the parts of a run, in order: the forward is all of an inference; a training step adds the other three
Phase = Literal["forward", "loss", "backward", "optimizer"]
ALIVE = sys.maxsize  # "died" of a storage still alive when the run ended
CATEGORIES = ("parameters", "buffers", "inputs", "gradients", "optimizer_state", "saved_activations", "temporaries",
              "unsharded_params", "comm_buffers", "workspace")
# ops whose tensors are collective buffers (simulated distributed runs): FSDP2's copy-in/out kernels and its in-place
# c10d collectives; the storages they make or fill, not otherwise categorised, are "comm_buffers"
_COMM_BUFFER_OPS = frozenset({
    "fsdp::all_gather_copy_in", "fsdp::chunk_cat", "c10d::_allgather_base_", "c10d::_reduce_scatter_base_",
    "c10d::allgather_into_tensor_coalesced_", "c10d::reduce_scatter_tensor_coalesced_"})


_MKLDNN_ENABLED = torch._C._get_mkldnn_enabled  # (torch.backends.mkldnn.enabled's getter, without its property)


# a call's metadata -> the probe asked for it in an earlier run (reused while that probe's figure is in the cache)
_MEASURED: dict[tuple[Any, ...], probe.Probe] = {}
# a call's metadata (and the GPU a "cuda" target's entries size for) -> a built-in workspace entry's bytes for it
_TABLES: dict[tuple[Any, ...], int | None] = {}
_CACHE_MAX = 4096
# a planned leaf call's op (its memo and the kernel settings, MemoryTracker._kernel_memory) and what of the tracker
# its answers read (the target, the device type counted, the kernel-memory policy, the GPU) -> the workspace and
# library entries of the op then, and its answers: (library workspace, table bytes, probe), or () where no kernel
# memory is counted for it. Kept for the process (models are analysed again with the same shapes), but not for a
# "cuda" target's calls (its entries read environment variables) nor with a user's entry
_PLANNED: dict[tuple[Any, ...], tuple[Any, Any, tuple[tuple[str, int] | None, int | None, probe.Probe | None]
                                      | tuple[()]]] = {}


def _call_signature(func: Any, target: str, meta: int | None) -> tuple[Any, ...] | None:
    """What one call's kernel memory depends on: the op, the target, grad mode, the thread count, oneDNN's switch,
    deterministic mode and the call's metadata (``meta``: :func:`metadata_key`, every tensor's shape, strides,
    dtype, device and grad flag and the other arguments); None when the call could not be keyed."""
    if meta is None:
        return None
    return (func, target, torch.is_grad_enabled(), _kernel_settings(), meta)


def _kernel_settings() -> tuple[int, bool, bool]:
    """The global settings a kernel's own memory depends on: the thread count, oneDNN's switch, deterministic mode
    (:func:`_call_signature`, and the run's memo of planned calls, MemoryTracker._kernel_memory)."""
    return torch.get_num_threads(), _MKLDNN_ENABLED(), torch.are_deterministic_algorithms_enabled()


def _device_test(device_type: str | None) -> Callable[[torch.Tensor], bool]:
    """A test of whether a tensor's data is on ``device_type`` (None: any device): its ``is_cpu``/``is_cuda``/
    ``is_meta`` flag where there is one. A DTensor is tested by its local shard's device, which is its own."""
    if device_type is None:
        return lambda t: True
    flag = {"cpu": "is_cpu", "cuda": "is_cuda", "meta": "is_meta"}.get(device_type)
    if flag is not None:
        return operator.attrgetter(flag)
    return lambda t: bool(t.device.type == device_type)


def _dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense (``TensorImpl::is_non_overlapping_and_dense``): some order of the dimensions makes
    ``t`` contiguous."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _metadata(node: Any) -> dict[str, Any]:
    """An autograd node's metadata dict, kept by the node for its lifetime."""
    return cast("dict[str, Any]", node.metadata)


def module_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Tensors a module holds as plain attributes (not parameters or buffers): constants, cached tables."""
    found = []
    for module in model.modules():
        for name, value in vars(module).items():
            if isinstance(value, torch.Tensor) and name not in ("_parameters", "_buffers"):
                found.append(value)
    return found


@dataclass(frozen=True)
class MemoryTrace:
    """What one tracked run left: the timeline, the storages' lifetimes and categories, per-module figures."""

    ops: tuple[str, ...]
    modules: tuple[str, ...]
    phases: tuple[str, ...]
    alive: tuple[int, ...]
    start_bytes: int
    end_bytes: int
    peak_bytes: int
    peak_index: int  # -1: the peak is before the first op (nothing ran)
    breakdown: dict[str, int]
    module_peak: dict[str, int]  # bytes alive at the worst op run in the module itself (not its children)
    module_activation: dict[str, int]
    host_bytes: int = 0  # the most bytes alive at once in host memory (host_categories), left out of the rest


class MemoryTracker:
    """Registers storages and their deaths; records bytes alive after each op, with its module and phase.

    ``round_to`` rounds every storage up to a multiple of that many bytes (512 mirrors the CUDA caching allocator's
    blocks, so the figures compare with ``torch.cuda.max_memory_allocated``). ``device_type`` restricts the count
    to storages on one device type (the accelerator's memory, not the CPU scalars beside it); others count 0 bytes.
    ``kernel_memory`` says where the transient bytes of a "cpu" call come from (collect/probe.py): "auto" (the
    workspace table where it claims the call, else a probe of the real kernel for the ops of ``probe.PROBED``),
    "measure" (a probe for every call of those ops), "table" (the table alone); None: the process-wide
    ``probe.get_kernel_memory()``. Probes asked for during the run are measured when :meth:`trace` is made. ``gpu`` is
    the GPU a "cuda" target's kernels run on, which some CUDA entries' sizes depend on (collect/workspace_cuda.py).
    """

    def __init__(self, scope: ScopeTracker, *, round_to: int = 1, device_type: str | None = None,
                 kernel_memory: probe.KernelMemory | None = None, gpu: CudaDevice = ASSUMED_GPU) -> None:
        self.scope = scope
        self.gpu = gpu
        self.kernel_memory = kernel_memory or probe.get_kernel_memory()
        self._probes: list[tuple[int, probe.Probe, int]] = []  # (op index, probe, the table's bytes or 0)
        self.round_to = max(1, round_to)
        self.device_type = device_type  # count only storages on this device type (None: all)
        # whether a tensor's data is on that device type, read from the tensor (Tensor.is_cpu and the like: a
        # storage's .device builds a device object each time)
        self._counted: Callable[[torch.Tensor], bool] = _device_test(device_type)
        self.phase: Phase = "forward"
        self.target: str | None = None  # the device type meta tensors stand for (set by MemoryMode), None: unknown
        # the device type a simulated rank's ops stand for: the analysis target (set by parallel/runner.py), so the
        # collectives' backend ("cpu": gloo, "cuda": NCCL) and the kernels' workspaces follow it; None: the tensors' own
        self.stands_for: str | None = None
        # storages that live in host memory (FSDP2's CPU offload): "parameters", "gradients", "optimizer_state", and
        # "optimizer" for every storage the optimizer step makes; left out of the device's timeline and peak
        self.host_categories: frozenset[str] = frozenset()
        self.workspace: dict[int, int] = {}  # op index -> bytes the kernel held inside itself while it ran
        # (library, thread) -> (index of the op it appeared at, bytes): kept to the end of the run; the thread is
        # "backward" for autograd's device thread, which has its own cuBLAS handle, else "main"
        self.library: dict[tuple[str, str], tuple[int, int]] = {}
        self.closed = False
        self.current = 0
        self.sizes: list[int] = []
        self.born: list[int] = []
        self.died: list[int] = []
        self.category: list[str] = []
        self.saved: set[int] = set()
        self.ops: list[str] = []
        self.modules: list[str] = []
        self.phases: list[str] = []
        self.alive: list[int] = []
        self._by_storage: dict[int, int] = {}  # id(storage) -> uid, while the storage lives
        self._refs: dict[int, weakref.ref[Any]] = {}  # uid -> the weak reference on its storage, while it lives
        self._ref_ids: dict[int, tuple[int, int]] = {}  # id() of such a weak reference -> (uid, id(storage))
        # id(op) -> (its key, a collective's buffers?, kernel memory to look up?, the op: kept, so no id is reused)
        self._keys: dict[int, tuple[str, bool, bool, Any]] = {}
        self._back_scope = ""
        self._activation: dict[str, int] = {}
        self._posted: Any = None  # the autograd node whose post-hook ran last: the engine sums its gradients now
        self._pending: dict[int, tuple[int, int]] = {}  # uid of a sum's old buffer -> (op index, uid of the sum)
        # a call's metadata -> its probe, and whether that answer is for good: _probe_for
        self._requests: dict[tuple[Any, ...], tuple[probe.Probe | None, bool]] = {}
        # a planned leaf call's op (its memo and the settings, _kernel_memory) -> its library workspace, table bytes
        # and probe in this run; () where no kernel memory is counted for it
        self._planned: dict[Any, tuple[tuple[str, int] | None, int | None, probe.Probe | None] | tuple[()]] = {}
        # a twin's op (its price key from the fake shortcuts, grad mode and the settings, _kernel_memory) -> its
        # outputs' true sizes and its answers as above, in this run
        self._twin: dict[Any, tuple[dict[int, int], tuple[tuple[str, int] | None, int | None, probe.Probe | None]
                                    | tuple[()]]] = {}

    # -- storages ---------------------------------------------------------------------------------------------------

    def _size(self, nbytes: int) -> int:
        r = self.round_to
        return -(-nbytes // r) * r

    def _register(self, storage: torch.UntypedStorage, born: int, category: str, counted: bool | None = None) -> int:
        """Start following a storage (``counted``: whether it is on the device type counted, when the caller has
        read it from the tensor, which is cheaper than the storage's device; None: read it here)."""
        if counted is None:
            counted = self.device_type in (None, storage.device.type)
        uid = self._born(self._size(storage.nbytes()) if counted else 0, born, category)
        key = id(storage)
        self._by_storage[key] = uid
        ref = weakref.ref(storage, self._died)
        self._refs[uid] = ref
        self._ref_ids[id(ref)] = (uid, key)
        return uid

    def _born(self, size: int, born: int, category: str) -> int:
        """A storage of ``size`` counted bytes alive from op ``born`` on: its uid."""
        uid = len(self.sizes)
        self.sizes.append(size)
        self.born.append(born)
        self.died.append(ALIVE)
        self.category.append(category)
        self.current += size
        return uid

    def _died(self, ref: object) -> None:
        """The weak reference callback of every storage registered: one bound method for all of them."""
        entry = self._ref_ids.pop(id(ref), None)
        if entry is not None:
            self._dead(*entry)

    def _dead(self, uid: int, key: int) -> None:
        if self.closed:
            return
        self.current -= self.sizes[uid]
        self.died[uid] = len(self.alive)
        pending = self._pending.pop(uid, None)
        if pending is not None and pending[0] == len(self.alive) - 1:
            # the engine's buffer held the last reference to the old gradient: on plain tensors it would have added
            # into it in place, so the sum's storage is the old one going on, not a second one beside it
            index, new = pending
            self.alive[index] -= self.sizes[new]
            self.born[new] = index + 1
        if self._by_storage.get(key) == uid:
            del self._by_storage[key]
        self._forget(uid)

    def _forget(self, uid: int) -> None:
        ref = self._refs.pop(uid, None)
        if ref is not None:
            self._ref_ids.pop(id(ref), None)

    def resized(self, t: torch.Tensor, category: str) -> None:
        """``t``'s storage was resized outside any op (FSDP2 frees and re-allocates its unsharded parameters with
        ``storage.resize_``): the old size dies here and the new one, if any, is born, in ``category``."""
        s = storage_of(t)
        if s is None or self.closed:
            return
        uid = self._by_storage.get(id(s))
        if uid is not None:
            if self.sizes[uid] == self._size(s.nbytes()) and s.nbytes() > 0:
                if not self.category[uid] and self.born[uid] >= 0:
                    self.category[uid] = category
                return
            self.current -= self.sizes[uid]
            self.died[uid] = len(self.alive)
            del self._by_storage[id(s)]
            self._forget(uid)
        if s.nbytes() > 0:
            self._register(s, len(self.alive), category)

    def uid_of(self, t: torch.Tensor) -> int | None:
        s = storage_of(t)
        return None if s is None else self._by_storage.get(id(s))

    def add_baseline(self, tensors: Iterable[torch.Tensor], category: str) -> None:
        """Storages alive before the run (parameters, buffers, inputs, optimizer state); each counted once."""
        for t in tensors:
            s = storage_of(t)
            if s is not None and id(s) not in self._by_storage and s.nbytes() > 0:
                self._register(s, -1, category, self._counted(t))

    def label(self, tensors: Iterable[torch.Tensor], category: str) -> None:
        """Name the category of storages after the fact (the gradients left on parameters, optimizer state)."""
        for t in tensors:
            uid = self.uid_of(t)
            if uid is not None and self.born[uid] >= 0:
                self.category[uid] = category

    # -- feeding ------------------------------------------------------------------------------------------------------

    def on_op(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any, meta: Any = None,
              inputs: list[torch.Tensor] | None = None, priced: Any = None) -> None:
        """One op ran: register the storages it made (and those it read that no op made), note its kernel memory,
        and record the bytes alive after it. ``meta`` and ``inputs`` come with a planned leaf call's op
        (collect/leaves.py): the op's key (its call's metadata number and its place in the plan) and its tensor
        arguments, as the planner placed them; for any other op the tensors are found in the arguments here, and the
        call's metadata key is made if a workspace entry needs it (:func:`metadata_key`). ``priced``: a twin's op's
        price key from the fake shortcuts (collect/fakeops.py), which fixes the call's metadata: its kernel memory is
        worked out once a run per key."""
        if self.closed:
            return
        index = len(self.alive)
        if self._pending:
            self._pending.clear()
        by_storage = self._by_storage
        for t in (out,) if isinstance(out, torch.Tensor) else tensors_in(out):
            s = storage_of(t)
            if s is None:
                continue
            uid = by_storage.get(id(s))
            if uid is None:
                if s.nbytes() > 0:
                    self._register(s, index, "", self._counted(t))
            elif self.sizes[uid]:
                size = self._size(s.nbytes())
                if size != self.sizes[uid]:  # resized in place (out= arguments, resize_)
                    self.current += size - self.sizes[uid]
                    self.sizes[uid] = size
        for t in op_tensors(args, kwargs) if inputs is None else inputs:
            s = storage_of(t)
            if s is not None and id(s) not in by_storage and s.nbytes() > 0:
                self._register(s, index, "buffers", self._counted(t))  # made outside every op we saw: counted from here
        key, comm, kernel, _ = self._known(func)
        if comm:
            for t in tensors_in((args, out)):
                uid = self.uid_of(t)
                if uid is not None and self.born[uid] >= 0 and not self.category[uid]:
                    self.category[uid] = "comm_buffers"
        held = 0
        if kernel:
            held = self._kernel_memory(key, func, args, kwargs, out, index, meta, priced)
        if self._posted is not None:  # (in any phase: a forward may run a backward of its own)
            self._accumulation(func, args, kwargs, out)
        self._entry(key, held)

    def on_view(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor,
                base: torch.Tensor) -> None:
        """:meth:`on_op` of a view a fake twin's shortcuts answered (collect/fakeops.py): ``out`` is on the storage
        of ``base``, the op's one tensor argument (the others are plain integers). Where that storage is followed
        already at its size and the op may hold no kernel memory and moves no collective's buffers, on_op would
        register nothing and note no kernel memory: only the timeline's entry is made."""
        if self.closed:
            return
        s = storage_of(base)
        uid = None if s is None else self._by_storage.get(id(s))
        known = self._known(func)
        if s is None or uid is None or known[1] or known[2] or \
                (self.sizes[uid] and self._size(s.nbytes()) != self.sizes[uid]):
            self.on_op(func, args, kwargs, out)
            return
        if self._pending:
            self._pending.clear()
        if self._posted is not None:  # (in any phase: a forward may run a backward of its own)
            self._accumulation(func, args, kwargs, out)
        self._entry(known[0])

    def _known(self, func: Any) -> tuple[str, bool, bool, Any]:
        """An op's key, whether it is a collective with buffers, whether it may hold kernel memory (and the op,
        kept so that no id is reused)."""
        known = self._keys.get(id(func))  # (by id(): an OpOverload hashes in Python)
        if known is None:
            name = func._schema.name if hasattr(func, "_schema") else str(func)
            known = self._keys[id(func)] = (name, name in _COMM_BUFFER_OPS, name in WORKSPACES
                                            or name in FIXED_OUTPUTS or name in probe.PROBED
                                            or name in LIBRARY_WORKSPACES or name in FIXED_CUDA_OUTPUTS, func)
        return known

    def _taped_key(self, func: Any) -> str | None:
        """The key of an optimizer op that holds no kernel memory and no collective's buffers (what :meth:`on_taped`
        records of it is its new storages and its timeline entry alone); None for any other, and outside the
        optimizer phase."""
        known = self._known(func)
        if known[1] or known[2] or self.phase != "optimizer" or self.closed:
            return None
        return known[0]

    def plain_key(self, func: Any) -> str | None:
        """:meth:`_taped_key`, for :meth:`on_storageless`: None also where storages on some device types count 0
        bytes (which a new storage's size alone does not tell)."""
        return None if self.device_type is not None else self._taped_key(func)

    def on_storageless(self, key: str, born: Iterable[int]) -> list[int]:
        """:meth:`on_taped` of an op replayed with no tensors made (collect/tape.py): ``born`` the byte sizes of its
        new storages (each > 0, on a counted device); returns their uids, for :meth:`let_go`. ``key``: from
        :meth:`plain_key`."""
        index = len(self.alive)
        if self._pending:
            self._pending.clear()
        uids = [self._born(self._size(nbytes), index, "") for nbytes in born]
        self._entry(key)
        return uids

    def let_go(self, uids: Iterable[int]) -> None:
        """Storages registered by :meth:`on_storageless` die (after the last op recorded)."""
        for uid in uids:
            self.current -= self.sizes[uid]
            self.died[uid] = len(self.alive)

    def on_taped(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                 new: list[torch.Tensor]) -> None:
        """:meth:`on_op` for an optimizer op replayed from a tape (collect/tape.py): ``new`` are its outputs on new
        storages; every other tensor it takes or returns is on a storage followed already (the tape checked that
        when it was written, and the replay checks the parameters' tensors), none resized. Where the op may have
        kernel memory or collective buffers, or outside the optimizer phase, :meth:`on_op` does it all."""
        key = self._taped_key(func)
        if key is None:
            self.on_op(func, args, kwargs, out)
            return
        index = len(self.alive)
        if self._pending:
            self._pending.clear()
        for t in new:
            s = storage_of(t)
            if s is not None and s.nbytes() > 0 and id(s) not in self._by_storage:
                self._register(s, index, "", self._counted(t))
        self._entry(key)

    def _entry(self, key: str, held: int = 0) -> None:
        """The timeline's entry of an op: its key, the running module (in the backward, the module of the autograd
        node running it; the optimizer runs outside every module), the phase, the bytes alive during it (``held``:
        the kernel memory it holds besides its tensors)."""
        self.ops.append(key)
        self.modules.append(self.scope.current if self.phase != "backward" else self._module())
        self.phases.append(self.phase)
        self.alive.append(self.current + held)

    def _accumulation(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        """Note autograd's sum of two gradients for one input (``InputBuffer::accumulate``, run by the engine right
        after the node that made the second one returned, :meth:`post_hook`). On plain tensors the engine adds in
        place into the first (``old.add_(new)``) when grad mode is off, the first is non-overlapping and dense and
        the buffer holds the last reference to it and to its storage (so not a view: its base holds the storage
        too). On fake or meta tensors, and on any tensor while a dispatch mode is active (torchcost's own),
        ``isTensorSubclassLike`` is true, so it never does and ``old + new`` makes a new storage: noted here, and
        taken back by :meth:`_dead` if the old storage dies before the next op (the buffer held the last
        reference)."""
        node = torch._C._current_autograd_node()
        if node is not self._posted:
            self._posted = None  # another node runs: the sums of the last one are over
            return
        if func is not _ADD or len(args) != 2 or kwargs.get("alpha", 1) != 1 or torch.is_grad_enabled():
            return
        old, new = args
        if not (isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor) and isinstance(out, torch.Tensor)):
            return
        # a view (``grad.t()`` from TBackward0, ``sum_to``'s reshape of a bias gradient) keeps its base, which holds a
        # second reference to the storage: summed out of place
        if out.shape != old.shape or out.dtype != old.dtype or old._is_view() or not _dense(old):
            return
        uid_old, uid_new = self.uid_of(old), self.uid_of(out)
        index = len(self.alive)
        # ``new`` on the old storage (the same gradient twice, as from ``h + h``) is a second reference: out of place
        if (uid_old is not None and uid_new is not None and self.born[uid_new] == index
                and uid_old not in (uid_new, self.uid_of(new))):
            self._pending[uid_old] = (index, uid_new)

    def post_hook(self, grad_inputs: Any, grad_outputs: Any) -> None:
        """An autograd node's post-hook (NodeTags hooks each node of a training step whose gradient may be summed
        with another one's): the node returned, and the engine now adds its gradients into the buffers of the nodes
        they go to (:meth:`_accumulation`)."""
        if not self.closed:
            self._posted = torch._C._current_autograd_node()

    def _target(self, tensor: torch.Tensor | None) -> str | None:
        """The device type whose kernels the op stands for: its first tensor's own, or on meta the target
        (MemoryMode)."""
        return stands_for(tensor, self.target)

    def _kernel_memory(self, key: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                       index: int, meta: Any = None, priced: Any = None) -> int:
        """What the real kernel holds that the tensors do not show: outputs a meta/fake kernel sizes wrongly get
        their real size; a library workspace the op is the first to need is added (for the whole run: trace()); the op's
        transient workspace is returned (bytes alive during the op only): the table's, the probe's from the cache,
        or 0 for now and a probe to run when the trace is made.

        A planned leaf call's op (``meta`` given: real tensors, grad mode off) has its answers remembered for the run
        by ``meta``, which holds the call's metadata (its tensors' devices among them, so the target too) and the
        op's place in the plan (so the op), and by the settings a kernel's memory depends on (:func:`_call_signature`
        reads the same): models repeat their shapes, and a repeated call costs a lookup. Across runs the answers are
        kept in :data:`_PLANNED` (:meth:`_remember`, :meth:`_remembered`).

        A twin's op (``priced``: its price key, collect/fakeops.py, which holds every argument's metadata and value
        and so fixes the output's) has its answers and its outputs' true sizes remembered for the run by that key,
        grad mode and the settings, where its entries are torchcost's own (a user's may count its calls): a
        training step's backward repeats its layers' calls."""
        seen = twin = None
        if priced is not None and meta is None and self._own_entries(key):
            twin = (priced, torch.is_grad_enabled(), _kernel_settings())
            found = self._twin.get(twin)
            if found is not None:
                self._true_sizes(found[0], out, index)
                return self._charge(index, *found[1]) if found[1] else 0
        if meta is not None:
            seen = (meta, _kernel_settings())
            known = self._planned.get(seen)
            if known is None:
                known = self._remembered(key, seen)
            if known is not None:
                return self._charge(index, *known) if known else 0
        target = self._target(first((args, kwargs)))
        if self.stands_for is not None:
            # a simulated rank's fake CPU twin stands for the target: its collectives for the target's backend (gloo
            # or NCCL), its kernels' memory for the target's kernels (no CPU entry or probe for a "cuda" target)
            target = self.stands_for
        if target is None or (self.device_type not in (None, "meta") and target != self.device_type):
            if seen is not None:
                self._planned[seen] = ()
                self._remember(key, seen, ())
            if twin is not None:
                self._twin[twin] = ({}, ())
            return 0  # a CPU op beside a real CUDA run: not the memory counted (on meta, the target's kernels are)
        if target == "cuda":
            with target_gpu(self.gpu):
                return self._op_memory(key, func, args, kwargs, out, index, target, meta, seen, twin)
        return self._op_memory(key, func, args, kwargs, out, index, target, meta, seen, twin)

    def _own_entries(self, key: str) -> bool:
        """Whether the op's workspace and library entries, if any, are torchcost's own (they read the call's
        metadata alone)."""
        workspace, library = WORKSPACES.get(key), LIBRARY_WORKSPACES.get(key)
        return (workspace is None or ours(workspace, "torchcost.collect")) and \
            (library is None or ours(library, "torchcost.collect"))

    def _true_sizes(self, sizes: dict[int, int], out: Any, index: int) -> None:
        """Outputs a meta or fake kernel sized wrongly (output index -> the real kernel's bytes:
        :func:`true_output_bytes`) get their real size."""
        if not sizes:
            return
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for i, nbytes in sizes.items():
            t = outs[i] if i < len(outs) else None
            s = storage_of(t) if isinstance(t, torch.Tensor) else None
            if s is None or s.device.type != "meta" or s.nbytes() == nbytes:
                continue  # a real kernel's output is its own truth
            uid = self._by_storage.get(id(s))
            if uid is None:
                uid = self._register(s, index, "")
            size = self._size(nbytes)
            self.current += size - self.sizes[uid]
            self.sizes[uid] = size

    def _op_memory(self, key: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any, index: int,
                   target: str, meta: Any = None, seen: tuple[Any, ...] | None = None,
                   twin: tuple[Any, ...] | None = None) -> int:
        """:meth:`_kernel_memory` for one call on ``target`` (``seen``: a planned call's key for the run's memo;
        ``twin``: a twin's op's)."""
        sizes = true_output_bytes(key, args, kwargs, out, target)
        self._true_sizes(sizes, out, index)
        library = library_workspace(key, func, args, kwargs, out, target)
        table, wanted, final = self._workspace_source(key, func, args, kwargs, out, target, meta)
        if twin is not None:
            self._twin[twin] = (sizes, (library, table, wanted))
        if seen is not None:
            self._planned[seen] = (library, table, wanted)
            # (a "cuda" target's are worked out in each run: its cuBLAS entries read environment variables at each
            # call, workspace_cuda.cublas_workspace_size)
            if final and target != "cuda":
                self._remember(key, seen, (library, table, wanted))
        return self._charge(index, library, table, wanted)

    def _answers_read(self) -> tuple[Any, ...]:
        """What of this tracker a kernel's answers depend on, beside the call: the target meta tensors stand for,
        the target a simulated rank stands for, the device type counted, the kernel-memory policy, the GPU."""
        return self.target, self.stands_for, self.device_type, self.kernel_memory, self.gpu

    def _remember(self, key: str, seen: tuple[Any, ...],
                  known: tuple[tuple[str, int] | None, int | None, probe.Probe | None] | tuple[()]) -> None:
        """Keep a planned call's answers for later runs (:data:`_PLANNED`), when the op's workspace and library
        entries are torchcost's own (a user's may read more than the metadata, or count its calls)."""
        if self._own_entries(key):
            if len(_PLANNED) >= _CACHE_MAX:
                _PLANNED.clear()
            _PLANNED[(seen, self._answers_read())] = (WORKSPACES.get(key), LIBRARY_WORKSPACES.get(key), known)

    def _remembered(self, key: str, seen: tuple[Any, ...]) -> tuple[tuple[str, int] | None, int | None,
                                                                        probe.Probe | None] | tuple[()] | None:
        """A planned call's answers from an earlier run (:meth:`_remember`), if the op's entries are still the
        ones they were worked out with and its probe, if any, still has its figure in the cache; else None."""
        entry = _PLANNED.get((seen, self._answers_read()))
        if entry is None:
            return None
        workspace, library, known = entry
        if WORKSPACES.get(key) is not workspace or LIBRARY_WORKSPACES.get(key) is not library or \
                (known and known[2] is not None and probe.cached(known[2]) is None):
            return None
        self._planned[seen] = known
        return known

    def _charge(self, index: int, library: tuple[str, int] | None, table: int | None,
                wanted: probe.Probe | None) -> int:
        """Op ``index``'s kernel memory from its answers: a library workspace it is the first to need (added for the
        whole run), and its transient workspace returned: the probe's figure from the cache, else the table's, or 0
        for now and the probe run when the trace is made."""
        if library is not None:
            slot = (library[0], "backward" if self.phase == "backward" else "main")
            if slot not in self.library:
                self.library[slot] = (index, self._size(library[1]))
                self.current += self.library[slot][1]
        if wanted is not None:
            measured = probe.cached(wanted)
            if measured is None:
                self._probes.append((index, wanted, table or 0))
                return 0
            table = measured
        held = self._size(table or 0)
        if held:
            self.workspace[index] = held
        return held

    def _workspace_source(self, key: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                          target: str, meta: Any = None) -> tuple[int | None, probe.Probe | None, bool]:
        """The table's bytes for one call (None: not claimed), the probe it needs (None: none), and whether these
        answers hold in later runs (not when a probe was refused for the memory free now). A built-in entry's
        answer is remembered by the call's signature (:func:`_call_signature`; models repeat their shapes), as is the
        probe (:meth:`_probe_for`); one of ``QUICK_ENTRIES`` is asked each time, and the call keyed only for a probe;
        one of ``CPU_ENTRIES`` is not asked for another target's call."""
        fn = WORKSPACES.get(key)
        probing = target == "cpu" and self.kernel_memory in ("measure", "auto")
        if target != "cpu" and fn in CPU_ENTRIES:
            fn = None  # (it claims no call of this target)
        builtin = fn is not None and fn not in QUICK_ENTRIES and ours(fn, "torchcost.collect.workspace")
        own = metadata_key(args, kwargs, out) if builtin and meta is None else None  # (the call's own key)
        signature = _call_signature(func, target, meta if meta is not None else own) if builtin else None
        table: int | None = None
        if builtin and signature is not None:
            remembered = (signature, self.gpu if target == "cuda" else None)
            if remembered in _TABLES:
                table = _TABLES[remembered]
            else:
                table = workspace_bytes(key, func, args, kwargs, out, target)
                if len(_TABLES) > _CACHE_MAX:
                    _TABLES.clear()
                _TABLES[remembered] = table
        elif fn is not None:  # a quick entry, a user's entry (it may read more than the metadata), or an unkeyed call
            table = workspace_bytes(key, func, args, kwargs, out, target)
        if probing and (self.kernel_memory == "measure" or table is None):
            # a probe is remembered by the call's own key (metadata_key), however the caller keyed the call: a
            # planned leaf call and the traced call of its kind ask for one probe
            if own is None:  # (keyed only now that a probe needs it)
                own = metadata_key(args, kwargs, out)
            return table, *self._probe_for(key, func, args, kwargs, out, _call_signature(func, target, own))
        return table, None, True

    def _probe_for(self, key: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                   signature: tuple[Any, ...] | None) -> tuple[probe.Probe | None, bool]:
        """``probe.ask`` for one call, remembered: the probe is a function of the call's ``signature``
        (:func:`_call_signature`) and of the memory available (a probe too big to build is refused: then the answer
        is not for good, the second value), and asking costs about 100 us (flattening the arguments, reading the
        memory available). Models repeat their shapes: a call like one seen before in this run gets the same
        answer, and one seen in an earlier run the same probe when that probe was measured (then nothing is built
        again). A call whose metadata cannot be keyed is asked afresh."""
        if signature is None:
            return probe.ask(key, func, args, kwargs, out)
        answer = self._requests.get(signature)
        if answer is not None:
            return answer
        wanted, final = _MEASURED.get(signature), True
        if wanted is None or probe.cached(wanted) is None:
            wanted, final = probe.ask(key, func, args, kwargs, out)
            if wanted is not None:
                if len(_MEASURED) > _CACHE_MAX:
                    _MEASURED.clear()
                _MEASURED[signature] = wanted
        answer = self._requests[signature] = (wanted, final)
        return answer

    def _run_probes(self) -> None:
        """Measure the probes asked for during the run (outside it: their allocations are not the run's) and add
        each one's bytes at its op; a probe without a figure leaves the table's bytes (or 0)."""
        pending, self._probes = self._probes, []
        if not pending:
            return
        measured = probe.measure([p for _, p, _ in pending])
        for index, wanted, table in pending:
            held = self._size(measured.get(wanted.key, table))
            if held:
                self.workspace[index] = held
                self.alive[index] += held

    def _module(self) -> str:
        if self.phase != "backward":
            return self.scope.current
        node = torch._C._current_autograd_node()
        if node is not None:
            name = _metadata(node).get(_SCOPE_KEY)
            if name is not None:
                self._back_scope = name
        return self._back_scope

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        """saved_tensors_hooks pack hook: the storage is an activation saved for backward. Returns ``t`` unchanged."""
        uid = self.uid_of(t)
        if uid is not None:
            self.saved.add(uid)
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    # -- module calls (activation bytes) -----------------------------------------------------------------------------

    def enter(self, name: str) -> int | None:
        """A module starts (called by ScopeTracker): remember where its storages begin."""
        return None if self.closed else len(self.sizes)

    def exit(self, name: str, first: object) -> None:
        """The module returned or raised: its activation bytes are the storages it made that are still alive."""
        if not isinstance(first, int):
            return
        kept = sum(itertools.compress(self.sizes[first:], map(ALIVE.__eq__, self.died[first:])))
        self._activation[name] = self._activation.get(name, 0) + kept

    # -- result -------------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening: storages still alive stay alive in the record."""
        self.closed = True
        self._refs.clear()
        self._ref_ids.clear()
        self._posted = None
        self._pending.clear()

    def categorize(self, uid: int, graph_alive: bool = True) -> str:
        if self.category[uid]:
            return self.category[uid]
        return "saved_activations" if graph_alive and uid in self.saved else "temporaries"

    def _on_host(self, uid: int, category: str) -> bool:
        """Whether storage ``uid`` (of ``category``) lives in host memory: FSDP2's CPU offload (``host_categories``)."""
        if category in self.host_categories:
            return True
        born = self.born[uid]
        return ("optimizer" in self.host_categories and category == "temporaries" and 0 <= born < len(self.phases)
                and self.phases[born] == "optimizer")

    def _host(self) -> tuple[list[int], int, int, int]:
        """Per op, the bytes alive in host memory; the most at once; those alive at the start and at the end."""
        n = len(self.alive)
        delta = [0] * (n + 1)
        start = end = 0
        for uid, size in enumerate(self.sizes):
            if not size or not self._on_host(uid, self.categorize(uid)):
                continue
            start += size if self.born[uid] < 0 else 0
            end += size if self.died[uid] == ALIVE else 0
            delta[max(self.born[uid], 0)] += size
            delta[min(self.died[uid], n)] -= size
        host, alive = [], 0
        for i in range(n):
            alive += delta[i]
            host.append(alive)
        return host, max([start, *host]), start, end

    def trace(self) -> MemoryTrace:
        self.close()
        self._run_probes()
        alive_after = self.alive
        start = sum(s for s, b in zip(self.sizes, self.born) if b < 0)
        end, host_bytes = self.current, 0
        if self.host_categories:  # the device's timeline: what lives in host memory leaves it
            host, host_bytes, host_start, host_end = self._host()
            alive_after = [a - h for a, h in zip(self.alive, host)]
            start, end = start - host_start, end - host_end
        held = sum(size for _, size in self.library.values())
        if held:
            # a library keeps its workspace for the life of the process: every step of a loop but the process's
            # first holds it from its start, so it counts from the run's start, not from the op that made it
            alive_after = list(alive_after)
            for born, size in self.library.values():
                for i in range(born):
                    alive_after[i] += size
            start += held
        n = len(alive_after)
        if n:
            peak_index = max(range(n), key=alive_after.__getitem__)
            peak = alive_after[peak_index]
            if start > peak:
                peak_index, peak = -1, start
        else:
            peak_index, peak = -1, start
        breakdown = dict.fromkeys(CATEGORIES, 0)
        # after backward the graph is gone: what it saved and is still alive is held by the caller (the output)
        graph_alive = peak_index < 0 or self.phases[peak_index] in ("forward", "loss", "backward")
        for uid, size in enumerate(self.sizes):
            if self.born[uid] <= peak_index < self.died[uid]:
                category = self.categorize(uid, graph_alive)
                if not self.host_categories or not self._on_host(uid, category):
                    breakdown[category] += size
        breakdown["workspace"] = self.workspace.get(peak_index, 0) + held
        module_peak: dict[str, int] = {}
        for name, alive in zip(self.modules, alive_after):
            if alive > module_peak.get(name, -1):
                module_peak[name] = alive
        return MemoryTrace(
            ops=tuple(self.ops), modules=tuple(self.modules), phases=tuple(self.phases), alive=tuple(alive_after),
            start_bytes=start, end_bytes=end, peak_bytes=peak, peak_index=peak_index,
            breakdown=breakdown, module_peak=module_peak,
            module_activation=dict(self._activation), host_bytes=host_bytes,
        )


# -- the function-level side: backward scopes, and the target device's kernels on meta tensors ----------------------

_ADD = torch.ops.aten.add.Tensor


def _next_sequence_nr() -> int:
    """The sequence number the next autograd node made on this thread gets (they count up per thread)."""
    with torch.enable_grad(), torch._C._DisableTorchDispatch():
        node = (torch.zeros((), requires_grad=True) * 1).grad_fn
    assert node is not None
    return int(node._sequence_nr()) + 1

_HOOKED_KEY = "torchcost.post_hook"
_SDPA = torch._C._nn.scaled_dot_product_attention
_DROPOUT = torch._C._VariableFunctions.dropout
_SDPA_NAMES = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _bind(names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


class NodeTags:
    """In a training step, tags each autograd node a torch function makes with the module running it (metadata
    "torchcost.module"), so the ops of backward are attributed to modules too. Called with every torch function's
    output by the run's one function mode (CompositeCatcher), so a training step pays one function-mode trip per
    call, not one per job.

    With a ``tracker``, :meth:`before_backward` also gives the tracker's post-hook to each node after which the
    engine may sum two gradients for one input (MemoryTracker._accumulation): a node with an edge into an input of
    another node that more than one edge goes into. The engine adds a gradient into that input's buffer right after
    the node that made it returned, and sums only where a second one arrives, so no other node needs the hook (a
    chain of layers has none). CompositeCatcher calls it as each backward starts (``Tensor.backward``,
    ``torch.autograd.backward`` or ``torch.autograd.grad``: the step's own, and one a forward runs, as a gradient
    penalty does), when the whole graph that backward runs is made. (Inside a backward torch has the function mode
    off, so a backward a node's backward starts, reentrant checkpointing's, is not seen: its sums are not noted.)"""

    def __init__(self, scope: ScopeTracker, tracker: MemoryTracker | None) -> None:
        self.scope = scope
        self.tracker = tracker
        self._first_node = _next_sequence_nr()  # nodes made before the run (the caller's graph) are never hooked

    def __call__(self, out: Any) -> None:
        if not torch.is_grad_enabled():
            return
        scope = self.scope.current
        for t in (out,) if type(out) is torch.Tensor else tensors_in(out):
            node = t.grad_fn
            if node is not None:
                _metadata(node).setdefault(_SCOPE_KEY, scope)

    def before_backward(self, roots: Any) -> None:
        """A backward from the tensors in ``roots`` (a backward function's arguments) starts: walk the nodes of the
        run below them, and hook each node with an edge into an input that more than one edge goes into (each node
        once; a node made before the run, an input's own graph, the caller's, is neither walked nor hooked, but
        the edges into it count)."""
        if self.tracker is None:
            return
        first, hook = self._first_node, self.tracker.post_hook
        into: dict[tuple[int, int], list[Any]] = {}  # (id of a node, input number) -> the nodes with an edge into it
        # every node met, walked or not, held until the end: a node's Python object may be made anew for each edge
        # to it once none holds it, and an id may be reused once its object is gone
        met: dict[int, Any] = {}
        walked: set[int] = set()
        todo = [t.grad_fn for t in tensors_in(roots) if t.grad_fn is not None]
        while todo:
            node = todo.pop()
            met[id(node)] = node
            if id(node) in walked or node._sequence_nr() < first:
                continue
            walked.add(id(node))
            for child, number in node.next_functions:
                if child is not None:
                    met[id(child)] = child
                    into.setdefault((id(child), number), []).append(node)
                    todo.append(child)
        for sources in into.values():
            if len(sources) > 1:
                for node in sources:
                    meta = _metadata(node)
                    if _HOOKED_KEY not in meta:
                        meta[_HOOKED_KEY] = True
                        node.register_hook(hook)


def _cpu_chooses_flash(b: dict[str, Any]) -> bool:
    """Whether the CPU's own SDPA selector picks its flash kernel for these meta arguments (bound by name): asked
    with CPU stand-ins of the same shapes, dtypes and last-dimension strides (every other stride 0, so that nothing
    of the tensors' size is allocated). The selector's own rules, not a copy of them: it takes 3-d inputs and
    key/value heads that broadcast (timm's multi-query attention), refuses dropout, and follows
    ``torch.backends.cuda.enable_flash_sdp`` and ``sdpa_kernel``."""
    q, k, v, mask = b["query"], b["key"], b["value"], b.get("attn_mask")
    if not all(isinstance(t, torch.Tensor) and t.device.type == "meta" and t.layout == torch.strided
               and t.dim() >= 1 for t in (q, k, v)):
        return False
    if mask is not None and not (isinstance(mask, torch.Tensor) and mask.layout == torch.strided and mask.dim() >= 1):
        return False
    try:
        with torch._C.DisableTorchFunction(), torch._C._DisableTorchDispatch():  # (no mode sees the stand-ins)
            choice = torch._fused_sdp_choice(
                _stand_in(q), _stand_in(k), _stand_in(v), _stand_in(mask) if mask is not None else None,
                float(b.get("dropout_p") or 0.0), bool(b.get("is_causal")), scale=b.get("scale"),
                enable_gqa=bool(b.get("enable_gqa", False)))
    except (RuntimeError, TypeError, ValueError):
        return False
    return bool(choice == _FLASH_CHOICE)


_FLASH_CHOICE = 1  # (torch's SDPBackend: 0 math, 1 flash attention)


def _stand_in(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor with ``t``'s shape, dtype and last stride, every other stride 0: a few elements of storage."""
    last = t.stride(-1)
    storage = torch.empty(max(1, (t.size(-1) - 1) * last + 1), dtype=t.dtype)
    return storage.as_strided(t.shape, (0,) * (t.dim() - 1) + (last,))


def _cpu_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool,
               scale: float | None) -> torch.Tensor:
    """What ``scaled_dot_product_attention`` runs on the CPU once its selector picked the flash kernel, op for op
    as a CPU run dispatches them: 3-d inputs get a batch dimension (and the mask dimensions up to 4), a boolean
    mask becomes an additive one of the query's dtype (``where`` between 0 and -inf), the flash kernel keeps its
    output and log-sum-exp, and a 3-d call's output loses the batch dimension again."""
    three = q.dim() == 3
    if three:
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
        while mask is not None and mask.dim() < 4:
            mask = mask.unsqueeze(0)
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.where(mask, torch.scalar_tensor(0.0, dtype=q.dtype, device=q.device),
                           torch.scalar_tensor(float("-inf"), dtype=q.dtype, device=q.device))
    out: torch.Tensor = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal,
                                                                                   attn_mask=mask, scale=scale)[0]
    return out.squeeze(0) if three else out


class MemoryMode(TorchFunctionMode):
    """On meta tensors, which have no kernels of their own to choose, picks the kernels the target device would run
    where that changes memory. Scaled dot-product attention takes a fused path, which keeps no L x L attention
    matrix: on "cpu" the CPU flash kernel where the CPU's own selector picks it (:func:`_cpu_chooses_flash`), with
    the ops a CPU run makes around it (:func:`_cpu_flash`); on "cuda" FlashAttention-2 (half precision, no mask, head
    dim <= 256) or else memory-efficient attention (equal head counts; a boolean mask becomes an additive bias
    first), as CUDA's selector prefers them. Dropout on "cuda" keeps a 1-byte mask, as the fused CUDA kernel does,
    instead of the float noise tensor of the reference implementation.
    """

    def __init__(self, tracker: MemoryTracker | None, *, target: str) -> None:
        super().__init__()
        if tracker is not None:
            tracker.target = target
        self.target = target
        self._special: dict[Any, Callable[[tuple[Any, ...], dict[str, Any]], Any]] = {_SDPA: self._sdpa}
        if target == "cuda":
            self._special[_DROPOUT] = self._dropout

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        special = self._special.get(func)
        return special(args, kwargs) if special is not None else func(*args, **kwargs)

    def _sdpa(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bind(_SDPA_NAMES, args, kwargs)
        q, k, v = b["query"], b["key"], b["value"]
        mask, dropout, causal = b.get("attn_mask"), float(b.get("dropout_p") or 0.0), bool(b.get("is_causal"))
        if self.target == "cpu" and _cpu_chooses_flash(b):
            with contextlib.suppress(RuntimeError, NotImplementedError):
                return _cpu_flash(q, k, v, mask, causal, b.get("scale"))
        usable = (
            isinstance(q, torch.Tensor) and q.device.type == "meta" and q.dim() == 4 and k.dim() == 4
            and v.dim() == 4 and torch.backends.cuda.flash_sdp_enabled()
            and (q.size(-3) == k.size(-3) or b.get("enable_gqa", False))
            and q.stride(-1) == 1 and k.stride(-1) == 1 and v.stride(-1) == 1
        )
        same_dim = isinstance(v, torch.Tensor) and q.size(-1) == v.size(-1)  # flash kernels need E == E_v (MLA: not)
        if usable and self.target == "cuda":
            scale = b.get("scale")
            if mask is None and q.dtype in (torch.float16, torch.bfloat16) and q.size(-1) <= 256 and same_dim:
                with contextlib.suppress(RuntimeError, NotImplementedError):  # FlashAttention-2
                    return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout, causal, False,
                                                                              scale=scale)[0]
            if q.size(-3) == k.size(-3) and q.dtype in _FLOATS[:3]:
                if mask is not None and mask.dtype == torch.bool:  # the selector turns it into an additive bias
                    mask = torch.zeros_like(mask, dtype=q.dtype).masked_fill_(~mask, float("-inf"))
                with contextlib.suppress(RuntimeError, NotImplementedError):  # memory-efficient attention
                    return torch.ops.aten._scaled_dot_product_efficient_attention(
                        q, k, v, mask, True, dropout, causal, scale=scale)[0]
        return _SDPA(*args, **kwargs)

    @staticmethod
    def _dropout(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bind(("input", "p", "train"), args, kwargs)
        x, p, train = b["input"], b["p"], b["train"]
        if isinstance(x, torch.Tensor) and x.device.type == "meta" and train and 0 < p < 1 and x.numel() > 0:
            return torch.native_dropout(x, p, True)[0]
        return _DROPOUT(*args, **kwargs)
