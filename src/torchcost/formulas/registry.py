"""The formula registry: one formula per aten op, keyed by its normalised name ``namespace::name``.

Keys drop the overload (``aten::add.Tensor`` and ``aten::add.Scalar`` are both ``aten::add``); in-place variants keep
their own key (``aten::add_``). A formula receives an :class:`OpCall` and returns a :class:`Cost`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from torchcost.errors import FormulaError
from torchcost.trees import op_tensors, tensors_in

__all__ = [
    "FREE",
    "REGISTRY",
    "Cost",
    "Formula",
    "FormulaRegistry",
    "OpCall",
    "is_free",
    "op_key",
    "register_formula",
    "registered",
    "written_arguments",
]


def flops_of(macs: int, other_flops: int) -> int:
    """FLOPs of ``macs`` multiply-accumulates and ``other_flops`` other operations: 2 per MAC (docs/conventions.md)."""
    return 2 * macs + other_flops


@dataclass(frozen=True)
class Cost:
    """What one op call costs. ``flops`` (the property) is always ``2 * macs + other_flops``."""

    macs: int = 0
    other_flops: int = 0

    @property
    def flops(self) -> int:
        return flops_of(self.macs, self.other_flops)

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.macs + other.macs, self.other_flops + other.other_flops)


ZERO = Cost()


def written_arguments(schema: Any) -> tuple[tuple[int, str, bool], ...]:
    """(position, name, keyword-only) of each argument an op's schema declares it writes into (alias annotation
    ``(a!)``): an in-place op's ``self``, an ``out=`` argument (keyword-only)."""
    return tuple((i, a.name, bool(a.kwarg_only)) for i, a in enumerate(schema.arguments)
                 if a.alias_info is not None and a.alias_info.is_write)


def op_key(op: object) -> str:
    """Normalise an op (OpOverload, OpOverloadPacket or a string such as ``"aten.mm"``) to ``"aten::mm"``."""
    if isinstance(op, torch._ops.OpOverload):
        return op._schema.name
    if isinstance(op, torch._ops.OpOverloadPacket):
        return op._qualified_op_name
    if isinstance(op, str):
        text = op.strip()
        if "::" not in text:
            namespace, sep, rest = text.partition(".")
            if not sep or not rest:
                raise FormulaError(f"op name {op!r} has no namespace; write it as 'aten::mm' or 'mylib::myop'")
            text = f"{namespace}::{rest}"
        namespace, _, rest = text.partition("::")
        name = rest.split(".", 1)[0]
        if not namespace or not name:
            raise FormulaError(f"op name {op!r} is not of the form 'namespace::name'")
        return f"{namespace}::{name}"
    raise FormulaError(f"cannot key a formula on {op!r}: pass an aten op (torch.ops.aten.mm) or a name ('aten::mm')")


class OpCall:
    """One call of an op as a formula sees it: the op, its arguments, its output, and name-based access.

    ``call.arg("stride")`` binds the positional and keyword arguments to the op's schema, defaults included.
    """

    __slots__ = ("_schema", "args", "key", "kwargs", "out")

    def __init__(
        self, key: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any, schema: Any = None
    ) -> None:
        self.key = key
        self.args = args
        self.kwargs = kwargs
        self.out = out
        self._schema = schema

    def arg(self, name: str, default: Any = None) -> Any:
        """The argument ``name`` as the schema binds it (given by position or keyword, else its default); ``default``
        when the schema has no such argument or it has no default. One name is looked up, not the whole schema
        bound: formulas read two or three arguments of an op's ten."""
        schema = self._schema
        if schema is None:
            return self.kwargs.get(name, default)
        entry = _index(schema).get(name)
        if entry is None:
            return default
        position, kwarg_only, has_default, value = entry
        if position < len(self.args) and not kwarg_only:
            return self.args[position]
        if name in self.kwargs:
            return self.kwargs[name]
        if has_default:
            return list(value) if isinstance(value, list) else value
        return default

    @property
    def outputs(self) -> list[torch.Tensor]:
        return tensors_in(self.out)

    @property
    def inputs(self) -> list[torch.Tensor]:
        return op_tensors(self.args, self.kwargs)


# schema -> its arguments as plain tuples (name, kwarg_only, has_default, default). Reading a schema's arguments
# goes through several pybind property calls per argument; binding runs once per priced op, so it is read once.
_Plan = tuple[tuple[str, bool, bool, Any], ...]
_PLANS: dict[int, tuple[Any, _Plan]] = {}


def _plan(schema: Any) -> _Plan:
    hit = _PLANS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    plan = tuple((a.name, bool(a.kwarg_only), a.has_default_value(),
                  a.default_value if a.has_default_value() else None) for a in schema.arguments)
    _PLANS[id(schema)] = (schema, plan)  # the schema is kept alive, so its id cannot be reused
    return plan


_INDEXES: dict[int, tuple[Any, dict[str, tuple[int, bool, bool, Any]]]] = {}


def _index(schema: Any) -> dict[str, tuple[int, bool, bool, Any]]:
    """name -> (position, kwarg_only, has_default, default) of a schema's arguments (the first of a repeated name)."""
    hit = _INDEXES.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    index: dict[str, tuple[int, bool, bool, Any]] = {}
    for i, (name, kwarg_only, has_default, default) in enumerate(_plan(schema)):
        index.setdefault(name, (i, kwarg_only, has_default, default))
    _INDEXES[id(schema)] = (schema, index)  # the schema is kept alive, so its id cannot be reused
    return index


