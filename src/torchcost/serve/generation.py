"""analyze_generation(): the prefill and the decode steps of a generation, each one forward recorded by the engine
of :func:`torchcost.analyze`, on a meta twin of the model with the model's own cache object.

Which decode steps run. The step at context ``c`` (``c`` tokens cached) is reproduced exactly without running the
steps before it: a fresh cache is filled by a plain forward over ``c - 1`` tokens and one plain decode step (so its
tensors are laid out as after a decode step, as in a generation), then the step is recorded. The first step (context
``prompt_len``) follows the prefill directly and is run as such. The other contexts are split where a sliding window
changes a step's shape (``W - 1`` and ``W`` cached tokens); on each piece the cost (MACs, FLOPs, peak and its parts,
the cache after) is measured at both ends and at the midpoint: when the midpoint lies on the line through the ends,
exactly (integers), the piece is affine and its sum is taken in closed form; otherwise it is halved and each half
checked again. docs/conventions.md, "Serving: prefill, decode and the KV cache".
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from torchcost.collect.probe import KERNEL_MEMORY, KernelMemory
from torchcost.collect.storages import local_tensor
from torchcost.errors import InputError
from torchcost.formulas import REGISTRY, Formula
from torchcost.formulas.registry import FormulaRegistry
from torchcost.inputs import model_device, outside_inference_mode
from torchcost.report import CostReport
from torchcost.run.checks import refuse_unsupported, uncompiled
from torchcost.run.concurrency import exclusive
from torchcost.run.guard import kept
from torchcost.run.plan import default_target
from torchcost.run.step import TARGETS, StepOptions, make_twin
from torchcost.serve.cache import (
    CacheLayerInfo,
    cache_layers,
    check_generative,
    text_config,
    window_kinks,
)
from torchcost.serve.report import CacheGroup, DecodePiece, GenerationReport
from torchcost.serve.steps import StepCost, StepRunner

__all__ = ["analyze_generation"]

_CPU = torch.device("cpu")


def analyze_generation(
    model: nn.Module,
    *,
    prompt_len: int,
    new_tokens: int = 1,
    batch_size: int = 1,
    dtype: torch.dtype | None = None,
    target: str | None = None,
    kernel_memory: KernelMemory | None = None,
    formulas: Mapping[object, Formula] | None = None,
    reports: bool = True,
    tp: int = 1,
) -> GenerationReport:
    """What serving one batch costs: the prefill over ``prompt_len`` tokens and the decode steps that generate
    ``new_tokens`` tokens (the first comes from the prefill), for ``batch_size`` sequences.

    Args:
        model: a transformers causal language model (real or on the meta device); it is only read: every step runs
            on a meta twin, so a 70B model costs no memory.
        prompt_len, new_tokens, batch_size: the generation (all >= 1).
        dtype: a floating dtype to analyse the model in (default: its own).
        target: "cuda" or "cpu", whose allocation behaviour memory follows (default: "cuda" for a meta model, else
            the model's device type), as for :func:`torchcost.analyze`.
        kernel_memory, formulas: as for :func:`torchcost.analyze`.
        reports: keep the prefill's and the last decode step's :class:`~torchcost.CostReport` (per-module figures)
            in the result.
        tp: tensor parallelism over ``tp`` ranks: every step runs on rank 0 of a simulated world, its twin sharded
            by torchcost's built-in tensor-parallel plan (``torchcost.Parallel(tp=...)``; HF Llama/Mistral/Qwen2-
            style models), as fake tensors: the figures are one rank's (its weight shards, its heads' cache).

    The cache is the one ``generate()`` makes for the model (transformers' ``DynamicCache`` with the config's layer
    types), passed to the forward as generate() passes it, with ``logits_to_keep=1`` where the forward takes it
    (generate() computes the last position's logits only). No attention mask is passed: every sequence is the
    full prompt, as with a mask of ones.
    """
    for name, value in (("prompt_len", prompt_len), ("new_tokens", new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a whole number >= 1, got {value!r}")
    if not isinstance(model, nn.Module):
        raise InputError(f"analyze_generation() needs an nn.Module, got {type(model).__name__}")
    model = uncompiled(model)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"dtype must be a floating torch.dtype such as torch.bfloat16, got {dtype!r}")
    if target is not None and target not in TARGETS:
        raise InputError(f"target must be one of {', '.join(TARGETS)} or None; got {target!r}")
    if kernel_memory is not None and kernel_memory not in KERNEL_MEMORY:
        raise InputError(f"kernel_memory must be one of {', '.join(KERNEL_MEMORY)}; got {kernel_memory!r}")
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise InputError(f"tp must be a whole number >= 1, got {tp!r}")
    keyword = check_generative(model)
    chosen = target or ("cuda" if tp > 1 else default_target(model_device(model)))
    options = StepOptions("eval", None, None, None, chosen,
                          kernel_memory or ("table" if tp > 1 and chosen == "cuda" else None))
    refuse_unsupported(model, options)
    registry = REGISTRY.with_overrides(formulas) if formulas else REGISTRY
    with exclusive(), outside_inference_mode(), kept(model):
        twin = make_twin(model, (), {}, "meta", _CPU).model
        if dtype is not None:
            twin.to(dtype)
        twin.eval()
        keep = "logits_to_keep" in inspect.signature(twin.forward).parameters
        if tp == 1:
            runner = StepRunner(twin, registry, options, batch_size, keyword, keep)
            return _Generation(runner, prompt_len, new_tokens, reports).report()
        return _tensor_parallel(twin, tp, registry, options, batch_size, keyword, keep, prompt_len, new_tokens,
                                reports)


def _tensor_parallel(twin: nn.Module, tp: int, registry: FormulaRegistry, options: StepOptions, batch: int,
                     keyword: str, keep: bool, prompt_len: int, new_tokens: int, reports: bool) -> GenerationReport:
    """The generation on rank 0 of a simulated world of ``tp`` ranks: parallel/runner.py's twin (the meta twin
    sharded by the built-in plan, then fake CPU tensors) and, in every recorded step, its hooks beside the cache's."""
    from torchcost.parallel import Parallel
    from torchcost.parallel.runner import ParallelExtras, _fake_twin
    from torchcost.parallel.world import make_mesh, simulated_world

    plan = Parallel(tp=tp, rank=0)
    plan.check(twin, "eval")
    with simulated_world(0, plan.world):
        mesh = make_mesh(plan.mesh_shape, plan.mesh_dims)
        rank, _ = _fake_twin(twin, (), {}, plan, mesh)
        rank.model.eval()
        runner = StepRunner(rank.model, registry, options, batch, keyword, keep, fake=rank.fake_mode,
                            rank_hooks=lambda: ParallelExtras(plan, None, options.target))
        report = _Generation(runner, prompt_len, new_tokens, reports).report()
    return replace(report, tp=tp)


