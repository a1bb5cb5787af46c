"""The longest context and the largest batch whose generation fits a memory budget.

Each probe is one :func:`~torchcost.serve.analyze_generation` (meta tensors: nothing allocated); the peak it compares
with the budget is the generation's (the highest of the prefill and every decode step), plus the same allowance as
:func:`torchcost.max_batch_size` (``reserve`` and ``fragmentation``; 1 GiB and 5 % on "cuda", none on "cpu"). The
search is fit.py's :func:`~torchcost.fit.search_largest`: probes at 1 and 2, the line through them (the peak is
affine in the prompt length and in the batch for standard attention, so the first guess usually lands on the answer
or next to it), then doubling and regula falsi (following the peak's own slope where two neighbours fit) until two
neighbours, one fitting and one not, are known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchcost.errors import InputError
from torchcost.fit import allowance_for, boundary_from_peaks, parse_budget, search_largest
from torchcost.inputs import model_device
from torchcost.run.plan import default_target
from torchcost.serve.cache import text_config
from torchcost.serve.generation import analyze_generation
from torchcost.serve.report import GenerationReport

__all__ = ["ServingFit", "max_context", "max_serving_batch"]


@dataclass(frozen=True)
class ServingFit:
    """The answer of :func:`max_context` (``what == "context"``) or :func:`max_serving_batch` (``"batch"``).

    ``prompt_len``, ``new_tokens`` and ``batch_size`` are the largest generation found (``prompt_len`` or
    ``batch_size`` is 0 when not even 1 fits); ``context`` = ``prompt_len + new_tokens``, the sequence's length at
    the end. ``peak_bytes`` is its generation peak, ``needed_bytes`` that plus the allowance. ``probes`` lists
    (value tried, generation peak) in order; ``limit_reached``: the search stopped at ``limit`` with room to spare.
    """

    what: str
    prompt_len: int
    new_tokens: int
    batch_size: int
    peak_bytes: int
    needed_bytes: int
    budget_bytes: int
    reserve_bytes: int
    fragmentation: float
    target: str
    limit: int
    limit_reached: bool
    probes: tuple[tuple[int, int], ...]

    @property
    def context(self) -> int:
        return self.prompt_len + self.new_tokens if self.prompt_len else 0

    def to_dict(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["probes"] = [list(p) for p in self.probes]
        data["context"] = self.context
        return data

    def text(self) -> str:
        if self.what == "context":
            if not self.prompt_len:
                return (f"max context: nothing fits in {_gib(self.budget_bytes)} at batch {self.batch_size} with "
                        f"{self.new_tokens} new tokens")
            found = (f"max context: {self.context} tokens (prompt {self.prompt_len} + {self.new_tokens} new) at batch "
                     f"{self.batch_size}")
        else:
            if not self.batch_size:
                return f"max batch: not even batch 1 fits in {_gib(self.budget_bytes)}"
            found = f"max batch: {self.batch_size} (prompt {self.prompt_len} + {self.new_tokens} new tokens)"
        limit = f"; stopped at the limit {self.limit}" if self.limit_reached else ""
        return (f"{found}: peak {_gib(self.peak_bytes)}, {_gib(self.needed_bytes)} with the allowance, of "
                f"{_gib(self.budget_bytes)} ({len(self.probes)} generations analysed{limit})")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def max_context(model: nn.Module, *, budget: int | str, new_tokens: int = 1, batch_size: int = 1,
                limit: int | None = None, **options: Any) -> ServingFit:
    """The longest prompt (to one token) whose generation of ``new_tokens`` tokens at ``batch_size`` fits in
    ``budget``; ``limit`` caps the prompt (default: the config's ``max_position_embeddings`` less ``new_tokens``).
    ``options``: ``dtype``, ``target``, ``reserve``, ``fragmentation``, ``kernel_memory``, ``tp`` (analyze_generation's;
    with ``tp`` the budget is one rank's)."""
    if limit is None:
        limit = _max_positions(model, new_tokens)
    return _search("context", model, budget, limit, options,
                   lambda v: {"prompt_len": v, "new_tokens": new_tokens, "batch_size": batch_size})


def max_serving_batch(model: nn.Module, *, budget: int | str, prompt_len: int, new_tokens: int = 1,
                      limit: int = 1 << 16, **options: Any) -> ServingFit:
    """The largest batch whose generation (``prompt_len`` + ``new_tokens``) fits in ``budget``."""
    return _search("batch", model, budget, limit, options,
                   lambda v: {"prompt_len": prompt_len, "new_tokens": new_tokens, "batch_size": v})


def _max_positions(model: nn.Module, new_tokens: int) -> int:
    most = getattr(text_config(model), "max_position_embeddings", None)
    if isinstance(most, int) and most > new_tokens:
        return most - new_tokens
    return 1 << 20


def _search(what: str, model: nn.Module, budget: int | str, limit: int, options: dict[str, Any],
            shape: Any) -> ServingFit:
    known = {"dtype", "target", "reserve", "fragmentation", "kernel_memory", "tp"}
    unknown = set(options) - known
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InputError(f"limit must be a whole number >= 1, got {limit!r}")
    budget_bytes = parse_budget("budget", budget)
    target = options.get("target") or default_target(model_device(model))
    allowance = allowance_for(target, options.get("reserve"), options.get("fragmentation"))
    dtype: torch.dtype | None = options.get("dtype")
    runs: dict[int, GenerationReport] = {}
    order: list[int] = []

    def peak_at(value: int) -> int:
        if value not in runs:
            runs[value] = analyze_generation(model, dtype=dtype, target=target, tp=options.get("tp") or 1,
                                             kernel_memory=options.get("kernel_memory"), reports=False, **shape(value))
            order.append(value)
        return runs[value].peak_bytes

    def fits(value: int) -> bool:
        return allowance.needed(peak_at(value)) <= budget_bytes

    room = allowance.room(budget_bytes)
    refine = (lambda: boundary_from_peaks({v: runs[v].peak_bytes for v in order}, room, limit)) \
        if what == "context" else None  # (a peak straight in the batch: the line through 1 and 2 is exact)
    best, at_limit = search_largest(fits, peak_at, room, limit, refine=refine)
    found = shape(best) if best else {**shape(1), "prompt_len" if what == "context" else "batch_size": 0}
    peak = runs[best].peak_bytes if best else 0
    return ServingFit(what=what, prompt_len=found["prompt_len"], new_tokens=found["new_tokens"],
                      batch_size=found["batch_size"], peak_bytes=peak,
                      needed_bytes=allowance.needed(peak) if best else 0, budget_bytes=budget_bytes,
                      reserve_bytes=allowance.reserve, fragmentation=allowance.fragmentation, target=target,
                      limit=limit, limit_reached=at_limit, probes=tuple((v, runs[v].peak_bytes) for v in order))
