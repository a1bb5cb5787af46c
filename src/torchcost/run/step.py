"""The training step torchcost measures, and the twin it runs on.

A training step (``analyze(..., mode="train")``) is forward, loss, backward and ``optimizer.step()``. It never runs
on the user's weights or optimizer: it runs on a *twin*, a deep copy of the module tree whose parameters, buffers and
inputs are meta tensors (a model on the meta device; nothing is allocated) or fake tensors that claim the model's
device (a real model; nothing is allocated either, and device-specific choices such as CPU autocast or the CPU flash
attention kernel are made as on that device). Only when a model cannot run on fake tensors (data-dependent Python
control flow) is the twin a real copy.

The step is the steady state of a training loop::

    opt.zero_grad(set_to_none=True)        # gradients start as None
    out = model(*inputs)                   # under autocast when amp= is given
    loss = loss_fn(out)                    # default: first floating tensor of out, .float().pow(2).mean()
    loss.backward()
    opt.step()                             # optimizer state already exists, as after the first step

with ``out`` and ``loss`` referenced until the step ends.
"""

from __future__ import annotations

import contextlib
import copy
import copyreg
import functools
import inspect
import operator
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.optim import optimizer as _optimizer_module

from torchcost.collect.fakeops import META_DEVICE, FakeWrapper, TwinAnswers, fake_constant
from torchcost.collect.probe import KernelMemory
from torchcost.collect.shadows import carry, lent
from torchcost.collect.workspace_cuda import ASSUMED_GPU, CudaDevice
from torchcost.errors import InputError, first_line
from torchcost.trees import first, map_tensors, tensors_in

__all__ = [
    "AMP_DTYPES",
    "OPTIMIZERS",
    "Method",
    "Mode",
    "StepOptions",
    "Twin",
    "TwinMethod",
    "answers_on_twin",
    "default_loss",
    "default_loss_name",
    "loss_terms",
    "make_optimizer",
    "make_twin",
    "optimizer_tensors",
    "plain_step",
    "predictions",
    "warm_optimizer",
]

Mode = Literal["eval", "train"]
# how a run is done: on the model itself ("real"), or on a twin of meta tensors, fake tensors or a real copy
Method = Literal["real", "meta", "fake", "copy"]
TwinMethod = Literal["meta", "fake", "copy"]

# name -> (class, keyword arguments); SGD is the momentum variant (its momentum buffer is the state)
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "adamw": (torch.optim.AdamW, {"lr": 1e-3}),
    "adam": (torch.optim.Adam, {"lr": 1e-3}),
    "sgd": (torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9}),
}
AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
                                      "fp16": torch.float16, "float16": torch.float16}
TARGETS = ("cpu", "cuda")
# Whether a fake twin's fake mode (and a simulated rank's, parallel/runner.py) keeps its own cache of answers. It
# does not: the collectors' fake shortcuts answer a call whose key they have seen, in this run or an earlier one
# (collect/fakeops.py), so what reaches the fake mode is mostly a first call, where its cache only costs (a key, an
# entry, the output rebuilt from the entry). The answers are the same either way (torch's own switch,
# torch._dynamo.config.fake_tensor_cache_enabled).
FAKE_MODE_CACHE = False


@dataclass(frozen=True)
class StepOptions:
    mode: Mode = "eval"
    optimizer: str | torch.optim.Optimizer | None = None  # a name of OPTIMIZERS or an instance; None in eval
    loss_fn: Callable[[Any], torch.Tensor] | None = None
    amp: str | None = None
    target: str = "cpu"
    kernel_memory: KernelMemory | None = None  # None: collect.probe.get_kernel_memory() (default "auto")
    gpu: CudaDevice = ASSUMED_GPU  # the GPU a "cuda" target's kernels run on: analyze()'s hardware=, else an H100

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.amp] if self.amp else None

    @property
    def round_to(self) -> int:
        """The CUDA caching allocator hands out blocks in multiples of 512 bytes."""
        return 512 if self.target == "cuda" else 1


