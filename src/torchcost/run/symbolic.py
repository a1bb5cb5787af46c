"""sympy and ``torch.fx.experimental.symbolic_shapes`` left unimported in the command's own process while nothing in
it is symbolic.

Importing ``torch.fx.experimental.symbolic_shapes`` takes 0.3-0.5 s on this project's machine, nearly all of it
sympy. Every training step of a CNN from the command paid it (``torchvision:resnet50 --train``, ``timm:...
--train``, the simulated ranks of ``--fsdp`` and ``--ddp``): a fake tensor mode imports the module and sympy at each
dispatch that misses its cache (``torch._subclasses.fake_tensor``: ``maybe_propagate_real_tensors`` imports sympy,
which it reads only when real tensors are propagated), torch's type promotion asks whether an argument is a
``sympy.Basic``, and torch's meta kernels, Python references and DTensor's sharding rules import the module in their
bodies to ask questions of sizes and flags: ``guard_or_false``, ``sym_eq``, ``expect_true``, ``has_guarding_hint``,
``free_unbacked_symbols``... With no shape environment every size is a plain int and every flag a plain bool, and
each answer is the value itself, a comparison of values, or "no symbols".

So in the ``torchcost`` command's process (cli.py ``console``, beside run/dynamo.py ``own_process``), where nobody
has imported them yet, ``sys.modules`` holds stand-ins (:class:`_StandIn`) for ``sympy``,
``torch.fx.experimental.symbolic_shapes`` and ``torch.utils._sympy.functions``:

* the functions a run asks of the symbolic shapes are the stand-in's own, written for plain values: a plain
  ``bool``, ``int``, tensor with plain sizes and strides, or sequence of them is answered as the real function
  answers it (tests/reliability/test_symbolic_deferred.py compares each with the real one); anything else (a
  ``SymInt``, a ``SymBool``, a value of another type, which the real one may refuse) is handed to the real function,
  imported then;
* ``sympy.Basic`` and ``torch.utils._sympy.functions.Max`` (imported, not called, by torch's dense-layout check)
  are classes of their own (:func:`_lazy`): no object is an instance of a sympy class while sympy was never imported,
  so ``isinstance`` answers False then, and the real class's answer after; a call or an attribute imports the real
  module;
* ``GuardOnDataDependentSymNode``, named in an ``except`` clause of the fake mode's cache, is an exception class of
  the stand-in's own: only a shape environment (the real module) raises the real one, and once the real module is
  imported its class becomes a subclass of the stand-in's, so a clause that named the stand-in's catches it;
* any other name, and any submodule (``import sympy.core``: :class:`_Hook`), imports the real module, which takes
  the stand-in's place in ``sys.modules`` and on its package, and is answered from it. A model library that imports
  them (transformers does, a meta run's dynamo does) gets the real ones that way, at its own import; what was handed
  out before goes on answering as the real one.

A process that calls ``analyze()`` is the user's: nothing is stood in there.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import operator
import sys
import threading
import types
from typing import Any

import torch
from torch.utils._ordered_set import OrderedSet
from typing_extensions import deprecated

__all__ = ["stand_in"]

_NAME = "torch.fx.experimental.symbolic_shapes"
_SYMPY = "sympy"
_FUNCTIONS = "torch.utils._sympy.functions"


_TAKING = threading.Lock()  # (two threads asking at once: one takes the stand-in out, the import system does the rest)


def _real(name: str = _NAME) -> types.ModuleType:
    """The real module: imported now, in its stand-in's place, unless it is already (or waited for, while another
    thread imports it)."""
    stand_in = sys.modules.get(name)
    if not isinstance(stand_in, _StandIn):
        return importlib.import_module(name)
    with _TAKING:
        took = sys.modules.get(name) is stand_in
        if took:
            del sys.modules[name]
            stand_in.retire()
    module = importlib.import_module(name)
    if took and name == _NAME:
        # the real exception becomes a kind of the stand-in's: an ``except`` clause that names the stand-in's (a
        # module imported before, torch.distributed.tensor._decompositions) catches the real one, raised from now on
        module.GuardOnDataDependentSymNode.__bases__ = (GuardOnDataDependentSymNode,)
    return module


class GuardOnDataDependentSymNode(RuntimeError):
    """The stand-in's name for the real module's exception, which only a shape environment raises: once the real
    module is imported, its class is made a subclass of this one (:func:`_real`)."""

    __slots__ = ()  # (the layout of RuntimeError's: a class deriving from it may take this one as its base instead)


def _guard_or(a: Any, default: bool) -> Any:
    return a if type(a) is bool else _real()._guard_or(a, default)


def guard_or_false(a: Any) -> Any:
    return a if type(a) is bool else _real().guard_or_false(a)


def guard_or_true(a: Any) -> Any:
    return a if type(a) is bool else _real().guard_or_true(a)


def statically_known_true(x: Any) -> Any:
    return x if type(x) is bool else _real().statically_known_true(x)


@deprecated("guard_size_oblivious will be removed. Consider using explicit unbacked handling     potentially utilizing "
            "guard_or_false, guard_or_true, or statically_known_true", category=FutureWarning)  # (the real one's)
def guard_size_oblivious(expr: Any) -> Any:
    return expr if type(expr) is bool else _real().guard_size_oblivious(expr)


def expect_true(a: Any, skip: int = 0) -> Any:
    # (the real one reads its caller's frame for a SymBool: it is given the caller's caller's, skip + 1)
    return a if type(a) is bool else _real().expect_true(a, skip + 1)


def is_nested_int(s: Any) -> Any:
    return False if not isinstance(s, torch.SymInt) else _real().is_nested_int(s)


def has_guarding_hint(a: Any) -> Any:
    return True if type(a) in (int, bool, float) else _real().has_guarding_hint(a)


def guarding_hint_or_throw(a: Any) -> Any:
    return a if type(a) in (int, bool) else _real().guarding_hint_or_throw(a)


def optimization_hint(a: Any, fallback: Any = None) -> Any:
    return a if type(a) is int else _real().optimization_hint(a, fallback)


def _plain(x: Any) -> bool:
    return type(x) in (int, bool)


def sym_eq(x: Any, y: Any) -> Any:
    """``==`` of two ints, or of two sequences of them element by element (joined with ``&``, as the real one does)."""
    if isinstance(x, (tuple, list)) and isinstance(y, (list, tuple)):
        if len(x) != len(y):
            return False
        return functools.reduce(operator.and_, map(sym_eq, x, y), True)
    if _plain(x) and _plain(y):
        return x == y
    return _real().sym_eq(x, y)


def sym_and(x: Any, *others: Any) -> Any:
    if _plain(x) and all(map(_plain, others)):
        for y in others:
            x = x & y
        return x
    return _real().sym_and(x, *others)


def sym_or(x: Any, *others: Any) -> Any:
    if _plain(x) and all(map(_plain, others)):
        for y in others:
            x = x | y
        return x
    return _real().sym_or(x, *others)


def compute_unbacked_bindings(shape_env: Any, example_value: Any, old_example_value: Any = None,
                              peek: bool = False) -> Any:
    if shape_env is None:
        return None
    return _real().compute_unbacked_bindings(shape_env, example_value, old_example_value, peek)


def free_unbacked_symbols(x: Any) -> Any:
    return OrderedSet() if _no_symbols(x) else _real().free_unbacked_symbols(x)


def has_free_unbacked_symbols(x: Any) -> Any:
    return False if _no_symbols(x) else _real().has_free_unbacked_symbols(x)


class _Kind(type):
    """The metaclass of a class named but not yet needed (:func:`_lazy`): ``isinstance`` and ``issubclass`` asked of
    the real class once its module is imported, and False before (no instance of it can exist then); anything else
    asked of the class (a call, an attribute), of the real one, its module imported then."""

    _origin: tuple[str, str]

    def _loaded(cls) -> Any:
        module = sys.modules.get(cls._origin[0])
        return None if module is None or isinstance(module, _StandIn) else getattr(module, cls._origin[1])

    def __instancecheck__(cls, instance: Any) -> bool:
        real = cls._loaded()
        return real is not None and isinstance(instance, real)

    def __subclasscheck__(cls, subclass: Any) -> bool:
        real = cls._loaded()
        return real is not None and issubclass(subclass, real)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(getattr(_real(cls._origin[0]), cls._origin[1]), name)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return getattr(_real(cls._origin[0]), cls._origin[1])(*args, **kwargs)


def _lazy(module: str, name: str) -> type:
    """A stand-in for class ``name`` of ``module`` (:class:`_Kind`)."""
    return _Kind(name, (), {"_origin": (module, name), "__module__": __name__})


def _no_symbols(val: Any) -> bool:
    """Whether ``val`` holds no symbolic size (what the real module's ``_iterate_exprs`` walks would yield nothing
    from): plain numbers, strings and None, sequences of them, tensors whose sizes and strides are plain."""
    if val is None or type(val) in (int, float, bool, str):
        return True
    if type(val) in (tuple, list, torch.Size):
        return all(map(_no_symbols, val))
    return isinstance(val, torch.Tensor) and not val._has_symbolic_sizes_strides


def _iterate_exprs(val: Any) -> Any:
    return iter(()) if _no_symbols(val) else _real()._iterate_exprs(val)


def _iterate_nodes(val: Any) -> Any:
    return iter(()) if _no_symbols(val) else _real()._iterate_nodes(val)


_ANSWERED = (GuardOnDataDependentSymNode, _guard_or, guard_or_false, guard_or_true, statically_known_true,
             guard_size_oblivious, expect_true, is_nested_int, has_guarding_hint, guarding_hint_or_throw,
             optimization_hint, sym_eq, sym_and, sym_or, compute_unbacked_bindings, free_unbacked_symbols,
             has_free_unbacked_symbols, _iterate_exprs, _iterate_nodes)


class _StandIn(types.ModuleType):
    """What ``import torch.fx.experimental.symbolic_shapes`` (or ``import sympy``) finds in the command's process
    (module docstring): the functions of ``answers`` on plain values, the real module for anything else."""

    def __init__(self, spec: importlib.machinery.ModuleSpec, answers: tuple[Any, ...] = ()) -> None:
        super().__init__(spec.name)
        self.__spec__ = spec
        self.__file__ = spec.origin
        if spec.submodule_search_locations is not None:
            self.__path__ = list(spec.submodule_search_locations)
        self.__package__ = spec.parent
        self._answered = tuple(answer.__name__ for answer in answers)
        for answer in answers:
            setattr(self, answer.__name__, answer)

    def retire(self) -> None:
        """The real module takes over: a name asked of the stand-in from now on is the real one's (``from sympy
        import *`` on it binds the real ``Basic``); what was handed out before goes on answering as the real one."""
        for name in self._answered:
            self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        real = sys.modules.get(self.__name__)
        if real is not None and not isinstance(real, _StandIn):  # (taken over: the real one answers everything)
            return getattr(real, name)
        if name.startswith("__") and name != "__all__":  # (copy, pickle, inspect probe dunders: no reason to import)
            raise AttributeError(name)
        return getattr(_real(self.__name__), name)  # (``from sympy import *`` reads the real one's ``__all__``)


class _Hook(importlib.abc.MetaPathFinder):
    """A submodule of a stood-in package asked for (``import sympy.core``): the real package is imported first, and
    the submodule then found as usual."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        parent = name.rpartition(".")[0]
        if parent and isinstance(sys.modules.get(parent), _StandIn):
            _real(parent)
        return None


def _install(name: str, answers: tuple[Any, ...] = ()) -> None:
    parent = name.rpartition(".")[0]
    package = importlib.import_module(parent) if parent else None
    spec = (importlib.machinery.PathFinder.find_spec(name, list(package.__path__)) if package is not None
            else importlib.util.find_spec(name))
    if spec is None:
        return
    module = sys.modules[name] = _StandIn(spec, answers)
    if package is not None:  # (``import a.b.c`` of a module in sys.modules binds no parent)
        setattr(package, name.rpartition(".")[2], module)


def stand_in() -> None:
    """Put the stand-ins in ``sys.modules``, where nobody has imported the real modules (the command's process)."""
    if any(name in sys.modules for name in (_SYMPY, _FUNCTIONS, _NAME)):
        return
    sys.meta_path.insert(0, _Hook())
    _install(_SYMPY, (_lazy(_SYMPY, "Basic"),))
    _install(_FUNCTIONS, (_lazy(_FUNCTIONS, "Max"),))
    _install(_NAME, _ANSWERED)
