"""Ops of a fake twin (or of meta tensors) answered from metadata, without a trip through the fake tensor mode.

A training step on a CPU or CUDA model runs on fake tensors (run/plan.py), and every op the collectors' dispatch
mode passes on goes through ``FakeTensorMode``: about 85 us an op in torch 2.14 (its cache key alone is a third of
that), half of a training step's analysis. Some ops have an answer known without it, and the dispatch mode
(collect/ops.py) asks :class:`FakeShortcuts` first:

* ``prim.device``, which a fake tensor sends through the dispatcher whenever C++ asks its device (the autograd
  engine, every call): the tensor's ``fake_device``, as the fake mode's own handler answers.
* ``_local_scalar_dense`` (``.item()``) of a fake tensor that carries its value (a CPU step counter of an optimizer,
  made from a Python number): the value, as the fake mode computes it on the constant.
* ``lift_fresh`` of a real tensor of one element (``torch.tensor(0.0)``, an optimizer's step counter, a constant in a
  forward): a fake tensor carrying a copy of the value, made as the fake mode's converter makes it (:func:`lifted`,
  :func:`fake_constant`), without the converter's walk of the tensor and its import of ``torch._dynamo.source``
  (run/dynamo.py). :class:`TwinAnswers` does the same for the optimizer's warm-up step, which runs outside the
  collectors.
* An in-place pointwise op on fake tensors that all carry their values, its other arguments numbers (``step += 1``
  on an optimizer's step counter): the op run on the values, and its first argument returned, as the fake mode does.
* An in-place pointwise op (``param.mul_(...)``, ``exp_avg.lerp_(...)``, ``relu_``): its output is its first
  argument, unchanged in metadata. It is answered so only where the fake mode would accept the call and do nothing
  else:
  - a call of the same op with the same dtypes, devices and kinds of argument has run through the fake mode once
    in this process and succeeded (the op's own rules on dtypes and devices are the meta kernel's, learned, not
    copied);
  - the written tensor is a fake tensor of no constant value (the fake mode updates constants), dense and
    contiguous (no internal overlap);
  - every tensor argument is a dense (strided) fake tensor of the same mode that broadcasts to the written tensor's
    shape without changing it and is either that tensor or on another storage (no partial overlap);
  - the other arguments are Python numbers (the schema allows only tensors and numbers).
  The version counter and autograd's view bookkeeping are done above the dispatch mode, so they are unchanged.
* An in-place random fill (``bernoulli_(p)``, which dropout runs on the CPU on an ``empty_like`` of its input;
  ``uniform_``, ``normal_``), its other arguments numbers: on a fake tensor the fake mode runs the meta kernel,
  which draws nothing, and returns the tensor itself. Answered so under the same conditions as an in-place
  pointwise op; never on a tensor carrying its value (there the fake mode has its own way).
* A view op with its own kernel (``t``, ``detach``, ``view``, ``expand``, ``transpose``, ``split``, ...; autograd's
  backward makes several per layer), and ``_unsafe_view`` (a view of its input's storage that autograd does not
  mark as one), of a fake tensor of no constant value, its other arguments plain integers: the op's meta kernel run
  on the tensor and the result (each of a list) wrapped on the tensor's device, the fake mode's own steps without
  its cache key, and without the generator of its kernel-invocation guard (the same thread-local switches are set
  directly). A kernel that refuses the arguments raises as it does under the fake mode. The fake mode takes
  about 250 us for an ``_unsafe_view`` and a ``split``, which its cache never holds (their outputs alias).
* An op whose outputs are all new tensors (``mm``, ``addmm``, ``sqrt``, ``div``, ``native_batch_norm``, ...): after
  the fake mode has answered one call, a call with the same key gets outputs made from that answer's metadata, as
  the fake mode's own cache makes them (an empty meta tensor of the sizes, strides and dtype, wrapped on the
  device). The key holds what the fake mode's cache key holds (the op, the default dtype and device, inference mode,
  each argument's metadata or value), read directly instead of through the fake mode's generic walk; a call with a
  tensor carrying its value beside one carrying none, which the fake mode runs on metadata alone but does not
  cache, is answered too, and so is a factory (no tensor among its arguments: batch norm's empty reserve in
  training), made in the fake mode below. Only answers of dense new storages (or undefined outputs) are kept, for
  the process (:func:`_learned`). The same holds for plain meta tensors (a meta model, a meta twin): their pointwise
  meta kernels are Python references (torch._refs), 100 us and more a call, and a call with the key of an earlier
  one gets an empty meta tensor of that one's output metadata. ``native_batch_norm`` and its backward, whose fake
  and meta kernels are Python decompositions of 10-15 ms a call, and pointwise ops on tensors of one shape (an
  activation's backward: 3-5 ms a call), are answered for a key not seen yet too, from a formula for their outputs'
  metadata (collect/fakerules.py), once the first call of the kind matched it.
* A foreach op (an optimizer's foreach step: the default on CUDA, so on a meta twin and a CUDA model's fake twin),
  on plain meta tensors or on fake tensors of the twin's mode: its kernel runs per element, and the meta kernels of
  ``_foreach_sqrt``, ``_foreach_lerp_``, ``_foreach_addcmul_`` and ``_foreach_addcdiv_`` are Python references of
  0.3-0.4 ms an element. An in-place one (``_foreach_lerp_``) returns nothing, where each element's call is one an
  in-place pointwise op above would answer, its kind of call accepted by the kernel once in this process; one
  making new tensors (``_foreach_sqrt``) gets each element's output made from the metadata the kernel gave for an
  element of the same key earlier in the process, as a fresh op's (below).

A fresh or in-place call also leaves its key for the op collector's memo of prices (``FakeShortcuts.priced``,
collect/ops.py ``_PRICED``): the fresh key above, which holds every argument's metadata and value and, per tensor,
the place it first appears (``g * g`` reads one tensor, ``g * h`` two), or the in-place key with the shapes,
strides, that place and the numbers' values added. A built-in formula and the call's bytes read nothing else, so
calls alike (a training step's optimizer does the same ops for every parameter of a shape) are priced once.

Answers skip whatever dispatch modes are below the collectors' own, so there are answers only where there is none
but a fake twin's fake mode (for fake tensors) or none at all (for meta tensors): a user's mode around the analysis
sees every op.

Everything else, and every call that misses a condition, runs through the fake mode as before. The collectors see
the same op with the same arguments and output either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn
from torch._guards import TracingContext
from torch.utils._python_dispatch import TorchDispatchMode

from torchcost.collect import fakerules, metagaps
from torchcost.collect.keys import LEAVES
from torchcost.collect.probe import strided_elements
from torchcost.collect.sharded import on_shards

# Tensor.layout's C getter. FakeTensor.layout is a Python property (two more Python calls to ask whether the tensor
# stands for an mkldnn one, which only a fake tensor with dispatch keys of its own can): for a fake tensor whose
# ``dispatch_keys`` is None this gives the same layout without them.
BASE_LAYOUT: Callable[[torch.Tensor], torch.layout] = torch._C.TensorBase.__dict__["layout"].__get__

__all__ = ["META_DEVICE", "MISS", "FakeShortcuts", "FakeWrapper", "TwinAnswers", "stands_for"]

MISS: Any = object()  # FakeShortcuts.answer: no answer, run the op

_make_subclass = torch.Tensor._make_subclass
_NO_PYTHON_DISPATCH = torch._C._DisableTorchDispatch  # (what torch.utils._mode_utils.no_dispatch is)
_KEEP_KEYS = torch._C._PreserveDispatchKeyGuard
_BELOW_VIEWS = torch._C._AutoDispatchBelowADInplaceOrView
_META_IN_TLS, _SET_META_IN_TLS = torch._C._meta_in_tls_dispatch_include, torch._C._set_meta_in_tls_dispatch_include
_DEVICE = torch.ops.prim.device.default
META_DEVICE = torch.device("meta")  # (a device object: torch parses a "meta" string on every call)
_ITEM = torch.ops.aten._local_scalar_dense.default
_NUMBERS = frozenset({bool, int, float})
_STRIDED = torch.strided
# what FakeShortcuts knows of an op (by id()): none of the kinds it answers, or which one
_OTHER, _KIND_DEVICE, _KIND_ITEM, _KIND_INPLACE, _KIND_VIEW, _KIND_FRESH, _KIND_LIFT, _KIND_FILL, _KIND_FOREACH, \
    _KIND_FOREACH_FRESH, _KIND_RANGE = range(11)
_LIFTS = (torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default)  # what torch.tensor() calls
# a profiler range's start and end (``torch.profiler.record_function``: FSDP2 marks each unshard, reduce and hook
# with one): no tensor in or out, the same CPU kernel under the fake mode, which runs it after its full walk
_RANGES = (torch.ops.profiler._record_function_enter_new.default,
           torch.ops.profiler._record_function_exit._RecordFunction)
# the ``_like`` constructors that draw nothing (torch's fake mode runs every ``_like`` constructor's meta kernel on
# the input with the device set to meta, and wraps the output on the device asked for)
_LIKES = frozenset({torch.ops.aten.empty_like.default, torch.ops.aten.zeros_like.default,
                    torch.ops.aten.ones_like.default, torch.ops.aten.full_like.default})
_NOT_CACHED = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape, torch.Tag.inplace_view,
               torch.Tag.nondeterministic_seeded)
_VIEW_ARGUMENTS = frozenset({"int", "SymInt", "List[int]", "List[SymInt]", "Optional[int]", "Optional[SymInt]", "bool"})


def _writes_first(func: Any, wanted: Any, refused: Any) -> Any:
    """The arguments of an op tagged ``wanted`` and not ``refused`` that writes its first argument and returns it
    alone, the other arguments aliasing nothing; None for any other op."""
    tags = getattr(func, "tags", ())
    schema = getattr(func, "_schema", None)
    if schema is None or wanted not in tags or refused in tags:
        return None
    arguments, returns = schema.arguments, schema.returns
    if not arguments or len(returns) != 1:
        return None
    first, out = arguments[0].alias_info, returns[0].alias_info
    if first is None or not first.is_write or out is None or not out.is_write or \
            any(a.alias_info is not None for a in arguments[1:]):
        return None
    return arguments


def _is_inplace_pointwise(func: Any) -> bool:
    """A pointwise op that writes its first argument alone and returns it, whose arguments are tensors and numbers
    (no optional ones, no lists, no strings), drawing no random numbers."""
    arguments = _writes_first(func, torch.Tag.pointwise, torch.Tag.nondeterministic_seeded)
    return arguments is not None and all(str(a.type) in ("Tensor", "number") for a in arguments)


def _foreach_kind(func: Any) -> int:
    """:data:`_KIND_FOREACH` for an aten foreach op that writes its first argument, a list of tensors, element by
    element and returns nothing (``_foreach_lerp_``, ``_foreach_addcdiv_``: every one is pointwise);
    :data:`_KIND_FOREACH_FRESH` for one that returns a list of new tensors, one an element (``_foreach_sqrt``); the
    other arguments of either lists of tensors, numbers, lists of numbers or flags (not the overloads taking one
    tensor for every element, nor those taking a dtype or a memory format); else :data:`_OTHER`."""
    schema = getattr(func, "_schema", None)
    if schema is None or getattr(func, "namespace", None) != "aten" or not schema.name.startswith("aten::_foreach_"):
        return _OTHER
    arguments, returns = schema.arguments, schema.returns
    if not arguments or str(arguments[0].type) != "List[Tensor]" or \
            not all(a.alias_info is None and str(a.type) in _FOREACH_ARGUMENTS for a in arguments[1:]):
        return _OTHER
    first = arguments[0].alias_info
    if not returns and first is not None and first.is_write and torch.Tag.inplace in func.tags:
        return _KIND_FOREACH
    if first is None and len(returns) == 1 and str(returns[0].type) == "List[Tensor]" and returns[0].alias_info is None:
        return _KIND_FOREACH_FRESH
    return _OTHER


_FOREACH_ARGUMENTS = frozenset({"List[Tensor]", "number", "List[number]", "bool"})


def _is_random_fill(func: Any) -> bool:
    """An in-place op that fills its first argument with random numbers and returns it (``bernoulli_(p)``, what
    dropout runs on the CPU, ``uniform_``, ``normal_``), its other arguments numbers and an optional generator. On a
    fake tensor the fake mode runs the meta kernel, which draws nothing, and returns the tensor itself."""
    arguments = _writes_first(func, torch.Tag.nondeterministic_seeded, None)
    return arguments is not None and torch.Tag.inplace in func.tags and \
        all(str(a.type) in ("float", "int") or (a.kwarg_only and str(a.type) == "Optional[Generator]")
            for a in arguments[1:])


# an op the fake mode answers as a view although its schema does not say so: _unsafe_view gives its input's storage
# under new sizes (matmul's backward makes one per product of a 3-D input), not marked a view only for autograd,
# whose bookkeeping is above the dispatch mode
_VIEW_LIKE = frozenset({"aten::_unsafe_view"})


def _is_plain_view(func: Any) -> bool:
    """A view op with its own kernel (not one that decomposes, which may or may not alias), one tensor in and one
    tensor or one list of them out (``split``), its other arguments integers, lists of them, or flags."""
    schema = getattr(func, "_schema", None)
    if schema is None or torch.Tag.inplace_view in func.tags or \
            not (getattr(func, "is_view", False) or schema.name in _VIEW_LIKE):
        return False
    arguments, returns = schema.arguments, schema.returns
    if not arguments or str(arguments[0].type) != "Tensor" or len(returns) != 1 or \
            str(returns[0].type) not in ("Tensor", "List[Tensor]"):
        return False
    if not all(str(a.type) in _VIEW_ARGUMENTS for a in arguments[1:]):
        return False
    return not torch._C._dispatch_has_kernel_for_dispatch_key(func.name(),
                                                             torch._C.DispatchKey.CompositeImplicitAutograd)


def _makes_fresh(func: Any) -> bool:
    """An aten op whose outputs are all new tensors (no output an alias, no argument written), of metadata that the
    fake mode's own cache keys by the arguments' metadata: not data-dependent, not random, not a view, not a lift;
    or one of torch's functional collectives (:data:`_COLLECTIVES`), whose fake kernels are such ops too."""
    schema = getattr(func, "_schema", None)
    if schema is not None and schema.name in _COLLECTIVES:
        return True
    if schema is None or getattr(func, "namespace", None) != "aten" or getattr(func, "is_view", True):
        return False
    if any(tag in func.tags for tag in _NOT_CACHED) or schema.name in _UNCACHED:
        return False
    if not schema.returns or any(str(r.type) != "Tensor" or r.alias_info is not None for r in schema.returns):
        return False
    return all(a.alias_info is None for a in schema.arguments)


