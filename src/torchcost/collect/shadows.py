"""Values a run on meta tensors knows: the inputs torchcost made, and what is computed from them alone.

A meta tensor has a shape and no values, so a forward that reads values (``.item()``, ``bool(mask.all())``,
``tolist()``, ``nonzero``, ``repeat_interleave`` of counts) cannot run on the meta device: transformers' mask
helpers ask whether a padding mask is all ones, a vision tower reads its image grid (``grid_thw``,
``spatial_shapes``), an XLM-style encoder the longest sequence of its ids, an audio codec its padding from the
length. None of those values comes from the weights: they come from the inputs torchcost made and from numbers in
the forward (``arange``, ``torch.tensor(n)``), through ops that take nothing else.

So a meta run follows those values on the CPU, beside the meta tensors, storage for storage:

* a meta input made by torchcost with known values (:func:`known_input`: token ids, masks of ones, image grids, the
  random pixels and features a cpu build gets from the same seed) has a *shadow*: a CPU storage of the same bytes
  holding its values;
* an op whose every tensor argument has a shadow (or is a CPU tensor), and which draws no random numbers, runs as
  always on meta, then once more on the shadows, and its new outputs get shadows of their own, up to
  :data:`LIMIT` elements each (a view shares its base's shadow; an in-place op writes into it);
* such an op that the meta kernel refuses for want of values (the reads above, and ops whose output's size is
  data) is answered from the CPU run instead: the value, or a meta tensor of the CPU output's metadata with that
  output as its shadow;
* an op that writes into a storage with a shadow from anything else (a value not known) drops that shadow;
* an indexing by boolean masks with shadows (``x[mask]``, and ``grad[mask]`` in the backward of ``h[mask] = v``), whose
  output's size the meta kernel cannot tell, runs again on the masks' integer indices, made from their shadows;
* a check for infinities or NaNs (``isfinite``, ``isinf``, ``isnan``) of values not known gets the shadow of finite
  values: a training step's overflow check (``if not isfinite(h).all(): clamp``) takes a finite step's path.

A fake twin's run (a cpu model's training step) follows ops only from the first value it knows: its lent integer
inputs, a tensor made from numbers or by a factory (``arange``, ``ones``: DETR's pixel mask), or a random number its
forward draws on the CPU (LayerDrop's ``torch.rand([])``), which is drawn there for real from torch's default
generator, as the real step draws it; the generator's state is put back when the run ends. Until then its ops cost
nothing more.

What a meta run reports is unchanged where it reads no values; where it reads known values it now runs on and counts
what a CPU run counts, instead of stopping. Values that come from weights (random on meta, never read) are never
known, and a read of them stops the run as before.
"""

from __future__ import annotations

import contextlib
import math
import sys
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from torchcost.collect.storages import storage_of
from torchcost.formulas.registry import written_arguments
from torchcost.trees import op_tensors, tensors_in

__all__ = ["FINITE_CHECKS", "LIMIT", "MADE", "Shadows", "carry", "factory", "following", "known_input", "known_made",
           "known_values", "lent", "random_factory", "untraced"]

LIMIT = 1 << 20  # elements: a tensor larger than this gets no shadow (its values are not followed)
_META = torch.device("meta")
_META_LIKE = torch.empty(0, device=_META)  # (what a meta run's tensors are: :meth:`Shadows._made_like`'s ``like``)
_INDEX = torch.ops.aten.index.Tensor
_FINITE = frozenset({torch.isfinite, torch.Tensor.isfinite})
# the checks for infinities and NaNs (torch functions: isfinite reaches the dispatcher as abs, ne, eq and mul),
# answered as for finite values where the values are not known (Shadows.checked)
FINITE_CHECKS = frozenset({torch.isinf, torch.isnan, torch.isposinf, torch.isneginf, torch.Tensor.isinf,
                           torch.Tensor.isnan, torch.Tensor.isposinf, torch.Tensor.isneginf}) | _FINITE
_CPU = torch.device("cpu")
_NO_PYTHON_DISPATCH = torch._C._DisableTorchDispatch
_NO_TORCH_FUNCTION = torch._C.DisableTorchFunction
_RANDOM = torch.Tag.nondeterministic_seeded
_MISS = object()
# the functions that make a tensor from Python data: on the meta device their values reach no op of the dispatcher,
# so the run's function mode tells :meth:`Shadows.made` of them; indexing too, whose list or number indices become an
# index tensor on the meta device the same way (``grid[:, [0, 2, 1]]``)
_CONSTRUCTORS = frozenset((torch.tensor, torch.as_tensor, torch.asarray))
MADE = _CONSTRUCTORS | {torch.Tensor.__getitem__}