def check_options(mode: str, optimizer: Any, loss_fn: Any, amp: Any, target: Any) -> None:
    if isinstance(optimizer, str) and optimizer.lower() not in OPTIMIZERS:
        raise InputError(f"optimizer must be one of {', '.join(OPTIMIZERS)} or a torch.optim.Optimizer instance; "
                         f"got {optimizer!r}")
    if optimizer is not None and not isinstance(optimizer, (str, torch.optim.Optimizer)):
        raise InputError(f"optimizer must be a name ({', '.join(OPTIMIZERS)}) or a torch.optim.Optimizer instance; "
                         f"got {type(optimizer).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise InputError(f"loss_fn must be callable (it receives the model's output), got {type(loss_fn).__name__}")
    if amp is not None and amp not in AMP_DTYPES:
        raise InputError(f"amp must be one of {', '.join(AMP_DTYPES)} or None; got {amp!r}")
    if target is not None and target not in TARGETS:
        raise InputError(f"target must be one of {', '.join(TARGETS)} or None; got {target!r}")
    if mode == "eval" and (optimizer is not None or loss_fn is not None):
        raise InputError("optimizer= and loss_fn= describe a training step: pass mode='train' as well")


# -- the twin -------------------------------------------------------------------------------------------------------

@dataclass
class Twin:
    """A copy of the module tree on meta / fake tensors (or a real copy), with the inputs moved alongside."""

    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    method: TwinMethod
    device: torch.device  # the device its tensors claim
    params: dict[int, nn.Parameter] = field(default_factory=dict)  # id(user's parameter) -> twin's
    fake_mode: Any = None
    # a simulated distributed rank (torchcost.parallel): its hooks around the run (TwinExtras), and whether a named
    # optimizer may use the foreach implementation (None: torch's default for the target)
    extras: Any = None
    foreach: bool | None = None

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self.fake_mode if self.fake_mode is not None else contextlib.nullcontext()


def make_twin(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], method: TwinMethod,
              device: torch.device) -> Twin:
    """``method`` "meta": meta tensors; "fake": fake tensors on ``device``; "copy": a real deep copy."""
    convert: Callable[[torch.Tensor], torch.Tensor]
    fake_mode = None
    if method == "meta":
        def convert(t: torch.Tensor) -> torch.Tensor:  # (with the values torchcost knows of it: collect/shadows.py)
            return carry(t, meta_like(t))
    elif method == "fake":
        from torch._subclasses.fake_tensor import FakeTensorMode

        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        fake_mode.cache_enabled = FAKE_MODE_CACHE
        converter = fake_mode.fake_tensor_converter

        wrap = FakeWrapper().wrap

        def convert(t: torch.Tensor) -> torch.Tensor:
            if t.device.type == "meta":  # (the converter remembers the user's meta tensor: one fake tensor for it)
                return converter.from_meta_and_device(fake_mode, t, device)
            # a fresh meta tensor nothing else holds: wrapped as the converter wraps it, less its memo
            meta = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=META_DEVICE)
            return cast("torch.Tensor", wrap(fake_mode, meta, device))
    elif method == "copy":
        def convert(t: torch.Tensor) -> torch.Tensor:
            return t.detach().clone()
    else:  # pragma: no cover - internal
        raise ValueError(method)

    with torch.no_grad():
        memo, params = _tensor_memo(list(model.modules()), convert, method)
        twin_model = _deep_copy(model, memo)

    def move(t: torch.Tensor) -> torch.Tensor:
        moved = convert(t.detach())
        if method != "copy":  # (a twin's integer inputs keep the caller's values: collect/shadows.py)
            moved = lent(t, moved)
        return moved.requires_grad_(t.requires_grad) if t.is_floating_point() else moved

    run_device = torch.device("meta") if method == "meta" else device
    twin_args, twin_kwargs = map_tensors((args, kwargs), move)
    return Twin(twin_model, twin_args, twin_kwargs, method, run_device, params, fake_mode)


def _tensor_memo(modules: list[nn.Module], convert: Callable[[torch.Tensor], torch.Tensor], method: TwinMethod
                 ) -> tuple[dict[int, Any], dict[int, nn.Parameter]]:
    """The deep copy's memo of ``modules``' tensors, each ``convert``-ed, and id(parameter) -> its twin: in the
    order of model.parameters(), model.buffers(), then tensors held as attributes (one walk each)."""
    memo: dict[int, Any] = {}
    params: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module._parameters.values():
            if p is not None and id(p) not in memo:
                memo[id(p)] = params[id(p)] = _parameter(convert(p.detach()), p.requires_grad, method)
    for module in modules:
        for b in module._buffers.values():
            if b is not None and id(b) not in memo:
                memo[id(b)] = convert(b)
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and id(value) not in memo:
                memo[id(value)] = convert(value.detach()).requires_grad_(value.requires_grad)
    return memo, params


