"""Measured time: the real model timed on its own device, after the counting run (``analyze(..., time=True)``).

The counting run says what a model computes; this says how long it took here. It runs only on real tensors (a meta
model has no weights to time: an InputError) and never changes the report's counts: it runs after them, outside the
collectors, and returns a :class:`~torchcost.report.MeasuredTime` that ``analyze`` adds to the report.

How (docs/conventions.md, "Time", "Measured"):

* ``warmup`` untimed runs, then ``repeats`` timed runs without any hook (the whole forward, or the whole training
  step with its phases), then ``repeats`` more with module-boundary hooks on (torch's global forward pre-hooks and
  forward hooks, never the model's own hook dicts) for each module's inclusive time. Figures are medians, with the
  fastest and slowest run as the spread. The hooks cost a few microseconds per module call, so the hooked forward is
  reported beside the plain one.
* Clocks: ``time.perf_counter`` on the CPU; on CUDA, ``torch.cuda.Event`` pairs (one per phase, one per module call)
  read after ``torch.cuda.synchronize``; any other device ``perf_counter`` around its ``synchronize``.
* An eval run times the model itself under ``no_grad`` in eval mode, left as it came in: run/guard.py's
  :func:`~torchcost.run.guard.preserved` puts back its modes, attributes, containers, grad flags and the RNG states,
  and a copy of its parameters, buffers and tensor attributes kept on the CPU puts back the values of any of them
  an in-place op wrote into (their version counters say which). The counting run watches every op for writes; the
  timed runs cannot (a dispatch mode would slow every op), hence the copy. Writes that bypass version counters
  (``.data``, ``.numpy()``) are not undone.
* A training step runs on a real copy of the model (run/step.py's ``make_twin(..., "copy")``) with a copy of the
  optimizer, warmed as the counting run warms it: the user's model, gradients and optimizer are never stepped.
  Each step starts with ``zero_grad(set_to_none=True)`` (not timed), then forward, loss + backward, optimizer step.
  Per-module times in a training step are those of the forward.
* ``max_seconds`` (None: no limit) stops the timed runs early: the plain runs at half of it, the hooked runs at
  all of it (each kind at least once); ``repeats``/``hooked_repeats`` say how many ran.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_mod

from torchcost.collect import interrupts
from torchcost.errors import InputError, ModelError, TorchcostError, first_line
from torchcost.report import CostReport, MeasuredTime, ModuleTime
from torchcost.run.guard import kept, preserved
from torchcost.run.step import StepOptions, default_loss, make_optimizer, make_twin, warm_optimizer

__all__ = ["TimeOptions", "check_timeable", "measure_time", "time_options"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TimeOptions:
    """How ``analyze(..., time=...)`` times the model: ``time=True`` is ``TimeOptions()``, ``time=N`` is
    ``TimeOptions(repeats=N)``.

    ``repeats``: timed runs of each kind (plain, hooked); ``warmup``: untimed runs first; ``per_module``: False skips
    the hooked runs (no per-module figures; ``hooked_forward_s`` is then 0); ``max_seconds``: stop the timed runs
    early after about this long (None: never); ``progress``: called with a short text before each run (the command
    line's progress line; None: silent)."""

    repeats: int = 20
    warmup: int = 3
    per_module: bool = True
    max_seconds: float | None = None
    progress: Progress | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("repeats", "warmup"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "repeats" else 0):
                least = 1 if name == "repeats" else 0
                raise InputError(f"time {name} must be an int >= {least}; got {value!r}")
        if self.max_seconds is not None and not (isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0):
            raise InputError(f"time max_seconds must be a positive number or None; got {self.max_seconds!r}")


def time_options(value: object) -> TimeOptions | None:
    """``analyze``'s ``time=`` argument as TimeOptions (None: no timing): False/None, True, an int of repeats, or a
    TimeOptions."""
    if value is None or value is False:
        return None
    if value is True:
        return TimeOptions()
    if isinstance(value, int) and not isinstance(value, bool):
        return TimeOptions(repeats=value)
    if isinstance(value, TimeOptions):
        return value
    raise InputError(f"time must be True, False, a number of repeats or a torchcost.TimeOptions; got "
                     f"{type(value).__name__}")


def check_timeable(device: torch.device, parallel: object) -> None:
    """Refuse, before anything runs, a timing that cannot be made: no real weights, or a simulated rank."""
    if device.type == "meta":
        raise InputError("time= measures the real model on its device, and this run is on meta (no weights, nothing "
                         "to time): build the model with weights (without --meta / device='meta') to time it")
    if parallel is not None:
        raise InputError("time= measures a real run; a parallel= rank is simulated on fake tensors: time it without "
                         "parallel=")


# -- clocks ---------------------------------------------------------------------------------------------------------

class _Clock:
    """perf_counter marks, after synchronising a device that has ``synchronize`` (not the CPU)."""

    name = "perf_counter"

    def __init__(self, device: torch.device) -> None:
        backend = getattr(torch, device.type, None) if device.type != "cpu" else None
        self._sync: Callable[[], None] | None = getattr(backend, "synchronize", None)

    def sync(self) -> None:
        if self._sync is not None:
            self._sync()

    def mark(self) -> Any:
        self.sync()
        return time.perf_counter()

    def seconds(self, start: Any, end: Any) -> float:
        return float(end - start)


class _CudaClock(_Clock):
    """CUDA events, recorded on the current stream; read only after :meth:`sync`."""

    name = "cuda events"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._sync = None

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def mark(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start: Any, end: Any) -> float:
        return float(start.elapsed_time(end)) / 1e3


def _clock(device: torch.device) -> _Clock:
    return _CudaClock(device) if device.type == "cuda" else _Clock(device)


# -- module boundaries ----------------------------------------------------------------------------------------------

class _ModuleTimer:
    """Marks at each module's forward start and end (torch's global module hooks, this thread only), kept as spans
    per module name for one run at a time."""

    def __init__(self, model: nn.Module, clock: _Clock) -> None:
        self.clock = clock
        self.names: dict[int, str] = {}
        for name, m in model.named_modules():
            self.names.setdefault(id(m), name)
        self.thread = threading.get_ident()
        self.open: list[tuple[int, Any]] = []
        self.spans: list[tuple[str, Any, Any]] = []
        self._handles: list[Any] = []

    def _pre(self, module: nn.Module, args: Any) -> None:
        if id(module) in self.names and threading.get_ident() == self.thread:
            interrupts.check()
            self.open.append((id(module), self.clock.mark()))

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        key = id(module)
        if key not in self.names or threading.get_ident() != self.thread:
            return
        end = self.clock.mark()
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] == key:
                self.spans.append((self.names[key], self.open.pop(i)[1], end))
                break
        interrupts.check()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        try:
            self._handles.append(module_mod.register_module_forward_pre_hook(self._pre))
            self._handles.append(module_mod.register_module_forward_hook(self._post))
            yield
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()

    def take(self) -> dict[str, tuple[int, float]]:
        """This run's (calls, seconds) per module name (after the clock's sync), and forget them."""
        out: dict[str, tuple[int, float]] = {}
        for name, start, end in self.spans:
            calls, total = out.get(name, (0, 0.0))
            out[name] = (calls + 1, total + self.clock.seconds(start, end))
        self.spans.clear()
        self.open.clear()
        return out


