"""Direct leaves: common leaf modules run past torchcost's modes, their aten ops handed to the collectors as planned.

An eval forward of a CNN is mostly convolutions, batch norms and activations, one or two aten ops each. Under the
dispatch mode each op costs a Python round trip (the op's arguments boxed into Python and parsed again to run it,
about 20-35 us on this machine) and each torch function a trip through the function mode: on mobilenet_v2 that alone
makes a forward 1.3-1.4x slower before torchcost has counted anything. Those modules need no interception to be
known: the aten ops an ``nn.Conv2d`` runs are fixed by its attributes and its input.

So, for the module types in ``_PLANNERS`` (exact types, no hooks of their own, no ``forward`` of the instance),
a planner says which aten ops the call will run: the op, its arguments (the module's input and tensors, its
settings) and where its output comes from. A plan is trusted only after it was seen to be right: the first call of
each kind of call in a process (the plan's key: the module type and its ``forward``, the torch function the forward
goes through, the settings that pick the path through torch's Python and composite code, the input's dtype, device
type, layout, dimensions, contiguity and emptiness) runs under the modes as always, and the
ops the dispatch mode saw are compared with the plan: the same ops, arguments identical (tensors by identity, every
other value by type and value), the last op's output the module's own output. A view the plan makes itself (the
transposed weight of an ``nn.Linear``, which aten::linear makes inside and hands to the product) must be the op's
output to the byte of its metadata, on the same storage, and later ops must take the op's view where the plan puts its
own. A kind whose plan differs (another torch version, a backend that takes another path) is never planned again in
the process.

Later calls of a trusted kind run with torch's dispatch and function modes off (``DisableTorchDispatch``,
``DisableTorchFunction``), entered by the scope's pre-hook and left by its post-hook; before the forward the
copy-on-write watch is told of the planned ops (run/guard.py), after it the ops go to the op collector and the
memory tracker as the dispatch mode would have handed them, in the module's scope. Outputs the module does not
return (batch norm's empty byte reserve, the empty statistics native_batch_norm and cudnn_batch_norm return in
eval) are made with the shape, strides and dtype seen when the kind was trusted (an empty one once a run: it holds
no storage). Each such call is keyed once by the metadata of its ops' arguments (:func:`_fingerprint`); its ops go to
the collectors with that key, so that alike calls (models repeat their shapes) are priced once in the process by
the op collector's built-in formulas and their kernel memory asked once a run by the memory tracker (looked up by
the key before anything else is read), and go to the memory tracker with their tensor arguments, found by the same
walk, so it does not search the arguments again.

Only eval runs on real tensors use this (the Recording decides), and a call is planned only when nothing else could
watch it: no tensor subclass, grad mode and autocast off, no JIT trace or functorch transform, no hooks but
torchcost's, and no mode on torch's stacks but torchcost's own. Anything else runs under the modes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_mod

from torchcost.collect import Switch
from torchcost.collect.fakerules import contiguous_strides
from torchcost.collect.keys import LEAVES, numbered, tensor_key
from torchcost.collect.unwritten import SkipMode, Unwritten

__all__ = ["TRUSTED", "DirectLeaves", "LeafCall", "Out", "enabled", "mode_depths", "off"]

_aten = torch.ops.aten


class Out(enum.Enum):
    """Where a planned op's output comes from when the module ran past the modes."""

    MODULE = "module"  # the module's output is the op's output
    TUPLE = "tuple"  # the op returns (the module's output, *extras): extras made with the metadata seen when trusted
    EXTRA = "extra"  # an output the module does not return (aten::empty of batch norm's reserve): made the same way
    BASE = "base"  # a tensor on the module output's storage that a later op views (a 3-d linear's addmm): made as a
    # view of the output with the metadata seen when trusted; later steps name it by the placeholder BASE


class _Base:
    """The placeholder a planned op's arguments hold for the output of the plan's BASE op, which does not exist when
    the plan is made."""

    def __repr__(self) -> str:
        return "BASE"


BASE = _Base()


# (op, arguments, keyword arguments, where its output comes from: an Out, or a tensor the planner made itself, a view
# such as nn.Linear's transposed weight, which later steps take as an argument)
Step = tuple[Any, tuple[Any, ...], dict[str, Any], Out | torch.Tensor]
Plan = tuple[tuple[Any, ...], tuple[Step, ...]]  # (the kind of call, the ops it runs)

# the kind of call -> per planned op, the metadata of the outputs a call past the modes makes (EXTRA, TUPLE), or
# False: its plan was wrong once, never planned again in this process
TRUSTED: dict[tuple[Any, ...], tuple[tuple[tuple[Any, ...], ...], ...] | bool] = {}
# the types a planned op's tensors may have (None: a missing bias): a subclass may run code of its own in an op
_PLAIN = frozenset({torch.Tensor, nn.Parameter, type(None)})
# benchmarks and tests turn planning off to compare: ``enabled()`` says whether leaf modules are planned (with ``on``,
# sets it and returns the old value); inside ``off()`` none is (every op under the modes, what a run gave before)
_SWITCH = Switch()
enabled, off = _SWITCH.enabled, _SWITCH.off


def mode_depths() -> tuple[int, int]:
    """How many dispatch modes and function modes are on torch's stacks now (in this thread)."""
    return torch._C._len_torch_dispatch_stack(), torch._C._len_torch_function_stack()


