"""``path/to/file.py:Name`` and ``package.module:Name``: your own class or factory.

``Name`` (a dotted attribute path is fine) is called with the ``--kwargs`` and must give an ``nn.Module``, or a
``(module, inputs)`` pair whose inputs are used as they are. A module instance defined at module level is used
directly. ``path/to/file.py`` alone picks the one ``nn.Module`` subclass the file defines.

Inputs, in this order: ``--input-size`` (random tensors); the inputs of a ``(module, inputs)`` pair; the model's
``example_input_array`` attribute (PyTorch Lightning's convention: a tensor, a tuple of them or a dict of keyword
arguments); its ``input_size`` attribute (a shape, or a list of shapes). Otherwise the spec is refused with a hint
to give ``--input-size``. The pair's and ``example_input_array``'s inputs are used as they are.

An ``input_size`` attribute is read like ``--input-size``: the whole shape, batch dimension included
(``input_size = (1, 3, 224, 224)``), as torchcost has always read it; ``--batch-size`` replaces its leading
dimension. A per-sample size without the batch dimension (fvcore's convention, ``(3, 224, 224)``) is therefore
taken as that whole shape, a tensor of three dimensions, which some layers read as one unbatched sample and others
refuse: write the batch dimension into the attribute, or give ``--input-size``.

Inputs made from sizes have the dtypes of ``--input-dtype`` (one for all, or one per size); integer ones are random
ids below the ``num_embeddings`` of the model's first layer when that is an Embedding (else of its smallest
Embedding; else 0 or 1). Without ``--input-dtype`` they are floats in the model's dtype, except for a model whose
first layer (the first leaf module it holds, in registration order) is an ``nn.Embedding``: its inputs are int64
token ids, and the description says so. Inputs the spec supplies itself take no ``--input-dtype``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from torchcost.errors import SpecError, a_kind, first_line
from torchcost.resolve.common import (
    BuildOptions,
    Resolved,
    build_under,
    closest,
    float_input,
    int_input,
    model_dtype,
    with_batch,
)
from torchcost.run.checks import uncompiled

__all__ = ["build_file", "build_module", "load_file"]


def load_file(path_text: str) -> ModuleType:
    """Execute a .py file as a module of its own (registered in sys.modules, so dataclasses and pickling work)."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise SpecError(f"{path_text}: no such file")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_name = f"torchcost_user_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SpecError(f"{path_text}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # a file that calls sys.exit() at import is the user's input too
        del sys.modules[module_name]
        raise SpecError(f"{path_text} raised {type(exc).__name__} while loading: {first_line(exc)}") from exc
    return module


def _candidates(module: ModuleType) -> list[str]:
    """Names in ``module`` that could be a model: nn.Module subclasses and instances, then other public callables."""
    modules, other = [], []
    for key, value in vars(module).items():
        if key.startswith("_"):
            continue
        if (isinstance(value, type) and issubclass(value, nn.Module)) or isinstance(value, nn.Module):
            modules.append(key)
        elif callable(value) and not isinstance(value, (type, ModuleType)):
            other.append(key)
    return modules + other


def _own_module_classes(module: ModuleType) -> list[str]:
    return [k for k, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == module.__name__]


def _lookup(module: ModuleType, attr: str, where: str) -> Any:
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            near = closest(attr, _candidates(module))
            hint = f"; closest: {', '.join(near)}" if near else \
                f"; it defines: {', '.join(_candidates(module)[:8]) or 'no nn.Module'}"
            raise SpecError(f"{where} has no {attr!r}{hint}")
        obj = getattr(obj, part)
    return obj


def build_file(path_text: str, attr: str | None, opts: BuildOptions) -> Resolved:
    module = load_file(path_text)
    if attr is None:
        classes = _own_module_classes(module)
        if len(classes) != 1:
            found = ", ".join(classes) or "none"
            raise SpecError(f"{path_text} defines {len(classes)} nn.Module classes ({found}); name one as "
                            f"{path_text}:Name")
        attr = classes[0]
    return _build(_lookup(module, attr, path_text), f"{path_text}:{attr}", attr, opts)


def build_module(module_name: str, attr: str, opts: BuildOptions) -> Resolved:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"cannot import {module_name!r} for {module_name}:{attr}: {first_line(exc)}") from exc
    except (Exception, SystemExit) as exc:
        raise SpecError(f"{module_name} raised {type(exc).__name__} on import: {first_line(exc)}") from exc
    return _build(_lookup(module, attr, module_name), f"{module_name}:{attr}", attr, opts)