# -- the runs -------------------------------------------------------------------------------------------------------

@dataclass
class _Samples:
    """Seconds per timed run, by phase ("forward", "backward", "optimizer", "step"), and per module by name."""

    phases: dict[str, list[float]] = field(default_factory=dict)
    modules: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    runs: int = 0

    def add(self, phase: str, seconds: float) -> None:
        self.phases.setdefault(phase, []).append(seconds)


class _Runner:
    """One run of the model (a forward, or a training step), its phases marked by ``clock``."""

    def __init__(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], options: StepOptions,
                 clock: _Clock, device: torch.device, opt: torch.optim.Optimizer | None) -> None:
        self.model, self.args, self.kwargs, self.options = model, args, kwargs, options
        self.clock, self.device, self.opt = clock, device, opt
        self.train = options.mode == "train"

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.options.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type if self.device.type in ("cpu", "cuda") else "cpu",
                              dtype=self.options.amp_dtype)

    def once(self, what: str) -> list[tuple[str, Any, Any]]:
        """Run once; the (phase, start, end) marks, read after the clock's sync. ``what`` names the run in errors."""
        try:
            if not self.train:
                with torch.no_grad(), self._autocast():
                    start = self.clock.mark()
                    out = self.model(*self.args, **self.kwargs)
                    end = self.clock.mark()
                del out
                return [("forward", start, end)]
            if self.opt is not None:
                self.opt.zero_grad(set_to_none=True)
            else:
                self.model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                start = self.clock.mark()
                with self._autocast():
                    out = self.model(*self.args, **self.kwargs)
                    forward_end = self.clock.mark()
                    loss = (self.options.loss_fn or default_loss)(out)
                if isinstance(loss, torch.Tensor) and loss.requires_grad:
                    loss.backward()
                backward_end = self.clock.mark()
                if self.opt is not None:
                    self.opt.step()
                end = self.clock.mark()
            del out, loss
            return [("forward", start, forward_end), ("backward", forward_end, backward_end),
                    ("optimizer", backward_end, end), ("step", start, end)]
        except TorchcostError:
            raise
        except (Exception, SystemExit) as exc:
            reason = first_line(exc).rstrip(".")
            raise ModelError(f"the model failed while being timed ({what}): {reason}", reason=reason) from exc


