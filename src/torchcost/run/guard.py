"""Leaving the model as it came in (DESIGN #6), also when the forward raises. docs/architecture.md, "Guarantees: the
model", lists what is restored; tests/test_safety.py and tests/reliability/test_odd_models.py are the specification.

A run on the model itself restores, for every module of ``model.modules()``: each attribute of ``module.__dict__``
(reassigned, added or deleted), the contents of its list, dict and set attributes (one level: ``_parameters``,
``_buffers``, ``_modules`` and the hook dicts among them), the ``requires_grad`` flag of its parameters, and the values
of its parameters, buffers and tensor attributes. Values are copied on write: :class:`RunWatch`, called by the
collectors' dispatch mode before each op (one dispatch mode, not a second one: a mode costs every op a Python round
trip), saves a tensor's values the first time an operator is about to write into its storage, so a forward that writes
nothing costs no copy. A run on a twin needs none of this: the user's module is only read.

The RNG: a twin of meta or fake tensors draws nothing from torch's generators for its own tensors, so its run leaves
them alone (other threads' draws are never rewound). A run on real tensors (the model itself, or a real copy) saves
the states of the CPU's and the run device's default generators, and puts them back only where a random op of the run
drew from them. A run on meta tensors (the model on meta, or a meta twin) may still draw on the CPU, where its forward
makes a random number there itself (LayerDrop's ``torch.rand([])``): a :class:`DrawWatch` notes it, and the CPU's
state is put back. A fake twin's run draws such numbers on the CPU for its fake tensors (collect/shadows.py
``Shadows._drawn``), and its shadows put the CPU's state back when the run ends. numpy's global generator and
Python's ``random`` module, which forwards draw from too (wav2vec2's SpecAugment masks come from ``np.random``), are
put back after every run where it moved them (:func:`other_generators_kept`).
"""

from __future__ import annotations

import contextlib
import operator
import random
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchcost.formulas.registry import written_arguments
from torchcost.run.failures import quiet_meta_failures
from torchcost.run.step import Twin

__all__ = ["RunWatch", "guarded", "kept", "preserved", "quiet_fastpaths"]

_MISSING = object()
# ops that write batch norm's running statistics (arguments 3 and 4) when ``training`` (argument 5) is true,
# although their schema does not declare it
_BATCH_NORMS = frozenset({"aten::native_batch_norm", "aten::cudnn_batch_norm", "aten::miopen_batch_norm",
                          "aten::_batch_norm_impl_index"})


_Container = list[Any] | dict[Any, Any] | set[Any]


@dataclass
class _ModuleState:
    module: nn.Module
    attrs: dict[str, object]
    contents: dict[str, _Container | None]  # attribute -> a copy of a list, dict or set attribute (None: empty)
    tensors: list[torch.Tensor]  # parameters, buffers and tensor attributes
    grad_flags: list[tuple[nn.Parameter, bool]]


_PLAIN = frozenset({bool, int, float, str, type(None), tuple})  # attribute types with no contents to keep


def _state(module: nn.Module) -> _ModuleState:
    attrs = module.__dict__.copy()
    contents: dict[str, _Container | None] = {}
    tensors = [t for t in (*module._parameters.values(), *module._buffers.values()) if t is not None]
    for attr, value in attrs.items():
        kind = type(value)
        if kind is dict or kind is OrderedDict:  # the common cases first: torch's own dicts, and plain values
            contents[attr] = dict.copy(value) if value else None
        elif kind in _PLAIN:
            continue
        elif isinstance(value, list):  # the builtin methods, not a subclass's own (they may refuse, or do more)
            contents[attr] = list.copy(value) if value else None
        elif isinstance(value, dict):
            contents[attr] = dict.copy(value) if value else None
        elif isinstance(value, set):
            contents[attr] = set.copy(value) if value else None
        elif isinstance(value, torch.Tensor):
            tensors.append(value)
    flags = [(p, p.requires_grad) for p in module._parameters.values() if p is not None]
    return _ModuleState(module, attrs, contents, tensors, flags)


