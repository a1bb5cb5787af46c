"""analyze(): the one orchestrator. Prepare inputs, run the collectors over one forward, restore the model, build
the report."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchcost.collect.ops import CompositeCatcher, DispatchCollector, OpCollector, OpStat
from torchcost.collect.scope import ModuleCalls, ScopeTracker
from torchcost.collect.shapes import ShapeTree, describe, spec_of, tensor_bytes
from torchcost.errors import DtypeError, InputError, ModelError, ShapeError, TorchcostError
from torchcost.formulas import REGISTRY, Formula
from torchcost.formulas.registry import Cost
from torchcost.report import CostReport, ModuleCost, OpCount

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
) -> CostReport:
    """Analyse one forward pass of ``model`` and return a :class:`CostReport`.

    Inputs are passed exactly as the model takes them: ``analyze(model, x)``, ``analyze(model, a, b)``,
    ``analyze(model, kwargs={"input_ids": ids})``. Or ``input_size=(1, 3, 224, 224)`` (a list of shapes for several
    inputs) makes random inputs of ``dtype`` (default: the model's floating dtype) on the model's device.

    ``mode="eval"`` (default) runs the model in eval mode under ``torch.no_grad()``; ``mode="train"`` runs the
    forward in training mode with autograd on (dropout active, batch statistics). Either way the model comes back
    with the same modes, flags, buffers and attributes it had. ``formulas`` overrides formulas for this run only.

    A model on the meta device (and meta inputs) gives the same counts and shapes without allocating any memory.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"analyze() needs an nn.Module as its first argument, got {type(model).__name__}")
    if mode not in _MODES:
        raise InputError(f"mode must be one of {', '.join(_MODES)}; got {mode!r}")
    model_device, model_dtype = _model_device_dtype(model)
    run_device = torch.device(device) if device is not None else model_device
    call_args, call_kwargs = _prepare_inputs(args, kwargs, input_size, dtype, run_device, model_dtype)
    registry = REGISTRY.with_overrides(formulas) if formulas else REGISTRY

    scope = ScopeTracker(model)
    collector = OpCollector(registry, scope)
    with _preserved(model), _quiet_fastpaths(), torch.random.fork_rng(devices=[]):
        model.train(mode == "train")
        grad = torch.no_grad() if mode == "eval" else torch.enable_grad()
        scope.install()
        try:
            with grad, CompositeCatcher(collector), DispatchCollector(collector):
                model(*call_args, **call_kwargs)
        except TorchcostError:
            raise
        except Exception as exc:
            raise _wrap_failure(exc, scope, model) from exc
        finally:
            scope.remove()
    return _build_report(model, scope, collector, call_args, call_kwargs, run_device, mode)


# -- inputs ---------------------------------------------------------------------------------------------------------

def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    device = torch.device("cpu")
    dtype = torch.get_default_dtype()
    for t in (*model.parameters(), *model.buffers()):
        device = t.device
        if t.is_floating_point():
            return t.device, t.dtype
    return device, dtype


def _is_shape(value: Any) -> bool:
    return (isinstance(value, (tuple, list, torch.Size)) and len(value) > 0
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value))


def _prepare_inputs(
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any] | None,
    input_size: Any,
    dtype: Any,
    device: torch.device,
    model_dtype: torch.dtype,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise InputError(f"kwargs must be a mapping of keyword arguments, got {type(kwargs).__name__}")
    if input_size is not None:
        if args:
            raise InputError("give either inputs or input_size, not both")
        shapes = [input_size] if _is_shape(input_size) else input_size
        if not isinstance(shapes, (list, tuple)) or not shapes or not all(_is_shape(s) for s in shapes):
            raise InputError(
                f"input_size must be a shape of positive ints such as (1, 3, 224, 224), or a list of shapes; "
                f"got {input_size!r}")
        dtypes = list(dtype) if isinstance(dtype, (list, tuple)) else [dtype] * len(shapes)
        if len(dtypes) != len(shapes):
            raise InputError(f"{len(shapes)} input sizes but {len(dtypes)} dtypes")
        for d in dtypes:
            if d is not None and not isinstance(d, torch.dtype):
                raise InputError(f"dtype must be a torch.dtype such as torch.float32, got {d!r}")
        made = tuple(_random_input(tuple(s), d or model_dtype, device) for s, d in zip(shapes, dtypes))
        return made, dict(kwargs or {})
    if not args and not kwargs:
        raise InputError("give the model's inputs (analyze(model, x)) or input_size=(1, 3, 224, 224)")
    return _own_copy(args, device), _own_copy(dict(kwargs or {}), device)


