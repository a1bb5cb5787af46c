"""Refusing, before anything is touched, what cannot be analysed: each refusal is one InputError that names the
module or option and says what to do instead."""

from __future__ import annotations

from torch import nn

from torchcost.run.step import StepOptions

__all__ = ["refuse_unsupported"]


def refuse_unsupported(model: nn.Module, options: StepOptions) -> None:
    """Raise an InputError for a model or option combination torchcost cannot analyse."""