def _modes_on(guards: tuple[Any, Any]) -> None:
    """Leave the (DisableTorchDispatch, DisableTorchFunction) pair a call past the modes entered, innermost first."""
    guards[1].__exit__(None, None, None)
    guards[0].__exit__(None, None, None)


# -- the planners: (module, its one positional input) -> a Plan, or None (this call runs under the modes) ----------


def _kind(x: torch.Tensor) -> tuple[Any, ...]:
    """What of the input can pick another path through torch's Python and composite code: its dtype, device type,
    layout, dimensions, whether it is contiguous (a channels-last mean is made channels-last again) and empty (an
    empty batch norm is computed another way)."""
    return x.dtype, x.device.type, x.layout, x.dim(), x.is_contiguous(), x.numel() == 0


# each planner's key holds the torch functions the module's forward goes through, as they are now: one replaced
# (wrapped by a tracing library, say) is another kind of call, checked again
_CONV_FUNCTIONS = {1: "conv1d", 2: "conv2d", 3: "conv3d"}


def _conv(m: Any, x: torch.Tensor) -> Plan | None:
    # _ConvNd._conv_forward: F.convNd(input, weight, bias, stride, padding, dilation, groups) -> aten::convolution
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        return None
    n = len(m.kernel_size)
    if x.dim() != n + 2:  # (an unbatched input is unsqueezed and squeezed back: more ops)
        return None
    params = m._parameters
    weight, bias = params["weight"], params["bias"]
    if not _PLAIN.issuperset((type(weight), type(bias))):
        return None
    args = (x, weight, bias, list(m.stride), list(m.padding), list(m.dilation), False, [0] * n, m.groups)
    op: Step = (_aten.convolution.default, args, {}, Out.MODULE)
    return (getattr(F, _CONV_FUNCTIONS[n]), bias is None, *_kind(x)), (op,)


def _linear(m: Any, x: torch.Tensor) -> Plan | None:
    # Linear.forward: F.linear(input, weight, bias) -> aten::linear, whose CPU and CUDA lowering for a 2-D input is
    # t(weight), then addmm(bias, input, t) (mm without a bias). The transposed weight is a view the plan makes
    # itself (the modes are off here): past the modes the op collector and the memory tracker get it where they got
    # the view aten::linear made, as the argument of the product. A contiguous 3-D input is folded: with a bias,
    # view(input) to 2-D, t, addmm, and a view of the product back to 3-D (aten::linear's fused path); without one,
    # aten::matmul's t, view, mm and _unsafe_view. The product is the BASE the last op takes. Other inputs: not
    # planned.
    params = m._parameters
    weight, bias = params["weight"], params["bias"]
    if not _PLAIN.issuperset((type(weight), type(bias))):
        return None
    t = weight.t()
    transpose: Step = (_aten.t.default, (weight,), {}, t)
    if x.dim() == 2:
        product: Step = ((_aten.mm.default, (x, t), {}, Out.MODULE) if bias is None
                         else (_aten.addmm.default, (bias, x, t), {}, Out.MODULE))
        return (F.linear, bias is None, *_kind(x)), (transpose, product)
    if x.dim() != 3 or not x.is_contiguous() or x.numel() == 0:
        return None
    b, n, k = x.shape
    flat = x.view(b * n, k)
    fold: Step = (_aten.view.default, (x, [b * n, k]), {}, flat)
    size = [b, n, weight.shape[0]]
    shapes = (b, n, k, weight.shape[0])  # (the BASE's metadata, kept per kind, follows from these)
    if bias is None:
        return (F.linear, True, shapes, *_kind(x)), (transpose, fold, (_aten.mm.default, (flat, t), {}, Out.BASE),
                                                     (_aten._unsafe_view.default, (BASE, size), {}, Out.MODULE))
    return (F.linear, False, shapes, *_kind(x)), (fold, transpose,
                                                  (_aten.addmm.default, (bias, flat, t), {}, Out.BASE),
                                                  (_aten.view.default, (BASE, size), {}, Out.MODULE))


def _layer_norm(m: Any, x: torch.Tensor) -> Plan | None:
    # LayerNorm.forward: F.layer_norm(input, normalized_shape, weight, bias, eps) -> aten::layer_norm, which on the
    # CPU runs native_layer_norm (the output, and the mean and reciprocal deviation of each row: extras)
    params = m._parameters
    weight, bias = params["weight"], params["bias"]
    if x.device.type != "cpu" or not _PLAIN.issuperset((type(weight), type(bias))) or x.numel() == 0:
        return None
    op: Step = (_aten.native_layer_norm.default, (x, list(m.normalized_shape), weight, bias, m.eps), {}, Out.TUPLE)
    # (the extras' metadata, kept per kind, follows from the shapes)
    return (F.layer_norm, weight is None, bias is None, tuple(x.shape), tuple(m.normalized_shape), *_kind(x)), (op,)


def _conv1d_transformers(m: Any, x: torch.Tensor) -> Plan | None:
    # transformers' Conv1D (GPT-2's projections): torch.addmm(bias, x.view(-1, x.size(-1)), weight), then a view to
    # x's sizes but the last, nf. The folded input is a view the plan makes; the product is the BASE
    params = m._parameters
    weight, bias = params["weight"], params["bias"]
    if not _PLAIN.issuperset((type(weight), type(bias))) or bias is None or x.dim() < 2 or not x.is_contiguous():
        return None
    k = x.shape[-1]
    flat = x.view(-1, k)
    fold: Step = (_aten.view.default, (x, [-1, k]), {}, flat)
    product: Step = (_aten.addmm.default, (bias, flat, weight), {}, Out.BASE)
    back: Step = (_aten.view.default, (BASE, [*x.shape[:-1], m.nf]), {}, Out.MODULE)
    return (torch.addmm, tuple(x.shape), tuple(weight.shape), *_kind(x)), (fold, product, back)  # (as _linear's)


