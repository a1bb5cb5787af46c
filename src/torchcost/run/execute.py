"""One pass under the collectors: the forward (eval), or forward + loss + backward + optimizer step (train), on the
model itself or on its twin, as run/plan.py decides. What it saw is returned as a :class:`Ran` for run/build.py."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchcost.collect.memory import module_tensors
from torchcost.collect.recording import MemorySettings, Recording
from torchcost.errors import InputError, ModelError
from torchcost.formulas.registry import FormulaRegistry
from torchcost.inputs import outside_inference_mode
from torchcost.run.failures import forward_failures, step_failures
from torchcost.run.guard import guarded
from torchcost.run.plan import check_room_for_copy, choose_method, retry_on_copy, twin_device
from torchcost.run.step import (
    DEFAULT_LOSS_NAME,
    Method,
    StepOptions,
    Twin,
    default_loss,
    describe_optimizer,
    make_optimizer,
    make_twin,
    optimizer_tensors,
    warm_optimizer,
)
from torchcost.trees import tensors_in

__all__ = ["Ran", "execute", "run"]


@dataclass
class Ran:
    """What one run saw: the module tree it ran (the model or its twin), the inputs, the recording, and the
    training step's own figures."""

    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    recording: Recording
    options: StepOptions
    method: Method
    optimizer: str = ""
    loss: str = ""
    gradient_bytes: int = 0
    optimizer_state_bytes: int = 0


def run(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], registry: FormulaRegistry,
        options: StepOptions, memory: bool, run_device: torch.device) -> Ran:
    """The run plan.choose_method picks, retried once on a real copy where plan.retry_on_copy says so; outside the
    caller's inference_mode, if any."""
    with outside_inference_mode():
        return _run(model, args, kwargs, registry, options, memory, run_device)


def _run(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], registry: FormulaRegistry,
         options: StepOptions, memory: bool, run_device: torch.device) -> Ran:
    method = choose_method(run_device, options, model)
    if method == "real":
        return execute(model, args, kwargs, registry, options, memory, run_device, None)
    twin = make_twin(model, args, kwargs, method, twin_device(method, run_device))
    try:
        return execute(twin.model, twin.args, twin.kwargs, registry, options, memory, run_device, twin)
    except ModelError as exc:
        if not retry_on_copy(method, run_device, exc):
            raise
        check_room_for_copy(model, options, exc)
        twin = make_twin(model, args, kwargs, "copy", run_device)
        return execute(twin.model, twin.args, twin.kwargs, registry, options, memory, run_device, twin)


def execute(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], registry: FormulaRegistry,
            options: StepOptions, memory: bool, run_device: torch.device, twin: Twin | None) -> Ran:
    """One pass of ``model`` (the user's, or ``twin``'s) under a fresh Recording."""
    train = options.mode == "train"
    tensors_device = twin.device if twin is not None else run_device
    counted = None if twin is not None and twin.method == "fake" else tensors_device.type
    emulate = options.target if tensors_device.type == "meta" else None
    settings = MemorySettings(options.round_to, counted) if memory else None
    rec = Recording(model, registry, memory=settings, train=train, emulate=emulate)
    method: Method = twin.method if twin is not None else ("meta" if run_device.type == "meta" else "real")
    ran = Ran(model, args, kwargs, rec, options, method)
    with guarded(model, twin, run_device):
        model.train(train)
        opt = make_optimizer(options.optimizer, model, twin, options.target) if train and twin is not None else None
        if opt is not None:
            warm_optimizer(opt)
            ran.optimizer = describe_optimizer(opt)
        _add_baselines(rec, model, args, kwargs, opt)
        with rec, torch.enable_grad() if train else torch.no_grad():
            out, loss = _forward(rec, ran, tensors_device)
            if train:
                with rec.phase("backward"), step_failures("backward"):
                    if isinstance(loss, torch.Tensor) and loss.requires_grad:
                        loss.backward()
                if rec.ops.step is not None:
                    rec.ops.step.owners = _owners(model, opt)
                with rec.phase("optimizer"), step_failures("optimizer"):
                    if opt is not None:
                        opt.step()
        if train:
            _account_step(ran, opt, counted)
        del out, loss
    return ran


def _owners(model: nn.Module, opt: torch.optim.Optimizer | None) -> dict[int, str]:
    """id() of each parameter, its gradient and its optimizer state -> the module holding the parameter (its first
    name), so the optimizer's FLOPs are attributed to the parameters' modules."""
    owners: dict[int, str] = {}
    state = opt.state if opt is not None else {}
    for name, p in model.named_parameters():
        module = name.rpartition(".")[0]
        for t in (p, p.grad, *tensors_in(dict(state.get(p, {})))):
            if t is not None:
                owners.setdefault(id(t), module)
    return owners