# torch's functional collectives, as DTensor's redistributions call them on a simulated rank (FSDP2's collectives
# are other ops): their fake kernels make a new tensor whose metadata follows from the arguments' (the input's, the
# group's size), waiting too
_COLLECTIVES = frozenset({"_c10d_functional::all_reduce", "_c10d_functional::all_gather_into_tensor",
                          "_c10d_functional::reduce_scatter_tensor", "_c10d_functional::wait_tensor"})

# ops the fake mode never answers from its cache, or answers with a constant
_UNCACHED = frozenset({"aten::_unsafe_view", "aten::lift", "aten::lift_fresh", "aten::lift_fresh_copy",
                       "aten::to_mkldnn", "aten::_local_scalar_dense"})


_META: Any = object()  # FakeShortcuts._fresh: the "mode" of plain meta tensors


def _empty(meta: tuple[Any, ...]) -> torch.Tensor:
    """A new meta tensor of an output's metadata (sizes, strides, dtype, grad flag, conjugate and negative bits), as
    the fake mode's cache makes one."""
    shape, stride, dtype, grad, conj, neg, _ = meta
    empty = (torch.empty_strided(shape, stride, dtype=dtype, device=META_DEVICE, requires_grad=True) if grad else
             torch.empty_strided(shape, stride, dtype=dtype, device=META_DEVICE))
    if conj:
        torch._C._set_conj(empty, True)
    if neg:
        torch._C._set_neg(empty, True)
    return empty