_BATCH_NORM_DIMS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}


def _batch_norm(m: Any, x: torch.Tensor) -> Plan | None:
    # _BatchNorm.forward in eval with running statistics: F.batch_norm(..., training=False) -> aten::batch_norm ->
    # _batch_norm_impl_index (aten/src/ATen/native/Normalization.cpp). On the CPU: an empty byte "reserve", then
    # native_batch_norm. On CUDA: cudnn_batch_norm when its conditions hold (below: float32 input and parameters,
    # weight and bias, at least 3 dims, at most 65,535 in the batch in eval, cuDNN on, eps not below cuDNN's minimum,
    # fewer than 2^31 elements), else another path: not planned
    buffers = m._buffers
    mean, var = buffers["running_mean"], buffers["running_var"]
    if m.training or mean is None or var is None or x.dim() not in _BATCH_NORM_DIMS[type(m)]:
        return None
    momentum = 0.0 if m.momentum is None else m.momentum
    weight, bias = m._parameters["weight"], m._parameters["bias"]
    if not _PLAIN.issuperset((type(weight), type(bias), type(mean), type(var))):
        return None
    device = x.device.type
    if device == "cuda":
        if not (weight is not None and bias is not None and x.dtype == torch.float32 and weight.dtype == torch.float32
                and x.dim() >= 3 and x.size(0) <= 65535 and torch.backends.cudnn.enabled and m.eps >= 1e-5
                and x.numel() < 2**31 - 1):
            return None
        cudnn: Step = (_aten.cudnn_batch_norm.default, (x, weight, bias, mean, var, False, momentum, m.eps), {},
                       Out.TUPLE)
        return (F.batch_norm, torch.batch_norm, "cudnn", *_kind(x)), (cudnn,)
    if device != "cpu":
        return None
    reserve = (_aten.empty.memory_format, ([0],), {"dtype": torch.uint8, "layout": torch.strided,
                                                   "device": x.device}, Out.EXTRA)
    norm: Step = (_aten.native_batch_norm.default, (x, weight, bias, mean, var, False, momentum, m.eps), {}, Out.TUPLE)
    return (F.batch_norm, torch.batch_norm, weight is None, *_kind(x)), (reserve, norm)


def _pointwise(owner: Any, function: str, plain: Any, in_place: Any,
               *settings: str) -> Callable[[Any, torch.Tensor], Plan | None]:
    """An activation module whose forward calls ``owner.function`` (torch.nn.functional's, or torch's own for
    Sigmoid and Tanh): the op (in place when ``inplace`` is set) on the input, then its ``settings``."""

    def plan(m: Any, x: torch.Tensor) -> Plan | None:
        inplace = bool(m.__dict__.get("inplace", False))  # (as F.relu's ``if inplace:`` reads it)
        op: Step = (in_place if inplace else plain, (x, *[getattr(m, s) for s in settings]), {}, Out.MODULE)
        return (getattr(owner, function), inplace, *_kind(x)), (op,)

    return plan


def _gelu(m: Any, x: torch.Tensor) -> Plan | None:
    options = {} if m.approximate == "none" else {"approximate": m.approximate}
    op = (_aten.gelu.default, (x,), options, Out.MODULE)
    return (F.gelu, m.approximate, *_kind(x)), (op,)


def _adaptive_avg_pool2d(m: Any, x: torch.Tensor) -> Plan | None:
    # F.adaptive_avg_pool2d -> aten::adaptive_avg_pool2d: a mean over the last two dims for a 1x1 output, else
    # _adaptive_avg_pool2d
    size = m.output_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if not (type(h) is int and type(w) is int) or x.dim() not in (3, 4):
        return None
    one = h == 1 and w == 1
    if one and x.dim() == 4 and not x.is_contiguous():
        # a channels-last input's mean is made channels-last again by as_strided_ on the mean's output, which a plan
        # cannot name before it exists: not planned (any other non-contiguous 4-d input, rare, with it)
        return None
    op: Step = ((_aten.mean.dim, (x, [-1, -2], True), {}, Out.MODULE) if one
                else (_aten._adaptive_avg_pool2d.default, (x, [h, w]), {}, Out.MODULE))
    return (F.adaptive_avg_pool2d, one, *_kind(x)), (op,)


def _identity(m: Any, x: torch.Tensor) -> Plan | None:
    # nn.Identity, and dropout in eval (F.dropout with training=False returns its input): no op at all
    if m.training and type(m) is not nn.Identity:
        return None
    return (_DROPOUTS.get(type(m)), *_kind(x)), ()  # (Identity: None)


_DROPOUTS = {nn.Dropout: F.dropout, nn.Dropout1d: F.dropout1d, nn.Dropout2d: F.dropout2d, nn.Dropout3d: F.dropout3d,
             nn.AlphaDropout: F.alpha_dropout}

