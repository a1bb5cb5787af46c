"""Kernels skipped: an eval run on the CPU that does not compute the values nobody reads.

What torchcost reports of an eval forward (the ops, their prices, shapes, storages and their lifetimes) depends on
the values the kernels compute only where the values reach Python: a branch on ``x.sum() > 0``, ``.item()``, a
``nonzero`` whose output size is the count, an op that raises on a bad value and an ``except`` around it. So an eval
run on the model itself (run/execute.py) skips the kernels of trusted direct leaves (collect/leaves.py: convolution,
linear, batch norm, activations, pooling; most of a CNN's time) once their output's metadata is known, and gives the
forward an output of that metadata whose values are not computed (``torch.empty_strided``, the same storage bytes; an
in-place activation returns its input unchanged). Every storage holding values not computed is *unwritten*:

* an op of the dispatch mode with an unwritten argument writes into unwritten storages (its outputs and the
  arguments its schema writes), and a direct leaf whose kernel runs on one makes an unwritten output;
* an op that hands values to Python (it returns a number or bool: ``_local_scalar_dense``, ``is_nonzero``,
  ``equal``; or nothing, a check that raises or not: ``_assert_async``, ``_linalg_check_errors``; or its output's
  size depends on them: the ``data_dependent_output`` and ``dynamic_output_shape`` tags, as the fake tensor mode
  refuses them, save indexing, ``masked_select`` and ``bincount``, whose size only their integer and bool arguments
  decide), an op that takes them as integers or booleans (indices, masks: out of range, it raises), a torch
  function that reads the data past the dispatcher (``tolist``, ``numpy``, ``__array__``, ``__repr__``, ...; the
  run's function mode, collect/composites.py) and an op that raises, each on an unwritten storage, stop the run with
  :class:`ValuesNeeded`, and the run is made again with every kernel (run/execute.py). A forward that catches that
  (a bare ``except:``) is made again all the same: the stop is noted.

Where nothing reaches Python the run's ops, shapes and storages are those of a run with the kernels: the kernels'
values are never seen. A read of the data that passes both the dispatcher and torch's function handling (a C
extension reading ``data_ptr()`` memory itself) is not seen; such a forward gets the report of the values it read.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from torchcost.collect import Switch
from torchcost.collect.fakerules import contiguous_strides, like_first
from torchcost.collect.storages import storage_of
from torchcost.formulas.registry import written_arguments
from torchcost.trees import op_tensors, tensors_in

__all__ = ["READS", "SkipMode", "Unwritten", "ValuesNeeded", "enabled", "off"]

# benchmarks and tests turn skipping off to compare: ``enabled()`` says whether eval runs may skip kernels (with
# ``on``, sets it and returns the old value); inside ``off()`` every kernel runs (what a run gave before)
_SWITCH = Switch()
enabled, off = _SWITCH.enabled, _SWITCH.off


class ValuesNeeded(BaseException):
    """A run that skipped kernels reached a read of values it did not compute: made again with every kernel. A
    BaseException, so that a forward's ``except Exception`` does not take it for its own."""


# torch functions that read a tensor's data without an aten op (torch.Tensor's methods, as the function mode gets them)
READS = frozenset(getattr(torch.Tensor, name) for name in (
    "tolist", "numpy", "__array__", "__dlpack__", "__reduce_ex__", "__repr__", "__format__", "untyped_storage",
    "storage", "_typed_storage", "data_ptr") if hasattr(torch.Tensor, name))

# ops that return numbers of metadata, not of values
_METADATA = frozenset({
    "aten::size", "aten::stride", "aten::numel", "aten::dim", "aten::storage_offset", "aten::is_contiguous",
    "aten::is_non_overlapping_and_dense", "aten::is_same_size", "aten::is_complex", "aten::is_floating_point",
    "aten::is_signed", "aten::is_conj", "aten::is_neg", "aten::is_inference", "aten::is_leaf", "aten::output_nr",
    "aten::_version", "aten::_nnz", "aten::dense_dim", "aten::sparse_dim", "aten::is_coalesced",
    "aten::_is_zerotensor", "aten::is_pinned", "aten::is_set_to", "aten::_has_same_storage_numel",
    "aten::_has_compatible_shallow_copy_type", "prim::device", "prim::layout"})
# ops whose outputs take only the metadata of their tensor argument, never its values: a tensor of values not
# computed in, one of computed values (zeros, a fill, random numbers, or none: empty) out
_NEW_FROM_METADATA = frozenset({
    "aten::new_zeros", "aten::new_ones", "aten::new_empty", "aten::new_empty_strided", "aten::new_full",
    "aten::zeros_like", "aten::ones_like", "aten::empty_like", "aten::full_like", "aten::rand_like",
    "aten::randn_like", "aten::randint_like"})
