"""The report: frozen dataclasses holding everything one analysis found, as exact integers.

Renderers read these and compute nothing; ``to_dict``/``from_dict`` round-trip exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from torchcost.errors import InputError
from torchcost.shapes import ShapeTree, TensorSpec

__all__ = ["SCHEMA_VERSION", "CollectiveCount", "CostReport", "MeasuredTime", "MemoryBreakdown", "MemoryReport",
           "MemoryTimeline", "ModuleCost", "ModulePrediction", "ModuleTime", "OpCount", "ParallelInfo", "PhaseCount",
           "PhasePrediction", "TimePrediction"]

SCHEMA_VERSION = 3
# version 1 lacks the training-step fields, versions 1-2 the bytes moved and the time fields: they read back as 0/None
READABLE_VERSIONS = (1, 2, 3)


_T = TypeVar("_T")


def from_fields(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass ``cls`` made from ``values``, a dict of every one of its fields, without
    its ``__init__`` (one frozen-attribute set per field: a report holds a node per module and a record per op and
    module, and their ``__init__`` was a large part of building it). The instance is a plain one: equality, hash,
    repr and ``replace()`` read its fields as for any other. The dict becomes the instance's: it is not copied."""
    instance = object.__new__(cls)
    object.__setattr__(instance, "__dict__", values)
    return instance


@dataclass(frozen=True)
class OpCount:
    """One op's calls and cost, in one module (self) or in the whole model. ``flops`` includes ``2 * macs``.
    ``bytes`` is what its calls read and wrote (docs/conventions.md, "Time"; 0 for uncounted and free ops)."""

    op: str
    calls: int
    macs: int = 0
    flops: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class CollectiveCount:
    """One collective of a simulated rank's step (``parallel=``): an op of the ``c10d``/``_c10d_functional``
    namespaces (or DDP's modelled bucket all-reduce, ``ddp::bucket_all_reduce``), in one phase, on groups of one size.

    ``bytes`` is the payload by the convention of docs/conventions.md, "Distributed training": all-gather the
    gathered (output) size, reduce-scatter the input size, all-reduce / broadcast / send / recv the tensor's size.
    ``wire_bytes`` is what one rank sends with ring algorithms: (n-1)/n of the payload for all-gather and
    reduce-scatter, 2(n-1)/n for all-reduce, the payload otherwise."""

    op: str
    kind: str  # all_gather | reduce_scatter | all_reduce | broadcast | all_to_all | send | recv | barrier | other
    calls: int
    bytes: int
    group_size: int
    phase: str

    @property
    def wire_bytes(self) -> int:
        n = max(self.group_size, 1)
        if self.kind in ("all_gather", "reduce_scatter"):
            return self.bytes * (n - 1) // n
        if self.kind == "all_reduce":
            return 2 * self.bytes * (n - 1) // n
        return self.bytes


@dataclass(frozen=True)
class ParallelInfo:
    """How a ``parallel=`` run was simulated: ``strategy`` ("fsdp2", "ddp", "tp", "fsdp2+tp", "ddp+tp", or "custom"
    for the user's own ``apply``), ``world`` ranks on a mesh of ``mesh_shape`` (dimension names ``mesh_dims``),
    the rank the report is about (``rank``, at ``coordinate`` on the mesh), every rank analysed with its peak
    (``ranks_analyzed``/``rank_peaks``) and whether their peaks or collectives differ (``ranks_differ``).
    ``fsdp_units`` are the modules given their own ``fully_shard`` ("" the root), ``buckets`` DDP's bucket sizes in
    bytes, in the order their all-reduces run."""

    strategy: str
    world: int
    mesh_shape: tuple[int, ...]
    mesh_dims: tuple[str, ...]
    rank: int
    coordinate: tuple[int, ...] = ()
    ranks_analyzed: tuple[int, ...] = ()
    rank_peaks: tuple[int, ...] = ()
    ranks_differ: bool = False
    fsdp: int = 1
    tp: int = 1
    ddp: int = 1
    reshard_after_forward: bool = True
    offload: bool = False
    param_dtype: str = ""
    reduce_dtype: str = ""
    bucket_cap_mb: float = 0.0
    buckets: tuple[int, ...] = ()
    fsdp_units: tuple[str, ...] = ()
    tp_plan: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParallelInfo:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