_INT_LISTS = frozenset({list, tuple})


def _plain_values(values: Any) -> bool:
    """Whether a view op's other arguments are plain Python ints, flags, None, or lists of ints (no symbolic sizes,
    no dtypes)."""
    for v in values:
        kind = type(v)
        if kind is int or kind is bool or v is None:
            continue
        if kind not in _INT_LISTS or not all(type(i) is int for i in v):
            return False
    return True


# dtypes whose 0-d CPU tensors FakeTensorConverter.from_real_tensor also gives an item() memo (torch 2.14)
_ITEM_MEMO = frozenset({torch.int64, torch.int32, torch.int16, torch.int8, torch.float64})


def stands_for(tensor: torch.Tensor | None, emulate: str | None) -> str | None:
    """The device type whose kernel an op on ``tensor`` (an op's first tensor) stands for: the tensor's own (a fake
    tensor's claimed device), or for a meta tensor, or none, ``emulate``: the device meta tensors stand for."""
    kind = tensor.device.type if tensor is not None else None
    return emulate if kind in (None, "meta") else kind


def fake_constant(mode: Any, constant: torch.Tensor, wrap: Callable[[Any, torch.Tensor, torch.device], Any]) -> Any:
    """What ``mode.fake_tensor_converter.from_real_tensor(mode, constant, make_constant=True)`` makes of a fresh real
    tensor ``constant`` (nothing else holds it or its storage), on the constant's device, less the converter's walk
    of the real tensor (about 100 us in torch 2.14, and its import of ``torch._dynamo.source`` for a name it gives the
    tensor): the fake tensor on a meta tensor of the same metadata, carrying ``constant``, remembered by the
    converter as that tensor's fake one (an in-place op the fake mode runs on the constant hands back this tensor)
    and its storage mapped to it (an in-place op on an alias of the constant ends the constant). A 0-d CPU constant
    of a dtype of :data:`_ITEM_MEMO` also gets the converter's item() memo, its value, where that memo is a plain
    number (no shape environment, no trace, no export; else the converter makes it, symbolic). Used for the
    optimizer warm-up's copied step counters (run/step.py) and for ``torch.tensor(x)`` under a twin's fake mode
    (:meth:`FakeShortcuts.answer`)."""
    converter = mode.fake_tensor_converter
    memo = constant.dtype in _ITEM_MEMO and constant.dim() == 0 and constant.is_cpu
    if memo and (converter.export or mode.shape_env is not None or TracingContext.try_get() is not None):
        return converter.from_real_tensor(mode, constant, make_constant=True)  # (a symbolic memo: the converter's)
    with _NO_PYTHON_DISPATCH():  # (a plain meta tensor, also where the fake mode is on the stack)
        meta = torch.empty_strided(constant.shape, constant.stride(), dtype=constant.dtype, device=META_DEVICE)
        made = wrap(mode, meta, constant.device)
        value = constant.item() if memo else None
    made.constant = constant
    if value is not None and not math.isnan(value) and not math.isinf(value):
        made.item_memo = value  # (the value a plain fake mode remembers for item(), as its converter sets it)
    converter.set_tensor_memo(constant, made)
    converter.add_constant_storage_mapping(made)
    return made