def _loop(runner: _Runner, count: int, label: str, progress: Progress | None, deadline: float | None,
          timer: _ModuleTimer | None = None) -> _Samples:
    samples = _Samples()
    for i in range(count):
        if progress is not None:
            progress(f"timing: {label} {i + 1}/{count}")
        marks = runner.once(f"{label} {i + 1} of {count}")
        runner.clock.sync()
        for phase, start, end in marks:
            samples.add(phase, runner.clock.seconds(start, end))
        if timer is not None:
            for name, entry in timer.take().items():
                samples.modules.setdefault(name, []).append(entry)
        samples.runs += 1
        interrupts.check()
        if deadline is not None and time.perf_counter() > deadline:
            break
    return samples


def _time_runs(runner: _Runner, model: nn.Module, timing: TimeOptions) -> tuple[_Samples, _Samples]:
    """The warm-up, the plain timed runs and the hooked ones."""
    progress = timing.progress
    start = time.perf_counter()
    limit = timing.max_seconds
    for i in range(timing.warmup):
        if progress is not None:
            progress(f"timing: warm-up {i + 1}/{timing.warmup}")
        runner.once(f"warm-up {i + 1} of {timing.warmup}")
        interrupts.check()
    runner.clock.sync()
    plain = _loop(runner, timing.repeats, "run", progress, None if limit is None else start + limit / 2)
    hooked = _Samples()
    if timing.per_module:
        timer = _ModuleTimer(model, runner.clock)
        with timer.installed():
            hooked = _loop(runner, timing.repeats, "run with module hooks", progress,
                           None if limit is None else start + limit, timer)
    return plain, hooked


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def _rate(amount: int, seconds: float | None) -> float:
    return amount / seconds if seconds else 0.0