_PLANNERS: dict[type, Callable[[Any, torch.Tensor], Plan | None]] = {
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Conv3d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm1d: _batch_norm, nn.BatchNorm2d: _batch_norm, nn.BatchNorm3d: _batch_norm,
    nn.ReLU: _pointwise(F, "relu", _aten.relu.default, _aten.relu_.default),
    nn.ReLU6: _pointwise(F, "hardtanh", _aten.hardtanh.default, _aten.hardtanh_.default, "min_val", "max_val"),
    nn.Hardtanh: _pointwise(F, "hardtanh", _aten.hardtanh.default, _aten.hardtanh_.default, "min_val", "max_val"),
    nn.SiLU: _pointwise(F, "silu", _aten.silu.default, _aten.silu_.default),
    nn.Hardswish: _pointwise(F, "hardswish", _aten.hardswish.default, _aten.hardswish_.default),
    nn.Hardsigmoid: _pointwise(F, "hardsigmoid", _aten.hardsigmoid.default, _aten.hardsigmoid_.default),
    nn.LeakyReLU: _pointwise(F, "leaky_relu", _aten.leaky_relu.default, _aten.leaky_relu_.default, "negative_slope"),
    nn.Sigmoid: _pointwise(torch, "sigmoid", _aten.sigmoid.default, _aten.sigmoid.default),  # (Sigmoid.forward's own)
    nn.Tanh: _pointwise(torch, "tanh", _aten.tanh.default, _aten.tanh.default),
    nn.GELU: _gelu,
    nn.LayerNorm: _layer_norm,
    nn.AdaptiveAvgPool2d: _adaptive_avg_pool2d,
    nn.Identity: _identity, nn.Dropout: _identity, nn.Dropout1d: _identity, nn.Dropout2d: _identity,
    nn.Dropout3d: _identity, nn.AlphaDropout: _identity,
}


def _planner(kind: type) -> Callable[[Any, torch.Tensor], Plan | None] | None:
    """The planner of a module type: _PLANNERS', or one of a library's classes known by name (transformers'
    Conv1D, when the module is one: transformers is never imported here), or that of the planned type a subclass
    derives from when it only adds to it (:func:`_adds_only`: torchvision's video ``Conv3DSimple``, an
    ``nn.Conv3d`` with a constructor of its own). Its calls are planned as the base's, their kind its own: the
    first is checked against the plan as any kind's."""
    planner = _PLANNERS.get(kind)
    if planner is None and kind not in _NOT_PLANNED:
        base = next((b for b in kind.__mro__[1:] if b in _PLANNERS), None)
        if (kind.__module__, kind.__qualname__) == ("transformers.pytorch_utils", "Conv1D"):
            planner = _PLANNERS[kind] = _conv1d_transformers
        elif base is not None and _adds_only(kind, base):
            planner = _PLANNERS[kind] = _PLANNERS[base]
        else:
            _NOT_PLANNED.add(kind)
    return planner


# what a class's namespace holds of its own whatever it defines (Python's bookkeeping), and its constructor
_OWN = frozenset({"__module__", "__qualname__", "__doc__", "__init__", "__annotations__", "__dict__", "__weakref__",
                  "__firstlineno__", "__static_attributes__", "__orig_bases__", "__parameters__"})


def _adds_only(kind: type, base: type) -> bool:
    """Whether every class from ``kind`` up to ``base`` defines nothing ``base`` has (no method, property or
    constant of the forward's path replaced) but its constructor, and no data descriptor (a property in front of an
    instance's attribute: a parametrization's ``weight``): new names only, which the base's forward does not reach."""
    for cls in kind.__mro__:
        if cls is base:
            return True
        for name, value in vars(cls).items():
            if (name not in _OWN and hasattr(base, name)) or hasattr(type(value), "__set__"):
                return False
    return False


_NOT_PLANNED: set[type] = set()


# -- checking a plan against what the dispatch mode saw --------------------------------------------------------------


def _same(planned: Any, seen: Any, made: dict[int, Any] | None = None) -> bool:
    """The same argument: a tensor by identity, a list or tuple item by item, anything else by type and value.
    ``made``: id() of a tensor the plan made itself -> the tensor the dispatch mode saw in its place."""
    if isinstance(planned, torch.Tensor) or isinstance(seen, torch.Tensor):
        return planned is seen or (made is not None and made.get(id(planned), _NOTHING) is seen)
    if type(planned) is not type(seen):
        return False
    if isinstance(planned, (list, tuple)):
        return len(planned) == len(seen) and all(_same(p, q, made) for p, q in zip(planned, seen))
    if isinstance(planned, dict):
        return planned.keys() == seen.keys() and all(_same(planned[k], seen[k], made) for k in planned)
    try:
        return bool(planned == seen)
    except Exception:  # (a value whose == does not give a bool)
        return False


_NOTHING = object()


def _first(args: tuple[Any, ...]) -> Any:
    return args[0]


def _meta(t: torch.Tensor) -> tuple[Any, ...]:
    return tuple(t.shape), t.stride(), t.dtype, t.storage_offset(), t.requires_grad, t.layout


def _extra(meta: tuple[Any, ...], device: torch.device) -> torch.Tensor:
    shape, stride, dtype = meta[0], meta[1], meta[2]
    return torch.empty_strided(shape, stride, dtype=dtype, device=device)


