"""One pass under the collectors: the forward (eval), or forward + loss + backward + optimizer step (train), on the
model itself or on its twin, as run/plan.py decides. What it saw is returned as a :class:`Ran` for run/build.py.

A run on real tensors ("real", or a "copy") can also be measured by the allocator, beside the prediction
(:class:`Measured`): on CUDA always (``torch.cuda`` peak statistics cost nothing), on the CPU when asked
(``measure_cpu``: a torch.profiler session with ``profile_memory=True`` around the run)."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.autograd.profiler
from torch import nn
from torch.profiler import ProfilerActivity, profile

from torchcost.collect import tape
from torchcost.collect.allocator import allocations, running_peak
from torchcost.collect.recording import MemorySettings, Recording
from torchcost.collect.shadows import Shadows, untraced
from torchcost.collect.storages import local_tensor
from torchcost.collect.unwritten import Unwritten, ValuesNeeded
from torchcost.errors import InputError, ModelError, a_kind
from torchcost.formulas.registry import FormulaRegistry
from torchcost.inputs import outside_inference_mode
from torchcost.report import ParallelInfo
from torchcost.run.failures import forward_failures, step_failures
from torchcost.run.guard import guarded, kept
from torchcost.run.plan import (
    READ_VALUES,
    check_room_for_copy,
    choose_method,
    retry_on_copy,
    skips_kernels,
    twin_device,
)
from torchcost.run.step import (
    Method,
    StepOptions,
    Twin,
    default_loss,
    default_loss_name,
    describe_optimizer,
    make_optimizer,
    make_twin,
    optimizer_tensors,
    plain_step,
    warm_optimizer,
)
from torchcost.trees import tensors_in

__all__ = ["Measured", "Ran", "allocator_meter", "execute", "no_full_collections", "run"]


@dataclass
class Measured:
    """The allocator's own peak for a run on real tensors, beside torchcost's prediction.

    ``above_start`` is the most bytes the allocator had handed out at once during the run beyond what it had
    handed out when the run started (None: not measured); ``by`` says which allocator ("cuda allocator", "cpu
    allocator (profiler)"). :meth:`peak` adds what torchcost counts as alive at the start (parameters, buffers,
    inputs, optimizer state: the prediction's ``start_bytes``), so the two peaks compare like for like: memory the
    process held before the run for other things (other models, the caller's tensors) is in neither.
    """

    above_start: int | None = None
    by: str = ""

    def peak(self, start_bytes: int) -> int | None:
        """The measured peak on the prediction's footing: ``start_bytes`` + the allocator's rise during the run."""
        return None if self.above_start is None else start_bytes + self.above_start


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
    measured: Measured = field(default_factory=Measured)
    parallel: ParallelInfo | None = None  # a simulated distributed rank (torchcost.parallel)


def run(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], registry: FormulaRegistry,
        options: StepOptions, memory: bool, run_device: torch.device, *, measure_cpu: bool = False) -> Ran:
    """The run plan.choose_method picks, retried once on a real copy where plan.retry_on_copy says so; outside the
    caller's inference_mode, if any. ``measure_cpu``: a run on real CPU tensors is also measured by the allocator
    (a profiler session; CUDA runs on real tensors always are)."""
    with outside_inference_mode():
        return _run(model, args, kwargs, registry, options, memory, run_device, measure_cpu)


@contextlib.contextmanager
def no_full_collections() -> Iterator[None]:
    """No full (oldest-generation) garbage collection starts during the run; young ones run as always.

    A full collection walks every object the process holds (the model's, torch's, the caller's: 0.3 to 0.5 s with
    a few hundred thousand) and torchcost's bookkeeping allocates enough to start one now and then in a long run,
    which made the cost per layer grow with the model (N = 10,000 Linear+ReLU blocks: 2 full collections, about a
    fifth of the run). The young generations still collect the run's own short-lived reference cycles at the
    same allocation counts as before, so tensors freed by those die where they did; only garbage that has already
    survived into the oldest generation waits for the next full collection after the run. The threshold is put
    back even when the run raises. analyze() holds it over the run, the report's build and the run's release."""
    young, middle, oldest = gc.get_threshold()
    gc.set_threshold(young, middle, _NEVER)
    try:
        yield
    finally:
        if gc.get_threshold() == (young, middle, _NEVER):  # (unless someone set other thresholds meanwhile)
            gc.set_threshold(young, middle, oldest)


_NEVER = 2**31 - 1  # a gen-2 threshold no run reaches


def _run(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], registry: FormulaRegistry,
         options: StepOptions, memory: bool, run_device: torch.device, measure_cpu: bool) -> Ran:
    method = choose_method(run_device, options, model)
    if method == "real":
        if skips_kernels(run_device, options, measure_cpu, model):
            values = Unwritten()
            try:
                return execute(model, args, kwargs, registry, options, memory, run_device, None, unwritten=values)
            except ValuesNeeded:
                READ_VALUES.add(model)  # (made again below, and from now on, with every kernel)
            except ModelError:
                if not values.skipped:  # (a failure that may come from values not computed is checked with them)
                    raise
        return execute(model, args, kwargs, registry, options, memory, run_device, None, measure_cpu=measure_cpu)
    with kept(model):
        twin = make_twin(model, args, kwargs, method, twin_device(method, run_device))
        try:
            return execute(twin.model, twin.args, twin.kwargs, registry, options, memory, run_device, twin)
        except ModelError as exc:
            if not retry_on_copy(method, run_device, exc):
                raise
            check_room_for_copy(model, options, exc)
            twin = make_twin(model, args, kwargs, "copy", run_device)
            return execute(twin.model, twin.args, twin.kwargs, registry, options, memory, run_device, twin,
                           measure_cpu=measure_cpu)


def execute(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], registry: FormulaRegistry,
            options: StepOptions, memory: bool, run_device: torch.device, twin: Twin | None, *,
            measure_cpu: bool = False, unwritten: Unwritten | None = None) -> Ran:
    """One pass of ``model`` (the user's, or ``twin``'s) under a fresh Recording; on real tensors, with memory on,
    under the allocator's meter too (:func:`allocator_meter`). ``unwritten``: the run skips the kernels of direct
    leaves whose output is known (collect/unwritten.py), and raises ValuesNeeded if it read values it did not
    compute, also where the forward caught that."""
    train = options.mode == "train"
    tensors_device = twin.device if twin is not None else run_device
    counted = None if twin is not None and twin.method == "fake" else tensors_device.type
    emulate = options.target if tensors_device.type == "meta" else None
    settings = MemorySettings(options.round_to, counted, options.kernel_memory, options.gpu) if memory else None
    method: Method = twin.method if twin is not None else ("meta" if run_device.type == "meta" else "real")
    modules = list(model.modules())  # (one walk for the guard, the train/eval flags and the baselines)
    with guarded(model, twin, run_device, modules) as watch:
        extras = twin.extras if twin is not None else None
        direct = not train and emulate is None and method in ("real", "copy") and extras is None
        shadows = (Shadows((args, kwargs, [b for m in modules for b in m._buffers.values()]))
                   if (tensors_device.type == "meta" or method == "fake") and extras is None else None)
        if method == "fake" and shadows is not None:  # (a fake twin follows the integer inputs it was lent, and
            shadows.fake = True  # what it comes to know: made from numbers, drawn on the CPU; collect/shadows.py)
        rec = Recording(model, registry, memory=settings, train=train, emulate=emulate, watch=watch, direct=direct,
                        twin=method == "fake" or tensors_device.type == "meta", unwritten=unwritten, shadows=shadows)
        ran = Ran(model, args, kwargs, rec, options, method)
        _set_training(model, modules, train)
        opt = make_optimizer(options.optimizer, model, twin, options.target) if train and twin is not None else None
        if opt is not None:
            with step_failures("optimizer"):  # (on fake tensors a warm-up that reads values fails: run on a copy)
                warm_optimizer(opt)
            ran.optimizer = describe_optimizer(opt)
        if extras is not None:
            extras.prepare(rec, model, opt)
        _add_baselines(rec, modules, args, kwargs, opt)
        real = memory and method in ("real", "copy")
        meter = (allocator_meter(ran.measured, tensors_device, measure_cpu, backward=train) if real
                 else contextlib.nullcontext())
        around = extras.during(rec) if extras is not None else contextlib.nullcontext()
        followed = shadows if shadows is not None else contextlib.nullcontext()
        with followed, untraced(shadows), meter, rec, around, torch.enable_grad() if train else torch.no_grad():
            out, loss = _forward(rec, ran, tensors_device)
            if train:
                with rec.phase("backward"), step_failures("backward"):
                    if isinstance(loss, torch.Tensor) and loss.requires_grad:
                        loss.backward()
                if rec.ops.step is not None:
                    rec.ops.step.owners = _owners(model, opt)
                with rec.phase("optimizer"), step_failures("optimizer"):
                    if opt is not None:
                        _optimizer_step(rec, opt)
        if train:
            _account_step(ran, opt, counted)
        if extras is not None:
            extras.finish(rec, model, opt)
        del out, loss
    if unwritten is not None and unwritten.needed:
        raise ValuesNeeded(unwritten.needed)
    return ran


def _optimizer_step(rec: Recording, opt: torch.optim.Optimizer) -> None:
    """The measured step's ``opt.step()``. torch's own optimizers (run/step.py's plain_step) run it without the
    run's function mode (its ops are aten ops alone); on a twin, from the tapes of their parameters' kinds where the
    process has them, else the step runs and is written down as tapes where it can be (collect/tape.py)."""
    plain = plain_step(opt)
    dispatch = rec.dispatch
    if not plain or dispatch is None or not dispatch.twin:
        with rec.without_function_mode() if plain else contextlib.nullcontext():
            opt.step()
        return
    with rec.without_function_mode():
        if tape.replay(dispatch, opt):
            return
        learner = tape.Learner(opt, rec.memory)
        if learner.failed:
            opt.step()
            return
        dispatch.taping = learner.on_op
        ran = False
        try:
            opt.step()
            ran = True
        finally:
            dispatch.taping = None
            learner.finish(ran)


def _set_training(model: nn.Module, modules: list[nn.Module], train: bool) -> None:
    """``model.train(train)``, skipped when every module (``modules``: the model's) is in that mode already and none
    has a train() of its own (Module.train only sets the flags; it costs a Python attribute write per module)."""
    for module in modules:
        if module.training != train or type(module).train is not _MODULE_TRAIN:
            model.train(train)
            return


_MODULE_TRAIN = nn.Module.train


@contextlib.contextmanager
def allocator_meter(measured: Measured, device: torch.device, measure_cpu: bool,
                    backward: bool = False) -> Iterator[None]:
    """Measure the allocator's peak over the block into ``measured`` (left unmeasured if the block raises).

    CUDA: ``reset_peak_memory_stats`` then ``max_memory_allocated`` - ``memory_allocated`` at the start (this resets
    the caller's own peak statistics for ``device``; every allocation on the device during the block counts, other
    threads' and streams' included). The cuBLAS workspaces are made first where they are missing
    (:func:`_warm_cublas`): the prediction counts them from the run's start, as a step of a loop holds them, so they
    belong to what was alive at the start on both sides (collect/workspace_cuda.py). CPU, when ``measure_cpu``: the
    running peak of torch.profiler's allocation events (profile_memory=True), as tests/memory/truth.py measures it;
    not while the caller profiles already (a second session would cancel theirs). Any other device: nothing.
    """
    if device.type == "cuda":
        _warm_cublas(device, backward)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield
        measured.above_start = torch.cuda.max_memory_allocated(device) - before
        measured.by = "cuda allocator"
    elif device.type == "cpu" and measure_cpu and not torch.autograd.profiler._is_profiler_enabled:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            yield
        measured.above_start = running_peak(_allocations(prof, "cpu"))
        measured.by = "cpu allocator (profiler)"
    else:
        yield


def _warm_cublas(device: torch.device, backward: bool) -> None:
    """Make the cuBLAS workspaces a step of a training or serving loop already holds (each a block cuBLAS keeps per
    handle and stream for the life of the process): a 2x2 matrix product on this thread's handle and current stream,
    and for a training step one in a backward, which autograd runs on its device thread, with a handle of its own.
    Where they exist already (any earlier matrix product), nothing is allocated."""
    with torch.inference_mode(False), torch.enable_grad():
        a = torch.ones(2, 2, device=device, requires_grad=backward)
        product = a @ a
        if backward:
            product.sum().backward()


def _allocations(prof: profile, device_type: str) -> list[tuple[int, int]]:
    """The allocations and frees ``prof`` recorded on ``device_type`` (collect/allocator.py)."""
    results = prof.profiler.kineto_results if prof.profiler is not None else None
    return allocations(results.experimental_event_tree() if results is not None else (), device_type)


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


_IS_TENSOR = functools.partial(type(torch.Tensor).__instancecheck__, torch.Tensor)  # isinstance(value, torch.Tensor)


def _add_baselines(rec: Recording, modules: list[nn.Module], args: tuple[Any, ...], kwargs: dict[str, Any],
                   opt: torch.optim.Optimizer | None) -> None:
    """What is alive before the first op: parameters, buffers (and tensors held as attributes), inputs, state.
    One walk over the modules gathers the first three (in the order of ``model.parameters()``, ``model.buffers()``
    and ``module_tensors(model)``, each category before the next, so a storage in two keeps the first one's)."""
    if rec.memory is None:
        return
    params: dict[int, torch.Tensor] = {}
    buffers: dict[int, torch.Tensor] = {}
    attributes: list[torch.Tensor] = []
    for module in modules:  # (``model.modules()``)
        for p in module._parameters.values():
            if p is not None:
                params.setdefault(id(p), p)
        for b in module._buffers.values():
            if b is not None:
                buffers.setdefault(id(b), b)
        attributes.extend(filter(_IS_TENSOR, module.__dict__.values()))  # (at C speed: ~30 attributes a module)
    rec.memory.add_baseline(params.values(), "parameters")
    rec.memory.add_baseline(buffers.values(), "buffers")
    rec.memory.add_baseline(attributes, "buffers")
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
                ran.loss = _loss_name(options.loss_fn, out)
            if options.loss_fn is not None:
                _check_loss(loss, ran)
    return out, loss


def _check_loss(loss: object, ran: Ran) -> None:
    """What loss_fn returned must be a loss backward can start from: a scalar tensor, attached to the graph when
    the model has trainable parameters. Anything else would be measured as a step without a backward."""
    name = ran.loss
    if not isinstance(loss, torch.Tensor):
        shown = f"{a_kind(loss)} {loss!r}" if isinstance(loss, (str, int, float, bool)) else a_kind(loss)
        raise InputError(f"loss_fn {name!r} returned {shown[:80]}, not a tensor: return the loss tensor itself "
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
    storages = {id(s): s for s in (local_tensor(t).untyped_storage() for t in tensors)
                if device_type in (None, s.device.type)}
    return sum(-(-s.nbytes() // round_to) * round_to for s in storages.values())


def _loss_name(loss_fn: Callable[[Any], torch.Tensor] | None, out: Any) -> str:
    if loss_fn is None:
        return default_loss_name(out)
    return getattr(loss_fn, "__qualname__", None) or type(loss_fn).__name__
