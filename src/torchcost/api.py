"""The public entry points: :func:`analyze` (one model) and :func:`compare` (several, side by side).

analyze() strings the run together, in the order of the flow: check the options, prepare the inputs (inputs.py),
run under the collectors on the model or its twin (run/plan.py says which, run/execute.py does it) and build the
report (run/build.py). It computes nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from torchcost.collect.probe import KERNEL_MEMORY, KernelMemory
from torchcost.collect.workspace_cuda import CudaDevice
from torchcost.comparison import Comparison, build_comparison
from torchcost.errors import InputError, ModelError, a_kind
from torchcost.formulas import REGISTRY, Formula
from torchcost.inputs import model_dtype, outside_inference_mode, prepare_inputs, run_device_for
from torchcost.parallel.config import Parallel
from torchcost.report import CostReport
from torchcost.resolve import Resolved, resolve
from torchcost.run.build import build_report
from torchcost.run.checks import refuse_unsupported, uncompiled
from torchcost.run.concurrency import exclusive
from torchcost.run.execute import no_full_collections, run
from torchcost.run.failures import batch_norm_at_one
from torchcost.run.plan import default_target
from torchcost.run.step import Mode, StepOptions, check_options
from torchcost.timing.hardware import Hardware, get_hardware
from torchcost.timing.measure import TimeOptions, check_timeable, measure_time, time_options
from torchcost.timing.roofline import predict

__all__ = ["analyze", "analyze_spec", "compare"]

_MODES: tuple[Mode, ...] = ("eval", "train")


def analyze(
    model: nn.Module,
    *args: Any,
    kwargs: Mapping[str, Any] | None = None,
    input_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    device: str | torch.device | None = None,
    mode: Mode = "eval",
    formulas: Mapping[object, Formula] | None = None,
    optimizer: str | torch.optim.Optimizer | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    amp: str | None = None,
    target: str | None = None,
    memory: bool = True,
    measure_memory: bool = False,
    kernel_memory: KernelMemory | None = None,
    parallel: Parallel | None = None,
    time: bool | int | TimeOptions = False,
    hardware: str | Hardware | None = None,
    step_time: float | None = None,
) -> CostReport:
    """Analyse one forward pass of ``model`` (or a training step) and return a :class:`CostReport`.

    Args:
        model: the module; it comes back with the same modes, flags, buffers and attributes it had.
        *args, kwargs: the inputs exactly as the model takes them: ``analyze(model, x)``, ``analyze(model, a, b)``,
            ``analyze(model, kwargs={"input_ids": ids})``. They are copied, never changed.
        input_size: instead of inputs, a shape (or a list of shapes) for random inputs on the model's device.
        dtype: the dtype of those inputs (one, or one per shape). Defaults to the model's floating dtype.
        device: where the run happens. Defaults to the model's device; "meta" costs no memory.
        mode: "eval" (default: eval mode under no_grad) or "train" (training mode, autograd on, and memory of a
            whole training step: forward, loss, backward and optimizer step, run on a meta/fake twin).
        formulas: formula overrides for this run only (op -> formula).
        optimizer: the step's optimizer: "adamw" (default), "adam", "sgd" (momentum), or an instance whose class
            and hyper-parameters are copied (it is never stepped).
        loss_fn: the step's loss, ``loss_fn(output)``; default ``output.float().pow(2).mean()``.
        amp: "bf16"/"fp16" runs the forward under torch.autocast.
        target: "cpu"/"cuda", whose allocation behaviour memory follows (default: the model's device type; "cuda"
            for a meta model).
        memory: False skips the memory measurement.
        measure_memory: on the CPU, also measure the allocator's peak for a run on real tensors (a profiler
            session, about +17 % time), shown beside the prediction; CUDA runs on real tensors are always measured.
        kernel_memory: memory CPU kernels allocate inside themselves: "auto" (default: the workspace table where it
            knows a call, else the real kernel run once per shape under the allocator, cached), "measure" (always
            run it), "table" (never). Only for target "cpu"; docs/conventions.md, "Memory".

        parallel: a :class:`torchcost.Parallel` simulates one rank of a distributed world (FSDP2, DDP, tensor
            parallelism) on a fake process group and fake tensors: the report is that rank's (local shards, FLOPs,
            peak memory) with ``collectives`` and ``parallel`` filled in. The inputs are the rank's own batch.
            docs/conventions.md, "Distributed training".
        time: also time the real model on its device after counting (``measured_time``): True (20 repeats after 3
            warm-up runs), a number of repeats, or a :class:`torchcost.TimeOptions`. Median and spread of the whole
            forward (with ``mode="train"`` the whole step and its phases, on a real copy) and each module's time.
            Needs real weights: a meta model is refused. docs/conventions.md, "Time", "Measured".
        hardware: predict the run's time on this hardware (``predicted_time``): a name of
            ``torchcost.timing.hardware_names()`` ("h100-sxm", "a100-80gb", ..., "cpu": this machine, measured once)
            or a :class:`torchcost.Hardware`. A roofline per op (docs/conventions.md, "Time"); works on meta models.
            For a "cuda" target it is also the GPU whose kernels' own memory is counted (the cuBLAS workspace's
            size, flash attention's split-KV buffers); without it, an H100 SXM's (docs/conventions.md, "Memory").
        step_time: seconds one step (a forward in eval) took, for the model FLOP utilisation on ``hardware``
            (``predicted_time.mfu``); without it, a measured time (``time=``) is used.

    ``macs``/``flops`` are the forward's; in train mode ``phases`` and ``step_macs``/``step_flops`` count the whole
    step (forward, loss, backward, recompute, optimizer). docs/conventions.md says what is counted and how.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"analyze() needs an nn.Module as its first argument, got {type(model).__name__}")
    model = uncompiled(model)  # (torch.compile's wrapper set aside: its eager module is analysed)
    if mode not in _MODES:
        raise InputError(f"mode must be one of {', '.join(_MODES)}; got {mode!r}")
    run_device = run_device_for(device, model)
    check_options(mode, optimizer, loss_fn, amp, target)
    if kernel_memory is not None and kernel_memory not in KERNEL_MEMORY:
        raise InputError(f"kernel_memory must be one of {', '.join(KERNEL_MEMORY)}; got {kernel_memory!r}")
    step_optimizer = (optimizer if optimizer is not None else "adamw") if mode == "train" else None
    # a simulated rank stands for a GPU of a cluster: its memory follows CUDA's allocator unless told otherwise
    chosen_target = target or ("cuda" if parallel is not None else default_target(run_device))
    chip = get_hardware(hardware) if hardware is not None else None
    options = StepOptions(mode, step_optimizer, loss_fn, amp, chosen_target, kernel_memory, CudaDevice.of(chip))
    if parallel is not None:
        if not isinstance(parallel, Parallel):
            raise InputError(f"parallel must be a torchcost.Parallel, got {type(parallel).__name__}")
        parallel.check(model, mode)
        if measure_memory:
            raise InputError("measure_memory= measures a run on real tensors; a parallel run is simulated on fake ones")
        if kernel_memory is None and options.target == "cuda":  # no CPU kernel probes for a CUDA target's rank
            options = replace(options, kernel_memory="table")
    timing = time_options(time)
    if step_time is not None and (chip is None or not step_time > 0):
        raise InputError("step_time= needs hardware= (whose peak the MFU divides by) and positive seconds")
    if timing is not None:
        check_timeable(run_device, parallel)
    refuse_unsupported(model, options)
    registry = REGISTRY.with_overrides(formulas) if formulas else REGISTRY
    with exclusive():
        call_args, call_kwargs = prepare_inputs(args, kwargs, input_size, dtype, run_device, model_dtype(model))
        # no full garbage collection from the run's start until its objects are freed (run/execute.py): one due
        # then walks the process's objects without the run's, after this block, not inside the report's build
        with no_full_collections():
            if parallel is not None:
                from torchcost.parallel.runner import run_parallel

                ran = run_parallel(model, call_args, call_kwargs, registry, options, memory, run_device, parallel)
            else:
                ran = run(model, call_args, call_kwargs, registry, options, memory, run_device,
                          measure_cpu=measure_memory)
            report = build_report(ran, run_device, mode)
            calls = ran.recording.ops.calls if chip is not None else None  # every priced call, for the prediction
            # the run's tensors die here, while a Ctrl-C is still deferred: torch's clean-up callbacks would drop it
            del ran
        if timing is not None:  # after the counts, on real tensors: they do not change the report's counts
            with outside_inference_mode():
                measured = measure_time(model, call_args, call_kwargs, report, options, timing, run_device)
            report = replace(report, measured_time=measured)
        if chip is not None and calls is not None:
            measured_run = report.measured_time
            measured_step = None if measured_run is None else (
                measured_run.step_s if mode == "train" else measured_run.forward_s)
            report = replace(report, predicted_time=predict(calls, report, chip, step_time=step_time,
                                                            measured_step=measured_step))
        del call_args, call_kwargs
    return report


