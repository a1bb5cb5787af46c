"""Small helpers shared by the formula families."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from torchcost.formulas.registry import OpCall


def numel(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


def first_tensor(obj: Any) -> torch.Tensor:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for item in obj:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"no tensor in {type(obj).__name__}")


def out_numel(call: OpCall) -> int:
    return first_tensor(call.out).numel()


def is_floating(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()
