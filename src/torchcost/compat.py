"""Drop-in forms of the calls users know: torchsummary's ``summary`` and thop's ``profile``."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from torchcost.api import analyze
from torchcost.errors import InputError
from torchcost.inputs import normalize_sizes

__all__ = ["profile", "summary"]


def summary(
    model: nn.Module,
    input_size: Sequence[int] | Sequence[Sequence[int]],
    batch_size: int = -1,
    device: str | torch.device | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
) -> None:
    """torchsummary's call form: ``summary(model, (3, 224, 224))`` prints the table.

    ``input_size`` excludes the batch dimension, as in torchsummary; ``batch_size=-1`` analyses a batch of 1.
    ``device`` defaults to where the model is (torchsummary's default of "cuda" fails on machines without one).
    Use :func:`torchcost.analyze` to get the numbers as data.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or (batch_size < 1 and batch_size != -1):
        raise InputError(f"batch_size must be a positive int or -1, got {batch_size!r}")
    batch = 1 if batch_size == -1 else batch_size
    shapes = [(batch, *size) for size in normalize_sizes(input_size)]
    report = analyze(model, input_size=shapes, dtype=list(dtypes) if dtypes else None, device=device)
    sys.stdout.write(report.table())


def profile(
    model: nn.Module,
    inputs: Sequence[Any] = (),
    custom_ops: Mapping[Any, Any] | None = None,
    verbose: bool = False,
) -> tuple[int, int]:
    """thop's call form: ``macs, params = profile(model, inputs=(x,))``, as exact ints.

    A single tensor passed as ``inputs`` is taken as the one input. ``custom_ops`` (thop's per-module hooks) is not
    supported: register formulas per op with :func:`torchcost.register_formula` instead.
    """
    if custom_ops:
        raise InputError("custom_ops is thop's per-module hook; use torchcost.register_formula for custom ops")
    # thop unpacks inputs into model(*inputs); a lone tensor would be split along its first dimension, so take it
    # as the one input it was meant to be
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    report = analyze(model, *args)
    if verbose:
        sys.stdout.write(report.table())
    return report.macs, report.params