def _check(steps: tuple[Step, ...], trace: list[tuple[Any, Any, Any, Any]], output: Any,
           device: torch.device) -> tuple[tuple[tuple[Any, ...], ...], ...] | None:
    """If ``trace`` (what the dispatch mode saw) is what ``steps`` planned: for each step, the metadata of the
    outputs a call past the modes must make (an EXTRA output, a TUPLE's extras; () for a MODULE one). Else None."""
    if len(trace) != len(steps) or type(output) is not torch.Tensor:
        return None
    made: list[tuple[tuple[Any, ...], ...]] = []
    planned: dict[int, Any] = {}  # a tensor the plan made -> the one the dispatch mode saw
    for (func, args, kwargs, kind), (seen_func, seen_args, seen_kwargs, seen_out) in zip(steps, trace):
        if (func is not seen_func or not _same(args, tuple(seen_args), planned)
                or not _same(kwargs, dict(seen_kwargs), planned)):
            return None
        if isinstance(kind, torch.Tensor):  # made by the plan: the same view, on the same storage
            if (type(seen_out) is not torch.Tensor or _meta(seen_out) != _meta(kind)
                    or seen_out.untyped_storage().data_ptr() != kind.untyped_storage().data_ptr()):
                return None
            planned[id(kind)] = seen_out
            made.append(())
            continue
        if kind is Out.BASE:  # on the module output's storage; the later ops that take it name it BASE
            if (type(seen_out) is not torch.Tensor or type(output) is not torch.Tensor
                    or seen_out.untyped_storage().data_ptr() != output.untyped_storage().data_ptr()):
                return None
            planned[id(BASE)] = seen_out
            made.append((_meta(seen_out),))
            continue
        if kind is Out.MODULE:
            if seen_out is not output:
                return None
            extras: tuple[Any, ...] = ()
        elif kind is Out.EXTRA:
            extras = (seen_out,)
        else:
            if type(seen_out) is not tuple or not seen_out or seen_out[0] is not output:
                return None
            extras = seen_out[1:]
        if not all(type(t) is torch.Tensor and t.device == device for t in extras):
            return None
        metas = tuple(_meta(t) for t in extras)
        if any(_meta(_extra(m, device)) != m for m in metas):  # (what a call past the modes would make)
            return None
        made.append(metas)
    return tuple(made)


def _fingerprint(key: tuple[Any, ...], steps: tuple[Step, ...],
                 inputs: list[list[Any]]) -> int | None:
    """The number (collect/keys.py) of everything the collectors read of a planned call: its kind, and the
    arguments of its ops, each tensor's :func:`~torchcost.collect.keys.tensor_key` (its position counted across
    the ops), every other value as it is (the planners give each argument one type, so the general walk of
    ``metadata_key``, which tags each scalar with its type, is not needed). The outputs are fixed by
    these: the module's own, made by the op from them, and the extras, made with the metadata seen when the kind was
    trusted. None when some argument is of another kind (a symbolic size). ``inputs`` gets each op's tensor
    arguments, in order, found on the way (the planners put tensors only at the top level of the arguments)."""
    parts: list[Any] = [key]
    seen: dict[int, int] = {}
    for _, args, kwargs, _ in steps:
        tensors: list[Any] = []  # (BASE, where a step takes it)
        inputs.append(tensors)
        for value in (*args, *kwargs.values()) if kwargs else args:
            kind = type(value)
            if kind in _TENSORS:
                parts.append(tensor_key(value, kind, seen))
                tensors.append(value)
            elif kind is list and LEAVES.issuperset(map(type, value)):  # (sizes, strides, padding)
                parts.append(tuple(value))
            elif kind in LEAVES:
                parts.append(value)
            elif value is BASE:  # (its metadata follows from the other arguments')
                parts.append("base")
                tensors.append(value)
            else:
                return None
    try:
        return numbered(tuple(parts))
    except TypeError:  # (a symbolic size does not hash)
        return None


_TENSORS = frozenset({torch.Tensor, nn.Parameter})


# -- running them ----------------------------------------------------------------------------------------------------


class LeafCall:
    """A planned call between the scope's pre- and post-hook: its kind, its ops, and the modes' guards when it runs
    past them (None: it runs under the modes, its ops traced to check the plan). A call past the modes also has its
    metadata number and its ops' tensor arguments (:func:`_fingerprint`), and whether its kernel is skipped."""

    __slots__ = ("device", "guards", "inputs", "key", "number", "skipping", "steps", "x")

    def __init__(self, key: tuple[Any, ...], steps: tuple[Step, ...], device: torch.device,
                 guards: tuple[Any, Any] | None, x: torch.Tensor | None = None) -> None:
        self.key = key
        self.steps = steps
        self.device = device
        self.guards = guards
        self.x = x
        self.number: int | None = None
        self.inputs: list[list[Any]] = []
        self.skipping = False