def _result(report: CostReport, device: torch.device, mode: str, clock: _Clock, timing: TimeOptions,
            plain: _Samples, hooked: _Samples) -> MeasuredTime:
    forward = plain.phases["forward"]
    forward_s = statistics.median(forward)
    modules = []
    for m in report.root.walk():
        entries = hooked.modules.get(m.name)
        if not entries or m.same_as:
            continue
        seconds = statistics.median([s for _, s in entries])
        calls = max(c for c, _ in entries)
        modules.append(ModuleTime(m.name, calls, seconds, _rate(m.flops, seconds), _rate(m.bytes, seconds)))
    step = plain.phases.get("step")
    step_s = _median(step)
    return MeasuredTime(
        device=str(device), mode=mode, clock=clock.name, threads=torch.get_num_threads(), repeats=plain.runs,
        warmup=timing.warmup, forward_s=forward_s, forward_min_s=min(forward), forward_max_s=max(forward),
        hooked_forward_s=_median(hooked.phases.get("forward")) or 0.0, hooked_repeats=hooked.runs,
        flops_per_s=_rate(report.flops, forward_s), bytes_per_s=_rate(report.root.bytes, forward_s),
        step_s=step_s, step_min_s=min(step) if step else None, step_max_s=max(step) if step else None,
        backward_s=_median(plain.phases.get("backward")), optimizer_s=_median(plain.phases.get("optimizer")),
        step_flops_per_s=_rate(report.step_flops, step_s) if step_s is not None else None,
        modules=tuple(modules))


def measure_time(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], report: CostReport,
                 options: StepOptions, timing: TimeOptions, device: torch.device) -> MeasuredTime:
    """Time ``model`` on ``device`` (eval: itself, left as it came in; train: a real copy) with the inputs the
    counting run had, and return the figures with ``report``'s counts as rates."""
    check_timeable(device, None)
    clock = _clock(device)
    # CUDA events are recorded on the current device's stream: make it the model's
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        if options.mode == "train":
            plain, hooked = _time_step(model, args, kwargs, options, timing, clock, device)
        else:
            plain, hooked = _time_forward(model, args, kwargs, options, timing, clock, device)
    return _result(report, device, options.mode, clock, timing, plain, hooked)


def _time_forward(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], options: StepOptions,
                  timing: TimeOptions, clock: _Clock, device: torch.device) -> tuple[_Samples, _Samples]:
    with preserved(model, device) as watch, _values_kept(model):
        if watch is not None:
            watch.drew = True  # the timed runs are not watched: put the generators back whatever they drew
        model.eval()
        runner = _Runner(model, args, kwargs, options, clock, device, None)
        return _time_runs(runner, model, timing)


def _version(t: torch.Tensor) -> int | None:
    """A tensor's version counter (bumped by every in-place write); None for one without (an inference tensor)."""
    try:
        return int(t._version)
    except RuntimeError:
        return None


@contextlib.contextmanager
def _values_kept(model: nn.Module) -> Iterator[None]:
    """Keep a copy (on the CPU) of every parameter, buffer and tensor attribute of ``model``'s modules, and on the
    way out put back the values of those an in-place op wrote into (their version counter moved). Timed runs are
    not watched op by op as the counting run is (a dispatch mode would slow every op), so a forward's writes, on
    any of the runs, are undone from these copies."""
    kept: list[tuple[torch.Tensor, int | None, torch.Tensor]] = []
    seen: set[int] = set()
    with torch.no_grad():
        for module in model.modules():
            tensors = (*module._parameters.values(), *module._buffers.values(),
                       *(v for v in vars(module).values() if isinstance(v, torch.Tensor)))
            for t in tensors:
                if t is None or id(t) in seen or t.device.type == "meta":
                    continue
                seen.add(id(t))
                kept.append((t, _version(t), t.detach().to("cpu", copy=True)))
    try:
        yield
    finally:
        for t, version, value in kept:
            if version is None or _version(t) != version:
                with torch.inference_mode(t.is_inference()), torch.no_grad():
                    t.copy_(value)


def _time_step(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], options: StepOptions,
               timing: TimeOptions, clock: _Clock, device: torch.device) -> tuple[_Samples, _Samples]:
    with kept(model), preserved(None, device) as watch:  # (kept: around the copy too, as run/execute.py's _run)
        twin = make_twin(model, args, kwargs, "copy", device)
        if watch is not None:
            watch.drew = True  # dropout in the copy draws from the generators: put them back
        opt = make_optimizer(options.optimizer, twin.model, twin, options.target)
        if opt is not None:
            warm_optimizer(opt)
        twin.model.train(True)
        runner = _Runner(twin.model, twin.args, twin.kwargs, options, clock, device, opt)
        return _time_runs(runner, twin.model, timing)
