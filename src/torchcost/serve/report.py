"""The serving report: what one generation (prefill over the prompt, then decode steps) costs, as exact integers.

Frozen dataclasses, like torchcost.report's; ``to_dict``/``from_dict`` round-trip exactly;
:meth:`GenerationReport.table` and :meth:`GenerationReport.markdown` format and compute nothing beyond sums and
ratios of the fields.
docs/conventions.md, "Serving: prefill, decode and the KV cache", says what each figure means.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from torchcost.errors import InputError
from torchcost.report import CostReport
from torchcost.serve.steps import StepCost
from torchcost.units import format_bytes, format_count, format_int

__all__ = ["CacheGroup", "DecodePiece", "GenerationReport"]

SERVE_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CacheGroup:
    """The cache's layers of one kind (full attention, one sliding window, ...) at the final length.

    ``bytes``: their distinct storages; ``tokens``: the keys' sequence length each holds (a sliding layer keeps a
    view of its last ``window - 1`` tokens, of a storage one token longer); ``bytes_per_token``: how much they grow
    for one more token of one sequence at the final length (0 once a window is full)."""

    kind: str
    cls: str
    window: int | None
    layers: int
    tokens: int
    bytes: int
    bytes_per_token: int
    shapes: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["shapes"] = [list(s) for s in self.shapes]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheGroup:
        return cls(**{**data, "shapes": tuple(tuple(s) for s in data["shapes"])})


@dataclass(frozen=True)
class DecodePiece:
    """Decode steps at contexts ``first``..``last`` whose cost is one affine function of the context: measured at
    both ends and checked at ``checked`` (the midpoint; -1 when the piece has no point between its ends)."""

    first: int
    last: int
    checked: int

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecodePiece:
        return cls(**data)


@dataclass(frozen=True)
class GenerationReport:
    """One generation of ``new_tokens`` tokens after a prompt of ``prompt_len``, for ``batch_size`` sequences.

    The prefill runs the prompt and yields the first new token; ``decode_steps`` = ``new_tokens - 1`` decode steps
    follow, one token per sequence each, the one at context ``c`` with ``c`` tokens cached. ``decode_first`` and
    ``decode_last`` are the steps at contexts ``prompt_len`` and ``prompt_len + new_tokens - 2`` (None without
    decode steps); ``decode_macs``/``decode_flops`` sum all decode steps (the affine pieces in closed form). The
    cache at the end holds ``final_context`` = ``prompt_len + new_tokens - 1`` tokens per sequence.
    ``peak_bytes`` is the highest peak of any step, in the step named by ``peak_step``.
    """

    model_type: str
    dtype: str
    target: str
    batch_size: int
    prompt_len: int
    new_tokens: int
    params: int
    weights_bytes: int
    prefill: StepCost
    decode_first: StepCost | None
    decode_last: StepCost | None
    decode_steps: int
    decode_macs: int
    decode_flops: int
    kv_cache_bytes: int
    kv_bytes_per_token: int
    cache_groups: tuple[CacheGroup, ...]
    peak_bytes: int
    peak_step: str
    peak_weights_bytes: int
    peak_cache_bytes: int
    peak_activation_bytes: int
    samples: tuple[StepCost, ...] = ()
    pieces: tuple[DecodePiece, ...] = ()
    notes: tuple[str, ...] = ()
    round_to: int = 1
    tp: int = 1  # tensor parallelism: the figures are one rank's (its shards, its heads' cache)
    prefill_report: CostReport | None = field(default=None, compare=False)
    decode_report: CostReport | None = field(default=None, compare=False)

    @property
    def final_context(self) -> int:
        return self.prompt_len + self.new_tokens - 1

    @property
    def total_flops(self) -> int:
        return self.prefill.flops + self.decode_flops

    @property
    def total_macs(self) -> int:
        return self.prefill.macs + self.decode_macs

    # -- data -----------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"serve_schema_version": SERVE_SCHEMA_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (StepCost, CostReport)):
                data[f.name] = value.to_dict()
            elif f.name in ("samples", "pieces", "cache_groups"):
                data[f.name] = [v.to_dict() for v in value]
            elif f.name == "notes":
                data[f.name] = list(value)
            else:
                data[f.name] = value
        data["final_context"] = self.final_context
        data["total_flops"] = self.total_flops
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationReport:
        if data.get("serve_schema_version") != SERVE_SCHEMA_VERSION:
            raise InputError(f"generation report version {data.get('serve_schema_version')!r} is not one this "
                             f"torchcost reads ({SERVE_SCHEMA_VERSION})")
        top = {k: v for k, v in data.items() if k not in ("serve_schema_version", "final_context", "total_flops")}
        for key in ("prefill", "decode_first", "decode_last"):
            top[key] = StepCost.from_dict(top[key]) if top.get(key) is not None else None
        for key in ("prefill_report", "decode_report"):
            top[key] = CostReport.from_dict(top[key]) if top.get(key) is not None else None
        top["samples"] = tuple(StepCost.from_dict(s) for s in top.get("samples", ()))
        top["pieces"] = tuple(DecodePiece.from_dict(p) for p in top.get("pieces", ()))
        top["cache_groups"] = tuple(CacheGroup.from_dict(g) for g in top.get("cache_groups", ()))
        top["notes"] = tuple(top.get("notes", ()))
        return cls(**top)

    @classmethod
    def from_json(cls, text: str) -> GenerationReport:
        return cls.from_dict(json.loads(text))

    # -- views ----------------------------------------------------------------------------------------------------

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) lines, in the order every rendering shows them."""
        b = self.batch_size
        out = [
            ("model", f"{self.model_type}, {format_count(self.params)} parameters, {self.dtype}, target {self.target}"
                      + (f"; one rank of tensor parallelism {self.tp}: its shards and its heads' cache"
                         if self.tp > 1 else "")),
            ("generation", f"batch {b} x (prompt {format_int(self.prompt_len)} + {format_int(self.new_tokens)} new "
                           f"tokens): {format_int(self.decode_steps)} decode steps, cache of "
                           f"{format_int(self.final_context)} tokens at the end"),
            ("weights" if self.tp == 1 else "weights (rank)", format_bytes(self.weights_bytes)),
            ("prefill", f"{format_count(self.prefill.flops)} FLOPs, peak {format_bytes(self.prefill.peak_bytes)}"),
        ]
        for label, step in (("decode, first step", self.decode_first), ("decode, last step", self.decode_last)):
            if step is not None:
                out.append((label, f"context {format_int(step.context)}: {format_count(step.flops)} FLOPs "
                                   f"({format_count(step.flops // b)} per token), "
                                   f"peak {format_bytes(step.peak_bytes)}"))
        if self.decode_steps:
            out.append(("decode, all steps", f"{format_count(self.decode_flops)} FLOPs"))
        out.append(("generation FLOPs", f"{format_count(self.total_flops)} (prefill + decode)"))
        out.append(("KV cache at the end", f"{format_bytes(self.kv_cache_bytes)} ({format_int(self.kv_cache_bytes)} "
                                           f"bytes); {format_int(self.kv_bytes_per_token)} bytes per further token "
                                           f"per sequence"))
        for g in self.cache_groups:
            window = f" {g.window}" if g.window is not None else ""
            out.append((f"  {g.kind}{window} x {g.layers}",
                        f"{format_bytes(g.bytes)}, {format_int(g.tokens)} tokens held, "
                        f"{format_int(g.bytes_per_token)} B per token ({g.cls})"))
        out.append(("peak", f"{format_bytes(self.peak_bytes)} in the {self.peak_step}: weights "
                            f"{format_bytes(self.peak_weights_bytes)} + KV cache {format_bytes(self.peak_cache_bytes)}"
                            f" + activations and temporaries {format_bytes(self.peak_activation_bytes)}"))
        out.extend(("note", n) for n in self.notes)
        return out

    def table(self) -> str:
        """Plain text, one figure a line."""
        rows = self.rows()
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)

    def markdown(self) -> str:
        lines = ["| | |", "|---|---|"]
        lines += [f"| {label.strip()} | {value} |" for label, value in self.rows()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
