"""One simulated rank, run like a single-device step: the twin is a meta copy wrapped by the real torch.distributed
wrappers (parallel/strategy.py) inside a fake world (parallel/world.py), materialised as fake CPU tensors, then run
by run/execute.py under the usual Recording. Which ranks are run, and which one is reported, is decided here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torchcost.collect.recording import Recording
from torchcost.collect.storages import local_tensor
from torchcost.formulas.registry import FormulaRegistry
from torchcost.inputs import outside_inference_mode
from torchcost.parallel.config import Parallel
from torchcost.parallel.ddp import DDPModel
from torchcost.parallel.strategy import apply_strategy, tied_parameters
from torchcost.parallel.world import make_mesh, simulated_world
from torchcost.report import ParallelInfo
from torchcost.run.execute import Ran, execute
from torchcost.run.guard import kept
from torchcost.run.step import FAKE_MODE_CACHE, StepOptions, Twin, answers_on_twin, make_twin
from torchcost.trees import map_tensors

__all__ = ["ranks_to_run", "run_parallel"]

_CPU = torch.device("cpu")


def _chunk(n: int, parts: int, i: int) -> int:
    """Rows of chunk ``i`` when torch.chunk splits ``n`` rows in ``parts`` (FSDP2's and DTensor's Shard layout)."""
    size = -(-n // parts)
    return max(0, min(size, n - i * size))


def ranks_to_run(model: nn.Module, plan: Parallel) -> list[int]:
    """The ranks whose analysis can differ: the first rank of every layout of the local shards. A rank's layout is,
    for each parameter, the sizes its shards can take there: the tensor-parallel chunk of each dimension the TP
    styles may shard (dim 0, and dim 1 of a matrix), and FSDP2's data-parallel chunk of dim 0 of the whole parameter
    and of its TP-local rows (FSDP2 shards the TP-local tensor). A superset of what tells two ranks apart, so ranks
    merged here hold shards of the same sizes; exact when every dimension divides evenly. One rank when
    ``plan.rank`` is given."""
    if plan.rank is not None:
        return [plan.rank]
    last = plan.world - 1
    if plan.apply is not None:
        return [0, last]
    # (parameters of one shape have one layout: their distinct shapes tell the same ranks apart, a few instead of
    # hundreds, and a rank's layout depends on its coordinates only)
    shapes = list(dict.fromkeys(tuple(p.shape) for p in model.parameters()))
    seen: dict[tuple[int, ...], int] = {}
    done: set[tuple[int, int]] = set()  # (the coordinates whose layout is in seen, with a rank before this one)
    for rank in range(plan.world):
        coord = plan.coordinate(rank)
        dp_i = coord[0] if plan.dp > 1 else 0
        tp_i = coord[-1] if plan.tp > 1 else 0
        if (dp_i, tp_i) in done:
            continue
        done.add((dp_i, tp_i))
        sig = []
        for shape in shapes:
            rows = shape[0] if shape else 1
            tp_rows = _chunk(rows, plan.tp, tp_i) if plan.tp > 1 and shape else rows
            if plan.tp > 1 and shape:
                sig.append(tp_rows)
                if len(shape) > 1:
                    sig.append(_chunk(shape[1], plan.tp, tp_i))
            if plan.fsdp > 1:
                sig.append(_chunk(rows, plan.fsdp, dp_i))
                if plan.tp > 1:
                    sig.append(_chunk(tp_rows, plan.fsdp, dp_i))
        seen.setdefault(tuple(sig), rank)
    # one rank of each layout (rank 0's first): where every rank holds the same shard sizes, one run answers for all
    return sorted(seen.values())


# FSDP2's CPUOffloadPolicy keeps these in host memory, and steps the optimizer there
_OFFLOADED = frozenset({"parameters", "gradients", "optimizer_state", "optimizer"})


@dataclass
class ParallelExtras:
    """The hooks run/execute.py calls around a simulated rank's step: FSDP2's lazy initialisation before it, its
    storage frees and re-allocations followed during it, DDP's modelled buckets."""

    plan: Parallel
    ddp: DDPModel | None = None
    target: str | None = None  # the analysis target: which backend the collectives stand for ("cpu": gloo)
    _kept: list[torch.Tensor] = field(default_factory=list)

    def prepare(self, rec: Recording, model: nn.Module, opt: torch.optim.Optimizer | None) -> None:
        from torch.distributed.fsdp import FSDPModule

        if isinstance(model, FSDPModule):
            state = model._get_fsdp_state()
            with answers_on_twin():  # (its views of each sharded parameter, answered from metadata: run/step.py)
                state._lazy_init()
        if rec.memory is not None:
            rec.memory.stands_for = self.target  # the fake CPU twin's ops (and collectives) stand for the target
            if self.plan.offload:
                rec.memory.host_categories = _OFFLOADED
        if self.ddp is not None and rec.memory is not None:
            self._kept = self.ddp.bucket_buffers(model)
            rec.memory.add_baseline(self._kept, "comm_buffers")

    @contextlib.contextmanager
    def during(self, rec: Recording) -> Iterator[None]:
        from torch.distributed.tensor._sharding_prop import ShardingPropagator

        propagate = ShardingPropagator._propagate_tensor_meta_non_cached

        def unseen_propagate(prop: ShardingPropagator, op_schema: Any) -> Any:
            with rec.unseen():
                return propagate(prop, op_schema)

        setattr(ShardingPropagator, "_propagate_tensor_meta_non_cached", unseen_propagate)  # noqa: B010
        try:
            with self._storage_hooks(rec):
                yield
        finally:
            setattr(ShardingPropagator, "_propagate_tensor_meta_non_cached", propagate)  # noqa: B010

    @contextlib.contextmanager
    def _storage_hooks(self, rec: Recording) -> Iterator[None]:
        memory = rec.memory
        if memory is None:
            yield
            return
        from torch.distributed.fsdp._fully_shard import _fsdp_param, _fsdp_param_group

        alloc, free = _fsdp_param.alloc_storage, _fsdp_param.free_storage
        group_alloc = getattr(_fsdp_param_group, "alloc_storage")  # noqa: B009  # imported there from _fsdp_param

        def alloc_storage(tensor: torch.Tensor) -> None:
            alloc(tensor)
            memory.resized(tensor, "unsharded_params")

        def free_storage(tensor: torch.Tensor) -> None:
            free(tensor)
            memory.resized(tensor, "unsharded_params")

        _fsdp_param.alloc_storage = alloc_storage
        _fsdp_param.free_storage = free_storage
        setattr(_fsdp_param_group, "alloc_storage", alloc_storage)  # noqa: B010
        try:
            yield
        finally:
            _fsdp_param.alloc_storage, _fsdp_param.free_storage = alloc, free
            setattr(_fsdp_param_group, "alloc_storage", group_alloc)  # noqa: B010

    def finish(self, rec: Recording, model: nn.Module, opt: torch.optim.Optimizer | None) -> None:
        if self.ddp is not None and self.plan.dp > 1 and rec.ops.counting is not None:
            self.ddp.record(rec.ops, model, training=model.training and any(
                p.grad is not None for p in model.parameters()))


