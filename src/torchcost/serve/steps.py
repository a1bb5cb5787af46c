"""One forward of a generation (the prefill over the prompt, or one decode step), recorded by the same engine as
:func:`torchcost.analyze`: run/execute.py's ``execute`` under a ``Recording`` and run/build.py's report, on the meta
twin, with the cache object passed to the model as generate() passes it.

The cache's tensors made before the step (the prompt's keys and values, on a decode step) are alive when it starts:
they are added to the memory record as such before the first op (so the cache a decode step replaces is counted until
it dies, and a step that concatenates holds old and new at once where it really does). After the run, the storages
the cache held before or holds after the step are the cache's share of the peak.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torchcost.collect.fakeops import TwinAnswers
from torchcost.collect.recording import Recording
from torchcost.formulas.registry import FormulaRegistry
from torchcost.report import CostReport
from torchcost.run.build import build_report
from torchcost.run.execute import execute
from torchcost.run.step import StepOptions, Twin
from torchcost.serve.cache import cache_tensors, make_cache, storage_bytes

__all__ = ["StepCost", "StepRunner"]

_META = torch.device("meta")


@dataclass(frozen=True)
class StepCost:
    """One forward of a generation: ``tokens`` new tokens per sequence with ``context`` tokens already cached.

    ``peak_bytes`` = ``weights_bytes`` (parameters and buffers) + ``cache_bytes`` (the cache's storages alive at the
    peak: the old and the new copy of a layer where a concatenation holds both) + ``activation_bytes`` (everything
    else: activations, temporaries, the logits, kernel workspace). ``cache_after_bytes``: the cache once the step is
    done."""

    kind: str  # "prefill" | "decode"
    context: int
    tokens: int
    macs: int
    flops: int
    peak_bytes: int
    weights_bytes: int
    cache_bytes: int
    activation_bytes: int
    cache_after_bytes: int
    peak_module: str = ""
    peak_op: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepCost:
        return cls(**data)


@dataclass
class _CacheHooks:
    """run/execute.py's twin hooks: the cache's tensors alive before the step join the memory record's baseline
    (as "inputs"); after the step, the record's entries of the cache's storages, before and after."""

    cache: Any
    inner: Any = None  # a simulated tensor-parallel rank's own hooks (parallel/runner.py's ParallelExtras)
    uids: set[int] = field(default_factory=set)

    def prepare(self, rec: Recording, model: nn.Module, opt: torch.optim.Optimizer | None) -> None:
        if self.inner is not None:
            self.inner.prepare(rec, model, opt)
        if rec.memory is None:
            return
        before = cache_tensors(self.cache)
        rec.memory.add_baseline(before, "inputs")
        self.uids.update(u for u in map(rec.memory.uid_of, before) if u is not None)
        del before  # no reference kept: a storage the step replaces must die when the cache drops it

    @contextlib.contextmanager
    def during(self, rec: Recording) -> Iterator[None]:
        with self.inner.during(rec) if self.inner is not None else contextlib.nullcontext():
            yield

    def finish(self, rec: Recording, model: nn.Module, opt: torch.optim.Optimizer | None) -> None:
        if self.inner is not None:
            self.inner.finish(rec, model, opt)
        if rec.memory is not None:
            self.uids.update(u for u in map(rec.memory.uid_of, cache_tensors(self.cache)) if u is not None)


@dataclass
class StepRunner:
    """Runs the steps of one generation on ``model``, each recorded or plain: a meta twin, or (``fake``: its fake
    tensor mode) one simulated tensor-parallel rank's twin of fake CPU tensors, whose recorded runs also get
    ``rank_hooks()`` (parallel/runner.py's ParallelExtras)."""

    model: nn.Module
    registry: FormulaRegistry
    options: StepOptions
    batch: int
    cache_keyword: str
    keep_logits: bool  # the forward takes logits_to_keep: the logits of the last position only, as generate() asks
    fake: Any = None
    rank_hooks: Callable[[], Any] | None = None

    @property
    def device(self) -> torch.device:
        return _META if self.fake is None else torch.device("cpu")

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self.fake if self.fake is not None else contextlib.nullcontext()

    def new_cache(self) -> Any:
        with self.context():
            return make_cache(self.model)

    def inputs(self, tokens: int, cache: Any) -> dict[str, Any]:
        with self.context():
            ids = torch.zeros((self.batch, tokens), dtype=torch.long, device=self.device)
        kwargs: dict[str, Any] = {"input_ids": ids, self.cache_keyword: cache, "use_cache": True}
        if self.keep_logits:
            kwargs["logits_to_keep"] = 1
        return kwargs

    def plain(self, tokens: int, cache: Any) -> None:
        """A forward that only fills the cache (meta or fake tensors: nothing computed, nothing allocated). Ops of a
        key seen before in the process are answered from metadata (collect/fakeops.py's TwinAnswers): the layers
        repeat their shapes, and torch's meta kernels of pointwise ops are Python references."""
        kwargs = self.inputs(tokens, cache)
        with self.context(), torch.no_grad(), TwinAnswers(self.options.target):
            self.model(**kwargs)

    def recorded(self, kind: str, tokens: int, cache: Any) -> tuple[StepCost, CostReport]:
        """One forward under the collectors; its cost, and the report analyze() would give for it."""
        context = int(cache.get_seq_length()) if cache_tensors(cache) else 0
        kwargs = self.inputs(tokens, cache)
        hooks = _CacheHooks(cache, self.rank_hooks() if self.rank_hooks is not None else None)
        twin = Twin(self.model, (), kwargs, "meta" if self.fake is None else "fake", self.device,
                    fake_mode=self.fake, extras=hooks)
        ran = execute(self.model, (), kwargs, self.registry, self.options, True, _META, twin)
        report = build_report(ran, _META, "eval")
        tracker = ran.recording.memory
        memory = report.memory
        assert tracker is not None and memory is not None
        p = memory.peak_index
        cache_at_peak = sum(tracker.sizes[u] for u in hooks.uids if tracker.born[u] <= p < tracker.died[u])
        weights = memory.at_peak.parameters + memory.at_peak.buffers
        del ran
        cost = StepCost(
            kind=kind, context=context, tokens=tokens, macs=report.macs, flops=report.flops,
            peak_bytes=memory.peak_bytes, weights_bytes=weights, cache_bytes=cache_at_peak,
            activation_bytes=memory.peak_bytes - weights - cache_at_peak,
            cache_after_bytes=_rounded(cache, self.options.round_to), peak_module=memory.peak_module,
            peak_op=memory.peak_op)
        return cost, report


def _rounded(cache: Any, round_to: int) -> int:
    """The cache's distinct storages, each rounded up to the allocator's blocks (1 byte: exact)."""
    if round_to <= 1:
        return storage_bytes(cache_tensors(cache))
    seen = {id(t.untyped_storage()): t.untyped_storage().nbytes() for t in cache_tensors(cache)}
    return sum(-(-n // round_to) * round_to for n in seen.values())
