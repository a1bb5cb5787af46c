"""What every source shares: the options a spec is built with, the result, inputs, errors that name a fix."""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib
import itertools
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import torch
from torch import nn

import torchcost.inputs as _inputs
from torchcost._collector import paused
from torchcost.collect.shadows import known_made
from torchcost.errors import InputError, SpecError
from torchcost.inputs import model_dtype
from torchcost.run.concurrency import importing
from torchcost.run.dynamo import owned
from torchcost.units import format_bytes

__all__ = [
    "ZOO_HINT",
    "BuildOptions",
    "Resolved",
    "build_under",
    "check_device",
    "closest",
    "float_input",
    "int_input",
    "model_dtype",
    "on_device",
    "parse_value",
    "require",
    "uncollected",
    "unknown_name",
    "with_batch",
]

ZOO_HINT = "pip install 'torchcost[zoo]'"


@dataclass(frozen=True)
class Resolved:
    """A model and the inputs to call it with: ``model(*args, **kwargs)`` runs, and so does
    ``torchcost.analyze(model, *args, kwargs=kwargs)``.

    ``spec`` is the normalised spec (``torchvision:resnet50``), ``name`` a short label for tables (``resnet50``),
    ``description`` one line on what was built and with which inputs.
    """

    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    description: str
    spec: str
    name: str


