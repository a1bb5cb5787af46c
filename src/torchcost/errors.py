"""The exceptions torchcost raises.

Every error a user can cause is a :class:`TorchcostError`, so one ``except`` catches them all::

    TorchcostError                 anything torchcost reports on purpose
    ├── InputError                 the inputs or options given to analyze() are not usable (not a shape, bad dtype, ...)
    ├── SpecError                  a model spec (CLI or resolve) names nothing that can be built
    ├── FormulaError               the formula registry was misused (duplicate key, bad return value)
    └── ModelError                 the model's forward raised while torchcost ran it
        ├── ShapeError             ... because a layer got a tensor of the wrong shape
        └── DtypeError             ... because a layer got a tensor of the wrong dtype

A :class:`ModelError` names the failing layer (dotted state_dict name and type), the input shapes it received, the
reason in one sentence, and the layers that ran before it; the original exception is chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = ["DtypeError", "FormulaError", "InputError", "ModelError", "ShapeError", "SpecError", "TorchcostError",
           "a_kind", "first_line"]


class TorchcostError(Exception):
    """Base class of every error torchcost raises on purpose."""


class InputError(TorchcostError, ValueError):
    """The inputs or options passed to torchcost cannot be used."""


class SpecError(TorchcostError, ValueError):
    """A model spec cannot be resolved to a model."""


class FormulaError(TorchcostError, ValueError):
    """The formula registry was used wrongly (duplicate key, a formula returning something that is not a Cost)."""


class ModelError(TorchcostError, RuntimeError):
    """The model's forward raised while torchcost ran it.

    Attributes name the failing layer so programs need not parse the message.
    """

    def __init__(
        self,
        message: str,
        *,
        layer: str = "",
        layer_type: str = "",
        input_shapes: str = "",
        reason: str = "",
        ran_before: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.layer = layer
        self.layer_type = layer_type
        self.input_shapes = input_shapes
        self.reason = reason
        self.ran_before = ran_before


class ShapeError(ModelError):
    """A layer received a tensor whose shape it cannot take."""


class DtypeError(ModelError):
    """A layer received a tensor whose dtype it cannot take."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name when the message is empty), for one-line errors."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({'' if exc.code is None else repr(exc.code)})"
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def a_kind(value: object) -> str:
    """``value``'s type name with its article, for a message: "an int", "a float", "an OrderedDict"."""
    name = type(value).__name__
    return ("an " if name[:1].lower() in "aeio" else "a ") + name