def _fake_twin(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], plan: Parallel,
               mesh: Any) -> tuple[Twin, list[str]]:
    """The meta twin wrapped for ``plan``, materialised as fake CPU tensors, with its inputs."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    twin = make_twin(model, args, kwargs, "meta", _CPU)
    names = {id(p): n for n, p in model.named_parameters()}
    units = apply_strategy(twin.model, plan, mesh)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake_mode.cache_enabled = FAKE_MODE_CACHE  # (as a training step's twin: run/step.py)
    converter = fake_mode.fake_tensor_converter

    def convert(t: torch.Tensor) -> torch.Tensor:
        moved = converter.from_meta_and_device(fake_mode, t, _CPU)
        return moved.requires_grad_(t.requires_grad) if t.is_floating_point() else moved

    ties = tied_parameters(twin.model)  # to_empty replaces each registration of a shared parameter on its own
    with fake_mode, torch.no_grad(), answers_on_twin():  # (to_empty's ops answered from metadata where they may be)
        twin.model.to_empty(device=_CPU)
        for module in twin.model.modules():  # tensors held as plain attributes, not parameters or buffers
            for attr, value in list(vars(module).items()):
                if isinstance(value, torch.Tensor) and value.device.type == "meta" and attr != "_local_tensor":
                    setattr(module, attr, convert(value))
    _retie(ties)
    twin_args, twin_kwargs = map_tensors((twin.args, twin.kwargs), convert)
    # apply= may wrap blocks (checkpoint_wrapper): the optimizer's parameters are found under their clean names
    by_name = {_clean_name(n): p for n, p in twin.model.named_parameters()}
    names = {pid: _clean_name(n) for pid, n in names.items()}
    params = {pid: by_name[name] for pid, name in names.items() if name in by_name}
    foreach = False if plan.tp > 1 and plan.fsdp <= 1 else None  # plain norms beside DTensors: no foreach lists
    return Twin(twin.model, twin_args, twin_kwargs, "fake", _CPU, params, fake_mode, foreach=foreach), units


_WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_fsdp_wrapped_module.", "_orig_mod.")


def _clean_name(name: str) -> str:
    """A parameter's name without the prefixes wrapper modules insert (checkpoint_wrapper, FSDP1, torch.compile)."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def _retie(ties: list[list[tuple[nn.Module, str]]]) -> None:
    """Register the first registration's (new) parameter in the others' places again, as the model had it."""
    for (module, name), *others in ties:
        shared = module._parameters[name]
        for other, other_name in others:
            other._parameters[other_name] = shared