def _add_baselines(rec: Recording, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                   opt: torch.optim.Optimizer | None) -> None:
    """What is alive before the first op: parameters, buffers (and tensors held as attributes), inputs, state."""
    if rec.memory is None:
        return
    rec.memory.add_baseline(model.parameters(), "parameters")
    rec.memory.add_baseline(model.buffers(), "buffers")
    rec.memory.add_baseline(module_tensors(model), "buffers")
    rec.memory.add_baseline(tensors_in((args, kwargs)), "inputs")
    rec.memory.add_baseline(optimizer_tensors(opt), "optimizer_state")


def _forward(rec: Recording, ran: Ran, device: torch.device) -> tuple[Any, Any]:
    """The forward, and the loss of a training step, under autocast when asked (one autocast region for both, as a
    training loop writes it: its cache of cast weights lives until the loss is made)."""
    options, train = ran.options, ran.options.mode == "train"
    amp_device = device.type if device.type in ("cpu", "cuda") else "cpu"
    autocast = (torch.autocast(amp_device, dtype=options.amp_dtype) if options.amp_dtype is not None
                else contextlib.nullcontext())
    saved = (torch.autograd.graph.saved_tensors_hooks(rec.memory.pack, rec.memory.unpack)
             if rec.memory is not None and train else contextlib.nullcontext())
    loss: Any = None
    with saved, autocast:
        with rec.phase("forward"), forward_failures(rec.scope, ran.model):
            out = ran.model(*ran.args, **ran.kwargs)
        if train:
            with rec.phase("loss"), step_failures("computing the loss"):
                loss = (options.loss_fn or default_loss)(out)
                ran.loss = _loss_name(options.loss_fn)
            if options.loss_fn is not None:
                _check_loss(loss, ran)
    return out, loss


def _check_loss(loss: object, ran: Ran) -> None:
    """What loss_fn returned must be a loss backward can start from: a scalar tensor, attached to the graph when
    the model has trainable parameters. Anything else would be measured as a step without a backward."""
    name = ran.loss
    if not isinstance(loss, torch.Tensor):
        shown = f"{type(loss).__name__} {loss!r}" if isinstance(loss, (str, int, float, bool)) else type(loss).__name__
        raise InputError(f"loss_fn {name!r} returned a {shown[:80]}, not a tensor: return the loss tensor itself "
                         f"(not loss.item()), so that backward can run")
    if loss.numel() != 1:
        raise InputError(f"loss_fn {name!r} returned a tensor of shape {list(loss.shape)}; a loss is one number: "
                         f"reduce it (.mean() or .sum())")
    if not loss.requires_grad and any(p.requires_grad for p in ran.model.parameters()):
        raise InputError(f"loss_fn {name!r} returned a tensor that does not require grad (detached, or computed under "
                         f"no_grad), so the step would have no backward: compute it from the model's output")


def _account_step(ran: Ran, opt: torch.optim.Optimizer | None, counted: str | None) -> None:
    """Gradients and optimizer state left by the step: their bytes, and their category in the memory record."""
    grads = _dense_parts([p.grad for p in ran.model.parameters() if p.grad is not None])
    state = optimizer_tensors(opt)
    ran.gradient_bytes = _storage_bytes(grads, counted, ran.options.round_to)
    ran.optimizer_state_bytes = _storage_bytes(state, counted, ran.options.round_to)
    memory = ran.recording.memory
    if memory is not None:
        memory.label(grads, "gradients")
        memory.label(state, "optimizer_state")


def _dense_parts(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors that hold the data: a sparse COO gradient (Embedding(sparse=True)) is its indices and values."""
    return [part for t in tensors
            for part in ((t._indices(), t._values()) if t.layout == torch.sparse_coo else (t,))]


def _storage_bytes(tensors: list[torch.Tensor], device_type: str | None, round_to: int) -> int:
    """Bytes of the distinct storages behind ``tensors`` on ``device_type`` (None: all), in allocator blocks."""
    storages = {id(s): s for s in (t.untyped_storage() for t in tensors)
                if device_type in (None, s.device.type)}
    return sum(-(-s.nbytes() // round_to) * round_to for s in storages.values())


def _loss_name(loss_fn: Callable[[Any], torch.Tensor] | None) -> str:
    if loss_fn is None:
        return DEFAULT_LOSS_NAME
    return getattr(loss_fn, "__qualname__", None) or type(loss_fn).__name__
