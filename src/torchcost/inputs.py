"""The one place that reads input sizes, a model's device and dtype, and makes or copies inputs.

``analyze``, ``max_batch_size``, ``summary`` and every model source accept and refuse the same input sizes and make
inputs the same way, because they all come here.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from torchcost.collect.shadows import known_made
from torchcost.errors import InputError
from torchcost.trees import map_tensors, tensors_in
from torchcost.units import format_bytes

__all__ = ["Shape", "available_memory", "float_input", "floating_dtype", "input_dtypes", "int_input", "is_shape",
           "model_device", "model_dtype", "normalize_sizes", "outside_inference_mode", "own_copy", "prepare_inputs",
           "random_input", "run_device_for"]

Shape = tuple[int, ...]


def is_shape(value: object) -> bool:
    """A non-empty sequence of positive ints (bools are not ints here)."""
    return (isinstance(value, (tuple, list, torch.Size)) and len(value) > 0
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value))


def normalize_sizes(input_size: object) -> tuple[Shape, ...]:
    """One shape, or a list of shapes, as a tuple of shapes; anything else is an InputError."""
    raw = [input_size] if is_shape(input_size) else input_size
    if not isinstance(raw, (list, tuple)) or not raw or not all(is_shape(s) for s in raw):
        raise InputError(f"input_size must be a shape of positive ints such as (1, 3, 224, 224), or a list of "
                         f"shapes; got {input_size!r}")
    return tuple(tuple(int(d) for d in s) for s in raw)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first floating parameter or buffer lives (else its first tensor's device; else cpu)."""
    device = None
    for t in itertools.chain(model.parameters(), model.buffers()):  # (stops at the first floating one)
        if t.is_floating_point():
            return t.device
        device = device or t.device
    return device or torch.device("cpu")