def shortened_meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on meta tensors (as :func:`make_twin`'s "meta") whose module lists keep their first entry
    alone (a transformer's first layer of each stack): what a probe forward needs to see the code around and in the
    layers run, at a fraction of the whole model's cost. ``model`` is left as it is."""
    modules = list(model.modules())
    with torch.no_grad():
        memo, _ = _tensor_memo(modules, lambda t: carry(t, meta_like(t)), "meta")
        for module in reversed(modules):  # (inner lists first: a kept entry holds its own lists shortened)
            if isinstance(module, nn.ModuleList) and len(module) > 1:
                memo[id(module)] = nn.ModuleList([_deep_copy(module[0], memo)])
        return _deep_copy(model, memo)


# (sizes, strides, dtype) of a strided tensor -> the strides torch.empty_like(t, device="meta") gives it
_META_STRIDES: dict[tuple[Any, ...], tuple[int, ...]] = {}


def meta_like(t: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(t, device="meta")``. On meta that is a Python reference (about 60 us: it works out the
    output's strides from the input's), so for a plain strided tensor its strides are worked out once in the process
    per sizes, strides and dtype, and the tensor made by ``empty_strided`` with them, past any dispatch mode."""
    if t.layout != torch.strided or type(t) not in (torch.Tensor, nn.Parameter):  # (a subclass: its own way)
        return torch.empty_like(t, device="meta")
    key = (t.shape, t.stride(), t.dtype)
    stride = _META_STRIDES.get(key)
    with torch._C._DisableTorchDispatch():  # (which of the two made it is not for a user's mode to see)
        if stride is not None:
            return torch.empty_strided(t.shape, stride, dtype=t.dtype, device=META_DEVICE)
        made = torch.empty_like(t, device="meta")
    if len(_META_STRIDES) >= 4096:
        _META_STRIDES.clear()
    _META_STRIDES[key] = made.stride()
    return made


def _parameter(t: torch.Tensor, requires_grad: bool, method: TwinMethod) -> nn.Parameter:
    """``nn.Parameter(t, requires_grad)``. For a fake tensor, which nn.Parameter detaches first (an op through the
    fake mode, about 100 us), the same done on ``t`` itself: it is fresh, made for this parameter alone."""
    if method != "fake":
        return nn.Parameter(t, requires_grad=requires_grad)
    t.requires_grad_(requires_grad)
    t._is_param = True  # what nn.Parameter sets on a tensor subclass
    return cast("nn.Parameter", t)


_MODULE_MACHINERY = frozenset(vars(nn.Module()))  # what nn.Module.__init__ sets: parameters, submodules, hooks, ...


def _deep_copy(model: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """``copy.deepcopy(model, memo)`` (made by :func:`_tree_copy`). Where that fails on an object that cannot be
    copied (a threading.Lock, an open file, a client), the attributes holding such objects are shared with the twin
    instead, as they are: the twin needs tensors of its own, not its own lock."""
    base = dict(memo)
    try:
        return cast("nn.Module", _tree_copy(model, memo))
    except Exception:  # any failure of a user's __deepcopy__ / __reduce__ lands here
        pass
    shared = dict(base)
    for module in model.modules():
        for attr, value in vars(module).items():
            if attr in _MODULE_MACHINERY or isinstance(value, nn.Module) or id(value) in shared:
                continue
            try:
                copy.deepcopy(value, dict(base))
            except Exception:
                shared[id(value)] = value
    try:
        return copy.deepcopy(model, shared)
    except Exception as exc:
        raise InputError(f"a training step runs on a copy of the model, and {type(model).__name__} cannot be copied: "
                         f"{first_line(exc)}") from exc


# what copy.deepcopy returns as they are (its _deepcopy_atomic types)
_ATOMIC = frozenset({type(None), int, float, bool, complex, bytes, str, type, range, types.BuiltinFunctionType,
                     types.FunctionType, types.CodeType, weakref.ref, property, type(Ellipsis), type(NotImplemented)})
_MISSING = object()


def _copied_like_modules(cls: type) -> bool:
    """Whether copy.deepcopy copies an instance of ``cls`` as it copies a plain nn.Module: ``cls.__new__(cls)``, then
    ``__setstate__`` of a deep copy of ``__getstate__()`` (nn.Module's: ``__dict__`` less ``_compiled_call_impl``)."""
    known = _LIKE_MODULES.get(cls)
    if known is None:
        methods: Any = cls
        known = _LIKE_MODULES[cls] = (
            getattr(cls, "__deepcopy__", None) is None and cls not in copyreg.dispatch_table
            and methods.__reduce_ex__ is object.__reduce_ex__ and methods.__reduce__ is object.__reduce__
            and methods.__getstate__ is nn.Module.__getstate__ and not hasattr(cls, "__getnewargs_ex__")
            and not hasattr(cls, "__getnewargs__") and all("__slots__" not in vars(k) for k in cls.__mro__))
    return known


_LIKE_MODULES: dict[type, bool] = {}


def _tree_copy(value: Any, memo: dict[int, Any]) -> Any:
    """``copy.deepcopy(value, memo)``, made directly for what a module tree holds: modules copied as deepcopy copies
    them (:func:`_copied_like_modules`), dicts, OrderedDicts, lists and sets item by item, deepcopy's atomic values
    and tuples of them kept, anything else handed to copy.deepcopy with the same memo. deepcopy takes each of the
    tree's ~20 attributes a module through its generic reduce protocol; this is several times faster, and the
    result the same objects (each copied once, shared ones shared)."""
    made = memo.get(id(value), _MISSING)
    if made is not _MISSING:
        return made
    kind: Any = type(value)
    if kind in _ATOMIC:
        return value
    if kind is tuple and all(type(item) in _ATOMIC for item in value):
        return value  # (deepcopy returns such a tuple itself)
    if isinstance(value, nn.Module) and _copied_like_modules(kind):
        twin = kind.__new__(kind)
        memo[id(value)] = twin
        state = value.__getstate__()  # (a new dict, nn.Module's: its values are replaced by their copies in place)
        if not all(type(k) is str for k in state):
            state = {_tree_copy(k, memo): v for k, v in state.items()}
        for k, v in state.items():
            held = type(v)
            if held in _ATOMIC:
                continue
            made = memo.get(id(v), _MISSING)
            if made is not _MISSING:
                state[k] = made
            elif (held is dict or (held is OrderedDict and not v.__dict__)) and not v:
                state[k] = memo[id(v)] = held()  # (most of a module's hook dicts)
            else:
                state[k] = _tree_copy(v, memo)
        twin.__setstate__(state)
        return twin
    if (kind is dict or kind is OrderedDict) and not getattr(value, "__dict__", None):
        copied = memo[id(value)] = kind()
        for k, v in value.items():
            copied[_tree_copy(k, memo)] = _tree_copy(v, memo)
        return copied
    if kind is list:
        items: list[Any] = []
        memo[id(value)] = items
        items.extend(_tree_copy(v, memo) for v in value)
        return items
    if kind is set and all(type(item) in _ATOMIC for item in value):
        made = memo[id(value)] = set(value)
        return made
    return copy.deepcopy(value, memo)


# -- optimizer ------------------------------------------------------------------------------------------------------

def make_optimizer(spec: Any, model: nn.Module, twin: Twin, target: str) -> torch.optim.Optimizer | None:
    """The twin's optimizer: a named one with its defaults, or the same class and hyper-parameters as the user's
    instance, over the twin's parameters (and a meta/fake copy of the instance's state). The user's optimizer is
    read, never stepped."""
    if spec is None:
        return None
    foreach = True if target == "cuda" else None  # torch's own default on CUDA is the foreach implementation
    if twin.foreach is not None:
        foreach = twin.foreach
    if isinstance(spec, str):
        cls, defaults = OPTIMIZERS[spec.lower()]
        params = [p for p in twin.model.parameters() if p.requires_grad]
        if not params:
            return None
        kwargs = dict(defaults)
        if foreach is not None:
            kwargs["foreach"] = foreach
        return cls(params, **kwargs)
    groups = []
    for group in spec.param_groups:
        group_params = []
        for p in group["params"]:
            twin_p = twin.params.get(id(p))
            if twin_p is None:  # a parameter the optimizer holds outside the model
                twin_p = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            group_params.append(twin_p)
        options = {k: v for k, v in group.items() if k != "params"}
        if options.get("foreach") is None and foreach:
            options["foreach"] = True
        if twin.foreach is False:
            options["foreach"] = False
        if twin.method == "meta" and options.get("fused"):
            options["fused"] = None  # no fused kernel for meta tensors; its memory is the foreach path's, less temps
            options["foreach"] = True
        groups.append({"params": group_params, **options})
    accepted = inspect.signature(type(spec).__init__).parameters
    defaults = {k: v for k, v in spec.defaults.items() if k in accepted and k not in ("params", "foreach", "fused")}
    twin_opt = type(spec)(groups, **defaults)
    for group, twin_group in zip(spec.param_groups, twin_opt.param_groups):
        for p, twin_p in zip(group["params"], twin_group["params"]):
            state = spec.state.get(p)
            if state and twin.extras is None:  # a simulated rank's parameters are shards: state made afresh
                twin_opt.state[twin_p] = {k: _like(v, twin) for k, v in state.items()}
    made: torch.optim.Optimizer = twin_opt
    return made


def _like(value: Any, twin: Twin) -> Any:
    """A copy of one optimizer-state entry for the twin: real step counters (they live on the CPU and their value
    is read), empty tensors of the same size on the twin's device, deep copies of anything else."""
    if not isinstance(value, torch.Tensor):
        return copy.deepcopy(value)
    if twin.method == "copy":
        return value.detach().clone()
    if value.dim() == 0 and value.device.type == "cpu":  # made under fake tensors, a constant: .item() works
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():
            number = value.item()
        with twin.context():
            return torch.tensor(number, dtype=value.dtype)
    with twin.context():
        return torch.empty_like(value, device=twin.device)


def describe_optimizer(opt: torch.optim.Optimizer | None) -> str:
    if opt is None:
        return ""
    keys = ("lr", "betas", "momentum", "weight_decay", "eps", "foreach", "fused")
    shown = ", ".join(f"{k}={opt.defaults[k]}" for k in keys if k in opt.defaults and opt.defaults[k] is not None)
    return f"{type(opt).__name__}({shown})"


def plain_step(opt: torch.optim.Optimizer) -> bool:
    """Whether ``opt.step()`` runs torch's own code only: a class of torch.optim itself (not a subclass defined
    elsewhere), no step hook of its own or global ones, not differentiable (so outside grad mode). Such a step calls
    no composite op (attention, RNNs) and makes no autograd node: the run's function mode has nothing to do in it."""
    return (type(opt).__module__.startswith("torch.optim.") and not opt._optimizer_step_pre_hooks
            and not opt._optimizer_step_post_hooks and not _optimizer_module._global_optimizer_pre_hooks
            and not _optimizer_module._global_optimizer_post_hooks
            and not any(group.get("differentiable") for group in opt.param_groups))


def warm_optimizer(opt: torch.optim.Optimizer) -> None:
    """Create the optimizer state a first step would (zero gradients, one step), then drop the gradients, so the
    measured step is a steady-state one. On meta/fake tensors this allocates nothing.

    On a twin of meta or fake tensors, with one of torch's optimizers whose state is made per parameter from that
    parameter alone (:data:`_PER_PARAMETER`), the step runs for one parameter of each kind (parameter group, shape,
    strides, dtype, device) and the others get state of the same sizes, made directly from the first one's patterns
    (:func:`_pattern`): on fake tensors each op costs tens of microseconds, and a model's parameters repeat a few
    shapes. What the step left for a kind is remembered for the process (:data:`_WARM`: the state's patterns, by the
    optimizer's class and the group's options, the parameter's kind and the default dtype), so a later twin's
    parameter of a kind seen gets its state made from them, without a step. The state is the one a step over all
    parameters leaves: the same entries, sizes, dtypes and strides, the same values where tensors hold values (the
    CPU step counters), in the same order in ``opt.state``."""
    touched = list(dict.fromkeys(p for group in opt.param_groups for p in group["params"]
                                 if p.requires_grad and not opt.state.get(p) and p.grad is None))
    if not touched:
        return
    before = {id(p) for p in opt.state}
    kinds = _by_kind(opt, touched)
    if kinds is None:  # every parameter stepped, as the optimizer lists them
        _zero_grads(touched)
        try:
            _warm_step(opt)
        finally:
            for p in touched:
                p.grad = None
        return
    first, rest, keys = kinds
    wrap = FakeWrapper().wrap
    made = _remembered(keys, first, wrap)
    stepped = [p for p in first if p not in made]
    if stepped:
        _step_only(opt, stepped)
        _remember(opt, keys, stepped)
    for p, state in made.items():
        if state is not None:
            opt.state[p] = state
    if rest and not _copy_state(opt, rest, wrap):
        _step_only(opt, list(rest))
    _reorder_state(opt, [p for p in touched if id(p) not in before])


# torch's optimizers whose state for a parameter is made from that parameter (and its group's options) alone: the
# same sizes for parameters of the same shape, strides, dtype and device (exact classes: a subclass may differ)
_PER_PARAMETER = tuple(cls for cls in (getattr(torch.optim, name, None) for name in (
    "SGD", "Adam", "AdamW", "RMSprop", "Adamax", "NAdam", "RAdam", "ASGD", "Adadelta", "Rprop", "Adagrad",
    "Adafactor")) if isinstance(cls, type))


def _data_free(t: torch.Tensor) -> bool:
    """A meta tensor, or a fake tensor (plain ones, not DTensors or other subclasses)."""
    from torch._subclasses.fake_tensor import FakeTensor

    kind = type(t)
    return (kind is FakeTensor or (kind in (nn.Parameter, torch.Tensor) and t.device.type == "meta")) and \
        t.layout == torch.strided


def _by_kind(opt: torch.optim.Optimizer, touched: list[nn.Parameter]
             ) -> tuple[list[nn.Parameter], dict[nn.Parameter, nn.Parameter], dict[int, Any]] | None:
    """The parameters to step (the first of each kind), each other parameter -> the first of its kind, and id() of
    each first one -> its key in :data:`_WARM` (None where it has none: an option that does not hash). None where
    the optimizer or the tensors do not allow it (real tensors, subclasses): every parameter is stepped."""
    if type(opt) not in _PER_PARAMETER or not all(_data_free(p) for p in touched):
        return None
    group_of = {id(p): i for i, group in enumerate(opt.param_groups) for p in group["params"]}
    options = [tuple((k, v) for k, v in group.items() if k != "params") for group in opt.param_groups]
    firsts: dict[Any, nn.Parameter] = {}
    rest: dict[nn.Parameter, nn.Parameter] = {}
    keys: dict[int, Any] = {}
    for p in touched:
        kind = (type(p), p.shape, p.stride(), p.storage_offset(), p.dtype, p.device, p.untyped_storage().nbytes())
        group = group_of[id(p)]
        found = firsts.setdefault((group, *kind), p)
        if found is not p:
            rest[p] = found
            continue
        key: Any = (type(opt), options[group], torch.get_default_dtype(), *kind)
        try:
            hash(key)
        except TypeError:  # (a tensor-valued option hashes by identity; a list does not hash)
            key = None
        keys[id(p)] = key
    return list(firsts.values()), rest, keys


# a parameter's state, entry by entry: (its name, its pattern: :func:`_pattern`)
_Patterns = tuple[tuple[str, tuple[Any, ...]], ...]
# a warm-up step's state for one kind of parameter (:func:`_by_kind`'s key) -> its entries' patterns, or None: the
# step made no state for it
_WARM: dict[Any, _Patterns | None] = {}
_WARM_MAX = 4096


def _remember(opt: torch.optim.Optimizer, keys: dict[int, Any], stepped: list[nn.Parameter]) -> None:
    """Keep the pattern of the state the warm-up step left for each of ``stepped`` (none where an entry has no
    pattern)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():  # (a twin's fake mode may be on: the copies are made here, not by it)
        for p in stepped:
            key = keys.get(id(p))
            if key is None:
                continue
            state = opt.state.get(p)  # (None: the step made none, as SGD without momentum)
            patterns = None if state is None else _patterns_of(state)
            if state is None or patterns is not None:
                if len(_WARM) >= _WARM_MAX:
                    _WARM.clear()
                _WARM[key] = patterns


def _remembered(keys: dict[int, Any], first: list[nn.Parameter], wrap: Callable[[Any, torch.Tensor, torch.device], Any]
                ) -> dict[nn.Parameter, dict[str, Any] | None]:
    """The state of each of ``first`` whose kind an earlier warm-up stepped, made from its patterns (None: that step
    made no state for it)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    made: dict[nn.Parameter, dict[str, Any] | None] = {}
    with unset_fake_temporarily():  # (a twin's fake mode may be on: the tensors are made here, not by it)
        for p in first:
            key = keys.get(id(p))
            if key is None or key not in _WARM:
                continue
            patterns = _WARM[key]
            if patterns is None:
                made[p] = None
                continue
            state = _state_from(patterns, p, wrap)
            if state is not None:
                made[p] = state
    return made


def _step_only(opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    """The warm-up step over ``params`` alone: they get zero gradients, the optimizer's groups list only them for
    the step, and both are put back."""
    wanted = {id(p) for p in params}
    saved = [group["params"] for group in opt.param_groups]
    _zero_grads(params)
    try:
        for group in opt.param_groups:
            if any(id(p) not in wanted for p in group["params"]):
                group["params"] = [p for p in group["params"] if id(p) in wanted]
        _warm_step(opt)
    finally:
        for group, listed in zip(opt.param_groups, saved):
            group["params"] = listed
        for p in params:
            p.grad = None


def _zero_grads(params: list[nn.Parameter]) -> None:
    """Zero gradients for the warm-up step, answered from metadata where the twin's fake mode is on
    (:func:`answers_on_twin`): on a simulated rank's DTensors each ``zeros_like`` otherwise goes through the fake
    mode's own dispatch, about 0.4 ms a parameter."""
    with answers_on_twin():
        for p in params:
            p.grad = torch.zeros_like(p)


def _copy_state(opt: torch.optim.Optimizer, rest: dict[nn.Parameter, nn.Parameter],
                wrap: Callable[[Any, torch.Tensor, torch.device], Any]) -> bool:
    """Give each parameter of ``rest`` state like its first-of-kind's (made from its patterns, read once a kind);
    False (nothing given) where some entry cannot be made that way."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    made: dict[nn.Parameter, dict[str, Any]] = {}
    patterns: dict[int, _Patterns | None] = {}
    with unset_fake_temporarily():  # (a twin's fake mode may be on: the tensors are made here, not by it)
        for p, like in rest.items():
            if like not in opt.state:  # (the step made no state for it)
                continue
            if id(like) not in patterns:
                patterns[id(like)] = _patterns_of(opt.state[like])
            found = patterns[id(like)]
            state = None if found is None else _state_from(found, like, wrap)
            if state is None:
                return False
            made[p] = state
    for p, state in made.items():
        opt.state[p] = state
    return True


_SMALL = 64  # bytes: real state tensors a step makes on a data-free twin are scalars (counters, rates)
def _pattern(value: Any) -> tuple[Any, ...] | None:
    """What a state entry like ``value`` is made from (:func:`_from_pattern`), holding no tensor of a fake mode:
    ("value", a copy) for anything but a tensor; ("real", a copy) for a small real tensor; ("constant", a copy of
    the value, metadata) for a fake tensor carrying its value; ("empty", metadata, fake or meta) for a meta or fake
    tensor. None when no entry like it can be made so."""
    if not isinstance(value, torch.Tensor):
        return ("value", copy.deepcopy(value))
    from torch._subclasses.fake_tensor import FakeTensor

    kind = type(value)
    if value.layout != torch.strided or value.requires_grad or value.storage_offset() != 0:
        return None
    if kind is torch.Tensor and value.device.type != "meta":
        return ("real", value.clone()) if value.untyped_storage().nbytes() <= _SMALL and value.is_contiguous() \
            else None
    if kind is not FakeTensor and not (kind is torch.Tensor and value.device.type == "meta"):
        return None
    meta = (value.shape, value.stride(), value.dtype, value.device)
    constant = cast("FakeTensor", value).constant if kind is FakeTensor else None
    if constant is not None:
        # a fake tensor that carries its value (a step counter made from a Python number, as fake tensors keep
        # small constants): a copy that carries it too, as the fake mode makes one, so .item() reads it
        if type(constant) is not torch.Tensor or constant.untyped_storage().nbytes() > _SMALL:
            return None
        return ("constant", constant.clone(), meta)
    if torch.empty_strided(meta[0], meta[1], dtype=meta[2], device="meta").untyped_storage().nbytes() != \
            value.untyped_storage().nbytes():
        return None
    return ("empty", meta, kind is FakeTensor)


def _from_pattern(pattern: tuple[Any, ...], anchor: Any, wrap: Callable[[Any, torch.Tensor, torch.device], Any]
                  ) -> Any:
    """A new state entry from its :func:`_pattern`, on its own storage; a fake one in the fake mode of ``anchor`` (a
    fake tensor of the run: the parameter the state is for). None when it comes out unlike the pattern."""
    kind = pattern[0]
    if kind == "value":
        return copy.deepcopy(pattern[1])
    if kind == "real":
        return pattern[1].clone()
    if kind == "constant":
        made = fake_constant(anchor.fake_mode, pattern[1].clone(), wrap)
        return made if (made.shape, made.stride(), made.dtype, made.device) == pattern[2] else None
    shape, stride, dtype, device = pattern[1]
    meta = torch.empty_strided(shape, stride, dtype=dtype, device=META_DEVICE)
    # (a fake one as the converter's from_meta_and_device makes it, less its memo of a fresh meta tensor that
    # nothing else holds)
    return wrap(anchor.fake_mode, meta, device) if pattern[2] else meta


def _patterns_of(state: dict[str, Any]) -> _Patterns | None:
    """The patterns of a parameter's state entries; None where some entry has none."""
    patterns = tuple((name, _pattern(value)) for name, value in state.items())
    return None if any(pattern is None for _, pattern in patterns) else cast("_Patterns", patterns)


def _state_from(patterns: _Patterns, anchor: Any, wrap: Callable[[Any, torch.Tensor, torch.device], Any]
                ) -> dict[str, Any] | None:
    """A parameter's state made from its entries' patterns (fake entries in ``anchor``'s fake mode); None where some
    entry comes out unlike its pattern."""
    state = {name: _from_pattern(pattern, anchor, wrap) for name, pattern in patterns}
    return state if all(value is not None for value in state.values()) else None


def _reorder_state(opt: torch.optim.Optimizer, touched: list[nn.Parameter]) -> None:
    """``opt.state`` in the order a step over all parameters fills it: the state there was before, then that of
    the parameters stepped (``touched``, those without state before), in the order of the groups."""
    moved = [(p, opt.state.pop(p)) for p in touched if p in opt.state]
    for p, state in moved:
        opt.state[p] = state


def _warm_step(opt: torch.optim.Optimizer) -> None:
    """The warm-up step, with torch's multi-tensor (foreach) kernels where the optimizer offers them: the state it
    leaves is the same as a single-tensor step's (the moments, the step count), and on fake tensors it costs a few
    ops for all parameters instead of a few per parameter. Where foreach refuses the tensors (plain tensors beside
    DTensors), the step runs as configured; a state the refused attempt made is then stepped once more, which on a
    twin changes no size."""
    with answers_on_twin():
        _foreach_first(opt)


@contextlib.contextmanager
def answers_on_twin() -> Any:
    """Where a twin's fake mode is the only dispatch mode on: collect/fakeops.py's TwinAnswers above it, for what
    runs on the twin outside the collectors (the optimizer's warm-up step and its zero gradients; a simulated rank's
    ``to_empty`` and FSDP2's lazy initialisation, parallel/runner.py). ``torch.tensor(x)`` (a step counter) is then
    made as the fake mode makes it, without its converter's import of ``torch._dynamo.source`` (run/dynamo.py), and
    the ops are answered from metadata where the fake shortcuts know them (a new parameter's ``zeros_like`` state of
    a shape seen), and learned for the measured step where not. Anywhere else, nothing is put on."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if torch._C._len_torch_dispatch_stack() == 1 and \
            type(torch._C._get_dispatch_stack_at(0)) is FakeTensorMode:
        with TwinAnswers():
            yield
    else:
        yield


def _foreach_first(opt: torch.optim.Optimizer) -> None:
    groups = [g for g in opt.param_groups if "foreach" in g and not g["foreach"]]
    saved = [g["foreach"] for g in groups]
    try:
        for g in groups:
            g["foreach"] = True
        opt.step()
        return
    except (RuntimeError, TypeError, NotImplementedError):
        if not groups:
            raise
    finally:
        for g, value in zip(groups, saved):
            g["foreach"] = value
    opt.step()


def optimizer_tensors(opt: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    if opt is None:
        return []
    return [t for state in opt.state.values() for t in tensors_in(dict(state))]


# -- loss -----------------------------------------------------------------------------------------------------------

def default_loss(out: Any) -> torch.Tensor:
    """The step's loss when no ``loss_fn`` is given, by what the output is (:func:`default_loss_name` names it):

    * a dict of losses (:func:`loss_terms`: a torchvision detection model in training): their sum, in the dict's
      order;
    * a list or tuple of predictions (:func:`predictions`: RAFT's flow after each of its refinements): the sum of
      their mean squares in float32, in order;
    * else the output's first floating tensor: itself when it is a scalar (a loss the model computed), else its mean
      square in float32.

    The first value alone of the first two would leave the other losses' heads, or the later refinements, out of
    the backward, where the model's own training loss takes them all."""
    terms = loss_terms(out)
    if terms is not None:
        return functools.reduce(operator.add, terms)
    several = predictions(out)
    if several is not None:
        return functools.reduce(operator.add, (t.float().pow(2).mean() for t in several))
    t = first(out, torch.Tensor.is_floating_point)
    if t is None:
        raise InputError("the model's output holds no floating-point tensor to make a loss from; pass loss_fn=")
    return t if t.dim() == 0 else t.float().pow(2).mean()


def loss_terms(out: Any) -> list[torch.Tensor] | None:
    """The values of ``out`` where it is a non-empty mapping whose values are all floating-point scalar tensors (the
    dict of losses a torchvision detection model returns in training); else None."""
    if not isinstance(out, Mapping) or not out:
        return None
    values = list(out.values())
    if all(isinstance(v, torch.Tensor) and v.dim() == 0 and v.is_floating_point() for v in values):
        return values
    return None


def predictions(out: Any) -> list[torch.Tensor] | None:
    """The items of ``out`` where it is a list or tuple of two or more floating-point tensors of one shape and dtype,
    not scalars (several predictions of one thing: RAFT's flow after each refinement, deep supervision's outputs);
    else None. A tuple of tensors of different shapes (a tuple-returning transformers model, an RNN's output and
    state) keeps the first-tensor rule."""
    if type(out) not in (list, tuple) or len(out) < 2:
        return None
    head = out[0]
    if not isinstance(head, torch.Tensor) or not head.is_floating_point() or head.dim() == 0:
        return None
    if all(isinstance(t, torch.Tensor) and t.shape == head.shape and t.dtype == head.dtype for t in out):
        return list(out)
    return None


def default_loss_name(out: Any) -> str:
    """How the report names the default loss of ``out``, as :func:`default_loss` takes it."""
    if loss_terms(out) is not None:
        return SUMMED_LOSS_NAME
    if predictions(out) is not None:
        return PREDICTIONS_LOSS_NAME
    t = first(out, torch.Tensor.is_floating_point)
    return SCALAR_LOSS_NAME if t is not None and t.dim() == 0 else DEFAULT_LOSS_NAME


SUMMED_LOSS_NAME = "sum(out.values())"
PREDICTIONS_LOSS_NAME = "sum(o.float().pow(2).mean() for o in out)"
SCALAR_LOSS_NAME = "the output's scalar, as it is"
DEFAULT_LOSS_NAME = "out.float().pow(2).mean()"

