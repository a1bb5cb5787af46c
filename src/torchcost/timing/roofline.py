"""The roofline prediction: each priced call's time on a :class:`~torchcost.timing.hardware.Hardware`, summed per
module, per phase, for the forward and the whole step (docs/conventions.md, "Time").

One call takes

    t = max(2 MACs / (P_matrix(dtype) x e_matmul) + other FLOPs / (P_vector x e_vector),  bytes / (B x e_memory))

where P_matrix is the dense matrix peak of the call's dtype (its first floating-point input; float32 convolutions
take the TF32 rate when ``torch.backends.cudnn.allow_tf32`` is on, float32 matrix products when
``torch.get_float32_matmul_precision()`` is not "highest", both only on hardware with a TF32 rate), P_vector the
FP32 vector rate and B the memory bandwidth; the hardware's ``call_overhead`` (0 on the GPU entries, measured for
"cpu") is added to each call. The call is memory-bound when its bytes term is the larger. Calls add up: no overlap
between calls, no fusion (docs/conventions.md lists the blind spots).

It works from the collector's per-call tally (``OpCollector.calls``: identical calls, same phase, module, op, dtype,
MACs, FLOPs and bytes, counted once with their number), so the sum is of each call's max, never the max of sums.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from torchcost.collect.ops import CallKey
from torchcost.errors import InputError
from torchcost.report import CostReport, ModulePrediction, PhasePrediction, TimePrediction
from torchcost.shapes import ShapeTree, first_spec
from torchcost.timing.hardware import Hardware, dtype_key

__all__ = ["call_seconds", "compute_dtype", "mfu", "predict"]


def _tf32(conv: bool) -> bool:
    if conv:
        return bool(torch.backends.cudnn.allow_tf32)
    return torch.get_float32_matmul_precision() != "highest"


def call_seconds(hw: Hardware, dtype: str, macs: int, other_flops: int, nbytes: int,
                 conv: bool = False) -> tuple[float, bool]:
    """(seconds, memory-bound) of one call on ``hw`` by the formula of the module docstring."""
    matrix = hw.matrix_flops(dtype, tf32=_tf32(conv)) * hw.matmul_efficiency
    compute = 2 * macs / matrix + other_flops / (hw.vector_flops * hw.vector_efficiency)
    memory = nbytes / (hw.memory_bandwidth * hw.memory_efficiency)
    return (memory + hw.call_overhead, True) if memory > compute else (compute + hw.call_overhead, False)


def compute_dtype(report: CostReport) -> str:
    """The dtype whose peak headlines a prediction and divides MFU: autocast's when the run used it, else the
    model's floating dtype (float32 for a model with none)."""
    amp = report.memory.amp if report.memory is not None else ""
    if amp:
        return dtype_key(amp)
    return dtype_key(report.dtype if report.dtype != "none" else "float32")


def _samples(shape: ShapeTree) -> int:
    """The first input's leading dimension (0 when there is no input tensor)."""
    first = first_spec(shape)
    return first.shape[0] if first is not None and first.shape else 0


def mfu(step_flops: int, step_time: float, peak_flops: float) -> float:
    """Model FLOP utilisation: the step's FLOPs over what the dense peak would do in ``step_time`` seconds."""
    if step_time <= 0:
        raise InputError(f"step_time must be positive seconds, got {step_time!r}")
    return step_flops / (step_time * peak_flops)


def predict(calls: Mapping[CallKey, int], report: CostReport, hw: Hardware, *, step_time: float | None = None,
            measured_step: float | None = None) -> TimePrediction:
    """The prediction for a report and the per-call tally of the run that made it. ``step_time`` (given) or else
    ``measured_step`` (the report's measured time) gives the MFU."""
    default = compute_dtype(report)
    # (module, phase) -> [seconds, memory-bound seconds]
    own: dict[tuple[str, str], list[float]] = {}
    phases: dict[str, list[float]] = {}
    keys: dict[object, str] = {}  # a call's dtype -> its key in the hardware table
    for (phase, module, op, dtype, macs, other, nbytes), count in calls.items():
        name = keys.get(dtype)
        if name is None:
            name = keys[dtype] = dtype_key(dtype) if dtype is not None else default
        seconds, memory_bound = call_seconds(hw, name, macs, other, nbytes, conv="conv" in op)
        seconds *= count
        entry = own.setdefault((module, phase), [0.0, 0.0])
        entry[0] += seconds
        totals = phases.setdefault(phase, [0.0, 0.0])
        totals[0] += seconds
        if memory_bound:
            entry[1] += seconds
            totals[1] += seconds
    train = bool(report.phases)
    names = {m.name for m in report.root.walk()}
    # calls of a module the tree does not hold (none expected) are the model's own
    per_module: dict[str, list[float]] = {}  # name -> [forward s, step s, memory-bound s of the shown one]
    for (module, phase), (seconds, bound_s) in own.items():
        entry = per_module.setdefault(module if module in names else "", [0.0, 0.0, 0.0])
        if phase == "forward":
            entry[0] += seconds
        entry[1] += seconds
        if train or phase == "forward":
            entry[2] += bound_s
    modules: list[ModulePrediction] = []
    rolled: dict[str, tuple[float, float, float]] = {}
    for m in reversed(list(report.root.walk())):  # children before parents
        f, s, mb = per_module.get(m.name, (0.0, 0.0, 0.0))
        for c in m.children:
            cf, cs, cmb = rolled[c.name]
            f, s, mb = f + cf, s + cs, mb + cmb
        rolled[m.name] = (f, s, mb)
    for m in report.root.walk():
        f, s, mb = rolled[m.name]
        shown = s if train else f
        bound = "" if shown <= 0 else ("memory" if 2 * mb > shown else "compute")
        modules.append(ModulePrediction(m.name, f, s if train else f, mb, bound))
    forward_s = phases.get("forward", [0.0, 0.0])[0]
    order = [p.name for p in report.phases] if train else ["forward"]
    phase_times = tuple(PhasePrediction(p, *phases.get(p, [0.0, 0.0])) for p in order)
    step_s = sum(p.seconds for p in phase_times)
    memory_s = sum(p.memory_bound_seconds for p in phase_times)
    samples = _samples(report.input_shape)
    tokens = report.tokens
    unit, count = ("tokens/s", tokens) if tokens else ("samples/s", samples)
    comm_wire = sum(c.wire_bytes for c in report.collectives)
    comm_s = comm_wire / hw.interconnect_bandwidth if comm_wire and hw.interconnect_bandwidth else 0.0
    peak = hw.matrix_flops(default, tf32=_tf32(False))
    used, source = (step_time, "given") if step_time is not None else (
        (measured_step, "measured") if measured_step else (0.0, ""))
    return TimePrediction(
        hardware=hw.key or hw.name, hardware_name=hw.name, dtype=default, peak_flops=peak,
        vector_flops=hw.vector_flops, memory_bandwidth=hw.memory_bandwidth, matmul_efficiency=hw.matmul_efficiency,
        vector_efficiency=hw.vector_efficiency, memory_efficiency=hw.memory_efficiency, forward_s=forward_s,
        step_s=step_s, memory_bound_share=memory_s / step_s if step_s else 0.0, phases=phase_times,
        modules=tuple(modules), samples=samples, tokens=tokens, per_s=count / step_s if step_s and count else 0.0,
        per_s_unit=unit if count else "", comm_s=comm_s, interconnect=hw.interconnect,
        interconnect_bandwidth=hw.interconnect_bandwidth, step_time=used, step_time_source=source,
        mfu=mfu(report.step_flops, used, peak) if used else 0.0, source=hw.source, call_overhead=hw.call_overhead)