def _one_rank(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], registry: FormulaRegistry,
              options: StepOptions, memory: bool, run_device: torch.device, plan: Parallel,
              rank: int) -> tuple[Ran, list[str]]:
    with simulated_world(rank, plan.world):
        mesh = make_mesh(plan.mesh_shape, plan.mesh_dims)
        twin, units = _fake_twin(model, args, kwargs, plan, mesh)
        ddp = DDPModel(plan) if plan.ddp > 1 else None
        twin.extras = ParallelExtras(plan, ddp, options.target)
        ran = execute(twin.model, twin.args, twin.kwargs, registry, options, memory, run_device, twin)
        if ddp is not None:
            ran.parallel = ParallelInfo(strategy="", world=0, mesh_shape=(), mesh_dims=(), rank=rank,
                                        buckets=tuple(ddp.buckets))
    return ran, units


def _signature(ran: Ran) -> tuple[Any, ...]:
    ops = ran.recording.ops
    return tuple(sorted((k, v[0], v[1]) for k, v in ops.comm.items()))


def run_parallel(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], registry: FormulaRegistry,
                 options: StepOptions, memory: bool, run_device: torch.device, plan: Parallel) -> Ran:
    """Run the ranks :func:`ranks_to_run` picks; return the one with the highest peak (ties: the later rank), its
    ``parallel`` field saying which ranks were run and whether they differ."""
    ranks = ranks_to_run(model, plan)
    runs: list[tuple[int, Ran, int, list[str]]] = []
    with outside_inference_mode(), kept(model):  # (each rank's twin shares the model's functions: run/guard.py)
        for rank in ranks:
            ran, units = _one_rank(model, args, kwargs, registry, options, memory, run_device, plan, rank)
            peak = ran.recording.memory.trace().peak_bytes if ran.recording.memory is not None else 0
            runs.append((rank, ran, peak, units))
    best = max(range(len(runs)), key=lambda i: (runs[i][2], i))
    rank, ran, _, units = runs[best]
    differ = len({(peak, _signature(r)) for _, r, peak, _ in runs}) > 1
    buckets = ran.parallel.buckets if ran.parallel is not None else ()
    ran.parallel = ParallelInfo(
        strategy=plan.strategy, world=plan.world, mesh_shape=plan.mesh_shape, mesh_dims=plan.mesh_dims, rank=rank,
        coordinate=plan.coordinate(rank), ranks_analyzed=tuple(r for r, _, _, _ in runs),
        rank_peaks=tuple(p for _, _, p, _ in runs), ranks_differ=differ, fsdp=plan.fsdp, tp=plan.tp, ddp=plan.ddp,
        reshard_after_forward=plan.reshard_after_forward, offload=plan.offload,
        param_dtype=_dtype_name(plan.param_dtype), reduce_dtype=_dtype_name(plan.reduce_dtype),
        bucket_cap_mb=float(plan.bucket_cap_mb) if plan.ddp > 1 else 0.0, buckets=buckets,
        fsdp_units=tuple(units), tp_plan=_plan_name(model, plan))
    for other in runs:
        if other[1] is not ran:  # the other ranks' tensors die now (their recordings hold the records only)
            other[1].recording.ops.comm.clear()
    return ran


def _dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype).removeprefix("torch.") if dtype is not None else ""


def _plan_name(model: nn.Module, plan: Parallel) -> str:
    if plan.tp <= 1 or plan.apply is not None:
        return ""
    if plan.tp_plan is not None:
        return "custom"
    gpt2 = any(type(m).__name__ == "Conv1D" for m in model.modules())
    return "built-in (HF GPT-2)" if gpt2 else "built-in (HF Llama-style)"


def local_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the local shards of ``tensors`` (numel x itemsize)."""
    return sum(local_tensor(t).numel() * t.element_size() for t in tensors)
