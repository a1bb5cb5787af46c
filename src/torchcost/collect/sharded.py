"""An element-wise foreach op over DTensors that all share one layout, run on their local shards.

A simulated rank's optimizer (FSDP2's sharded parameters, a tensor-parallel plan's) steps lists of DTensors with
torch's multi-tensor kernels: ``torch._foreach_lerp_(exp_avgs, grads, 0.1)`` over every parameter at once. DTensor
runs such a call by propagating a sharding for the whole list, and in torch 2.14 that propagation is quadratic in
the list's length: for each element's strategy it walks every element's spec again
(``_propagate_use_strided_shard_flag`` inside ``propagate_op_sharding_non_cached``). On llama-3-70b with FSDP2 over 8
ranks (723 parameters in one list) an optimizer's warm-up step took about 16 s of a 32 s command
(docs/benchmarks.md, issue 16's round 26).

Where every tensor argument is a DTensor and, element by element, each list's DTensor has the first list's mesh,
placements, shard order and global shape, every placement a Shard, a Replicate or the strided shard FSDP2 makes
beside tensor parallelism (``_StridedShard``, its split the same too; not Partial, a sum not yet taken), and DTensor
has a strategy for the op, that strategy keeps the layout and moves no data (each rank's shards hold the same global
elements of every list): DTensor runs the same op on the local tensors; an in-place op returns nothing, an op that
makes new tensors returns each local output wrapped as a DTensor of that layout, its global metadata the one DTensor
works out on the global shapes. :func:`on_locals` gives that local call's arguments, so the caller runs it directly
(the dispatch mode records it exactly as it records the local call DTensor makes), and :func:`wrapped` its outputs;
:func:`on_shards` does both for a dispatch mode's handler (collect/ops.py's DispatchCollector, collect/fakeops.py's
TwinAnswers). An op that makes new tensors is taken only where every global and local tensor is contiguous, so that
its outputs' global strides are the contiguous ones DTensor's propagation gives. Anything else is left to DTensor.
Reports are the same either way: ``tests/parallel/test_parallel.py`` compares them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from torchcost.collect.fakerules import contiguous_strides
from torchcost.trees import tensors_in

__all__ = ["on_locals", "on_shards", "wrapped"]

_ELEMENTWISE = ("add", "sub", "mul", "div", "lerp", "addcmul", "addcdiv", "sqrt", "neg", "reciprocal", "maximum",
                "minimum", "clamp_min", "clamp_max", "abs", "exp", "sign", "pow")
# element-wise foreach ops, every overload of these (a single-tensor scalar argument is left to DTensor): in place,
# and making a new tensor for each element of the first list
_IN_PLACE = frozenset({f"aten::_foreach_{name}_" for name in _ELEMENTWISE} | {"aten::_foreach_zero_"})
_NEW = frozenset(f"aten::_foreach_{name}" for name in _ELEMENTWISE)

# the placements taken, by class name (a subclass is not one of them): _StridedShard (a Shard's subclass) by its own
_PLAIN = frozenset({"Shard", "Replicate", "_StridedShard"})


def _same_layout(t: Any, like: Any) -> bool:
    """Whether DTensor ``t`` is laid out as ``like``: the same mesh (the object), placements, shard order and global
    shape, every placement a Shard, Replicate or _StridedShard (compared with its split factor)."""
    spec, other = t._spec, like._spec
    return (spec.mesh is other.mesh and spec.placements == other.placements and t.shape == like.shape
            and getattr(spec, "shard_order", None) == getattr(other, "shard_order", None)
            and getattr(spec, "use_strided_shard_as_shard_order", None)
            == getattr(other, "use_strided_shard_as_shard_order", None)
            and all(type(p).__name__ in _PLAIN for p in spec.placements))


def _has_strategy(kind: type, func: Any) -> bool:
    """Whether DTensor (class ``kind``) has a sharding strategy of its own for ``func`` (else it would raise, and so
    must it here)."""
    propagator = getattr(getattr(kind, "_op_dispatcher", None), "sharding_propagator", None)
    return any(func in getattr(propagator, name, {}) for name in ("op_strategy_funcs", "op_single_dim_strategy_funcs"))


def _contiguous(t: Any) -> bool:
    """Whether DTensor ``t`` is contiguous, globally and in its local shard."""
    meta = t._spec.tensor_meta
    return (meta is not None and tuple(meta.stride) == contiguous_strides(tuple(meta.shape))
            and t._local_tensor.is_contiguous())


def on_locals(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
              ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """The arguments of the local call DTensor would make for ``func(*args, **kwargs)`` (each DTensor list replaced by
    its local tensors), where the call is an element-wise foreach op over DTensors of one layout; else None."""
    schema = getattr(func, "_schema", None)
    if schema is None or not args or type(args[0]) is not list or not args[0]:
        return None
    new = schema.name in _NEW
    if not new and schema.name not in _IN_PLACE:
        return None
    first = args[0]
    kind = type(first[0])
    if kind.__name__ != "DTensor" or not _has_strategy(kind, func):
        return None
    values = (*args, *kwargs.values())
    local: list[Any] = []
    for value in values:
        if isinstance(value, torch.Tensor):
            return None  # (a tensor as a scalar: DTensor decides how it meets the shards)
        if type(value) is list and value and isinstance(value[0], torch.Tensor):
            if len(value) != len(first):
                return None
            shards = []
            for t, like in zip(value, first):
                if type(t) is not kind or not _same_layout(t, like) or (new and not _contiguous(t)):
                    return None
                shards.append(t._local_tensor)
            local.append(shards)
        else:
            local.append(value)
    return tuple(local[:len(args)]), dict(zip(kwargs, local[len(args):]))


def wrapped(func: Any, args: tuple[Any, ...], out: Any) -> Any:
    """The call's output as DTensor returns it, from the local call's ``out`` (the call :func:`on_locals` took): for
    an op that makes new tensors, each local output a DTensor laid out as the first list's element at its place, of
    that element's global shape, contiguous, in the output's dtype; for an in-place op, ``out`` itself (nothing)."""
    if func._schema.name not in _NEW:
        return out
    from torch.distributed.tensor._dtensor_spec import DTensorSpec, TensorMeta

    made = []
    for local, like in zip(out, args[0]):
        spec = like._spec
        meta = TensorMeta(like.shape, contiguous_strides(tuple(like.shape)), local.dtype)
        made.append(type(like)(local, DTensorSpec(spec.mesh, spec.placements, tensor_meta=meta),
                               requires_grad=local.requires_grad))
    return made


def on_shards(handler: Callable[..., Any], func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A dispatch mode's answer to an op on DTensors: where :func:`on_locals` takes the call, its local call made
    through ``handler`` (the mode's own ``__torch_dispatch__``, so it is seen as DTensor's local call would be) and
    the outputs :func:`wrapped`; else NotImplemented (DTensor runs it, and its local ops come back to the mode)."""
    local = on_locals(func, args, kwargs)
    if local is None:
        return NotImplemented
    out = handler(func, tuple({type(t) for t in tensors_in(local)}), *local)
    return wrapped(func, args, out)
