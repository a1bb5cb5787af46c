""""Will it fit?": the largest batch whose predicted peak memory, plus an allowance, stays within a budget.

Every probe is a full :func:`torchcost.analyze` run on a meta copy of the model (nothing is allocated, whatever the
batch), so the search costs a few analyses and no memory. The allowance covers what the prediction leaves out on a
GPU: the CUDA context and the cuBLAS/cuDNN workspaces (``reserve``, default 1 GiB on "cuda"), and the caching
allocator's rounding and fragmentation (``fragmentation``, default 5 % of the predicted peak on "cuda"). Both are
0 for a "cpu" target. docs/conventions.md, "Memory", says where these figures come from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchcost.errors import InputError
from torchcost.inputs import input_dtypes, model_dtype, normalize_sizes
from torchcost.trees import first, map_tensors
from torchcost.units import parse_bytes

__all__ = ["DEFAULT_FRAGMENTATION", "DEFAULT_RESERVE", "BatchFit", "max_batch_size"]

DEFAULT_RESERVE = {"cuda": 2**30, "cpu": 0}
DEFAULT_FRAGMENTATION = {"cuda": 0.05, "cpu": 0.0}


@dataclass(frozen=True)
class BatchFit:
    """The answer of :func:`max_batch_size`. ``int(fit)`` is the batch size (0: not even batch 1 fits)."""

    batch_size: int
    peak_bytes: int  # predicted peak at that batch size (0 when nothing fits)
    needed_bytes: int  # peak plus the allowance at that batch size
    budget_bytes: int
    reserve_bytes: int
    fragmentation: float
    mode: str
    target: str
    probes: tuple[tuple[int, int], ...]  # (batch size, predicted peak) of every analysis run, in order
    limit_reached: bool = False  # the search stopped at ``limit`` with room to spare

    def __int__(self) -> int:
        return self.batch_size

    def __index__(self) -> int:
        return self.batch_size

    def needed(self, peak: int) -> int:
        return math.ceil(peak * (1 + self.fragmentation)) + self.reserve_bytes


def _rebatch(obj: Any, old: int, new: int) -> Any:
    """``obj`` with meta tensors whose leading (batch) dimension ``old`` becomes ``new``."""

    def resize(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0 or t.shape[0] != old:
            return t if t.device.type == "meta" else torch.empty_like(t, device="meta")
        return torch.empty((new, *t.shape[1:]), dtype=t.dtype, device="meta")

    return map_tensors(obj, resize)


def max_batch_size(
    model: nn.Module,
    *args: Any,
    budget: int | str,
    kwargs: Mapping[str, Any] | None = None,
    input_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    mode: str = "eval",
    optimizer: str | torch.optim.Optimizer | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    amp: str | None = None,
    target: str = "cuda",
    reserve: int | str | None = None,
    fragmentation: float | None = None,
    limit: int = 1 << 20,
) -> BatchFit:
    """The largest batch size whose predicted peak memory, plus the allowance, fits in ``budget``.

    Inputs are given as to :func:`torchcost.analyze` (example tensors, ``kwargs``, or ``input_size``); dimension 0
    of every input whose dimension 0 equals the first input's is the batch dimension, rescaled for each probe.
    ``mode="train"`` with ``optimizer``/``loss_fn``/``amp`` sizes a training step. ``budget`` is bytes or text
    ("24GiB", "80GB"). The peak is assumed not to shrink as the batch grows: probes at 1 and 2 give a linear first
    guess, then a binary search settles it.
    """
    from torchcost.api import analyze
    from torchcost.run.step import make_twin

    budget_bytes = _bytes("budget", budget)
    reserve_bytes = _bytes("reserve", reserve) if reserve is not None else DEFAULT_RESERVE.get(target, 0)
    frag = DEFAULT_FRAGMENTATION.get(target, 0.0) if fragmentation is None else float(fragmentation)
    if frag < 0:
        raise InputError(f"fragmentation must be >= 0, got {fragmentation!r}")
    if input_size is not None:
        if args:
            raise InputError("give either inputs or input_size, not both")
        shapes = normalize_sizes(input_size)
        dtypes = input_dtypes(dtype, len(shapes))
        args = tuple(torch.empty(s, dtype=d or model_dtype(model), device="meta") for s, d in zip(shapes, dtypes))
    batched = first((args, dict(kwargs or {})), lambda t: t.dim() > 0)
    base = int(batched.shape[0]) if batched is not None else None
    if base is None:
        raise InputError("max_batch_size needs inputs with a batch dimension (dimension 0)")
    # one meta copy serves every probe (a model on the meta device is used as it is)
    on_meta = all(t.device.type == "meta" for t in (*model.parameters(), *model.buffers()))
    meta_model = model if on_meta else make_twin(model, (), {}, "meta", torch.device("cpu")).model
    probes: list[tuple[int, int]] = []
    peaks: dict[int, int] = {}

    def peak(batch: int) -> int:
        if batch not in peaks:
            report = analyze(meta_model, *_rebatch(args, base, batch), kwargs=_rebatch(dict(kwargs or {}), base, batch),
                             mode=mode, optimizer=optimizer, loss_fn=loss_fn, amp=amp, target=target)
            peaks[batch] = report.peak_memory
            probes.append((batch, report.peak_memory))
        return peaks[batch]

    def needed(p: int) -> int:
        return math.ceil(p * (1 + frag)) + reserve_bytes

    def fits(batch: int) -> bool:
        return needed(peak(batch)) <= budget_bytes

    def result(batch: int, at_limit: bool = False) -> BatchFit:
        p = peaks.get(batch, 0)
        return BatchFit(batch, p, needed(p) if batch else 0, budget_bytes, reserve_bytes, frag, mode, target,
                        tuple(probes), at_limit)

    if not fits(1):
        return result(0)
    if limit <= 1 or not fits(2):
        return result(1, limit <= 1)
    lo, hi = 2, None  # lo fits; hi (when known) does not
    slope = peaks[2] - peaks[1]
    if slope > 0:
        guess = _interpolate(1, 2, peaks, room=(budget_bytes - reserve_bytes) / (1 + frag), limit=limit)
        if fits(guess):
            lo = guess
        else:
            hi = guess
    while hi is None:  # gallop upwards until something does not fit
        nxt = min(limit, lo * 2)
        if nxt == lo:
            return result(lo, True)
        if fits(nxt):
            lo = nxt
        else:
            hi = nxt
    room = (budget_bytes - reserve_bytes) / (1 + frag)
    stale = 0  # interpolation rounds in a row that only moved lo
    while hi - lo > 1:
        # regula falsi: the peak is piecewise linear in the batch, so the line through (lo, hi) lands close; check
        # the guess and its neighbour, and bisect once when hi has not moved for two rounds (a bent stretch)
        if stale >= 2:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
            stale = 0
            continue
        mid = min(hi - 1, max(lo + 1, _interpolate(lo, hi, peaks, room, limit)))
        moved_hi = False
        for candidate in (mid, mid + 1):
            if lo < candidate < hi:
                if fits(candidate):
                    lo = candidate
                else:
                    hi, moved_hi = candidate, True
                    break
        stale = 0 if moved_hi else stale + 1
    return result(lo)


def _interpolate(a: int, b: int, peaks: dict[int, int], room: float, limit: int) -> int:
    """The batch at which the straight line through the peaks at ``a`` and ``b`` reaches ``room`` bytes."""
    slope = (peaks[b] - peaks[a]) / (b - a)
    if slope <= 0:
        return min(limit, b * 2)
    return max(1, min(limit, int(a + (room - peaks[a]) // slope)))


def _bytes(label: str, value: int | str) -> int:
    try:
        return parse_bytes(value)
    except ValueError as exc:
        raise InputError(f"{label}: {exc}") from None