@dataclass(frozen=True)
class BuildOptions:
    """How to build a spec: where (device, dtype), with which inputs, and the source's own arguments.

    ``input_sizes`` replaces the source's default inputs (one shape per input); ``batch_size`` replaces the leading
    dimension of every input made here; ``seq_len`` is the token count of text models. ``config`` holds ``key=value``
    overrides of a transformers config (values as typed on the command line, converted by the field's type),
    ``kwargs`` the keyword arguments of a factory or class. ``input_dtypes`` (one for every input, or one per input
    size) is the dtype of the inputs made from sizes by the file and module sources; None: the model's floating dtype,
    or int64 token ids when the model's first layer is an Embedding. ``train``: the inputs are for a training step,
    where a source adds what its models take only then (torchvision's detection models: targets).
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype | None = None
    input_sizes: tuple[tuple[int, ...], ...] | None = None
    batch_size: int | None = None
    seq_len: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    input_dtypes: tuple[torch.dtype, ...] | None = None
    train: bool = False  # inputs for a training step (a detection model's targets)

    @property
    def meta(self) -> bool:
        return self.device.type == "meta"

    def but(self, **changes: Any) -> BuildOptions:
        return replace(self, **changes)


def uncollected() -> contextlib.AbstractContextManager[None]:
    """While inside (a model library's modules imported), the cyclic collector is paused (torchcost/_collector.py);
    on the way out the command's own process (run/dynamo.py ``owned``) freezes what is alive, as after its own
    imports (cli.py ``_lasting``)."""
    return paused(keep=owned())


def require(package: str, spec: str) -> ModuleType:
    """Import an optional package, or a SpecError naming the extra that installs it."""
    try:
        loaded = sys.modules.get(package)  # (None there: an import that is to fail)
        if loaded is not None:
            return loaded
        with importing(), uncollected():  # (without torch._dynamo, which torchvision imports whole: run/dynamo.py)
            return importlib.import_module(package)
    except ImportError as exc:
        raise SpecError(f"{spec!r} needs {package}, which is not installed ({exc}); install it with: {ZOO_HINT}") \
            from exc


def closest(name: str, names: Iterable[str], n: int = 5) -> list[str]:
    """The names nearest to ``name`` (difflib), case-insensitively, best first."""
    pool = list(dict.fromkeys(names))
    lowered = {p.lower(): p for p in pool}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[h] for h in hits]


def unknown_name(source: str, name: str, names: Iterable[str], what: str = "model") -> SpecError:
    near = closest(name, names)
    hint = f"closest: {', '.join(f'{source}:{c}' for c in near)}" if near else f"see: torchcost list {source}"
    return SpecError(f"{source} has no {what} named {name!r}; {hint}")


def parse_value(text: str) -> Any:
    """A ``key=value`` value as Python: numbers, True/False/None, lists, tuples, strings (quoted or not)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def with_batch(shape: Sequence[int], batch_size: int | None) -> tuple[int, ...]:
    """``shape`` with its leading dimension replaced by ``batch_size`` (when given)."""
    out = tuple(int(s) for s in shape)
    return (batch_size, *out[1:]) if batch_size is not None and out else out


def build_under(device: torch.device, dtype: torch.dtype | None, factory: Callable[[], Any], spec: str,
                kwargs: Mapping[str, Any]) -> Any:
    """Call ``factory`` with ``device`` as the default device (parameters are created there, so a meta build allocates
    nothing); a TypeError from the user's keyword arguments becomes a SpecError naming them.

    A constructor that computes its architecture from tensor values (torchvision's RegNet) cannot run on the meta
    device; such a model is built on cpu and then moved to meta."""
    try:
        try:
            with torch.device(device):
                built = factory()
        except (NotImplementedError, RuntimeError) as exc:
            if device.type != "meta" or "meta" not in str(exc):
                raise
            built = factory()
            if isinstance(built, nn.Module):
                built = built.to(device)
    except TypeError as exc:
        if kwargs:
            given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            raise SpecError(f"{spec!r} does not take the arguments {given}: {exc}") from exc
        raise
    if isinstance(built, nn.Module):
        built = on_device(built, device)
        if dtype is not None:
            built = built.to(dtype)
    return built


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every parameter and buffer on ``device``. A constructor that makes a tensor with a legacy
    constructor (``torch.FloatTensor(n)``, ``torch.Tensor(n)``: transformers' XLNet) makes it on the cpu whatever
    the default device, so a meta build kept those on the cpu, allocated (and a model split across two devices does
    not run)."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    if any(t.device.type != device.type for t in tensors):
        model = model.to(device)
    return model


def check_device(device: torch.device) -> None:
    """A cuda device must be here (and its index below the device count)."""
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise InputError(f"device={str(device)!r}: CUDA is not available on this machine; build on the meta device "
                         f"instead (meta=True; CLI: --meta), which needs no GPU")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _check_room(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
    """Refuse an input that cannot fit in the memory available on ``device``, before allocating it."""
    if device.type == "meta":
        return
    need = math.prod(shape) * dtype.itemsize
    available = _inputs.available_memory(device)
    if available is not None and need > available:
        raise InputError(f"an input of shape {list(shape)} ({str(dtype).removeprefix('torch.')}) would need "
                         f"{format_bytes(need)} on {device}, more than the {format_bytes(available)} available; "
                         f"build on the meta device instead (meta=True; CLI: --meta), which allocates nothing")


def float_input(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`torchcost.inputs.float_input`, refused in one line when it cannot fit where it would be made."""
    _check_room(tuple(shape), dtype, device)
    return _inputs.float_input(shape, dtype, device)


def known_full(shape: Sequence[int], value: float, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``torch.full(shape, value)`` on ``device`` (a mask of ones, a tensor of zeros); on the meta device with its
    values kept for a run that reads them (collect/shadows.py), where they are few enough to follow."""
    return known_made(lambda: torch.full(tuple(shape), value, dtype=dtype), shape, dtype, device)


def int_input(shape: Sequence[int], high: int, device: torch.device, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Random integers of ``dtype`` in [0, high) (capped by the dtype's range; 0 or 1 for bool), refused in one line
    when they cannot fit where they would be made."""
    _check_room(tuple(shape), dtype, device)
    cap = 2 if dtype == torch.bool else torch.iinfo(dtype).max + 1
    made = _inputs.int_input(shape, min(high, cap), device)
    return made if dtype == torch.int64 else made.to(dtype)