def _random_input(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if device.type == "meta":
        return torch.empty(shape, dtype=dtype, device=device)
    if dtype.is_floating_point or dtype.is_complex:
        gen = torch.Generator(device=device).manual_seed(0)  # never touches the global RNG
        return torch.randn(shape, dtype=dtype, device=device, generator=gen)
    return torch.zeros(shape, dtype=dtype, device=device)  # index 0 is valid for every embedding


def _own_copy(obj: Any, device: torch.device) -> Any:
    """Copies of the user's tensors (so in-place ops in forward cannot change them); moved to meta for a meta run."""
    if isinstance(obj, torch.Tensor):
        if device.type == "meta" and obj.device.type != "meta":
            return obj.to("meta")
        return obj if obj.device.type == "meta" else obj.detach().clone().requires_grad_(obj.requires_grad)
    if isinstance(obj, dict):
        return {k: _own_copy(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_own_copy(v, device) for v in obj)
    if isinstance(obj, list):
        return [_own_copy(v, device) for v in obj]
    return obj


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


# -- failures -------------------------------------------------------------------------------------------------------

_DTYPE_WORDS = ("dtype", "scalar type", "expected tensor for argument", "must have the same type",
                "should be the same", "index tensor", "not implemented for")
_SHAPE_WORDS = ("shape", "size", "dimension", "dim ", "kernel", "channels", "groups", "cannot be multiplied",
                "expected input", "expected 2d", "expected 3d", "expected 4d", "expected 5d", "out of range",
                "expected more than 1 value", "non-empty")


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
    before = ", ".join(shown[-8:]) if shown else "none"
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
) -> CostReport:
    from torchcost import __version__

    owners: dict[int, set[str]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p in module._parameters.values():
            if p is not None:
                owners.setdefault(id(p), set()).add(mod_name)
    named = dict(model.named_modules())
    leaves = {n for n, m in named.items() if not any(True for _ in m.children())}

    def build(name: str, module: nn.Module, depth: int) -> ModuleCost:
        children = tuple(
            build(f"{name}.{child_name}" if name else child_name, child, depth + 1)
            for child_name, child in module.named_children()
            if named.get(f"{name}.{child_name}" if name else child_name) is child
        )
        params = {id(p): p for p in module.parameters()}
        inside = {n for n in named if n == name or not name or n.startswith(name + ".")}
        shared = sum(p.numel() for pid, p in params.items()
                     if any(o not in inside for o in owners.get(pid, ())))
        stats = collector.counted.get(name, {})
        ops = tuple(sorted((OpCount(k, s.calls, s.macs, Cost(s.macs, s.other_flops).flops)
                            for k, s in stats.items()), key=lambda o: (-o.flops, o.op)))
        self_macs = sum(o.macs for o in ops)
        self_flops = sum(o.flops for o in ops)
        uncounted = tuple(OpCount(k, c) for k, c in sorted(collector.uncounted.get(name, {}).items()))
        calls = scope.calls.get(name, ModuleCalls())
        return ModuleCost(
            name=name, type=type(module).__name__, depth=depth,
            params=sum(p.numel() for p in params.values()),
            trainable_params=sum(p.numel() for p in params.values() if p.requires_grad),
            shared_params=shared,
            buffers=sum(b.numel() for b in {id(b): b for b in module.buffers()}.values()),
            calls=calls.calls, input_shape=calls.input_spec, output_shape=calls.output_spec,
            output_bytes=calls.output_bytes,
            macs=self_macs + sum(c.macs for c in children), flops=self_flops + sum(c.flops for c in children),
            self_macs=self_macs, self_flops=self_flops, ops=ops, uncounted=uncounted, children=children,
        )

    root = build("", model, 0)
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
    dtype = next((p.dtype for p in params.values() if p.is_floating_point()), None)
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
    )