# ops whose output size (and whether they raise) their integer and bool arguments alone decide: the indices of
# ``x[idx]`` (transformers' classifiers take each sequence's last token so, swin v2 its bias table), the mask of
# ``masked_select``, the counts of ``bincount``. A floating argument is data that flows into the output: values not
# computed there are no read (an integer or bool one, read by its values, stops the run as for any op)
_SIZED_BY_INDICES = frozenset({"aten::index", "aten::masked_select", "aten::bincount"})
_VALUE_TYPES = frozenset({"bool", "int", "float", "complex", "number", "Scalar", "str", "bool[]", "int[]", "float[]",
                          "Scalar[]"})
_TAGS = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)


def _reads_values(func: Any) -> bool:
    """Whether an op hands its arguments' values to Python: a number or bool returned (not metadata), nothing
    returned (a check that raises or not: ``_assert_async``, ``_linalg_check_errors``), or an output whose size the
    values decide (the tags, on the op or its default overload: ``out=`` overloads lack them), except where only
    integer and bool arguments decide it (:data:`_SIZED_BY_INDICES`)."""
    schema = getattr(func, "_schema", None)
    if schema is None:
        return True
    if schema.name in _SIZED_BY_INDICES:
        return False
    default = getattr(getattr(func, "overloadpacket", None), "default", None)
    tags = (*getattr(func, "tags", ()), *getattr(default, "tags", ()))
    if any(t in tags for t in _TAGS):
        return True
    name = schema.name
    if not schema.returns:
        return True
    return (name not in _METADATA and not name.startswith("aten::sym_")  # (sym_size, sym_numel, ...: metadata)
            and any(str(r.type) in _VALUE_TYPES for r in schema.returns))