Formula = Callable[[OpCall], Cost]


@dataclass
class FormulaRegistry:
    """A mapping from op key to formula. Duplicates are refused; per-run overrides make a copy."""

    _formulas: dict[str, Formula] = field(default_factory=dict)

    def register(self, op: object, fn: Formula, *, replace: bool = False) -> Formula:
        key = op_key(op)
        if key in self._formulas and not replace:
            raise FormulaError(f"a formula for {key} is already registered; pass replace=True to replace it")
        if not callable(fn):
            raise FormulaError(f"the formula for {key} must be callable, got {fn!r}")
        self._formulas[key] = fn
        return fn

    def unregister(self, op: object) -> Formula:
        """Remove the formula for ``op`` and return it; raises :class:`FormulaError` if there is none."""
        key = op_key(op)
        fn = self._formulas.pop(key, None)
        if fn is None:
            raise FormulaError(f"no formula is registered for {key}")
        return fn

    @contextmanager
    def registered(self, op: object, fn: Formula) -> Iterator[Formula]:
        """Register ``fn`` for ``op`` for the duration of a ``with`` block, replacing any formula already there.

        On exit the registry holds for ``op`` what it held before: the replaced formula, or nothing.
        """
        key = op_key(op)
        previous = self._formulas.get(key)
        self.register(key, fn, replace=True)
        try:
            yield fn
        finally:
            if previous is None:
                self._formulas.pop(key, None)
            else:
                self._formulas[key] = previous

    def get(self, key: str) -> Formula | None:
        return self._formulas.get(key)

    def __contains__(self, op: object) -> bool:
        return op_key(op) in self._formulas

    def keys(self) -> Iterable[str]:
        return self._formulas.keys()

    def with_overrides(self, overrides: Mapping[object, Formula] | None) -> FormulaRegistry:
        """A copy of this registry with ``overrides`` applied; this registry is not changed."""
        merged = FormulaRegistry(dict(self._formulas))
        for op, fn in (overrides or {}).items():
            merged.register(op, fn, replace=True)
        return merged


REGISTRY = FormulaRegistry()


def register_formula(op: object, *, replace: bool = False) -> Callable[[Formula], Formula]:
    """Decorator adding a formula to the global registry::

        @torchcost.register_formula("mylib::fused_gelu")
        def _(call):
            return torchcost.Cost(other_flops=9 * call.outputs[0].numel())
    """

    def decorate(fn: Formula) -> Formula:
        return REGISTRY.register(op, fn, replace=replace)

    return decorate


def registered(op: object, fn: Formula) -> AbstractContextManager[Formula]:
    """:meth:`FormulaRegistry.registered` on the global registry: ``fn`` prices ``op`` inside the ``with`` block only::

        from torchcost.formulas import registered

        with registered("mylib::fused_gelu", my_formula):
            report = torchcost.analyze(model, input_size=(1, 8))
    """
    return REGISTRY.registered(op, fn)


def register_many(ops: Iterable[str], fn: Formula) -> None:
    for op in ops:
        REGISTRY.register(op, fn)


# Ops that move, view, allocate, index or select data and do no floating-point arithmetic. Views are recognised from
# the op's schema (OpOverload.is_view) and need not be listed.
FREE: frozenset[str] = frozenset(
    "aten::" + name
    for name in """
    _to_copy copy_ clone contiguous _copy_from _copy_from_and_resize detach lift_fresh lift_fresh_copy
    empty empty_like empty_strided new_empty new_empty_strided zeros zeros_like new_zeros ones ones_like new_ones
    full full_like new_full fill_ fill zero_ scalar_tensor arange linspace eye tensor _local_scalar_dense item
    randn randn_like rand rand_like randint randint_like normal normal_ uniform_ bernoulli bernoulli_ random_
    randperm multinomial exponential_ geometric_ cauchy_ log_normal_ poisson binomial _standard_gamma
    _sample_dirichlet
    cat stack hstack vstack concat concatenate _unsafe_view unsafe_split unsafe_split_with_sizes unsafe_chunk
    repeat repeat_interleave tile roll flip rot90 constant_pad_nd reflection_pad1d reflection_pad2d
    reflection_pad3d replication_pad1d replication_pad2d replication_pad3d pad _pad_enum
    index index_select gather scatter scatter_ index_put index_put_ _index_put_impl_ index_copy index_copy_
    index_fill index_fill_ masked_fill masked_fill_ masked_scatter masked_scatter_ masked_select where take
    embedding _unsafe_index _unsafe_index_put select_scatter slice_scatter diagonal_scatter as_strided_scatter
    tril triu tril_ triu_ im2col pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle
    upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d _upsample_nearest_exact2d
    _upsample_nearest_exact3d nonzero nonzero_static argwhere resize_ resize_as_ set_ _reshape_alias
    _has_compatible_shallow_copy_type is_nonzero is_same_size equal _assert_async _assert_tensor_metadata
    sym_size sym_stride sym_numel sym_storage_offset _unsafe_split detach_ alias_copy view_copy as_strided_
    _pack_padded_sequence _pad_packed_sequence max_unpool2d max_unpool3d narrow_copy diag_embed block_diag
    slice_backward select_backward diagonal_backward
    """.split()
)


def is_free(func: torch._ops.OpOverload, key: str) -> bool:
    """Listed in FREE, a view, or an in-place view (``unsqueeze_``, ``t_``, ``transpose_``: metadata only)."""
    return key in FREE or func.is_view or torch.Tag.inplace_view in func.tags
