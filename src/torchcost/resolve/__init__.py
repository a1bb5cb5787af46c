"""Model specs -> a model and the inputs to call it with.

    >>> from torchcost.resolve import resolve
    >>> r = resolve("torchvision:resnet50", device="meta")
    >>> report = torchcost.analyze(r.model, *r.args, kwargs=r.kwargs)

A spec is one of

=================================  ===============================================================================
``example:NAME``                   a network shipped in :mod:`torchcost.examples` (``torchcost list example``)
``torchvision:NAME``               torchvision's registry, ``weights=None`` (:mod:`torchcost.resolve.torchvision`)
``timm:NAME``                      timm, ``pretrained=False`` (:mod:`torchcost.resolve.timm`)
``hf:NAME`` / ``hf:PATH``          transformers from a shipped or local config.json (:mod:`torchcost.resolve.hf`)
``path/to/file.py:Name``           a class or factory in a file (:mod:`torchcost.resolve.python`)
``package.module:Name``            a class or factory in an importable module
``NAME``                           looked up as an example, a shipped config, a torchvision then a timm model
=================================  ===============================================================================

Each source supplies sensible default inputs (documented in its module); ``input_size``, ``batch_size`` and
``seq_len`` override them. Nothing is ever downloaded. A spec that cannot be built raises
:class:`torchcost.SpecError` with one line naming what was tried and the closest names; a missing optional package
names the extra to install (``pip install 'torchcost[zoo]'``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from torchcost.errors import InputError, SpecError
from torchcost.inputs import normalize_sizes
from torchcost.resolve import examples as _examples
from torchcost.resolve import hf as _hf
from torchcost.resolve import python as _python
from torchcost.resolve import timm as _timm
from torchcost.resolve import torchvision as _torchvision
from torchcost.resolve.common import BuildOptions, Resolved, check_device, closest

__all__ = ["SOURCES", "BuildOptions", "Resolved", "list_names", "parse_spec", "resolve"]

_BUILDERS: dict[str, Callable[[str, BuildOptions], Resolved]] = {
    "example": _examples.build,
    "hf": _hf.build,
    "torchvision": _torchvision.build,
    "timm": _timm.build,
}
_NAMES: dict[str, Callable[[], list[tuple[str, str]]]] = {
    "example": _examples.names,
    "hf": _hf.names,
    "torchvision": _torchvision.names,
    "timm": _timm.names,
}
SOURCES: tuple[str, ...] = tuple(_BUILDERS)
_ALIASES = {"examples": "example", "tv": "torchvision", "transformers": "hf", "huggingface": "hf"}
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``(kind, target, attr)``: kind is a source name, ``file``, ``module`` or ``bare``."""
    text = spec.strip()
    if not text:
        raise SpecError("empty model spec; give one such as example:simple_cnn or torchvision:resnet50")
    head, sep, tail = text.partition(":")
    source = _ALIASES.get(head.lower(), head.lower())
    if sep and source in _BUILDERS:
        if not tail:
            raise SpecError(f"{spec!r} names no model after '{head}:'; see: torchcost list {source}")
        return source, tail, None
    left, sep, right = text.rpartition(":")
    if sep and left.endswith(".py"):
        if not right:
            raise SpecError(f"{spec!r} names nothing after the colon; give path/to/file.py:Name")
        return "file", left, right
    if not sep and text.endswith(".py"):
        return "file", text, None
    if sep and _DOTTED.match(left) and _DOTTED.match(right):
        return "module", left, right
    if not sep:
        return "bare", text, None
    near = closest(head, [*_BUILDERS, *_ALIASES])
    hint = f" (did you mean {near[0]}:{tail}?)" if near else ""
    raise SpecError(f"cannot read the model spec {spec!r}{hint}; use SOURCE:NAME with a source among "
                    f"{', '.join(SOURCES)}, or path/to/file.py:Name, or package.module:Name")