@dataclass(frozen=True)
class PhaseCount:
    """One phase of a training step ("forward", "loss", "backward", "recompute", "optimizer"): its MACs, FLOPs,
    counted ops and uncounted ops (docs/conventions.md, "Training step"). In the backward, ``input_grad_macs`` and
    ``weight_grad_macs`` split the MACs of its convolutions, matrix products and recurrent layers into those that make
    gradients of activations (inputs) and of parameters (weights); the rest of ``macs`` is in neither."""

    name: str
    macs: int
    flops: int
    ops: tuple[OpCount, ...] = ()
    uncounted: tuple[OpCount, ...] = ()
    input_grad_macs: int = 0
    weight_grad_macs: int = 0
    bytes: int = 0  # read + written by the phase's counted ops (docs/conventions.md, "Time")


@dataclass(frozen=True)
class ModuleCost:
    """One module of the tree, named by its state_dict path ("" for the model itself).

    ``params`` counts the distinct parameters in the module's subtree (a tied weight once); ``shared_params`` is the
    part of them that some module outside this subtree also uses. ``macs``/``flops`` include the children;
    ``self_macs``/``self_flops`` are the ops run in this module's own forward, outside any child.

    Memory (bytes, from tensor lifetimes): ``param_bytes``/``buffer_bytes`` of the distinct tensors in the subtree;
    ``activation_bytes``, the storages created while the module ran that were still alive when it returned (its
    outputs unless they are views or in-place results of its inputs, and what it kept for backward), summed over
    calls; ``peak_memory``, the bytes alive in the whole process at the worst op run inside it (forward, and in a
    training step its backward too). ``output_bytes`` is the plain size of its outputs, views included.

    Calls: ``input_shape``/``output_shape`` are those of the first call, ``shapes_differ`` says a later call took or
    returned other shapes. ``output_shape`` is what ``forward`` returned, before the module's own forward hooks run
    (torch runs torchcost's global hooks first): a hook that replaces the output is not reflected; ops run in the
    module's own forward pre-hooks count in the module, ops run in its own forward hooks count in its caller.

    A module object held by several parents appears under each name, each charged with the calls made through it
    (by the parent running when it is called); ``same_as`` is then the first name (its ``named_modules()`` name) on
    every other one, "" on that one and on every module with a single name. Totals count its parameters once.

    Training step (mode="train"; 0 otherwise): ``backward_macs``/``backward_flops`` are the backward ops of the
    autograd nodes this module's forward made (``self_backward_*`` outside its children), ``recompute_*`` the
    forward ops it ran again inside backward (activation checkpointing), ``optimizer_flops`` the optimizer's work on
    its parameters; all but ``self_backward_*`` include the children. ``input_grad_macs``/``weight_grad_macs`` split
    the backward MACs of its convolutions, matrix products and recurrent layers (PhaseCount), children included.

    Simulated distributed runs (``parallel=``): ``comm_bytes``/``comm_calls`` are the payload bytes and calls of the
    collectives run in the module's forward, backward (like backward ops) and optimizer step, children included
    (CollectiveCount); 0 otherwise.

    Bytes moved (docs/conventions.md, "Time"): ``bytes`` is what the counted ops of the forward read and wrote,
    children included, ``self_bytes`` those of its own ops; ``intensity`` is FLOPs per byte.
    """

    name: str
    type: str
    depth: int
    params: int
    trainable_params: int
    shared_params: int
    buffers: int
    calls: int
    input_shape: ShapeTree
    output_shape: ShapeTree
    output_bytes: int
    macs: int
    flops: int
    self_macs: int
    self_flops: int
    ops: tuple[OpCount, ...] = ()
    uncounted: tuple[OpCount, ...] = ()
    children: tuple[ModuleCost, ...] = ()
    param_bytes: int = 0
    buffer_bytes: int = 0
    activation_bytes: int = 0
    peak_memory: int = 0
    shapes_differ: bool = False
    same_as: str = ""
    backward_macs: int = 0
    backward_flops: int = 0
    self_backward_macs: int = 0
    self_backward_flops: int = 0
    recompute_macs: int = 0
    recompute_flops: int = 0
    optimizer_flops: int = 0
    input_grad_macs: int = 0
    weight_grad_macs: int = 0
    comm_bytes: int = 0
    comm_calls: int = 0
    bytes: int = 0
    self_bytes: int = 0

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def intensity(self) -> float:
        """Arithmetic intensity of the forward: FLOPs per byte read or written (0.0 when no bytes moved)."""
        return self.flops / self.bytes if self.bytes else 0.0

    def walk(self) -> Iterator[ModuleCost]:
        """This module and all below it, in pre-order (iterative: no limit on depth)."""
        todo = [self]
        while todo:
            module = todo.pop()
            yield module
            todo.extend(reversed(module.children))


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes alive at one moment, by what holds them. ``temporaries`` is every other storage made during the run:
    activations not saved for backward (all of them under no_grad), op outputs still referenced, the loss.
    ``workspace`` is memory the op running at that moment holds inside itself (a registered kernel workspace), plus
    the library workspaces of the run (cuBLAS's, on a "cuda" target, held from the run's start when it has a matmul).

    Simulated distributed runs (``parallel=``) add two: ``unsharded_params``, FSDP's all-gathered (unsharded)
    parameters alive at that moment, and ``comm_buffers``, the flat buffers of collectives (FSDP's all-gather input and
    output, its reduce-scatter input and output until they become the sharded gradients; DDP's gradient buckets).
    ``parameters`` are then the local shards (padded). Both are left out of ``to_dict`` when 0."""

    parameters: int = 0
    buffers: int = 0
    inputs: int = 0
    gradients: int = 0
    optimizer_state: int = 0
    saved_activations: int = 0
    temporaries: int = 0
    workspace: int = 0
    unsharded_params: int = 0
    comm_buffers: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) or f.name not in _OPTIONAL_BREAKDOWN}


_OPTIONAL_BREAKDOWN = ("unsharded_params", "comm_buffers")


@dataclass(frozen=True)
class MemoryTimeline:
    """Bytes alive after each op (parallel tuples: op, module, phase, bytes), in the order the ops ran."""

    ops: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    phases: tuple[str, ...] = ()
    bytes: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.bytes)

    def to_dict(self) -> dict[str, list[Any]]:
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryTimeline:
        return cls(**{k: tuple(v) for k, v in data.items()})


@dataclass(frozen=True)
class MemoryReport:
    """Memory of the run, measured from tensor lifetimes (docs/conventions.md, "Memory").

    ``peak_bytes`` counts everything alive at the peak: parameters, buffers, inputs, gradients, optimizer state,
    saved activations, temporaries (``at_peak``). ``peak_phase`` is "forward", "loss", "backward" or "optimizer";
    ``peak_op`` and ``peak_module`` the op after which the peak was reached and the module it ran in ("" for the
    model itself, the loss and the optimizer). ``start_bytes``/``end_bytes``: alive before the first op and after
    the last. ``target`` is the device type whose allocation behaviour the figures follow; ``method`` how they were
    obtained: "real" (the analysed run itself), "meta" or "fake" (a copy of the model on meta or fake tensors, no
    memory allocated), "copy" (a real copy, when the model could not run on fake tensors).

    ``host_bytes``: with FSDP2's CPU offload (``Parallel(offload=True)``), the most bytes held at once in host memory
    (the sharded parameters, their gradients, the optimizer state and the optimizer step's temporaries); they are in
    none of the other figures, which are the device's. 0 otherwise.

    ``measured_peak_bytes`` is the allocator's own peak for a run on real tensors ("real" or "copy"), beside the
    prediction: the prediction's ``start_bytes`` plus the most the allocator handed out above what it held when the
    run started (None: not measured; a run on a twin never is). ``measured_by`` says which allocator: "cuda
    allocator" (``torch.cuda.max_memory_allocated``) or "cpu allocator (profiler)" (torch.profiler's allocation
    events); "" when not measured.
    """

    mode: str
    peak_bytes: int
    peak_phase: str
    peak_op: str
    peak_module: str
    peak_index: int
    at_peak: MemoryBreakdown
    start_bytes: int
    end_bytes: int
    gradient_bytes: int = 0
    optimizer_state_bytes: int = 0
    optimizer: str = ""
    loss: str = ""
    amp: str = ""
    target: str = ""
    method: str = ""
    round_to: int = 1
    timeline: MemoryTimeline = field(default_factory=MemoryTimeline)
    measured_peak_bytes: int | None = None
    measured_by: str = ""
    host_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Every field; the two ``measured_`` ones only when measured, ``host_bytes`` only when some memory is offloaded
        (a report without them reads back the same)."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["at_peak"] = self.at_peak.to_dict()
        data["timeline"] = self.timeline.to_dict()
        if self.measured_peak_bytes is None:
            del data["measured_peak_bytes"], data["measured_by"]
        if not self.host_bytes:
            del data["host_bytes"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryReport:
        values = dict(data)
        values["at_peak"] = MemoryBreakdown(**values["at_peak"])
        values["timeline"] = MemoryTimeline.from_dict(values.get("timeline", {}))
        return cls(**values)


@dataclass(frozen=True)
class ModuleTime:
    """One module's measured time (``analyze(..., time=True)``): ``seconds`` is the median over the hooked repeats
    of its inclusive time per forward (from its forward pre-hook to its forward hook, children included, every call
    of the forward summed; ``calls`` per forward). ``flops_per_s``/``bytes_per_s`` are its forward FLOPs and bytes
    (ModuleCost) divided by ``seconds`` (0.0 when ``seconds`` is 0)."""

    name: str
    calls: int
    seconds: float
    flops_per_s: float = 0.0
    bytes_per_s: float = 0.0


@dataclass(frozen=True)
class MeasuredTime:
    """Wall time of the real model on its own device, measured after the counting run (docs/conventions.md, "Time",
    "Measured"). Every figure is in seconds, a median over ``repeats`` timed runs after ``warmup`` untimed ones,
    with the fastest and slowest run as the spread (``*_min_s``/``*_max_s``). ``clock`` is "perf_counter" (CPU)
    or "cuda events" (CUDA, synchronised); ``threads`` is torch's intra-op thread count.

    ``forward_s`` is the forward without any hook (in a training step: the step's forward phase);
    ``hooked_forward_s`` the same with torchcost's module-boundary hooks on (``hooked_repeats`` runs), the runs the
    per-module figures (``modules``) come from: the hooks cost a little, so the two differ slightly. A training step
    (``mode`` "train") adds ``step_s`` (zero_grad excluded) and its phases: ``forward_s``, ``backward_s`` (the loss
    and backward) and ``optimizer_s``, each the median of its own. ``flops_per_s``/``bytes_per_s``: the report's
    forward FLOPs/bytes over ``forward_s``; ``step_flops_per_s``: the step's FLOPs over ``step_s``."""

    device: str
    mode: str
    clock: str
    threads: int
    repeats: int
    warmup: int
    forward_s: float
    forward_min_s: float
    forward_max_s: float
    hooked_forward_s: float
    hooked_repeats: int
    flops_per_s: float = 0.0
    bytes_per_s: float = 0.0
    step_s: float | None = None
    step_min_s: float | None = None
    step_max_s: float | None = None
    backward_s: float | None = None
    optimizer_s: float | None = None
    step_flops_per_s: float | None = None
    modules: tuple[ModuleTime, ...] = ()

    def module(self, name: str) -> ModuleTime | None:
        """The entry of the module named ``name`` (None: not timed, e.g. never called)."""
        for m in self.modules:
            if m.name == name:
                return m
        return None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["modules"] = [{f.name: getattr(m, f.name) for f in fields(m)} for m in self.modules]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasuredTime:
        values = dict(data)
        values["modules"] = tuple(ModuleTime(**m) for m in values.get("modules", ()))
        return cls(**values)


@dataclass(frozen=True)
class PhasePrediction:
    """One phase's predicted seconds (TimePrediction), and the part of them spent in memory-bound calls."""

    name: str
    seconds: float
    memory_bound_seconds: float = 0.0


@dataclass(frozen=True)
class ModulePrediction:
    """One module's predicted seconds, children included: ``seconds`` its forward, ``step_seconds`` every phase of a
    training step charged to it (its forward in eval). ``bound`` is "memory" when more than half of those (the
    step's in a training step, else the forward's) are in calls whose bytes take longer than their FLOPs,
    "compute" otherwise, "" for a module with no counted op."""

    name: str
    seconds: float
    step_seconds: float
    memory_bound_seconds: float
    bound: str


@dataclass(frozen=True)
class TimePrediction:
    """A roofline prediction of the run's time on named hardware (docs/conventions.md, "Time").

    Each counted call takes max(2 MACs / (matrix peak x matmul_efficiency) + other FLOPs / (vector peak x
    vector_efficiency), bytes / (memory_bandwidth x memory_efficiency)) at the peaks of its dtype; calls add up.
    ``peak_flops``/``vector_flops`` are the dense peaks of ``dtype`` (the report's compute dtype) used for the
    headline and MFU; ``forward_s`` the forward, ``step_s`` the whole step (the forward in eval), computation only:
    ``comm_s`` is the collectives' wire bytes over ``interconnect_bandwidth`` alone, shown beside it (overlap with
    compute is not modelled). ``per_s`` is ``tokens`` (or ``samples``, the first input's batch) over ``step_s``.
    ``mfu``: FLOPs of the step over (``step_time`` x ``peak_flops``) when a step time was given or measured
    (``step_time_source``: "given" or "measured"), else 0."""

    hardware: str
    hardware_name: str
    dtype: str
    peak_flops: float
    vector_flops: float
    memory_bandwidth: float
    matmul_efficiency: float
    vector_efficiency: float
    memory_efficiency: float
    forward_s: float
    step_s: float
    memory_bound_share: float
    phases: tuple[PhasePrediction, ...] = ()
    modules: tuple[ModulePrediction, ...] = ()
    samples: int = 0
    tokens: int = 0
    per_s: float = 0.0
    per_s_unit: str = ""  # "tokens/s" or "samples/s"
    comm_s: float = 0.0
    interconnect: str = ""
    interconnect_bandwidth: float = 0.0
    step_time: float = 0.0
    step_time_source: str = ""
    mfu: float = 0.0
    source: str = ""
    call_overhead: float = 0.0  # seconds added to every call (the "cpu" entry's measured dispatch cost; else 0)

    def module(self, name: str) -> ModulePrediction | None:
        """The entry of module ``name`` (None when it has none)."""
        return next((m for m in self.modules if m.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["phases"] = [{f.name: getattr(p, f.name) for f in fields(p)} for p in self.phases]
        data["modules"] = [{f.name: getattr(m, f.name) for f in fields(m)} for m in self.modules]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimePrediction:
        values = dict(data)
        values["phases"] = tuple(PhasePrediction(**p) for p in values.get("phases", ()))
        values["modules"] = tuple(ModulePrediction(**m) for m in values.get("modules", ()))
        return cls(**values)


@dataclass(frozen=True)
class CostReport:
    """What analyze() found. Totals are ints; ``module(name)`` finds a node by its state_dict name.

    ``tokens`` is what the per-token figures divide by (the table's "Per token" line in a training step:
    ``step_flops / tokens`` against the 6ND rule's ``6 * trainable_params``): the element count of the first input
    (input_ids, by position or by keyword) when it is an integer tensor, 0 otherwise.

    A simulated distributed run (``analyze(..., parallel=Parallel(...))``) reports one rank: every figure is that
    rank's (local shards, local FLOPs, its peak), ``parallel`` says which rank of which world, and ``collectives``
    lists the step's communication; both are absent from the JSON of a single-device run.
    """

    model_type: str
    root: ModuleCost
    params: int
    trainable_params: int
    buffers: int
    macs: int
    flops: int
    input_shape: ShapeTree
    input_bytes: int
    param_bytes: int
    buffer_bytes: int
    activation_bytes: int
    ops: tuple[OpCount, ...]
    uncounted: tuple[OpCount, ...]
    free_ops: tuple[OpCount, ...]
    enclosed_ops: tuple[OpCount, ...]
    formula_errors: tuple[tuple[str, str], ...]
    uncalled: tuple[str, ...]
    device: str
    dtype: str
    mode: str
    torch_version: str
    torchcost_version: str
    schema_version: int = SCHEMA_VERSION
    _index: dict[str, ModuleCost] = field(default_factory=dict, init=False, repr=False, compare=False)
    memory: MemoryReport | None = None
    phases: tuple[PhaseCount, ...] = ()  # a training step's phases, in order; () in eval (the forward is all)
    step_macs: int = 0  # the whole run: every phase (in eval, the forward: equal to macs)
    step_flops: int = 0
    tokens: int = 0  # the tokens the model is fed: numel of its first input when that is an integer tensor, else 0
    collectives: tuple[CollectiveCount, ...] = ()  # a simulated rank's collectives (parallel=); () otherwise
    parallel: ParallelInfo | None = None  # how the rank was simulated (parallel=); None for a single-device run
    measured_time: MeasuredTime | None = None  # analyze(..., time=True): the real model timed; None otherwise
    predicted_time: TimePrediction | None = None  # analyze(..., hardware=): the roofline prediction; None otherwise

    def phase(self, name: str) -> PhaseCount:
        """One phase's counts ("forward", "loss", "backward", "recompute", "optimizer"); zeros if it did not run."""
        for p in self.phases:
            if p.name == name:
                return p
        return PhaseCount(name, self.macs, self.flops) if name == "forward" else PhaseCount(name, 0, 0)

    def __post_init__(self) -> None:
        index = self._index  # every module by name, in pre-order (root.walk()'s order, walked here without a generator)
        todo = [self.root]
        while todo:
            module = todo.pop()
            index[module.name] = module
            if module.children:
                todo.extend(reversed(module.children))

    @property
    def non_trainable_params(self) -> int:
        return self.params - self.trainable_params

    @property
    def total_bytes(self) -> int:
        """Input + parameters + buffers + output activations: torchsummary's 'estimated total', with real dtypes."""
        return self.input_bytes + self.param_bytes + self.buffer_bytes + self.activation_bytes

    @property
    def peak_memory(self) -> int:
        """Bytes alive at the peak of the run (inference, or the whole training step), everything counted; 0 when
        memory was not measured. ``memory`` holds the breakdown, the phase, op and module of the peak."""
        return self.memory.peak_bytes if self.memory is not None else 0

    @property
    def modules(self) -> list[ModuleCost]:
        return list(self.root.walk())

    def module(self, name: str) -> ModuleCost:
        try:
            return self._index[name]
        except KeyError:
            close = [n for n in self._index if name and (name in n or n in name)][:5]
            hint = f"; similar: {', '.join(close)}" if close else ""
            raise InputError(f"no module named {name!r} in {self.model_type}{hint}") from None

    def table(self, *, depth: int | None = None, width: int | None = 120, fold: bool = True,
              color: bool = False, sort: str | None = None, top: int | None = None,
              columns: tuple[str, ...] = ()) -> str:
        """The text table and its footer (the options: :class:`torchcost.render.layout.TableOptions`)."""
        from torchcost.render.layout import TableOptions  # the one upward import: a report prints itself
        from torchcost.render.text import render_text

        return render_text(self, TableOptions(depth=depth, width=width, fold=fold, color=color, sort=sort, top=top,
                                              columns=tuple(columns)))

    def __str__(self) -> str:
        """``print(report)`` shows :meth:`table` with its defaults."""
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema_version": self.schema_version}
        for f in fields(self):
            if f.name in ("root", "schema_version", "_index"):
                continue
            if f.name in ("collectives", "parallel") and self.parallel is None:
                continue
            if f.name == "measured_time" and self.measured_time is None:
                continue
            if f.name == "predicted_time" and self.predicted_time is None:
                continue
            data[f.name] = _encode(getattr(self, f.name))
        if self.phases and self.tokens:  # a training step's derived figures, for readers; from_dict drops them
            data["per_token"] = {"tokens": self.tokens, "step_flops_per_token": self.step_flops / self.tokens,
                                 "six_nd_flops": 6 * self.trainable_params * self.tokens}
        data["modules"] = [_module_dict(m) for m in self.root.walk()]
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostReport:
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise InputError(f"report schema version {version!r} is not one this torchcost reads "
                             f"({', '.join(map(str, READABLE_VERSIONS))})")
        modules = data["modules"]
        built: dict[str, ModuleCost] = {}
        for entry in reversed(modules):  # children come after their parent in pre-order
            kwargs = {k: v for k, v in entry.items() if k != "children"}
            kwargs["input_shape"] = _decode_shape(kwargs["input_shape"])
            kwargs["output_shape"] = _decode_shape(kwargs["output_shape"])
            kwargs["ops"] = tuple(OpCount(**o) for o in kwargs["ops"])
            kwargs["uncounted"] = tuple(OpCount(**o) for o in kwargs["uncounted"])
            kwargs["children"] = tuple(built[c] for c in entry["children"])
            built[entry["name"]] = ModuleCost(**kwargs)
        top = {k: v for k, v in data.items() if k not in ("modules", "per_token")}
        top["schema_version"] = SCHEMA_VERSION  # a version-1 document reads back as this version's report
        top.setdefault("step_macs", top["macs"])  # version 1 had no phases: the run was the forward
        top.setdefault("step_flops", top["flops"])
        top["root"] = built[modules[0]["name"]]
        top["input_shape"] = _decode_shape(top["input_shape"])
        for key in ("ops", "uncounted", "free_ops", "enclosed_ops"):
            top[key] = tuple(OpCount(**o) for o in top[key])
        top["formula_errors"] = tuple(tuple(e) for e in top["formula_errors"])
        top["uncalled"] = tuple(top["uncalled"])
        top["memory"] = MemoryReport.from_dict(top["memory"]) if top.get("memory") is not None else None
        top["collectives"] = tuple(CollectiveCount(**c) for c in top.get("collectives", ()))
        top["parallel"] = ParallelInfo.from_dict(top["parallel"]) if top.get("parallel") is not None else None
        top["measured_time"] = (MeasuredTime.from_dict(top["measured_time"]) if top.get("measured_time") is not None
                                else None)
        top["predicted_time"] = (TimePrediction.from_dict(top["predicted_time"])
                                 if top.get("predicted_time") is not None else None)
        top["phases"] = tuple(PhaseCount(p["name"], p["macs"], p["flops"], tuple(OpCount(**o) for o in p["ops"]),
                                         tuple(OpCount(**o) for o in p["uncounted"]), p.get("input_grad_macs", 0),
                                         p.get("weight_grad_macs", 0), p.get("bytes", 0))
                              for p in top.get("phases", ()))
        return cls(**top)

    @classmethod
    def from_json(cls, text: str) -> CostReport:
        return cls.from_dict(json.loads(text))

    # notebook and HTML views (render/html.py, imported late like table())
    def to_html(self, *, memory_budget: int | str | None = None) -> str:
        """One self-contained HTML page (no network): headline, icicle, memory timeline, module table."""
        from torchcost.render.html import render_html
        from torchcost.units import parse_bytes

        return render_html(self, budget=None if memory_budget is None else parse_bytes(memory_budget))

    def _repr_html_(self) -> str:
        from torchcost.render.html import report_repr_html

        return report_repr_html(self)

    def to_pandas(self) -> Any:
        """A pandas DataFrame, one row per module indexed by name (needs pandas)."""
        from torchcost.render.html import report_frame

        return report_frame(self)


def _module_dict(m: ModuleCost) -> dict[str, Any]:
    data = {f.name: _encode(getattr(m, f.name)) for f in fields(m)
            if f.name != "children" and (f.name not in ("comm_bytes", "comm_calls") or getattr(m, f.name))}
    data["children"] = [c.name for c in m.children]
    return data


def _encode(value: Any) -> Any:
    if isinstance(value, (MemoryReport, ParallelInfo, MeasuredTime, TimePrediction)):
        return value.to_dict()
    if isinstance(value, CollectiveCount):
        return {"op": value.op, "kind": value.kind, "calls": value.calls, "bytes": value.bytes,
                "group_size": value.group_size, "phase": value.phase}
    if isinstance(value, TensorSpec):
        spec = {"shape": list(value.shape), "dtype": value.dtype}
        return {**spec, "kind": value.kind} if value.kind else spec
    if isinstance(value, PhaseCount):
        return {"name": value.name, "macs": value.macs, "flops": value.flops, "ops": _encode(value.ops),
                "uncounted": _encode(value.uncounted), "input_grad_macs": value.input_grad_macs,
                "weight_grad_macs": value.weight_grad_macs, "bytes": value.bytes}
    if isinstance(value, OpCount):
        return {"op": value.op, "calls": value.calls, "macs": value.macs, "flops": value.flops, "bytes": value.bytes}
    if isinstance(value, dict):
        return {"mapping": {k: _encode(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode_shape(value: Any) -> ShapeTree:
    if value is None:
        return None
    if isinstance(value, dict) and "shape" in value:
        return TensorSpec(tuple(value["shape"]), value["dtype"], value.get("kind", ""))
    if isinstance(value, dict) and "mapping" in value:
        return {k: _decode_shape(v) for k, v in value["mapping"].items()}
    return tuple(_decode_shape(v) for v in value)
