"""``torch._dynamo`` left unimported while a run holds the lock, where nobody has imported it yet.

Importing ``torch._dynamo`` takes about 2 s on this project's machine (sympy, the symbolic shapes, the bytecode
tracer), and a run that does not compile anything needed it for three things only:

* ``FakeTensorMode()`` (a training step's twin, a parallel run) reads ``torch._dynamo.config`` at construction and
  at a cache miss: a leaf module of settings, light to import on its own;
* ``torch._disable_dynamo`` (the wrapper of torch's Python references, the meta kernels of ``relu``, ``where`` and
  others) imports the package at its first call to ask ``torch._dynamo.disable(fn)``, whose only effect is to stop
  a compilation from tracing into ``fn``: with the package never imported in the process, no compilation can be
  under way, so calling ``fn`` itself is the same;
* torch's optimizers call ``torch._dynamo.graph_break()`` around each step, which does nothing outside a
  compilation.

So while :func:`deferred` is active (``run/concurrency.py``'s ``exclusive``, around every analysis), and only if
``torch._dynamo`` is not in ``sys.modules`` when it starts, ``sys.modules["torch._dynamo"]`` holds a stand-in
package (:class:`_StandIn`): its submodule ``config`` is the real one, imported from the package's folder, and
``disable(fn, ..., wrapping=False)``, the call ``torch._disable_dynamo`` makes, returns ``fn``; ``graph_break()``
does nothing and ``is_compiling()`` answers as the real one does outside a trace. Anything else asked
of it (an attribute, a submodule, ``disable`` called any other way) imports the real package first and answers from
it (:meth:`_StandIn.materialize`): a run that does need dynamo gets it, as before, at the time it asks.

On the way out the stand-in leaves ``sys.modules``, the ``__dynamo_disable`` attributes ``torch._disable_dynamo``
cached on torch's functions from its answers are deleted (a later call asks the real package), and the import hook
goes: the process is as it was, but for ``torch._dynamo.config``, which stays imported (the real package, imported
later, takes it as its own; the next run's stand-in is given it).

One more path imports the package on a twin: the fake mode's converter, making a fake tensor of a real one, imports
``torch._dynamo.source`` to name it. ``torch.tensor(x)`` under the fake mode (an optimizer's step counter
``torch.tensor(0.0)``, a constant in a forward) goes that way; collect/fakeops.py's ``lifted`` makes that tensor as
the converter does, without it. A real tensor handed to an op on fake tensors still goes through the converter,
and the package is imported then. Measured in round 23 of issue 16 (docs/benchmarks.md).

The resolver's import of a model library (resolve/common.py ``require``) runs under the same stand-in
(:func:`importing_library`): torchvision imports ``torch._dynamo.utils`` for one function, ``is_compile_supported``,
bound at its import (``torchvision.ops.roi_align``, which every model module pulls in), and ``from
torch._dynamo.utils import is_compile_supported`` then finds :func:`is_compile_supported`, which imports the real
one at its first call. ``torchcost torchvision:resnet50`` no longer imports the package (round 24). A library that
asks for more (timm's modules call ``torch.compiler.disable`` as a decorator at import, which in a user's process
must return the real wrapper) gets the real package, as before.

The ``torchcost`` command owns its process (:func:`own_process`, cli.py ``console``): nothing compiles in it before
it exits. There the stand-in answers the rest of what transformers and timm ask at their import: the leaf submodule
``_trace_wrapped_higher_order_op``, ``assume_constant_result``, ``allow_in_graph`` (made on the real package if it
is ever imported under a stand-in, :func:`_settle`) and ``torch.compiler.disable`` (:func:`_lazily_disabled`, which
calls the function itself while the package was never imported, the real wrapper after; FSDP2's hooks call
``torch._dynamo.disable(hook)(...)`` at each call). ``torchcost hf:...`` and ``timm:...`` no longer import the
package: about 1 s less of 8-10 s (round 42 of issue 16, docs/benchmarks.md).

In any process, ``torch._dynamo.trace_rules.clear_lru_cache()`` (``init_process_group``, a simulated rank's world,
calls it wherever ``torch._dynamo`` is in ``sys.modules``) is answered by the stand-in (:class:`_TraceRules`): with the
package never imported there is no cache to clear. So is ``with torch._dynamo.disable_nested_graph_breaks():``
(DeviceMesh's sub-meshes, a 2-D mesh of FSDP2 x TP): outside a compilation it is a patch of the config the stand-in
holds.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch

__all__ = ["deferred", "importing_library", "is_compile_supported", "own_process", "owned"]

_NAME = "torch._dynamo"
_CONFIG = _NAME + ".config"
_UTILS = _NAME + ".utils"
# submodules that import nothing of the package (transformers' masking_utils imports this one at its import): loaded
# from the package's folder beside the stand-in, in a process that owns itself (:func:`own_process`)
_LEAVES = frozenset({_NAME + "._trace_wrapped_higher_order_op"})


class _Owned:
    """Whether this process belongs to torchcost until it exits (:func:`own_process`), and what the stand-ins answered
    for a later real package to take over: ``allow_in_graph`` calls to make, and whether a lazily disabled function
    was made (its code to be skipped)."""

    on = False
    in_graph: ClassVar[list[Callable[..., Any]]] = []
    disabled = False


def own_process() -> None:
    """The caller owns this process until it exits and compiles nothing (the command line, cli.py ``console``). Then the
    stand-ins also answer what model libraries ask of ``torch._dynamo`` at their import, which must otherwise import
    the real package (about 1 s on top of transformers' or timm's own import here): transformers' ``masking_utils``
    imports the leaf submodule ``_trace_wrapped_higher_order_op`` (loaded as it is, beside the stand-in); its
    integrations mark functions with ``assume_constant_result`` (the real body: an attribute set, the function
    returned) and ``allow_in_graph`` (the function returned, the call made on the real package when it is imported);
    transformers and timm mark methods with ``torch.compiler.disable`` (:func:`_lazily_disabled`). A library's
    process (``analyze()`` called from the user's code, who may compile later) keeps the real package for them."""
    _Owned.on = True


def owned() -> bool:
    """Whether :func:`own_process` was called: this process is torchcost's until it exits."""
    return _Owned.on


def _lazily_disabled(fn: Callable[..., Any], recursive: bool, reason: Any) -> Callable[..., Any]:
    """``torch._dynamo.disable(fn, recursive, reason=reason)`` made without the package, in a process that owns
    itself: while the package was never imported no compilation can be under way, and ``fn`` is called as it is (the
    disabled wrapper would call it with no frame evaluation to turn off); once the real package is imported, each
    call goes through the real wrapper, made then. It carries the attributes dynamo reads of a disabled function
    (a compilation that reaches it breaks the graph and calls it), and the real package, when imported under a
    stand-in, skips its code (:func:`_settle`)."""
    real: list[Callable[..., Any]] = []

    @functools.wraps(fn)
    def disabled(*args: Any, **kwargs: Any) -> Any:
        if not real:
            module = sys.modules.get(_NAME)
            if module is None or isinstance(module, _StandIn):
                return fn(*args, **kwargs)
            real.append(module.disable(fn, recursive, reason=reason))
        return real[0](*args, **kwargs)

    marks = disabled.__dict__
    marks.update(_torchdynamo_disable=True, _torchdynamo_disable_msg=reason, _torchdynamo_orig_callable=fn,
                 _torchdynamo_disable_recursive=recursive)
    return disabled


def _settle(real: types.ModuleType) -> None:
    """The real package takes over what stand-ins answered in a process that owns itself: the ``allow_in_graph``
    calls made, the lazily disabled functions' code skipped (so their frames are not compiled: the real wrapper
    inside decides), the leaf submodules bound to it."""
    calls, _Owned.in_graph = _Owned.in_graph, []
    for fn in calls:
        real.allow_in_graph(fn)
    if _Owned.disabled:
        _Owned.disabled = False
        importlib.import_module(_NAME + ".eval_frame").skip_code(_DISABLED_CODE)
    for name in _LEAVES:
        leaf = sys.modules.get(name)
        short = name.rpartition(".")[2]
        if leaf is not None and short not in real.__dict__:
            setattr(real, short, leaf)


class _StandIn(types.ModuleType):
    """What ``import torch._dynamo`` finds while a run is going on (module docstring)."""

    def __init__(self, spec: importlib.machinery.ModuleSpec) -> None:
        super().__init__(_NAME)
        self.__spec__ = spec
        self.__path__ = list(spec.submodule_search_locations or [])
        self.__file__ = spec.origin
        self.__package__ = _NAME
        # the functions torch._disable_dynamo cached our answer on: their attribute is taken back on the way out
        self._answered: list[Callable[..., Any]] = []
        self._real: types.ModuleType | None = None
        self.importing = False  # while the real package's import runs (its own submodule imports pass the hook)
        self.running = True  # while its run goes on (:func:`deferred`)
        self.stance: Any = None  # the eager stance set when the real package came in during the run, undone after

    def disable(self, fn: Any = None, recursive: bool = True, *args: Any, **kwargs: Any) -> Any:
        if self._real is None and not self.importing and not args:
            if callable(fn) and kwargs.get("wrapping", True) is False:
                self._answered.append(fn)
                return fn  # (no compilation can be running: the package was never imported)
            if _Owned.on and kwargs.keys() <= {"reason"}:
                reason = kwargs.get("reason")

                def decorate(f: Any) -> Any:  # (a plain function only: the real one patches a class in place)
                    if isinstance(f, types.FunctionType) and self._real is None:
                        _Owned.disabled = True
                        return _lazily_disabled(f, recursive, reason)
                    return self.materialize().disable(f, recursive, reason=reason)

                return decorate if fn is None else decorate(fn)
        return self.materialize().disable(fn, recursive, *args, **kwargs)

    def assume_constant_result(self, fn: Any) -> Any:
        """The decorator's real body (torch._dynamo.decorators), in a process that owns itself."""
        if self._real is not None or not _Owned.on:
            return self.materialize().assume_constant_result(fn)
        fn._dynamo_marked_constant = True
        return fn

    def allow_in_graph(self, fn: Any) -> Any:
        """``fn`` as the real decorator returns it, the call itself made on the real package when it is imported
        (:func:`_settle`), in a process that owns itself."""
        if self._real is not None or not _Owned.on or not callable(fn):  # (a list: the real one takes each)
            return self.materialize().allow_in_graph(fn)
        _Owned.in_graph.append(fn)
        return fn

    def disable_nested_graph_breaks(self, fn: Any = None) -> Any:
        """The context manager (DeviceMesh's sub-mesh creation, a simulated rank's 2-D mesh, calls it): outside a
        compilation the real one is the config's patch of ``nested_graph_breaks`` to False, made here on the config
        the stand-in holds. As a decorator (``fn`` given) it is the real package's, which a compilation reads."""
        if self._real is not None or self.importing or fn is not None:
            return self.materialize().disable_nested_graph_breaks(fn)
        return importlib.import_module(_CONFIG).patch(nested_graph_breaks=False)

    def graph_break(self, *args: Any, **kwargs: Any) -> None:
        """torch's optimizers mark a graph break around each step; outside a compilation it does nothing (its body
        in torch._dynamo.decorators is empty)."""
        if self._real is not None:
            self._real.graph_break(*args, **kwargs)

    def is_compiling(self) -> bool:
        """``torch.compiler.is_compiling()``, as the real one answers outside a trace."""
        return self._real.is_compiling() if self._real is not None else torch.compiler.is_compiling()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # (copy, pickle and inspect probe dunders: not a reason to import)
            raise AttributeError(name)
        if name == "trace_rules" and self._real is None and not self.importing:
            return _TraceRules(self)
        return getattr(self.materialize(), name)

    def materialize(self) -> types.ModuleType:
        """The real package, imported now if it is not yet (the stand-in's answers taken back first)."""
        if self._real is None:
            self.forget_answers()
            if sys.modules.get(_NAME) is self:
                del sys.modules[_NAME]
            if isinstance(sys.modules.get(_UTILS), _UtilsStandIn):  # (the package imports its own utils)
                del sys.modules[_UTILS]
            self.importing = True
            try:
                self._real = importlib.import_module(_NAME)
            finally:
                self.importing = False
            config = sys.modules.get(_CONFIG)
            if config is not None and not hasattr(self._real, "config"):
                self._real.config = config  # type: ignore[attr-defined]
            _settle(self._real)
            if self.running:  # (whatever the run compiles from now on takes its eager path, as in deferred)
                self.stance = torch.compiler.set_stance("force_eager")
        return self._real

    def forget_answers(self) -> None:
        for fn in self._answered:
            if getattr(fn, "__dict__", {}).get("__dynamo_disable") is fn:
                delattr(fn, "__dynamo_disable")  # (a string: inside a class the name would be mangled)
        self._answered.clear()


class _TraceRules:
    """``torch._dynamo.trace_rules`` asked of the stand-in: ``init_process_group`` (a simulated rank's world,
    parallel/world.py) clears its rules' caches wherever ``torch._dynamo`` is in ``sys.modules``. With the package
    never imported there are none to clear, so that call does nothing; anything else imports the real package."""

    def __init__(self, package: _StandIn) -> None:
        self._package = package

    def clear_lru_cache(self) -> None:
        real = self._package._real
        if real is not None:
            real.trace_rules.clear_lru_cache()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._package.materialize().trace_rules, name)