def floating_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter, else of its first floating buffer; None if it has none."""
    for t in itertools.chain(model.parameters(), model.buffers()):  # (stops at the first floating one)
        if t.is_floating_point():
            return t.dtype
    return None


def run_device_for(device: object, model: nn.Module) -> torch.device:
    """The device a run happens on: ``device`` as given (None: the model's own). A device that is not one, is not
    present here, or cannot run the model (its tensors all live elsewhere) is an InputError; "meta" runs any model
    (one with weights on a meta twin)."""
    if device is None:
        return model_device(model)
    run = _parse_device(device)
    _check_present(run)
    held = {t.device.type for t in (*model.parameters(), *model.buffers())}
    if run.type == "meta" or not held or run.type in held:
        return run
    if held == {"meta"}:
        raise InputError(f"device={str(run)!r} cannot run this model: it is on the meta device and has no weights; "
                         f"leave device= out (a meta model is analysed on meta, allocating nothing)")
    raise InputError(f"device={str(run)!r} cannot run this model: its parameters are on {' and '.join(sorted(held))}; "
                     f"leave device= out to run it there, or move the model first (model.to({str(run)!r}))")


def _parse_device(device: object) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if isinstance(device, str) or (isinstance(device, int) and not isinstance(device, bool) and device >= 0):
        try:
            return torch.device(device)
        except (RuntimeError, ValueError):
            pass
    raise InputError(f"device must be a torch device such as 'cpu', 'cuda', 'cuda:1' or 'meta'; got {device!r}")


def _check_present(device: torch.device) -> None:
    """An accelerator device must be there: torch.<type>.is_available() and the index below its device_count()."""
    if device.type in ("cpu", "meta"):
        return
    backend = getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    count = getattr(backend, "device_count", None)
    if callable(available) and not available():
        raise InputError(f"device={str(device)!r}: no {device.type} device is available here; analyse on "
                         f"device='meta' to measure without one (target={device.type!r} for its memory)")
    if callable(count) and device.index is not None and device.index >= count():
        raise InputError(f"device={str(device)!r}: only {count()} {device.type} device(s) here")


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device``: MemAvailable of /proc/meminfo for the CPU, the free memory
    of a CUDA device; None where it cannot be read (or on meta, which allocates nothing)."""
    if device.type == "cuda":
        with contextlib.suppress(RuntimeError, AssertionError):
            return int(torch.cuda.mem_get_info(device)[0])
        return None
    if device.type != "cpu":
        return None
    with contextlib.suppress(OSError, ValueError, IndexError, StopIteration):
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    return None


def _check_room(need: int, what: str, device: torch.device) -> None:
    """Refuse inputs that cannot fit in the memory available on ``device``, before allocating them."""
    available = available_memory(device) if need > 0 else None
    if available is not None and need > available:
        raise InputError(f"{what} would need {format_bytes(need)} on {device}, more than the "
                         f"{format_bytes(available)} available; analyse it on the meta device instead "
                         f"(device='meta'; CLI: --meta), which allocates nothing")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs are made with for ``model``: :func:`floating_dtype`, else torch's default dtype."""
    return floating_dtype(model) or torch.get_default_dtype()


def float_input(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Random normal values (a fixed seed, never the global RNG). On the meta device the same values are drawn on the
    CPU and kept for a run that reads them (collect/shadows.py), where they are few enough to follow; else an empty
    meta tensor."""
    if device.type == "meta":
        if not (dtype.is_floating_point or dtype.is_complex):
            return torch.empty(tuple(shape), dtype=dtype, device=device)
        return known_made(lambda: float_input(shape, dtype, torch.device("cpu")), shape, dtype, device)
    gen = torch.Generator(device=device).manual_seed(0)
    return torch.randn(tuple(shape), dtype=dtype, device=device, generator=gen)


def int_input(shape: Sequence[int], high: int, device: torch.device) -> torch.Tensor:
    """Random int64 values in [0, high), e.g. token ids within a vocabulary. On the meta device the same values are
    drawn on the CPU and kept for a run that reads them (collect/shadows.py), where they are few enough to follow."""
    if device.type == "meta":
        return known_made(lambda: int_input(shape, high, torch.device("cpu")), shape, torch.int64, device)
    gen = torch.Generator(device=device).manual_seed(0)
    return torch.randint(0, max(1, high), tuple(shape), dtype=torch.int64, device=device, generator=gen)


def random_input(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An input of ``dtype``: random normal values for floating and complex dtypes, zeros for integer ones (index 0
    is valid for every embedding); empty on the meta device."""
    if device.type == "meta" or dtype.is_floating_point or dtype.is_complex:
        return float_input(shape, dtype, device)
    return torch.zeros(tuple(shape), dtype=dtype, device=device)


def own_copy(args: tuple[Any, ...], kwargs: dict[str, Any], device: torch.device) -> tuple[Any, Any]:
    """Copies of the user's tensors (so in-place ops in forward cannot change them); moved to meta for a meta run.
    A tensor passed twice stays one tensor (models branch on ``query is key``)."""

    def copy(t: torch.Tensor) -> torch.Tensor:
        if t.device.type == "meta":
            return t
        if device.type == "meta":
            return t.to("meta")
        return t.detach().clone().requires_grad_(t.requires_grad)

    copied: tuple[Any, Any] = map_tensors((args, kwargs), copy)
    return copied


def input_dtypes(dtype: object, count: int) -> list[torch.dtype | None]:
    """``dtype`` (one for all inputs, or a list with one per input; None: the model's) for ``count`` inputs."""
    given: list[object] = list(dtype) if isinstance(dtype, (list, tuple)) else [dtype] * count
    if len(given) != count:
        raise InputError(f"{count} input sizes but {len(given)} dtypes")
    dtypes: list[torch.dtype | None] = []
    for d in given:
        if d is not None and not isinstance(d, torch.dtype):
            raise InputError(f"dtype must be a torch.dtype such as torch.float32, got {d!r}")
        dtypes.append(d)
    return dtypes


def outside_inference_mode() -> contextlib.AbstractContextManager[Any]:
    """Leaves the caller's torch.inference_mode, if any, for a run: under it the dispatcher sees ops before they
    decompose, autograd is off, and inference tensors cannot be written."""
    return torch.inference_mode(False) if torch.is_inference_mode_enabled() else contextlib.nullcontext()


def prepare_inputs(
    args: tuple[Any, ...],
    kwargs: object,
    input_size: object,
    dtype: object,
    device: torch.device,
    default_dtype: torch.dtype,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword inputs a run calls the model with: inputs made from ``input_size`` (``dtype``,
    one for all or one per input, defaulting to ``default_dtype``), or the user's own, copied."""
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise InputError(f"kwargs must be a mapping of keyword arguments, got {type(kwargs).__name__}")
    with outside_inference_mode():  # inputs made or copied under the caller's inference_mode are ordinary tensors
        if input_size is not None:
            if args:
                raise InputError("give either inputs or input_size, not both")
            shapes = normalize_sizes(input_size)
            dtypes = [d or default_dtype for d in input_dtypes(dtype, len(shapes))]
            if device.type != "meta":
                need = sum(math.prod(s) * d.itemsize for s, d in zip(shapes, dtypes))
                _check_room(need, f"input_size {list(shapes[0]) if len(shapes) == 1 else list(shapes)}", device)
            made = tuple(random_input(s, d, device) for s, d in zip(shapes, dtypes))
            return made, dict(kwargs or {})
        if not args and not kwargs:
            raise InputError("give the model's inputs (analyze(model, x)) or input_size=(1, 3, 224, 224)")
        if device.type != "meta":
            need = sum(t.numel() * t.element_size() for t in tensors_in((args, kwargs)) if t.device.type == device.type)
            _check_room(need, "a copy of the inputs", device)
        copied: tuple[tuple[Any, ...], dict[str, Any]] = own_copy(args, dict(kwargs or {}), device)
        return copied
