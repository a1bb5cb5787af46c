"""Output metadata by formula, for a fake twin's calls of a shape not seen yet, where the fake kernel is slow.

On fake and meta tensors ``native_batch_norm`` and ``native_batch_norm_backward`` have no kernel of their own: their
meta kernels are torch's Python decompositions (torch/_decomp/decompositions.py), a dozen elementwise and reduction
ops each, every one of them through the fake mode again. One call costs 10-15 ms in torch 2.14 (a fresh ``mm`` under
the same fake mode: about 0.1 ms). Pointwise ops' meta kernels are Python references (torch._refs), and the
activations' backward ops among them (``silu_backward``, ``hardtanh_backward``, ``threshold_backward``) cost 3-5 ms
a call. :class:`~torchcost.collect.fakeops.FakeShortcuts` answers a call whose key it has seen from that answer's
metadata, but a CNN has a new key for nearly every stage: mobilenet_v2 has 19 of batch norm, and its first
training-step analysis in a process spent about 0.6 s of 1.6 s in batch norm's two decompositions.

What these kernels give is fixed by the arguments' metadata, and written here as a formula (:func:`expected`):

* ``native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps)``: the output has the
  input's sizes, strides and dtype; the saved mean and inverse deviation have shape (C,) (the input's dimension 1),
  or (0,) for an eval call on the CPU, which keeps none; their dtype is the input's on the CPU, elsewhere the dtype
  the decomposition computes in (float32 for float16 and bfloat16 inputs; torch._prims_common's
  ``get_computation_dtype``).
* ``native_batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train,
  eps, output_mask)``: the input's gradient has the input's sizes, strides and dtype (the decomposition returns it
  whatever ``output_mask[0]`` says); the weight's and bias's gradients, where the mask asks for them, shape (C,) in
  the weight's dtype (the input's without a weight); None where it does not.
* A pointwise op (tagged so, or an activation's backward op torch does not tag) on tensors of one shape, dtype and
  device, beside numbers: one output like its first tensor, with contiguous strides. Ops whose output differs (a
  comparison's bool, an integer division's float) never match, and are never answered so.

Batch norm's formula is given only for a dense contiguous input with no element missing (and, backward, a gradient
of the same sizes and strides), every optional tensor None or a contiguous (C,) one on the input's device, and not
for a call the decomposition refuses (it raises there as under the fake mode): a training call with one value a
channel and running statistics, or one without saved statistics backward, an eval call without running statistics.
A pointwise op's is given only for tensors dense and contiguous, with no element missing, and numbers that are
finite.

A formula is trusted only after it was seen to be right: the first call of each *kind* (the op, the input's dtype,
device, number of dimensions and which of its dimensions have size 1; batch norm's optional tensors present and
their dtypes, its flags and mask; a pointwise op's numbers and their values) runs through the fake mode as always,
and its answer's metadata is compared with the formula's. A kind whose answer differs (another torch version,
another device's rules) is never answered by formula in the process. Later calls of a trusted kind get outputs made
from the formula's metadata, as the fake shortcuts make them for a key seen.

The decompositions also update the running statistics in place (``running_mean.copy_(...)``); on a fake twin that
changes nothing a report reads, as when the fake shortcuts answer a second call of one key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["contiguous_strides", "expected", "like_first"]

_aten = torch.ops.aten
_BATCH_NORM = _aten.native_batch_norm.default
_BATCH_NORM_BACKWARD = _aten.native_batch_norm_backward.default
_COMPUTED_IN = {torch.float16: torch.float32, torch.bfloat16: torch.float32, torch.complex32: torch.complex64}
_CPU = torch.device("cpu")
_PLAIN = (torch.Tensor, nn.Parameter)  # a meta tensor's types (a meta model's parameters are Parameters)

# what :func:`expected` returns: the call's kind, whether the outputs come as a tuple, and per output its metadata
# (sizes, strides, dtype, grad flag, conjugate and negative bits, device: None on meta) or None for an undefined one
Expected = tuple[tuple[Any, ...], bool, tuple[tuple[Any, ...] | None, ...]]
_NUMBERS = frozenset({bool, int, float})
_POINTWISE: dict[int, tuple[bool, Any]] = {}  # id() of an op -> (whether it is pointwise, the op: kept)
# elementwise ops torch does not tag pointwise: activations' backward ops (their kinds are checked as any other's)
_UNTAGGED_POINTWISE = frozenset({
    "aten::hardtanh_backward", "aten::hardswish_backward", "aten::hardsigmoid_backward", "aten::leaky_relu_backward",
    "aten::elu_backward", "aten::softplus_backward", "aten::mish_backward", "aten::hardshrink_backward",
    "aten::softshrink_backward"})


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides of a contiguous tensor of ``shape`` (a dimension of size 0 steps as one of size 1, as torch's)."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _input(t: Any, fake: Any, dims: int = 2) -> tuple[tuple[int, ...], Any] | None:
    """The sizes and device of a dense contiguous input of at least ``dims`` dimensions and no element missing, a
    formula holds for (device None on meta), else None."""
    if fake is None:
        if type(t) not in _PLAIN or not t.is_meta:
            return None
        device = None
    else:
        if type(t) is not fake or t.constant is not None or t.dispatch_keys is not None:
            return None
        device = t.fake_device
    shape = tuple(t.shape)
    if t.layout is not torch.strided or len(shape) < dims or 0 in shape or t.stride() != contiguous_strides(shape) or \
            t.storage_offset() != 0 or t.is_conj() or t.is_neg():
        return None
    return shape, device


def _optional(values: tuple[Any, ...], channels: int, device: Any, fake: Any) -> tuple[Any, ...] | None:
    """Per optional tensor its dtype (None where absent), or None where one is not a (C,) vector like the input."""
    dtypes: list[torch.dtype | None] = []
    for v in values:
        if v is None:
            dtypes.append(None)
        elif _input(v, fake, 1) == ((channels,), device):  # (a contiguous (C,) tensor like the input)
            dtypes.append(v.dtype)
        else:
            return None
    return tuple(dtypes)


def expected(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], fake: Any) -> Expected | None:
    """The kind of a call of batch norm's ops or of a pointwise op, and its outputs' metadata by formula; None where
    there is no formula for it (another op, keywords, an input not dense and contiguous, an optional tensor of
    another shape, tensors of several shapes). ``fake``: the FakeTensor class for a fake twin's call, None for one
    on meta tensors."""
    if kwargs:
        return None
    if func is _BATCH_NORM and len(args) == 8:
        return _forward(args, fake)
    if func is _BATCH_NORM_BACKWARD and len(args) == 10:
        return _backward(args, fake)
    known = _POINTWISE.get(id(func))
    if known is None:
        schema = getattr(func, "_schema", None)
        known = _POINTWISE[id(func)] = (torch.Tag.pointwise in getattr(func, "tags", ())
                                        or (schema is not None and schema.name in _UNTAGGED_POINTWISE), func)
    return _pointwise(func, args, fake) if known[0] else None


def _pointwise(func: Any, args: tuple[Any, ...], fake: Any) -> Expected | None:
    """A pointwise op on tensors of one shape, dtype and device, each dense and contiguous, beside numbers: one
    output like its first tensor (:func:`like_first`). An op whose output is not like its input (a comparison's
    bool, an integer division's float) has kinds that never match, and is never answered by formula."""
    found = like_first(args, lambda v: _input(v, fake, 1))
    if found is None:
        return None
    parts, shape, dtype, device, _ = found
    return (func, fake is None, *parts), False, ((shape, contiguous_strides(shape), dtype, False, False, False,
                                                  device),)


def like_first(args: tuple[Any, ...], dense: Callable[[Any], tuple[tuple[int, ...], Any] | None]
               ) -> tuple[list[Any], tuple[int, ...], torch.dtype, Any, int] | None:
    """The arguments of a pointwise call whose output is like its first tensor: tensors of one shape, dtype and
    device (``dense(t)``: a tensor's sizes and device where it is dense and contiguous as the caller needs, else
    None), beside finite numbers. Returns the parts of the call's kind, in the arguments' order (each number's type
    and value: a value may make the kernel refuse the call, an integer to a negative power; the first tensor's
    dtype, device, number of dimensions and which have size 1; True for each other tensor, like the first), the
    first tensor's sizes, dtype and device, and the number of tensors; None for any other arguments. The op itself
    is the caller's part of the kind."""
    parts: list[Any] = []
    first: tuple[tuple[int, ...], Any] | None = None
    dtype = None
    tensors = 0
    for v in args:
        if type(v) in _NUMBERS:
            if v != v or v in (math.inf, -math.inf):  # (a NaN is not equal to itself: no kind to find again)
                return None
            parts.append((type(v), v))
            continue
        found = dense(v)
        if found is None or (first is not None and (found != first or v.dtype != dtype)):
            return None
        if first is None:
            first, dtype = found, v.dtype
            parts.append((dtype, found[1], len(found[0]), tuple(size == 1 for size in found[0])))
        else:
            parts.append(True)  # (another tensor like the first)
        tensors += 1
    if first is None or dtype is None:
        return None
    return parts, first[0], dtype, first[1], tensors


def _forward(args: tuple[Any, ...], fake: Any) -> Expected | None:
    x, weight, bias, mean, var, training, _, _ = args
    found = _input(x, fake)
    if found is None or type(training) is not bool:
        return None
    shape, device = found
    optional = _optional((weight, bias, mean, var), shape[1], device, fake)
    # the decomposition raises on a training call with one value a channel and running variance (its unbiased
    # estimate divides by n - 1 = 0), and on an eval call without running statistics: no formula, it raises there
    if optional is None or (training and var is not None and x.numel() == shape[1]) or \
            (not training and (mean is None or var is None)):
        return None
    on_cpu = device == _CPU
    saved_dtype = x.dtype if on_cpu else _COMPUTED_IN.get(x.dtype, x.dtype)
    saved = (shape[1],) if training or not on_cpu else (0,)
    kind = ("native_batch_norm", fake is None, x.dtype, device, len(shape), tuple(s == 1 for s in shape), optional,
            training)
    out = (shape, contiguous_strides(shape), x.dtype, False, False, False, device)
    stat = (saved, (1,), saved_dtype, False, False, False, device)
    return kind, True, (out, stat, stat)


def _backward(args: tuple[Any, ...], fake: Any) -> Expected | None:
    grad, x, weight, mean, var, save_mean, save_invstd, train, _, mask = args
    found = _input(x, fake)
    if found is None or type(train) is not bool or type(mask) is not list or len(mask) != 3 or \
            any(type(m) is not bool for m in mask):
        return None
    shape, device = found
    if _input(grad, fake) != found:
        return None
    optional = _optional((weight, mean, var, save_mean, save_invstd), shape[1], device, fake)
    # (the decomposition raises on a training call without saved statistics, an eval call without running ones)
    if optional is None or (train and (save_mean is None or save_invstd is None)) or \
            (not train and (mean is None or var is None)):
        return None
    param_dtype = weight.dtype if weight is not None else x.dtype
    kind = ("native_batch_norm_backward", fake is None, x.dtype, grad.dtype, device, len(shape),
            tuple(s == 1 for s in shape), optional, train, tuple(mask))
    vector = ((shape[1],), (1,), param_dtype, False, False, False, device)
    return kind, True, ((shape, contiguous_strides(shape), x.dtype, False, False, False, device),
                  vector if mask[1] else None, vector if mask[2] else None)