@dataclass
class _Sample:
    cost: StepCost
    layers: list[CacheLayerInfo]
    report: CostReport | None = None


@dataclass
class _Generation:
    runner: StepRunner
    prompt_len: int
    new_tokens: int
    reports: bool
    samples: dict[int, _Sample] = field(default_factory=dict)
    # caches a recorded step left, by the tokens they hold, kept for the step that continues from that length
    resumable: dict[int, Any] = field(default_factory=dict)

    @property
    def slack(self) -> int:
        """How far a memory figure may stray from affine: none in exact bytes; with allocator blocks (512 bytes on
        "cuda") each storage whose size follows the context is rounded up on its own, so up to a block for each of
        the cache's tensors and the step's context-sized temporaries (bounded here by 64)."""
        r = self.runner.options.round_to
        return 0 if r <= 1 else r * (4 * self.layers + 64)

    @property
    def layers(self) -> int:
        layers = getattr(text_config(self.runner.model), "num_hidden_layers", None)
        return layers if isinstance(layers, int) else 1

    @property
    def last(self) -> int:
        """The context of the last decode step."""
        return self.prompt_len + self.new_tokens - 2

    def decode_at(self, context: int) -> _Sample:
        """The decode step with ``context`` tokens cached: the prompt's prefill, then decode steps up to it. The
        cache is the one a step already left at that length where there is one (:attr:`resumable`: the prefill's
        for the first step, the first step's for the second), else a new one filled by plain forwards: the prefill
        of ``context - 1`` tokens and one decode step (one prefill of the prompt for the first)."""
        found = self.samples.get(context)
        if found is not None:
            return found
        runner = self.runner
        cache = self.resumable.pop(context, None)
        if cache is None:
            cache = runner.new_cache()
            if context == self.prompt_len:
                runner.plain(context, cache)
            else:
                runner.plain(context - 1, cache)
                runner.plain(1, cache)
        cost, report = runner.recorded("decode", 1, cache)
        keep = self.reports and context == self.last
        sample = _Sample(cost, cache_layers(cache, runner.model), report if keep else None)
        self.samples[context] = sample
        self._resume(context + 1, cache)
        return sample

    def _resume(self, length: int, cache: Any) -> None:
        """Keep ``cache``, left by a step with ``length`` tokens in it, for the step that needs that length (the
        prefill's for the first decode step, the first's for the second, the last's for :func:`_grown_layers`):
        the same forwards a new cache would be filled by, already run. Only those lengths: no other is asked."""
        if length in (self.prompt_len, self.prompt_len + 1, self.last + 1) and length not in self.samples:
            self.resumable[length] = cache

    def report(self) -> GenerationReport:
        runner = self.runner
        cache = runner.new_cache()
        prefill, prefill_report = runner.recorded("prefill", self.prompt_len, cache)
        self._resume(self.prompt_len, cache)
        kinks = window_kinks(cache)
        steps = self.new_tokens - 1
        pieces: list[DecodePiece] = []
        macs = flops = 0
        if steps:
            first = self.decode_at(self.prompt_len)
            macs, flops = first.cost.macs, first.cost.flops
            if steps > 1:
                pieces = self._pieces(self.prompt_len + 1, self.last, kinks)
                m, f = _sum(pieces, lambda c: self.decode_at(c).cost)
                macs, flops = macs + m, flops + f
            final_layers = self.decode_at(self.last).layers
        else:
            final_layers = cache_layers(cache, runner.model)
        del cache
        tokens = self.prompt_len + self.new_tokens - 1
        grown = _grown_layers(runner, tokens, self.resumable.pop(tokens, None))
        self.resumable.clear()
        groups = _groups(final_layers, grown, runner.batch)
        decoded = [self.samples[c].cost for c in sorted(self.samples)]
        worst = max([prefill, *decoded], key=lambda s: s.peak_bytes)
        model = runner.model
        params = {id(p): p for p in model.parameters()}
        buffers = {id(b): b for b in model.buffers()}
        weights = sum(local_tensor(t).numel() * t.element_size() for t in (*params.values(), *buffers.values()))
        dtype = next((p.dtype for p in params.values() if p.is_floating_point()), torch.float32)
        return GenerationReport(
            model_type=type(model).__name__, dtype=str(dtype).removeprefix("torch."), target=runner.options.target,
            batch_size=runner.batch, prompt_len=self.prompt_len, new_tokens=self.new_tokens,
            params=sum(p.numel() for p in params.values()), weights_bytes=weights, prefill=prefill,
            decode_first=self.samples[self.prompt_len].cost if steps else None,
            decode_last=self.samples[self.last].cost if steps else None, decode_steps=steps,
            decode_macs=macs, decode_flops=flops,
            kv_cache_bytes=sum(g.bytes for g in groups), kv_bytes_per_token=sum(g.bytes_per_token for g in groups),
            cache_groups=tuple(groups), peak_bytes=worst.peak_bytes,
            peak_step="prefill" if worst is prefill else f"decode step at context {worst.context}",
            peak_weights_bytes=worst.weights_bytes, peak_cache_bytes=worst.cache_bytes,
            peak_activation_bytes=worst.activation_bytes, samples=tuple(decoded), pieces=tuple(pieces),
            notes=tuple(_notes(groups, self.prompt_len)),
            round_to=runner.options.round_to,
            prefill_report=prefill_report if self.reports else None,
            decode_report=self.samples[self.last].report if steps and self.reports else None)

    def _pieces(self, lo: int, hi: int, kinks: set[int]) -> list[DecodePiece]:
        """[lo, hi] cut where a window changes the shape of a step, each part checked affine (or halved)."""
        cuts = sorted(k for k in kinks if lo < k <= hi)
        bounds = [lo, *cuts, hi + 1]
        out: list[DecodePiece] = []
        for a, b in itertools.pairwise(bounds):
            out.extend(self._affine(a, b - 1))
        return out

    def _affine(self, lo: int, hi: int) -> list[DecodePiece]:
        a, b = self.decode_at(lo).cost, self.decode_at(hi).cost
        if hi - lo <= 1:
            return [DecodePiece(lo, hi, -1)]
        mid = (lo + hi) // 2
        m = self.decode_at(mid).cost

        def off(k: str) -> int:  # how far the midpoint is above the line through the ends, times (hi - lo)
            return (_of(m, k) - _of(a, k)) * (hi - lo) - (_of(b, k) - _of(a, k)) * (mid - lo)

        if (all(abs(off(k)) <= (self.slack if k in _MEMORY else 0) * (hi - lo) for k in _AFFINE)
                and off("peak_bytes") <= self.slack * (hi - lo)):
            return [DecodePiece(lo, hi, mid)]
        return [*self._affine(lo, mid), *self._affine(mid + 1, hi)]


