""""Will it fit?": the largest batch whose predicted peak memory, plus an allowance, stays within a budget.

Every probe is a full :func:`torchcost.analyze` run on a meta copy of the model (nothing is allocated, whatever the
batch), so the search costs a few analyses and no memory. The allowance covers what the prediction leaves out on a
GPU: the CUDA context and the cuBLAS/cuDNN workspaces (``reserve``, default 1 GiB on "cuda"), and the caching
allocator's rounding and fragmentation (``fragmentation``, default 5 % of the predicted peak on "cuda"). Both are
0 for a "cpu" target. docs/conventions.md, "Memory", says where these figures come from.

:func:`search_largest` is the search itself, free of torch: it sees a batch size only through ``fits`` and
``peak_at``, so it is tested against synthetic peaks (tests/test_fit_search.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchcost.api import analyze
from torchcost.collect.probe import KernelMemory
from torchcost.errors import InputError
from torchcost.inputs import input_dtypes, model_dtype, normalize_sizes, random_input
from torchcost.run.step import Mode, make_twin
from torchcost.trees import first, map_tensors
from torchcost.units import parse_bytes

__all__ = ["DEFAULT_FRAGMENTATION", "DEFAULT_RESERVE", "Allowance", "BatchFit", "max_batch_size", "search_largest"]

DEFAULT_RESERVE = {"cuda": 2**30, "cpu": 0}
DEFAULT_FRAGMENTATION = {"cuda": 0.05, "cpu": 0.0}


@dataclass(frozen=True)
class Allowance:
    """What a predicted peak leaves out: ``reserve`` bytes, plus ``fragmentation`` times the peak."""

    reserve: int
    fragmentation: float

    def needed(self, peak: int) -> int:
        """The bytes a batch with predicted peak ``peak`` needs, the allowance included."""
        return math.ceil(peak * (1 + self.fragmentation)) + self.reserve

    def room(self, budget: int) -> float:
        """The predicted peak at which :meth:`needed` reaches ``budget`` (unrounded: a target for interpolation;
        whether a peak fits is decided by :meth:`needed`)."""
        return (budget - self.reserve) / (1 + self.fragmentation)


@dataclass(frozen=True)
class BatchFit:
    """The answer of :func:`max_batch_size`. ``int(fit)`` is the batch size (0: not even batch 1 fits)."""

    batch_size: int
    peak_bytes: int  # predicted peak at that batch size (0 when nothing fits)
    needed_bytes: int  # peak plus the allowance at that batch size
    budget_bytes: int
    reserve_bytes: int
    fragmentation: float
    mode: Mode
    target: str
    probes: tuple[tuple[int, int], ...]  # (batch size, predicted peak) of every analysis run, in order
    limit_reached: bool = False  # the search stopped at ``limit`` with room to spare

    def __int__(self) -> int:
        return self.batch_size

    def __index__(self) -> int:
        return self.batch_size

    @property
    def allowance(self) -> Allowance:
        return Allowance(self.reserve_bytes, self.fragmentation)

    def needed(self, peak: int) -> int:
        return self.allowance.needed(peak)


def max_batch_size(
    model: nn.Module,
    *args: Any,
    budget: int | str,
    kwargs: Mapping[str, Any] | None = None,
    input_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    mode: Mode = "eval",
    optimizer: str | torch.optim.Optimizer | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    amp: str | None = None,
    target: str = "cuda",
    reserve: int | str | None = None,
    fragmentation: float | None = None,
    limit: int = 1 << 20,
    kernel_memory: KernelMemory | None = None,
) -> BatchFit:
    """The largest batch size whose predicted peak memory, plus the allowance, fits in ``budget``.

    Inputs are given as to :func:`torchcost.analyze` (example tensors, ``kwargs``, or ``input_size``); dimension 0
    of every input whose dimension 0 equals the first input's is the batch dimension, rescaled for each probe.
    ``mode="train"`` with ``optimizer``/``loss_fn``/``amp`` sizes a training step. ``budget`` and ``reserve`` are
    bytes or text ("24GiB", "80GB"); a bad one is an InputError. The peak is assumed not to shrink as the batch
    grows; :func:`search_largest` says how the batch sizes to analyze are chosen. ``kernel_memory`` as for
    :func:`torchcost.analyze` (target "cpu" only: each probe then runs the CPU kernels it has not measured yet).
    """
    budget_bytes = _bytes("budget", budget)
    allowance = _allowance(target, reserve, fragmentation)
    args = _meta_inputs(model, args, input_size, dtype)
    kw = dict(kwargs or {})
    batched = first((args, kw), lambda t: t.dim() > 0)
    if batched is None:
        raise InputError("max_batch_size needs inputs with a batch dimension (dimension 0)")
    base = int(batched.shape[0])
    # one meta copy serves every probe (a model on the meta device is used as it is)
    on_meta = all(t.device.type == "meta" for t in (*model.parameters(), *model.buffers()))
    meta_model = model if on_meta else make_twin(model, (), {}, "meta", torch.device("cpu")).model
    peaks: dict[int, int] = {}  # every probe's predicted peak, in the order they ran

    def peak(batch: int) -> int:
        if batch not in peaks:
            peaks[batch] = analyze(meta_model, *_rebatch(args, base, batch), kwargs=_rebatch(kw, base, batch),
                                   mode=mode, optimizer=optimizer, loss_fn=loss_fn, amp=amp,
                                   target=target, kernel_memory=kernel_memory).peak_memory
        return peaks[batch]

    def fits(batch: int) -> bool:
        return allowance.needed(peak(batch)) <= budget_bytes

    batch, at_limit = search_largest(fits, peak, allowance.room(budget_bytes), limit)
    best = peaks.get(batch, 0)
    return BatchFit(batch, best, allowance.needed(best) if batch else 0, budget_bytes, allowance.reserve,
                    allowance.fragmentation, mode, target, tuple(peaks.items()), at_limit)


def _allowance(target: str, reserve: int | str | None, fragmentation: float | None) -> Allowance:
    """The allowance asked for, or ``target``'s default; a bad reserve or a negative fragmentation is an InputError."""
    reserve_bytes = _bytes("reserve", reserve) if reserve is not None else DEFAULT_RESERVE.get(target, 0)
    frag = DEFAULT_FRAGMENTATION.get(target, 0.0) if fragmentation is None else float(fragmentation)
    if frag < 0:
        raise InputError(f"fragmentation must be >= 0, got {fragmentation!r}")
    return Allowance(reserve_bytes, frag)