# id() of a meta or fake storage -> (a weak reference to it, whose death drops the entry; the CPU storage holding its
# values; the version counter of the tensor registered): what the inputs torchcost made hold (known_input), a twin's
# lent inputs (lent, carry), and buffers a meta constructor made from numbers (Shadows.keep); a run takes the entries
# of its own inputs and buffers, where nothing wrote into them since
_KNOWN: dict[int, tuple[weakref.ref[torch.UntypedStorage], torch.UntypedStorage, int]] = {}


def known_input(values: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``values`` (a CPU tensor) on ``device``; on the meta device, with its values kept as the meta tensor's
    shadow (up to :data:`LIMIT` elements), for a run that reads them."""
    device = torch.device(device)
    if device.type != "meta":
        return values.to(device)
    meta = values.to(_META)
    if values.numel() <= LIMIT:
        storage = storage_of(meta)
        if storage is not None:
            _remember(storage, _holding(meta, values), meta)
    return meta


def known_made(make: Callable[[], torch.Tensor], shape: Sequence[int], dtype: torch.dtype,
               device: torch.device | str) -> torch.Tensor:
    """``make()`` (a CPU tensor of ``shape`` and ``dtype``: token ids, a mask of ones) on ``device`` by
    :func:`known_input`; on the meta device past :data:`LIMIT` elements an empty meta tensor, ``make`` not called
    (its values would not be followed: they are not made)."""
    device = torch.device(device)
    if device.type == "meta" and math.prod(shape) > LIMIT:
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    return known_input(make(), device)


def _valueless(t: torch.Tensor) -> bool:
    """Whether ``t`` holds no values: a meta tensor, or a fake one (a fake twin's: its storage is a meta one)."""
    return type(t) is FakeTensor or t.is_meta  # (in this order: a fake tensor answers is_meta through Python)


def lent(source: torch.Tensor, made: torch.Tensor) -> torch.Tensor:
    """``made`` (a twin's input: a meta or fake tensor of ``source``'s metadata on a storage of its own) holds the
    values of ``source`` (the caller's tensor, on any device but meta) for a run that reads them, where they are
    integer or boolean (token ids, masks, grids, lengths: what a forward reads for its control flow; a float input's
    values are not followed, so a run on float inputs alone pays nothing for this) and up to :data:`LIMIT`
    elements."""
    if type(source) is not torch.Tensor or source.is_meta or source.is_floating_point() or source.is_complex() or \
            source.numel() > LIMIT or not _valueless(made):
        return made
    storage = storage_of(made)
    if storage is not None and _same_layout(made, source):
        _remember(storage, _holding(made, source), made)
    return made


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.shape, a.stride(), a.storage_offset()) == (b.shape, b.stride(), b.storage_offset())


def _remember(storage: torch.UntypedStorage, values: torch.UntypedStorage, made: torch.Tensor) -> None:
    """The meta or fake ``storage`` (``made``'s) holds ``values``, for any run that takes ``made`` (or a view of it)
    before something writes into it; the entry goes when the storage dies (:func:`_ref`)."""
    _KNOWN[id(storage)] = (_ref(storage), values, made._version)


def _ref(storage: torch.UntypedStorage) -> weakref.ref[torch.UntypedStorage]:
    """A weak reference to ``storage`` whose death drops its entry from ``_KNOWN`` (and the CPU values it holds)."""
    key = id(storage)

    def dropped(ref: weakref.ref[torch.UntypedStorage]) -> None:
        entry = _KNOWN.get(key)
        if entry is not None and entry[0] is ref:
            del _KNOWN[key]

    return weakref.ref(storage, dropped)


def _known(t: torch.Tensor) -> torch.UntypedStorage | None:
    """The CPU storage holding the values torchcost knows of the meta tensor ``t``: registered, alive, and not
    written into since (an in-place op outside a run bumps the tensor's version counter); else None."""
    storage = storage_of(t) if _valueless(t) else None
    entry = _KNOWN.get(id(storage)) if storage is not None else None
    if entry is None or entry[0]() is not storage or entry[2] != t._version:
        return None
    return entry[1]


def known_values(t: torch.Tensor) -> torch.Tensor | None:
    """The values of ``t`` where torchcost knows them: a CPU tensor's own, a meta tensor's shadow
    (:func:`known_input`); else None."""
    if type(t) is torch.Tensor and t.device.type == "cpu":
        return t
    values = _known(t)
    if values is None:
        return None
    with _NO_PYTHON_DISPATCH(), _NO_TORCH_FUNCTION():
        return _view(values, t).clone()


def carry(source: torch.Tensor, made: torch.Tensor) -> torch.Tensor:
    """``made`` (a meta tensor of ``source``'s metadata on a storage of its own: a meta twin's input) holds the values
    ``source`` is known to hold, if any."""
    values = _known(source)
    target = storage_of(made) if values is not None else None
    if values is not None and target is not None and _same_layout(made, source):
        _remember(target, values, made)
    return made


def _holding(meta: torch.Tensor, values: torch.Tensor) -> torch.UntypedStorage:
    """A new CPU storage of ``meta``'s storage's size holding ``values`` where ``meta`` lies in it."""
    with _NO_PYTHON_DISPATCH(), _NO_TORCH_FUNCTION():
        storage = torch.empty(meta.untyped_storage().nbytes(), dtype=torch.uint8).untyped_storage()
        _view(storage, meta).copy_(values)
    return storage


def _view(storage: torch.UntypedStorage, like: torch.Tensor) -> torch.Tensor:
    """The CPU tensor of ``like``'s dtype, shape, strides and offset on ``storage``."""
    return torch.empty(0, dtype=like.dtype).set_(storage, like.storage_offset(), like.shape, like.stride())


class Shadows:
    """The shadows of one meta run (see the module's docstring); the dispatch mode asks :meth:`knows` of each op,
    runs those it knows through :meth:`run` and tells :meth:`unknown` of the others."""

    def __init__(self, inputs: Any) -> None:
        self._cpu: dict[int, tuple[weakref.ref[torch.UntypedStorage], torch.UntypedStorage]] = {}
        # id(op) -> (whether it draws random numbers, the arguments it writes (position, name), the op, held)
        self._ops: dict[int, tuple[bool, tuple[tuple[int, str], ...], Any]] = {}
        # the tensors given whose values are known, and their version counters: the run writes into its own copy of
        # the values, and torchcost leaves the inputs as they came, so on the way out their entries take the
        # versions the run's in-place ops left (__exit__)
        self._seeds: list[tuple[torch.Tensor, int]] = []
        # a fake twin's run: it follows ops only once it knows a value, and its random factories on the CPU draw
        # their numbers there for real (:meth:`_drawn`)
        self.fake = False
        self._rng: torch.Tensor | None = None  # the CPU generator's state before the run's first draw, put back after
        for t in tensors_in(inputs) if _KNOWN else ():
            values = _known(t)
            if values is not None:
                storage = storage_of(t)
                self._cpu[id(storage)] = (weakref.ref(storage), _copied(values))  # type: ignore[arg-type]
                self._seeds.append((t, t._version))

    def __enter__(self) -> Shadows:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rng is not None:
            torch.set_rng_state(self._rng)
            self._rng = None
        for t, version in self._seeds:
            storage = storage_of(t)
            entry = _KNOWN.get(id(storage))
            if entry is not None and entry[0]() is storage and entry[2] == version:
                _KNOWN[id(storage)] = (entry[0], entry[1], t._version)
        self._seeds = []

    def __bool__(self) -> bool:
        return bool(self._cpu)

    def holds(self, t: torch.Tensor) -> bool:
        """Whether this run knows the values of ``t``."""
        return _valueless(t) and self._storage(t) is not None

    def keep(self, tensors: Any) -> None:
        """Those of ``tensors`` whose values this run knows keep them past it, for a later run that takes them as
        it inputs, buffers or attributes (a meta model's buffers made from numbers in its constructor)."""
        for t in tensors_in(tensors):
            storage = storage_of(t) if _valueless(t) else None
            entry = self._cpu.get(id(storage)) if storage is not None else None
            if storage is not None and entry is not None and entry[0]() is storage:
                _remember(storage, entry[1], t)

    def _op(self, func: Any) -> tuple[bool, tuple[tuple[int, str], ...], Any]:
        known = self._ops.get(id(func))
        if known is None:
            schema = getattr(func, "_schema", None)
            written = tuple((i, name) for i, name, _ in written_arguments(schema)) if schema is not None else ()
            known = self._ops[id(func)] = (_RANDOM in getattr(func, "tags", ()), written, func)
        return known

    def _storage(self, t: torch.Tensor) -> torch.UntypedStorage | None:
        """The CPU storage shadowing ``t``'s, or None."""
        storage = storage_of(t)
        entry = self._cpu.get(id(storage)) if storage is not None else None
        if entry is None or entry[0]() is not storage:
            return None
        return entry[1]

    def knows(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether every tensor argument of the op has a shadow or values of its own (an op of none, a factory,
        does), and the op draws no random numbers. (Asked of every op of a meta run: the usual answer, an argument
        without a shadow, is found at the first tensor, by its storage's id.)"""
        tensors = op_tensors(args, kwargs)
        cpu = self._cpu
        if tensors and not cpu:
            return False
        for t in tensors:
            if type(t) is FakeTensor or t.is_meta:
                try:
                    storage = t.untyped_storage()
                except (RuntimeError, NotImplementedError):  # (a layout without a strided storage)
                    return False
                entry = cpu.get(id(storage))
                if entry is None or entry[0]() is not storage:
                    return False
            elif t.device.type != "cpu" or (type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter)):
                return False
        known = self._ops.get(id(func))
        return not (known if known is not None else self._op(func))[0]

    def run(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], meta: Any) -> Any:
        """An op :meth:`knows`: ``meta()`` (the op as the run makes it on meta), with shadows for its new outputs;
        where ``meta()`` raises, the op's answer from the shadows, or the error where they raise too."""
        try:
            out = meta()
        except Exception:
            originals: dict[int, torch.Tensor] = {}
            answer = self._on_cpu(func, args, kwargs, originals)
            if answer is _MISS:
                raise
            return self._from_cpu(answer, kwargs, originals)
        made = [t for t in tensors_in(out) if _valueless(t)]
        written = self._written(func, args, kwargs)
        if not written and all(self._storage(t) is not None for t in made):
            return out  # (a view of tensors with shadows: it shares theirs)
        if any(t.numel() > LIMIT for t in made):
            self._forget(made + written)
            return out
        answer = self._on_cpu(func, args, kwargs, {})
        if answer is _MISS:
            self._forget(made + written)
            return out
        for t, values in zip(tensors_in(out), tensors_in(answer)):
            if _valueless(t) and self._storage(t) is None:
                self._adopt(t, values)
        return out

    def dispatch(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: Callable[[], Any],
                 follow: bool = True, again: Callable[[tuple[Any, ...], dict[str, Any]], Any] | None = None) -> Any:
        """One op of a dispatch mode: ``call()`` (the op as the mode runs it), through :meth:`run` where ``follow``
        and the op :meth:`knows`, else with :meth:`unknown` told after it. A fake twin's random factory on the CPU
        gets numbers drawn there (:meth:`_drawn`). Where ``call()`` raises for an indexing whose only data-dependent
        part is known (:meth:`_known_indices`), the op is run once more by ``again(args, kwargs)`` (the mode's run
        of other arguments) on arguments that say the same without it."""
        if follow and self.knows(func, args, kwargs):
            return self.run(func, args, kwargs, call)
        if follow and self.fake and random_factory(func):
            out = call()
            self._drawn(func, args, kwargs, out)
            return out
        try:
            out = call()
        except Exception:
            rewritten = self._known_indices(func, args) if follow and again is not None else None
            if rewritten is None:
                raise
            out = again(rewritten, kwargs)  # type: ignore[misc]  # (again is not None where rewritten is not)
        self.unknown(func, args, kwargs)
        return out

    def _drawn(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        """A random factory's fake output on the CPU (``torch.rand([])``, transformers' LayerDrop) with numbers drawn
        for it on the CPU from torch's default generator, as the real step draws them there, so that a forward that
        reads them (``if torch.rand([]) < p``) reads numbers as a run on meta tensors does, where the same call
        makes a real CPU tensor. Not for a generator of the caller's, an accelerator's tensor or more than
        :data:`LIMIT` elements. The generator's state is put back when the run ends (:meth:`__exit__`), as a run
        on meta tensors puts it back (run/guard.py)."""
        if not isinstance(out, FakeTensor) or out.fake_device.type != "cpu" or out.numel() > LIMIT or \
                any(isinstance(v, torch.Generator) for v in (*args, *kwargs.values())):
            return
        if self._rng is None:
            self._rng = torch.get_rng_state()
        values = self._on_cpu(func, args, {k: v for k, v in kwargs.items() if k != "device"}, {})
        if values is not _MISS:
            self._adopt(out, values)

    def checked(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``func(*args, **kwargs)``, one of :data:`FINITE_CHECKS`; where its output is a tensor of values not known,
        it is known as for finite values: no element is infinite or NaN (``isfinite``: every element is finite). A
        training step's check for overflow (DETR-like encoders: ``if not isfinite(h).all(): clamp``) then takes the
        path of a step whose activations are finite, as on the cpu."""
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and _valueless(out) and self._storage(out) is None and \
                out.dtype == torch.bool and out.numel() <= LIMIT:
            with _NO_PYTHON_DISPATCH(), _NO_TORCH_FUNCTION():
                values = (torch.ones if func in _FINITE else torch.zeros)(out.shape, dtype=torch.bool)
            self._adopt(out, values)
        return out

    def _known_indices(self, func: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """``index.Tensor(self, indices)``'s arguments with each boolean mask among the indices replaced by the
        integer indices of its true elements (``mask.nonzero().unbind(1)``, as ATen's indexing expands a mask before
        it indexes), made from the mask's known values; None where the op is another, or some mask's values are not
        known. The output's size is the masks' count of true elements, which a meta kernel cannot tell: SpecAugment's
        ``hidden_states[mask]`` in a training step's backward (wav2vec2, HuBERT, WavLM), ``x[mask]`` of a mask made
        from numbers. ``self``'s values do not matter to it, known or not."""
        if func is not _INDEX or len(args) != 2 or not isinstance(args[1], (list, tuple)):
            return None
        like, indices = args[0], args[1]
        expanded: list[Any] = []
        masks = False
        for index in indices:
            if isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8):
                storage = self._storage(index) if _valueless(index) else None
                if storage is None:
                    return None
                with _NO_PYTHON_DISPATCH(), _NO_TORCH_FUNCTION():
                    positions = _view(storage, index).nonzero().unbind(1)
                expanded.extend(self._made_like(p, like) for p in positions)
                masks = True
            else:
                expanded.append(index)
        return (like, type(indices)(expanded)) if masks else None

    def _made_like(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A tensor of ``values``' metadata of ``like``'s kind (a meta tensor, or a fake tensor of ``like``'s mode and
        device), holding ``values`` as its shadow."""
        with _NO_PYTHON_DISPATCH(), _NO_TORCH_FUNCTION():
            made = torch.empty_strided(values.shape, values.stride(), dtype=values.dtype, device=_META)
            if type(like) is FakeTensor:
                made = FakeTensor(like.fake_mode, made, like.fake_device)
        self._adopt(made, values)
        return made

    def unknown(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """An op :meth:`knows` not has run: the storages it wrote into no longer hold known values."""
        if self._cpu:
            known = self._ops.get(id(func))
            if (known if known is not None else self._op(func))[1]:
                self._forget(self._written(func, args, kwargs))

    def make(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``func(*args, **kwargs)``, one of :data:`MADE`, told to :meth:`made`. Where it raises and its data holds
        tensors whose values the run knows (``torch.tensor([n, m])`` of 0-d fake tensors: torch reads their data
        directly, which a fake tensor has not), it is made on the CPU from those values instead."""
        try:
            out = func(*args, **kwargs)
        except Exception:
            answer = _MISS
            originals: dict[int, torch.Tensor] = {}
            tensors = tensors_in((args, kwargs))
            if tensors and all(not _valueless(t) or self._storage(t) is not None for t in tensors):
                answer = self._made_on_cpu(func, args, kwargs, originals)
            if answer is _MISS:
                raise
            return self._from_cpu(answer, kwargs, originals)
        self.made(func, args, kwargs, out)
        return out

    def made(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        """``out = func(*args, **kwargs)``, a tensor made from Python data (``torch.tensor(data, device=...)``):
        where ``out`` is a meta tensor and every tensor in the data is known (``torch.tensor([n, m])`` of 0-d
        tensors), the same tensor made on the CPU from the known values is its shadow."""
        if not isinstance(out, torch.Tensor) or not _valueless(out) or out.numel() > LIMIT or \
                self._storage(out) is not None:  # (a view of a known tensor, indexed by slices: known already)
            return
        tensors = tensors_in((args, kwargs))
        if any(_valueless(t) and self._storage(t) is None for t in tensors):
            return
        if out.numel() == 0:
            with _NO_PYTHON_DISPATCH(), _NO_TORCH_FUNCTION():
                values = torch.empty(out.shape, dtype=out.dtype)
        else:
            values = self._made_on_cpu(func, args, kwargs, {})
            if values is _MISS:
                return
        self._adopt(out, values)

    def _made_on_cpu(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                     originals: dict[int, torch.Tensor]) -> Any:
        """One of :data:`MADE` on the CPU from the known values of the tensors in its data (a constructor on the
        CPU device), or _MISS where it raises."""
        where = {"device": _CPU} if func in _CONSTRUCTORS else {}
        with _NO_PYTHON_DISPATCH(), _NO_TORCH_FUNCTION():
            try:
                return func(*self._shadow(args, originals), **{**kwargs, **where})
            except Exception:
                return _MISS

    def _written(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for position, name in self._op(func)[1]:
            value = args[position] if position < len(args) else kwargs.get(name)
            out.extend(tensors_in(value))
        return out

    def _forget(self, tensors: list[torch.Tensor]) -> None:
        for t in tensors:
            storage = storage_of(t) if _valueless(t) else None
            if storage is not None:
                self._cpu.pop(id(storage), None)

    def _adopt(self, t: torch.Tensor, values: torch.Tensor) -> None:
        """``t`` (a meta tensor on a storage without a shadow) holds ``values``, where their metadata agree."""
        storage = storage_of(t)
        if storage is None or not isinstance(values, torch.Tensor) or values.device.type != "cpu" or \
                values.shape != t.shape or values.dtype != t.dtype or t.numel() > LIMIT:
            return
        self._cpu[id(storage)] = (weakref.ref(storage), _holding(t, values))

    def _on_cpu(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                originals: dict[int, torch.Tensor]) -> Any:
        """The op on the shadows (meta tensors replaced by CPU views of theirs, a meta device by the CPU), or _MISS
        where it raises; ``originals`` is given id(tensor as run) -> the argument it stands for."""
        with _NO_PYTHON_DISPATCH(), _NO_TORCH_FUNCTION():
            try:
                return func(*self._shadow(args, originals),
                            **{k: self._shadow(v, originals) for k, v in kwargs.items()})
            except Exception:
                return _MISS

    def _shadow(self, v: Any, originals: dict[int, torch.Tensor]) -> Any:
        """``v`` as the CPU run takes it. (A method, not a closure calling itself: that would be a reference cycle
        holding the op's arguments until the garbage collector runs, and the memory timeline would see them live
        on.)"""
        if isinstance(v, torch.Tensor):
            if not _valueless(v):
                originals[id(v)] = v
                return v
            storage = self._storage(v)
            assert storage is not None  # (knows() said so)
            view = _view(storage, v)
            originals[id(view)] = v
            return view
        if isinstance(v, torch.device) and v.type == "meta":
            return _CPU
        if isinstance(v, (list, tuple)):
            return type(v)(self._shadow(x, originals) for x in v)
        return v

    def _from_cpu(self, answer: Any, kwargs: dict[str, Any], originals: dict[int, torch.Tensor]) -> Any:
        """The op's output from its CPU ``answer`` where the meta kernel refused it: numbers as they are, tensors as
        meta tensors of the same metadata with the answer as their shadow; a tensor the op was asked to put on the
        CPU (``.cpu()``, ``.tolist()``) stays the CPU answer, and an argument it returns is that argument. On a fake
        twin (an argument is a fake tensor) the tensors are fake tensors of the twin's mode and device instead."""
        fake = next((v for v in originals.values() if type(v) is FakeTensor), None)
        device = kwargs.get("device")
        stays = fake is None and device is not None and torch.device(device).type != "meta"

        def convert(t: torch.Tensor) -> torch.Tensor:
            if id(t) in originals:  # (an argument: an in-place op's, or a CPU tensor's)
                return originals[id(t)]
            if stays or t.device.type != "cpu":
                return t
            return self._made_like(t, fake if fake is not None else _META_LIKE)

        if isinstance(answer, torch.Tensor):
            return convert(answer)
        if isinstance(answer, (list, tuple)):
            return type(answer)(convert(x) if isinstance(x, torch.Tensor) else x for x in answer)
        return answer


# id(op) -> (whether it makes a tensor from no tensor, whether it draws random numbers), and the op, held
_FACTORIES: dict[int, tuple[bool, bool, Any]] = {}


def _factory(func: Any) -> tuple[bool, bool, Any]:
    known = _FACTORIES.get(id(func))
    if known is None:
        schema = getattr(func, "_schema", None)
        # (``empty`` and ``empty_strided`` are not: their values are whatever the memory held, nothing to follow;
        # batch norm's fake kernel makes its reserve so)
        made = schema is not None and not any("Tensor" in str(a.type) for a in schema.arguments) and \
            any("Tensor" in str(r.type) for r in schema.returns) and not schema.name.startswith("aten::empty")
        known = _FACTORIES[id(func)] = (made, made and _RANDOM in getattr(func, "tags", ()), func)
    return known


def factory(func: Any) -> bool:
    """Whether ``func`` makes a tensor of values from no tensor (``arange``, ``ones``, ``full``, ``rand``; not
    ``empty``): what a fake twin's run that knows no value yet still follows (:data:`Shadows.fake`); looked up by id
    after the first call."""
    return _factory(func)[0]


def random_factory(func: Any) -> bool:
    """Whether ``func`` draws random numbers into a tensor it makes from no tensor (``rand``, ``randn``,
    ``randint``, ``randperm``, ``normal`` of a size)."""
    return _factory(func)[1]


def _copied(storage: torch.UntypedStorage) -> torch.UntypedStorage:
    with _NO_PYTHON_DISPATCH(), _NO_TORCH_FUNCTION():
        copy: torch.UntypedStorage = storage.clone()
    return copy


class _Follow(TorchDispatchMode):
    """:class:`Shadows` as a dispatch mode of its own, for forwards run outside an analysis."""

    def __init__(self, shadows: Shadows) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        self.shadows = shadows

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        return self.shadows.dispatch(func, args, kwargs, lambda: func(*args, **kwargs))


class _FollowMade(TorchFunctionMode):
    """The tensors :data:`MADE` from Python data, for :class:`_Follow`."""

    def __init__(self, shadows: Shadows) -> None:
        super().__init__()
        self.shadows = shadows

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        return self.shadows.make(func, args, kwargs) if func in MADE else func(*args, **kwargs)


@contextlib.contextmanager
def following(inputs: Any = ()) -> Iterator[Shadows]:
    """While inside, the meta tensors' values known from ``inputs`` and from numbers are followed as in a meta run
    (a resolver's probe forwards, a meta model's constructor); :meth:`Shadows.keep` then keeps those of tensors
    that outlive the block."""
    shadows = Shadows(inputs)
    with _FollowMade(shadows), _Follow(shadows):
        yield shadows


@contextlib.contextmanager
def untraced(shadows: Shadows | None) -> Iterator[None]:
    """While inside, transformers (where imported) takes a fake tensor whose values ``shadows`` knows for a plain
    tensor. Its mask helpers skip an all-ones mask (and let SDPA take ``is_causal``) only where the mask is not being
    traced, and they count a fake tensor as traced (``is_tracing``), so a fake twin's step would add a mask of ones
    to every score that the step it stands for, on the caller's own tensors, skips. With its values known the twin
    takes the real step's path: the check's ``mask.sum() == mask.numel()`` is answered from them. (One analysis
    runs at a time in a process, run/concurrency.py; the function is put back on the way out.)"""
    utils = sys.modules.get("transformers.utils.import_utils")
    original = getattr(utils, "is_fake_tensor", None)
    if shadows is None or original is None:  # (a fake twin's shadows may come to know values once it runs)
        yield
        return

    def is_fake_tensor(x: Any) -> bool:
        return bool(original(x)) and not (isinstance(x, torch.Tensor) and shadows.holds(x))

    utils.is_fake_tensor = is_fake_tensor  # type: ignore[union-attr]
    try:
        yield
    finally:
        if getattr(utils, "is_fake_tensor", None) is is_fake_tensor:
            utils.is_fake_tensor = original  # type: ignore[union-attr]
