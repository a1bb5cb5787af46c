"""The one place that reads input sizes, a model's device and dtype, and makes or copies inputs.

``analyze``, ``max_batch_size``, ``summary`` and every model source accept and refuse the same input sizes and make
inputs the same way, because they all come here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from torchcost.errors import InputError
from torchcost.trees import map_tensors

__all__ = ["Shape", "float_input", "floating_dtype", "input_dtypes", "int_input", "is_shape", "model_device",
           "model_dtype", "normalize_sizes", "own_copy", "prepare_inputs", "random_input", "run_device_for"]

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
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.device
        device = device or t.device
    return device or torch.device("cpu")


def floating_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter, else of its first floating buffer; None if it has none."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def run_device_for(device: object, model: nn.Module) -> torch.device:
    """The device a run happens on: ``device`` as given (None: the model's own)."""
    if device is None:
        return model_device(model)
    return torch.device(device)  # type: ignore[call-overload]


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs are made with for ``model``: :func:`floating_dtype`, else torch's default dtype."""
    return floating_dtype(model) or torch.get_default_dtype()


def float_input(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Random normal values (a fixed seed, never the global RNG); an empty tensor on the meta device."""
    if device.type == "meta":
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    return torch.randn(tuple(shape), dtype=dtype, device=device, generator=gen)


def int_input(shape: Sequence[int], high: int, device: torch.device) -> torch.Tensor:
    """Random int64 values in [0, high), e.g. token ids within a vocabulary."""
    if device.type == "meta":
        return torch.empty(tuple(shape), dtype=torch.int64, device=device)
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

    return map_tensors((args, kwargs), copy)


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
    if input_size is not None:
        if args:
            raise InputError("give either inputs or input_size, not both")
        shapes = normalize_sizes(input_size)
        dtypes = input_dtypes(dtype, len(shapes))
        made = tuple(random_input(s, d or default_dtype, device) for s, d in zip(shapes, dtypes))
        return made, dict(kwargs or {})
    if not args and not kwargs:
        raise InputError("give the model's inputs (analyze(model, x)) or input_size=(1, 3, 224, 224)")
    copied: tuple[tuple[Any, ...], dict[str, Any]] = own_copy(args, dict(kwargs or {}), device)
    return copied
