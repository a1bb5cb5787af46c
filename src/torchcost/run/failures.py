"""Turning a failing forward or training step into one readable error that names the layer.

A forward that raises becomes a :class:`~torchcost.errors.ModelError` (a ShapeError or DtypeError when the reason
says so) naming the innermost module that raised (its state_dict name and type), the input it got, the reason in
one line and the layers that ran before it. A failing loss, backward or optimizer step says which phase failed.
Errors torchcost raises on purpose pass through unchanged; the original exception is chained as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from torch import nn

from torchcost.collect.scope import ScopeTracker
from torchcost.errors import DtypeError, ModelError, ShapeError, TorchcostError, first_line
from torchcost.shapes import describe

__all__ = ["batch_norm_at_one", "forward_failures", "quiet_meta_failures", "step_failure", "step_failures",
           "wrap_failure"]

_DTYPE_WORDS = ("dtype", "scalar type", "expected tensor for argument", "must have the same type",
                "should be the same", "index tensor", "not implemented for")
_SHAPE_WORDS = ("shape", "size", "dimension", "dim ", "kernel", "channels", "groups", "cannot be multiplied",
                "expected input", "expected 2d", "expected 3d", "expected 4d", "expected 5d", "out of range",
                "expected more than 1 value", "non-empty", "reduction dim")  # meta kernels: "same reduction dim"


class _MetaFailures(logging.Filter):
    """Drops the fake tensor mode's log of a meta kernel that raised ("failed while attempting to run meta for
    aten.mm.default" and torch's traceback), in the thread that installed it: the error itself goes on to
    :func:`forward_failures`, which reports it as one line naming the layer."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.thread == self.thread and str(record.msg).startswith("failed while attempting to run meta"))


@contextlib.contextmanager
def quiet_meta_failures() -> Iterator[None]:
    """While inside, a meta kernel that raises under a fake tensor mode in this thread logs nothing (the logger is
    torch's ``torch._subclasses.fake_tensor``; other records and other threads' pass as before)."""
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    quiet = _MetaFailures()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


_VALUES_ON_META = (" (the forward reads a tensor's values, and on the meta device only those of the inputs torchcost "
                   "made, of the caller's integer inputs and of what is computed from them alone are known: analyse "
                   "the model built on the cpu for the cpu, CLI without --meta and --target)")
# what torch's meta kernels say where an op needs values (item(), a copy to the cpu, a size only values give), lower
# case: the hint's keys, and what resolve/hf.py's probes take for a read of values
VALUE_READS = ("cannot be called on meta tensors", "cannot copy out of meta tensor",
               "cannot repeat_interleave a meta tensor without output_size",
               "register_meta function for torch.nonzero()")


def reads_values(reason: str) -> bool:
    """Whether a failure's ``reason`` is torch's meta kernels refusing to read a tensor's values."""
    lowered = reason.lower()
    return any(key in lowered for key in VALUE_READS)


# torch's reason for a batch norm in training on one value per channel (a batch of 1 on a 1 x 1 map, or on BatchNorm1d)
_ONE_VALUE = "expected more than 1 value per channel when training"


def batch_norm_at_one(exc: BaseException) -> bool:
    """Whether ``exc`` is a layer's failure (:func:`wrap_failure`) for a batch norm's training statistics over one
    value per channel."""
    return isinstance(exc, ModelError) and _ONE_VALUE in exc.reason.lower()


# what to do about a failure whose reason holds the key: torch says why, not what the user can change
_HINTS = (
    (_ONE_VALUE,
     " (batch norm's training statistics need more than one value per channel: give a batch of 2 or more, CLI "
     "--batch-size 2, or a larger input)"),
    ("targets should not be none when in training mode",
     " (a torchvision detection model's training step takes targets beside its images, one dict of \"boxes\" and "
     "\"labels\" per image, and returns its losses, which the default loss sums: analyze(model, images, targets, "
     "mode=\"train\"); torchcost.resolve.resolve(spec, train=True) and the CLI's --train make targets)"),
    ("'nonetype' object has no attribute",
     " (the forward used something it was given as None: often an input it needs beside those given; pass every "
     "input, analyze(model, kwargs={...}), or from the CLI a file.py:make returning (model, inputs))"),
    *((key, _VALUES_ON_META) for key in VALUE_READS),
)


def _hint(reason: str) -> str:
    lowered = reason.lower()
    return next((hint for key, hint in _HINTS if key in lowered), "")


def _reason(exc: BaseException) -> str:
    return first_line(exc).rstrip(".")


def _error_class(reason: str) -> type[ModelError]:
    lowered = reason.lower()
    if any(w in lowered for w in _DTYPE_WORDS):
        return DtypeError
    if any(w in lowered for w in _SHAPE_WORDS):
        return ShapeError
    return ModelError


def wrap_failure(exc: BaseException, scope: ScopeTracker, model: nn.Module) -> ModelError:
    """The error for a forward that raised ``exc``, from where the scope saw it happen."""
    failure = scope.failure
    reason = _reason(exc)
    ran: tuple[str, ...] = ()
    if failure is None:  # failed before any module scope (should not happen: the model itself is a module)
        name, type_name, inputs = "", type(model).__name__, "?"
    else:
        name, type_name, ran = failure.name, failure.type, failure.ran_before
        inputs = describe(failure.input_spec) if failure.input_spec else "(keyword arguments only)"
    where = f"layer '{name}' ({type_name})" if name else f"the forward of {type_name} itself"
    shown: list[str] = list(dict.fromkeys(ran))
    before = ", ".join(f"{n} ({scope.types[n]})" for n in shown[-8:]) if shown else "none"
    if len(shown) > 8:
        before = f"{len(shown) - 8} more, then " + before
    message = f"{where} failed on input {inputs}: {reason}{_hint(reason)}. Layers that ran before it: {before}."
    return _error_class(reason)(message, layer=name, layer_type=type_name, input_shapes=inputs, reason=reason,
                                ran_before=tuple(shown))


def step_failure(phase: str, exc: BaseException) -> ModelError:
    reason = _reason(exc)
    return ModelError(f"the training step failed in {phase}: {reason}", reason=reason)


@contextlib.contextmanager
def forward_failures(scope: ScopeTracker, model: nn.Module) -> Iterator[None]:
    """Inside, an exception from the model's forward becomes the error :func:`wrap_failure` makes."""
    try:
        yield
    except TorchcostError:
        raise
    except (Exception, SystemExit) as exc:  # a forward that calls sys.exit() fails; it does not end the program
        raise wrap_failure(exc, scope, model) from exc


@contextlib.contextmanager
def step_failures(phase: str) -> Iterator[None]:
    """Inside, an exception from ``phase`` of a training step becomes the error :func:`step_failure` makes."""
    try:
        yield
    except TorchcostError:
        raise
    except (Exception, SystemExit) as exc:
        raise step_failure(phase, exc) from exc
