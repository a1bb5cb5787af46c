"""Refusing, before anything is touched, what cannot be analysed: each refusal is one InputError that names the
module or option and says what to do instead.

* **TorchScript** (``torch.jit.script`` / ``torch.jit.trace``, the model or any child): its forward runs inside the
  TorchScript interpreter, where module calls are invisible, so per-module attribution cannot be exact; its
  submodules cannot be copied into a training-step twin. torchcost analyses the eager module it was made from.
* **Lazy modules** with parameters not yet materialised (``nn.LazyLinear``): their shapes, hence their cost, are not
  known until a forward runs, and that forward would change the user's module.
* **Compiled models** (``torch.compile(model)``) are not refused: the wrapper it returns is set aside and the
  eager module it wraps is analysed (:func:`uncompiled`), under names without ``_orig_mod.``; every analysis runs
  with ``torch.compile`` directives ignored (run/dynamo.py ``deferred``), which also covers ``module.compile()`` and
  compiled functions a forward calls. The eager ops are what torchcost counts in any case (docs/conventions.md).
* **Sparse gradients** (``nn.Embedding(sparse=True)``, ``nn.EmbeddingBag(sparse=True)``) in a training step with an
  optimizer that cannot take them (Adam, AdamW, ...): only SGD and Adagrad (and SparseAdam) can.
"""

from __future__ import annotations

import functools
import sys

import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]  # not in __all__

from torchcost.errors import InputError
from torchcost.run.step import StepOptions

__all__ = ["refuse_unsupported", "uncompiled"]

# torch optimizers whose step accepts sparse gradients
_SPARSE_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (torch.optim.SGD, torch.optim.Adagrad,
                                                                torch.optim.SparseAdam)


# torch.nn.parameter.is_lazy, at C speed over a module's tensors (a lazy parameter or buffer is an
# UninitializedTensorMixin; None is not)
_IS_LAZY = functools.partial(type.__instancecheck__, UninitializedTensorMixin)


def refuse_unsupported(model: nn.Module, options: StepOptions) -> None:
    """Raise an InputError for a model or option combination torchcost cannot analyse."""
    train = options.mode == "train"
    for module in model.modules():  # (a module's name is looked up only to refuse it: most models pass)
        if isinstance(module, torch.jit.ScriptModule):
            raise InputError(f"{_where(model, module)} is TorchScript, whose forward hides its layers from "
                             f"torchcost: analyse the eager module it was scripted or traced from")
        params, buffers = module._parameters, module._buffers
        if (params and any(map(_IS_LAZY, params.values()))) or (buffers and any(map(_IS_LAZY, buffers.values()))):
            raise InputError(f"{_where(model, module)} is a lazy module whose parameters are not initialized yet: "
                             f"call the model once (model(x)) so they take their shapes, then analyse it")
        if train and _sparse_trainable(module) and not _takes_sparse(options.optimizer):
            raise InputError(f"{_where(model, module)} makes sparse gradients (sparse=True), which the "
                             f"{_optimizer_name(options)} optimizer cannot take: pass optimizer='sgd' (it supports "
                             f"sparse gradients)")


def uncompiled(model: nn.Module) -> nn.Module:
    """The eager module behind ``torch.compile(model)``'s wrapper (``OptimizedModule``, nested ones too), else
    ``model`` itself. Running the wrapper under torchcost's hooks and modes would compile it (seconds, and a crash
    of the process in a training step's twin on torch 2.14), count the wrapper as a module of its own and name
    every layer ``_orig_mod.*``. No wrapper can exist before ``torch._dynamo`` is imported, so nothing is imported
    here."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    wrapper = getattr(eval_frame, "OptimizedModule", None) if eval_frame is not None else None
    while wrapper is not None and isinstance(model, wrapper) and isinstance(getattr(model, "_orig_mod", None),
                                                                           nn.Module):
        model = model._orig_mod
    return model


def _where(model: nn.Module, module: nn.Module) -> str:
    """``module 'a.b' (Type)``, or ``the model (Type)`` for the root; a TorchScript module names its eager class."""
    name = next((n for n, m in model.named_modules() if m is module), "")
    kind = type(module).__name__
    original = getattr(module, "original_name", None) if isinstance(module, torch.jit.ScriptModule) else None
    if original and original != kind:
        kind = f"{kind} of {original}"
    return f"module '{name}' ({kind})" if name else f"the model ({kind})"


def _sparse_trainable(module: nn.Module) -> bool:
    weight = module._parameters.get("weight")
    return (isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and bool(getattr(module, "sparse", False))
            and weight is not None and weight.requires_grad)


def _takes_sparse(optimizer: str | torch.optim.Optimizer | None) -> bool:
    if optimizer is None:
        return True
    if isinstance(optimizer, str):
        return optimizer.lower() == "sgd"
    # a torch optimizer we know; anyone else's optimizer is trusted to know what it takes
    return isinstance(optimizer, _SPARSE_OPTIMIZERS) or not type(optimizer).__module__.startswith("torch.optim")


def _optimizer_name(options: StepOptions) -> str:
    optimizer = options.optimizer
    return repr(optimizer) if isinstance(optimizer, str) else type(optimizer).__name__