def compare(
    *models: str | nn.Module | CostReport | Resolved | tuple[Any, ...],
    names: Sequence[str] | None = None,
    input_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    meta: bool = False,
    config: Mapping[str, Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    input_dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    **analyze_kwargs: Any,
) -> Comparison:
    """Analyse each model and put them side by side.

    Each model is a spec string (``"torchvision:resnet50"``, built by :func:`torchcost.resolve.resolve` with
    ``input_size``, ``batch_size``, ``seq_len``, ``dtype``, ``device``, ``meta``, ``config``, ``kwargs`` and
    ``input_dtype``, and ``train=True`` for ``mode="train"``), an ``nn.Module`` (analysed with ``input_size``, which
    it then needs, and inputs of ``input_dtype``, else ``dtype``), a ``(module, input, ...)`` tuple, a
    :class:`~torchcost.resolve.Resolved`, or a :class:`CostReport` already made. ``analyze_kwargs`` go to every
    :func:`torchcost.analyze` call. ``names`` label the columns (default: the spec's model name or the class name).
    """
    if not models:
        raise InputError("compare() needs at least one model")
    if names is not None and len(names) != len(models):
        raise InputError(f"{len(models)} models but {len(names)} names")
    build = {"input_size": input_size, "batch_size": batch_size, "seq_len": seq_len, "dtype": dtype,
             "device": device, "meta": meta, "config": config, "kwargs": kwargs, "input_dtype": input_dtype,
             "train": analyze_kwargs.get("mode") == "train"}
    done = [_compared(item, build, analyze_kwargs) for item in models]
    labels = [label for _, label, _ in done]
    return build_comparison([r for r, _, _ in done], list(names) if names is not None else labels,
                            [spec for _, _, spec in done])


# the batch a training step is analysed at when the default batch of 1 leaves a batch norm one value per channel
TRAIN_BATCH = 2


def analyze_spec(spec: str, build: Mapping[str, Any], run: Callable[[Resolved], CostReport]
                 ) -> tuple[Resolved, CostReport]:
    """``spec`` built (:func:`torchcost.resolve.resolve` with the keyword arguments ``build``) and analysed by
    ``run``, as the CLI and :func:`compare` do it.

    A training step (``build["train"]``) of inputs whose batch the caller left to the resolver (no ``batch_size``,
    no ``input_size``: a batch of 1) fails where a batch norm's training statistics get one value per channel
    (torch refuses: a BatchNorm1d head, or a 1 x 1 map such as a squeeze-excitation's). Then the spec is built again
    at a batch of :data:`TRAIN_BATCH` and analysed: the description says so, and why. A batch the caller gave is
    never changed: its failure is the error, which says to give a batch of 2."""
    resolved = resolve(spec, **build)
    try:
        return resolved, run(resolved)
    except ModelError as exc:
        if not (build.get("train") and build.get("batch_size") is None and build.get("input_size") is None
                and batch_norm_at_one(exc) and exc.input_shapes.startswith("[1,")):
            raise
        failed = exc
    del resolved
    again = resolve(spec, **{**build, "batch_size": TRAIN_BATCH})
    report = run(again)
    why = (f"batch {TRAIN_BATCH}, not the default 1: at 1, batch norm '{failed.layer}' ({failed.layer_type}) has one "
           f"value per channel in training (input {failed.input_shapes})")
    return replace(again, description=f"{again.description}; {why}"), report


def _compared(item: object, build: dict[str, Any], analyze_kwargs: dict[str, Any]) -> tuple[CostReport, str, str]:
    """One model of a comparison: its report, its column label and the spec it was built from ("" if none)."""
    if isinstance(item, CostReport):
        return item, item.model_type, ""
    if isinstance(item, str):
        resolved, report = analyze_spec(item, build, lambda r: analyze(r.model, *r.args, kwargs=r.kwargs,
                                                                       **analyze_kwargs))
        return report, resolved.name, resolved.spec
    if isinstance(item, Resolved):
        return analyze(item.model, *item.args, kwargs=item.kwargs, **analyze_kwargs), item.name, item.spec
    if isinstance(item, nn.Module):
        if build["input_size"] is None:
            raise InputError(f"compare() got {a_kind(item)} module without inputs: give input_size, "
                             f"or pass (module, input) instead")
        dtypes = build["input_dtype"] if build["input_dtype"] is not None else build["dtype"]
        report = analyze(item, input_size=build["input_size"], dtype=dtypes, device=build["device"], **analyze_kwargs)
        return report, type(item).__name__, ""
    if isinstance(item, tuple) and item and isinstance(item[0], nn.Module):
        return analyze(item[0], *item[1:], **analyze_kwargs), type(item[0]).__name__, ""
    raise InputError(f"compare() takes specs, modules, (module, input) tuples or reports; got {type(item).__name__}")