def _restore(s: _ModuleState) -> None:
    now = s.module.__dict__
    # the common case, checked at C speed: the same attributes, in the same order, holding the same objects
    if not (now.keys() == s.attrs.keys() and all(map(operator.is_, now.values(), s.attrs.values()))):
        if now.keys() != s.attrs.keys():
            for attr in now.keys() - s.attrs.keys():
                del now[attr]
        for attr, value in s.attrs.items():
            if now.get(attr, _MISSING) is not value:
                now[attr] = value
    for attr, saved in s.contents.items():
        container = s.attrs[attr]
        if saved is None and container:
            _refill(container, [])
        elif saved is not None and not _same(container, saved):
            _refill(container, saved)
    for p, flag in s.grad_flags:
        if p.requires_grad != flag:
            p.requires_grad_(flag)


def _same(container: object, saved: _Container) -> bool:
    """Whether a list, dict or set holds the same objects as its saved copy (compared by identity)."""
    if not isinstance(container, (list, dict, set)) or len(container) != len(saved):
        return False
    if isinstance(container, dict) and isinstance(saved, dict):
        return list(container) == list(saved) and all(map(operator.is_, container.values(), saved.values()))
    if isinstance(container, set):
        return {id(x) for x in container} == {id(x) for x in saved}
    return all(map(operator.is_, container, saved))


def _refill(container: object, saved: _Container) -> None:
    if isinstance(container, list):
        list.__setitem__(container, slice(None), saved)
    elif isinstance(container, OrderedDict):
        # OrderedDict's own methods (torch's hook dicts are OrderedDicts): dict's would empty the table and leave the
        # OrderedDict's list of keys behind, and every later iteration (each forward's hooks) raise KeyError
        OrderedDict.clear(container)
        for key, value in saved.items() if isinstance(saved, dict) else ():  # (saved: a plain dict copy, or [])
            OrderedDict.__setitem__(container, key, value)
    elif isinstance(container, dict):
        dict.clear(container)
        dict.update(container, saved)
    elif isinstance(container, set):
        set.clear(container)
        set.update(container, saved)


def _storage_key(t: torch.Tensor) -> int:
    """The address of a tensor's storage; 0 for one without data (meta, sparse, an empty storage)."""
    try:
        return 0 if t.device.type == "meta" else t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return 0


_IDLE: tuple[tuple[tuple[int, str, bool], ...], bool, bool] = ((), False, False)  # writes nothing, draws nothing


def _uses_default_generator(args: Any, kwargs: dict[str, Any]) -> bool:
    """Whether a random op draws from torch's default generator (it was given no generator of its own)."""
    generators = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Generator)]
    return not generators or any(g is torch.default_generator for g in generators)