class _UtilsStandIn(types.ModuleType):
    """What ``from torch._dynamo.utils import is_compile_supported`` finds while a model library is imported
    (:func:`importing_library`): :func:`is_compile_supported`, which imports the real one at its first call. Anything
    else asked of it imports the real package and answers from its ``utils``."""

    def __init__(self, package: _StandIn) -> None:
        super().__init__(_UTILS)
        self._package = package
        self.is_compile_supported = is_compile_supported

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.real(), name)

    def real(self) -> types.ModuleType:
        self._package.materialize()  # (takes this stand-in out of sys.modules)
        return importlib.import_module(_UTILS)


def is_compile_supported(device_type: Any) -> Any:
    """``torch._dynamo.utils.is_compile_supported``, the real one, imported at the first call. torchvision binds this
    name when it is imported (``torchvision.ops.roi_align``, which imports every model module): imported through
    :func:`importing_library` it binds this function, and ``torch._dynamo`` is imported only if it is called."""
    utils = sys.modules.get(_UTILS)
    if isinstance(utils, _UtilsStandIn):
        utils = utils.real()
    else:
        utils = importlib.import_module(_UTILS)
    return utils.is_compile_supported(device_type)


class _Existing(importlib.abc.Loader):
    """Loads a module that is in ``sys.modules`` already: hands it back as it is (its own ``__spec__`` kept)."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module = module
        self.spec = module.__spec__

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return self.module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__spec__ = self.spec  # (the import system set the spec it was loaded by)


class _Hook(importlib.abc.MetaPathFinder):
    """Any submodule of ``torch._dynamo`` but ``config`` asked for while the stand-in is there: the real package is
    imported first, and the submodule is found in it."""

    def __init__(self, stand_in: _StandIn) -> None:
        self.stand_in = stand_in

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        stand_in = self.stand_in
        if not name.startswith(_NAME + ".") or name == _CONFIG or stand_in._real is not None or stand_in.importing \
                or (_Owned.on and name in _LEAVES):
            return None
        stand_in.materialize()
        module = sys.modules.get(name)
        if module is None:  # (not imported by the package itself: the path finders find it in the real one)
            return None
        return importlib.machinery.ModuleSpec(name, _Existing(module))


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """While inside, ``torch._dynamo`` is a stand-in, if nobody had imported it (module docstring); where the real
    package is imported, ``torch.compile`` directives are ignored (``set_stance("force_eager")``, process-wide)."""
    if _NAME in sys.modules:
        module = sys.modules[_NAME]
        if isinstance(module, _StandIn):
            yield
            return
        if _Owned.in_graph or _Owned.disabled:
            _settle(module)  # (imported outside a run since a stand-in answered)
        # something may be compiled (a model, a submodule's .compile(), a function its forward calls): the run
        # takes the eager path of each, what torchcost counts, instead of compiling under its modes
        with torch.compiler.set_stance("force_eager"):
            yield
        return
    spec = importlib.util.find_spec(_NAME)
    if spec is None or not spec.submodule_search_locations:
        yield
        return
    stand_in = _StandIn(spec)
    config = sys.modules.get(_CONFIG)
    if config is not None:  # (imported by an earlier run: the import system binds it to a parent only when it loads)
        stand_in.config = config  # type: ignore[attr-defined]
    hook = _Hook(stand_in)
    sys.modules[_NAME] = stand_in
    sys.meta_path.insert(0, hook)
    try:
        yield
    finally:
        stand_in.running = False
        if stand_in.stance is not None:
            stand_in.stance.__exit__(None, None, None)
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(hook)
        stand_in.forget_answers()  # (also after another thread imported the real package meanwhile)
        if stand_in._real is None:
            if sys.modules.get(_NAME) is stand_in:
                del sys.modules[_NAME]
            if torch.__dict__.get("_dynamo") is stand_in:
                del torch._dynamo


@contextlib.contextmanager
def importing_library() -> Iterator[None]:
    """While inside (a model library imported by torchcost's resolver, resolve/common.py ``require``), ``torch._dynamo``
    is the stand-in of :func:`deferred` and ``torch._dynamo.utils`` one that gives :func:`is_compile_supported`, if
    nobody had imported the package: torchvision binds that function at its import and asks nothing else of the
    package, which it would otherwise import whole (about 2 s here). A library that asks for more gets the real
    package then. On the way out both stand-ins go; torchvision keeps :func:`is_compile_supported`, which answers as
    the real one. To be called with the analysis lock held (run/concurrency.py ``importing``)."""
    with deferred():
        stand_in = sys.modules.get(_NAME)
        if not isinstance(stand_in, _StandIn) or _UTILS in sys.modules:  # (materialize() takes a stand-in out)
            yield
            return
        utils = _UtilsStandIn(stand_in)
        sys.modules[_UTILS] = utils
        try:
            yield
        finally:
            if sys.modules.get(_UTILS) is utils:
                del sys.modules[_UTILS]


_DISABLED_CODE = _lazily_disabled(len, True, None).__code__  # (every lazily disabled function runs this code)
