""""Will it fit?": the largest batch whose predicted peak memory, plus an allowance, stays within a budget.

Every probe is a full :func:`torchcost.analyze` run on a meta copy of the model (nothing is allocated, whatever the
batch), so the search costs a few analyses and no memory. The allowance covers what the prediction leaves out on a
GPU: the CUDA context, cuDNN's workspaces and other kernel scratch (``reserve``, default 1 GiB on "cuda"; the cuBLAS
workspaces and flash attention's buffers are predicted: collect/workspace_cuda.py), and the caching
allocator's rounding and fragmentation (``fragmentation``, default 5 % of the predicted peak on "cuda"). Both are
0 for a "cpu" target. docs/conventions.md, "Memory", says where these figures come from.

:func:`search_largest` is the search itself, free of torch: it sees a batch size only through ``fits`` and
``peak_at``, so it is tested against synthetic peaks (tests/test_fit_search.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from torchcost.api import analyze
from torchcost.collect.probe import KernelMemory
from torchcost.collect.shadows import known_input, known_made, known_values
from torchcost.errors import InputError, ModelError
from torchcost.inputs import input_dtypes, model_dtype, normalize_sizes, random_input
from torchcost.parallel.config import Parallel
from torchcost.report import CostReport
from torchcost.run.failures import batch_norm_at_one, reads_values
from torchcost.run.guard import kept
from torchcost.run.step import Mode, make_twin
from torchcost.trees import first, map_tensors
from torchcost.units import parse_bytes

__all__ = ["DEFAULT_FRAGMENTATION", "DEFAULT_RESERVE", "Allowance", "BatchFit", "SweepPoint", "allowance_for",
           "fsdp_sweep", "max_batch_size", "parse_budget", "search_largest"]

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
    """The answer of :func:`max_batch_size`. ``int(fit)`` is the batch size (0: not even batch ``smallest`` fits).
    ``smallest`` is 2 where a training step cannot run at batch 1 (a batch norm's training statistics get one value
    per channel there, which torch refuses): the search then starts at 2."""

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
    rank: int | None = None  # parallel=: the rank every probe analysed (the batch is that rank's own); else None
    world: int = 1  # parallel=: the simulated world's ranks
    smallest: int = 1  # the smallest batch the step runs at (2: batch norm in training refuses batch 1)

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
    parallel: Parallel | None = None,
) -> BatchFit:
    """The largest batch size whose predicted peak memory, plus the allowance, fits in ``budget``.

    Inputs are given as to :func:`torchcost.analyze` (example tensors, ``kwargs``, or ``input_size``); dimension 0
    of every input whose dimension 0 equals the first input's is the batch dimension, rescaled for each probe.
    ``mode="train"`` with ``optimizer``/``loss_fn``/``amp`` sizes a training step. ``budget`` and ``reserve`` are
    bytes or text ("24GiB", "80GB"); a bad one is an InputError. The peak is assumed not to shrink as the batch
    grows; :func:`search_largest` says how the batch sizes to analyze are chosen. ``kernel_memory`` as for
    :func:`torchcost.analyze` (target "cpu" only: each probe then runs the CPU kernels it has not measured yet).

    ``parallel`` (a :class:`torchcost.Parallel`): the largest batch of one rank of that simulated world (the inputs
    and the answer are that rank's own batch). Every probe analyses one rank: ``parallel.rank``, else the rank the
    first probe finds worst (the ranks differ only in their shards, which do not depend on the batch).
    """
    if parallel is not None and not isinstance(parallel, Parallel):
        raise InputError(f"parallel must be a torchcost.Parallel, got {type(parallel).__name__}")
    with kept(model):  # (the meta copy every probe runs shares the model's functions: run/guard.py)
        probe = _Probe.make(model, args, kwargs, input_size, dtype, dict(
            mode=mode, optimizer=optimizer, loss_fn=loss_fn, amp=amp, target=target, kernel_memory=kernel_memory))
        return probe.largest(parse_budget("budget", budget), allowance_for(target, reserve, fragmentation), limit,
                             parallel)


@dataclass
class _Probe:
    """The analyses a batch search (or a sweep) runs: one meta copy of the model, the inputs rebatched per probe."""

    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    base: int  # the inputs' own batch size
    options: dict[str, Any]  # analyze()'s other keyword arguments
    given: tuple[nn.Module, tuple[Any, ...], dict[str, Any]]  # the model and inputs as given

    @classmethod
    def make(cls, model: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, input_size: object,
             dtype: object, options: dict[str, Any]) -> _Probe:
        args = _meta_inputs(model, args, input_size, dtype)
        kw = dict(kwargs or {})
        batched = first((args, kw), lambda t: t.dim() > 0)
        if batched is None:
            raise InputError("max_batch_size needs inputs with a batch dimension (dimension 0)")
        # one meta copy serves every probe (a model on the meta device is used as it is)
        on_meta = all(t.device.type == "meta" for t in (*model.parameters(), *model.buffers()))
        meta_model = model if on_meta else make_twin(model, (), {}, "meta", torch.device("cpu")).model
        return cls(meta_model, args, _probe_kwargs(model, kw), int(batched.shape[0]), options, (model, args, kw))

    def report(self, parallel: Parallel | None) -> CostReport:
        """The analysis of the model and inputs as given (a parallel one runs on a meta twin anyway)."""
        model, args, kwargs = self.given
        return analyze(model, *args, kwargs=kwargs, parallel=parallel, **self.options)

    def run(self, batch: int, parallel: Parallel | None) -> CostReport:
        try:
            return analyze(self.model, *_rebatch(self.args, self.base, batch),
                           kwargs=_rebatch(self.kwargs, self.base, batch), parallel=parallel, **self.options)
        except ModelError as exc:
            if not reads_values(exc.reason):
                raise
            where = f"layer {exc.layer!r} ({exc.layer_type})" if exc.layer else f"the forward of {exc.layer_type}"
            raise InputError(
                f"a batch search analyses each batch on a meta copy of the model (shapes, and only the values of the "
                f"inputs torchcost made), and {where} "
                f"reads tensor values there ({exc.reason.split('. ')[0].rstrip('.')}); analyse it at chosen batch "
                f"sizes instead (CLI --batch-size N) and compare their peaks") from exc

    def largest(self, budget_bytes: int, allowance: Allowance, limit: int, parallel: Parallel | None,
                known: Mapping[int, CostReport] | None = None, hint: tuple[int, float] | None = None) -> BatchFit:
        """The search of :func:`max_batch_size`; ``known``: reports already made (batch -> report) with ``parallel``
        as given (its rank fixed); ``hint``: a batch near the answer and the peak's slope per sample there (a
        sweep's previous answer): tried first, the full search only when it does not settle the answer. The
        search's guesses come from the probes' memory timelines (:func:`boundary_from_timelines`)."""
        peaks: dict[int, int] = {}  # every probe's predicted peak, in the order they ran
        timelines: dict[int, Timeline] = {}
        plan = [parallel]  # after the first probe: the rank it reported, fixed for the others

        def note(batch: int, report: CostReport) -> None:
            peaks[batch] = report.peak_memory
            if report.memory is not None:
                timelines[batch] = (report.memory.timeline.ops, report.memory.timeline.bytes)

        for batch, report in (known or {}).items():
            note(batch, report)

        def peak(batch: int) -> int:
            if batch not in peaks:
                try:
                    report = self.run(batch, plan[0])
                except ModelError as exc:
                    if batch == 1 and batch_norm_at_one(exc):
                        raise _BatchOfOne from exc
                    raise
                if plan[0] is not None and plan[0].rank is None and report.parallel is not None:
                    plan[0] = replace(plan[0], rank=report.parallel.rank)
                note(batch, report)
            return peaks[batch]

        def fits(batch: int) -> bool:
            return allowance.needed(peak(batch)) <= budget_bytes

        room = allowance.room(budget_bytes)

        def predict() -> int | None:
            return boundary_from_timelines(timelines, room, limit)

        smallest = 1
        try:
            found = _try_hint(fits, peak, room, limit, hint) if hint is not None else None
            batch, at_limit = (found, False) if found else search_largest(fits, peak, room, limit, predict)
        except _BatchOfOne:  # (the search over batches from 2: the same search, every batch one higher)
            smallest = 2
            batch, at_limit = search_largest(lambda b: fits(b + 1), lambda b: peak(b + 1), room, limit - 1,
                                             lambda: _less_one(predict()))
            batch = batch + 1 if batch else 0
        best = peaks.get(batch, 0)
        return BatchFit(batch, best, allowance.needed(best) if batch else 0, budget_bytes, allowance.reserve,
                        allowance.fragmentation, self.options["mode"], self.options["target"], tuple(peaks.items()),
                        at_limit, rank=plan[0].rank if plan[0] is not None else None,
                        world=parallel.world if parallel is not None else 1, smallest=smallest)


class _BatchOfOne(Exception):
    """A batch search's probe at batch 1 found a training step's batch norm with one value per channel."""


def _less_one(batch: int | None) -> int | None:
    return None if batch is None else batch - 1


@dataclass(frozen=True)
class SweepPoint:
    """One world size of :func:`fsdp_sweep`: its plan (``rank``: the rank reported), that rank's report at the inputs'
    batch, and the largest batch of that rank within the budget (None: no budget given)."""

    parallel: Parallel
    report: CostReport
    fit: BatchFit | None = None

    @property
    def world(self) -> int:
        return self.parallel.world


def fsdp_sweep(
    model: nn.Module,
    *args: Any,
    degrees: Sequence[int],
    parallel: Parallel | None = None,
    budget: int | str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    input_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    mode: Mode = "train",
    optimizer: str | torch.optim.Optimizer | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    amp: str | None = None,
    target: str = "cuda",
    reserve: int | str | None = None,
    fragmentation: float | None = None,
    limit: int = 1 << 20,
    kernel_memory: KernelMemory | None = None,
) -> tuple[SweepPoint, ...]:
    """One rank's cost at each FSDP2 degree of ``degrees``: ``parallel`` (default ``Parallel()``) with ``fsdp`` set to
    each degree (its ``tp``, dtypes and options kept; the world is ``degree * tp``). Every point is an
    :func:`torchcost.analyze` of one rank at the inputs' batch (the worst rank unless ``parallel.rank`` is given),
    and, with ``budget``, :func:`max_batch_size` of that rank. The other arguments as for :func:`max_batch_size`;
    the inputs are one rank's batch."""
    plan = Parallel() if parallel is None else parallel
    if not isinstance(plan, Parallel):
        raise InputError(f"parallel must be a torchcost.Parallel, got {type(plan).__name__}")
    if plan.ddp > 1:
        raise InputError("an FSDP sweep shards with FSDP2: give parallel= without ddp")
    if not degrees or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in degrees):
        raise InputError(f"degrees must be positive integers, got {list(degrees)!r}")
    budget_bytes = parse_budget("budget", budget) if budget is not None else None
    allowance = allowance_for(target, reserve, fragmentation)
    points: list[SweepPoint] = []
    with kept(model):  # (as in max_batch_size)
        probe = _Probe.make(model, args, kwargs, input_size, dtype, dict(
            mode=mode, optimizer=optimizer, loss_fn=loss_fn, amp=amp, target=target, kernel_memory=kernel_memory))
        for degree in degrees:
            report = probe.report(replace(plan, fsdp=degree))
            assert report.parallel is not None
            fixed = replace(plan, fsdp=degree, rank=report.parallel.rank)
            fit = None
            if budget_bytes is not None:
                before = next((p.fit for p in reversed(points) if p.fit is not None and p.fit.batch_size), None)
                fit = probe.largest(budget_bytes, allowance, limit, fixed, known={probe.base: report},
                                    hint=_slope_at_answer(before) if before is not None else None)
            points.append(SweepPoint(fixed, report, fit))
    return tuple(points)