def resolve(
    spec: str,
    *,
    input_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    meta: bool = False,
    config: Mapping[str, Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    input_dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    train: bool = False,
) -> Resolved:
    """Build the model ``spec`` names and the inputs to call it with.

    ``device`` (default cpu; ``meta=True`` means ``device="meta"``: shapes only, no memory for weights) is where the
    model is built and the inputs made; ``dtype`` casts the model (default: as the source builds it; for ``hf:`` the
    config's dtype). ``input_size`` (a shape or a list of shapes, each the whole shape with the batch dimension)
    replaces the default inputs, ``batch_size`` their leading dimension, ``seq_len`` the token count of text models.
    ``config`` overrides fields of a transformers config (strings are converted by the field's type); ``kwargs`` are
    passed to the class or factory. ``input_dtype`` (one for all inputs, or one per ``input_size`` shape; an integer
    dtype makes random ids) is the dtype of the inputs a file or module spec makes from sizes. ``train``: the inputs
    are for a training step (``analyze(..., mode="train")``); a source whose models take more in training adds it
    (torchvision's detection models: their targets).
    """
    opts = _options(input_size, batch_size, seq_len, dtype, device, meta, config, kwargs)
    opts = opts.but(input_dtypes=_input_dtypes(input_dtype, opts.input_sizes), train=bool(train))
    kind, target, attr = parse_spec(spec)
    _refuse_misplaced(spec, kind, target, opts)
    if kind in _BUILDERS:
        return _BUILDERS[kind](target, opts)
    if kind == "file":
        return _python.build_file(target, attr, opts)
    if kind == "module":
        try:
            return _python.build_module(target, attr or "", opts)
        except SpecError as exc:
            if not isinstance(exc.__cause__, ModuleNotFoundError) or "." in target:
                raise
            near = closest(target, [*_BUILDERS, *_ALIASES])
            hint = f"; did you mean {near[0]}:{attr}?" if near else f"; sources: {', '.join(SOURCES)}"
            raise SpecError(f"cannot resolve {spec!r}: {target!r} is neither a source nor an importable "
                            f"module{hint}") from exc
    return _bare(target, opts)


def _refuse_misplaced(spec: str, kind: str, target: str, opts: BuildOptions) -> None:
    """Options that the spec's source does not read are refused rather than ignored."""
    if opts.config and kind != "hf" and not (kind == "bare" and target in _hf.shipped()):
        raise SpecError(f"--config applies to hf: specs only; {spec} takes --kwargs for its arguments")
    if opts.input_dtypes is not None and kind not in ("file", "module"):
        raise SpecError(f"--input-dtype applies to file and module specs (path/to/file.py:Name, package.module:Name); "
                        f"{spec} makes its own inputs")


def _bare(name: str, opts: BuildOptions) -> Resolved:
    """A name without a source: the first of example, shipped config, torchvision, timm that has it."""
    every: list[str] = []
    for source in ("example", "hf", "torchvision", "timm"):
        try:
            known = [n for n, _ in _NAMES[source]()]
        except SpecError:  # the source's package is not installed
            continue
        if name in known:
            return _BUILDERS[source](name, opts)
        every += [f"{source}:{n}" for n in known]
    short = {s.partition(":")[2]: s for s in every}
    near = [short[n] for n in closest(name, short)]
    hint = f"closest: {', '.join(near)}" if near else "see: torchcost list"
    raise SpecError(f"no example, shipped config, torchvision or timm model is named {name!r}; {hint}")


def list_names(source: str) -> list[tuple[str, str]]:
    """``(spec, description)`` for every name ``source`` offers (``example``, ``hf``, ``torchvision``, ``timm``)."""
    key = _ALIASES.get(source.lower(), source.lower())
    if key not in _NAMES:
        near = closest(source, [*_NAMES, *_ALIASES])
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise SpecError(f"no source named {source!r}{hint}; sources: {', '.join(SOURCES)}")
    return [(f"{key}:{name}", text) for name, text in _NAMES[key]()]


def _options(
    input_size: Any, batch_size: int | None, seq_len: int | None, dtype: torch.dtype | None,
    device: str | torch.device | None, meta: bool, config: Mapping[str, Any] | None, kwargs: Mapping[str, Any] | None,
) -> BuildOptions:
    dev = _device(device, meta)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"dtype must be a floating torch.dtype such as torch.float16, got {dtype!r}")
    sizes: tuple[tuple[int, ...], ...] | None = None
    if input_size is not None:
        sizes = normalize_sizes(input_size)
    for label, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InputError(f"{label} must be a positive int, got {value!r}")
    config_values = {str(k): str(v) for k, v in (config or {}).items()}
    factory_kwargs = {str(k): v for k, v in (kwargs or {}).items()}
    return BuildOptions(device=dev, dtype=dtype, input_sizes=sizes, batch_size=batch_size, seq_len=seq_len,
                        config=config_values, kwargs=factory_kwargs)


def _device(device: str | torch.device | None, meta: bool) -> torch.device:
    """Where to build: ``device`` (default cpu); ``meta=True`` is shorthand for ``device="meta"``, and any other
    device given with it is a contradiction."""
    try:
        dev = torch.device("cpu") if device is None else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"device={device!r} is not a device; give 'cpu', 'cuda', 'cuda:1' or 'meta'") from None
    if meta and device is not None and dev.type != "meta":
        raise InputError(f"meta=True (--meta) is shorthand for device='meta'; it cannot be combined with "
                         f"device={device!r}")
    dev = torch.device("meta") if meta else dev
    check_device(dev)
    return dev


def _input_dtypes(input_dtype: torch.dtype | Sequence[torch.dtype] | None,
                  sizes: tuple[tuple[int, ...], ...] | None) -> tuple[torch.dtype, ...] | None:
    """``input_dtype`` as a tuple: one dtype for every input, or one per input size."""
    if input_dtype is None:
        return None
    given = (input_dtype,) if isinstance(input_dtype, torch.dtype) else \
        tuple(input_dtype) if isinstance(input_dtype, (list, tuple)) else ()
    if not given or not all(isinstance(d, torch.dtype) and not d.is_complex for d in given):
        raise InputError(f"input_dtype must be a torch.dtype (such as torch.int64 or torch.float16) or a list of "
                         f"them, got {input_dtype!r}")
    if sizes and len(given) not in (1, len(sizes)):
        raise InputError(f"{len(given)} input dtypes for {len(sizes)} input sizes; give one for all inputs or one "
                         f"per input size")
    return given