def _meta_inputs(model: nn.Module, args: tuple[Any, ...], input_size: object, dtype: object) -> tuple[Any, ...]:
    """The positional inputs: ``args`` as given, or meta tensors made from ``input_size`` (not both)."""
    if input_size is None:
        return args
    if args:
        raise InputError("give either inputs or input_size, not both")
    shapes = normalize_sizes(input_size)
    dtypes = input_dtypes(dtype, len(shapes))
    return tuple(random_input(s, d or model_dtype(model), torch.device("meta")) for s, d in zip(shapes, dtypes))


def _rebatch(obj: Any, old: int, new: int) -> Any:
    """``obj`` with meta tensors whose leading (batch) dimension ``old`` becomes ``new``."""

    def resize(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0 or t.shape[0] != old:
            return t if t.device.type == "meta" else torch.empty_like(t, device="meta")
        return torch.empty((new, *t.shape[1:]), dtype=t.dtype, device="meta")

    return map_tensors(obj, resize)


def _bytes(label: str, value: int | str) -> int:
    try:
        return parse_bytes(value)
    except ValueError as exc:
        raise InputError(f"{label}: {exc}") from None


# --- the search: no torch below this line --------------------------------------------------------------------------

Fits = Callable[[int], bool]
PeakAt = Callable[[int], int]


def search_largest(fits: Fits, peak_at: PeakAt, room: float, limit: int) -> tuple[int, bool]:
    """The largest batch size in ``[1, limit]`` that ``fits``, and whether the search stopped because ``limit``
    itself fits (what lies beyond was not asked); ``(0, False)`` when not even 1 fits.

    ``peak_at(b)`` is the predicted peak at ``b``, asked only of batch sizes already given to ``fits``; ``room`` is
    the peak at which the allowance reaches the budget (:meth:`Allowance.room`). The peak is assumed not to shrink
    as the batch grows. Probes at 1 and 2 give a linear first guess at the boundary; doubling from the largest
    batch known to fit finds one that does not; regula falsi then narrows the two (:func:`_settle`). Both callables
    may be asked about a batch size more than once: the caller caches.
    """
    if not fits(1):
        return 0, False
    if limit <= 1 or not fits(2):
        return 1, limit <= 1
    lo, hi = _bracket(fits, peak_at, room, limit)
    if hi is None:
        return lo, True
    return _settle(fits, peak_at, room, lo, hi, limit), False


def _bracket(fits: Fits, peak_at: PeakAt, room: float, limit: int) -> tuple[int, int | None]:
    """A batch ``lo`` that fits and a larger ``hi`` that does not (None: ``lo`` is ``limit``), given that 2 fits: the
    line through the peaks at 1 and 2 guesses the boundary (when it rises), then ``lo`` doubles until it fails."""
    lo, hi = 2, None
    if peak_at(2) - peak_at(1) > 0:
        guess = _interpolate(1, 2, peak_at, room, limit)
        if fits(guess):
            lo = guess
        else:
            hi = guess
    while hi is None:
        nxt = min(limit, lo * 2)
        if nxt == lo:
            return lo, None
        if fits(nxt):
            lo = nxt
        else:
            hi = nxt
    return lo, hi


def _settle(fits: Fits, peak_at: PeakAt, room: float, lo: int, hi: int, limit: int) -> int:
    """The largest batch that fits, given that ``lo`` fits and ``hi`` does not.

    Regula falsi: the peak is piecewise linear in the batch, so the line through the peaks at ``lo`` and ``hi``
    lands close; check the guess and its neighbour, and bisect once when ``hi`` has not moved for two rounds (a bent
    stretch, where the line keeps landing short)."""
    stale = 0  # interpolation rounds in a row that only moved lo
    while hi - lo > 1:
        if stale >= 2:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
            stale = 0
            continue
        mid = min(hi - 1, max(lo + 1, _interpolate(lo, hi, peak_at, room, limit)))
        lo, hi, moved_hi = _probe_pair(fits, mid, lo, hi)
        stale = 0 if moved_hi else stale + 1
    return lo


def _probe_pair(fits: Fits, mid: int, lo: int, hi: int) -> tuple[int, int, bool]:
    """``lo`` and ``hi`` after checking ``mid`` and ``mid + 1`` (those strictly between them), and whether ``hi``
    moved; a failure ends the check."""
    for candidate in (mid, mid + 1):
        if lo < candidate < hi:
            if not fits(candidate):
                return lo, candidate, True
            lo = candidate
    return lo, hi, False


def _interpolate(a: int, b: int, peak_at: PeakAt, room: float, limit: int) -> int:
    """The batch at which the straight line through the peaks at ``a`` and ``b`` reaches ``room`` bytes (when the
    line does not rise: twice ``b``), within ``[1, limit]``."""
    slope = (peak_at(b) - peak_at(a)) / (b - a)
    if slope <= 0:
        return min(limit, b * 2)
    return max(1, min(limit, int(a + (room - peak_at(a)) // slope)))