# (the metadata number of a planned call past the modes, oneDNN's switch) -> how to make its module output without
# its kernel (collect/unwritten.py): the metadata of a new tensor, _INPUT (an in-place op returns its input), or None
# (an output of another kind: the kernel always runs). Learnt from the call's first run with its kernel, for the
# process; a kind whose torch function was not the one called (_MISSED) is never skipped again
_OUTPUTS: dict[tuple[int, bool], tuple[Any, ...] | str | None] = {}
_INPUT = "input"
_MISSED: set[tuple[Any, ...]] = set()
# a convolution's output by formula, for a call whose metadata has not run yet (:func:`_by_formula`): (its plan's
# kind, which dimensions of its input, weight and output have size 1, oneDNN's switch) -> whether every call of
# that kind whose kernel ran gave the formula's output, to the byte of its metadata (False: once not, never used)
_FORMULA: dict[tuple[Any, ...], bool] = {}
# the least work (multiply-accumulates plus bytes read and written, by the op collector's price of the call's ops)
# whose kernel is skipped: under it the kernel takes a few microseconds, less than skipping it costs (the skip
# mode, an empty output, following its storage). nn.Linear(64, 64) on one row, 4,096 MACs and about 17 KB: not skipped
WORTH_SKIPPING = 1 << 18
_MKLDNN_ENABLED = torch._C._get_mkldnn_enabled


def _output_kind(call: LeafCall, output: torch.Tensor) -> tuple[Any, ...] | str | None:
    """What :data:`_OUTPUTS` keeps of a planned call's output, checked to remake it to the byte: _INPUT (the input
    itself); the metadata of a new dense tensor that ``torch.empty_strided`` remakes, storage included; for a plan
    with a BASE op, ("base", the BASE's metadata, the last op, its sizes): the last op run on a new BASE; else
    None."""
    x, device = call.x, call.device
    assert x is not None
    if output is x:
        return _INPUT
    if output.requires_grad or output.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        return None
    made = TRUSTED.get(call.key)
    base = [m[0] for (_, _, _, kind), m in zip(call.steps, made or ()) if kind is Out.BASE]  # type: ignore[arg-type]
    if base:
        func, args = call.steps[-1][0], call.steps[-1][1]
        remade = func(_extra(base[0], device), args[1])
        if _meta(remade) != _meta(output) or (remade._base is None) != (output._base is None):
            return None
        return ("base", base[0], func, args[1])
    if output._base is not None or output.storage_offset() != 0:
        return None
    meta = _meta(output)
    remade = _extra(meta, device)
    if _meta(remade) != meta or remade.untyped_storage().nbytes() != output.untyped_storage().nbytes():
        return None
    return meta


def _by_formula(call: LeafCall) -> tuple[tuple[Any, ...], tuple[Any, ...] | str, int] | None:
    """A planned call's module output by formula: (the formula's kind, the output as :func:`_output_kind` keeps it,
    a lower bound of the call's work as the op collector prices it), or None for a call without one.

    * A convolution (not transposed, dense contiguous input and weight): sizes (N, C_out, *o), each o =
      (i + 2 p - d (k - 1) - 1) // s + 1, contiguous strides, the input's dtype; its multiply-accumulates.
    * An activation out of place, or batch norm (dense contiguous input): the input's sizes, contiguous strides, the
      input's dtype; the bytes it reads and writes. An activation in place: its input itself.

    The one doubt is the memory format a backend picks where a size-1 dimension makes a contiguous tensor look
    channels-last too: the kind holds which dimensions have size 1, and a kind is used only once a call of it ran
    its kernel and gave the formula's output (:data:`_FORMULA`)."""
    steps = call.steps
    if not steps or not steps[-1][1]:
        return None
    func, args = steps[-1][0], steps[-1][1]
    x = args[0]
    if type(x) not in _TENSORS or not x.is_contiguous() or x.numel() == 0:
        return None
    moved = 2 * x.numel() * x.element_size()
    if func in _IN_PLACE and len(steps) == 1:
        return (call.key, tuple(d == 1 for d in x.shape), _MKLDNN_ENABLED()), _INPUT, moved
    if func in _LIKE_INPUT:
        shape: tuple[int, ...] = tuple(x.shape)
        weight_ones: tuple[bool, ...] = ()
        work = moved
    elif func is _aten.convolution.default and len(steps) == 1:
        _, weight, _, stride, padding, dilation, transposed, _, _ = args
        if transposed or not weight.is_contiguous():
            return None
        sizes = [(i + 2 * p - d * (k - 1) - 1) // st + 1 for i, k, st, p, d in
                 zip(x.shape[2:], weight.shape[2:], stride, padding, dilation, strict=True)]
        if min(sizes, default=1) < 1:
            return None
        shape = (x.shape[0], weight.shape[0], *sizes)
        weight_ones = tuple(d == 1 for d in weight.shape)
        work = math.prod(shape) * weight.shape[1] * math.prod(weight.shape[2:])  # (C_in / groups: weight's dim 1)
    else:
        return None
    meta = (shape, contiguous_strides(shape), x.dtype, 0, False, torch.strided)
    kind = (call.key, tuple(d == 1 for d in x.shape), weight_ones, tuple(d == 1 for d in shape), _MKLDNN_ENABLED())
    return kind, meta, work


# the ops of planned calls whose output is like their input (an activation out of place, batch norm on the CPU), or
# is their input (an activation in place): :func:`_by_formula`
_LIKE_INPUT = frozenset({_aten.relu.default, _aten.hardtanh.default, _aten.silu.default, _aten.hardswish.default,
                         _aten.hardsigmoid.default, _aten.leaky_relu.default, _aten.sigmoid.default,
                         _aten.tanh.default, _aten.gelu.default, _aten.native_batch_norm.default})
_IN_PLACE = frozenset({_aten.relu_.default, _aten.hardtanh_.default, _aten.silu_.default, _aten.hardswish_.default,
                       _aten.hardsigmoid_.default, _aten.leaky_relu_.default})