def lifted(mode: Any, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
           wrap: Callable[[Any, torch.Tensor, torch.device], Any]) -> Any:
    """``torch.tensor(x)`` under the fake mode ``mode`` (``lift_fresh`` of the real tensor it made): where the fake
    mode would keep the value (one element, dense, not meta), the fake tensor it makes, made as it makes it: the op
    run on the real tensor with no mode, its output copied, and that copy made a constant (:func:`fake_constant`).
    Anything else (a larger tensor, a fake or meta one): :data:`MISS`."""
    if len(args) != 1 or kwargs or type(args[0]) is not torch.Tensor:
        return MISS
    with _NO_PYTHON_DISPATCH():
        out = func(args[0])
        if type(out) is not torch.Tensor or not mode.may_turn_const(out):
            return MISS
        out = out.clone()
    return fake_constant(mode, out, wrap)


class TwinAnswers(TorchDispatchMode):
    """A dispatch mode for code run on a twin outside the collectors: the optimizer's warm-up step (run/step.py)
    and serve/steps.py's plain forwards, which only fill a generation's cache. Each op is answered by
    :class:`FakeShortcuts` where it has an answer (``torch.tensor(x)``, an optimizer's step counter, made as the fake
    mode makes it; a fresh op of a key seen in this process, an empty meta tensor of that call's output metadata,
    wrapped as the fake mode wraps it, instead of torch's Python reference kernels on meta tensors or the fake mode's
    dispatch, 100 us and more a call), every other op run as it is and learned (so the collectors' own shortcuts
    answer it in the measured step). An element-wise foreach op over DTensors of one layout runs on their local
    tensors (collect/sharded.py); any other op on DTensors is left to DTensor, whose local ops come back here. To be
    made and entered right above the twin's fake mode, or with no dispatch mode on for meta tensors: the shortcuts
    answer only then."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # (as collect/ops.py's DispatchCollector: nothing here is compiled)

    def __init__(self, emulate: str | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        self.short = FakeShortcuts(emulate)  # (made before the mode goes on: it reads the modes below)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        for kind in types:
            if kind.__name__ == "DTensor":  # (a simulated rank's foreach op: DTensor's local call, made here)
                return on_shards(self.__torch_dispatch__, func, args, kwargs)
        short = self.short
        out = short.answer(func, args, kwargs)
        return short.run(func, args, kwargs) if out is MISS else out


class FakeWrapper:
    """Meta tensors wrapped as fake tensors, as the fake mode wraps its outputs (``FakeTensor(mode, elem, device)``),
    for one run. The constructor costs about 9 us in torch 2.14 (it normalises the device and sets a dozen
    attributes one by one); after the first call for a mode and device, the same tensor is made from the state that
    call left (the subclass made on ``elem``, the constructor's guard on the data pointer, its attributes copied),
    about 2 us. That is done only where a tensor made so was seen to equal the constructor's (type, attributes,
    dispatch keys, device, metadata), and never in the fake mode's debug setting."""

    def __init__(self) -> None:
        from torch._subclasses.fake_tensor import FakeTensor, FakeTensorConfig

        self._fake = FakeTensor
        self._config = FakeTensorConfig
        # (id of a fake mode, device) -> the attributes FakeTensor's constructor gives a tensor of that mode on that
        # device, and the device it normalised; False: a tensor made from them would differ
        self._states: dict[tuple[int, Any], tuple[dict[str, Any], torch.device] | bool] = {}
        # the last mode and device object asked for and their usable state: a run wraps nearly every tensor on one
        # device of one mode, and the key's tuple and hash cost more than two identity tests
        self._last: tuple[Any, Any, tuple[dict[str, Any], torch.device] | None] = (None, None, None)

    def wrap(self, mode: Any, elem: torch.Tensor, device: torch.device) -> Any:
        """``FakeTensor(mode, elem, device)`` for a meta tensor ``elem``."""
        last_mode, last_device, last = self._last
        if mode is last_mode and device is last_device and last is not None:
            return self._made(mode, elem, *last)
        key = (id(mode), device)
        state = self._states.get(key)
        if state is None:
            made = self._fake(mode, elem, device)
            self._states[key] = self._state_of(made, mode, elem) if not self._config.debug else False
            return made
        if state is False:
            return self._fake(mode, elem, device)
        usable = cast("tuple[dict[str, Any], torch.device]", state)
        self._last = (mode, device, usable)
        return self._made(mode, elem, *usable)

    def _made(self, mode: Any, elem: torch.Tensor, state: dict[str, Any], device: torch.device) -> Any:
        made = _make_subclass(self._fake, elem, elem.requires_grad, dispatch_device=True,
                              device_for_backend_keys=device)
        if mode._allow_unsafe_data_ptr_access:
            torch._C._set_warn_deprecated_on_mutable_data_ptr(made)
        else:
            torch._C._set_throw_on_mutable_data_ptr(made)
        made.__dict__ = state.copy()  # (the new tensor's own dict is empty: a copy of the table costs less than
        # putting its entries in one by one)
        return made

    def _state_of(self, made: Any, mode: Any, elem: torch.Tensor) -> tuple[dict[str, Any], torch.device] | bool:
        """The attributes of ``made`` (a FakeTensor the constructor made on ``elem``) and its device, if a tensor
        made from them by :meth:`_made` equals it; else False. Only attributes every tensor of the mode and device
        shares are copied (the mode, the device, None): one of another kind might be the tensor's own (an id, a
        record), and then the constructor makes each tensor."""
        state, device = dict(vars(made)), made.fake_device
        if not isinstance(device, torch.device) or \
                not all(v is None or v is mode or (type(v) is torch.device and v == device) for v in state.values()):
            return False
        copy = self._made(mode, elem, state, device)
        same = (type(copy) is type(made) and vars(copy).keys() == state.keys()
                and torch._C._dispatch_keys(copy) == torch._C._dispatch_keys(made)
                and (copy.device, copy.requires_grad, copy.shape, copy.stride(), copy.dtype)
                == (made.device, made.requires_grad, made.shape, made.stride(), made.dtype))
        return (state, device) if same else False


# id() of an op -> which of the kinds above FakeShortcuts answers it as (_OTHER: none), and the ops so keyed, held so
# that no id is reused
_KINDS: dict[int, int] = {}
_KEEP: list[Any] = []
# what one table of learned answers holds (in-place calls accepted; fresh ops' call key -> outputs' metadata; a kind
# of call with a formula, batch norm's or a pointwise op's -> whether the formula's metadata was the fake mode's on
# the kind's first call, collect/fakerules.py)
_Learned = tuple[set[tuple[Any, ...]], dict[tuple[Any, ...], tuple[bool, tuple[tuple[Any, ...] | None, ...]]],
                 dict[tuple[Any, ...], bool]]
