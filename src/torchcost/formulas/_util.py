"""Small helpers shared by the formula families."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import torch

from torchcost.formulas.registry import OpCall
from torchcost.trees import first, is_floating

__all__ = ["first_tensor", "float32", "is_floating", "numel", "out_numel"]


def float32(x: float) -> float:
    """``x`` as a C ``float`` holds it: rounded to float32. One float32 operation is its exact result rounded so,
    since a double rounding of +, -, * and / through float64 gives the correctly rounded float32 (kernels that
    compute in single precision: the flash split heuristic, the anti-aliased taps)."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def numel(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


def first_tensor(obj: Any) -> torch.Tensor:
    """The first tensor in an op's argument or output; a TypeError (the formula cannot price it) if there is none."""
    found = first(obj)
    if found is None:
        raise TypeError(f"no tensor in {type(obj).__name__}")
    return found


def out_numel(call: OpCall) -> int:
    return first_tensor(call.out).numel()
