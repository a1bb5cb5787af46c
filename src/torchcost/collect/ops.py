"""The op collector: one dispatch mode that sees every aten op that runs, prices it with the formula registry and
attributes it to the module scope it ran in.

Each op lands in one of four tallies: counted (a formula priced it), free (it moves, views or allocates data, or
does integer arithmetic only), enclosed (it ran inside a composite priced whole, collect/composites.py) or uncounted
(floating-point arithmetic with no formula: reported, never dropped).

In a training step the other phases are counted too, each in its own tally (``steps``): "loss", "backward",
"recompute" (activation checkpointing's re-run of the forward inside backward) and "optimizer". A
:class:`StepScope` says where such an op belongs: a backward op to the module whose forward made its autograd node
(the node's "torchcost.module" tag), a recomputed op to the module whose forward runs again (global module hooks,
installed for the backward only), an optimizer op to the module holding the parameter it updates (a foreach op is
split per tensor). Free and enclosed tallies are kept for the forward only.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.nn.modules import module as module_mod
from torch.utils._python_dispatch import TorchDispatchMode

from torchcost.collect.fakeops import MISS, FakeShortcuts
from torchcost.collect.keys import LEAVES, key_of, ours
from torchcost.collect.scope import ScopeTracker
from torchcost.collect.shadows import Shadows, factory
from torchcost.collect.sharded import on_shards
from torchcost.collect.unwritten import Unwritten
from torchcost.errors import FormulaError
from torchcost.formulas.backward import GRAD_SPLITS
from torchcost.formulas.registry import (
    Cost,
    Formula,
    FormulaRegistry,
    OpCall,
    flops_of,
    is_free,
    op_key,
    written_arguments,
)
from torchcost.report import OpCount, from_fields
from torchcost.trees import any_tensor, is_floating, tensors_in

if TYPE_CHECKING:
    from torchcost.collect.memory import MemoryTracker

__all__ = ["COMM_NAMESPACES", "STEP_PHASES", "CallKey", "DispatchCollector", "IOPlan", "OpCollector",
           "StepScope", "call_bytes", "collective_kind", "forget_groups", "io_plan", "op_counts"]

_DEVICE = torch.ops.prim.device.default
_SCOPE_KEY = "torchcost.module"  # the autograd-node metadata key of a node's module (memory.NodeTags writes it)
STEP_PHASES = ("forward", "loss", "backward", "recompute", "optimizer")  # the phases of a training step's counts


# -- collectives (simulated distributed runs; docs/conventions.md, "Distributed training") ----------------------------

COMM_NAMESPACES = frozenset({"c10d", "_c10d_functional", "c10d_functional"})
_COPY_NAMESPACES = frozenset({"fsdp"})  # FSDP2's copy-in / copy-out / chunk-cat kernels: copies, free of FLOPs
_NOT_COLLECTIVES = frozenset({"wait_tensor", "wait", "work_wait"})
_KINDS = (("reduce_scatter", "reduce_scatter"), ("allgather", "all_gather"), ("all_gather", "all_gather"),
          ("allreduce", "all_reduce"), ("all_reduce", "all_reduce"), ("broadcast", "broadcast"),
          ("alltoall", "all_to_all"), ("all_to_all", "all_to_all"), ("barrier", "barrier"), ("send", "send"),
          ("recv", "recv"), ("reduce", "reduce"), ("gather", "gather"), ("scatter", "scatter"))
_GROUP_ARGS = ("group_name", "process_group", "group")


def collective_kind(key: str) -> str:
    """"" for an op (its "namespace::name" key) that is no collective, "free" for FSDP's copies and the waits, else
    the collective's kind."""
    namespace, _, name = key.partition("::")
    if namespace in _COPY_NAMESPACES:
        return "free"
    if namespace not in COMM_NAMESPACES:
        return ""
    if name in _NOT_COLLECTIVES:
        return "free"
    return next((kind for word, kind in _KINDS if word in name), "other")


def _nbytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors_in(value))


def collective_bytes(key: str, kind: str, args: tuple[Any, ...], out: Any) -> int:
    """The payload of one collective call (``key`` its "namespace::name"): all-gather its output (the gathered size),
    reduce-scatter and all-to-all its input, every other kind its (first) tensor argument."""
    if kind == "all_gather":
        return _nbytes(out)
    if kind in ("reduce_scatter", "all_to_all"):  # c10d's in-place ops take (outputs, inputs, ...)
        in_place = key.startswith("c10d::")
        return _nbytes(args[1] if in_place and len(args) > 1 else args[0] if args else ())
    if kind == "barrier":
        return 0
    return _nbytes(args[0]) if args else 0


_GROUP_SIZES: dict[object, int] = {}


def forget_groups() -> None:
    """Drop the cached group sizes (a simulated world ended: its group names may come back with other sizes)."""
    _GROUP_SIZES.clear()