class Unwritten:
    """The storages of one run whose values were not computed, and whether the run reached a read of them."""

    def __init__(self) -> None:
        self._storages: weakref.WeakValueDictionary[int, torch.UntypedStorage] = weakref.WeakValueDictionary()
        self.needed = ""  # what read values not computed ("" while nothing did): the run is made again
        self.skipped = 0  # kernels skipped (tests and benchmarks read it)
        # id(op) -> what it does: whether it reads values (_reads_values), the arguments it writes, the op (held, so
        # that no id is reused), whether it reads only metadata (_NEW_FROM_METADATA)
        self._reads: dict[int, tuple[bool, tuple[tuple[int, str, bool], ...], Any, bool]] = {}

    def __bool__(self) -> bool:
        return len(self._storages) > 0

    def mark(self, tensors: Any) -> None:
        """The storages of ``tensors`` (a tensor, or any nest of them) now hold values not computed."""
        storages = self._storages
        for t in (tensors,) if isinstance(tensors, torch.Tensor) else tensors_in(tensors):
            s = storage_of(t)
            if s is not None:
                storages[id(s)] = s

    def _held(self, tensors: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Those of ``tensors`` on a storage holding values not computed."""
        storages = self._storages
        for t in tensors:
            s = storage_of(t)
            if s is not None and id(s) in storages:
                yield t

    def holds(self, tensors: list[torch.Tensor]) -> bool:
        """Whether some of ``tensors`` is on a storage holding values not computed."""
        return next(self._held(tensors), None) is not None

    def stop(self, what: str) -> ValuesNeeded:
        self.needed = self.needed or what
        return ValuesNeeded(what)

    def before(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Before an op of the dispatch mode runs: whether it reads a storage of values not computed (then its
        outputs will hold such values too); raises ValuesNeeded where it would hand them to Python, or takes them
        as integers or booleans (indices and masks: whether it raises, out of range, depends on them). An op that
        takes only its argument's metadata (``new_zeros``, ``empty_like``, ...) reads none."""
        if self._known(func)[3]:
            return False
        hit = False
        for t in self._held(op_tensors(args, kwargs)):
            if not (t.is_floating_point() or t.is_complex()):
                raise self.stop(f"{func} took values the run did not compute as indices or a mask")
            hit = True
        if hit and self._known(func)[0]:
            raise self.stop(f"{func} read values the run did not compute")
        return hit

    def run(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run an op that reads values not computed: an error it raises may come from those values. A matrix
        product whose output follows its formula (:func:`_product`), in a kind seen to follow it, is not run: its
        output's values would not be computed values either (a transformer's first analysis: the LM head's product
        on hidden states whose kernels were skipped)."""
        product = func in _PRODUCTS
        formula = _product(func, args) if product else None if kwargs else _elementwise(func, args)
        if formula is not None and (_follows(func, *formula) if product else _FOLLOWS.get(formula[0]) is True):
            self.skipped += 1
            shape, dtype, device = formula[1]  # (an aten op, past the function modes: no torch function called)
            return _aten.empty.memory_format(list(shape), dtype=dtype, device=device)
        try:
            out = func(*args, **kwargs)
        except Exception as exc:
            raise self.stop(f"{func} raised on values the run did not compute") from exc
        if formula is not None and formula[0] not in _FOLLOWS:  # (an elementwise kind's first call: it ran)
            _FOLLOWS[formula[0]] = _made_so(out, formula[1])
        return out

    def after(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        """After such an op: its outputs and the arguments it writes hold values not computed."""
        self.mark(out)
        for position, name, _ in self._known(func)[1]:
            self.mark(args[position] if position < len(args) else kwargs.get(name))

    def _known(self, func: Any) -> tuple[bool, tuple[tuple[int, str, bool], ...], Any, bool]:
        known = self._reads.get(id(func))
        if known is None:
            schema = getattr(func, "_schema", None)
            known = self._reads[id(func)] = (_reads_values(func),
                                             written_arguments(schema) if schema is not None else (), func,
                                             schema is not None and schema.name in _NEW_FROM_METADATA)
        return known

    def read(self, func: Any, args: Any, kwargs: Any) -> None:
        """A torch function of READS was called (the function mode): stop if it reads values not computed."""
        if self.holds(tensors_in((args, kwargs))):
            raise self.stop(f"{getattr(func, '__name__', func)} read values the run did not compute")


_aten = torch.ops.aten
# the matrix products whose output :meth:`Unwritten.run` may make by formula, and the kinds (the op, the operands'
# dtype, which of their dimensions have size 1 and which are contiguous or transposed) seen to follow it: True while
# every product of the kind whose kernel ran gave the formula's output to the byte of its metadata and storage
_PRODUCTS = frozenset({_aten.mm.default, _aten.addmm.default, _aten.bmm.default})
_FOLLOWS: dict[tuple[Any, ...], bool] = {}
WORTH_MAKING = 1 << 18  # the least multiply-accumulates a product made by formula has (less: its kernel is quick)


def _product(func: Any, args: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[tuple[int, ...], Any, Any]] | None:
    """(the kind, (sizes, dtype, device)) of a dense CPU matrix product's output: ``mm(a, b)`` and ``addmm(bias, a,
    b)`` (m, n) for a (m, k) and b (k, n), ``bmm(a, b)`` (B, m, n) for a (B, m, k) and b (B, k, n); contiguous, the
    operands' dtype. None where the operands do not fit (the kernel then runs, and raises where it would), each
    operand neither contiguous nor transposed, the product is small, or another dispatch mode is on (the handler
    of torchcost's own has it off). The kind: the op, the dtype, and per
    operand its dimensions, which of them have size 1 and whether it is contiguous or transposed."""
    operands = args[1:3] if func is _aten.addmm.default else args[:2]
    if len(operands) != 2 or torch._C._len_torch_dispatch_stack():  # (a mode below torchcost's: the op is its)
        return None
    a, b = operands
    if type(a) is not torch.Tensor or type(b) is not torch.Tensor or a.dtype != b.dtype or \
            not a.is_floating_point() or a.layout != torch.strided or b.layout != torch.strided or \
            a.device.type != "cpu" or b.device != a.device:
        return None
    dims = 3 if func is _aten.bmm.default else 2
    if a.dim() != dims or b.dim() != dims or a.shape[-1] != b.shape[-2] or a.shape[:-2] != b.shape[:-2]:
        return None
    shape = (*a.shape[:-1], b.shape[-1])
    if math.prod(shape) * a.shape[-1] < WORTH_MAKING:
        return None
    tensors = [a, b]
    if func is _aten.addmm.default:
        bias = args[0]
        if type(bias) is not torch.Tensor or bias.dtype != a.dtype or bias.device != a.device or bias.dim() > 2 or \
                any(s not in (1, t) for s, t in zip(reversed(bias.shape), reversed(shape), strict=False)):
            return None
        tensors.insert(0, bias)
    parts: list[Any] = [func, a.dtype]
    for t in tensors:
        order = "c" if t.is_contiguous() else "t" if t.dim() >= 2 and t.mT.is_contiguous() else None
        if order is None:
            return None
        parts.append((tuple(d == 1 for d in t.shape), order))
    return tuple(parts), (shape, a.dtype, a.device)


def _follows(func: Any, kind: tuple[Any, ...], made: tuple[tuple[int, ...], Any, Any]) -> bool:
    """Whether products of ``kind`` give the formula's output, to the byte of its metadata and storage. mm, addmm
    and bmm are structured kernels: their output is allocated by the op's meta function, from the operands'
    sizes, never their values; so the kind is asked once a process, of the same product on operands of 2 where
    these have more (the same size-1 dimensions, the same order), zeros, run here."""
    known = _FOLLOWS.get(kind)
    if known is None:
        dtype, device = made[1], made[2]
        small = []
        for ones, order in kind[2:]:
            sizes = [1 if one else 2 for one in ones]
            if order == "t":
                sizes[-2:] = sizes[-1], sizes[-2]
            t = _aten.zeros.default(sizes, dtype=dtype, device=device)
            small.append(t.mT if order == "t" else t)
        out = func(*small)
        known = _FOLLOWS[kind] = _made_so(out, ((*small[-2].shape[:-1], small[-1].shape[-1]), dtype, device))
    return known


def _made_so(out: Any, made: tuple[tuple[int, ...], Any, Any]) -> bool:
    """Whether ``out`` is the tensor a formula makes: a new dense contiguous one of ``made``'s sizes and dtype, on a
    storage of its own size."""
    shape, dtype = made[0], made[1]
    return type(out) is torch.Tensor and \
        (tuple(out.shape), out.stride(), out.dtype, out.storage_offset(), out.untyped_storage().nbytes()) == \
        (shape, contiguous_strides(shape), dtype, 0, math.prod(shape) * out.element_size())


# id() of an op -> whether :func:`_elementwise` takes it (tagged pointwise, writes no argument, returns one tensor),
# and the op (held, so that no id is reused)
_ELEMENTWISE: dict[int, tuple[bool, Any]] = {}


def _elementwise(func: Any, args: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[tuple[int, ...], Any, Any]] | None:
    """(the kind, (sizes, dtype, device)) of a pointwise op's output: tagged so, out of place, drawing no random
    numbers, one tensor returned, no keywords, on dense contiguous CPU tensors of one shape, dtype and device, beside
    numbers; one like its first tensor, contiguous. None for any other call, one that moves fewer than
    :data:`WORTH_MAKING` bytes, or with another dispatch mode on. The kind (the op; the dtype, device, dimensions and
    size-1 dimensions; each number's type and value) is made by formula only once a call of it ran its kernel and
    gave the formula's output, to the byte of its metadata and storage (:data:`_FOLLOWS`): an op whose output is not
    like its input (a comparison's bool) never does."""
    known = _ELEMENTWISE.get(id(func))
    if known is None:
        schema = getattr(func, "_schema", None)
        known = _ELEMENTWISE[id(func)] = (
            schema is not None and torch.Tag.pointwise in getattr(func, "tags", ()) and not schema.is_mutable
            and torch.Tag.nondeterministic_seeded not in func.tags  # (a draw advances the generator: it runs)
            and len(schema.returns) == 1 and str(schema.returns[0].type) == "Tensor", func)
    if not known[0] or torch._C._len_torch_dispatch_stack():
        return None
    found = like_first(args, _dense_cpu)
    if found is None:
        return None
    parts, shape, dtype, device, tensors = found
    if math.prod(shape) * dtype.itemsize * (tensors + 1) < WORTH_MAKING:
        return None
    return (func, *parts), (shape, dtype, device)


def _dense_cpu(t: Any) -> tuple[tuple[int, ...], torch.device] | None:
    """The sizes and device of a plain dense contiguous CPU tensor (:func:`~torchcost.collect.fakerules.like_first`),
    else None."""
    if type(t) is not torch.Tensor or t.layout != torch.strided or not t.is_contiguous() or t.storage_offset() != 0 \
            or t.is_conj() or t.is_neg() or t.device.type != "cpu":
        return None
    return tuple(t.shape), t.device


class SkipMode(TorchFunctionMode):
    """The one function mode while a direct leaf runs with its kernel skipped (collect/leaves.py): the call of the
    torch function that would run the kernel (``callee``) returns ``made(args)`` instead; every other call (the
    forward's ``input.dim()``) is passed on."""

    def __init__(self) -> None:
        super().__init__()
        self.callee: Any = None
        self.made: Any = None
        self.hit = False

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is self.callee and not self.hit:
            self.hit = True
            return self.made(args)
        return func(*args, **kwargs) if kwargs else func(*args)