class RunWatch:
    """During a run on real tensors, told of each op before it runs (by the Recording's dispatch mode): saves the
    values of the watched tensors on a storage the first time an operator is about to write into it, and notes
    whether a random op drew from a default generator."""

    def __init__(self, watched: dict[int, list[torch.Tensor]]) -> None:
        self.watched = watched  # storage address -> the tensors on it
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.drew = False
        self._keep: list[Any] = []  # the ops keyed by id() in idle and _ops, held so that no id is reused
        # id() of the ops that neither write nor draw (most of them): nothing to do; the dispatch mode reads this set
        # to skip the call (ops are keyed by id() because OpOverload hashes in Python)
        self.idle: set[int] = set()
        # id(op) -> what any other op may do to the watched tensors: the arguments it writes, whether it draws random
        # numbers, whether it is a batch norm (which writes its running statistics undeclared)
        self._ops: dict[int, tuple[tuple[tuple[int, str, bool], ...], bool, bool]] = {}

    def __call__(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if id(func) in self.idle:  # the hot path: most ops
            return
        known = self._ops.get(id(func))
        if known is None:
            known = (written_arguments(func._schema), torch.Tag.nondeterministic_seeded in func.tags,
                     func._schema.name in _BATCH_NORMS)
            self._keep.append(func)
            if known == _IDLE:
                self.idle.add(id(func))
                return
            self._ops[id(func)] = known
        writes, seeded, batch_norm = known
        if seeded and not self.drew:
            self.drew = _uses_default_generator(args, kwargs)
        if writes or batch_norm:
            written = [args[p] if p < len(args) else kwargs.get(name) for p, name, _ in writes]
            if batch_norm and len(args) > 5 and args[5]:
                written += args[3:5]
            for value in written:
                for t in (value if isinstance(value, (list, tuple)) else (value,)):
                    if isinstance(t, torch.Tensor):
                        self._save(t)

    def _save(self, t: torch.Tensor) -> None:
        tensors = self.watched.pop(_storage_key(t), None)
        if tensors:
            self.saved.extend((w, w.detach().clone()) for w in tensors)

    def restore(self) -> None:
        for tensor, value in self.saved:  # (inference_mode(False) turns grad mode on: no_grad goes inside it)
            with torch.inference_mode(tensor.is_inference()), torch.no_grad():
                tensor.copy_(value)
        self.saved.clear()


# the ids of the ops seen never to draw random numbers, for the process: a :class:`DrawWatch`'s ``idle`` (the ops
# themselves kept in _QUIET_OPS, so that no id is reused)
_QUIET: set[int] = set()
_QUIET_OPS: list[Any] = []


class DrawWatch:
    """During a run on meta tensors (the model on meta, or a meta twin), told of each op not known to be quiet:
    notes whether a random op drew from the CPU's default generator, which a meta run can still do where its
    forward makes a random number on the CPU itself (transformers' LayerDrop, ``torch.rand([])`` with no device).
    An op that does not draw is told once and then never again (``idle``), so it costs a set lookup an op."""

    idle = _QUIET

    def __init__(self) -> None:
        self.drew = False

    def __call__(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if torch.Tag.nondeterministic_seeded not in func.tags:
            _QUIET.add(id(func))
            _QUIET_OPS.append(func)
        elif not self.drew:
            self.drew = _on_real_cpu(args, kwargs) and _uses_default_generator(args, kwargs)


def _on_real_cpu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a random op's result is a real CPU tensor: its tensor arguments' (an in-place fill, ``rand_like``),
    else its ``device`` (a factory: None is the CPU at the dispatcher)."""
    tensor = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
    if tensor is not None:
        return type(tensor) in (torch.Tensor, nn.Parameter) and tensor.device.type == "cpu"
    device = kwargs.get("device")
    return device is None or torch.device(device).type == "cpu"


def _watched(states: list[_ModuleState]) -> dict[int, list[torch.Tensor]]:
    """The modules' parameters, buffers and tensor attributes that hold data, by storage address."""
    watched: dict[int, list[torch.Tensor]] = {}
    seen: set[int] = set()
    for s in states:
        for t in s.tensors:
            if id(t) not in seen:
                seen.add(id(t))
                key = _storage_key(t)
                if key:
                    watched.setdefault(key, []).append(t)
    return watched


def _rng_put_back(device: torch.device) -> Callable[[], None]:
    """A function that puts back the generator states of now: the CPU's, and the run device's for an accelerator."""
    cpu = torch.get_rng_state()
    backend = getattr(torch, device.type, None) if device.type not in ("cpu", "meta") else None
    if backend is None or not hasattr(backend, "get_rng_state"):
        return lambda: torch.set_rng_state(cpu)
    index = device.index if device.index is not None else backend.current_device()
    state = backend.get_rng_state(index)

    def put_back() -> None:
        torch.set_rng_state(cpu)
        backend.set_rng_state(state, index)

    return put_back


@contextlib.contextmanager
def preserved(model: nn.Module | None, device: torch.device,
              modules: list[nn.Module] | None = None) -> Iterator[RunWatch | DrawWatch]:
    """Around a run on real tensors: restore every module's attributes, container contents, grad flags and tensor
    values on the way out (``model``: None for a twin that is a real copy, which nobody else holds), and the RNG
    states where the run drew from them. Yields the :class:`RunWatch` the run's dispatch mode must call before
    each op; on meta tensors with nothing of data to watch, a :class:`DrawWatch`, which notes only the CPU's
    draws. ``modules``: ``list(model.modules())`` when the caller has it already."""
    if model is None:
        states = []
    else:
        states = [_state(module) for module in (modules if modules is not None else model.modules())]
    watch = RunWatch(_watched(states))
    put_back = _rng_put_back(device)
    draws = DrawWatch() if not watch.watched and device.type == "meta" else None  # (nothing of data to watch)
    try:
        yield watch if draws is None else draws
    finally:
        try:
            watch.restore()
            if watch.drew or (draws is not None and draws.drew):
                put_back()
        finally:
            for s in states:
                _restore(s)


@contextlib.contextmanager
def kept(model: nn.Module) -> Iterator[None]:
    """Around a run on a twin: every module's attributes, list, dict and set contents and grad flags put back on the
    way out, as :func:`preserved` puts them back (tensor values aside: a twin's tensors are not the model's). A twin
    shares what a deep copy keeps as it is, functions among them, so code run on the twin can still write into the
    model: a forward hook whose closure holds the model and stores each output in a dict of the model's."""
    states = [_state(module) for module in model.modules()]
    try:
        yield
    finally:
        for s in states:
            _restore(s)


@contextlib.contextmanager
def other_generators_kept() -> Iterator[None]:
    """While inside, draws from numpy's global generator (where numpy is imported) and Python's ``random`` module
    are made as always; on the way out, each is put back to its state on the way in where it moved, so that the
    caller's next draw is the one it would have been, and a second analysis draws what the first drew."""
    numpy_random = getattr(sys.modules.get("numpy"), "random", None)
    numpy_state = numpy_random.get_state() if numpy_random is not None else None
    python_state = random.getstate()
    try:
        yield
    finally:
        if random.getstate() != python_state:
            random.setstate(python_state)
        if numpy_random is not None and _numpy_moved(numpy_state, numpy_random.get_state()):
            numpy_random.set_state(numpy_state)


def _numpy_moved(before: Any, after: Any) -> bool:
    """Whether numpy's legacy generator state ``after`` differs from ``before`` (name, key array, position, the
    Gaussian cache)."""
    return bool(before[0] != after[0] or before[2:] != after[2:] or (before[1] != after[1]).any())


@contextlib.contextmanager
def quiet_fastpaths() -> Iterator[None]:
    """Send nn.MultiheadAttention / TransformerEncoderLayer down their ordinary path (the same arithmetic, priced op
    by op) instead of the fused inference kernels, so eval, train and meta runs count the same ops."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "get_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


@contextlib.contextmanager
def guarded(model: nn.Module, twin: Twin | None, run_device: torch.device,
            modules: list[nn.Module] | None = None) -> Iterator[RunWatch | DrawWatch | None]:
    """Everything one run needs around it: the model preserved (when it runs itself; only the RNG for a real copy),
    quiet fast paths, and the twin's fake tensor mode, with its log of a failing meta kernel quieted (the failure
    becomes one error naming the layer, run/failures.py). Meta and fake twins touch neither the model nor the RNG,
    but a meta twin's forward may draw on the CPU itself: its run is preserved as one on meta tensors. Yields the
    watch to hand to the Recording (:func:`preserved`'s; None for a fake twin): only ops it is told of are copied on
    write, so every op of the run must run under that Recording. ``modules``: ``list(model.modules())``
    when the caller has it already."""
    preserve: contextlib.AbstractContextManager[RunWatch | DrawWatch | None]
    if twin is None or twin.method == "copy":
        preserve = preserved(model if twin is None else None, run_device, modules)
    elif twin.method == "meta":  # (nothing of the model's to restore: only the CPU's draws, a DrawWatch's)
        preserve = preserved(None, torch.device("meta"))
    else:
        preserve = contextlib.nullcontext()
    fake = twin.context() if twin is not None else contextlib.nullcontext()
    quiet = quiet_meta_failures() if twin is not None and twin.fake_mode is not None else contextlib.nullcontext()
    with preserve as watch, other_generators_kept(), quiet_fastpaths(), quiet, fake:
        yield watch

