"""analyze(): the one orchestrator. Prepare inputs, run the collectors over one forward, restore the model, build
the report."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchcost.collect.memory import MemoryMode, MemoryTrace, MemoryTracker, module_tensors
from torchcost.collect.ops import CompositeCatcher, DispatchCollector, OpCollector, OpStat
from torchcost.collect.scope import ModuleCalls, ScopeTracker
from torchcost.errors import DtypeError, InputError, ModelError, ShapeError, TorchcostError
from torchcost.formulas import REGISTRY, Formula
from torchcost.formulas.registry import Cost
from torchcost.inputs import floating_dtype, model_device, model_dtype, prepare_inputs
from torchcost.report import CostReport, MemoryBreakdown, MemoryReport, MemoryTimeline, ModuleCost, OpCount
from torchcost.run.step import (
    DEFAULT_LOSS_NAME,
    StepOptions,
    Twin,
    check_options,
    default_loss,
    describe_optimizer,
    make_optimizer,
    make_twin,
    optimizer_tensors,
    warm_optimizer,
)
from torchcost.shapes import ShapeTree, describe
from torchcost.trees import spec_of, tensor_bytes, tensors_in

__all__ = ["analyze"]

_MODES = ("eval", "train")


def analyze(
    model: nn.Module,
    *args: Any,
    kwargs: Mapping[str, Any] | None = None,
    input_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    device: str | torch.device | None = None,
    mode: str = "eval",
    formulas: Mapping[object, Formula] | None = None,
    optimizer: str | torch.optim.Optimizer | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    amp: str | None = None,
    target: str | None = None,
    memory: bool = True,
) -> CostReport:
    """Analyse one forward pass of ``model`` and return a :class:`CostReport`.

    Inputs are passed exactly as the model takes them: ``analyze(model, x)``, ``analyze(model, a, b)``,
    ``analyze(model, kwargs={"input_ids": ids})``. Or ``input_size=(1, 3, 224, 224)`` (a list of shapes for several
    inputs) makes random inputs of ``dtype`` (default: the model's floating dtype) on the model's device.

    ``mode="eval"`` (default) runs the model in eval mode under ``torch.no_grad()``; ``mode="train"`` runs the
    forward in training mode with autograd on (dropout active, batch statistics). Either way the model comes back
    with the same modes, flags, buffers and attributes it had. ``formulas`` overrides formulas for this run only.

    A model on the meta device (and meta inputs) gives the same counts and shapes without allocating any memory.

    Memory (``r.peak_memory``, ``r.memory``, per module ``peak_memory`` and ``activation_bytes``) is measured from
    tensor lifetimes in the same pass. ``mode="train"`` measures a whole training step instead of a forward:
    forward, loss (``loss_fn(output)``, default ``output.float().pow(2).mean()``), backward and ``step()`` of
    ``optimizer`` ("adamw" by default, "adam", "sgd" with momentum, or an optimizer instance whose class and
    hyper-parameters are copied), under ``torch.autocast`` when ``amp="bf16"``/``"fp16"``. The step runs on a copy of
    the model on meta or fake tensors: the model and the optimizer given are never touched. FLOPs and MACs still
    count the forward only. ``target`` ("cpu"/"cuda"; default the model's device, "cuda" for a meta model) is the
    device whose allocation behaviour memory follows. ``memory=False`` skips the memory measurement.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"analyze() needs an nn.Module as its first argument, got {type(model).__name__}")
    if mode not in _MODES:
        raise InputError(f"mode must be one of {', '.join(_MODES)}; got {mode!r}")
    run_device = torch.device(device) if device is not None else model_device(model)
    call_args, call_kwargs = prepare_inputs(args, kwargs, input_size, dtype, run_device, model_dtype(model))
    registry = REGISTRY.with_overrides(formulas) if formulas else REGISTRY
    check_options(mode, optimizer, loss_fn, amp, target)
    options = StepOptions(mode, (optimizer if optimizer is not None else "adamw") if mode == "train" else None,
                          loss_fn, amp, target or _default_target(run_device))
    method = _method(run_device, options)
    if method == "real":
        ran = _execute(model, call_args, call_kwargs, registry, options, memory, run_device, None)
    else:
        twin_device = run_device if method == "fake" and run_device.type in ("cpu", "cuda") else torch.device("cpu")
        twin = make_twin(model, call_args, call_kwargs, method, twin_device)
        try:
            ran = _execute(twin.model, twin.args, twin.kwargs, registry, options, memory, run_device, twin)
        except ModelError as exc:
            if method != "fake" or run_device.type == "meta" or not _fake_trouble(exc):
                raise
            # the model does not run on fake tensors (data-dependent control flow): a real copy, on the real device
            _check_room_for_copy(model, options, exc)
            twin = make_twin(model, call_args, call_kwargs, "copy", run_device)
            ran = _execute(twin.model, twin.args, twin.kwargs, registry, options, memory, run_device, twin)
    return _build_report(ran.model, ran.scope, ran.collector, ran.args, ran.kwargs, run_device, mode, ran)


# -- running: the forward on the model itself, or the forward (and training step) on its twin -----------------------

_FAKE_WORDS = ("fake", "meta", "data-dependent", "data dependent", "datadependent", "dynamicoutputshape")


def _fake_trouble(exc: BaseException) -> bool:
    """Whether a twin run failed because its tensors hold no data (not because the model is wrong)."""
    cause: BaseException | None = exc
    while cause is not None:
        module = type(cause).__module__
        if module.startswith(("torch._subclasses", "torch.fx.experimental")):
            return True
        if any(w in f"{type(cause).__name__}: {cause}".lower() for w in _FAKE_WORDS):
            return True
        cause = cause.__cause__
    return False


def _check_room_for_copy(model: nn.Module, options: StepOptions, exc: ModelError) -> None:
    """A real copy needs the weights again, plus gradients and optimizer state in a training step: refuse it when
    that would not fit in the memory available (CPU models; /proc/meminfo), rather than exhaust the machine."""
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    need = weights * (4 if options.mode == "train" else 1)
    available = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    if available is not None and need > available // 2:
        raise ModelError(
            f"the model cannot run on fake tensors ({exc.reason}) and a real copy for the measurement would need "
            f"about {need / 2**30:.1f} GiB, more than half the {available / 2**30:.1f} GiB available; make its "
            f"forward independent of tensor values, or analyse it with mode='eval'", reason=exc.reason) from exc


def _default_target(device: torch.device) -> str:
    return "cuda" if device.type in ("cuda", "meta") else "cpu"


def _method(device: torch.device, options: StepOptions) -> str:
    """How the run is done: "real" (the model itself), or on a twin: "fake" (fake tensors on the model's device, or
    on the CPU where autocast is needed and meta cannot autocast) or "meta"."""
    same = device.type == options.target
    if options.mode == "eval":
        if same or (device.type == "meta" and not options.amp):
            return "real"
        return "fake" if options.amp else "meta"
    if same and device.type in ("cpu", "cuda"):
        return "fake"
    return "fake" if options.amp else "meta"


@dataclass
class _Ran:
    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    scope: ScopeTracker
    collector: OpCollector
    tracker: MemoryTracker | None
    options: StepOptions
    method: str
    optimizer: str = ""
    loss: str = ""
    gradient_bytes: int = 0
    optimizer_state_bytes: int = 0


def _execute(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    registry: Any,
    options: StepOptions,
    memory: bool,
    run_device: torch.device,
    twin: Twin | None,
) -> _Ran:
    """One pass under the collectors: the forward (eval), or forward + loss + backward + optimizer step (train)."""
    train = options.mode == "train"
    scope = ScopeTracker(model)
    collector = OpCollector(registry, scope)
    tensors_device = twin.device if twin is not None else run_device
    counted = None if twin is not None and twin.method == "fake" else tensors_device.type
    tracker = MemoryTracker(scope, round_to=options.round_to, device_type=counted) if memory else None
    emulate = options.target if tensors_device.type == "meta" else None
    amp_device = tensors_device.type if tensors_device.type in ("cpu", "cuda") else "cpu"
    ran = _Ran(model, args, kwargs, scope, collector, tracker, options,
               twin.method if twin is not None else ("meta" if run_device.type == "meta" else "real"))
    preserve = _preserved(model) if twin is None else contextlib.nullcontext()
    fake = twin.context() if twin is not None else contextlib.nullcontext()
    rng_device = run_device if twin is None or twin.method == "copy" else torch.device("cpu")
    with preserve, _quiet_fastpaths(), _rng_forked(rng_device), fake:
        model.train(train)
        opt = make_optimizer(options.optimizer, model, twin, options.target) if train and twin is not None else None
        if opt is not None:
            warm_optimizer(opt)
            ran.optimizer = describe_optimizer(opt)
        if tracker is not None:
            tracker.add_baseline(model.parameters(), "parameters")
            tracker.add_baseline(model.buffers(), "buffers")
            tracker.add_baseline(module_tensors(model), "buffers")
            tracker.add_baseline(tensors_in((args, kwargs)), "inputs")
            tracker.add_baseline(optimizer_tensors(opt), "optimizer_state")
        grad = torch.enable_grad() if train else torch.no_grad()
        autocast = (torch.autocast(amp_device, dtype=options.amp_dtype) if options.amp_dtype is not None
                    else contextlib.nullcontext())
        saved = (torch.autograd.graph.saved_tensors_hooks(tracker.pack, tracker.unpack)
                 if tracker is not None and train else contextlib.nullcontext())
        if tracker is not None:
            scope.listeners.append(tracker)
        scope.install()
        out: Any = None
        loss: Any = None
        try:
            # MemoryMode only has work in a training step (tagging backward scopes) or on meta (picking the target's
            # kernels); otherwise it would be a pass-through costing a Python call per torch function.
            memory_mode = (MemoryMode(tracker, tag=train, target=emulate) if train or emulate is not None
                           else contextlib.nullcontext())
            with grad, memory_mode, CompositeCatcher(collector), DispatchCollector(collector, tracker):
                try:
                    with saved, autocast:
                        out = model(*args, **kwargs)
                        if train:
                            collector.active = False
                            _set_phase(tracker, "loss")
                            loss_fn = options.loss_fn or default_loss
                            loss = loss_fn(out)
                            ran.loss = _loss_name(options.loss_fn)
                except TorchcostError:
                    raise
                except Exception as exc:
                    if train and not collector.active:
                        raise _step_failure("computing the loss", exc) from exc
                    raise _wrap_failure(exc, scope, model) from exc
                finally:
                    scope.remove()
                if train:
                    try:
                        _set_phase(tracker, "backward")
                        if isinstance(loss, torch.Tensor) and loss.requires_grad:
                            loss.backward()
                        _set_phase(tracker, "optimizer")
                        if opt is not None:
                            opt.step()
                    except Exception as exc:
                        phase = tracker.phase if tracker is not None else "the step"
                        raise _step_failure(phase, exc) from exc
            if train:
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                state = optimizer_tensors(opt)
                ran.gradient_bytes = _storage_bytes(grads, counted, options.round_to)
                ran.optimizer_state_bytes = _storage_bytes(state, counted, options.round_to)
                if tracker is not None:
                    tracker.label(grads, "gradients")
                    tracker.label(state, "optimizer_state")
        finally:
            collector.active = True
            scope.remove()
            if tracker is not None:
                tracker.close()
        del out, loss
    return ran


def _storage_bytes(tensors: list[torch.Tensor], device_type: str | None, round_to: int) -> int:
    """Bytes of the distinct storages behind ``tensors`` on ``device_type`` (None: all), in allocator blocks."""
    storages = {id(s): s for s in (t.untyped_storage() for t in tensors)
                if device_type in (None, s.device.type)}
    return sum(-(-s.nbytes() // round_to) * round_to for s in storages.values())


def _set_phase(tracker: MemoryTracker | None, phase: str) -> None:
    if tracker is not None:
        tracker.phase = phase


def _loss_name(loss_fn: Any) -> str:
    if loss_fn is None:
        return DEFAULT_LOSS_NAME
    return getattr(loss_fn, "__qualname__", None) or type(loss_fn).__name__


def _step_failure(phase: str, exc: Exception) -> ModelError:
    reason = _reason(exc)
    return ModelError(f"the training step failed in {phase}: {reason}", reason=reason)


# -- leaving the model as it came in --------------------------------------------------------------------------------

@dataclass
class _ModuleState:
    module: nn.Module
    training: bool
    attrs: frozenset[str]
    parameters: dict[str, Any]
    buffers: dict[str, Any]
    buffer_values: dict[str, torch.Tensor]


@contextlib.contextmanager
def _preserved(model: nn.Module) -> Iterator[None]:
    """Restore every module's mode, attributes, parameter and buffer objects and buffer values on the way out."""
    states = []
    for module in model.modules():
        values = {n: b.detach().clone() for n, b in module._buffers.items()
                  if b is not None and b.device.type != "meta"}
        states.append(_ModuleState(module, module.training, frozenset(module.__dict__), dict(module._parameters),
                                   dict(module._buffers), values))
    try:
        yield
    finally:
        for s in states:
            for attr in set(s.module.__dict__) - s.attrs:
                del s.module.__dict__[attr]
            s.module._parameters.clear()
            s.module._parameters.update(s.parameters)
            s.module._buffers.clear()
            s.module._buffers.update(s.buffers)
            with torch.no_grad():
                for name, value in s.buffer_values.items():
                    s.buffers[name].copy_(value)
            s.module.training = s.training


@contextlib.contextmanager
def _quiet_fastpaths() -> Iterator[None]:
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


def _rng_forked(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Fork the CPU RNG, and the accelerator's where the run happens there (dropout draws from it)."""
    if device.type in ("cpu", "meta") or not hasattr(torch, device.type):
        return torch.random.fork_rng(devices=[])
    backend = getattr(torch, device.type)
    index = device.index if device.index is not None else backend.current_device()
    return torch.random.fork_rng(devices=[index], device_type=device.type)


# -- failures -------------------------------------------------------------------------------------------------------

_DTYPE_WORDS = ("dtype", "scalar type", "expected tensor for argument", "must have the same type",
                "should be the same", "index tensor", "not implemented for")
_SHAPE_WORDS = ("shape", "size", "dimension", "dim ", "kernel", "channels", "groups", "cannot be multiplied",
                "expected input", "expected 2d", "expected 3d", "expected 4d", "expected 5d", "out of range",
                "expected more than 1 value", "non-empty", "reduction dim")  # meta kernels: "same reduction dim"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0].strip()
    return first.rstrip(".")


def _wrap_failure(exc: Exception, scope: ScopeTracker, model: nn.Module) -> ModelError:
    failure = scope.failure
    reason = _reason(exc)
    lowered = reason.lower()
    if any(w in lowered for w in _DTYPE_WORDS):
        cls: type[ModelError] = DtypeError
    elif any(w in lowered for w in _SHAPE_WORDS):
        cls = ShapeError
    else:
        cls = ModelError
    ran: tuple[str, ...] = ()
    if failure is None:  # failed before any module scope (should not happen: the model itself is a module)
        name, type_name, inputs = "", type(model).__name__, "?"
    else:
        name, type_name, ran = failure.name, failure.type, failure.ran_before
        inputs = describe(failure.input_spec) if failure.input_spec else "(keyword arguments only)"
    where = f"layer '{name}' ({type_name})" if name else f"the forward of {type_name} itself"
    shown: list[str] = list(dict.fromkeys(ran))
    before = ", ".join(f"{n} ({scope.types[n]})" for n in shown[-8:]) if shown else "none"
    if len(shown) > 8:
        before = f"{len(shown) - 8} more, then " + before
    message = f"{where} failed on input {inputs}: {reason}. Layers that ran before it: {before}."
    return cls(message, layer=name, layer_type=type_name, input_shapes=inputs, reason=reason,
               ran_before=tuple(shown))


# -- the report -----------------------------------------------------------------------------------------------------

def _build_report(
    model: nn.Module,
    scope: ScopeTracker,
    collector: OpCollector,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    device: torch.device,
    mode: str,
    ran: _Ran | None = None,
) -> CostReport:
    from torchcost import __version__

    trace = ran.tracker.trace() if ran is not None and ran.tracker is not None else None

    owners: dict[int, set[str]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p in module._parameters.values():
            if p is not None:
                owners.setdefault(id(p), set()).add(mod_name)
    named = dict(model.named_modules())
    leaves = {n for n, m in named.items() if not any(True for _ in m.children())}

    def build(name: str, module: nn.Module, depth: int) -> tuple[ModuleCost, dict[int, Any], dict[int, Any]]:
        # the subtree's distinct parameters and buffers, gathered from the children's (one pass over the tree, not
        # a module.parameters() walk per module)
        params = {id(p): p for p in module._parameters.values() if p is not None}
        buffers = {id(b): b for b in module._buffers.values() if b is not None}
        built = []
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if named.get(full) is child:
                node, child_params, child_buffers = build(full, child, depth + 1)
                built.append(node)
            else:  # a module object already built under another name: its tensors still belong to this subtree
                child_params = {id(p): p for p in child.parameters()}
                child_buffers = {id(b): b for b in child.buffers()}
            params.update(child_params)
            buffers.update(child_buffers)
        children = tuple(built)
        prefix = name + "."

        def inside(owner: str) -> bool:
            return owner in named and (not name or owner == name or owner.startswith(prefix))

        shared = sum(p.numel() for pid, p in params.items()
                     if any(not inside(o) for o in owners.get(pid, ())))
        stats = collector.counted.get(name, {})
        ops = tuple(sorted((OpCount(k, s.calls, s.macs, Cost(s.macs, s.other_flops).flops)
                            for k, s in stats.items()), key=lambda o: (-o.flops, o.op)))
        self_macs = sum(o.macs for o in ops)
        self_flops = sum(o.flops for o in ops)
        uncounted = tuple(OpCount(k, c) for k, c in sorted(collector.uncounted.get(name, {}).items()))
        calls = scope.calls.get(name, ModuleCalls())
        memory: dict[str, int] = {}
        if trace is not None:
            memory = {
                "param_bytes": sum(p.numel() * p.element_size() for p in params.values()),
                "buffer_bytes": sum(b.numel() * b.element_size() for b in buffers.values()),
                "activation_bytes": trace.module_activation.get(name, 0),
                "peak_memory": max((trace.module_peak.get(name, 0), *(c.peak_memory for c in children))),
            }
        return ModuleCost(
            name=name, type=type(module).__name__, depth=depth,
            params=sum(p.numel() for p in params.values()),
            trainable_params=sum(p.numel() for p in params.values() if p.requires_grad),
            shared_params=shared,
            buffers=sum(b.numel() for b in buffers.values()),
            calls=calls.calls, input_shape=calls.input_spec, output_shape=calls.output_spec,
            output_bytes=calls.output_bytes,
            macs=self_macs + sum(c.macs for c in children), flops=self_flops + sum(c.flops for c in children),
            self_macs=self_macs, self_flops=self_flops, ops=ops, uncounted=uncounted, children=children,
            **memory,
        ), params, buffers

    root = build("", model, 0)[0]
    totals: dict[str, OpStat] = {}
    for per_module in collector.counted.values():
        for key, stat in per_module.items():
            total = totals.setdefault(key, OpStat())
            total.calls += stat.calls
            total.macs += stat.macs
            total.other_flops += stat.other_flops
    uncounted_totals: dict[str, int] = {}
    for per_uncounted in collector.uncounted.values():
        for key, calls in per_uncounted.items():
            uncounted_totals[key] = uncounted_totals.get(key, 0) + calls
    params = {id(p): p for p in model.parameters()}
    buffers = {id(b): b for b in model.buffers()}
    inputs: ShapeTree = spec_of((*args, *kwargs.values())) if kwargs else spec_of(args)
    dtype = floating_dtype(model)
    return CostReport(
        model_type=type(model).__name__,
        root=root,
        params=sum(p.numel() for p in params.values()),
        trainable_params=sum(p.numel() for p in params.values() if p.requires_grad),
        buffers=sum(b.numel() for b in buffers.values()),
        macs=root.macs,
        flops=root.flops,
        input_shape=inputs,
        input_bytes=tensor_bytes((args, list(kwargs.values()))),
        param_bytes=sum(p.numel() * p.element_size() for p in params.values()),
        buffer_bytes=sum(b.numel() * b.element_size() for b in buffers.values()),
        activation_bytes=sum(c.output_bytes for n, c in scope.calls.items() if n in leaves),
        ops=tuple(sorted((OpCount(k, s.calls, s.macs, Cost(s.macs, s.other_flops).flops) for k, s in totals.items()),
                         key=lambda o: (-o.flops, o.op))),
        uncounted=tuple(OpCount(k, c) for k, c in sorted(uncounted_totals.items())),
        free_ops=tuple(OpCount(k, c) for k, c in sorted(collector.free.items())),
        enclosed_ops=tuple(OpCount(k, c) for k, c in sorted(collector.enclosed.items())),
        formula_errors=tuple(sorted(collector.formula_errors.items())),
        uncalled=tuple(n for n in named if n and n not in scope.calls
                       and not any(c.startswith(n + ".") for c in scope.calls)),
        device=str(device),
        dtype=str(dtype).removeprefix("torch.") if dtype is not None else "none",
        mode=mode,
        torch_version=torch.__version__,
        torchcost_version=__version__,
        memory=_memory_report(trace, ran) if trace is not None and ran is not None else None,
    )


def _memory_report(trace: MemoryTrace, ran: _Ran) -> MemoryReport:
    i = trace.peak_index
    return MemoryReport(
        mode=ran.options.mode,
        peak_bytes=trace.peak_bytes,
        peak_phase=trace.phases[i] if i >= 0 else "",
        peak_op=trace.ops[i] if i >= 0 else "",
        peak_module=trace.modules[i] if i >= 0 else "",
        peak_index=i,
        at_peak=MemoryBreakdown(**trace.breakdown),
        start_bytes=trace.start_bytes,
        end_bytes=trace.end_bytes,
        gradient_bytes=ran.gradient_bytes,
        optimizer_state_bytes=ran.optimizer_state_bytes,
        optimizer=ran.optimizer,
        loss=ran.loss,
        amp=ran.options.amp or "",
        target=ran.options.target,
        method=ran.method,
        round_to=ran.options.round_to,
        timeline=MemoryTimeline(trace.ops, trace.modules, trace.phases, trace.alive),
    )