# a step's figures affine in its context on a piece (checked at the midpoint; the sums use it). The peak is the
# highest of the bytes alive at each op, each affine in the context: a convex function, checked not above the line,
# whose highest on a piece is at an end, which was run. Where the op at the peak changes (llama-3-8b's lm_head's
# product at short contexts, a layer's cache concatenation at longer ones), the peak has a kink and its parts
# (cache_bytes, activation_bytes) jump: they are read only at steps that ran, and not checked.
_AFFINE = ("macs", "flops", "weights_bytes", "cache_after_bytes")
_MEMORY = frozenset({"weights_bytes", "cache_after_bytes"})


def _of(cost: StepCost, key: str) -> int:
    value: int = getattr(cost, key)
    return value


def _sum(pieces: list[DecodePiece], cost: Callable[[int], StepCost]) -> tuple[int, int]:
    """MACs and FLOPs of all steps of ``pieces`` (disjoint), each an affine sequence: n (f(first) + f(last)) / 2."""
    macs = flops = 0
    for p in pieces:
        n = p.last - p.first + 1
        a, b = cost(p.first), cost(p.last)
        macs += n * (a.macs + b.macs) // 2
        flops += n * (a.flops + b.flops) // 2
    return macs, flops


def _grown_layers(runner: StepRunner, tokens: int, cache: Any = None
                  ) -> tuple[list[CacheLayerInfo], list[CacheLayerInfo]]:
    """The cache after ``tokens + 1`` and ``tokens + 2`` tokens (plain forwards; the last two by decode steps): the
    growth per token at the final length. ``cache``: one holding ``tokens`` tokens already (the last decode step's),
    else a new one is filled by a prefill of ``tokens``."""
    if cache is None:
        cache = runner.new_cache()
        runner.plain(tokens, cache)
    runner.plain(1, cache)
    one = cache_layers(cache, runner.model)
    runner.plain(1, cache)
    return one, cache_layers(cache, runner.model)