class _Swapped:
    """The function mode stack of a call whose kernel is skipped: the skip mode in place of the Recording's own
    function mode, put back on exit (the second of a LeafCall's guards)."""

    __slots__ = ("mine", "skip")

    def __init__(self, mine: Any, skip: SkipMode) -> None:
        self.mine = mine
        self.skip = skip

    def __exit__(self, *exc: object) -> None:
        torch._C._pop_torch_function_stack()
        torch._C._push_on_torch_function_stack(self.mine)


class DirectLeaves:
    """Runs the planned leaf calls of one Recording past its modes (see the module docstring). ``dispatch`` is the
    Recording's DispatchCollector: its collectors get the ops, its ``trace`` checks a plan, its ``watch`` is told of
    them before they run. ``modes`` is the length of torch's dispatch and function mode stacks with the
    Recording's own modes on them and nobody else's."""

    def __init__(self, dispatch: Any, modes: tuple[int, int], unwritten: Unwritten | None = None) -> None:
        self.dispatch = dispatch
        self.modes = modes
        self.direct = 0  # calls run past the modes (tests and benchmarks read it)
        self.checked = 0  # calls traced to check a plan
        self._empty: dict[tuple[Any, ...], torch.Tensor] = {}  # (metadata, device) -> an empty output: _made
        # a run that skips the kernels of calls whose output is known (collect/unwritten.py), else None
        self.unwritten = unwritten
        self.skip = SkipMode()

    def _quiet(self) -> bool:
        """Whether nothing but this Recording could watch a call now."""
        dispatch = self.dispatch
        ops = dispatch.ops
        return (not dispatch.paused and ops.counting and not ops.enclosed_depth and ops.phase == "forward"
                and dispatch.trace is None and not torch.is_grad_enabled()
                and not torch._C._is_any_autocast_enabled() and torch._C._get_tracing_state() is None
                and mode_depths() == self.modes
                and len(module_mod._global_forward_pre_hooks) == 1 and len(module_mod._global_forward_hooks) == 1
                and not module_mod._global_backward_hooks and not module_mod._global_backward_pre_hooks
                and torch._C._functorch.peek_interpreter_stack() is None)

    def begin(self, module: nn.Module, args: tuple[Any, ...]) -> LeafCall | None:
        """Called by the scope's pre-hook: a LeafCall if ``module``'s call is planned (past the modes, or traced to
        check the plan), else None."""
        planner = _planner(type(module))
        if planner is None or len(args) != 1 or type(args[0]) is not torch.Tensor or not _SWITCH.on:
            return None
        if (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or "forward" in module.__dict__
                or getattr(module, "_compiled_call_impl", None) is not None or not self._quiet()):
            return None
        # the modes off first: the plan reads the input's metadata, each read a round trip through them otherwise
        guards = (torch._C._DisableTorchDispatch(), torch._C.DisableTorchFunction())
        guards[0].__enter__()
        guards[1].__enter__()
        call = None
        try:
            call = self._plan(planner, module, args[0], guards)
        except Exception:  # (a module in a state its planner did not foresee: it runs under the modes)
            call = None
        finally:
            if call is None or call.guards is None:
                _modes_on(guards)
        if call is not None and call.guards is None:
            self.dispatch.trace = []  # the first call of its kind: it runs under the modes, traced
        return call

    def _plan(self, planner: Callable[[Any, torch.Tensor], Plan | None], module: nn.Module, x: torch.Tensor,
              guards: tuple[Any, Any]) -> LeafCall | None:
        plan = planner(module, x)
        if plan is None:
            return None
        kind, steps = plan
        key = (type(module), type(module).forward, *kind)
        trusted = TRUSTED.get(key)
        if trusted is False:
            return None
        if trusted is None:
            return LeafCall(key, steps, x.device, None)
        dispatch = self.dispatch
        watch = dispatch.watch
        if watch is not None:  # told before the ops run, as the dispatch mode tells it
            idle = dispatch._idle
            for func, op_args, kwargs, _ in steps:
                if id(func) not in idle:
                    watch(func, op_args, kwargs)
        call = LeafCall(key, steps, x.device, guards, x)
        call.number = _fingerprint(key, steps, call.inputs)
        if self.unwritten is not None and call.number is not None and steps and key not in _MISSED:
            learnt = (call.number, _MKLDNN_ENABLED())
            made = _OUTPUTS.get(learnt)
            if made is None and learnt not in _OUTPUTS:  # (metadata not run yet: a convolution's by formula)
                formula = _by_formula(call)
                if formula is not None and _FORMULA.get(formula[0]) and formula[2] >= WORTH_SKIPPING:
                    made = formula[1]
            if made is not None:
                self._skip(call, made)
        return call

    def _skip(self, call: LeafCall, made: tuple[Any, ...] | str) -> None:
        """Run ``call`` with its kernel skipped: function handling back on with the skip mode alone, which answers
        the module's torch function (its plan key's first function) with an output of ``made`` (collect/unwritten.py;
        the dispatch mode stays off)."""
        skip = self.skip
        skip.callee, skip.hit = call.key[2], False
        device = call.device
        if isinstance(made, str):  # (_INPUT)
            skip.made = _first
        elif made[0] == "base":  # (the last op on a new BASE)
            _, base, func, size = made
            skip.made = lambda args: func(_extra(base, device), size)
        else:
            shape, stride, dtype = made[0], made[1], made[2]
            skip.made = lambda args: torch.empty_strided(shape, stride, dtype=dtype, device=device)
        guards = call.guards
        assert guards is not None
        guards[1].__exit__(None, None, None)
        mine = torch._C._pop_torch_function_stack()
        torch._C._push_on_torch_function_stack(skip)
        call.guards = (guards[0], _Swapped(mine, skip))
        call.skipping = True

    def end(self, call: LeafCall, output: Any, raised: bool) -> None:
        """Called by the scope's post-hook, in the module's scope: the planned ops to the collectors (a call past
        the modes), or the plan checked against the trace (a traced call)."""
        guards = call.guards
        if guards is None:
            trace, self.dispatch.trace = self.dispatch.trace, None
            if not raised and trace is not None:
                # (the outputs it makes to compare are its own ops, not the model's)
                with torch._C._DisableTorchDispatch(), torch._C.DisableTorchFunction():
                    seen = _check(call.steps, trace, output, call.device)
                TRUSTED[call.key] = seen if seen is not None else False
                self.checked += 1
            return
        try:
            if call.skipping:
                self._unskip(call)
            if raised:
                return
            if type(output) is not torch.Tensor:  # (a planned module returns its one tensor)
                raise RuntimeError(f"torchcost: a planned {call.key[0].__name__} returned {type(output).__name__}")
            dispatch = self.dispatch
            ops, memory = dispatch.ops, dispatch.memory
            made = TRUSTED[call.key]
            device = call.device
            steps = call.steps
            number, inputs = call.number, call.inputs
            base: torch.Tensor | None = None
            for i, ((func, args, kwargs, kind), metas) in enumerate(zip(steps, made)):  # type: ignore[arg-type]
                out: Any = output
                if base is not None:  # (a step after the plan's BASE op: it may take the BASE)
                    args = tuple(base if a is BASE else a for a in args)
                    if number is not None:
                        inputs[i] = [base if t is BASE else t for t in inputs[i]]
                if isinstance(kind, torch.Tensor):
                    out = kind
                elif kind is Out.BASE:
                    meta = metas[0]
                    out = base = output.as_strided(meta[0], meta[1], meta[3])
                elif kind is Out.EXTRA:
                    out = self._made(metas[0], device)
                elif kind is Out.TUPLE:
                    out = (output, *[self._made(m, device) for m in metas])
                dispatch.seen += 1
                memo = None if number is None else (number, i)
                ops.on_planned(func, args, kwargs, out, memo)
                if memory is not None:
                    memory.on_op(func, args, kwargs, out, memo, None if number is None else inputs[i])
            self.direct += 1
            unwritten = self.unwritten
            if unwritten is not None:
                self._unwritten(call, output, unwritten)
        finally:
            self.leave(call)

    def _unwritten(self, call: LeafCall, output: torch.Tensor, unwritten: Unwritten) -> None:
        """After a call past the modes in a run that skips kernels: its output holds values not computed where its
        kernel was skipped or ran on such values; a call whose kernel ran teaches :data:`_OUTPUTS` its output."""
        if call.skipping:
            unwritten.skipped += 1
            unwritten.mark(output)
            return
        if call.key not in _MISSED and call.number is not None and call.x is not None:
            learnt = (call.number, _MKLDNN_ENABLED())
            if learnt not in _OUTPUTS:
                from torchcost.collect.ops import priced_work  # (ops imports scope, which imports this module)

                work = sum(priced_work((call.number, i)) or 0 for i in range(len(call.steps)))
                made = _output_kind(call, output)
                _OUTPUTS[learnt] = made if work >= WORTH_SKIPPING else None
                formula = _by_formula(call)
                if formula is not None:
                    _FORMULA[formula[0]] = _FORMULA.get(formula[0], True) and made == formula[1]
        if unwritten and unwritten.holds([t for tensors in call.inputs for t in tensors]):
            unwritten.mark(output)

    def _unskip(self, call: LeafCall) -> None:
        """After the forward of a call run with its kernel skipped: the Recording's function mode back on the stack,
        function handling off again for the collectors' work; ``skipping`` says whether the kernel was skipped (its
        torch function was the one called)."""
        guards = call.guards
        assert guards is not None
        guards[1].__exit__(None, None, None)
        off = torch._C.DisableTorchFunction()
        off.__enter__()
        call.guards = (guards[0], off)
        call.skipping = self.skip.hit
        if not call.skipping:
            _MISSED.add(call.key)  # (the forward called another function: the kernel ran, and will again)

    def _made(self, meta: tuple[Any, ...], device: torch.device) -> torch.Tensor:
        """An output the module does not return, with the metadata seen when its kind was trusted; an empty one (batch
        norm's in eval) made once a run: it holds no storage, so nothing can tell two of them apart."""
        if 0 not in meta[0]:
            return _extra(meta, device)
        made = self._empty.get((meta, device))
        if made is None:
            made = self._empty[(meta, device)] = _extra(meta, device)
        return made

    def abandon(self, call: LeafCall) -> None:
        """A frame left behind by an error that skipped its post-hook: the modes back on, any trace dropped."""
        if call.guards is None:
            self.dispatch.trace = None
        self.leave(call)

    @staticmethod
    def leave(call: LeafCall) -> None:
        """Turn the modes back on after a call past them (also for a frame left behind by an error)."""
        guards, call.guards = call.guards, None
        if guards is not None:
            _modes_on(guards)