def _build(obj: Any, spec: str, name: str, opts: BuildOptions) -> Resolved:
    if opts.seq_len is not None:
        raise SpecError(f"--seq-len applies to text models (hf:...); give {spec} its inputs with --input-size")
    if isinstance(obj, nn.Module):
        if opts.kwargs:
            raise SpecError(f"{spec} is a module instance, not a class or factory: it takes no --kwargs")
        built: Any = obj.to(device=opts.device)
        if opts.dtype is not None:
            built = built.to(opts.dtype)
    elif callable(obj):
        try:
            built = build_under(opts.device, opts.dtype, lambda: obj(**opts.kwargs), spec, opts.kwargs)
        except SpecError:
            raise
        except (Exception, SystemExit) as exc:  # builtins:exit, sys:exit, a factory that exits
            raise SpecError(f"{spec} raised {type(exc).__name__} when called: {first_line(exc)}") from exc
    else:
        raise SpecError(f"{spec} is {a_kind(obj)}, not an nn.Module class or factory")
    inputs: Any = None
    if isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], nn.Module):
        built, inputs = built
    if not isinstance(built, nn.Module):
        raise SpecError(f"{spec} returned {a_kind(built)}, not an nn.Module")
    model: nn.Module = uncompiled(built)  # (torch.compile's wrapper: its eager module is what is analysed)
    args, kwargs, note = _inputs(model, inputs, spec, opts)
    kind = type(model).__name__ + (", compiled: its eager module" if model is not built else "")
    return Resolved(model, args, kwargs, f"{spec} ({kind}{note})", spec, name)


def _inputs(model: nn.Module, given: Any, spec: str,
            opts: BuildOptions) -> tuple[tuple[Any, ...], dict[str, Any], str]:
    """The model's inputs by the order in the module's docstring, and a note on them for the description."""
    dtype = model_dtype(model)
    own = given if given is not None else getattr(model, "example_input_array", None)
    if opts.input_sizes:
        sizes: list[Any] = list(opts.input_sizes)
    elif own is not None:
        if opts.input_dtypes is not None:
            raise SpecError(f"{spec} supplies its own inputs; --input-dtype applies to inputs made from sizes, so "
                            f"give --input-size too")
        args, kwargs = _as_call(own, opts, dtype)
        return args, kwargs, ""
    elif _is_sizes(getattr(model, "input_size", None)):
        size: Any = model.input_size
        sizes = [size] if all(isinstance(s, int) for s in size) else list(size)
    else:
        raise SpecError(f"{spec} has no default input (no example_input_array or input_size attribute); "
                        f"give one with --input-size, e.g. --input-size 1,3,224,224")
    return _from_sizes(model, sizes, dtype, spec, opts)


_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


def _first_layer(model: nn.Module) -> nn.Module:
    """The first leaf module the model holds (registration order), or the model itself when it has no children."""
    return next((m for m in model.modules() if next(m.children(), None) is None), model)


def _id_bound(model: nn.Module, first: nn.Module) -> int:
    """Integer inputs are drawn below this: the first layer's vocabulary, else the smallest one, else 2."""
    if isinstance(first, _EMBEDDINGS):
        return int(first.num_embeddings)
    return min((int(m.num_embeddings) for m in model.modules() if isinstance(m, _EMBEDDINGS)), default=2)


def _from_sizes(model: nn.Module, sizes: list[Any], dtype: torch.dtype, spec: str,
                opts: BuildOptions) -> tuple[tuple[Any, ...], dict[str, Any], str]:
    """Random inputs of these sizes: floats in the model's dtype, int64 ids for an Embedding first, or as asked."""
    first = _first_layer(model)
    high = _id_bound(model, first)
    given, note = opts.input_dtypes, ""
    if given is None and isinstance(first, _EMBEDDINGS):
        given, note = (torch.int64,), f"; int64 token ids in [0, {high}): its first layer is an {type(first).__name__}"
    if given is None:
        given = (dtype,)
    if len(given) not in (1, len(sizes)):
        raise SpecError(f"{spec} takes {len(sizes)} inputs (its input_size attribute); --input-dtype gives "
                        f"{len(given)} dtypes: give one for all or one per input")
    dtypes = given * len(sizes) if len(given) == 1 else given
    args = tuple(_made(with_batch(s, opts.batch_size), d, high, opts.device) for s, d in zip(sizes, dtypes))
    return args, {}, note


def _made(shape: tuple[int, ...], dtype: torch.dtype, high: int, device: torch.device) -> torch.Tensor:
    if dtype.is_floating_point:
        return float_input(shape, dtype, device)
    return int_input(shape, high, device, dtype)


def _is_sizes(value: Any) -> bool:
    if not isinstance(value, (tuple, list, torch.Size)) or not value:
        return False
    if all(isinstance(s, int) and s > 0 for s in value):
        return True
    return all(isinstance(s, (tuple, list)) and s and all(isinstance(d, int) and d > 0 for d in s) for s in value)


def _as_call(inputs: Any, opts: BuildOptions, dtype: torch.dtype) -> tuple[tuple[Any, ...], dict[str, Any]]:
    def move(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            t = obj.to(opts.device)
            return t.to(dtype) if t.is_floating_point() and opts.dtype is not None else t
        if isinstance(obj, dict):
            return {k: move(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(move(v) for v in obj)
        return obj

    moved = move(inputs)
    if isinstance(moved, dict):
        return (), dict(moved)
    if isinstance(moved, tuple):
        return moved, {}
    return (moved,), {}