def _groups(final: list[CacheLayerInfo], grown: tuple[list[CacheLayerInfo], list[CacheLayerInfo]],
            batch: int) -> list[CacheGroup]:
    keyed: dict[tuple[str, str, int | None], list[int]] = {}
    for i, layer in enumerate(final):
        keyed.setdefault((layer.kind, layer.cls, layer.window), []).append(i)
    out = []
    for (kind, cls, window), idx in keyed.items():
        growth = sum(grown[1][i].bytes - grown[0][i].bytes for i in idx)
        out.append(CacheGroup(kind=kind, cls=cls, window=window, layers=len(idx),
                              tokens=max(final[i].tokens for i in idx), bytes=sum(final[i].bytes for i in idx),
                              bytes_per_token=growth // batch, shapes=final[idx[0]].shapes))
    return out


def _notes(groups: list[CacheGroup], first: int) -> list[str]:
    notes = []
    for g in groups:
        if g.window is None:
            continue
        w = g.window
        notes.append(f"{g.layers} sliding-window layers (window {w}): a decode step attends to at most {w} keys and "
                     f"the layer keeps a view of its last {w - 1} tokens, of a storage of {w}; per-token cost and "
                     f"cache stop growing at context {w - 1}, so decode cost is affine up to there and flat after")
        if first > w:
            notes.append(f"after the prefill of {first} tokens the sliding layers still hold the whole prompt's "
                         f"storage, until the first decode step replaces it by {w} tokens")
    return notes