# the settings a kernel's answer may also depend on -> the answers learned under them (:func:`_learned`)
_LEARNED: dict[tuple[Any, ...], _Learned] = {}
_LEARNED_MAX = 1 << 15  # entries in one table before it starts again


def _learned(mode: Any) -> _Learned:
    """The answers learned in this process for a run whose fake mode is ``mode`` (None: meta tensors, no fake mode),
    read when the run starts. An answer is a function of the call's key and of settings the key does not hold: the
    fake mode's own (whether it falls back to real kernels, takes real tensors, and has no symbolic shapes: a mode
    with a shape environment gets tables of its own run only), the backends a convolution's meta kernel picks its
    output's memory format by (oneDNN, cuDNN), and deterministic mode. Models repeat their shapes between analyses
    as within one: later runs' calls of a key seen are answered without the fake mode."""
    if mode is not None and getattr(mode, "shape_env", None) is not None:
        return set(), {}, {}
    settings = (type(mode), getattr(mode, "allow_fallback_kernels", None), getattr(mode, "allow_non_fake_inputs", None),
                torch._C._get_mkldnn_enabled(), torch._C._get_cudnn_enabled(),
                torch.are_deterministic_algorithms_enabled())
    tables = _LEARNED.get(settings)
    if tables is None or len(tables[0]) + len(tables[1]) + len(tables[2]) > _LEARNED_MAX:
        tables = _LEARNED[settings] = (set(), {}, {})
    return tables