def _slope_at_answer(fit: BatchFit) -> tuple[int, float] | None:
    """``fit``'s answer and the peak's slope per sample there (from its probes next to it), if it has them."""
    peaks = dict(fit.probes)
    below = max((b for b in peaks if b < fit.batch_size), default=None)
    above = min((b for b in peaks if b > fit.batch_size), default=None)
    for a, b in ((fit.batch_size, above), (below, fit.batch_size)):
        if a is not None and b is not None and peaks[b] > peaks[a]:
            return fit.batch_size, (peaks[b] - peaks[a]) / (b - a)
    return None


def allowance_for(target: str, reserve: int | str | None, fragmentation: float | None) -> Allowance:
    """The allowance asked for, or ``target``'s default; a bad reserve or a negative fragmentation is an InputError."""
    reserve_bytes = parse_budget("reserve", reserve) if reserve is not None else DEFAULT_RESERVE.get(target, 0)
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


def _probe_kwargs(model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword inputs of the meta probes: as given, except a transformers model's 2-d ``attention_mask`` of all
    ones, which becomes the mask a ``--meta`` analysis gives it (resolve/hf.py ``meta_attention_mask``): transformers
    reads a mask's values, which a meta tensor has not (``.all()`` on it fails), and an all-ones one means no
    padding, which the causal 4-d mask says without values."""
    mask = kwargs.get("attention_mask")
    if not (isinstance(mask, torch.Tensor) and mask.device.type != "meta" and mask.dim() == 2
            and not mask.is_floating_point() and type(model).__module__.startswith("transformers.")
            and bool(mask.all())):
        return kwargs
    from torchcost.resolve.hf import meta_attention_mask

    batch, seq = mask.shape
    rest = {k: v for k, v in kwargs.items() if k != "attention_mask"}
    made = meta_attention_mask(model, getattr(model, "config", None), batch, seq, "meta", inputs=rest)
    return rest if made is None or made[0] is None else {**rest, "attention_mask": made[0]}


def _rebatch(obj: Any, old: int, new: int) -> Any:
    """``obj`` with meta tensors whose leading (batch) dimension ``old`` becomes ``new``. Values torchcost knows (token
    ids, masks: collect/shadows.py) stay known, the rows repeated in turn to fill the new batch."""

    def resize(t: torch.Tensor) -> torch.Tensor:
        values = known_values(t)
        if t.dim() == 0 or t.shape[0] != old:
            if t.device.type == "meta":
                return t
            return known_input(values, "meta") if values is not None else torch.empty_like(t, device="meta")
        shape = (new, *t.shape[1:])
        if values is None:
            return torch.empty(shape, dtype=t.dtype, device="meta")
        return known_made(lambda: values[torch.arange(new) % old], shape, t.dtype, "meta")

    return map_tensors(obj, resize)


def parse_budget(label: str, value: int | str) -> int:
    """``value`` (bytes, or text such as "24GiB") as bytes; a bad one is an InputError naming ``label``."""
    try:
        return parse_bytes(value)
    except ValueError as exc:
        raise InputError(f"{label}: {exc}") from None


def _try_hint(fits: Fits, peak_at: PeakAt, room: float, limit: int, hint: tuple[int, float] | None) -> int | None:
    """The answer, when the line of slope ``hint[1]`` through the peak at ``hint[0]`` lands on it (a batch that fits
    whose successor does not); None when it does not (the full search then runs, its probes cached)."""
    if hint is None:
        return None
    start, slope = min(max(1, hint[0]), limit), hint[1]
    if slope <= 0 or not fits(start):
        return None
    guess = max(start, min(limit - 1, start + int((room - peak_at(start)) // slope)))
    if guess >= limit or not fits(guess):
        return None
    return guess if not fits(guess + 1) else None


# --- the search: no torch below this line --------------------------------------------------------------------------

Fits = Callable[[int], bool]
PeakAt = Callable[[int], int]
Predict = Callable[[], "int | None"]
Timeline = tuple[Sequence[str], Sequence[int]]  # a probe's memory timeline: each op's name, the bytes alive after it


def boundary_from_timelines(timelines: Mapping[int, Timeline], room: float, limit: int) -> int | None:
    """A guess at the largest batch whose peak is within ``room``, from two probes' memory timelines whose ops are
    the same, one for one (the largest such pair; None where no two are, or nothing grows).

    The bytes alive after an op are the sizes of the storages alive then; where two batches ran the same ops, each
    of those sizes is in practice affine in the batch (an activation's, a gradient's, a cache's: so many bytes a
    sample; a weight's: none), so the bytes after each op are too, and the peak, the largest of them, is the
    maximum of those lines: convex and piecewise linear in the batch, with its kinks where another op becomes the
    peak, which the line through two probes' peaks cannot see. The guess is where the first of the lines through
    each op's two points reaches ``room``. It is only a guess (an allocator's rounding of each storage, a kernel
    whose workspace follows the batch otherwise, another path at another batch): the search checks it and its
    neighbour."""
    batches = sorted(timelines, reverse=True)
    pair = next(((a, b) for i, b in enumerate(batches) for a in batches[i + 1:]
                 if timelines[a][1] and timelines[a][0] == timelines[b][0]), None)
    if pair is None:
        return None
    a, b = pair
    low, high, span = timelines[a][1], timelines[b][1], b - a
    best: float | None = None
    for at_a, at_b in zip(low, high, strict=True):
        rise = at_b - at_a
        if rise > 0:
            x = a + (room - at_a) * span / rise
            best = x if best is None or x < best else best
        elif at_a > room:  # (the search finds what does not fit by itself)
            return None
    return None if best is None else max(1, min(limit, math.floor(best)))


def boundary_from_peaks(peaks: Mapping[int, int], room: float, limit: int) -> int | None:
    """A guess at the largest size whose peak is within ``room``, from the parabola through a pair of neighbouring
    probes (the pair nearest the room, other than 1 and 2) and the probe nearest the room on the pair's other side
    (or, where there is none, nearest it elsewhere); where the parabola does not rise through ``room``, the line
    through the pair. None without such a pair, or where neither rises.

    For a peak that bends upwards, as a generation's does in the prompt's length (the attention's mask and scores
    grow with its square, the cache and the activations with the length), the line through two neighbours, the
    peak's own slope there, lands past the boundary and the line through the bracket's ends short of it; the
    parabola through the pair and a probe across the boundary has the bend. The pair at 1 and 2 is left out: the
    line through it was the search's first guess, and a short prompt's peak is often another step's (the decode
    step's: the weights and the cache), whose slope says nothing about a long one's. Only a guess: the search
    checks it and its neighbour, and counts the rounds it lands short (:func:`_settle`)."""
    pairs = [x for x in peaks if x > 1 and x + 1 in peaks]
    if not pairs:
        return None
    x0 = min(pairs, key=lambda x: (abs(peaks[x] - room), -x))
    x1 = x0 + 1
    inside = peaks[x1] <= room
    others = [x for x in peaks if x not in (x0, x1)]
    across = [x for x in others if (peaks[x] > room) == inside]
    nearest = min(across or others, key=lambda x: (abs(peaks[x] - room), x), default=None)
    if nearest is None:
        return None
    guess = _parabola(((x, peaks[x]) for x in (x0, x1, nearest)), room)
    if guess is not None:
        return max(1, min(limit, math.floor(guess)))
    # (it bends down and never gets there: the line through the pair, where it rises)
    return _interpolate(x0, x1, peaks.__getitem__, room, limit) if peaks[x1] > peaks[x0] else None


def _parabola(points: Iterable[tuple[int, int]], room: float) -> float | None:
    """Where the parabola through three points rises through ``room`` (None: it does not)."""
    (x0, y0), (x1, y1), (x2, y2) = sorted(points)
    d01, d12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    bend = (d12 - d01) / (x2 - x0)
    # y = bend x^2 + b x + c (Newton's form multiplied out); the crossing where it rises, written so that a bend
    # near 0 loses no precision: x = 2 (room - c) / (b + sqrt(b^2 - 4 bend (c - room)))
    b = d01 - bend * (x0 + x1)
    c = y0 - d01 * x0 + bend * x0 * x1
    disc = b * b - 4 * bend * (c - room)
    if disc < 0:
        return None
    root = math.sqrt(disc)
    if b + root > 0:
        x = 2 * (room - c) / (b + root)
    elif bend != 0:  # (a parabola whose lowest point lies right of 0, crossed where it rises again)
        x = (root - b) / (2 * bend)
    else:
        return None
    return x if math.isfinite(x) else None


def search_largest(fits: Fits, peak_at: PeakAt, room: float, limit: int,
                   predict: Predict | None = None, refine: Predict | None = None) -> tuple[int, bool]:
    """The largest batch size in ``[1, limit]`` that ``fits``, and whether the search stopped because ``limit``
    itself fits (what lies beyond was not asked); ``(0, False)`` when not even 1 fits.

    ``peak_at(b)`` is the predicted peak at ``b``, asked only of batch sizes already given to ``fits``; ``room`` is
    the peak at which the allowance reaches the budget (:meth:`Allowance.room`). The peak is assumed not to shrink
    as the batch grows. Probes at 1 and 2 give a linear first guess at the boundary; doubling from the largest
    batch known to fit finds one that does not; regula falsi then narrows the two (:func:`_settle`).

    ``predict()``, where given, is asked for a guess at the answer from what the probes so far saw (after 1 and 2,
    and once more after the line's first guess where it had none): max_batch_size's guess from two probes' memory
    timelines (:func:`boundary_from_timelines`). Each guess is checked with its neighbour (the batch after it where
    it fits, before it where it does not), which gives the next prediction the peak's slope there; an exact guess
    costs two probes (the guess fits, the next does not); after three guesses the search goes on without.
    ``refine()``, where given, is asked for a guess in each round of the regula falsi before its own lines (serving's
    ``--max-context``: :func:`boundary_from_peaks`, from the neighbours the last round checked). A wrong guess only
    costs probes: the answer is always the one ``fits`` proves. The callables may be asked about a batch size more
    than once: the caller caches.
    """
    if not fits(1):
        return 0, False
    if limit <= 1 or not fits(2):
        return 1, limit <= 1
    lo, hi = _bracket(fits, peak_at, room, limit, predict)
    if hi is None:
        return lo, True
    return _settle(fits, peak_at, room, lo, hi, limit, refine), False


def _bracket(fits: Fits, peak_at: PeakAt, room: float, limit: int,
             predict: Predict | None) -> tuple[int, int | None]:
    """A batch ``lo`` that fits and a larger ``hi`` that does not (None: ``lo`` is ``limit``), given that 2 fits: from
    predictions where there are some (:func:`_from_guesses`); else the line through the peaks at 1 and 2 guesses
    the boundary (when it rises), checked with its successor where it fits, and predictions are asked for again.
    While no batch is known not to fit, ``lo`` doubles."""
    lo, hi, guessed = 2, None, False
    if predict is not None:
        lo, hi, guessed = _from_guesses(fits, predict, lo, hi, limit)
    if not guessed and peak_at(2) - peak_at(1) > 0:
        line = _interpolate(1, 2, peak_at, room, limit)
        if fits(line):  # (the line is exact where the peak is straight: its successor settles it at once)
            lo = line
            if line < limit:
                if not fits(line + 1):
                    return line, line + 1
                lo = line + 1
        else:
            hi = line
        if predict is not None:
            lo, hi, _ = _from_guesses(fits, predict, lo, hi, limit)
    while hi is None:
        nxt = min(limit, lo * 2)
        if nxt == lo:
            return lo, None
        if fits(nxt):
            lo = nxt
        else:
            hi = nxt
    return lo, hi


_GUESSES = 3  # predictions followed before the search goes on without them


def _from_guesses(fits: Fits, predict: Predict, lo: int, hi: int | None,
                  limit: int) -> tuple[int, int | None, bool]:
    """``lo`` (fits) and ``hi`` (does not; None: not known) narrowed by up to ``_GUESSES`` predictions, and whether
    there was one: each guess is checked with its neighbour on the side of the boundary (the batch after a guess
    that fits, the one before a guess that does not), so the next prediction has a pair of neighbours there, the
    peak's own slope at the guess. Stops when one batch fits and the next does not."""
    guessed = False
    for _ in range(_GUESSES):
        if hi is not None and hi - lo <= 1:
            break
        guess = predict()
        if guess is None:
            break
        guessed = True
        g = min(max(guess, lo), limit if hi is None else hi - 1)
        if g == lo or fits(g):
            lo = g
            nxt = lo + 1
            if nxt > limit:
                break
            if not fits(nxt):
                return lo, nxt, True
            lo = nxt
        else:
            hi, nxt = g, g - 1
            if nxt > lo:
                if fits(nxt):
                    return nxt, g, True
                hi = nxt
    return lo, hi, guessed


def _settle(fits: Fits, peak_at: PeakAt, room: float, lo: int, hi: int, limit: int,
            refine: Predict | None = None) -> int:
    """The largest batch that fits, given that ``lo`` fits and ``hi`` does not.

    Regula falsi: the peak is piecewise linear in the batch, so the line through the peaks at ``lo`` and ``hi``
    lands close; check the guess and its neighbour, and bisect once when ``hi`` has not moved for two rounds (a bent
    stretch, where the line keeps landing short). Where ``lo - 1`` fits too (the neighbour just checked), the line
    through the peaks at ``lo - 1`` and ``lo``, the peak's own slope there, is followed first, once from each ``lo``:
    on a peak that bends upwards (a prompt's attention, quadratic in its length) the line through ``lo`` and ``hi``
    lands short of the boundary round after round, the local one just past it. A guess from ``refine()`` strictly
    between ``lo`` and ``hi`` goes before both lines; its rounds are not counted as stale (it is asked no more after
    ``_GUESSES`` of them only moved ``lo``)."""
    stale = 0  # interpolation rounds in a row that only moved lo
    fitted = {lo}  # batches found to fit here (their peaks known)
    followed = None  # the lo whose local line was followed last
    short = 0  # guesses of ``refine()`` that only moved lo (after _GUESSES of them it is no longer asked)
    while hi - lo > 1:
        if stale >= 2:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
                fitted.add(mid)
            else:
                hi = mid
            stale = 0
            continue
        guess = refine() if refine is not None and short < _GUESSES else None
        guess = guess if guess is not None and lo < guess < hi else None
        refined = guess is not None
        if guess is None and lo - 1 in fitted and followed != lo:
            followed = lo
            guess = _interpolate(lo - 1, lo, peak_at, room, limit)
            guess = guess if lo < guess < hi else None
        if guess is None:
            guess = _interpolate(lo, hi, peak_at, room, limit)
        mid = min(hi - 1, max(lo + 1, guess))
        lo, hi, moved_hi = _probe_pair(fits, mid, lo, hi, fitted)
        if refined:  # (a guess near the boundary that lands short is no sign of a bent stretch: counted apart)
            short += not moved_hi
        else:
            stale = 0 if moved_hi else stale + 1
    return lo


def _probe_pair(fits: Fits, mid: int, lo: int, hi: int, fitted: set[int]) -> tuple[int, int, bool]:
    """``lo`` and ``hi`` after checking ``mid`` and ``mid + 1`` (those strictly between them), and whether ``hi``
    moved; a failure ends the check. Each one that fits is added to ``fitted``."""
    for candidate in (mid, mid + 1):
        if lo < candidate < hi:
            if not fits(candidate):
                return lo, candidate, True
            lo = candidate
            fitted.add(candidate)
    return lo, hi, False


def _interpolate(a: int, b: int, peak_at: PeakAt, room: float, limit: int) -> int:
    """The batch at which the straight line through the peaks at ``a`` and ``b`` reaches ``room`` bytes (when the
    line does not rise: twice ``b``), within ``[1, limit]``."""
    slope = (peak_at(b) - peak_at(a)) / (b - a)
    if slope <= 0:
        return min(limit, b * 2)
    return max(1, min(limit, int(a + (room - peak_at(a)) // slope)))