def group_size(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The size of the group a collective runs on: from its process-group or group-name argument (0: unknown)."""
    for i, argument in enumerate(func._schema.arguments):
        if argument.name not in _GROUP_ARGS and argument.name != "group_size":
            continue
        value = args[i] if i < len(args) else kwargs.get(argument.name)
        if argument.name == "group_size" and isinstance(value, int):
            return value
        if isinstance(value, str):
            size = _GROUP_SIZES.get(value)
            if size is None:
                try:
                    from torch.distributed import distributed_c10d as c10d

                    resolve = getattr(c10d, "_resolve_process_group")  # noqa: B009  # private, untyped
                    size = _GROUP_SIZES[value] = int(resolve(value).size())
                except Exception:  # an unknown name: the size stays unknown
                    size = 0
            return size
        if isinstance(value, torch.ScriptObject):  # a c10d op's boxed ProcessGroup
            try:
                return int(torch.distributed.ProcessGroup.unbox(value).size())
            except Exception:
                return 0
    return 0


# -- bytes moved (docs/conventions.md, "Time") ------------------------------------------------------------------------

# An op's arguments that it writes (schema alias annotation ``(a!)``): (position, name, write-only). An ``out=``
# argument (keyword-only) is written, never read; an in-place op's ``self`` is read and written. And which of its
# returns are fresh tensors (no alias annotation: not a view or the written argument handed back).
IOPlan = tuple[tuple[tuple[int, str, bool], ...], tuple[bool, ...]]
_NO_PLAN: IOPlan = ((), ())


# Ops that return, beside their output, what they keep for backward, sized by the kernel's choices: batch norm's
# batch statistics (C floats each, empty in eval on the CPU but sized on meta) and embedding_bag's bag offsets,
# sizes and argmax indices (empty or not depending on the mode and the device). Only the output counts, so that
# real and meta runs agree.
_OUTPUT_ONLY = frozenset({"aten::native_batch_norm", "aten::_native_batch_norm_legit",
                          "aten::_native_batch_norm_legit_no_training", "aten::_native_batch_norm_legit_functional",
                          "aten::cudnn_batch_norm", "aten::miopen_batch_norm", "aten::_batch_norm_with_update",
                          "aten::_batch_norm_no_update", "aten::_embedding_bag", "aten::_embedding_bag_forward_only"})


def io_plan(schema: Any) -> IOPlan:
    """The written arguments and fresh returns of an op's schema (read once per op, cached by the collector)."""
    if schema is None:
        return _NO_PLAN
    written = written_arguments(schema)
    fresh = tuple(r.alias_info is None for r in schema.returns)
    if schema.name in _OUTPUT_ONLY:
        fresh = fresh[:1] + (False,) * (len(fresh) - 1)
    return written, fresh


_Tensor = torch.Tensor
_NO_FUNCTION_MODES = torch._C.DisableTorchFunction

# built-in formulas' prices worked out so far (OpCollector._price_once), by what fixes them: a planned leaf call's op
# (collect/leaves.py: the call's metadata number, the op's place in the plan), or a fake or meta twin's call (the
# key its shortcuts made, collect/fakeops.py, which starts with the op) -> (the formula, its Cost, the bytes and
# dtype call_bytes gave)
_PRICED: dict[Any, tuple[Formula, Cost, int, torch.dtype | None]] = {}
_PRICED_MAX = 1 << 14


def priced_work(memo: Any) -> int | None:
    """A call's multiply-accumulates plus the bytes it reads and writes, as :data:`_PRICED` holds its price under
    ``memo`` (collect/leaves.py weighs a kernel by it); None where it holds none."""
    hit = _PRICED.get(memo)
    return None if hit is None else hit[1].macs + hit[2]


def _tensor_nbytes(t: torch.Tensor) -> int:
    """A tensor's bytes: numel x element size of a strided tensor (its view); a sparse one's constituent tensors."""
    try:
        return int(t.nbytes)
    except (RuntimeError, NotImplementedError):  # sparse layouts have no nbytes
        parts: tuple[torch.Tensor, ...] = ()
        try:
            if t.layout == torch.sparse_coo:
                parts = (t._indices(), t._values())
            elif t.layout in (torch.sparse_csr, torch.sparse_bsr):
                parts = (t.crow_indices(), t.col_indices(), t.values())
            elif t.layout in (torch.sparse_csc, torch.sparse_bsc):
                parts = (t.ccol_indices(), t.row_indices(), t.values())
            return sum(int(p.nbytes) for p in parts)
        except (RuntimeError, NotImplementedError):
            return 0


def call_bytes(args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any,
               plan: IOPlan = _NO_PLAN) -> tuple[int, torch.dtype | None]:
    """(bytes read + bytes written, dtype of the first floating-point tensor read) of one op call, from metadata only.

    Read: every distinct tensor argument (by identity: ``x * x`` reads x once), at its own size (numel x element
    size of the view); an ``out=`` argument is not read. Written: the fresh outputs (a returned alias of an argument,
    an in-place op's ``self`` handed back, is not a second write) and the arguments the schema marks written, once
    each. Lists and tuples of tensors are looked into one level deep (the shapes aten ops take)."""
    written, fresh = plan
    skip: tuple[str, ...] = ()
    total = 0
    dtype: torch.dtype | None = None
    seen: set[int] = set()
    if written:
        skip = tuple(name for _, name, write_only in written if write_only)
        for i, name, write_only in written:
            value = args[i] if i < len(args) and not write_only else kwargs.get(name)
            for t in (value,) if isinstance(value, _Tensor) else value if isinstance(value, (list, tuple)) else ():
                if isinstance(t, _Tensor):
                    total += _tensor_nbytes(t)
    values = (*args, *(v for k, v in kwargs.items() if k not in skip)) if kwargs else args
    for value in values:
        if isinstance(value, _Tensor):
            if id(value) not in seen:
                seen.add(id(value))
                total += _tensor_nbytes(value)
                if dtype is None and value.is_floating_point():
                    dtype = value.dtype
        elif isinstance(value, (list, tuple)):
            for t in value:
                if isinstance(t, _Tensor) and id(t) not in seen:
                    seen.add(id(t))
                    total += _tensor_nbytes(t)
                    if dtype is None and t.is_floating_point():
                        dtype = t.dtype
    if out is None:
        return total, dtype
    if isinstance(out, _Tensor):
        if not fresh or fresh[0]:
            total += _tensor_nbytes(out)
        return total, dtype
    if isinstance(out, (list, tuple)):
        outs: set[int] = set()
        single = len(fresh) == 1  # one return that is a list (Tensor[]): each element is fresh as the return is
        for i, t in enumerate(out):
            if isinstance(t, _Tensor):
                if id(t) in outs or (fresh and not fresh[0 if single else min(i, len(fresh) - 1)]):
                    continue
                outs.add(id(t))
                total += _tensor_nbytes(t)
            elif isinstance(t, (list, tuple)):
                total += sum(_tensor_nbytes(x) for x in t if isinstance(x, _Tensor) and id(x) not in outs)
    return total, dtype


@dataclass
class _Stat:
    calls: int = 0
    macs: int = 0
    other_flops: int = 0
    bytes: int = 0

    def add(self, cost: Cost, nbytes: int) -> None:
        self.calls += 1
        self.macs += cost.macs
        self.other_flops += cost.other_flops
        self.bytes += nbytes


def op_counts(stats: dict[str, _Stat]) -> tuple[OpCount, ...]:
    """Per-op tallies as report records, most FLOPs first (ties by name)."""
    counts = [from_fields(OpCount, {"op": k, "calls": s.calls, "macs": s.macs,
                                    "flops": flops_of(s.macs, s.other_flops), "bytes": s.bytes})
              for k, s in stats.items()]
    if len(counts) > 1:
        counts.sort(key=_most_flops_first)
    return tuple(counts)


def _most_flops_first(o: OpCount) -> tuple[int, str]:
    return -o.flops, o.op


# One priced call as the time prediction needs it (timing/roofline.py): (phase, module, op, dtype of its first
# floating input, MACs, other FLOPs, bytes); the collector counts how many calls had each.
CallKey = tuple[str, str, str, "torch.dtype | None", int, int, int]


def _calls(tally: dict[str, int]) -> tuple[OpCount, ...]:
    return tuple(OpCount(k, c) for k, c in sorted(tally.items()))


@dataclass
class _Tally:
    counted: dict[str, dict[str, _Stat]] = field(default_factory=dict)  # module -> op -> tally
    uncounted: dict[str, dict[str, int]] = field(default_factory=dict)  # module -> op -> calls
    name: str = "forward"
    grads: dict[str, list[int]] = field(default_factory=dict)  # module -> [input-gradient, weight-gradient] MACs


# Backward nodes of matrix products -> the next_functions slots of their two factors, whose gradients the node
# computes in this order (torch's derivatives.yaml), each with one mm/bmm
_MATMUL_NODES = {"MmBackward0": (0, 1), "AddmmBackward0": (1, 2), "BmmBackward0": (0, 1), "BaddbmmBackward0": (1, 2)}
_MATMUL_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"})
# Nodes a parameter passes through on its way into a matrix product (transposes, views, expands, casts)
_PASS_THROUGH = frozenset({
    "TBackward0", "TransposeBackward0", "TransposeBackward1", "PermuteBackward0", "ViewBackward0",
    "UnsafeViewBackward0", "ReshapeAliasBackward0", "ExpandBackward0", "ToCopyBackward0", "CloneBackward0",
    "AliasBackward0", "UnsqueezeBackward0", "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2",
    "ConjBackward0"})
_SEEN_KEY = "torchcost.matmuls"  # node metadata: the matrix products this node has run so far


def _from_parameter(node: Any) -> bool:
    """Whether a gradient sent to ``node`` ends in a parameter's .grad (through pass-through nodes only)."""
    while node is not None:
        name = node.name()
        if name == "torch::autograd::AccumulateGrad":
            return isinstance(node.variable, torch.nn.Parameter)
        if name not in _PASS_THROUGH or not node.next_functions:
            return False
        node = node.next_functions[0][0]
    return False


def _matmul_split(macs: int) -> tuple[int, int]:
    """(input-gradient, weight-gradient) MACs of a matrix product run in backward by a matmul node: the k-th product
    the node runs makes the gradient of its k-th factor that needs one; a weight gradient when that factor is a
    parameter. A product run by any other node is in neither."""
    node = torch._C._current_autograd_node()
    slots = _MATMUL_NODES.get(node.name()) if node is not None else None
    if node is None or slots is None:
        return 0, 0
    wanted = [node.next_functions[s][0] for s in slots if node.next_functions[s][0] is not None]
    meta = cast("dict[str, Any]", node.metadata)
    seen = int(meta.get(_SEEN_KEY, 0))
    meta[_SEEN_KEY] = seen + 1
    if seen >= len(wanted):
        return 0, 0
    return (0, macs) if _from_parameter(wanted[seen]) else (macs, 0)


def grad_split(key: str, call: OpCall, macs: int) -> tuple[int, int]:
    """(input-gradient, weight-gradient) MACs of one backward op (0, 0 for ops that are neither)."""
    split = GRAD_SPLITS.get(key)
    if split is not None:
        return split(call)
    return _matmul_split(macs) if key in _MATMUL_OPS else (0, 0)


_SPREAD_KEY = "torchcost.spread"  # node metadata: its tag was handed on to the nodes below it
_ACCUMULATE = "torch::autograd::AccumulateGrad"


def _spread(node: Any) -> None:
    """Hand each node's module tag on to the untagged nodes below it (those made inside a C++ composite such as
    matmul, whose outermost node alone was tagged), once per node: walked from the first node of backward seen."""
    if _SPREAD_KEY in node.metadata:
        return
    node.metadata[_SPREAD_KEY] = True
    todo = [node]
    while todo:
        current = todo.pop()
        tag = current.metadata.get(_SCOPE_KEY)
        for child, _ in current.next_functions:
            if child is None:
                continue
            meta = cast("dict[str, Any]", child.metadata)
            if tag is not None and _SCOPE_KEY not in meta and child.name() != _ACCUMULATE:
                meta[_SCOPE_KEY] = tag
            if _SPREAD_KEY not in meta:
                meta[_SPREAD_KEY] = True
                todo.append(child)


def _node_module(default: str) -> str:
    """The module tag of the autograd node running now (backward), or ``default`` when it has none."""
    node = torch._C._current_autograd_node()
    if node is None:
        return default
    _spread(node)
    name = cast("dict[str, Any]", node.metadata).get(_SCOPE_KEY)
    return name if isinstance(name, str) else default


class StepScope:
    """Where an op of a training step's later phases belongs (see the module docstring). ``owners`` maps id() of
    parameters, gradients and optimizer state to their module (set by run/execute.py before the optimizer step);
    ``adopted`` id() of the optimizer's temporaries to the module of the op that made them, each with a weak
    reference to it: a temporary dies within the step and its id() goes to a later tensor, which must not inherit
    its module (a clone the loop makes and no formula prices, Rprop's, was charged to whichever module the dead
    tensor at that address had: a different split of the optimizer's FLOPs from one run to the next)."""

    def __init__(self, names: Mapping[int, str]) -> None:
        self.names = names  # id(module) -> its first name
        self.stack: list[str] = []
        self.owners: dict[int, str] = {}
        self.adopted: dict[int, tuple[str, weakref.ref[torch.Tensor]]] = {}
        self.last = ""  # the module of the previous op: the fallback for untagged nodes and temporaries
        self._handles: list[Any] = []
        self._thread = 0

    def install(self) -> None:
        """Follow module forwards re-run inside backward (checkpointing's recompute)."""
        if self._handles:
            return
        self._thread = threading.get_ident()
        self._handles.append(module_mod.register_module_forward_pre_hook(self._pre))
        self._handles.append(module_mod.register_module_forward_hook(self._post, always_call=True))

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()
        self.stack.clear()

    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        if threading.get_ident() == self._thread:
            name = self.names.get(id(module))
            self.stack.append(name if name is not None else (self.stack[-1] if self.stack else self.last))

    def _post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() == self._thread and self.stack:
            self.stack.pop()

    def backward(self) -> tuple[str, str]:
        """(phase, module) of an op run during backward: a recompute when a module's forward runs again or grad
        mode is on (the engine runs backward with it off; checkpointing turns it on to recompute)."""
        if self.stack:
            self.last = self.stack[-1]
            return "recompute", self.last
        self.last = _node_module(self.last)
        return ("recompute" if torch.is_grad_enabled() else "backward"), self.last

    def owner(self, call: OpCall) -> str:
        """The module of an optimizer op: the owner of its first tensor that has one, else the previous op's."""
        return self.owner_of(call.inputs)

    def owner_of(self, tensors: Iterable[torch.Tensor]) -> str:
        """:meth:`owner` of an op on ``tensors``, in the order the op takes them."""
        for t in tensors:
            name = self.module_of(t)
            if name is not None:
                self.last = name
                return name
        return self.last

    def module_of(self, t: torch.Tensor) -> str | None:
        """The module a tensor of the optimizer step belongs to: its owner's, else, while it lives, the module of
        the op that made it; None if neither."""
        name = self.owners.get(id(t))
        if name is None:
            made = self.adopted.get(id(t))
            if made is not None and made[1]() is t:
                name = made[0]
        return name


def _foreach_parts(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """A foreach call split into one call per tensor of its first list (list arguments of that length sliced)."""
    first_list = args[0]
    n = len(first_list)

    def part(value: Any, i: int) -> Any:
        return [value[i]] if isinstance(value, (list, tuple)) and len(value) == n else value

    return [(tuple(part(a, i) for a in args), {k: part(v, i) for k, v in kwargs.items()}) for i in range(n)]


def _parts_keys(key: str, args: tuple[Any, ...], kwargs: dict[str, Any], outs: Any) -> list[Any] | None:
    """What fixes the price of each part of a foreach call (:meth:`OpCollector._foreach`; ``outs``: its outputs, one
    a part, or None), all a built-in formula and call_bytes read: the op, its other arguments' values, and per part
    its lists' elements as collect/keys.py's ``key_of`` keys a call's arguments (each tensor's metadata and the first
    place it appears in the part: ``g * g`` reads one tensor; each number's value); None where some value cannot be
    keyed (a tensor beside the lists, a tensor without strides, an object)."""
    n = len(args[0])
    fixed: list[Any] = ["foreach part", key]
    lists: list[Any] = []
    for name, value in (*enumerate(args), *kwargs.items()):
        kind = type(value)
        if kind in (list, tuple) and len(value) == n:
            fixed.append((name, "sliced"))
            lists.append(value)
        elif kind in LEAVES:
            fixed.append((name, kind, value))
        else:
            return None
    if outs is not None:
        lists.append(outs)
    head = tuple(fixed)
    keys: list[Any] = []
    try:
        with _NO_FUNCTION_MODES():
            for i in range(n):
                part: list[Any] = [head]
                key_of([values[i] for values in lists], {}, part)
                keys.append(tuple(part))
    except (TypeError, RuntimeError, NotImplementedError):  # (an object; a tensor without strides)
        return None
    return keys


@dataclass
class OpCollector:
    """Prices the ops the dispatch mode hands it and tallies them per module (by state_dict name)."""

    registry: FormulaRegistry
    scope: ScopeTracker
    counted: dict[str, dict[str, _Stat]] = field(default_factory=dict)  # module -> op -> tally
    uncounted: dict[str, dict[str, int]] = field(default_factory=dict)  # module -> op -> calls
    free: dict[str, int] = field(default_factory=dict)
    enclosed: dict[str, int] = field(default_factory=dict)
    formula_errors: dict[str, str] = field(default_factory=dict)
    counting: bool = True  # set by Recording.phase: false in the phases not counted (the loss of an eval run)
    phase: str = "forward"  # set by Recording.phase
    step: StepScope | None = None  # a training step: where later phases' ops belong
    steps: dict[str, _Tally] = field(default_factory=dict)  # phase (not "forward") -> its tally
    enclosed_depth: int = 0  # > 0 while a composite priced whole runs (its aten ops are enclosed)
    # collectives: (op, kind, group size, phase) -> [calls, bytes]; module -> [calls, bytes]
    comm: dict[tuple[str, str, int, str], list[int]] = field(default_factory=dict)
    comm_modules: dict[str, list[int]] = field(default_factory=dict)
    calls: dict[CallKey, int] = field(default_factory=dict)  # every priced call, for the time prediction
    _cache: dict[int, tuple[str, Formula | None, bool, str, IOPlan]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._forward = _Tally(self.counted, self.uncounted)

    @contextlib.contextmanager
    def enclosing(self) -> Iterator[None]:
        """While inside, the aten ops that run are tallied as enclosed by a composite, not counted."""
        self.enclosed_depth += 1
        try:
            yield
        finally:
            self.enclosed_depth -= 1

    def _lookup(self, func: torch._ops.OpOverload) -> tuple[str, Formula | None, bool, str, IOPlan]:
        hit = self._cache.get(id(func))  # (by id(): an OpOverload hashes in Python; torch keeps each one for good)
        if hit is None:
            key = op_key(func)
            comm = collective_kind(key)
            formula = self.registry.get(key) if not comm else None
            hit = (key, formula, is_free(func, key) or comm == "free", comm, io_plan(func._schema))
            self._cache[id(func)] = hit
        return hit

    def on_aten(self, func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                memo: Any = None) -> None:
        """One op that ran, priced and tallied. ``memo``: a key holding everything its price is read from (the
        arguments' metadata, which of them are the same tensor, the numbers; the fake twin's shortcuts make it,
        collect/fakeops.py), or None. With a key, a built-in formula's price is worked out once
        (:meth:`_price_once`)."""
        if not self.counting:
            return
        key, formula, free, comm, plan = self._lookup(func)
        forward = self.phase == "forward"
        if comm and comm != "free":
            self.record_collective(key, comm, collective_bytes(key, comm, args, out), group_size(func, args, kwargs))
        elif self.enclosed_depth:
            if forward:
                self.enclosed[key] = self.enclosed.get(key, 0) + 1
        elif formula is not None:
            if self.phase == "optimizer" and key.startswith("aten::_foreach_") and args and isinstance(args[0], list):
                self._foreach(key, formula, func, args, kwargs, out, plan)
            else:
                if memo is not None and ours(formula, "torchcost.formulas"):
                    self._price_once(key, formula, func, args, kwargs, out, plan, memo)
                else:
                    self._price(key, formula, OpCall(key, args, kwargs, out, func._schema), plan)
                if self.phase == "optimizer" and isinstance(out, torch.Tensor):
                    self._adopt(out)
        elif free or not any_tensor((args, kwargs, out), is_floating):
            if forward:
                self.free[key] = self.free.get(key, 0) + 1
        else:
            self.record_uncounted(key, OpCall(key, args, kwargs, out, func._schema))

    def _foreach(self, key: str, formula: Formula, func: torch._ops.OpOverload, args: tuple[Any, ...],
                 kwargs: dict[str, Any], out: Any, plan: IOPlan) -> None:
        """An optimizer's foreach call, priced and tallied per tensor of its first list, each part to the module of
        the parameter it is for (StepScope.owner: its first tensor's that has one). A built-in formula's price of a
        part is worked out once in the process for every part of the same key (:func:`_parts_keys`: its tensors'
        metadata, which of them are one tensor, its numbers; a step's parts repeat the parameters' few shapes), then
        only tallied, the part not made into a call."""
        n = len(args[0])
        outs = out if isinstance(out, (list, tuple)) and len(out) == n else None
        memos = _parts_keys(key, args, kwargs, outs) if ours(formula, "torchcost.formulas") else None
        step = self.step
        lists = [v for v in (*args, *kwargs.values()) if isinstance(v, (list, tuple)) and len(v) == n]
        tally = self._phase_tally("optimizer")
        parts = None
        schema = func._schema
        for i in range(n):
            memo = memos[i] if memos is not None else None
            hit = _PRICED.get(memo) if memo is not None else None
            if hit is not None and hit[0] is formula and step is not None:
                module = step.owner_of(values[i] for values in lists if isinstance(values[i], _Tensor))
                self._tally(key, hit[1], hit[2], hit[3], None, (module, tally))
            else:
                if parts is None:
                    parts = _foreach_parts(args, kwargs)
                part_args, part_kwargs = parts[i]
                part_out = [outs[i]] if outs is not None else None
                priced = self._price(key, formula, OpCall(key, part_args, part_kwargs, None, schema), plan, part_out)
                if memo is not None and priced is not None:
                    if len(_PRICED) >= _PRICED_MAX:
                        _PRICED.clear()
                    _PRICED[memo] = (formula, *priced)
            if outs is not None:
                self._adopt(outs[i])

    def priced(self, func: torch._ops.OpOverload, memo: Any) -> tuple[str, Cost, int, torch.dtype | None] | None:
        """What :meth:`on_aten` would tally for a call of ``func`` whose price key is ``memo``, where that is known
        and tallying is all that is left (a built-in formula's price in :data:`_PRICED`, counted, not enclosed, no
        collective, no foreach call); else None. For the optimizer's taped ops (collect/tape.py): looked up once
        for all the parameters of a kind, then :meth:`tally_priced` for each."""
        if not self.counting or self.enclosed_depth or memo is None:
            return None
        key, formula, _, comm, _ = self._lookup(func)
        if formula is None or comm or key.startswith("aten::_foreach_") or not ours(formula, "torchcost.formulas"):
            return None
        hit = _PRICED.get(memo)
        if hit is None or hit[0] is not formula:
            return None
        return key, hit[1], hit[2], hit[3]

    def tally_priced(self, func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                     priced: tuple[str, Cost, int, torch.dtype | None]) -> None:
        """:meth:`on_aten` of a call :meth:`priced` answered for: the price tallied, as a hit of its memo is."""
        key, cost, nbytes, dtype = priced
        self._tally(key, cost, nbytes, dtype,
                    None if self.phase == "forward" else OpCall(key, args, kwargs, out, func._schema))
        if self.phase == "optimizer" and isinstance(out, torch.Tensor):
            self._adopt(out)

    def on_composite(self, key: str, call: OpCall) -> None:
        formula = self.registry.get(key)
        if formula is None:  # a user removed it through overrides: report, never drop
            self.record_uncounted(key)
        else:
            self._price(key, formula, call)

    def _adopt(self, temporary: torch.Tensor) -> None:
        """An optimizer temporary (Adam's denominator, one per parameter in a foreach list) belongs to the module of
        the parameter it was made for, so later ops on it are charged there too."""
        if self.step is not None:
            self.step.adopted[id(temporary)] = (self.step.last, weakref.ref(temporary))

    def record_collective(self, key: str, kind: str, nbytes: int, size: int, module: str | None = None,
                          phase: str | None = None) -> None:
        """One collective call of ``nbytes`` payload on a group of ``size``: in its phase's and its module's tally
        (``module``/``phase`` given: a modelled call, DDP's bucket all-reduce)."""
        if module is None or phase is None:
            where, tally = self._where(None)
            module = where if module is None else module
            phase = tally.name if phase is None else phase
        entry = self.comm.setdefault((key, kind, size, phase), [0, 0])
        entry[0] += 1
        entry[1] += nbytes
        per_module = self.comm_modules.setdefault(module, [0, 0])
        per_module[0] += 1
        per_module[1] += nbytes

    def record_uncounted(self, key: str, call: OpCall | None = None) -> None:
        module, tally = self._where(call)
        per_module = tally.uncounted.setdefault(module, {})
        per_module[key] = per_module.get(key, 0) + 1

    def _where(self, call: OpCall | None) -> tuple[str, _Tally]:
        """The module and the phase tally an op goes to: the running module's forward tally in the forward."""
        if self.phase == "forward" or self.step is None:
            return self.scope.current, self._forward
        if self.phase == "backward":
            phase, module = self.step.backward()
        elif self.phase == "optimizer":
            phase, module = "optimizer", self.step.owner(call) if call is not None else self.step.last
        else:
            phase, module = self.phase, self.scope.current
        return module, self._phase_tally(phase)

    def _phase_tally(self, phase: str) -> _Tally:
        tally = self.steps.get(phase)
        if tally is None:
            tally = self.steps[phase] = _Tally(name=phase)
        return tally

    def on_planned(self, func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                   memo: tuple[int, int] | None) -> None:
        """:meth:`on_aten` for an op of a leaf call run past the modes (collect/leaves.py). ``memo`` names everything
        the op's price is read from (the call's metadata key, the op's place in the plan; None: no key): a built-in
        formula's price for it, and the call's bytes, are worked out once in the process, then only tallied."""
        if memo is not None and self.counting and self.phase == "forward" and not self.enclosed_depth:
            key, formula, _, comm, plan = self._lookup(func)
            if formula is not None and not comm and ours(formula, "torchcost.formulas"):
                self._price_once(key, formula, func, args, kwargs, out, plan, memo)
                return
        self.on_aten(func, args, kwargs, out)

    def _price_once(self, key: str, formula: Formula, func: torch._ops.OpOverload, args: tuple[Any, ...],
                    kwargs: dict[str, Any], out: Any, plan: IOPlan, memo: Any) -> None:
        """:meth:`_price` for a call of a built-in formula whose price ``memo`` fixes (a planned call's place, a fake
        twin's call key): worked out once in the process and kept in :data:`_PRICED`, then only tallied. A call
        that hits is made into an OpCall only where the tally reads it (an optimizer op's module, a backward
        product's gradient split): not in the forward."""
        hit = _PRICED.get(memo)
        if hit is not None and hit[0] is formula:
            self._tally(key, hit[1], hit[2], hit[3],
                        None if self.phase == "forward" else OpCall(key, args, kwargs, out, func._schema))
            return
        priced = self._price(key, formula, OpCall(key, args, kwargs, out, func._schema), plan)
        if priced is not None:
            if len(_PRICED) >= _PRICED_MAX:
                _PRICED.clear()
            _PRICED[memo] = (formula, *priced)

    def _price(self, key: str, formula: Formula, call: OpCall, plan: IOPlan = _NO_PLAN,
               part_out: Any = None) -> tuple[Cost, int, torch.dtype | None] | None:
        """Price one call and tally it (``part_out``: the output of one tensor's part of a foreach call, whose
        OpCall carries none, for its bytes). Returns what was tallied, (cost, bytes, dtype), or None when the call
        was not counted (a formula error, integer arithmetic)."""
        try:
            cost = formula(call)
        except Exception as exc:  # a formula that cannot price this call: report it as uncounted, with why
            self.formula_errors.setdefault(key, f"{type(exc).__name__}: {exc}")
            self.record_uncounted(key)
            return None
        if not isinstance(cost, Cost):
            raise FormulaError(f"the formula for {key} returned {cost!r}; a formula must return torchcost.Cost")
        if cost.macs == 0 and cost.other_flops == 0 and not any_tensor((call.args, call.kwargs, call.out),
                                                                       is_floating):
            if self.phase == "forward":  # integer/bool arithmetic: free, listed with the free ops
                self.free[key] = self.free.get(key, 0) + 1
            return None
        with _NO_FUNCTION_MODES():  # tensor properties would otherwise go through the function modes (4x slower)
            nbytes, dtype = call_bytes(call.args, call.kwargs, call.out if part_out is None else part_out, plan)
        self._tally(key, cost, nbytes, dtype, call)
        return cost, nbytes, dtype

    def tally_owned(self, module: str, priced: tuple[str, Cost, int, torch.dtype | None]) -> None:
        """:meth:`tally_priced` of an optimizer op whose module the caller has found as :meth:`StepScope.owner`
        would (collect/tape.py's replay of a turn, which makes no tensors): the price tallied to ``module``, now
        the step's last module."""
        key, cost, nbytes, dtype = priced
        if self.step is not None:
            self.step.last = module
        self._tally(key, cost, nbytes, dtype, None, (module, self._phase_tally("optimizer")))

    def _tally(self, key: str, cost: Cost, nbytes: int, dtype: torch.dtype | None, call: OpCall | None,
               where: tuple[str, _Tally] | None = None) -> None:
        """One priced call into its phase's and module's tally (``call``: for the module of an optimizer op and the
        gradient split of a backward one; None in the forward; ``where``: the module and tally, found already)."""
        current, tally = self._where(call) if where is None else where
        stats = tally.counted.get(current)
        if stats is None:
            stats = tally.counted[current] = {}
        stat = stats.get(key)
        if stat is None:
            stat = stats[key] = _Stat()
        stat.add(cost, nbytes)
        one = (tally.name, current, key, dtype, cost.macs, cost.other_flops, nbytes)
        self.calls[one] = self.calls.get(one, 0) + 1
        if tally.name == "backward" and cost.macs and call is not None:
            into, weight = grad_split(key, call, cost.macs)
            if into or weight:
                split = tally.grads.setdefault(current, [0, 0])
                split[0] += into
                split[1] += weight

    # -- results --------------------------------------------------------------------------------------------------

    def module_uncounted(self, name: str) -> tuple[OpCount, ...]:
        return _calls(self.uncounted.get(name, {}))

    def totals(self) -> tuple[OpCount, ...]:
        """Every counted op of the forward summed over the modules."""
        return _summed(self.counted)

    def phase_module_sums(self, phase: str) -> dict[str, tuple[int, int]]:
        """Module name -> (MACs, FLOPs) of a later phase's ops ("backward", ...) attributed to that module itself,
        for every module at once."""
        tally = self.steps.get(phase)
        if tally is None:
            return {}
        return {name: (sum(s.macs for s in stats.values()),
                       sum(flops_of(s.macs, s.other_flops) for s in stats.values()))
                for name, stats in tally.counted.items()}

    def phase_module_grads(self, phase: str, name: str) -> tuple[int, int]:
        """(input-gradient, weight-gradient) MACs of a phase's convolutions and matrix products in module ``name``
        itself (backward only; (0, 0) elsewhere)."""
        tally = self.steps.get(phase)
        split = tally.grads.get(name) if tally is not None else None
        return (split[0], split[1]) if split is not None else (0, 0)

    def phase_grads(self, phase: str) -> tuple[int, int]:
        """(input-gradient, weight-gradient) MACs of a phase, summed over the modules."""
        tally = self.steps.get(phase)
        splits = tally.grads.values() if tally is not None else ()
        return sum(s[0] for s in splits), sum(s[1] for s in splits)

    def phase_totals(self, phase: str) -> tuple[tuple[OpCount, ...], tuple[OpCount, ...]]:
        """(counted, uncounted) ops of one phase, summed over the modules."""
        tally = self._forward if phase == "forward" else self.steps.get(phase, _Tally())
        return _summed(tally.counted), _summed_calls(tally.uncounted)

    def uncounted_totals(self) -> tuple[OpCount, ...]:
        return _summed_calls(self.uncounted)

    def free_totals(self) -> tuple[OpCount, ...]:
        return _calls(self.free)

    def enclosed_totals(self) -> tuple[OpCount, ...]:
        return _calls(self.enclosed)


def _summed(counted: dict[str, dict[str, _Stat]]) -> tuple[OpCount, ...]:
    summed: dict[str, _Stat] = {}
    for per_module in counted.values():
        for key, stat in per_module.items():
            total = summed.get(key)
            if total is None:
                total = summed[key] = _Stat()
            total.calls += stat.calls
            total.macs += stat.macs
            total.other_flops += stat.other_flops
            total.bytes += stat.bytes
    return op_counts(summed)


def _summed_calls(uncounted: dict[str, dict[str, int]]) -> tuple[OpCount, ...]:
    summed: dict[str, int] = {}
    for per_module in uncounted.values():
        for key, calls in per_module.items():
            summed[key] = summed.get(key, 0) + calls
    return _calls(summed)


class DispatchCollector(TorchDispatchMode):
    """Sees every aten op below autograd and hands it to the op collector and the memory tracker."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in torch._disable_dynamo, whose first call imports torch._dynamo
        # (about 5 s). This handler compiles nothing, so the wrapper buys nothing and costs every process 5 s.
        return False

    def __init__(self, ops: OpCollector, memory: MemoryTracker | None = None,
                 watch: Callable[[Any, tuple[Any, ...], dict[str, Any]], None] | None = None,
                 twin: bool = False, emulate: str | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        self.ops = ops
        self.memory = memory
        self.watch = watch  # told of each op before it runs (run/guard.py's copy-on-write), or None
        # id() of the ops the watch has said it has no business with (RunWatch.idle): not called for those
        self._idle: set[int] = getattr(watch, "idle", set())
        self.seen = 0  # aten ops seen so far (read by a progress display: collect/recording.py's live_status)
        # whether the run's tensors are fake or meta, standing for real ones: their ops' outputs are made distinct
        self.twin = twin
        # id(op) -> whether its schema's outputs are fresh tensors (none an alias): _distinct
        self._fresh: dict[int, tuple[bool, Any]] = {}
        # while a leaf module's plan is checked (collect/leaves.py): the (op, args, kwargs, output) seen, else None
        self.trace: list[tuple[Any, tuple[Any, ...], dict[str, Any], Any]] | None = None
        # on a twin (fake or meta tensors): ops answered from metadata where the answer is known (collect/fakeops.py)
        self._short = FakeShortcuts(emulate) if twin else None
        # a run that skips kernels: the storages whose values it did not compute (collect/unwritten.py), else None
        self.unwritten: Unwritten | None = None
        # a meta run: the values it knows of its tensors (collect/shadows.py), else None
        self.shadows: Shadows | None = None
        # a fake twin's run that knew no value: its shadows, which see only its factories (collect/shadows.py
        # ``factory``; random ones are drawn on the CPU) until they know a value, and then become :attr:`shadows`
        self.sleeping: Shadows | None = None
        # while a real optimizer step is written down as tapes (collect/tape.py): told of each op after the
        # collectors, with its output and price key
        self.taping: Callable[[Any, tuple[Any, ...], dict[str, Any], Any, Any], None] | None = None

    @property
    def wrap(self) -> Callable[[Any, torch.Tensor, torch.device], Any] | None:
        """How the twin's shortcuts make a fake tensor of a meta one (collect/fakeops.py's FakeWrapper); None when
        the run is not on a twin."""
        return self._short._wrap if self._short is not None else None

    paused = False  # set while ops run that are not the model's (DTensor's shape propagation on global shapes)

    def _distinct(self, func: Any, out: tuple[Any, ...]) -> tuple[Any, ...]:
        """An op's outputs with any tensor returned twice made two tensors, where its schema says every output is a
        fresh tensor (on a twin: fake or meta tensors). A Python meta kernel may return one tensor twice
        (mkldnn_rnn_layer_backward's bias gradient, for bias_ih and bias_hh) where the real kernel returns two, as
        the fake tensors' dispatch cache also does once it has seen the call (it makes each output anew from
        metadata). Autograd steals a gradient only when nothing else holds it: left shared, one was copied, and the
        first fake analysis in a process reported another peak than every later one."""
        known = self._fresh.get(id(func))
        if known is None:
            schema = getattr(func, "_schema", None)
            fresh = schema is not None and all(r.alias_info is None for r in schema.returns)
            known = self._fresh[id(func)] = (fresh, func)
        if not known[0]:
            return out
        seen: set[int] = set()
        fixed: list[Any] | None = None
        for i, t in enumerate(out):
            if isinstance(t, torch.Tensor):
                if id(t) in seen:
                    fixed = fixed if fixed is not None else list(out)
                    fixed[i] = t.clone()  # (this mode is off inside its own handler: the fake mode makes it)
                seen.add(id(t))
        return tuple(fixed) if fixed is not None else out

    @classmethod
    def _on_twin_again(cls, short: FakeShortcuts, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The op on other arguments that say the same (collect/shadows.py ``Shadows.dispatch``): its price and
        view are then worked out from the arguments it was called with, not taken from this run's."""
        out = cls._on_twin(short, func, args, kwargs)
        short.priced = short.viewed = None
        return out

    @staticmethod
    def _on_twin(short: FakeShortcuts, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The op on the twin's tensors: the shortcuts' answer, else run (:attr:`FakeShortcuts.priced` and
        :attr:`FakeShortcuts.viewed` then say what the answer was)."""
        out = short.answer(func, args, kwargs)
        if out is MISS:
            out = short.run(func, args, kwargs)
        return out

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        short = self._short
        if func is _DEVICE and short is not None:  # a fake tensor asking its device: not an op that ran
            device = short.device(args)
            if device is not MISS:
                return device
        kwargs = kwargs or {}
        self.seen += 1
        if self.watch is not None and id(func) not in self._idle:
            self.watch(func, args, kwargs)
        if self.paused:
            return func(*args, **kwargs)
        for kind in types:
            if kind.__name__ == "DTensor":  # let DTensor run the op: its local ops (local shapes) come back here
                return on_shards(self.__torch_dispatch__, func, args, kwargs)  # (an optimizer's foreach op: here)
        memo = viewed = None
        unwritten = self.unwritten
        reads = unwritten.before(func, args, kwargs) if unwritten else False  # (it raises on a read of values)
        shadows = self.shadows
        if shadows is None and self.sleeping is not None:
            if self.sleeping:  # (it came to know a value: from now on every op is followed)
                shadows = self.shadows = self.sleeping
            elif factory(func):
                shadows = self.sleeping
        if reads:
            out = unwritten.run(func, args, kwargs)  # type: ignore[union-attr]
        elif short is None:
            out = func(*args, **kwargs)
        else:
            # (a meta run follows the values it knows, but not inside a composite priced whole: its lowering's
            # values are its own; what it writes is still seen)
            out = (self._on_twin(short, func, args, kwargs) if shadows is None else
                   shadows.dispatch(func, args, kwargs, lambda: self._on_twin(short, func, args, kwargs),
                                    not self.ops.enclosed_depth,
                                    lambda a, k: self._on_twin_again(short, func, a, k)))
            memo, viewed = short.priced, short.viewed
        if func is _DEVICE:  # fake tensors ask their device through the dispatcher: not an op that ran
            return out
        if type(out) is tuple and len(out) > 1 and self.twin:
            out = self._distinct(func, out)
        if reads:
            unwritten.after(func, args, kwargs, out)  # type: ignore[union-attr]
        if self.trace is not None:
            self.trace.append((func, args, kwargs, out))
        self.ops.on_aten(func, args, kwargs, out, memo)
        memory = self.memory
        if memory is not None:
            if viewed is not None:
                memory.on_view(func, args, kwargs, out, viewed)
            else:
                memory.on_op(func, args, kwargs, out, priced=memo)
        if self.taping is not None:
            self.taping(func, args, kwargs, out, memo)
        return out