class FakeShortcuts:
    """Answers the ops above for one run on a fake twin (:func:`answer`); learns, per op and kinds of argument, which
    calls the fake mode accepts (:func:`learn`)."""

    def __init__(self, emulate: str | None = None) -> None:
        from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

        self.emulate = emulate  # the device type whose kernels meta tensors stand for (None: not known)
        self._fake = FakeTensor
        # made just before the collectors' dispatch mode goes on: the modes below it. Answers skip them, so there
        # must be none but a fake twin's own fake mode (fake tensors), or none at all (meta tensors).
        below = torch._C._len_torch_dispatch_stack()
        self._fake_alone, self._meta_alone = below == 1, below == 0
        self._kinds = _KINDS  # (what an op is depends on its schema and tags alone: kept for the process)
        # what was learned: in-place calls the fake mode ran once without raising, for fresh ops, call key -> the
        # outputs' metadata (and whether they came as a tuple) from the fake mode's answer, and the kinds of call
        # whose formula was checked (trusted or not); kept for the process
        under = torch._C._get_dispatch_stack_at(0) if below == 1 else None
        self._accepted, self._outputs, self._trusted = _learned(under)
        # the fake mode a factory's output (no tensor among its arguments: batch norm's empty reserve) is made in
        self._factory_mode = under if isinstance(under, FakeTensorMode) else None
        # the fake mode below (the only mode below, as _factory_mode is set only then) takes plain meta tensors as
        # fake ones on the meta device (a simulated rank's twin: to_empty of its meta parameters,
        # parallel/runner.py): a fresh op of such tensors is made in it
        self._meta_into_fake = self._factory_mode is not None and self._factory_mode.allow_non_fake_inputs
        self.pending: tuple[Any, ...] | None = None  # the call answer() passed on, to learn once it has run
        # the last call's key for its price (collect/ops.py's memo of prices): everything a built-in formula and
        # call_bytes read of a fresh or in-place op's call, which fixes its output's metadata too; None for others
        self.priced: tuple[Any, ...] | None = None
        self.viewed: Any = None  # the input of the last call, where it was answered as one view of it
        self._fresh_call: tuple[tuple[Any, ...], Any, set[int]] | None = None  # (key, mode, input storages)
        # a foreach call making new tensors passed on: (its elements' keys, mode, input storages)
        self._foreach_call: tuple[list[tuple[Any, ...]], Any, set[int]] | None = None
        self._check: fakerules.Expected | None = None  # a formula's answer for the call passed on, to compare
        self._wrap = FakeWrapper().wrap

    def _kind(self, func: Any) -> int:
        kind = self._kinds.get(id(func))
        if kind is None:
            kind = (_KIND_DEVICE if func is _DEVICE else _KIND_ITEM if func is _ITEM else _KIND_LIFT if func in _LIFTS
                    else _KIND_RANGE if func in _RANGES
                    else _KIND_INPLACE if _is_inplace_pointwise(func) else _KIND_FILL if _is_random_fill(func)
                    else _KIND_VIEW if _is_plain_view(func)
                    else _KIND_FRESH if _makes_fresh(func) else _foreach_kind(func))
            self._kinds[id(func)] = kind
            _KEEP.append(func)
        return kind

    def device(self, args: tuple[Any, ...]) -> Any:
        """``prim.device`` of a fake tensor (the autograd engine asks it of every tensor it handles), the fake mode's
        own answer, as :meth:`answer` gives it without the rest of its walk; else :data:`MISS`."""
        first = args[0] if args else None
        if type(first) is not self._fake or not self._fake_alone:
            return MISS
        return META_DEVICE if first.fake_mode.in_kernel_invocation else first.fake_device

    def answer(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The op's output, or :data:`MISS`: run it (then call :func:`learn` when it returned). :attr:`priced` is
        then the key of the call's price, or None."""
        self.pending = self._fresh_call = self._foreach_call = self.priced = self._check = self.viewed = None
        kind = self._kind(func)
        if kind == _KIND_FRESH:
            return self._fresh(func, args, kwargs)
        if kind == _KIND_LIFT:
            return self._lift(func, args, kwargs)
        if kind == _KIND_FOREACH or kind == _KIND_FOREACH_FRESH:
            return self._foreach(func, args, kwargs, kind == _KIND_FOREACH_FRESH)
        if kind == _KIND_RANGE:
            if not (self._meta_alone or self._factory_mode is not None):  # (the fake mode alone below, or none)
                return MISS  # (a mode of the user's below sees it run)
            with _NO_PYTHON_DISPATCH():  # (its kernel, as the fake mode runs it after its checks: about 0.2 ms)
                return func(*args, **kwargs)
        if kind == _OTHER or not args or type(args[0]) is not self._fake or not self._fake_alone:
            return MISS
        first = args[0]
        if kind == _KIND_DEVICE:
            return self.device(args)
        if kind == _KIND_ITEM:
            constant = first.constant
            if constant is None or len(args) != 1 or kwargs:
                return MISS
            with _NO_PYTHON_DISPATCH():
                return func(constant)
        if kind == _KIND_VIEW:
            return self._view(func, first, args, kwargs)
        if kind == _KIND_FILL and first.constant is not None:
            return MISS  # (on a tensor carrying its value the fake mode may draw real numbers: its own way)
        return self._inplace(func, first, args, kwargs)

    def _lift(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``torch.tensor(x)`` under a twin's fake mode: :func:`lifted`, where that fake mode is the only mode below."""
        mode = self._factory_mode
        if mode is None or not self._fake_alone:
            return MISS
        return lifted(mode, func, args, kwargs, self._wrap)

    def _view(self, func: Any, base: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A view of a fake tensor: the op's meta kernel run on it, as the fake mode runs it, wrapped as the fake mode
        wraps outputs on the input's device (a kernel that refuses the arguments raises here as it would there)."""
        mode = base.fake_mode
        if base.constant is not None or base.dispatch_keys is not None or BASE_LAYOUT(base) is not _STRIDED or \
                mode.shape_env is not None or not _plain_values(args[1:]) or \
                (kwargs and not _plain_values(kwargs.values())):
            return MISS
        # (torch's in_kernel_invocation_manager, without its generator: the meta kernel runs on the fake tensor's
        # own meta storage, no dispatch mode sees it; below autograd's view bookkeeping, which the wrapped output
        # does not keep: autograd does it for that output above the dispatch mode, as for the fake mode's answer)
        before = mode.in_kernel_invocation
        if before != _META_IN_TLS():
            raise AssertionError(f"{_META_IN_TLS()}, {before}")
        with _NO_PYTHON_DISPATCH(), _KEEP_KEYS(), _BELOW_VIEWS():
            mode.in_kernel_invocation = True
            _SET_META_IN_TLS(True)
            try:
                # (OpOverload.__call__ calls its _op but where a Python dispatcher object is set on the op)
                out = (func._op if func._pyobj_dispatcher is None else func)(*args, **kwargs)
            finally:
                mode.in_kernel_invocation = before
        if type(out) is list:  # (split and its like: a view each)
            return [self._wrap(mode, view, base.fake_device) for view in out]
        self.viewed = base
        return self._wrap(mode, out, base.fake_device)

    def _inplace(self, func: Any, written: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if written.constant is not None:
            return self._on_constants(func, written, args, kwargs)
        if written.dispatch_keys is not None or BASE_LAYOUT(written) is not _STRIDED or not written.is_contiguous():
            return MISS
        mode, shape = written.fake_mode, written.shape
        storage: list[int] = []
        key: list[Any] = [func, written.dtype, written.fake_device]
        # what the call's price reads beside ``key``: the shapes and strides, which tensor is which (0: the written
        # one; ``x.addcmul_(g, g)`` reads g once), the numbers' values
        priced: list[Any] = [shape, written.stride()]
        seen: dict[int, int] = {id(written): 0}
        for value in (*args[1:], *kwargs.values()):
            kind = type(value)
            if kind in _NUMBERS:
                key.append(kind)
                priced.append(value)
                continue
            if kind is not self._fake or value.fake_mode is not mode or value.dispatch_keys is not None or \
                    BASE_LAYOUT(value) is not _STRIDED:
                return MISS
            if value is not written and not _operand_fits(value, written, storage):
                return MISS
            key.append((value.dtype, value.fake_device))
            priced.append((value.shape, value.stride(), seen.setdefault(id(value), len(seen))))
        if kwargs:
            key.append(tuple(kwargs))
        call = tuple(key)
        self.priced = (call, *priced)
        if call in self._accepted:
            return written
        self.pending = call
        return MISS

    def _foreach(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], fresh: bool) -> Any:
        """A foreach op (an optimizer's foreach step on a meta or CUDA twin), where its tensors are plain meta tensors
        (none but meta tensors below) or fake tensors of one mode (only that fake mode below), strided, its lists as
        long as the first, its other arguments numbers, lists of them or flags. The meta kernels of ``_foreach_sqrt``,
        ``_foreach_lerp_``, ``_foreach_addcmul_`` and ``_foreach_addcdiv_`` are Python references run per element,
        0.3-0.4 ms each: two thirds of a 100-parameter meta twin's AdamW step. Each element's call is on its own (the
        kernels loop over the elements), so:

        * in place (``fresh`` False): nothing, as the kernel returns, where each element's call is one
          :meth:`_inplace` would answer: the written tensor dense and contiguous, element i of every other list
          broadcasting into its shape and either that tensor or on another storage, and the dtypes and devices of
          the element's call, with the kinds of the numbers, seen accepted by the kernel once in this process;
        * new tensors (``fresh`` True): a list of new tensors, each made from the metadata the kernel gave earlier in
          the process for an element of the same key (its tensors keyed as :meth:`_describe` keys a fresh call's,
          which of them are one tensor among them; the kinds of the numbers: a number's value does not change an
          output's metadata).

        Else MISS, and the call is noted for :meth:`learn`."""
        first_list = args[0]
        if type(first_list) is not list or not first_list:
            return MISS
        first = first_list[0]
        mode = first.fake_mode if type(first) is self._fake else _META  # (every element is checked below)
        if not (self._meta_alone if mode is _META else self._fake_alone):
            return MISS
        count = len(first_list)
        lists: list[list[Any]] = [first_list]
        key: list[Any] = [func]
        for value in (*args[1:], *kwargs.values()):
            value_kind = type(value)
            if value_kind in _NUMBERS:
                key.append(value_kind)
            elif value_kind is list and len(value) == count:
                if type(value[0]) in _NUMBERS:
                    if not all(type(v) in _NUMBERS for v in value):
                        return MISS
                    key.append(frozenset(type(v) for v in value))
                else:
                    lists.append(value)
            else:
                return MISS
        if kwargs:
            key.append(tuple(kwargs))
        prefix = tuple(key)
        if fresh:
            return self._foreach_fresh(prefix, lists, mode)
        fake = mode is not _META
        for t in (t for values in lists for t in values):
            if not self._foreach_tensor(t, mode):
                return MISS
        calls = set()
        for i, w in enumerate(first_list):
            if (fake and w.constant is not None) or not w.is_contiguous():
                return MISS
            storage: list[int] = []
            call = [w.dtype, w.fake_device if fake else None]
            for other in lists[1:]:
                v = other[i]
                if v is not w and not _operand_fits(v, w, storage):
                    return MISS
                call.append((v.dtype, v.fake_device if fake else None, v is w))
            calls.add(tuple(call))
        whole = (*prefix, frozenset(calls))
        if whole in self._accepted:
            return None
        self.pending = whole
        return MISS

    def _foreach_fresh(self, prefix: tuple[Any, ...], lists: list[list[Any]], mode: Any) -> Any:
        """:meth:`_foreach`'s new tensors, or MISS with the elements' keys noted for :meth:`learn`. An element's key is
        its tensors keyed as :meth:`_describe` keys a fresh call's, all of ``mode``; an element whose every tensor
        carries its value is passed on, as :meth:`_fresh` passes such a call on."""
        keys = []
        metas: list[Any] = []
        complete = True
        outputs = self._outputs
        inputs: set[int] = set()
        for i in range(len(lists[0])):
            element: list[Any] = [prefix]
            found: list[Any] = [None, inputs, 0, 0, {}]  # (as _describe takes it; storages gathered for the call)
            if not self._describe([values[i] for values in lists], element, found) or found[0] is not mode or \
                    found[3] == found[2]:  # (every tensor carrying its value: the fake mode's own way, as _fresh)
                return MISS
            key = tuple(element)
            keys.append(key)
            if complete:
                known = outputs.get(key)
                if known is None:
                    complete = False
                else:
                    metas.append(known[1][0])
        if complete:
            if mode is not _META:
                return [self._output(mode, meta) for meta in metas]
            return [_empty(meta) for meta in metas]
        self._foreach_call = (keys, mode, inputs)
        return MISS

    def _foreach_tensor(self, t: Any, mode: Any) -> bool:
        """Whether ``t`` is an element a foreach call of ``mode`` (:data:`_META`: plain meta tensors) is answered on:
        of that kind, strided, without dispatch keys of its own."""
        kind = type(t)
        if mode is _META:
            return (kind is torch.Tensor or kind is nn.Parameter) and t.is_meta and BASE_LAYOUT(t) is _STRIDED
        return kind is self._fake and t.fake_mode is mode and t.dispatch_keys is None and BASE_LAYOUT(t) is _STRIDED

    def _on_constants(self, func: Any, written: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """An in-place op on fake tensors that all carry their values (``step += 1`` on an optimizer's CPU step
        counter), the other arguments numbers: as the fake mode does it, the op run on the values, and the written
        tensor returned (the fake mode's converter maps the value back to it)."""
        mode = written.fake_mode
        values = []
        for value in args[1:]:
            kind = type(value)
            if kind in _NUMBERS:
                values.append(value)
            elif kind is self._fake and value.fake_mode is mode and value.constant is not None:
                values.append(value.constant)
            else:
                return MISS
        if any(type(v) not in _NUMBERS for v in kwargs.values()) or \
                mode.fake_tensor_converter._get_memo(written.constant) is not written:
            return MISS
        with _NO_PYTHON_DISPATCH():
            func(written.constant, *values, **kwargs)
        return written

    def _fresh(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """An op making new tensors: its outputs made from the metadata the fake mode gave for a call with the same
        key earlier in the run (as the fake mode's cache makes them: an empty meta tensor of the sizes, strides and
        dtype, wrapped on the device), else MISS and the call noted for :func:`learn`. The key holds what the fake
        mode's own cache key holds: the op, the default dtype and device, inference mode, and per argument its
        metadata (sizes, strides, offset, dtype, device, grad flag, conjugate and negative bits, inference flag,
        storage size, and whether it carries its value) or its value; a call with anything else (a real tensor, an
        object), or whose every tensor carries its value, is passed on and not learned. The fake mode's own cache
        passes on any call with a tensor carrying its value; that call is answered here too when another tensor
        carries none (the fake mode then runs it on metadata alone: ``cat`` of a model's ``torch.tensor([])`` and an
        activation, about 400 us through the fake mode)."""
        # the mode met, the inputs' storages, tensors, tensors carrying values, id() -> first position of a tensor
        found: list[Any] = [None, set(), 0, 0, {}]
        parts: list[Any] = [func, torch.get_default_dtype(), torch._C._get_default_device(),
                            torch.is_inference_mode_enabled()]
        if not self._describe(args, parts, found):
            return MISS
        if kwargs:
            parts.append(tuple(kwargs))
            if not self._describe(kwargs.values(), parts, found):
                return MISS
        # no tensor among the arguments: a factory, made in the fake mode below (none on meta: a C++ kernel); every
        # tensor carrying its value: the fake mode may compute the op on the values
        mode = found[0] if found[2] else self._factory_mode
        into_fake = mode is _META and self._meta_into_fake
        if into_fake:
            mode = self._factory_mode
        if mode is None or found[3] == found[2] > 0 or not (self._meta_alone if mode is _META else self._fake_alone):
            return MISS
        key = self.priced = tuple(parts)
        known = self._outputs.get(key)
        if known is None and into_fake and func in _LIKES:
            return self._like_into_fake(func, args, kwargs, mode, key, found[1])
        if known is None:
            # (no formula for plain meta tensors made fake by the mode below: their outputs are learned from it)
            formula = None if into_fake else fakerules.expected(func, args, kwargs,
                                                                None if mode is _META else self._fake)
            trusted = None if formula is None else self._trusted.get(formula[0])
            if trusted:
                known = self._outputs[key] = cast("fakerules.Expected", formula)[1:]
            else:
                if trusted is None:
                    self._check = formula
                self._fresh_call = (key, mode, found[1])
                return MISS
        many, metas = known
        if mode is _META:
            outs = tuple(None if meta is None else _empty(meta) for meta in metas)
        elif len(metas) == 1:  # (most ops: one output, made without the generator below)
            outs = (self._output(mode, metas[0]),)
        else:
            outs = tuple(self._output(mode, meta) for meta in metas)
        return outs if many else outs[0]

    def _like_into_fake(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], mode: Any, key: Any,
                        inputs: set[int]) -> Any:
        """``empty_like`` (``zeros_like``, ...) of a plain meta tensor, seen first, under a fake mode that takes plain
        tensors (a simulated rank's ``to_empty``): made as that fake mode's handler of ``_like`` constructors makes
        it, without its converter, which would make a fake tensor of the input first (and import ``torch._dynamo``
        to name it): the op's meta kernel run on the input with the device set to meta, the output wrapped on the
        device asked for (else the input's). The input's metadata is all the kernel reads, and the converter's copy
        would have the same. Learned for the key as the fake mode's own answer would be."""
        device = kwargs.get("device")
        with _NO_PYTHON_DISPATCH():
            made = func(*args, **{**kwargs, "device": META_DEVICE})
        out = self._wrap(mode, made, args[0].device if device is None else device)
        meta = self._new_output(out, mode, inputs, set())
        if meta is not None:
            self._outputs[key] = (False, (meta,))
        return out

    def _output(self, mode: Any, meta: tuple[Any, ...] | None) -> Any:
        """A fresh op's output of ``meta`` (None: none) in the fake mode ``mode``: a plain meta tensor made past the
        fake mode, then wrapped on the output's device as the fake mode wraps it."""
        if meta is None:
            return None
        with _NO_PYTHON_DISPATCH():
            empty = _empty(meta)
        return self._wrap(mode, empty, meta[-1])

    def _describe(self, values: Any, parts: list[Any], found: list[Any]) -> bool:
        """Append the key of each of ``values`` to ``parts`` (``found``: the fake mode met, the storages of the
        tensors, how many tensors, how many of them carry their values); False where one cannot be keyed. A fake
        tensor carrying its value (a constant, ``torch.tensor([])`` in a model's forward) is keyed by its metadata
        and that mark: beside a tensor that carries none, the fake mode runs the op on metadata alone, as for any
        other (only when every tensor carries one does it compute on the values, and :meth:`_fresh` passes such a
        call on)."""
        fake = self._fake
        for v in values:
            kind = type(v)
            if kind is fake or ((kind is torch.Tensor or kind is nn.Parameter) and v.is_meta):
                mode = v.fake_mode if kind is fake else _META
                if found[0] is None:
                    found[0] = mode
                elif mode is not found[0]:
                    return False
                if (kind is fake and v.dispatch_keys is not None) or BASE_LAYOUT(v) is not _STRIDED or \
                        v.is_quantized:
                    return False
                constant = kind is fake and v.constant is not None
                found[2] += 1
                found[3] += constant
                storage = v.untyped_storage()
                found[1].add(storage._cdata)
                seen = found[4]
                parts.append((v.shape, v.stride(), v.storage_offset(), v.dtype, v.fake_device if kind is fake else
                              _META, v.requires_grad, v.is_conj(), v.is_neg(), v.is_inference(), storage.nbytes(),
                              constant, seen.setdefault(id(v), len(seen))))
            elif kind in LEAVES:  # (argument types a fresh op's call is keyed by, with their values)
                parts.append((kind, v))
            elif kind is list or kind is tuple:
                parts.append((kind, len(v)))
                if not self._describe(v, parts, found):
                    return False
            else:
                return False
        return True

    def run(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run a call :meth:`answer` passed on, and :meth:`learn` its output. A call the meta kernel refuses
        although the device the twin stands for runs it gets that device's output (collect/metagaps.py); any
        other error stands."""
        try:
            out = func(*args, **kwargs)
        except Exception:
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            out = metagaps.answer(func, args, kwargs, stands_for(first, self.emulate))
            if out is None:
                raise
        self.learn(out)
        return out

    def learn(self, out: Any = None) -> None:
        """The call :func:`answer` passed on ran through the fake mode without raising (``out``: its output): answer
        its like from now."""
        if self.pending is not None:
            self._accepted.add(self.pending)
            self.pending = None
        if self._fresh_call is not None:
            key, mode, inputs = self._fresh_call
            self._fresh_call = None
            many = type(out) is tuple
            metas: list[tuple[Any, ...] | None] = []
            storages: set[int] = set()
            for o in (out if many else (out,)):
                if o is None and many:  # an undefined output (convolution_backward's bias gradient without a bias)
                    metas.append(None)
                    continue
                meta = self._new_output(o, mode, inputs, storages)
                if meta is None:
                    return
                metas.append(meta)
            self._outputs[key] = (many, tuple(metas))
            if self._check is not None:  # the first call of its kind: is the formula right for it?
                kind, *expected = self._check
                self._trusted[kind] = [many, tuple(metas)] == expected
                self._check = None
        if self._foreach_call is not None:
            keys, mode, inputs = self._foreach_call
            self._foreach_call = None
            storages = set()
            if type(out) is not list or len(out) != len(keys):
                return
            found = [self._new_output(o, mode, inputs, storages) for o in out]
            if all(meta is not None for meta in found):  # (each kept as a fresh op's one output)
                self._outputs.update((key, (False, (meta,))) for key, meta in zip(keys, found))

    def _new_output(self, o: Any, mode: Any, inputs: set[int], storages: set[int]) -> tuple[Any, ...] | None:
        """The metadata of a new output of a call of ``mode`` as :func:`_empty` takes it, its storage added to
        ``storages``; None where it is not one to make again so: not a plain meta tensor (or a fake tensor of that
        mode carrying no value), not strided and dense from the start of a storage of its own (on an input's storage,
        ``inputs``, or on another output's)."""
        if mode is _META:
            if type(o) is not torch.Tensor or not o.is_meta:
                return None
        elif type(o) is not self._fake or o.fake_mode is not mode or o.constant is not None:
            return None
        if (mode is not _META and o.dispatch_keys is not None) or BASE_LAYOUT(o) is not _STRIDED or \
                o.storage_offset() != 0 or o.is_quantized:
            return None
        storage = o.untyped_storage()
        if storage._cdata in inputs or storage._cdata in storages or \
                storage.nbytes() != strided_elements(o.shape, o.stride()) * o.element_size():
            return None
        storages.add(storage._cdata)
        return (tuple(o.shape), o.stride(), o.dtype, o.requires_grad, o.is_conj(), o.is_neg(),
                o.fake_device if mode is not _META else None)


def _operand_fits(value: Any, written: Any, storage: list[int]) -> bool:
    """Whether ``value``, an in-place op's other operand (not ``written`` itself), broadcasts into ``written``'s shape
    without changing it and is on another storage (``storage``: where ``written``'s storage is kept once read)."""
    if not _broadcasts_into(value.shape, written.shape):
        return False
    if not storage:
        storage.append(written.untyped_storage()._cdata)
    return bool(value.untyped_storage()._cdata != storage[0])


def _broadcasts_into(shape: torch.Size, into: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``into`` without changing it (as an in-place op's other operands
    must)."""
    if shape == into:
        return True
    if len(shape) > len(into):
        return False
    return all(s == 1 or s == t for s, t in zip(reversed(shape), reversed(into)))
