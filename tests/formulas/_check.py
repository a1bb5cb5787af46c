"""Shared helpers for the formula tests: run a model on real tensors and on the meta device, check both agree.

Every expected number in tests/formulas is derived by hand in the test, next to the number, from the convention in
the docstring of the formula file it tests; these helpers only run torchcost and compare its two runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import torchcost
from torchcost import CostReport


class Fn(nn.Module):
    """Wraps a functional call so analyze() can run it as a model's forward."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)


def to_meta(obj: Any) -> Any:
    """Every tensor (nested in tuples, lists, dicts) moved to the meta device."""
    if isinstance(obj, torch.Tensor):
        return obj.to("meta")
    if isinstance(obj, tuple):
        return tuple(to_meta(v) for v in obj)
    if isinstance(obj, list):
        return [to_meta(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_meta(v) for k, v in obj.items()}
    return obj


def _summary(r: CostReport) -> dict[str, Any]:
    return {
        "macs": r.macs,
        "flops": r.flops,
        "params": r.params,
        "ops": r.ops,
        "uncounted": r.uncounted,
        "modules": [(m.name, m.macs, m.flops, m.self_macs, m.self_flops, m.output_shape) for m in r.modules],
    }


def analyze_both(
    model: nn.Module, *args: Any, meta_args: tuple[Any, ...] | None = None, **kwargs: Any
) -> CostReport:
    """analyze() the model on its real tensors, then a copy of it and the inputs on the meta device; assert the two
    reports count the same (MACs, FLOPs, per-op and per-module counts, output shapes) and return the real one."""
    real = torchcost.analyze(model, *args, **kwargs)
    meta_model = copy.deepcopy(model).to("meta")
    meta = torchcost.analyze(meta_model, *(to_meta(args) if meta_args is None else meta_args), **kwargs)
    assert _summary(meta) == _summary(real)
    return real


def fn_both(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> CostReport:
    """analyze_both for a functional call."""
    return analyze_both(Fn(fn), *args, **kwargs)
